//! Whose an event is: the tenant of a task event (its stream's
//! `TaskSubmitted`) or of a device event (the device's assignment when it
//! happened), looked up in the log and remembered, a bounded number.

use std::collections::HashMap;

use taskledger_events::device::{DeviceEvent, Imei};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::tenant::TenantName;
use taskledger_events::{Direction, EventStore, RecordedEvent, StreamId};

/// Streams remembered before the memory is emptied.
const REMEMBERED: usize = 100_000;

/// Tenants of task and device streams seen (or looked up).
#[derive(Debug, Default)]
pub(super) struct Tenants {
    by_stream: HashMap<String, TenantName>,
}

impl Tenants {
    /// Keeps the tenant a `DeviceAssigned` names: the one in force for the
    /// device's next events read in order.
    pub(super) fn remember(&mut self, recorded: &RecordedEvent) {
        if recorded.event_type == "DeviceAssigned" {
            if let Ok(DeviceEvent::Assigned(assigned)) = DeviceEvent::from_recorded(recorded) {
                self.by_stream
                    .insert(recorded.stream_id.clone(), assigned.tenant);
            }
        }
    }

    /// The tenant of a task or device event: from a `TaskSubmitted` (this
    /// one, or the stream's first), or the device's assignment when the
    /// event happened. `live`: `recorded` is the event the follower just
    /// read, so the assignments remembered are the ones in force; an older
    /// event (a replay, a webhook catching up), whose device may have been
    /// reassigned since, has the assignment before it looked up in the log.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub(super) async fn of(
        &mut self,
        store: &PgEventStore,
        recorded: &RecordedEvent,
        live: bool,
    ) -> anyhow::Result<Option<TenantName>> {
        let is_device = Imei::from_stream_id(&recorded.stream_id).is_some();
        if is_device && !live {
            return device_tenant_before(store, recorded).await;
        }
        if let Some(tenant) = self.by_stream.get(&recorded.stream_id) {
            return Ok(Some(tenant.clone()));
        }
        if self.by_stream.len() > REMEMBERED {
            self.by_stream.clear();
        }
        let stream = StreamId::new(recorded.stream_id.clone())?;
        let tenant = if TaskId::from_stream_id(&recorded.stream_id).is_some() {
            let first = if recorded.version == 1 {
                vec![recorded.clone()]
            } else {
                store.read_stream(&stream, 1, Direction::Forward, 1).await?
            };
            match first.first().map(TaskEvent::from_recorded) {
                Some(Ok(TaskEvent::Submitted(submitted))) => Some(submitted.tenant),
                _ => None,
            }
        } else if is_device {
            match store.latest_of_type(&stream, "DeviceAssigned").await? {
                Some(assigned) => match DeviceEvent::from_recorded(&assigned) {
                    Ok(DeviceEvent::Assigned(assigned)) => Some(assigned.tenant),
                    _ => None,
                },
                None => None,
            }
        } else {
            None
        };
        if let Some(tenant) = &tenant {
            self.by_stream
                .insert(recorded.stream_id.clone(), tenant.clone());
        }
        Ok(tenant)
    }
}

/// The tenant of the last `DeviceAssigned` before `recorded` in its
/// device's stream, if any.
async fn device_tenant_before(
    store: &PgEventStore,
    recorded: &RecordedEvent,
) -> anyhow::Result<Option<TenantName>> {
    let stream = StreamId::new(recorded.stream_id.clone())?;
    let mut from_version = recorded.version;
    while from_version > 0 {
        let batch = store
            .read_stream(&stream, from_version, Direction::Backward, 500)
            .await?;
        let Some(last) = batch.last() else { break };
        from_version = last.version.saturating_sub(1);
        for event in &batch {
            if let Ok(DeviceEvent::Assigned(assigned)) = DeviceEvent::from_recorded(event) {
                return Ok(Some(assigned.tenant));
            }
        }
    }
    Ok(None)
}
