//! What an https target's certificate is checked against: the system's
//! roots (rustls, with the platform's native store) and the PEM bundle of
//! `[webhooks] ca_file`, read once at start-up. The certificate must be
//! valid for the URL's host (SNI and the name check use the host as
//! written, also though the connection is pinned to a checked address),
//! and why it was not is what a failed attempt records ([`causes`]).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

/// The extra roots of `ca_file` (none without one). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots {
    extra: Arc<Vec<reqwest::Certificate>>,
}

impl TrustedRoots {
    /// The roots `ca_file` names, a relative path read from
    /// `config_directory`; none without a `ca_file`.
    ///
    /// # Errors
    /// Naming the file: it cannot be read, is not PEM, or holds no
    /// certificate.
    pub fn load(ca_file: Option<&Path>, config_directory: Option<&Path>) -> anyhow::Result<Self> {
        let Some(file) = ca_file else {
            return Ok(Self::default());
        };
        let file: PathBuf = match config_directory {
            Some(directory) if file.is_relative() => directory.join(file),
            _ => file.to_owned(),
        };
        let pem = std::fs::read(&file)
            .with_context(|| format!("reading [webhooks] ca_file {}", file.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
            anyhow::anyhow!(
                "[webhooks] ca_file {}: not a PEM certificate bundle: {}",
                file.display(),
                causes(&error)
            )
        })?;
        anyhow::ensure!(
            !certificates.is_empty(),
            "[webhooks] ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            file.display()
        );
        tracing::info!(
            file = %file.display(),
            certificates = certificates.len(),
            "webhook targets may also show certificates issued by ca_file"
        );
        Ok(Self {
            extra: Arc::new(certificates),
        })
    }

    /// A client builder that trusts the system's roots and these.
    pub(super) fn client_builder(&self) -> reqwest::ClientBuilder {
        self.extra.iter().fold(
            reqwest::Client::builder().use_rustls_tls(),
            |builder, certificate| builder.add_root_certificate(certificate.clone()),
        )
    }
}

/// `error` and its causes, each once, `: `-separated: reqwest's own text
/// says only that sending failed; the certificate problem ("invalid peer
/// certificate: UnknownIssuer", "… not valid for name …") is a cause.
pub(super) fn causes(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_cannot_be_used_is_named() {
        let directory = std::env::temp_dir().join(format!("tl-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).unwrap();
        let missing = TrustedRoots::load(Some(Path::new("absent.pem")), Some(&directory))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains(&directory.join("absent.pem").display().to_string()),
            "{missing}"
        );
        std::fs::write(directory.join("empty.pem"), "not a certificate\n").unwrap();
        let empty = format!(
            "{:#}",
            TrustedRoots::load(Some(Path::new("empty.pem")), Some(&directory)).unwrap_err()
        );
        assert!(
            empty.contains("empty.pem") && empty.contains("no PEM certificate"),
            "{empty}"
        );
        assert!(TrustedRoots::load(None, Some(&directory))
            .unwrap()
            .extra
            .is_empty());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
