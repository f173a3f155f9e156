//! The in-process intake's jobs waiting for a slot (no broker): the
//! highest priority first, and of one priority the one that came first.
//! When a slot frees, the intake first takes in every job the log held at
//! that moment ([`Pending::caught_up`]), so a job appended while all slots
//! were busy is compared with the others before the next one is chosen.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokio::sync::{mpsc, watch};

use crate::adapters::rabbitmq::Job;

/// A job, whether it was redelivered (its task was running when the
/// process that held it stopped), in arrival order.
#[derive(Debug)]
struct Waiting {
    /// Highest first, then the earliest.
    rank: (i32, Reverse<u64>),
    job: Job,
    redelivered: bool,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// Jobs waiting for a slot, by priority (the task's own, -1000 to 1000:
/// no levels as in RabbitMQ).
#[derive(Debug, Default)]
pub(super) struct Pending {
    heap: BinaryHeap<Waiting>,
    arrivals: u64,
}

impl Pending {
    /// Adds `job`.
    pub(super) fn push(&mut self, job: Job, redelivered: bool) {
        self.arrivals += 1;
        self.heap.push(Waiting {
            rank: (job.priority, Reverse(self.arrivals)),
            job,
            redelivered,
        });
    }

    /// Takes the job to run next: the highest priority, the earliest of
    /// those.
    pub(super) fn pop(&mut self) -> Option<(Job, bool)> {
        self.heap
            .pop()
            .map(|waiting| (waiting.job, waiting.redelivered))
    }

    /// Takes in what `jobs` holds until `fed` (the log position up to which
    /// the intake's feed has sent every job) has reached `head`, then what
    /// arrived meanwhile.
    ///
    /// # Errors
    /// When the feed stopped (its end of `fed` is gone) before reaching
    /// `head`: the intake must start again from the log.
    pub(super) async fn caught_up(
        &mut self,
        jobs: &mut mpsc::Receiver<(Job, bool)>,
        fed: &mut watch::Receiver<u64>,
        head: u64,
    ) -> anyhow::Result<()> {
        loop {
            while let Ok((job, redelivered)) = jobs.try_recv() {
                self.push(job, redelivered);
            }
            if *fed.borrow_and_update() >= head {
                // Sent before the feed moved its position.
                while let Ok((job, redelivered)) = jobs.try_recv() {
                    self.push(job, redelivered);
                }
                return Ok(());
            }
            tokio::select! {
                received = jobs.recv() => match received {
                    Some((job, redelivered)) => self.push(job, redelivered),
                    None => anyhow::bail!("the in-process job feed ended"),
                },
                changed = fed.changed() => {
                    changed.map_err(|_| anyhow::anyhow!("the in-process job feed stopped"))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn job(priority: i32, attempt: u32) -> Job {
        Job {
            task_id: Uuid::new_v4(),
            kind: "k".into(),
            attempt,
            priority,
            event_id: Uuid::nil(),
            position: 0,
            installation: None,
        }
    }

    #[test]
    fn the_highest_priority_goes_first_and_equal_ones_in_arrival_order() {
        let mut pending = Pending::default();
        for (priority, tag) in [(0, 1), (-5, 2), (7, 3), (0, 4), (1000, 5), (7, 6)] {
            pending.push(job(priority, tag), false);
        }
        let order: Vec<u32> = std::iter::from_fn(|| pending.pop())
            .map(|(job, _)| job.attempt)
            .collect();
        assert_eq!(order, [5, 3, 6, 1, 4, 2]);
    }

    #[tokio::test]
    async fn a_job_the_feed_sends_before_reaching_the_head_is_compared_with_the_others() {
        let (sender, mut receiver) = mpsc::channel(4);
        let (position, mut fed) = watch::channel(10);
        let mut pending = Pending::default();
        pending.push(job(0, 1), false);
        let feed = tokio::spawn(async move {
            sender.send((job(5, 2), false)).await.unwrap();
            position.send_replace(11);
            sender.send((job(9, 3), false)).await.unwrap();
            position.send_replace(12);
            // Stays open, as the intake's own sender does.
            sender
        });
        pending
            .caught_up(&mut receiver, &mut fed, 12)
            .await
            .unwrap();
        assert_eq!(pending.pop().unwrap().0.attempt, 3);
        assert_eq!(pending.pop().unwrap().0.attempt, 2);
        assert_eq!(pending.pop().unwrap().0.attempt, 1);
        drop(feed.await.unwrap());
    }

    #[tokio::test]
    async fn a_feed_that_stops_short_of_the_head_is_an_error() {
        let (_sender, mut receiver) = mpsc::channel::<(Job, bool)>(4);
        let (position, mut fed) = watch::channel(3);
        drop(position);
        let mut pending = Pending::default();
        assert!(pending.caught_up(&mut receiver, &mut fed, 4).await.is_err());
    }
}
