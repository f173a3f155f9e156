//! The RockBLOCK web API: sending mobile-terminated (MT) messages through
//! the provider's HTTP endpoint ([`MtClient`]) and reading its
//! mobile-originated (MO) webhooks ([`parse_mo_form`], [`parse_mo_json`]),
//! whose RS256 JWT [`MoVerifier`] checks against the body.
//!
//! The provider answers an MT POST with a text body, `OK,<mtId>` or
//! `FAILED,<code>,<text>`; [`parse_mt_response`] turns it into an
//! [`MtOutcome`] that says whether trying again can help. The account
//! password is sent in the form body only and appears in no error text,
//! log line or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The largest MT payload the provider accepts, in bytes.
pub const MAX_MT_BYTES: usize = 270;

/// The largest MO payload a RockBLOCK sends, in bytes.
pub const MAX_MO_BYTES: usize = 340;

/// How long [`MtClient::send`] waits for the provider unless told otherwise.
pub const DEFAULT_MT_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks that `imei` is an IMEI as the provider writes it: exactly 15
/// ASCII digits.
///
/// # Errors
/// A sentence saying what is wrong, fit for a problem detail.
pub fn check_imei(imei: &str) -> Result<(), String> {
    if imei.len() == 15 && imei.bytes().all(|byte| byte.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "an IMEI is exactly 15 digits; got {:?} ({} characters)",
            shorten(imei, 40),
            imei.chars().count()
        ))
    }
}

// ---------------------------------------------------------------------------
// MT: sending
// ---------------------------------------------------------------------------

/// The RockBLOCK account an MT message is sent from.
#[derive(Clone, PartialEq, Eq)]
pub struct RockblockCredentials {
    /// The account's user name.
    pub username: String,
    /// The account's password (never printed: `Debug` shows `***`).
    pub password: String,
}

impl fmt::Debug for RockblockCredentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RockblockCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// What became of an MT send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtOutcome {
    /// The provider queued the message under this MT id.
    Sent {
        /// The provider's id of the queued message.
        mt_id: u64,
    },
    /// The provider refused the message.
    Failed {
        /// The provider's error code (10–16, 99, or another).
        code: u16,
        /// The provider's text for it.
        text: String,
        /// Whether sending the same message again is bound to fail the same
        /// way (codes 10–16); 99 and unknown codes are not permanent.
        permanent: bool,
    },
    /// No usable answer (connection error, timeout, non-2xx status or an
    /// unparseable body): the message may or may not have been queued, and
    /// trying again later may succeed.
    Transient {
        /// What went wrong, for a log (never contains the password).
        reason: String,
    },
}

impl MtOutcome {
    /// Whether the provider queued the message.
    pub fn is_sent(&self) -> bool {
        matches!(self, Self::Sent { .. })
    }

    /// Whether trying again later may succeed (a transient outcome or a
    /// non-permanent refusal).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Sent { .. } => false,
            Self::Failed { permanent, .. } => !permanent,
            Self::Transient { .. } => true,
        }
    }
}

/// Whether a provider error code means the same request can never succeed:
/// 10 invalid login credentials, 11 no RockBLOCK with this IMEI on the
/// account, 12 no line rental, 13 insufficient credit, 14 could not decode
/// hex data, 15 data too long, 16 no data. Anything else (99 system error
/// included) is not.
pub fn is_permanent_code(code: u16) -> bool {
    (10..=16).contains(&code)
}

/// Reads the provider's answer to an MT POST: `OK,<mtId>` is
/// [`MtOutcome::Sent`], `FAILED,<code>,<text>` is [`MtOutcome::Failed`]
/// (permanent as [`is_permanent_code`] says; the text may contain commas or
/// be missing), anything else [`MtOutcome::Transient`]. Surrounding
/// whitespace is ignored; the keywords are case-sensitive as documented.
pub fn parse_mt_response(body: &str) -> MtOutcome {
    let trimmed = body.trim();
    let unparseable = || MtOutcome::Transient {
        reason: format!(
            "the RockBLOCK endpoint gave an unparseable answer: {:?}",
            shorten(trimmed, 200)
        ),
    };
    let mut parts = trimmed.splitn(3, ',');
    match parts.next() {
        Some("OK") => match (parts.next(), parts.next()) {
            (Some(id), None) => match id.trim().parse::<u64>() {
                Ok(mt_id) => MtOutcome::Sent { mt_id },
                Err(_) => unparseable(),
            },
            _ => unparseable(),
        },
        Some("FAILED") => match parts.next().map(|code| code.trim().parse::<u16>()) {
            Some(Ok(code)) => MtOutcome::Failed {
                code,
                text: parts.next().unwrap_or("").trim().to_owned(),
                permanent: is_permanent_code(code),
            },
            _ => unparseable(),
        },
        _ => unparseable(),
    }
}

