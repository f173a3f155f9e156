//! Fixed values the aggregates' tests build their histories and commands
//! from: an instant to count seconds from, and one id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A fixed instant, `second` seconds after 2023-11-14T22:13:20Z.
///
/// # Panics
/// When the instant is out of `chrono`'s range (it never is for a test's
/// seconds).
pub fn at(second: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + second, 0).expect("a test instant")
}

/// The id of the one task or API key a test speaks of.
pub const FIXED_ID: Uuid = Uuid::from_u128(0x3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8);

/// [`FIXED_ID`] as refusals name it (its first eight digits and `…`).
pub const FIXED_ID_SHORT: &str = "3f2a1b4c…";
