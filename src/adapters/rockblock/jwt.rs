//! MO: checking the RS256 JWT the provider signs each webhook with against
//! the webhook's body.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::mo::scalar_text;
use super::{shorten, MoError, MoMessage};

/// The provider's public key was unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the RockBLOCK public key is unusable: {0}")]
pub struct MoKeyError(String);

/// Checks the RS256 JWT of MO webhooks against the provider's public key.
#[derive(Debug, Clone)]
pub struct MoVerifier {
    key: DecodingKey,
}

impl MoVerifier {
    /// A verifier for the RSA public key in `pem` (`PUBLIC KEY` or
    /// `RSA PUBLIC KEY`).
    ///
    /// # Errors
    /// When `pem` is not PEM, is a private key, or is not an RSA key. (A
    /// PEM whose RSA content is corrupt is only noticed when verifying: every
    /// token then fails with [`MoError::BadJwt`].)
    pub fn from_pem(pem: &[u8]) -> Result<Self, MoKeyError> {
        if pem
            .windows(b"PRIVATE KEY".len())
            .any(|window| window == b"PRIVATE KEY")
        {
            return Err(MoKeyError(
                "it is a private key; configure the provider's public key".to_owned(),
            ));
        }
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|error| MoKeyError(format!("not an RSA public key in PEM ({error})")))?;
        Ok(Self { key })
    }

    /// Checks `token` (the webhook's `JWT` field): its header must name
    /// RS256, its signature verify against the key, its `exp` (only if
    /// present) lie ahead, give or take a minute, and its claims `imei`,
    /// `momsn`, `transmit_time` and `data` (hex, either case) equal
    /// `message`'s; `serial`, `iridium_latitude`, `iridium_longitude` and
    /// `iridium_cep` must be in both or neither and then equal. Claims may
    /// be strings or numbers. `aud` and `iss` are not required.
    ///
    /// # Errors
    /// [`MoError::JwtAlgorithm`] for another algorithm (`none` and HMAC
    /// included), [`MoError::BadJwt`] for a malformed, forged or expired
    /// token, [`MoError::JwtMismatch`] when the claims disagree with the
    /// body.
    pub fn verify(&self, token: &str, message: &MoMessage) -> Result<(), MoError> {
        let token = token.trim();
        let algorithm = header_algorithm(token)?;
        if algorithm != "RS256" {
            return Err(MoError::JwtAlgorithm(shorten(&algorithm, 20)));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &validation)
            .map_err(|error| MoError::BadJwt(jwt_failure(&error)))?;
        check_claims(&data.claims, message)
    }

    /// Takes what [`parse_mo_form`](super::parse_mo_form) or [`parse_mo_json`](super::parse_mo_json) returned and gives
    /// the message back once its JWT passes [`Self::verify`].
    ///
    /// # Errors
    /// [`MoError::MissingJwt`] when there is no JWT, else as
    /// [`Self::verify`].
    pub fn verify_webhook(
        &self,
        (message, jwt): (MoMessage, Option<String>),
    ) -> Result<MoMessage, MoError> {
        let token = jwt.ok_or(MoError::MissingJwt)?;
        self.verify(&token, &message)?;
        Ok(message)
    }
}

/// The `alg` of a compact JWS's header.
fn header_algorithm(token: &str) -> Result<String, MoError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(MoError::BadJwt(format!(
            "a JWT has three dot-separated parts; this one has {}",
            parts.len()
        )));
    }
    let header = base64url_decode(parts[0])
        .ok_or_else(|| MoError::BadJwt("its header is not base64url".to_owned()))?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| MoError::BadJwt("its header is not a JSON object".to_owned()))?;
    match header.get("alg") {
        Some(Value::String(algorithm)) => Ok(algorithm.clone()),
        _ => Err(MoError::BadJwt("its header names no algorithm".to_owned())),
    }
}

fn jwt_failure(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => {
            "its signature does not verify against the RockBLOCK public key".to_owned()
        }
        ErrorKind::ExpiredSignature => "it has expired".to_owned(),
        ErrorKind::InvalidClaimFormat(claim) => format!("its `{claim}` claim is malformed"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => {
            format!("it is malformed ({error})")
        }
        _ => format!("it could not be verified ({error})"),
    }
}

