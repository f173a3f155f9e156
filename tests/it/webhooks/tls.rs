//! https targets: a receiver behind TLS with a certificate of a CA made
//! for the test, trusted through `ca_file` or not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::poll::eventually;

use super::{app_with, created, delivered, deliveries, succeeded_task, verify, Receiver, SCOPES};

impl Receiver {
    /// The same receiver over https, showing `authority`'s certificate for
    /// `localhost`, on the address `localhost` resolves to first (the one
    /// the deliverer connects to).
    async fn start_tls(script: &[u16], authority: &Authority) -> (Self, SocketAddr) {
        let (receiver, app) = Self::app(Self::default(), script);
        let localhost = tokio::net::lookup_host(("localhost", 0))
            .await
            .unwrap()
            .next()
            .unwrap()
            .ip();
        assert!(localhost.is_loopback(), "localhost is {localhost}");
        let tcp = TcpListener::bind((localhost, 0)).await.unwrap();
        let address = tcp.local_addr().unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![authority.localhost_der.clone()],
                PrivatePkcs8KeyDer::from(authority.localhost_key.clone()).into(),
            )
            .unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, address)
    }
}

/// A certificate authority made for one test, and a certificate it issued
/// for `localhost`.
struct Authority {
    ca_pem: String,
    localhost_der: CertificateDer<'static>,
    localhost_key: Vec<u8>,
}

impl Authority {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "taskledger test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let localhost = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            localhost_der: localhost.der().clone(),
            localhost_key: key.serialize_der(),
        }
    }

    /// The CA's certificate in a PEM file: `[webhooks]`'s `ca_file` line.
    fn ca_file_line(&self) -> String {
        let path = std::env::temp_dir().join(format!("taskledger-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&path, &self.ca_pem).unwrap();
        format!("ca_file = \"{}\"\n", path.display())
    }
}

/// TLS in front of the receiver's axum app; a handshake the client gives
/// up (a certificate it does not trust) is dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The first recorded attempt of `webhook`, once there is one.
async fn first_attempt(app: &TestApp, key: &str, webhook: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            deliveries(app, key, webhook)
                .await
                .first()
                .cloned()
                .ok_or_else(|| "no attempt recorded yet".to_owned())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_gets_signed_deliveries_when_ca_file_trusts_its_certificate() {
    let authority = Authority::new();
    let app = app_with(&authority.ca_file_line()).await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, address) = Receiver::start_tls(&[], &authority).await;
    // `localhost` resolves to a loopback address the deliverer checks and
    // pins; TLS must still check the certificate against `localhost`.
    let webhook = created(
        &app,
        &key,
        &format!("https://localhost:{}/hook", address.port()),
        &["task.succeeded"],
    )
    .await;
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    // The same receiver by its address: its certificate is not for that
    // name, so nothing may be delivered there.
    let by_address = created(
        &app,
        &key,
        &format!("https://{address}/hook"),
        &["task.succeeded"],
    )
    .await;

    let task = succeeded_task(&app, &key).await;
    let about = delivered(&receiver, task).await;
    assert!(verify(&secret, &about[0]), "signature of {:?}", about[0]);
    let body = about[0].json();
    assert_eq!(body["type"], "task.succeeded");
    assert_eq!(body["data"]["stream_id"], format!("task-{}", task.0));
    let log = first_attempt(&app, &key, webhook["id"].as_str().unwrap()).await;
    assert_eq!(log["outcome"], "delivered", "{log}");

    let mismatch = first_attempt(&app, &key, by_address["id"].as_str().unwrap()).await;
    assert_eq!(mismatch["outcome"], "retrying", "{mismatch}");
    let error = mismatch["error"].as_str().unwrap();
    assert!(
        error.contains("certificate") && error.contains("not valid for name"),
        "the recorded error names the name mismatch: {error}"
    );
    assert_eq!(
        receiver.got().len(),
        1,
        "only the localhost delivery arrived"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_whose_certificate_is_not_trusted_is_not_delivered_to_and_says_why() {
    let authority = Authority::new();
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, address) = Receiver::start_tls(&[], &authority).await;
    let webhook = created(
        &app,
        &key,
        &format!("https://localhost:{}/hook", address.port()),
        &["task.succeeded"],
    )
    .await;
    succeeded_task(&app, &key).await;
    let attempt = first_attempt(&app, &key, webhook["id"].as_str().unwrap()).await;
    assert_eq!(attempt["outcome"], "retrying", "{attempt}");
    assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "the recorded error names the untrusted certificate: {error}"
    );
    assert!(receiver.got().is_empty(), "{:?}", receiver.got());
    app.finish().await;
}
