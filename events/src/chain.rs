//! The SHA-256 hash chain over the global order.
//!
//! Every event carries `hash = sha256(previous hash || canonical bytes)`, where
//! the previous hash of the first event is 32 zero bytes ([`GENESIS_HASH`]) and
//! the canonical bytes are, in this order, each integer big-endian and each
//! variable-length field prefixed with its length as a `u64`:
//!
//! ```text
//! "taskledger-event-v1" | global_position u64 | event_id (16 bytes) | stream_id
//! | version u64 | event_type | schema_version u32 | canonical JSON of data
//! | canonical JSON of metadata | recorded_at as microseconds since 1970 i64
//! ```
//!
//! Canonical JSON has object keys sorted by their UTF-8 bytes, no whitespace,
//! strings escaped as `serde_json` does and numbers as `serde_json` prints
//! them. The store writes `data` and metadata as exactly this text (in `json`
//! columns, which keep text as given), so the hash can be recomputed from what
//! is stored without trusting a JSON library to print the same way twice.
//! README.md ("Verifying the chain yourself") spells every rule out for
//! verifiers in other languages (`scripts/verify-chain.py` is one); the test
//! vectors below hold this code to that text, so a `serde_json` upgrade that
//! printed numbers or strings differently fails here, not in a mirror.
//!
//! Changing one byte of any event, removing an event or swapping two changes
//! every hash from that point on, so a verifier reports the first place where
//! the stored hash and the recomputed one disagree.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::envelope::{Metadata, RecordedEvent};

/// The "previous hash" of the first event in the log.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

const DOMAIN: &[u8] = b"taskledger-event-v1";

/// The parts of an event that its hash covers, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// Place in the global order.
    pub global_position: u64,
    /// The event id.
    pub event_id: uuid::Uuid,
    /// The stream.
    pub stream_id: &'a str,
    /// Place in the stream.
    pub version: u64,
    /// Stored type name.
    pub event_type: &'a str,
    /// Stored schema version (before any upcasting).
    pub schema_version: u32,
    /// Canonical JSON text of the data, see [`canonical_json`].
    pub data_json: &'a str,
    /// Canonical JSON text of the metadata.
    pub metadata_json: &'a str,
    /// Microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

/// `sha256(previous || canonical bytes of input)`.
pub fn event_hash(previous: &[u8; 32], input: &HashInput<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    field(&mut hasher, DOMAIN);
    hasher.update(input.global_position.to_be_bytes());
    field(&mut hasher, input.event_id.as_bytes());
    field(&mut hasher, input.stream_id.as_bytes());
    hasher.update(input.version.to_be_bytes());
    field(&mut hasher, input.event_type.as_bytes());
    hasher.update(input.schema_version.to_be_bytes());
    field(&mut hasher, input.data_json.as_bytes());
    field(&mut hasher, input.metadata_json.as_bytes());
    hasher.update(input.recorded_at_micros.to_be_bytes());
    hasher.finalize().into()
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Recomputes the hash of a stored (not upcast) event from its fields.
pub fn recompute(previous: &[u8; 32], event: &RecordedEvent) -> [u8; 32] {
    let data_json = canonical_json(&event.data);
    let metadata_json = canonical_metadata(&event.metadata);
    event_hash(
        previous,
        &HashInput {
            global_position: event.global_position,
            event_id: event.event_id,
            stream_id: &event.stream_id,
            version: event.version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data_json: &data_json,
            metadata_json: &metadata_json,
            recorded_at_micros: event.recorded_at.timestamp_micros(),
        },
    )
}

/// The canonical JSON text of metadata.
pub fn canonical_metadata(metadata: &Metadata) -> String {
    // Serializing a plain struct of strings and a map cannot fail.
    let value = serde_json::to_value(metadata).unwrap_or(Value::Null);
    canonical_json(&value)
}

/// Canonical JSON: keys sorted, no whitespace. Independent of whether
/// `serde_json`'s `preserve_order` feature is on somewhere in the build.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => write_string(text, out),
        // Null, booleans and numbers print the same way in any key order.
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(text: &str, out: &mut String) {
    // serde_json's string escaping, without building a `Value` per string.
    let mut escaped = Vec::with_capacity(text.len() + 2);
    if serde_json::to_writer(&mut escaped, text).is_ok() {
        out.push_str(&String::from_utf8_lossy(&escaped));
    }
}

/// The first place where a run of stored events breaks the chain or the
/// global order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// A position is missing (or two are out of order): `found` came where
    /// `expected` should have.
    Gap {
        /// The position that should have come next.
        expected: u64,
        /// The position that came.
        found: u64,
    },
    /// The stored hash at `global_position` is not the recomputed one: this
    /// event or one before it was altered, removed or reordered.
    HashMismatch {
        /// The first event whose hash does not verify.
        global_position: u64,
    },
}

