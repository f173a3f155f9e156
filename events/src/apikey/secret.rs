//! An API key's secret: how one is made from random bytes
//! ([`generate_secret`]) and the only form of it that is kept
//! ([`hash_secret`]).
//!
//! Keys are compared by hash. A request's secret is hashed once and the hash
//! is looked up (the `api_keys.key_hash` unique index), so checking a key is
//! the same work whichever key it is and however much of it is right, and no
//! secret is ever compared byte by byte. Only hashes are stored — in
//! [`CreateApiKey`](super::CreateApiKey), the `ApiKeyCreated` event and the
//! read model — so a copy of the log or the database gives no usable key.
//! A plain SHA-256 (no salt, no stretching) is enough because the secret is
//! 256 random bits, not a password someone chose.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What every secret starts with, so a leaked one is recognisable (e.g. by
/// secret scanners) and cannot be mistaken for a password.
pub const SECRET_PREFIX: &str = "tlk_";

/// The length of every secret [`generate_secret`] makes: the prefix and 43
/// base64url characters (32 bytes without padding).
pub const SECRET_LENGTH: usize = SECRET_PREFIX.len() + 43;

/// A new secret: [`SECRET_PREFIX`] followed by `random` in base64url without
/// padding ([`SECRET_LENGTH`] ASCII characters in all, safe in a header or
/// URL).
///
/// Pure: the caller draws `random` from a cryptographically secure source
/// (e.g. the operating system's). The same bytes always give the same secret.
pub fn generate_secret(random: [u8; 32]) -> String {
    let mut secret = String::with_capacity(SECRET_LENGTH);
    secret.push_str(SECRET_PREFIX);
    URL_SAFE_NO_PAD.encode_string(random, &mut secret);
    secret
}

/// The SHA-256 of `secret`'s UTF-8 bytes as 64 lowercase hexadecimal digits:
/// the `key_hash` of [`CreateApiKey`](super::CreateApiKey), and what a
/// presented secret is looked up by. Any string is accepted (a malformed
/// secret simply matches no key).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