/// Sends MT messages through the provider's HTTP endpoint.
#[derive(Debug, Clone)]
pub struct MtClient {
    http: reqwest::Client,
    mt_url: String,
    credentials: RockblockCredentials,
    timeout: Duration,
}

impl MtClient {
    /// A client posting to `mt_url` as `credentials`, waiting at most
    /// [`DEFAULT_MT_TIMEOUT`] per request.
    pub fn new(
        http: reqwest::Client,
        mt_url: impl Into<String>,
        credentials: RockblockCredentials,
    ) -> Self {
        Self {
            http,
            mt_url: mt_url.into(),
            credentials,
            timeout: DEFAULT_MT_TIMEOUT,
        }
    }

    /// The same client waiting at most `timeout` per request (connecting,
    /// sending and reading the whole answer).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs one message for `imei` (form-encoded `imei`, `username`,
    /// `password`, `data` as lowercase hex, and `flush=yes` when `flush`,
    /// which clears the device's queue of earlier MT messages first) and
    /// reads the answer with [`parse_mt_response`].
    ///
    /// Nothing is checked locally: an IMEI that [`check_imei`] refuses or
    /// data that is empty or longer than [`MAX_MT_BYTES`] is sent as is and
    /// the provider's refusal returned. Never panics; every failure is an
    /// [`MtOutcome`], and no reason contains the password.
    #[tracing::instrument(level = "debug", skip_all, fields(imei = %imei, bytes = data.len(), flush))]
    pub async fn send(&self, imei: &str, data: &[u8], flush: bool) -> MtOutcome {
        let mut body = form_body(&[
            ("imei", imei),
            ("username", &self.credentials.username),
            ("password", &self.credentials.password),
            ("data", &hex::encode(data)),
        ]);
        if flush {
            body.push_str("&flush=yes");
        }
        let outcome = self.post(body).await;
        let outcome = self.scrub(outcome);
        match &outcome {
            MtOutcome::Sent { mt_id } => {
                tracing::debug!(
                    imei,
                    bytes = data.len(),
                    mt_id,
                    "RockBLOCK MT message queued"
                );
            }
            MtOutcome::Failed {
                code,
                text,
                permanent,
            } => {
                tracing::warn!(
                    imei,
                    code,
                    text,
                    permanent,
                    "RockBLOCK refused an MT message"
                );
            }
            MtOutcome::Transient { reason } => {
                tracing::warn!(imei, reason, "RockBLOCK MT send failed");
            }
        }
        outcome
    }

    async fn post(&self, body: String) -> MtOutcome {
        let request = self
            .http
            .post(&self.mt_url)
            .timeout(self.timeout)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "text/plain")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return self.transport_failure(error),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => self.scrub_text(text),
            Err(error) => return self.transport_failure(error),
        };
        if !status.is_success() {
            return MtOutcome::Transient {
                reason: format!(
                    "the RockBLOCK endpoint answered HTTP {status}: {:?}",
                    shorten(text.trim(), 200)
                ),
            };
        }
        parse_mt_response(&text)
    }

    fn transport_failure(&self, error: reqwest::Error) -> MtOutcome {
        let reason = if error.is_timeout() {
            format!(
                "the RockBLOCK endpoint did not answer within {:?}",
                self.timeout
            )
        } else {
            let error = error.without_url();
            let mut reason = format!("could not talk to the RockBLOCK endpoint: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                reason.push_str(": ");
                reason.push_str(&cause.to_string());
                source = cause.source();
            }
            reason
        };
        MtOutcome::Transient { reason }
    }

    /// Removes the password, as sent (form-encoded) and as given, from a
    /// response body *before* it is shortened or escaped, so no part of it
    /// survives into an error text (which may be stored in the log).
    fn scrub_text(&self, text: String) -> String {
        let password = self.credentials.password.as_str();
        if password.is_empty() {
            return text;
        }
        let mut encoded = String::new();
        form_encode_into(&mut encoded, password);
        text.replace(password, "***").replace(&encoded, "***")
    }

    /// Removes the password from any text of `outcome` (belt and braces:
    /// an endpoint could echo the request).
    fn scrub(&self, outcome: MtOutcome) -> MtOutcome {
        let password = self.credentials.password.as_str();
        if password.is_empty() {
            return outcome;
        }
        let clean = |text: String| {
            if text.contains(password) {
                text.replace(password, "***")
            } else {
                text
            }
        };
        match outcome {
            MtOutcome::Failed {
                code,
                text,
                permanent,
            } => MtOutcome::Failed {
                code,
                text: clean(text),
                permanent,
            },
            MtOutcome::Transient { reason } => MtOutcome::Transient {
                reason: clean(reason),
            },
            sent @ MtOutcome::Sent { .. } => sent,
        }
    }
}

