//! Schema evolution: old shapes of an event are turned into the current one on
//! read, one schema version at a time; stored rows are never rewritten.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::envelope::RecordedEvent;
use crate::error::StoreError;

type Step = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Upcasters by (event type, schema version they read). Reading an event runs
/// the steps for its type from its stored version up, as long as there is one.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters: events are read as stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the step that turns `event_type` at schema version `from_version`
    /// into version `from_version + 1`. A later registration for the same pair
    /// replaces the earlier one.
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from_version: u32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.into(), from_version), Arc::new(step));
        self
    }

    /// Whether no steps are registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Brings `event` to the newest schema version its type has steps for. The
    /// hash stays the stored one (it covers the event as stored).
    ///
    /// # Errors
    /// [`StoreError::Upcast`] when a step fails or returns something that is
    /// not a JSON object.
    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent, StoreError> {
        if self.steps.is_empty() {
            return Ok(event);
        }
        while let Some(step) = self
            .steps
            .get(&(event.event_type.clone(), event.schema_version))
        {
            let failed = |reason: String| StoreError::Upcast {
                global_position: event.global_position,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                reason,
            };
            let data = step(std::mem::take(&mut event.data)).map_err(failed)?;
            if !data.is_object() {
                return Err(failed("the upcaster did not return a JSON object".into()));
            }
            event.data = data;
            event.schema_version += 1;
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(event_type: &str, schema_version: u32, data: Value) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            event_id: uuid::Uuid::nil(),
            stream_id: "s".into(),
            version: 1,
            event_type: event_type.into(),
            schema_version,
            data,
            metadata: Default::default(),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            hash: [0; 32],
        }
    }

    #[test]
    fn runs_every_step_in_order() {
        let upcasters = Upcasters::new()
            .register("Renamed", 1, |mut data| {
                let name = data["name"].take();
                Ok(json!({ "full_name": name }))
            })
            .register("Renamed", 2, |mut data| {
                data["nickname"] = json!(null);
                Ok(data)
            });
        let event = upcasters
            .upcast(stored("Renamed", 1, json!({"name": "Ada"})))
            .unwrap();
        assert_eq!(event.schema_version, 3);
        assert_eq!(event.data, json!({"full_name": "Ada", "nickname": null}));
        let current = upcasters
            .upcast(stored("Renamed", 3, json!({"full_name": "Bo"})))
            .unwrap();
        assert_eq!(current.data, json!({"full_name": "Bo"}));
        let other = upcasters.upcast(stored("Other", 1, json!({}))).unwrap();
        assert_eq!(other.schema_version, 1);
    }

    #[test]
    fn a_failing_step_names_the_event() {
        let upcasters = Upcasters::new().register("Bad", 1, |_| Err("no".into()));
        let error = upcasters.upcast(stored("Bad", 1, json!({}))).unwrap_err();
        assert!(
            error.to_string().contains("Bad v1 at global position 1"),
            "{error}"
        );
    }
}