/// Checks a run of stored events, in global order, that starts right after an
/// event whose hash was `previous` and whose position was `previous_position`
/// (0 and [`GENESIS_HASH`] for the start of the log).
///
/// # Errors
/// The first [`ChainBreak`].
pub fn verify_run<'a>(
    previous_position: u64,
    previous: [u8; 32],
    events: impl IntoIterator<Item = &'a RecordedEvent>,
) -> Result<(u64, [u8; 32]), ChainBreak> {
    let mut position = previous_position;
    let mut hash = previous;
    for event in events {
        if event.global_position != position + 1 {
            return Err(ChainBreak::Gap {
                expected: position + 1,
                found: event.global_position,
            });
        }
        let recomputed = recompute(&hash, event);
        if recomputed != event.hash {
            return Err(ChainBreak::HashMismatch {
                global_position: event.global_position,
            });
        }
        position = event.global_position;
        hash = event.hash;
    }
    Ok((position, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"z": [true, null, 1.5], "y": "x\"\n"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"y":"x\"\n","z":[true,null,1.5]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_survives_a_round_trip() {
        let value = json!({"n": -0.0, "big": 18446744073709551615_u64, "f": 0.1, "e": 1e300, "s": "\u{0}é"});
        let text = canonical_json(&value);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical_json(&parsed), text);
    }

    /// The example of README.md's "Verifying the chain yourself".
    #[test]
    fn the_documented_example_hashes_as_documented() {
        let data: Value = serde_json::from_str(
            r#"{"b":[1,-0.0,1e21,0.1,18446744073709551615],"a":"é\n\u0001😀","é":{"z":null,"y":true}}"#,
        )
        .unwrap();
        let data_json = canonical_json(&data);
        assert_eq!(
            data_json,
            r#"{"a":"é\n\u0001😀","b":[1,-0.0,1e+21,0.1,18446744073709551615],"é":{"y":true,"z":null}}"#
        );
        let metadata = Metadata {
            actor: Some("key-1".into()),
            ..Metadata::default()
        };
        let recorded_at: chrono::DateTime<chrono::Utc> =
            "2024-05-01T12:00:00.123456Z".parse().unwrap();
        let hash = event_hash(
            &GENESIS_HASH,
            &HashInput {
                global_position: 1,
                event_id: "01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap(),
                stream_id: "demo-1",
                version: 1,
                event_type: "Demo",
                schema_version: 1,
                data_json: &data_json,
                metadata_json: &canonical_metadata(&metadata),
                recorded_at_micros: recorded_at.timestamp_micros(),
            },
        );
        assert_eq!(
            hex::encode(hash),
            "3ab882ea8a9b602038e8fc55b5e0fcea335694373715033a40a9271e583706cd"
        );
    }

    /// Each rule of README.md's canonical JSON, as the Rust side prints it.
    #[test]
    fn canonical_json_prints_numbers_and_strings_as_documented() {
        let cases = [
            // Doubles: shortest digits; plain from 1e-5 to below 1e16.
            ("1e21", "1e+21"),
            ("1E+16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("123456789012345678e0", "1.2345678901234568e+17"),
            ("1.5e300", "1.5e+300"),
            ("0.00001", "0.00001"),
            ("0.000001", "1e-6"),
            ("4.35e-10", "4.35e-10"),
            ("5e-324", "5e-324"),
            ("0.1", "0.1"),
            ("100.0", "100.0"),
            ("1.0e2", "100.0"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("-12.5", "-12.5"),
            // Integers from -2^63 to 2^64 - 1; beyond, and -0, are doubles.
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("18446744073709551616", "1.8446744073709552e+19"),
            ("-9223372036854775809", "-9.223372036854776e+18"),
            ("-0", "-0.0"),
            // Strings: short escapes, \u00xx (lowercase) for other controls,
            // everything else as itself.
            (
                r#""\u0000\u001F\b\f\n\r\t\"\\\/""#,
                r#""\u0000\u001f\b\f\n\r\t\"\\/""#,
            ),
            (r#""\u007f\u2028é\ud83d\ude00""#, "\"\u{7f}\u{2028}é😀\""),
            // Keys by UTF-8 bytes: "B" < "a" < "é" < "😀".
            (
                r#"{"😀":1,"é":2,"a":3,"B":4}"#,
                r#"{"B":4,"a":3,"é":2,"😀":1}"#,
            ),
        ];
        for (input, canonical) in cases {
            let value: Value = serde_json::from_str(input).unwrap();
            assert_eq!(canonical_json(&value), canonical, "{input}");
        }
    }

    #[test]
    fn the_hash_depends_on_every_field_and_the_previous_hash() {
        let base = HashInput {
            global_position: 1,
            event_id: uuid::Uuid::nil(),
            stream_id: "s",
            version: 1,
            event_type: "T",
            schema_version: 1,
            data_json: "{}",
            metadata_json: "{}",
            recorded_at_micros: 0,
        };
        let original = event_hash(&GENESIS_HASH, &base);
        let variants = [
            HashInput {
                global_position: 2,
                ..base
            },
            HashInput {
                event_id: uuid::Uuid::max(),
                ..base
            },
            HashInput {
                stream_id: "t",
                ..base
            },
            HashInput { version: 2, ..base },
            HashInput {
                event_type: "U",
                ..base
            },
            HashInput {
                schema_version: 2,
                ..base
            },
            HashInput {
                data_json: r#"{"a":1}"#,
                ..base
            },
            HashInput {
                metadata_json: r#"{"a":1}"#,
                ..base
            },
            HashInput {
                recorded_at_micros: 1,
                ..base
            },
            // Length prefixes keep field boundaries apart.
            HashInput {
                stream_id: "sT",
                event_type: "",
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(event_hash(&GENESIS_HASH, &variant), original, "{variant:?}");
        }
        assert_ne!(event_hash(&[1; 32], &base), original);
    }
}