/// `application/x-www-form-urlencoded` of `fields`, in order.
fn form_body(fields: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, value) in fields {
        if !body.is_empty() {
            body.push('&');
        }
        form_encode_into(&mut body, name);
        body.push('=');
        form_encode_into(&mut body, value);
    }
    body
}

/// Percent-encodes `text` as HTML forms do: ASCII alphanumerics and
/// `*-._` stay, a space is `+`, every other byte `%XX`.
fn form_encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MO: the webhook
// ---------------------------------------------------------------------------

/// One mobile-originated message as the provider's webhook delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct MoMessage {
    /// The sending device's IMEI (15 digits).
    pub imei: String,
    /// The device's RockBLOCK serial number, when given.
    pub serial: Option<u64>,
    /// The device's MO message sequence number.
    pub momsn: u64,
    /// When the message was sent, in the provider's format (UTC,
    /// `YY-MM-DD HH:MM:SS`), kept exactly as given.
    pub transmit_time: String,
    /// Iridium's estimate of the device's latitude, in degrees.
    pub iridium_latitude: Option<f64>,
    /// Iridium's estimate of the device's longitude, in degrees.
    pub iridium_longitude: Option<f64>,
    /// The radius of Iridium's position estimate, in kilometres.
    pub iridium_cep: Option<f64>,
    /// The payload, decoded from hex (empty when the device sent none; at
    /// most [`MAX_MO_BYTES`]).
    pub data: Vec<u8>,
}

/// Why an MO webhook was refused. Every message is a sentence fit for the
/// `detail` of a 4xx problem; none repeats a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoError {
    /// The body is not a form or JSON object as the provider sends.
    #[error("the webhook body is malformed: {0}")]
    Malformed(String),
    /// A required field (`imei`, `momsn` or `transmit_time`) is absent.
    #[error("the webhook body has no `{0}` field")]
    MissingField(&'static str),
    /// A field holds something that is not its type.
    #[error("the webhook's `{field}` field is invalid: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The `imei` field is not 15 digits.
    #[error("the webhook's `imei` field is invalid: {0}")]
    BadImei(String),
    /// The `data` field is not hex.
    #[error("the webhook's `data` field is not hex: {0}")]
    BadHex(String),
    /// The payload is longer than [`MAX_MO_BYTES`].
    #[error("the webhook's payload is {0} bytes; a RockBLOCK MO message carries at most 340")]
    TooLong(usize),
    /// The webhook carries no `JWT` field.
    #[error("the webhook carries no JWT to prove it comes from RockBLOCK")]
    MissingJwt,
    /// The JWT is signed with another algorithm than RS256 (`none` and
    /// HMAC included).
    #[error("the webhook's JWT uses the {0:?} algorithm; only RS256 is accepted")]
    JwtAlgorithm(String),
    /// The JWT is malformed, its signature does not verify against the
    /// provider's key, or it has expired.
    #[error("the webhook's JWT is not valid: {0}")]
    BadJwt(String),
    /// The JWT verifies but its claims disagree with the body.
    #[error("the webhook's JWT does not match its body: {0}")]
    JwtMismatch(String),
}

