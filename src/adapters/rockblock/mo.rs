//! MO: reading the provider's mobile-originated webhooks, form-encoded or
//! JSON.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{check_imei, shorten};

/// The largest MO payload a RockBLOCK sends, in bytes.
pub const MAX_MO_BYTES: usize = 340;

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
/// (unverified: see [`MoVerifier::verify`](super::MoVerifier::verify)).
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
/// any (unverified: see [`MoVerifier::verify`](super::MoVerifier::verify)).
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
pub(super) fn scalar_text(value: &Value) -> Result<Option<String>, &'static str> {
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
pub(super) fn form_decode(text: &str) -> Result<String, MoError> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use serde_json::json;

    const FORM: &str = "imei=300434065197640&device_type=ROCKBLOCK&serial=12345&momsn=42\
        &transmit_time=21-10-31+10%3A41%3A50&iridium_latitude=52.3867\
        &iridium_longitude=0.2938&iridium_cep=8.0&iridium_session_status=0\
        &data=48656c6c6f&JWT=a.b.c";
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
}
