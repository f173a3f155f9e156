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

/// Defines an aggregate's identity: a UUID (`pub` field 0) whose stream is
/// `{prefix}{uuid}`, with `STREAM_PREFIX`, `stream_id`, `from_stream_id`,
/// `short`, `Display` (the full UUID, lowercase and hyphenated) and
/// `From<Uuid>`, serialized as the bare UUID. `$what` names the aggregate
/// in the generated docs (`task`, `API key`).
macro_rules! uuid_identity {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub ::uuid::Uuid);

        impl $name {
            #[doc = concat!("The prefix of every ", $what, " stream's id.")]
            pub const STREAM_PREFIX: &'static str = $prefix;

            #[doc = concat!(
                "The stream that holds this ", $what, "'s events: `", $prefix,
                "{uuid}`, the UUID in its lowercase hyphenated form."
            )]
            pub fn stream_id(&self) -> $crate::StreamId {
                // A short ASCII prefix and a UUID: never empty, never too
                // long, no control characters.
                $crate::StreamId::new(format!("{}{}", Self::STREAM_PREFIX, self.0))
                    .expect(concat!($prefix, "{uuid} is always a valid stream id"))
            }

            #[doc = concat!(
                "The ", $what, " whose stream is `stream_id`, or `None` when `stream_id` is not `",
                $prefix, "` followed by a UUID."
            )]
            pub fn from_stream_id(stream_id: &str) -> Option<Self> {
                let uuid = stream_id.strip_prefix(Self::STREAM_PREFIX)?;
                ::uuid::Uuid::parse_str(uuid).ok().map(Self)
            }

            #[doc = concat!(
                "The first 8 hexadecimal digits followed by \"…\", for messages meant for ",
                "people (`3f2a1b4c…`). Not unique: keep the full id wherever it is needed to ",
                "find the ", $what, " again."
            )]
            pub fn short(&self) -> String {
                let mut buffer = ::uuid::Uuid::encode_buffer();
                let hex = self.0.simple().encode_lower(&mut buffer);
                format!("{}…", &hex[..8])
            }
        }

        impl ::std::fmt::Display for $name {
            /// The full UUID, lowercase and hyphenated.
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<::uuid::Uuid> for $name {
            fn from(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}
pub(crate) use uuid_identity;

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
