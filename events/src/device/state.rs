//! A device as its events leave it, and [`apply`], the fold.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DeviceEvent;
use crate::tenant::TenantName;

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
    /// Outbound messages by id.
    pub outbound: BTreeMap<Uuid, Outbound>,
    /// Inbound messages seen: `(momsn, transmit_time)`.
    pub received: BTreeSet<(u64, String)>,
    /// The tenant it is assigned to; `None` until a platform admin assigns
    /// it (then only platform keys see it).
    pub tenant: Option<TenantName>,
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
            if let Some(message) = state.outbound.get_mut(&attempted.message_id) {
                message.status = OutboundStatus::Sending;
                message.attempts = attempted.attempt;
            }
        }
        DeviceEvent::Sent(sent) => {
            if let Some(message) = state.outbound.get_mut(&sent.message_id) {
                message.status = OutboundStatus::Sent;
            }
        }
        DeviceEvent::Failed(failed) => {
            if let Some(message) = state.outbound.get_mut(&failed.message_id) {
                message.status = if failed.final_failure {
                    OutboundStatus::Failed
                } else {
                    OutboundStatus::Queued
                };
            }
        }
        DeviceEvent::Received(received) => {
            state
                .received
                .insert((received.momsn, received.transmit_time.clone()));
        }
        DeviceEvent::Assigned(assigned) => {
            state.tenant = Some(assigned.tenant.clone());
        }
    }
    state
}
