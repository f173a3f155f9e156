//! `GET /v1/audit/verify` resumed from an anchor against real PostgreSQL:
//! from the newest recorded verification (`from_last_verified=true`) or a
//! ledger's confirmed chain hash (`from_anchor=LEDGER`), checking only what
//! follows, naming what it did not re-check, recording nothing, and
//! refusing what cannot be resumed.

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::EventStore;

use crate::helpers::TestApp;
use crate::support::cli::taskledger_ok;
use crate::support::http::{assert_text_contains, ok_json, problem, send};
use crate::support::log::append_unrelated;

/// A query string's pairs.
type Query<'a> = &'a [(&'a str, String)];

/// A service with an auditor's key.
struct Auditing {
    app: TestApp,
    auditor: String,
}

impl Auditing {
    async fn spawn() -> Self {
        let app = TestApp::spawn().await;
        let auditor = app.key(&[Scope::AuditRead]).await;
        Self { app, auditor }
    }

    /// Appends `count` events, each on a stream of its own; the new head.
    async fn append(&self, count: u64) -> u64 {
        append_unrelated(&self.app.store(), count).await;
        self.head().await
    }

    async fn head(&self) -> u64 {
        self.app.store().head_position().await.unwrap()
    }

    /// The auditor's verdict on `query`, which must be a 200.
    async fn verify(&self, query: Query<'_>) -> Value {
        let response = send(self.app.get(&self.auditor, "/v1/audit/verify").query(query)).await;
        ok_json(response, &format!("/v1/audit/verify {query:?}")).await
    }

    /// Expects `query` to be refused with `status`, the detail holding every
    /// one of `needles`.
    async fn refused(&self, query: Query<'_>, status: StatusCode, needles: &[&str]) {
        let response = send(self.app.get(&self.auditor, "/v1/audit/verify").query(query)).await;
        problem(response, status, needles).await;
    }

    /// Changes the stored data of the event at `sequence` (its stored hash
    /// left as it was), as someone with database access could.
    async fn tamper(&self, sequence: u64) {
        self.tamper_with(&format!(
            "UPDATE events SET data = '{{\"more\":\"altered\"}}' WHERE global_position = {sequence}"
        ))
        .await;
    }

    /// Runs `sql` with the append-only trigger off.
    async fn tamper_with(&self, sql: &str) {
        let client = self.app.database.client().await;
        client
            .batch_execute(&format!(
                "ALTER TABLE events DISABLE TRIGGER events_append_only; {sql};
                 ALTER TABLE events ENABLE TRIGGER events_append_only;"
            ))
            .await
            .unwrap();
    }
}

/// The hash the log stores at `position`, as hex.
async fn hash_at(store: &PgEventStore, position: u64) -> String {
    let events = store.read_all_as_stored(position - 1, 1).await.unwrap();
    assert_eq!(events[0].global_position, position);
    hex::encode(events[0].hash)
}

fn last_verified() -> Vec<(&'static str, String)> {
    vec![("from_last_verified", "true".to_owned())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_verify_checks_only_what_followed_the_record_and_records_nothing() {
    let audit = Auditing::spawn().await;
    let first_appended = audit.head().await + 1;
    audit.append(6).await;
    audit
        .refused(
            &last_verified(),
            StatusCode::UNPROCESSABLE_ENTITY,
            &["no verification is recorded yet", "replay verify --record"],
        )
        .await;

    // The command line records a verification through the head; it is the
    // next event, and four more follow it.
    let recorded_through = audit.head().await;
    let said = taskledger_ok(&audit.app.database.url, &["replay", "verify", "--record"]);
    assert!(
        said.contains(&format!(
            "recorded: verified through sequence {recorded_through}"
        )),
        "{said}"
    );
    let head = audit.append(4).await;
    assert_eq!(head, recorded_through + 5, "the record and four more");
    let anchor_hash = hash_at(&audit.app.store(), recorded_through).await;

    let resumed = audit.verify(&last_verified()).await;
    assert_eq!(resumed["ok"], true, "{resumed}");
    assert_eq!(resumed["from"], recorded_through, "{resumed}");
    assert_eq!(resumed["to"], head, "{resumed}");
    // The anchor's own event (recomputed), the record and the four after it.
    assert_eq!(resumed["checked"], 6, "{resumed}");
    let from = &resumed["resumed_from"];
    assert_eq!(from["position"], recorded_through, "{resumed}");
    assert_eq!(from["chain_hash"], anchor_hash.as_str(), "{resumed}");
    assert_eq!(from["not_rechecked_through"], recorded_through - 1);
    assert_text_contains(
        &from["anchored_by"],
        "the verification recorded at",
        &resumed,
    );
    // A GET records nothing: the log's head has not moved.
    assert_eq!(audit.head().await, head);
    // A plain verify says nothing of resuming.
    let plain = audit.verify(&[]).await;
    assert_eq!(plain["ok"], true, "{plain}");
    assert!(plain.get("resumed_from").is_none(), "{plain}");

    // A change before the anchor is not claimed by the resumed verify; one
    // from sequence 1 names it.
    audit.tamper(first_appended).await;
    let resumed = audit.verify(&last_verified()).await;
    assert_eq!(resumed["ok"], true, "{resumed}");
    assert_eq!(
        resumed["resumed_from"]["not_rechecked_through"],
        recorded_through - 1
    );
    let full = audit.verify(&[("from", "1".to_owned())]).await;
    assert_eq!(full["first_bad_sequence"], first_appended, "{full}");

    // A change after the anchor is found and named by the resumed verify.
    audit.tamper(head - 1).await;
    let resumed = audit.verify(&last_verified()).await;
    assert_eq!(resumed["ok"], false, "{resumed}");
    assert_eq!(resumed["first_bad_sequence"], head - 1, "{resumed}");
    assert_eq!(resumed["checked"], head - 1 - recorded_through, "{resumed}");
    assert_eq!(resumed["resumed_from"]["position"], recorded_through);
    audit.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_anchor_resumes_and_an_anchor_the_stored_hash_no_longer_matches_is_named() {
    let audit = Auditing::spawn().await;
    let ledger = audit.app.key(&[Scope::LedgerWrite]).await;
    let anchored = audit.append(5).await;
    let hash = hash_at(&audit.app.store(), anchored).await;
    let confirmed = send(
        audit
            .app
            .http
            .post(audit.app.url("/v1/ledgers/chain-a/confirmations"))
            .bearer_auth(&ledger)
            .json(&json!({"from_sequence": 1, "to_sequence": anchored,
                          "reference": "tx-1", "chain_hash": hash})),
    )
    .await;
    assert_eq!(confirmed.status(), StatusCode::CREATED);
    let head = audit.append(3).await;

    let query = [("from_anchor", "chain-a".to_owned())];
    let resumed = audit.verify(&query).await;
    assert_eq!(resumed["ok"], true, "{resumed}");
    assert_eq!(resumed["from"], anchored, "{resumed}");
    assert_eq!(resumed["to"], head, "{resumed}");
    assert_eq!(resumed["checked"], head - anchored + 1, "{resumed}");
    assert_eq!(resumed["resumed_from"]["anchored_by"], "ledger chain-a");
    assert_eq!(resumed["resumed_from"]["chain_hash"], hash.as_str());
    // Up to a `to` at or after the anchor.
    let short = audit
        .verify(&[
            ("from_anchor", "chain-a".to_owned()),
            ("to", anchored.to_string()),
        ])
        .await;
    assert_eq!(short["checked"], 1, "{short}");

    // Someone rewrites the stored hash at the anchor (and could rewrite
    // every later one to match): the ledger still holds the old one.
    audit
        .tamper_with(&format!(
            "UPDATE events SET hash = '\\x{}' WHERE global_position = {anchored}",
            "00".repeat(32)
        ))
        .await;
    let mismatch = audit.verify(&query).await;
    assert_eq!(mismatch["ok"], false, "{mismatch}");
    assert_eq!(mismatch["first_bad_sequence"], anchored, "{mismatch}");
    assert_eq!(mismatch["checked"], 0, "{mismatch}");
    assert_text_contains(&mismatch["problem"], "ledger chain-a", &mismatch);
    audit.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_resumed_is_refused_and_changes_nothing() {
    let audit = Auditing::spawn().await;
    let head = audit.append(3).await;
    taskledger_ok(&audit.app.database.url, &["replay", "verify", "--record"]);
    let head_after_record = audit.head().await;
    assert_eq!(head_after_record, head + 1);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let pairs = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect()
    };
    audit
        .refused(
            &pairs(&[("from_last_verified", "true"), ("from", "1")]),
            unprocessable,
            &["from is not taken with from_last_verified or from_anchor"],
        )
        .await;
    audit
        .refused(
            &pairs(&[("from_last_verified", "true"), ("from_anchor", "chain-a")]),
            unprocessable,
            &["give one"],
        )
        .await;
    audit
        .refused(
            &pairs(&[("from_anchor", "chain-z")]),
            unprocessable,
            &["ledger chain-z has confirmed no chain hash"],
        )
        .await;
    audit
        .refused(
            &pairs(&[("from_anchor", "Not A Ledger!")]),
            StatusCode::BAD_REQUEST,
            &["is not a ledger name"],
        )
        .await;
    audit
        .refused(
            &[
                ("from_last_verified", "true".to_owned()),
                ("to", (head - 1).to_string()),
            ],
            unprocessable,
            &[&format!("before the anchor at sequence {head}")],
        )
        .await;
    audit
        .refused(
            &pairs(&[("from_last_verified", "maybe")]),
            StatusCode::BAD_REQUEST,
            &["from_last_verified"],
        )
        .await;
    // `false` is as if it were not given.
    let plain = audit
        .verify(&pairs(&[("from_last_verified", "false")]))
        .await;
    assert_eq!(plain["from"], 1, "{plain}");
    assert!(plain.get("resumed_from").is_none(), "{plain}");
    // Another scope reads no verdict, resumed or not.
    let frontend = audit.app.key(&[Scope::TasksRead]).await;
    let response = send(
        audit
            .app
            .get(&frontend, "/v1/audit/verify")
            .query(&last_verified()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Keys are events too; nothing else was written.
    assert_eq!(audit.head().await, head_after_record + 1);
    audit.app.finish().await;
}
