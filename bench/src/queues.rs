//! What a priority queue costs the broker (part of `taskledger-bench
//! tasks`): job-sized persistent messages published with confirms and then
//! consumed with acks, through a classic queue and through a queue with
//! the kinds' `x-max-priority` (messages spread over every level), in
//! alternating rounds on one connection; messages per second of each and
//! their ratio.

use std::time::Instant;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use taskledger::adapters::rabbitmq::{self, MAX_PRIORITY};
use uuid::Uuid;

/// Rounds per queue (alternating, so drift in the broker's state hits
/// both alike).
const ROUNDS: usize = 3;

/// Measures and prints one line.
///
/// # Errors
/// When the broker fails or refuses.
pub(crate) async fn priority_queue_cost(amqp_url: &str, messages: usize) -> anyhow::Result<()> {
    let connection = rabbitmq::connect(amqp_url, "taskledger-bench-queues").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let body = serde_json::to_vec(&serde_json::json!({
        "task_id": Uuid::new_v4(), "kind": "bench-true", "attempt": 1, "priority": 0,
        "event_id": Uuid::new_v4(), "position": 123_456, "installation": Uuid::new_v4(),
    }))?;
    let (mut classic, mut priority) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        classic += round(&channel, &body, messages, false).await?;
        priority += round(&channel, &body, messages, true).await?;
    }
    let total = (ROUNDS * messages) as f64;
    let (classic, priority) = (total / classic, total / priority);
    println!(
        "queue messages={messages}x{ROUNDS} classic_msgs_per_s={classic:.0} priority_msgs_per_s={priority:.0} priority/classic={:.3} (publish with confirms, then consume with acks)",
        priority / classic
    );
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Publishes `messages` copies of `body` to a new queue (a priority queue
/// if `prioritised`), waits for every confirm, consumes and acknowledges
/// them all, deletes the queue; the seconds it took.
async fn round(
    channel: &Channel,
    body: &[u8],
    messages: usize,
    prioritised: bool,
) -> anyhow::Result<f64> {
    let queue = format!("tl-bench-queue-{}", Uuid::new_v4().simple());
    let mut arguments = FieldTable::default();
    if prioritised {
        arguments.insert(
            "x-max-priority".into(),
            AMQPValue::LongLongInt(i64::from(MAX_PRIORITY)),
        );
    }
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    let began = Instant::now();
    let mut confirms = Vec::with_capacity(messages);
    for index in 0..messages {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if prioritised {
            let level = u8::try_from(index % usize::from(MAX_PRIORITY)).unwrap_or(0) + 1;
            properties = properties.with_priority(level);
        }
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?,
        );
    }
    for confirm in confirms {
        anyhow::ensure!(confirm.await?.is_ack(), "the broker nacked a message");
    }
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..messages {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let seconds = began.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    Ok(seconds)
}
