//! What an https target's certificate is checked against: the system's
//! roots (rustls, with the platform's native store) and the PEM bundle of
//! `[webhooks] ca_file`, read once at start-up. The certificate must be
//! valid for the URL's host (SNI and the name check use the host as
//! written, also though the connection is pinned to a checked address),
//! and why it was not is what a failed attempt records ([`causes`]).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The extra roots of `ca_file` (none without one), and the TLS
/// configuration made from them and the system's roots once, on first use,
/// that every webhook's client shares (loading the system's roots is what
/// building a client cost; 1,000 webhooks made it 1,000 times). Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots {
    extra: Arc<Vec<CertificateDer<'static>>>,
    config: Arc<OnceLock<rustls::ClientConfig>>,
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
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                anyhow::anyhow!(
                    "[webhooks] ca_file {}: not a PEM certificate bundle: {error}",
                    file.display(),
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
            config: Arc::default(),
        })
    }

    /// A client builder that trusts the system's roots and these, with the
    /// shared TLS configuration (made on the first call).
    pub(super) fn client_builder(&self) -> reqwest::ClientBuilder {
        let config = self.config.get_or_init(|| self.tls_config()).clone();
        reqwest::Client::builder().use_preconfigured_tls(config)
    }

    /// What reqwest's rustls backend builds with native roots and
    /// `add_root_certificate`: the system's roots (those that parse: native
    /// stores hold ancient ones) and `ca_file`'s, the ring provider, TLS 1.2
    /// and 1.3, SNI, ALPN `http/1.1` (this build speaks no HTTP/2).
    fn tls_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "a system root certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        let (extra, unusable) = roots.add_parsable_certificates(self.extra.iter().cloned());
        tracing::debug!(
            system = added,
            ignored,
            ca_file = extra,
            unusable,
            "webhook TLS roots loaded"
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
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
