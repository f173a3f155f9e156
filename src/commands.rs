//! Command handling with this process's metrics: [`execute`] runs
//! `taskledger_events::command::execute_observed` (load, fold, decide,
//! append at the version read, bounded retry on conflict), times every
//! append and counts every command in [`crate::metrics`];
//! [`execute_device`] is the same for a device's command.

use taskledger_events::command::{self, CommandError, Executed, Loaded, Observer};
use taskledger_events::device::{DeviceCommand, Devices, Imei};
use taskledger_events::{Aggregate, EventStore, Metadata, StreamId};
use uuid::Uuid;

use crate::metrics::{self, CommandOutcome};

/// Runs `command` against `stream_id` as
/// `taskledger_events::command::execute_observed` does; every command is
/// counted in [`crate::metrics`] by aggregate, command variant and outcome,
/// and every append's latency is recorded there.
///
/// # Errors
/// See [`CommandError`].
pub async fn execute<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
) -> Result<Executed<A>, CommandError> {
    execute_known::<A>(store, stream_id, None, command, command_id, metadata).await
}

/// [`execute`] decided on `known`, the stream as the caller's last command
/// left it, as `taskledger_events::command::execute_known` does: one
/// append when nobody else wrote to the stream since, else a load and a
/// decision again.
///
/// # Errors
/// See [`CommandError`].
pub async fn execute_known<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    known: Option<Loaded<A>>,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
) -> Result<Executed<A>, CommandError> {
    let command_name = A::command_name(&command);
    let executed = command::execute_known::<A>(
        store,
        stream_id,
        known,
        command,
        command_id,
        metadata,
        &AppendLatency,
    )
    .await;
    let outcome = match &executed {
        Ok(_) => CommandOutcome::Ok,
        Err(CommandError::Rejected(_)) => CommandOutcome::Refused,
        Err(CommandError::Conflict { .. }) => CommandOutcome::Conflict,
        Err(_) => CommandOutcome::Error,
    };
    metrics::record_command(A::NAME, command_name, outcome);
    executed
}

/// [`execute`] of a device's `command` on the device's stream, under a fresh
/// command id: the device aggregate's command carries the IMEI its state
/// does not know, so both come from `imei`.
///
/// # Errors
/// See [`CommandError`].
pub async fn execute_device(
    store: &impl EventStore,
    imei: &Imei,
    command: DeviceCommand,
    metadata: Metadata,
) -> Result<Executed<Devices>, CommandError> {
    execute::<Devices>(
        store,
        &imei.stream_id(),
        (imei.clone(), command),
        Uuid::new_v4(),
        metadata,
    )
    .await
}

/// Records each append's latency in `taskledger_append_seconds`.
struct AppendLatency;

impl Observer for AppendLatency {
    fn append_finished(&self, elapsed: std::time::Duration) {
        metrics::observe_append(elapsed);
    }
}
