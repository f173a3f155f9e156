//! The RockBLOCK client against a stand-in for the provider's MT endpoint
//! over real HTTP, and MO webhooks signed as the provider signs them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use taskledger::adapters::rockblock::{
    parse_mo_form, parse_mo_json, MoError, MoMessage, MoVerifier, MtClient, MtOutcome,
    RockblockCredentials, MAX_MO_BYTES, MAX_MT_BYTES,
};
use tokio::task::JoinHandle;

use crate::helpers::TestApp;
use crate::support::http::{send, send_text};

/// The private key the stand-in provider signs MO webhooks with.
pub(crate) const MO_PRIVATE_KEY: &[u8] = include_bytes!("../fixtures/rockblock/mo-test-key.pem");
/// Its public key, as the service would be configured with.
pub(crate) const MO_PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/rockblock/mo-test-key.pub.pem");
/// An unrelated private key, for forged webhooks.
pub(crate) const FORGER_KEY: &[u8] = include_bytes!("../fixtures/rockblock/forger-key.pem");

pub(crate) const USERNAME: &str = "ground-station";
pub(crate) const PASSWORD: &str = "s3cret-Passw0rd";
pub(crate) const IMEI: &str = "300434065197640";
const OTHER_IMEI: &str = "300434065197641";

// ---------------------------------------------------------------------------
// The MT stand-in
// ---------------------------------------------------------------------------

/// How the stand-in handles one coming request instead of answering it as
/// the provider would.
#[derive(Debug, Clone)]
pub(crate) enum Script {
    /// Answer 200 with this body (e.g. `FAILED,99,System Error`).
    Respond(String),
    /// Answer with this HTTP status and a short text body.
    Status(u16),
    /// Wait this long, then answer as the provider would.
    Delay(Duration),
    /// Drop the connection without a complete answer.
    Hangup,
}

/// One MT request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MtRequest {
    pub(crate) username: String,
    pub(crate) imei: String,
    /// The `data` field as sent.
    pub(crate) hex: String,
    /// It decoded (empty when it is not hex).
    pub(crate) data: Vec<u8>,
    pub(crate) flush: bool,
}

#[derive(Debug)]
struct StandInState {
    username: String,
    password: String,
    imeis: HashSet<String>,
    next_mt_id: u64,
    requests: Vec<MtRequest>,
    script: VecDeque<Script>,
    /// How long an unscripted answer takes (the real endpoint's round trip).
    answer_delay: Duration,
    /// Requests being answered now, per IMEI and in all.
    open_per_device: HashMap<String, usize>,
    open: usize,
    /// The most requests ever answered at once, per IMEI and in all.
    most_open_per_device: usize,
    most_open: usize,
}

/// A stand-in for the provider's MT endpoint on 127.0.0.1: it checks the
/// form as documented (credentials → 10, IMEI → 11, hex → 14, length → 15,
/// emptiness → 16) and otherwise answers `OK,<id>` with increasing ids,
/// recording every request and how many it answers at once (like the
/// provider, it takes requests concurrently). [`Self::script`] overrides
/// the next answers; [`Self::answer_after`] slows every other one down.
/// The server stops when the stand-in is dropped.
#[derive(Debug)]
pub(crate) struct RockblockStandIn {
    /// Where to POST (`http://127.0.0.1:<port>/rockblock/MT`).
    pub(crate) url: String,
    state: Arc<Mutex<StandInState>>,
    server: JoinHandle<()>,
}

