//! Stream identifiers: `task-{uuid}`, `device-{imei}`, `apikey-{id}`, `ledger-{name}`.

use std::fmt;

use crate::error::InvalidInput;

/// The longest stream id the store accepts, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 200;

/// A validated stream id: 1 to [`MAX_STREAM_ID_BYTES`] bytes of UTF-8 without
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    /// Validates `id`.
    ///
    /// # Errors
    /// [`InvalidInput::StreamId`] when `id` is empty, longer than
    /// [`MAX_STREAM_ID_BYTES`] bytes, or holds a control character.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        let problem = if id.is_empty() {
            Some("it is empty".to_owned())
        } else if id.len() > MAX_STREAM_ID_BYTES {
            Some(format!(
                "it is {} bytes long, more than the limit of {MAX_STREAM_ID_BYTES}",
                id.len()
            ))
        } else if id.chars().any(char::is_control) {
            Some("it contains a control character".to_owned())
        } else {
            None
        };
        match problem {
            Some(reason) => Err(InvalidInput::StreamId {
                stream_id: id.escape_debug().to_string(),
                reason,
            }),
            None => Ok(Self(id)),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(StreamId::new("task-1").unwrap().as_str(), "task-1");
        assert!(StreamId::new("x".repeat(MAX_STREAM_ID_BYTES)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_characters() {
        for bad in [
            String::new(),
            "x".repeat(MAX_STREAM_ID_BYTES + 1),
            "task-\n1".to_owned(),
            "task-\u{7f}".to_owned(),
        ] {
            let error = StreamId::new(bad.clone()).unwrap_err();
            assert!(
                matches!(error, InvalidInput::StreamId { .. }),
                "{bad:?} gave {error:?}"
            );
        }
    }
}