/// Reads an `application/x-www-form-urlencoded` MO webhook: the fields
/// `imei`, `serial`, `momsn`, `transmit_time`, `iridium_latitude`,
/// `iridium_longitude`, `iridium_cep`, `data` (hex) and `JWT`; others (such
/// as `device_type`) are ignored, an empty optional field is absent, and a
/// field given twice is refused. Returns the message and the JWT, if any
/// (unverified: see [`MoVerifier::verify`]).
///
/// # Errors
/// See [`MoError`]: a malformed body, a missing `imei`, `momsn` or
/// `transmit_time`, a bad IMEI, malformed hex, data over [`MAX_MO_BYTES`].
pub fn parse_mo_form(body: &[u8]) -> Result<(MoMessage, Option<String>), MoError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| MoError::Malformed("the form is not UTF-8".to_owned()))?;
    let mut fields = Fields::new();
    for pair in text.trim().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name)?;
        let value = form_decode(value)?;
        fields.insert(name, value)?;
    }
    fields.into_message()
}

/// Reads an `application/json` MO webhook: an object with the field names
/// of [`parse_mo_form`], whose numbers may be JSON numbers or strings and
/// whose absent values may be `null`. Returns the message and the JWT, if
/// any (unverified: see [`MoVerifier::verify`]).
///
/// # Errors
/// As [`parse_mo_form`]; also when the body is not a JSON object or a field
/// is a boolean, array or object.
pub fn parse_mo_json(body: &[u8]) -> Result<(MoMessage, Option<String>), MoError> {
    let object: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|error| MoError::Malformed(format!("not a JSON object: {error}")))?;
    let mut fields = Fields::new();
    for (name, value) in object {
        match scalar_text(&value) {
            Ok(Some(text)) => fields.insert(name, text)?,
            Ok(None) => {}
            Err(kind) => {
                if let Some(field) = known_field(&name) {
                    return Err(MoError::InvalidField {
                        field,
                        reason: format!("expected a string or a number, got {kind}"),
                    });
                }
            }
        }
    }
    fields.into_message()
}

/// The field names this module reads, as `'static` names for errors.
const KNOWN_FIELDS: [&str; 9] = [
    "imei",
    "serial",
    "momsn",
    "transmit_time",
    "iridium_latitude",
    "iridium_longitude",
    "iridium_cep",
    "data",
    "JWT",
];

fn known_field(name: &str) -> Option<&'static str> {
    KNOWN_FIELDS.iter().copied().find(|known| *known == name)
}

/// A JSON scalar as text: a string as is, a number as written, `null` as
/// absent; anything else names its kind.
fn scalar_text(value: &Value) -> Result<Option<String>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Number(number) => Ok(Some(number.to_string())),
        Value::Bool(_) => Err("a boolean"),
        Value::Array(_) => Err("an array"),
        Value::Object(_) => Err("an object"),
    }
}