/// The content type of a form-encoded MO webhook.
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// Posts `body` (of `content_type`) to the app's MO webhook, as RockBLOCK
/// does.
pub(crate) async fn mo_webhook(
    app: &TestApp,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    send(
        app.http
            .post(app.url("/v1/rockblock/mo"))
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

/// The first MT id the stand-in hands out.
pub(crate) const FIRST_MT_ID: u64 = 5_000_001;

impl RockblockStandIn {
    /// A stand-in for the account `username`/`password` owning `imeis`.
    pub(crate) async fn start(username: &str, password: &str, imeis: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(StandInState {
            username: username.to_owned(),
            password: password.to_owned(),
            imeis: imeis.iter().map(|imei| (*imei).to_owned()).collect(),
            next_mt_id: FIRST_MT_ID,
            requests: Vec::new(),
            script: VecDeque::new(),
            answer_delay: Duration::ZERO,
            open_per_device: HashMap::new(),
            open: 0,
            most_open_per_device: 0,
            most_open: 0,
        }));
        let app = Router::new()
            .route("/rockblock/MT", post(mt_endpoint))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{address}/rockblock/MT"),
            state,
            server,
        }
    }

    /// A stand-in for the test account owning [`IMEI`].
    pub(crate) async fn start_default() -> Self {
        Self::start(USERNAME, PASSWORD, &[IMEI]).await
    }

    /// Handles the next `times` requests with `action` (after any already
    /// scripted), then goes back to answering as the provider would.
    pub(crate) fn script(&self, times: usize, action: Script) {
        let mut state = self.state.lock().unwrap();
        state.script.extend(std::iter::repeat_n(action, times));
    }

    /// Answers every unscripted request `delay` after it arrived, as the
    /// real endpoint does after its round trip to the provider.
    pub(crate) fn answer_after(&self, delay: Duration) {
        self.state.lock().unwrap().answer_delay = delay;
    }

    /// Requests being answered at this moment.
    pub(crate) fn open(&self) -> usize {
        self.state.lock().unwrap().open
    }

    /// The most requests answered at once so far: in all, and for any one
    /// IMEI.
    pub(crate) fn most_open(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.most_open, state.most_open_per_device)
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<MtRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// A client of this stand-in with the right credentials.
    pub(crate) fn client(&self) -> MtClient {
        MtClient::new(
            reqwest::Client::new(),
            self.url.clone(),
            RockblockCredentials {
                username: USERNAME.to_owned(),
                password: PASSWORD.into(),
            },
        )
    }
}

impl Drop for RockblockStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn mt_endpoint(
    State(state): State<Arc<Mutex<StandInState>>>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let hex = field("data");
    let decoded = hex::decode(&hex);
    let request = MtRequest {
        username: field("username"),
        imei: field("imei"),
        data: decoded.clone().unwrap_or_default(),
        hex,
        flush: field("flush") == "yes",
    };
    let (scripted, answer_delay) = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        (state.script.pop_front(), state.answer_delay)
    };
    let _open = OpenRequest::new(&state, &request.imei);
    match scripted {
        Some(Script::Respond(body)) => return body.into_response(),
        Some(Script::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap();
            return (status, status.to_string()).into_response();
        }
        Some(Script::Hangup) => {
            let broken = futures::stream::once(async {
                Err::<Vec<u8>, _>(std::io::Error::other("the stand-in hung up"))
            });
            return Body::from_stream(broken).into_response();
        }
        Some(Script::Delay(delay)) => tokio::time::sleep(delay).await,
        None => tokio::time::sleep(answer_delay).await,
    }
    let mut state = state.lock().unwrap();
    let answer = if request.username != state.username || field("password") != state.password {
        "FAILED,10,Invalid login credentials".to_owned()
    } else if !state.imeis.contains(&request.imei) {
        "FAILED,11,No RockBLOCK with this IMEI found on your account".to_owned()
    } else if decoded.is_err() {
        "FAILED,14,Could not decode hex data".to_owned()
    } else if request.data.len() > MAX_MT_BYTES {
        "FAILED,15,Data too long".to_owned()
    } else if request.data.is_empty() {
        "FAILED,16,No data".to_owned()
    } else {
        let mt_id = state.next_mt_id;
        state.next_mt_id += 1;
        format!("OK,{mt_id}")
    };
    answer.into_response()
}

/// One request being answered, counted in the stand-in's concurrency
/// until it is answered or its client went away (dropped either way).
struct OpenRequest {
    state: Arc<Mutex<StandInState>>,
    imei: String,
}

