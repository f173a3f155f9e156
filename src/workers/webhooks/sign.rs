//! Standard Webhooks signatures: the secret (`whsec_` + base64 of random
//! bytes, [`new_secret`]) and the `webhook-signature` header
//! ([`signature`]): `v1,` + base64(HMAC-SHA256(secret bytes,
//! `"{id}.{timestamp}.{body}"`)).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of every webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret from `random` (24 bytes of the caller's randomness: 192
/// bits, the length Standard Webhooks' reference libraries make).
pub fn new_secret(random: [u8; 24]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(random))
}

/// The secret's key bytes: the base64 after `whsec_`.
///
/// # Errors
/// When `secret` is not `whsec_` and base64.
pub fn key_bytes(secret: &str) -> anyhow::Result<Vec<u8>> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| anyhow::anyhow!("a webhook secret starts with {SECRET_PREFIX}"))?;
    Ok(STANDARD.decode(encoded)?)
}

/// The `webhook-signature` header value for message `id`, sent at
/// `timestamp` (unix seconds), with `body`, signed with `key` (from
/// [`key_bytes`]).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vector_is_reproduced() {
        // The Standard Webhooks reference libraries' test vector.
        let key = key_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_prefixed_base64_of_their_bytes() {
        let secret = new_secret([7; 24]);
        assert!(secret.starts_with("whsec_"), "{secret}");
        assert_eq!(key_bytes(&secret).unwrap(), vec![7; 24]);
        assert!(key_bytes("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    }
}
