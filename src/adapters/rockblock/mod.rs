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
//!
//! The module is cut along those seams: `mt` (the MT client and the
//! provider's answers), `mo` (the MO webhook's fields) and `jwt` (the
//! webhook's signature); every item is re-exported here.

mod jwt;
mod mo;
mod mt;

pub use jwt::{MoKeyError, MoVerifier};
pub use mo::{parse_mo_form, parse_mo_json, MoError, MoMessage, MAX_MO_BYTES};
pub use mt::{
    is_permanent_code, parse_mt_response, MtClient, MtOutcome, RockblockCredentials,
    DEFAULT_MT_TIMEOUT, MAX_MT_BYTES,
};

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

    // Both halves of the form codec: MT bodies are encoded, MO bodies decoded.
    #[test]
    fn form_encoding_escapes_everything_but_the_safe_set() {
        assert_eq!(
            mt::form_body(&[("a b", "x&y=z+%é"), ("safe", "Az09*-._")]),
            "a+b=x%26y%3Dz%2B%25%C3%A9&safe=Az09*-._"
        );
        assert_eq!(
            mo::form_decode("x%26y%3Dz%2B%25%C3%A9+1").unwrap(),
            "x&y=z+%é 1"
        );
        assert!(mo::form_decode("%4").is_err());
        assert!(mo::form_decode("%zz").is_err());
        assert!(mo::form_decode("%FF").is_err());
    }

    /// The message of the sample webhooks, for the MO and JWT tests.
    pub(super) fn sample() -> MoMessage {
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
}