impl OpenRequest {
    fn new(state: &Arc<Mutex<StandInState>>, imei: &str) -> Self {
        let mut locked = state.lock().unwrap();
        locked.open += 1;
        locked.most_open = locked.most_open.max(locked.open);
        let of_device = locked.open_per_device.entry(imei.to_owned()).or_default();
        *of_device += 1;
        let of_device = *of_device;
        locked.most_open_per_device = locked.most_open_per_device.max(of_device);
        drop(locked);
        Self {
            state: Arc::clone(state),
            imei: imei.to_owned(),
        }
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        state.open -= 1;
        if let Some(of_device) = state.open_per_device.get_mut(&self.imei) {
            *of_device -= 1;
        }
    }
}

/// `application/x-www-form-urlencoded` of `pairs`, as a browser writes it.
pub(crate) fn form_encode(pairs: &[(&str, String)]) -> String {
    let encode = |text: &str| {
        let mut out = String::new();
        for byte in text.bytes() {
            match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------
// MO webhooks as the provider sends them
// ---------------------------------------------------------------------------

/// The fields of one MO webhook.
#[derive(Debug, Clone)]
pub(crate) struct MoFields {
    pub(crate) imei: String,
    pub(crate) serial: u64,
    pub(crate) momsn: u64,
    pub(crate) transmit_time: String,
    pub(crate) iridium_latitude: f64,
    pub(crate) iridium_longitude: f64,
    pub(crate) iridium_cep: f64,
    pub(crate) data: Vec<u8>,
}

impl MoFields {
    /// A message from [`IMEI`] carrying `data`.
    pub(crate) fn sample(data: &[u8]) -> Self {
        Self {
            imei: IMEI.to_owned(),
            serial: 12_345,
            momsn: 42,
            transmit_time: "21-10-31 10:41:50".to_owned(),
            iridium_latitude: 52.3867,
            iridium_longitude: -0.2938,
            iridium_cep: 8.0,
            data: data.to_vec(),
        }
    }

    /// The fields as the provider's form carries them (and signs them),
    /// `JWT` aside.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("imei", self.imei.clone()),
            ("device_type", "ROCKBLOCK".to_owned()),
            ("serial", self.serial.to_string()),
            ("momsn", self.momsn.to_string()),
            ("transmit_time", self.transmit_time.clone()),
            ("iridium_latitude", self.iridium_latitude.to_string()),
            ("iridium_longitude", self.iridium_longitude.to_string()),
            ("iridium_cep", self.iridium_cep.to_string()),
            ("iridium_session_status", "0".to_owned()),
            ("data", hex::encode(&self.data)),
        ]
    }

    /// What the parser should make of these fields.
    pub(crate) fn message(&self) -> MoMessage {
        MoMessage {
            imei: self.imei.clone(),
            serial: Some(self.serial),
            momsn: self.momsn,
            transmit_time: self.transmit_time.clone(),
            iridium_latitude: Some(self.iridium_latitude),
            iridium_longitude: Some(self.iridium_longitude),
            iridium_cep: Some(self.iridium_cep),
            data: self.data.clone(),
        }
    }
}

/// The RS256 JWT the provider would send with `fields`: exactly the form's
/// fields as string claims, signed with the test key.
pub(crate) fn sign_mo(fields: &MoFields) -> String {
    sign_mo_with(fields, MO_PRIVATE_KEY)
}

/// As [`sign_mo`], signed with the private key in `private_pem`.
pub(crate) fn sign_mo_with(fields: &MoFields, private_pem: &[u8]) -> String {
    let claims: Map<String, Value> = fields
        .pairs()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::String(value)))
        .collect();
    sign_claims(&claims, Algorithm::RS256, private_pem)
}

/// `claims` signed with `algorithm` and the key in `private_pem`.
pub(crate) fn sign_claims(
    claims: &Map<String, Value>,
    algorithm: Algorithm,
    private_pem: &[u8],
) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem).unwrap();
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).unwrap()
}

