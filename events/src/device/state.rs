//! A device as its events leave it, and [`apply`], the fold. The state is
//! bounded whatever the device's history: it keeps the messages still in
//! flight, and only a window of finished and received ones.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DeviceEvent;
use crate::tenant::TenantName;

/// How many of the newest received `(momsn, transmit_time)` pairs the state
/// remembers to ignore redelivered webhooks. The provider redelivers a
/// message it got no 200 for within minutes, and a modem completes at most
/// a few transmit sessions a minute, so a redelivery falls well inside the
/// window (over three hours of messages at one every ten seconds). A pair
/// older than the window is recorded again, which the `momsn` counter's
/// wrap (0 to 65,535) makes harmless: `transmit_time` tells its rounds
/// apart.
pub const RECEIVED_WINDOW: usize = 1_024;

/// How many of the newest finished (sent or given up) outbound messages the
/// state remembers, so that a late attempt or answer for one is refused as
/// an invalid transition, and its id is not queued again. Older ones are
/// forgotten: an attempt for one is refused as not found, and ids are
/// fresh UUIDv7s that are not reused.
pub const FINISHED_WINDOW: usize = 256;

/// Where an outbound message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboundStatus {
    /// Waiting for its next attempt.
    Queued,
    /// An attempt is under way.
    Sending,
    /// The provider accepted it (final).
    Sent,
    /// Given up (final).
    Failed,
}

impl OutboundStatus {
    /// Whether no command moves it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Failed)
    }
}

/// An outbound message as its events leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// Where it is.
    pub status: OutboundStatus,
    /// Attempts begun.
    pub attempts: u32,
}

/// A device as its events leave it. Serde only for its snapshots
/// ([`super::Devices`]'s state schema: raise it when this changes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Outbound messages not finished yet (queued or sending), by id.
    pub outbound: BTreeMap<Uuid, Outbound>,
    /// The newest [`FINISHED_WINDOW`] finished outbound messages, oldest
    /// first.
    pub finished: VecDeque<(Uuid, Outbound)>,
    /// The newest [`RECEIVED_WINDOW`] inbound messages seen, as
    /// `(momsn, transmit_time)`, oldest first.
    pub received: VecDeque<(u64, String)>,
    /// The tenant it is assigned to; `None` until a platform admin assigns
    /// it (then only platform keys see it).
    pub tenant: Option<TenantName>,
}

impl DeviceState {
    /// The outbound message `message_id`, whether in flight or among the
    /// newest finished ones; `None` for one never queued or finished before
    /// the window.
    pub fn message(&self, message_id: Uuid) -> Option<Outbound> {
        self.outbound.get(&message_id).copied().or_else(|| {
            self.finished
                .iter()
                .find(|(id, _)| *id == message_id)
                .map(|(_, message)| *message)
        })
    }

    /// Whether the inbound message `(momsn, transmit_time)` is among the
    /// newest [`RECEIVED_WINDOW`] received.
    pub fn has_received(&self, momsn: u64, transmit_time: &str) -> bool {
        self.received
            .iter()
            .any(|(seen, time)| *seen == momsn && time == transmit_time)
    }

    /// Applies `change` to the in-flight message `message_id` (events for
    /// any other are ignored) and moves it to the finished window once it
    /// is final.
    fn update(&mut self, message_id: Uuid, change: impl FnOnce(&mut Outbound)) {
        let Some(message) = self.outbound.get_mut(&message_id) else {
            return;
        };
        change(message);
        if message.status.is_final() {
            let message = *message;
            self.outbound.remove(&message_id);
            if self.finished.len() == FINISHED_WINDOW {
                self.finished.pop_front();
            }
            self.finished.push_back((message_id, message));
        }
    }
}

/// The state after `event`.
pub fn apply(mut state: DeviceState, event: &DeviceEvent) -> DeviceState {
    match event {
        DeviceEvent::Queued(queued) => {
            state.outbound.insert(
                queued.message_id,
                Outbound {
                    status: OutboundStatus::Queued,
                    attempts: 0,
                },
            );
        }
        DeviceEvent::SendAttempted(attempted) => {
            state.update(attempted.message_id, |message| {
                message.status = OutboundStatus::Sending;
                message.attempts = attempted.attempt;
            });
        }
        DeviceEvent::Sent(sent) => {
            state.update(sent.message_id, |message| {
                message.status = OutboundStatus::Sent;
            });
        }
        DeviceEvent::Failed(failed) => {
            state.update(failed.message_id, |message| {
                message.status = if failed.final_failure {
                    OutboundStatus::Failed
                } else {
                    OutboundStatus::Queued
                };
            });
        }
        DeviceEvent::Received(received) => {
            if state.received.len() == RECEIVED_WINDOW {
                state.received.pop_front();
            }
            state
                .received
                .push_back((received.momsn, received.transmit_time.clone()));
        }
        DeviceEvent::Assigned(assigned) => {
            state.tenant = Some(assigned.tenant.clone());
        }
    }
    state
}
