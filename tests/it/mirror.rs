//! A mirror checks the chain without taskledger: `scripts/verify-chain.py`
//! (Python, standard library only) verifies what `taskledger replay export`
//! writes and what `GET /v1/events` serves, agrees with the stored head
//! hash, and names the exact position of each kind of tampering.

use std::process::{Output, Stdio};

use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::cli::taskledger_ok;
use crate::support::http::send;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-chain.py");

/// Runs the script with `args` (and `stdin`, if any).
async fn verify_chain(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(SCRIPT)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot run python3 ({error}): this test runs scripts/verify-chain.py with it; \
             install Python 3 (Debian: apt-get install python3)"
        ),
    };
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The script stops reading at the first defect.
        if let Err(error) = pipe.write_all(input).await {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
        }
        drop(pipe);
    }
    child.wait_with_output().await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `count` doubles spread over the whole range (random bit patterns, some
/// subnormal, some with few digits), from a fixed seed.
fn doubles(count: usize) -> Vec<f64> {
    let mut state: u64 = 0x5eed_0fc4_a1ce_u64;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut values = Vec::with_capacity(count);
    while values.len() < count {
        let bits = next();
        let value = match values.len() % 3 {
            0 => f64::from_bits(bits),
            1 => f64::from_bits(bits & 0x800f_ffff_ffff_ffff),
            _ => (bits % 1_000_000) as f64 / 10_f64.powi((bits >> 50) as i32 % 9),
        };
        if value.is_finite() {
            values.push(value);
        }
    }
    values
}

/// JSON that is easy to print differently: escapes, non-ASCII, keys whose
/// UTF-8 order is not their UTF-16 order, doubles at the edges of plain
/// notation, integers at the edges of u64 and i64.
fn tricky_data() -> Value {
    json!({
        "unicode": "é ü 中文 ﬁ \u{2028}\u{2029} \u{7f} \u{feff}",
        "emoji": "😀👍🏽🇩🇪 👩‍👩‍👧",
        "control": "\u{0}\u{1}\u{1f}\t\n\r\u{8}\u{c}",
        "quotes": "\"'\\/ \\\" \\u0041",
        "floats": [1e21, 1e16, 1e15, 0.1, -0.0, 0.0, 1e-5, 1e-6, 1e-7, 5e-324,
                   f64::MAX, f64::MIN_POSITIVE, f64::EPSILON, 123_456_789.125, -2.5,
                   1.0, 100.0, 9_007_199_254_740_992.0, 0.1 + 0.2],
        "ints": [u64::MAX, i64::MIN, i64::MAX, 0, -1, 9_007_199_254_740_993_u64],
        "nested": {"z": {"y": [{"b": 1, "a": [[], {}]}]}, "é": 1, "B": 2, "a": null},
        "keys": {"\u{ff61}": 1, "😀": 2, "\u{e000}": 3, "": 4, "a\u{0}": 5, "a": 6},
        "bool": [true, false],
    })
}

/// Appends the varied events: tricky data and metadata through the store,
/// tasks submitted through the API with tricky parameters (as a client
/// writes them), and enough small events for several pages.
async fn fill(app: &TestApp) {
    let store = app.store();
    let tricky = StreamId::new("mirror-tricky").unwrap();
    let mut metadata = Metadata {
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        actor: Some("mirrör 😀".into()),
        command_id: Some(Uuid::new_v4()),
        trace_id: Some("trace\t\"1\"".into()),
        ..Metadata::default()
    };
    metadata
        .extra
        .insert("zeta".into(), json!({"b": [0.1, -0.0], "a": "\u{1}"}));
    metadata.extra.insert("Alpha".into(), json!(1e21));
    let mut first = NewEvent::new("Tricky", tricky_data());
    first.metadata = metadata;
    let mut second = NewEvent::new("Doubles", json!({ "values": doubles(3_000) }));
    second.schema_version = 7;
    store
        .append(&tricky, ExpectedVersion::NoStream, vec![first, second])
        .await
        .unwrap();

    let writer = app.key(&[Scope::TasksWrite]).await;
    for (message, color) in [
        (r#""héllo \"wörld\" 😀\n\u0007""#, "1e21"),
        (r#""-0""#, "-0"),
        (r#""big""#, "18446744073709551616"),
        (r#""\ud83d\ude00 \u00e9""#, "0.30000000000000004"),
        (r#""max""#, "18446744073709551615"),
    ] {
        let body = format!(
            r#"{{"kind":"echo","params":{{"message":{message},"color":{color}}},"tenant":"default","frontend_id":"mirror"}}"#
        );
        let response = send(
            app.post(&writer, "/v1/tasks")
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        assert_eq!(response.status(), 201, "{body}");
    }

    for batch in 0..12_u64 {
        let stream = StreamId::new(format!("mirror-{}", batch % 3)).unwrap();
        let events = (0..100)
            .map(|index| NewEvent::new("Counted", json!({ "batch": batch, "index": index })))
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

/// The stored head: its position and hash (hex), read from the database.
async fn stored_head(app: &TestApp) -> (u64, String) {
    let row = app
        .row(
            "SELECT global_position, encode(hash, 'hex') FROM events
             ORDER BY global_position DESC LIMIT 1",
        )
        .await;
    (u64::try_from(row.get::<_, i64>(0)).unwrap(), row.get(1))
}

/// `taskledger replay export` with `args`, as written (ndjson).
fn export(app: &TestApp, args: &[&str]) -> String {
    taskledger_ok(
        &app.database.url,
        &[&["replay", "export", "--format", "ndjson"], args].concat(),
    )
}

/// The hash of the event at `position` in an export's lines.
fn hash_at(lines: &[&str], position: u64) -> String {
    let line = lines
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["position"] == position)
        .unwrap();
    line["hash"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_verifies_the_export_and_the_feed_without_taskledger() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    fill(&app).await;
    let auditor = app.key(&[Scope::AuditRead]).await;
    let (head, head_hash) = stored_head(&app).await;
    assert!(head > 1_200, "{head}");
    let expected = format!("OK: {head} events, positions 1..{head}, head hash {head_hash}\n");

    // The export, from a file and from standard input.
    let exported = export(&app, &[]);
    let path = std::env::temp_dir().join(format!("tl-mirror-{}.ndjson", Uuid::new_v4()));
    std::fs::write(&path, &exported).unwrap();
    let from_file = verify_chain(&[path.to_str().unwrap()], None).await;
    assert_eq!(from_file.status.code(), Some(0), "{from_file:?}");
    assert_eq!(stdout(&from_file), expected);
    let from_stdin = verify_chain(&[], Some(exported.as_bytes())).await;
    assert_eq!(stdout(&from_stdin), expected, "{from_stdin:?}");

    // Pages of GET /v1/events through the live service, small and large.
    let base = app.url("");
    for limit in ["7", "1000"] {
        let feed = verify_chain(&["--url", &base, "--key", &auditor, "--limit", limit], None).await;
        assert_eq!(feed.status.code(), Some(0), "{feed:?}");
        assert_eq!(stdout(&feed), expected, "limit {limit}");
    }

    // A range after 1: the hash before it from the service, or given.
    let lines: Vec<&str> = exported.lines().collect();
    let tail = format!("positions 1001..{head}, head hash {head_hash}\n");
    let feed_tail = verify_chain(
        &["--url", &base, "--key", &auditor, "--after", "1000"],
        None,
    )
    .await;
    assert_eq!(
        stdout(&feed_tail),
        format!("OK: {} events, {tail}", head - 1000),
        "{feed_tail:?}"
    );
    let exported_tail = export(&app, &["--from", "1001"]);
    let previous = hash_at(&lines, 1000);
    // The hash before the tail given, or asked of the service.
    for args in [
        vec!["--expect-previous", &previous],
        vec!["--url", &base, "--key", &auditor, "-"],
    ] {
        let file_tail = verify_chain(&args, Some(exported_tail.as_bytes())).await;
        assert_eq!(
            stdout(&file_tail),
            format!("OK: {} events, {tail}", head - 1000),
            "{args:?}: {file_tail:?}"
        );
    }
    // Without the hash before it, a range after 1 cannot be checked.
    let unanchored = verify_chain(&[], Some(exported_tail.as_bytes())).await;
    assert_eq!(unanchored.status.code(), Some(2), "{unanchored:?}");
    let wrong_anchor = verify_chain(
        &["--expect-previous", &hash_at(&lines, 999)],
        Some(exported_tail.as_bytes()),
    )
    .await;
    assert!(
        stdout(&wrong_anchor).starts_with("FAILED at position 1001: the hash does not verify"),
        "{wrong_anchor:?}"
    );

    let _ = std::fs::remove_file(&path);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_export_fails_at_the_exact_position() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    fill(&app).await;
    let exported = export(&app, &[]);
    let lines: Vec<String> = exported.lines().map(str::to_owned).collect();
    let position_of = |stream: &str, version: u64| {
        lines
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|event| event["stream_id"] == stream && event["version"] == version)
            .map(|event| event["position"].as_u64().unwrap())
            .unwrap()
    };
    let tricky = position_of("mirror-tricky", 1);
    let counted = position_of("mirror-1", 40);

    // One data value altered (a double's last digit, in the tricky event).
    let mut altered = lines.clone();
    let mut event: Value = serde_json::from_str(&altered[tricky as usize - 1]).unwrap();
    event["data"]["floats"][3] = json!(f64::from_bits(0.1_f64.to_bits() + 1));
    altered[tricky as usize - 1] = event.to_string();
    // One line deleted.
    let mut deleted = lines.clone();
    deleted.remove(counted as usize - 1);
    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(counted as usize - 1, counted as usize);
    // Two events swapped with their positions renumbered to look gapless.
    let mut renumbered = lines.clone();
    for (from, to) in [(counted, counted + 1), (counted + 1, counted)] {
        let mut event: Value = serde_json::from_str(&lines[from as usize - 1]).unwrap();
        event["position"] = json!(to);
        renumbered[to as usize - 1] = event.to_string();
    }

    let cases = [
        (
            "altered data",
            altered,
            tricky,
            "the hash does not verify".to_owned(),
        ),
        (
            "deleted line",
            deleted,
            counted,
            format!("position {counted} is missing"),
        ),
        (
            "swapped lines",
            swapped,
            counted,
            format!("position {counted} is missing"),
        ),
        (
            "renumbered swap",
            renumbered,
            counted,
            "stream mirror-1 has version 41 where 40 was due".to_owned(),
        ),
    ];
    for (what, lines, position, problem) in cases {
        let input = lines.join("\n") + "\n";
        let output = verify_chain(&[], Some(input.as_bytes())).await;
        assert_eq!(output.status.code(), Some(1), "{what}: {output:?}");
        let verdict = stdout(&output);
        assert!(
            verdict.starts_with(&format!("FAILED at position {position}: ")),
            "{what}: {verdict}"
        );
        assert!(verdict.contains(&problem), "{what}: {verdict}");
    }
    app.finish().await;
}