/// The form body of an MO webhook with `fields` and, if given, `jwt`.
pub(crate) fn mo_form_body(fields: &MoFields, jwt: Option<&str>) -> String {
    let mut pairs = fields.pairs();
    if let Some(jwt) = jwt {
        pairs.push(("JWT", jwt.to_owned()));
    }
    form_encode(&pairs)
}

/// The JSON body of an MO webhook with `fields` (numbers as JSON numbers)
/// and, if given, `jwt`.
pub(crate) fn mo_json_body(fields: &MoFields, jwt: Option<&str>) -> String {
    let mut body = json!({
        "imei": fields.imei,
        "device_type": "ROCKBLOCK",
        "serial": fields.serial,
        "momsn": fields.momsn,
        "transmit_time": fields.transmit_time,
        "iridium_latitude": fields.iridium_latitude,
        "iridium_longitude": fields.iridium_longitude,
        "iridium_cep": fields.iridium_cep,
        "iridium_session_status": 0,
        "data": hex::encode(&fields.data),
    });
    if let Some(jwt) = jwt {
        body["JWT"] = Value::String(jwt.to_owned());
    }
    body.to_string()
}

fn verifier() -> MoVerifier {
    MoVerifier::from_pem(MO_PUBLIC_KEY).unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut buffer = [0u8; 3];
        buffer[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(buffer[0]) << 16 | u32::from(buffer[1]) << 8 | u32::from(buffer[2]);
        for index in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * index) & 63) as usize]));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// MT tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_message_is_sent_and_arrives_as_the_same_bytes() {
    let stand_in = RockblockStandIn::start_default().await;
    let client = stand_in.client();
    let payload = b"hello \x00\xff\x7f & = + % world";

    let first = client.send(IMEI, payload, true).await;
    assert_eq!(first, MtOutcome::Sent { mt_id: FIRST_MT_ID });
    let second = client.send(IMEI, &[0xab; MAX_MT_BYTES], false).await;
    assert_eq!(
        second,
        MtOutcome::Sent {
            mt_id: FIRST_MT_ID + 1
        }
    );

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].imei, IMEI);
    assert_eq!(requests[0].username, USERNAME);
    assert_eq!(requests[0].data, payload);
    assert_eq!(requests[0].hex, hex::encode(payload), "lowercase hex");
    assert!(requests[0].flush);
    assert_eq!(requests[1].data, [0xab; MAX_MT_BYTES]);
    assert!(!requests[1].flush);
}

