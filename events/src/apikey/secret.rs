//! An API key's secret: how one is made from random bytes
//! ([`generate_secret`]) and the only form of it that is kept
//! ([`hash_secret`]).
//!
//! Keys are compared by hash. A secret names its key's id
//! ([`key_id_of_secret`]); a request's secret is hashed once and the hash is
//! compared with the hashes the key's events hold, so checking a key is the
//! same work however much of the secret is right, and no secret is ever
//! compared byte by byte. Only hashes are stored — in
//! [`CreateApiKey`](super::CreateApiKey), the `ApiKeyCreated` event and the
//! read model — so a copy of the log or the database gives no usable key.
//! A plain SHA-256 (no salt, no stretching) is enough because the secret is
//! 256 random bits, not a password someone chose.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::ApiKeyId;

/// What every secret starts with, so a leaked one is recognisable (e.g. by
/// secret scanners) and cannot be mistaken for a password.
pub const SECRET_PREFIX: &str = "tlk_";

/// The length of every secret [`generate_secret`] makes: the prefix, the
/// key's id in 32 lowercase hexadecimal digits, `_`, and 43 base64url
/// characters (32 random bytes without padding).
pub const SECRET_LENGTH: usize = SECRET_PREFIX.len() + 32 + 1 + 43;

/// The length of a secret made before secrets carried their key's id: the
/// prefix and 43 base64url characters. Such secrets still work; they are
/// found by their hash in the `api_keys` read model.
pub const LEGACY_SECRET_LENGTH: usize = SECRET_PREFIX.len() + 43;

/// A new secret for the key `key_id`: [`SECRET_PREFIX`], the id as 32
/// lowercase hexadecimal digits, `_`, and `random` in base64url without
/// padding ([`SECRET_LENGTH`] ASCII characters in all, safe in a header or
/// URL): `tlk_3f2a1b4c5d6e4f708192a3b4c5d6e7f8_AAEC…`.
///
/// The id is not secret (it names the key's stream, `apikey-{id}`); it is
/// there so that whoever checks a secret can read that key's stream from
/// the log instead of looking the hash up in a read model that may lag
/// ([`key_id_of_secret`]). The 256 random bits are the secret.
///
/// Pure: the caller draws `random` from a cryptographically secure source
/// (e.g. the operating system's). The same id and bytes always give the
/// same secret.
pub fn generate_secret(key_id: ApiKeyId, random: [u8; 32]) -> String {
    let mut secret = String::with_capacity(SECRET_LENGTH);
    secret.push_str(SECRET_PREFIX);
    let mut buffer = uuid::Uuid::encode_buffer();
    secret.push_str(key_id.0.simple().encode_lower(&mut buffer));
    secret.push('_');
    URL_SAFE_NO_PAD.encode_string(random, &mut secret);
    secret
}

/// The key id a secret made by [`generate_secret`] carries; `None` for
/// anything else, including a secret of the older format without an id
/// ([`LEGACY_SECRET_LENGTH`]). Only the shape is checked: whether the
/// secret is the key's is decided by its hash.
pub fn key_id_of_secret(secret: &str) -> Option<ApiKeyId> {
    if secret.len() != SECRET_LENGTH {
        return None;
    }
    let rest = secret.strip_prefix(SECRET_PREFIX)?;
    let (hex, random) = rest.split_at_checked(32)?;
    let random = random.strip_prefix('_')?;
    let is_lower_hex = hex
        .bytes()
        .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    let is_base64url = random
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !is_lower_hex || !is_base64url {
        return None;
    }
    uuid::Uuid::try_parse(hex).ok().map(ApiKeyId)
}

/// The SHA-256 of `secret`'s UTF-8 bytes as 64 lowercase hexadecimal digits:
/// the `key_hash` of [`CreateApiKey`](super::CreateApiKey), and what a
/// presented secret is looked up by. Any string is accepted (a malformed
/// secret simply matches no key).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
