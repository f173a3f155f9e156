//! What the console reads from `/v1`'s answers (the fields its pages
//! show; `/v1` documents them all), and how the pages print them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A page of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
pub(super) struct TaskPage {
    pub(super) items: Vec<Task>,
    pub(super) next_cursor: Option<String>,
}

/// A task (`TaskView`).
#[derive(Debug, Deserialize)]
pub(super) struct Task {
    pub(super) id: Uuid,
    pub(super) kind: String,
    pub(super) status: String,
    pub(super) tenant: String,
    pub(super) frontend_id: String,
    pub(super) client_task_id: Option<String>,
    pub(super) params: Map<String, Value>,
    #[serde(default)]
    pub(super) inputs: BTreeMap<String, String>,
    pub(super) priority: i32,
    pub(super) max_attempts: u32,
    pub(super) attempts: u32,
    pub(super) worker_id: Option<String>,
    pub(super) progress: Option<Progress>,
    pub(super) error: Option<String>,
    pub(super) exit_code: Option<i32>,
    pub(super) submitted_at: DateTime<Utc>,
    pub(super) submitted_by: Option<String>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    /// While a retry waits: when its attempt may start.
    #[serde(default)]
    pub(super) next_attempt_at: Option<DateTime<Utc>>,
    pub(super) stream_version: u64,
}

/// A running attempt's progress.
#[derive(Debug, Deserialize)]
pub(super) struct Progress {
    pub(super) percent: Option<f64>,
    pub(super) message: Option<String>,
}

impl Task {
    /// The first eight characters of the id, as the CLI shows it.
    pub(super) fn short_id(&self) -> String {
        self.id.to_string()[..8].to_owned()
    }

    pub(super) fn submitted(&self) -> String {
        when(&self.submitted_at)
    }

    pub(super) fn started(&self) -> String {
        self.started_at.as_ref().map_or_else(String::new, when)
    }

    pub(super) fn finished(&self) -> String {
        self.finished_at.as_ref().map_or_else(String::new, when)
    }

    /// When a waiting retry may start (empty when none waits).
    pub(super) fn next_attempt(&self) -> String {
        self.next_attempt_at.as_ref().map_or_else(String::new, when)
    }

    /// Whether the task may still be canceled (waiting, queued or running).
    pub(super) fn cancelable(&self) -> bool {
        matches!(self.status.as_str(), "waiting" | "queued" | "running")
    }

    /// Whether nothing more can happen to the task.
    pub(super) fn is_final(&self) -> bool {
        !self.cancelable()
    }

    /// The parameters, as indented JSON.
    pub(super) fn params_json(&self) -> String {
        pretty(&Value::Object(self.params.clone()))
    }

    /// The progress in words (`42% copying`), empty when none.
    pub(super) fn progress_text(&self) -> String {
        let Some(progress) = &self.progress else {
            return String::new();
        };
        let percent = progress
            .percent
            .map(|percent| format!("{percent:.0}%"))
            .unwrap_or_default();
        let message = progress.message.clone().unwrap_or_default();
        format!("{percent} {message}").trim().to_owned()
    }
}

/// A succeeded task's result (`ResultView`).
#[derive(Debug, Deserialize)]
pub(super) struct TaskResult {
    pub(super) attempt: u32,
    pub(super) result: Value,
    pub(super) exit_code: i32,
}

impl TaskResult {
    pub(super) fn result_json(&self) -> String {
        pretty(&self.result)
    }
}

/// A page of a task's files (`ArtifactPage`).
#[derive(Debug, Deserialize)]
pub(super) struct ArtifactPage {
    pub(super) items: Vec<Artifact>,
}

/// A file a task produced.
#[derive(Debug, Deserialize)]
pub(super) struct Artifact {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) media_type: String,
}

impl Artifact {
    /// The name as one path segment of a link.
    pub(super) fn name_in_path(&self) -> String {
        path_segment(&self.name)
    }
}

/// `text` percent-encoded as one segment of a URL's path.
pub(super) fn path_segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A page of a task's history (`EventPage`).
#[derive(Debug, Deserialize)]
pub(super) struct EventPage {
    pub(super) items: Vec<Event>,
    pub(super) next_cursor: Option<String>,
}

/// One event of a task's history (`EventView`).
#[derive(Debug, Deserialize)]
pub(super) struct Event {
    pub(super) position: u64,
    pub(super) version: u64,
    pub(super) event_type: String,
    pub(super) data: Value,
    pub(super) metadata: Value,
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) hash: String,
}

impl Event {
    pub(super) fn recorded(&self) -> String {
        when(&self.recorded_at)
    }

    /// Who caused it: the metadata's actor (a key id or a worker).
    pub(super) fn actor(&self) -> String {
        self.metadata
            .get("actor")
            .and_then(Value::as_str)
            .unwrap_or("—")
            .to_owned()
    }

    pub(super) fn data_json(&self) -> String {
        pretty(&self.data)
    }

    /// The hash's first 16 hexadecimal digits (the whole one is its title).
    pub(super) fn short_hash(&self) -> String {
        self.hash.chars().take(16).collect()
    }
}

/// An instant as the pages print it: `2026-01-31 12:00:00 UTC`.
pub(super) fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A byte count in words (`1.5 KiB`).
pub(super) fn size(bytes: &u64) -> String {
    let bytes = *bytes;
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    for unit in ["KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}
