//! MT: sending mobile-terminated messages through the provider's HTTP
//! endpoint, and reading its answers.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::shorten;

/// The largest MT payload the provider accepts, in bytes.
pub const MAX_MT_BYTES: usize = 270;

/// How long [`MtClient::send`] waits for the provider unless told otherwise.
pub const DEFAULT_MT_TIMEOUT: Duration = Duration::from_secs(30);

/// The RockBLOCK account an MT message is sent from.
#[derive(Clone)]
pub struct RockblockCredentials {
    /// The account's user name.
    pub username: String,
    /// The account's password (never printed: `Debug` shows `***`).
    pub password: SecretString,
}

// Not derived: the password, held where nothing can print it, is shown as
// `***` as in the provider's redacted answers (a derived `Debug` would show
// secrecy's `SecretBox<str>([REDACTED])`).
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
    /// Nothing is checked locally: an IMEI that [`check_imei`](super::check_imei) refuses or
    /// data that is empty or longer than [`MAX_MT_BYTES`] is sent as is and
    /// the provider's refusal returned. Never panics; every failure is an
    /// [`MtOutcome`], and no reason contains the password.
    #[tracing::instrument(level = "debug", skip_all, fields(imei = %imei, bytes = data.len(), flush))]
    pub async fn send(&self, imei: &str, data: &[u8], flush: bool) -> MtOutcome {
        let mut body = form_body(&[
            ("imei", imei),
            ("username", &self.credentials.username),
            ("password", self.credentials.password.expose_secret()),
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
        let password = self.credentials.password.expose_secret();
        if password.is_empty() {
            return text;
        }
        let encoded: String = form_urlencoded::byte_serialize(password.as_bytes()).collect();
        text.replace(password, "***").replace(&encoded, "***")
    }

    /// Removes the password from any text of `outcome` (belt and braces:
    /// an endpoint could echo the request).
    fn scrub(&self, outcome: MtOutcome) -> MtOutcome {
        let password = self.credentials.password.expose_secret();
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

/// `application/x-www-form-urlencoded` of `fields`, in order: ASCII
/// alphanumerics and `*-._` stay, a space is `+`, every other byte `%XX`
/// (as HTML forms do; `form_urlencoded` writes it).
pub(super) fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            password: "hunter2".into(),
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
}
