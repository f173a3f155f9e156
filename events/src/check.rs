//! The field checks more than one aggregate's `decide` makes, each refusing
//! in the same words wherever it is used.

use crate::Refusal;

/// A name-like field: 1 to `max_bytes` bytes without control characters.
///
/// # Errors
/// [`Refusal::invalid`] naming `field` and what is wrong with it.
pub(crate) fn text(field: &str, value: &str, max_bytes: usize) -> Result<(), Refusal> {
    let problem = if value.is_empty() {
        format!("{field} must not be empty")
    } else if value.len() > max_bytes {
        format!(
            "{field} is {} bytes long; the limit is {max_bytes}",
            value.len()
        )
    } else if value.chars().any(char::is_control) {
        format!("{field} must not contain control characters")
    } else {
        return Ok(());
    };
    Err(Refusal::invalid(problem))
}

/// Whether `text` is a SHA-256 as this project writes one: 64 lowercase
/// hexadecimal digits.
pub(crate) fn is_lowercase_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}