/// The webhook's known fields as text, whichever encoding they came in.
struct Fields(BTreeMap<&'static str, String>);

impl Fields {
    fn new() -> Self {
        Self(BTreeMap::new())
    }

    fn insert(&mut self, name: String, value: String) -> Result<(), MoError> {
        let Some(field) = known_field(&name) else {
            return Ok(());
        };
        if self.0.insert(field, value).is_some() {
            return Err(MoError::Malformed(format!(
                "the `{field}` field is given more than once"
            )));
        }
        Ok(())
    }

    /// The field's value, trimmed; an empty one counts as absent.
    fn get(&self, field: &'static str) -> Option<&str> {
        self.0
            .get(field)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    fn into_message(self) -> Result<(MoMessage, Option<String>), MoError> {
        let imei = self
            .get("imei")
            .ok_or(MoError::MissingField("imei"))?
            .to_owned();
        check_imei(&imei).map_err(MoError::BadImei)?;
        let momsn = self
            .get("momsn")
            .ok_or(MoError::MissingField("momsn"))
            .and_then(|text| parse_u64("momsn", text))?;
        let transmit_time = self
            .get("transmit_time")
            .ok_or(MoError::MissingField("transmit_time"))?
            .to_owned();
        let serial = self
            .get("serial")
            .map(|text| parse_u64("serial", text))
            .transpose()?;
        let iridium_latitude = self.float("iridium_latitude", 90.0)?;
        let iridium_longitude = self.float("iridium_longitude", 180.0)?;
        let iridium_cep = self.float("iridium_cep", f64::MAX)?;
        let data = decode_mo_data(self.get("data").unwrap_or(""))?;
        let jwt = self.get("JWT").map(str::to_owned);
        let message = MoMessage {
            imei,
            serial,
            momsn,
            transmit_time,
            iridium_latitude,
            iridium_longitude,
            iridium_cep,
            data,
        };
        Ok((message, jwt))
    }

    /// An optional finite number no further from zero than `bound`.
    fn float(&self, field: &'static str, bound: f64) -> Result<Option<f64>, MoError> {
        let Some(text) = self.get(field) else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() && value.abs() <= bound => Ok(Some(value)),
            Ok(_) => Err(MoError::InvalidField {
                field,
                reason: format!("{text:?} is out of range"),
            }),
            Err(_) => Err(MoError::InvalidField {
                field,
                reason: format!("{:?} is not a number", shorten(text, 40)),
            }),
        }
    }
}

fn parse_u64(field: &'static str, text: &str) -> Result<u64, MoError> {
    text.parse::<u64>().map_err(|_| MoError::InvalidField {
        field,
        reason: format!("{:?} is not a non-negative whole number", shorten(text, 40)),
    })
}

/// The payload from its hex (either case), at most [`MAX_MO_BYTES`].
fn decode_mo_data(hex_text: &str) -> Result<Vec<u8>, MoError> {
    // Refuse an oversized field before decoding it.
    if hex_text.len() > 2 * MAX_MO_BYTES + 1 {
        return Err(MoError::TooLong(hex_text.len() / 2));
    }
    let data = hex::decode(hex_text).map_err(|error| MoError::BadHex(error.to_string()))?;
    if data.len() > MAX_MO_BYTES {
        return Err(MoError::TooLong(data.len()));
    }
    Ok(data)
}

/// Decodes one form name or value: `+` is a space, `%XX` a byte, and the
/// result must be UTF-8.
fn form_decode(text: &str) -> Result<String, MoError> {
    let malformed =
        || MoError::Malformed(format!("bad percent-encoding in {:?}", shorten(text, 40)));
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = input.next().and_then(hex_digit).ok_or_else(malformed)?;
                let low = input.next().and_then(hex_digit).ok_or_else(malformed)?;
                bytes.push(high << 4 | low);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).map_err(|_| malformed())
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// MO: the JWT
// ---------------------------------------------------------------------------

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

    /// Takes what [`parse_mo_form`] or [`parse_mo_json`] returned and gives
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

/// Decodes unpadded (or padded) base64url; `None` when it is not.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = buffer << 6 | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // A lone trailing character carries less than a byte.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

/// `text` cut to at most `limit` characters (with `…` when cut).
fn shorten(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((index, _)) => format!("{}…", &text[..index]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ok_is_sent_with_the_mt_id() {
        assert_eq!(
            parse_mt_response("OK,12345678"),
            MtOutcome::Sent { mt_id: 12_345_678 }
        );
        assert_eq!(parse_mt_response(" OK,7\r\n"), MtOutcome::Sent { mt_id: 7 });
    }

    #[test]
    fn codes_10_to_16_are_permanent() {
        let cases = [
            (10, "Invalid login credentials"),
            (11, "No RockBLOCK with this IMEI found on your account"),
            (12, "RockBLOCK has no line rental"),
            (13, "Your account has insufficient credit"),
            (14, "Could not decode hex data"),
            (15, "Data too long"),
            (16, "No data"),
        ];
        for (code, text) in cases {
            assert_eq!(
                parse_mt_response(&format!("FAILED,{code},{text}\n")),
                MtOutcome::Failed {
                    code,
                    text: text.to_owned(),
                    permanent: true
                },
                "{code}"
            );
        }
    }

    #[test]
    fn system_error_and_unknown_codes_are_not_permanent() {
        assert_eq!(
            parse_mt_response("FAILED,99,System Error"),
            MtOutcome::Failed {
                code: 99,
                text: "System Error".to_owned(),
                permanent: false
            }
        );
        for code in [0, 9, 17, 42, 500] {
            let outcome = parse_mt_response(&format!("FAILED,{code},Something"));
            assert!(
                matches!(
                    outcome,
                    MtOutcome::Failed {
                        permanent: false,
                        ..
                    }
                ),
                "{outcome:?}"
            );
            assert!(outcome.retryable());
        }
    }

    #[test]
    fn failure_text_may_hold_commas_or_be_missing() {
        assert_eq!(
            parse_mt_response("FAILED,99,Error, try again, later"),
            MtOutcome::Failed {
                code: 99,
                text: "Error, try again, later".to_owned(),
                permanent: false
            }
        );
        assert_eq!(
            parse_mt_response("FAILED,15"),
            MtOutcome::Failed {
                code: 15,
                text: String::new(),
                permanent: true
            }
        );
    }

    #[test]
    fn anything_else_is_transient() {
        for body in [
            "",
            "   ",
            "OK",
            "OK,",
            "OK,abc",
            "OK,-1",
            "OK,1,2",
            "ok,1",
            "FAILED",
            "FAILED,",
            "FAILED,x,Bad",
            "FAILED,70000,Big",
            "<html>Bad gateway</html>",
            "{\"status\":\"ok\"}",
        ] {
            let outcome = parse_mt_response(body);
            assert!(
                matches!(&outcome, MtOutcome::Transient { reason } if reason.contains("unparseable")),
                "{body:?}: {outcome:?}"
            );
            assert!(outcome.retryable());
        }
    }

    #[test]
    fn the_outcome_says_whether_to_retry() {
        assert!(!MtOutcome::Sent { mt_id: 1 }.retryable());
        assert!(MtOutcome::Sent { mt_id: 1 }.is_sent());
        assert!(!parse_mt_response("FAILED,13,No credit").retryable());
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = RockblockCredentials {
            username: "user".to_owned(),
            password: "hunter2".to_owned(),
        };
        let printed = format!("{credentials:?}");
        assert!(
            printed.contains("user") && printed.contains("***"),
            "{printed}"
        );
        assert!(!printed.contains("hunter2"), "{printed}");
        let client = MtClient::new(reqwest::Client::new(), "http://127.0.0.1:1/", credentials);
        assert!(!format!("{client:?}").contains("hunter2"));
        assert_eq!(client.timeout(), DEFAULT_MT_TIMEOUT);
    }

    #[test]
    fn imeis_are_15_digits() {
        assert!(check_imei("300434065197640").is_ok());
        for bad in [
            "30043406519764",
            "3004340651976401",
            "30043406519764x",
            "",
            "３00434065197640",
        ] {
            assert!(check_imei(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn form_encoding_escapes_everything_but_the_safe_set() {
        assert_eq!(
            form_body(&[("a b", "x&y=z+%é"), ("safe", "Az09*-._")]),
            "a+b=x%26y%3Dz%2B%25%C3%A9&safe=Az09*-._"
        );
        assert_eq!(
            form_decode("x%26y%3Dz%2B%25%C3%A9+1").unwrap(),
            "x&y=z+%é 1"
        );
        assert!(form_decode("%4").is_err());
        assert!(form_decode("%zz").is_err());
        assert!(form_decode("%FF").is_err());
    }

    const FORM: &str = "imei=300434065197640&device_type=ROCKBLOCK&serial=12345&momsn=42\
        &transmit_time=21-10-31+10%3A41%3A50&iridium_latitude=52.3867\
        &iridium_longitude=0.2938&iridium_cep=8.0&iridium_session_status=0\
        &data=48656c6c6f&JWT=a.b.c";

    fn sample() -> MoMessage {
        MoMessage {
            imei: "300434065197640".to_owned(),
            serial: Some(12_345),
            momsn: 42,
            transmit_time: "21-10-31 10:41:50".to_owned(),
            iridium_latitude: Some(52.3867),
            iridium_longitude: Some(0.2938),
            iridium_cep: Some(8.0),
            data: b"Hello".to_vec(),
        }
    }

    #[test]
    fn a_form_webhook_parses() {
        let (message, jwt) = parse_mo_form(FORM.as_bytes()).unwrap();
        assert_eq!(message, sample());
        assert_eq!(jwt.as_deref(), Some("a.b.c"));
    }

    #[test]
    fn a_json_webhook_parses_with_numbers_or_strings() {
        let body = json!({
            "imei": "300434065197640", "serial": 12345, "momsn": "42",
            "transmit_time": "21-10-31 10:41:50", "iridium_latitude": 52.3867,
            "iridium_longitude": "0.2938", "iridium_cep": 8, "data": "48656C6C6F",
            "device_type": "ROCKBLOCK", "iridium_session_status": 0, "extra": {"x": true},
        });
        let (message, jwt) = parse_mo_json(body.to_string().as_bytes()).unwrap();
        assert_eq!(message, sample());
        assert_eq!(jwt, None);
    }

    #[test]
    fn optional_fields_and_data_may_be_absent() {
        let (message, jwt) =
            parse_mo_form(b"imei=300434065197640&momsn=0&transmit_time=x&serial=&JWT=").unwrap();
        assert_eq!(message.serial, None);
        assert_eq!(message.iridium_latitude, None);
        assert!(message.data.is_empty());
        assert_eq!(jwt, None);
        let body =
            json!({"imei": "300434065197640", "momsn": 1, "transmit_time": "x", "serial": null});
        assert_eq!(
            parse_mo_json(body.to_string().as_bytes()).unwrap().0.serial,
            None
        );
    }

    #[test]
    fn bad_webhooks_are_refused_with_a_reason() {
        let base = "imei=300434065197640&momsn=1&transmit_time=21-10-31+10%3A41%3A50";
        type Expected = fn(&MoError) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            ("momsn=1&transmit_time=x".to_owned(), |e| {
                *e == MoError::MissingField("imei")
            }),
            ("imei=300434065197640&transmit_time=x".to_owned(), |e| {
                *e == MoError::MissingField("momsn")
            }),
            ("imei=300434065197640&momsn=1".to_owned(), |e| {
                *e == MoError::MissingField("transmit_time")
            }),
            (base.replace("300434065197640", "30043406519764"), |e| {
                matches!(e, MoError::BadImei(_))
            }),
            (format!("{base}&data=4g"), |e| {
                matches!(e, MoError::BadHex(_))
            }),
            (format!("{base}&data=123"), |e| {
                matches!(e, MoError::BadHex(_))
            }),
            (format!("{base}&data={}", "ab".repeat(341)), |e| {
                *e == MoError::TooLong(341)
            }),
            (format!("{base}&data={}", "ab".repeat(5000)), |e| {
                matches!(e, MoError::TooLong(_))
            }),
            (format!("{base}&momsn=2"), |e| {
                matches!(e, MoError::Malformed(_))
            }),
            (base.replace("momsn=1", "momsn=-1"), |e| {
                matches!(e, MoError::InvalidField { field: "momsn", .. })
            }),
            (format!("{base}&serial=x"), |e| {
                matches!(
                    e,
                    MoError::InvalidField {
                        field: "serial",
                        ..
                    }
                )
            }),
            (format!("{base}&iridium_latitude=91"), |e| {
                matches!(
                    e,
                    MoError::InvalidField {
                        field: "iridium_latitude",
                        ..
                    }
                )
            }),
            (format!("{base}&iridium_cep=NaN"), |e| {
                matches!(
                    e,
                    MoError::InvalidField {
                        field: "iridium_cep",
                        ..
                    }
                )
            }),
            (format!("{base}&data=%G1"), |e| {
                matches!(e, MoError::Malformed(_))
            }),
        ];
        for (body, expected) in cases {
            let error = parse_mo_form(body.as_bytes()).unwrap_err();
            assert!(expected(&error), "{body}: {error:?}");
            assert!(!error.to_string().is_empty());
        }
        assert!(parse_mo_form(b"\xff").is_err());
        assert!(matches!(parse_mo_json(b"[1]"), Err(MoError::Malformed(_))));
        assert!(matches!(
            parse_mo_json(br#"{"imei": true}"#),
            Err(MoError::InvalidField { field: "imei", .. })
        ));
        let exactly_max = format!("{base}&data={}", "ab".repeat(MAX_MO_BYTES));
        assert_eq!(
            parse_mo_form(exactly_max.as_bytes()).unwrap().0.data.len(),
            MAX_MO_BYTES
        );
    }

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
        let public = include_bytes!("../../tests/fixtures/rockblock/mo-test-key.pub.pem");
        let private = include_bytes!("../../tests/fixtures/rockblock/mo-test-key.pem");
        assert!(MoVerifier::from_pem(public).is_ok());
        assert!(MoVerifier::from_pem(private).is_err());
        assert!(MoVerifier::from_pem(b"not a key").is_err());
    }
}