fn assert_failed(outcome: &MtOutcome, expected_code: u16, expected_permanent: bool) {
    match outcome {
        MtOutcome::Failed {
            code,
            text,
            permanent,
        } => {
            assert_eq!(*code, expected_code, "{outcome:?}");
            assert_eq!(*permanent, expected_permanent, "{outcome:?}");
            assert!(!text.is_empty(), "{outcome:?}");
        }
        other => panic!("expected FAILED,{expected_code}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_providers_refusals_are_permanent() {
    let stand_in = RockblockStandIn::start_default().await;
    let client = stand_in.client();

    let wrong_password = MtClient::new(
        reqwest::Client::new(),
        stand_in.url.clone(),
        RockblockCredentials {
            username: USERNAME.to_owned(),
            password: "not-the-password".into(),
        },
    );
    assert_failed(&wrong_password.send(IMEI, b"x", false).await, 10, true);
    assert_failed(&client.send(OTHER_IMEI, b"x", false).await, 11, true);
    assert_failed(
        &client.send(IMEI, &[1; MAX_MT_BYTES + 1], false).await,
        15,
        true,
    );
    assert_failed(&client.send(IMEI, b"", false).await, 16, true);

    // The client always sends hex: the stand-in says 14 when scripted...
    stand_in.script(
        1,
        Script::Respond("FAILED,14,Could not decode hex data".to_owned()),
    );
    assert_failed(&client.send(IMEI, b"x", false).await, 14, true);
    // ...and on its own to a body that is not hex.
    let body = form_encode(&[
        ("imei", IMEI.to_owned()),
        ("username", USERNAME.to_owned()),
        ("password", PASSWORD.to_owned()),
        ("data", "4g".to_owned()),
    ]);
    let answer = send_text(
        reqwest::Client::new()
            .post(&stand_in.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await;
    assert_eq!(answer, "FAILED,14,Could not decode hex data");

    assert_eq!(stand_in.requests().len(), 6);
}

#[tokio::test]
async fn a_system_error_is_not_permanent() {
    let stand_in = RockblockStandIn::start_default().await;
    let client = stand_in.client();
    stand_in.script(2, Script::Respond("FAILED,99,System Error".to_owned()));

    for _ in 0..2 {
        let outcome = client.send(IMEI, b"x", false).await;
        assert_failed(&outcome, 99, false);
        assert!(outcome.retryable());
    }
    // The script is used up: the provider answers again.
    assert_eq!(
        client.send(IMEI, b"x", false).await,
        MtOutcome::Sent { mt_id: FIRST_MT_ID }
    );
}

fn assert_transient(outcome: &MtOutcome, expected: &str) {
    match outcome {
        MtOutcome::Transient { reason } => {
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
        }
        other => panic!("expected a transient outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_endpoint_times_out_as_transient() {
    let stand_in = RockblockStandIn::start_default().await;
    let client = stand_in.client().with_timeout(Duration::from_millis(300));
    stand_in.script(1, Script::Delay(Duration::from_secs(5)));

    let started = Instant::now();
    let outcome = client.send(IMEI, b"x", false).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_transient(&outcome, "did not answer within");
    assert_eq!(stand_in.requests().len(), 1);
}

#[tokio::test]
async fn a_dead_endpoint_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    let client = MtClient::new(
        reqwest::Client::new(),
        format!("http://{address}/rockblock/MT"),
        RockblockCredentials {
            username: USERNAME.to_owned(),
            password: PASSWORD.into(),
        },
    )
    .with_timeout(Duration::from_secs(5));
    assert_transient(&client.send(IMEI, b"x", false).await, "could not talk");
}

#[tokio::test]
async fn hangups_error_statuses_and_garbage_are_transient() {
    let stand_in = RockblockStandIn::start_default().await;
    let client = stand_in.client().with_timeout(Duration::from_secs(5));

    stand_in.script(1, Script::Hangup);
    assert_transient(&client.send(IMEI, b"x", false).await, "could not talk");
    stand_in.script(1, Script::Status(503));
    assert_transient(&client.send(IMEI, b"x", false).await, "HTTP 503");
    stand_in.script(1, Script::Respond("<html>maintenance</html>".to_owned()));
    assert_transient(&client.send(IMEI, b"x", false).await, "unparseable");
    assert_eq!(
        client.send(IMEI, b"x", false).await,
        MtOutcome::Sent { mt_id: FIRST_MT_ID }
    );
}

#[tokio::test]
async fn no_outcome_or_debug_output_contains_the_password() {
    let stand_in = RockblockStandIn::start_default().await;
    let client = stand_in.client().with_timeout(Duration::from_millis(300));
    let mut outcomes = Vec::new();

    // An endpoint echoing the password back is scrubbed too.
    stand_in.script(
        1,
        Script::Respond(format!("FAILED,99,bad password {PASSWORD}")),
    );
    stand_in.script(1, Script::Respond(format!("Password {PASSWORD} rejected")));
    stand_in.script(1, Script::Status(500));
    stand_in.script(1, Script::Hangup);
    stand_in.script(1, Script::Delay(Duration::from_secs(5)));
    for _ in 0..5 {
        outcomes.push(client.send(IMEI, b"x", false).await);
    }
    outcomes.push(client.send(OTHER_IMEI, b"x", false).await);
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        MtClient::new(
            reqwest::Client::new(),
            format!("http://{address}/"),
            RockblockCredentials {
                username: USERNAME.to_owned(),
                password: PASSWORD.into(),
            },
        )
    };
    outcomes.push(dead.send(IMEI, b"x", false).await);

    assert!(matches!(&outcomes[0], MtOutcome::Failed { text, .. } if text.contains("***")));
    for outcome in &outcomes {
        assert!(!outcome.is_sent(), "{outcome:?}");
        let printed = format!("{outcome:?}");
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
    for printed in [format!("{client:?}"), format!("{dead:?}")] {
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
}

// ---------------------------------------------------------------------------
// MO tests
// ---------------------------------------------------------------------------

#[test]
fn a_signed_form_webhook_verifies() {
    let fields = MoFields::sample(b"position fix \x00\x01\xfe");
    let body = mo_form_body(&fields, Some(&sign_mo(&fields)));
    let parsed = parse_mo_form(body.as_bytes()).unwrap();
    assert_eq!(parsed.0, fields.message());
    let message = verifier().verify_webhook(parsed).unwrap();
    assert_eq!(message.data, fields.data);
    assert_eq!(message.transmit_time, "21-10-31 10:41:50");
}

#[test]
fn a_signed_json_webhook_verifies() {
    let fields = MoFields::sample(&[0x42; MAX_MO_BYTES]);
    let body = mo_json_body(&fields, Some(&sign_mo(&fields)));
    let (message, jwt) = parse_mo_json(body.as_bytes()).unwrap();
    assert_eq!(message, fields.message());
    verifier().verify(&jwt.unwrap(), &message).unwrap();
}

#[test]
fn numeric_claims_and_a_future_exp_verify() {
    let fields = MoFields::sample(b"hi");
    let claims = json!({
        "imei": fields.imei, "serial": fields.serial, "momsn": fields.momsn,
        "transmit_time": fields.transmit_time, "iridium_latitude": fields.iridium_latitude,
        "iridium_longitude": fields.iridium_longitude, "iridium_cep": fields.iridium_cep,
        "data": hex::encode_upper(&fields.data), "iss": "Rock 7 Core",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    });
    let token = sign_claims(
        claims.as_object().unwrap(),
        Algorithm::RS256,
        MO_PRIVATE_KEY,
    );
    verifier().verify(&token, &fields.message()).unwrap();
}

#[test]
fn an_expired_jwt_is_refused() {
    let fields = MoFields::sample(b"hi");
    let mut claims: Map<String, Value> = fields
        .pairs()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::String(value)))
        .collect();
    claims.insert(
        "exp".to_owned(),
        json!(jsonwebtoken::get_current_timestamp() - 3600),
    );
    let token = sign_claims(&claims, Algorithm::RS256, MO_PRIVATE_KEY);
    let error = verifier().verify(&token, &fields.message()).unwrap_err();
    assert!(
        matches!(&error, MoError::BadJwt(detail) if detail.contains("expired")),
        "{error:?}"
    );
}

#[test]
fn a_webhook_without_jwt_is_refused() {
    let fields = MoFields::sample(b"hi");
    let parsed = parse_mo_form(mo_form_body(&fields, None).as_bytes()).unwrap();
    assert_eq!(parsed.1, None);
    assert_eq!(verifier().verify_webhook(parsed), Err(MoError::MissingJwt));
}

#[test]
fn a_forged_jwt_is_refused() {
    let fields = MoFields::sample(b"hi");
    let body = mo_form_body(&fields, Some(&sign_mo_with(&fields, FORGER_KEY)));
    let error = verifier()
        .verify_webhook(parse_mo_form(body.as_bytes()).unwrap())
        .unwrap_err();
    assert!(
        matches!(&error, MoError::BadJwt(detail) if detail.contains("signature")),
        "{error:?}"
    );
    let problem = error.to_string();
    assert!(
        problem.starts_with("the webhook's JWT is not valid"),
        "{problem}"
    );
}

#[test]
fn a_tampered_body_does_not_match_its_jwt() {
    let signed = MoFields::sample(b"open the valve");
    let jwt = sign_mo(&signed);
    let mut tampered = signed.clone();
    tampered.data = b"close the valve".to_vec();
    // The verifier refuses `webhook`, naming `field` as the mismatch.
    let mismatch = |webhook, field: &str| {
        let error = verifier().verify_webhook(webhook).unwrap_err();
        assert!(
            matches!(&error, MoError::JwtMismatch(detail) if detail.contains(field)),
            "{error:?}"
        );
    };
    let body = mo_form_body(&tampered, Some(&jwt));
    mismatch(parse_mo_form(body.as_bytes()).unwrap(), "data");

    let mut replayed = signed.clone();
    replayed.momsn += 1;
    let body = mo_json_body(&replayed, Some(&jwt));
    mismatch(parse_mo_json(body.as_bytes()).unwrap(), "momsn");

    let mut moved = signed;
    moved.iridium_latitude = 10.0;
    let error = verifier().verify(&jwt, &moved.message()).unwrap_err();
    assert!(matches!(error, MoError::JwtMismatch(_)), "{error:?}");
}

#[test]
fn malformed_oversized_and_misaddressed_webhooks_are_refused() {
    let fields = MoFields::sample(b"hi");
    let with = |name: &str, value: &str| {
        let mut pairs = fields.pairs();
        for pair in &mut pairs {
            if pair.0 == name {
                pair.1 = value.to_owned();
            }
        }
        form_encode(&pairs)
    };

    let error = parse_mo_form(with("data", "48zz").as_bytes()).unwrap_err();
    assert!(matches!(error, MoError::BadHex(_)), "{error:?}");
    let error = parse_mo_form(with("data", &"00".repeat(MAX_MO_BYTES + 1)).as_bytes()).unwrap_err();
    assert_eq!(error, MoError::TooLong(MAX_MO_BYTES + 1));
    let error = parse_mo_form(with("imei", "30043406519764").as_bytes()).unwrap_err();
    assert!(matches!(error, MoError::BadImei(_)), "{error:?}");
    assert!(error.to_string().contains("15 digits"), "{error}");

    let mut short_imei = fields.clone();
    short_imei.imei = "30043406519764".to_owned();
    let error = parse_mo_json(mo_json_body(&short_imei, None).as_bytes()).unwrap_err();
    assert!(matches!(error, MoError::BadImei(_)), "{error:?}");
    let mut oversized = fields;
    oversized.data = vec![0; MAX_MO_BYTES + 1];
    let error = parse_mo_json(mo_json_body(&oversized, None).as_bytes()).unwrap_err();
    assert_eq!(error, MoError::TooLong(MAX_MO_BYTES + 1));
}

#[test]
fn other_algorithms_and_garbage_tokens_are_refused() {
    let fields = MoFields::sample(b"hi");
    let message = fields.message();
    let claims: Map<String, Value> = fields
        .pairs()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::String(value)))
        .collect();

    // HMAC keyed with the public key: the classic algorithm confusion.
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(MO_PUBLIC_KEY),
    )
    .unwrap();
    assert_eq!(
        verifier().verify(&hs256, &message),
        Err(MoError::JwtAlgorithm("HS256".to_owned()))
    );

    let none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(serde_json::to_string(&claims).unwrap().as_bytes())
    );
    assert_eq!(
        verifier().verify(&none, &message),
        Err(MoError::JwtAlgorithm("none".to_owned()))
    );

    let rs512 = sign_claims(&claims, Algorithm::RS512, MO_PRIVATE_KEY);
    assert_eq!(
        verifier().verify(&rs512, &message),
        Err(MoError::JwtAlgorithm("RS512".to_owned()))
    );

    // An RS256 header over another token's signature.
    let good = sign_mo(&fields);
    let parts: Vec<&str> = good.split('.').collect();
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 4]
    );
    assert!(matches!(
        verifier().verify(&spliced, &message),
        Err(MoError::BadJwt(_))
    ));

    for garbage in ["", "not-a-jwt", "a.b.c", "a.b.c.d"] {
        let error = verifier().verify(garbage, &message).unwrap_err();
        assert!(
            matches!(error, MoError::BadJwt(_)),
            "{garbage:?}: {error:?}"
        );
    }
}