/// Whether the verified claims say what the body says.
fn check_claims(claims: &Map<String, Value>, message: &MoMessage) -> Result<(), MoError> {
    let mismatch =
        |claim: &str| MoError::JwtMismatch(format!("the `{claim}` claim differs from the body's"));
    let text = |claim: &'static str| -> Result<Option<String>, MoError> {
        match claims.get(claim).map(scalar_text) {
            None => Ok(None),
            Some(Ok(value)) => Ok(value.map(|value| value.trim().to_owned())),
            Some(Err(kind)) => Err(MoError::JwtMismatch(format!(
                "the `{claim}` claim is {kind}"
            ))),
        }
    };
    let required = |claim: &'static str| -> Result<String, MoError> {
        text(claim)?.ok_or_else(|| MoError::JwtMismatch(format!("the JWT has no `{claim}` claim")))
    };

    if required("imei")? != message.imei {
        return Err(mismatch("imei"));
    }
    if required("momsn")?.parse::<u64>().ok() != Some(message.momsn) {
        return Err(mismatch("momsn"));
    }
    if required("transmit_time")? != message.transmit_time {
        return Err(mismatch("transmit_time"));
    }
    // A message without payload may come with no `data` claim.
    let data = text("data")?.unwrap_or_default();
    if hex::decode(&data).ok().as_deref() != Some(message.data.as_slice()) {
        return Err(mismatch("data"));
    }

    let serial = text("serial")?.filter(|value| !value.is_empty());
    if serial.map(|value| value.parse::<u64>().ok()) != message.serial.map(Some) {
        return Err(mismatch("serial"));
    }
    for (claim, body) in [
        ("iridium_latitude", message.iridium_latitude),
        ("iridium_longitude", message.iridium_longitude),
        ("iridium_cep", message.iridium_cep),
    ] {
        let signed = text(claim)?.filter(|value| !value.is_empty());
        if signed.map(|value| value.parse::<f64>().ok()) != body.map(Some) {
            return Err(mismatch(claim));
        }
    }
    Ok(())
}

/// Decodes unpadded (or padded) base64url; `None` when it is not. Bits
/// left over after the last whole byte are ignored, as they always were.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    const BASE64URL: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    BASE64URL.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use serde_json::json;

    fn claims(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn full_claims() -> Map<String, Value> {
        claims(json!({
            "imei": "300434065197640", "serial": "12345", "momsn": "42",
            "transmit_time": "21-10-31 10:41:50", "iridium_latitude": "52.3867",
            "iridium_longitude": "0.2938", "iridium_cep": "8.0", "data": "48656c6c6f",
            "device_type": "ROCKBLOCK", "iss": "Rock 7 Core", "iat": 1_635_677_000,
        }))
    }

    #[test]
    fn claims_agreeing_with_the_body_pass_as_strings_or_numbers() {
        check_claims(&full_claims(), &sample()).unwrap();
        let numeric = claims(json!({
            "imei": "300434065197640", "serial": 12345, "momsn": 42,
            "transmit_time": "21-10-31 10:41:50", "iridium_latitude": 52.3867,
            "iridium_longitude": 0.2938, "iridium_cep": 8, "data": "48656C6C6F",
        }));
        check_claims(&numeric, &sample()).unwrap();
    }

    #[test]
    fn claims_disagreeing_with_the_body_are_a_mismatch() {
        let changes = [
            ("imei", json!("300434065197641")),
            ("momsn", json!(43)),
            ("transmit_time", json!("21-10-31 10:41:51")),
            ("data", json!("48656c6c6e")),
            ("data", json!("zz")),
            ("serial", json!("1")),
            ("iridium_latitude", json!("52.3868")),
            ("iridium_cep", json!(null)),
            ("momsn", json!([42])),
        ];
        for (claim, value) in changes {
            let mut changed = full_claims();
            changed.insert(claim.to_owned(), value.clone());
            let error = check_claims(&changed, &sample()).unwrap_err();
            assert!(
                matches!(&error, MoError::JwtMismatch(detail) if detail.contains(claim)),
                "{claim}={value}: {error:?}"
            );
        }
        for claim in ["imei", "momsn", "transmit_time", "data", "serial"] {
            let mut missing = full_claims();
            missing.remove(claim);
            assert!(
                matches!(
                    check_claims(&missing, &sample()),
                    Err(MoError::JwtMismatch(_))
                ),
                "{claim}"
            );
        }
        let mut no_position = sample();
        no_position.iridium_longitude = None;
        assert!(check_claims(&full_claims(), &no_position).is_err());
    }

    #[test]
    fn base64url_decodes_and_refuses_garbage() {
        assert_eq!(
            base64url_decode("eyJhbGciOiJub25lIn0").unwrap(),
            br#"{"alg":"none"}"#
        );
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url_decode("YQ==").unwrap(), b"a");
        assert!(base64url_decode("a+b/").is_none());
        assert!(base64url_decode("Y").is_none());
    }

    #[test]
    fn headers_name_their_algorithm() {
        assert_eq!(
            header_algorithm("eyJhbGciOiJub25lIn0.e30.").unwrap(),
            "none"
        );
        assert!(matches!(header_algorithm("a.b"), Err(MoError::BadJwt(_))));
        assert!(matches!(
            header_algorithm("!!.b.c"),
            Err(MoError::BadJwt(_))
        ));
        assert!(matches!(
            header_algorithm("e30.b.c"),
            Err(MoError::BadJwt(_))
        ));
    }

    #[test]
    fn keys_must_be_rsa_public_keys() {
        let public = include_bytes!("../../../tests/fixtures/rockblock/mo-test-key.pub.pem");
        let private = include_bytes!("../../../tests/fixtures/rockblock/mo-test-key.pem");
        assert!(MoVerifier::from_pem(public).is_ok());
        assert!(MoVerifier::from_pem(private).is_err());
        assert!(MoVerifier::from_pem(b"not a key").is_err());
    }
}
