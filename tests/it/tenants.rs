//! Tenants over real HTTP: two tenants' keys and a platform key against
//! every route (the matrix), squatting on another tenant's client ids,
//! `frontend_id`'s default, the platform's tenant filter, device assignment
//! with mobile-originated messages from an unassigned device, and the
//! upgrade of a database the previous release left.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use taskledger::plans::{plan_id_for, task_id_in};
use taskledger::submission::{task_id_for, Submission, Submitter};
use taskledger_events::apikey::{hash_secret, ApiKeyId, Scope};
use taskledger_events::plan::PlanId;
use taskledger_events::task::TaskId;
use taskledger_events::testing::TestDatabase;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};
use uuid::Uuid;

use crate::helpers::{
    complete_first_attempt, create_tenant_key, old_format_secret, random_bytes,
    start_first_attempt, TestApp, KINDS,
};
use crate::rockblock::{mo_form_body, mo_webhook, MoFields, FORM, IMEI as UNASSIGNED_IMEI};
use crate::support::cli::taskledger_ok;
use crate::support::http::send;
use crate::support::poll::eventually;

/// A device assigned to tenant acme in the matrix.
const ACME_IMEI: &str = "300434065190001";

/// The service's kinds, and RockBLOCK webhooks accepted unsigned.
fn config() -> String {
    format!(
        "{KINDS}\n[rockblock]\nmt_url = \"http://127.0.0.1:9/rockblock/MT\"\nusername = \"u\"\n\
         password = \"p\"\nverify_mo_jwt = false\n[webhooks]\nallow_private_targets = true\n"
    )
}

/// A request as `key`: the status and the body's bytes.
async fn call(
    app: &TestApp,
    key: &str,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, String) {
    let mut request = app
        .http
        .request(method.clone(), app.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = send(request).await;
    let status = response.status();
    let route = path.split('?').next().unwrap_or(path);
    if route.ends_with("/stream") && status == StatusCode::OK {
        // Endless when admitted: the status is the answer.
        return (status, String::new());
    }
    (status, response.text().await.unwrap())
}

/// The task id a tenant's submission with `client_task_id` gets.
fn derived_id(tenant: &str, frontend_id: &str, client_task_id: &str) -> TaskId {
    let mut submission = Submission::new("echo", Map::new(), frontend_id);
    submission.tenant = tenant.parse().unwrap();
    submission.client_task_id = Some(client_task_id.to_owned());
    task_id_for(
        &submission,
        Submitter {
            key_id: Uuid::nil(),
            idempotency_key: None,
        },
    )
}

/// What a key is answered on a row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// This status.
    Status(u16),
    /// 404 with exactly the body the same request got before the thing
    /// existed (so existence does not leak).
    Missing,
    /// 403 naming the platform key it needs.
    Platform,
    /// Not asked (it would change what other rows see).
    Skip,
}

/// One row: a method and path, a body, and what acme (the owner), globex
/// (another tenant) and a platform key are answered.
struct Row {
    method: Method,
    path: String,
    body: Option<Value>,
    acme: Expect,
    globex: Expect,
    platform: Expect,
}

fn row(method: Method, path: String, acme: Expect, globex: Expect, platform: Expect) -> Row {
    Row {
        method,
        path,
        body: None,
        acme,
        globex,
        platform,
    }
}

fn matrix(task: TaskId, webhook: &str, plan: Uuid) -> Vec<Row> {
    use Expect::{Missing, Platform, Skip, Status};
    let id = task.0;
    let get = Method::GET;
    let post = Method::POST;
    let own = |method: &Method, path: String| {
        row(method.clone(), path, Status(200), Missing, Status(200))
    };
    let global = |method: &Method, path: &str, platform: Expect| {
        row(
            method.clone(),
            path.to_owned(),
            Platform,
            Platform,
            platform,
        )
    };
    let mut rows = vec![
        own(&get, format!("/v1/tasks/{id}")),
        own(&get, format!("/v1/tasks/{id}?min_version=1")),
        own(&get, format!("/v1/tasks/{id}?at_version=1")),
        own(&get, format!("/v1/tasks/{id}?as_of=2999-01-01T00:00:00Z")),
        own(&get, format!("/v1/tasks/{id}/result")),
        own(&get, format!("/v1/tasks/{id}/events")),
        own(&get, format!("/v1/tasks/{id}/artifacts")),
        own(&get, format!("/v1/tasks/{id}/ledger")),
        // The task has no such file: the owner is told so, another tenant
        // that the task does not exist.
        row(
            get.clone(),
            format!("/v1/tasks/{id}/artifacts/report.json"),
            Status(404),
            Missing,
            Status(404),
        ),
        // It succeeded: cancelling reaches the task (409) or not (404).
        row(
            post.clone(),
            format!("/v1/tasks/{id}/cancel"),
            Status(409),
            Missing,
            Status(409),
        ),
        own(&get, format!("/v1/devices/{ACME_IMEI}")),
        own(&get, format!("/v1/devices/{ACME_IMEI}/messages")),
        // Never assigned: platform keys only.
        row(
            get.clone(),
            format!("/v1/devices/{UNASSIGNED_IMEI}"),
            Missing,
            Missing,
            Status(200),
        ),
        row(
            get.clone(),
            format!("/v1/devices/{UNASSIGNED_IMEI}/messages"),
            Missing,
            Missing,
            Status(200),
        ),
        // Every key has its own tenant's change stream (a platform key,
        // every tenant's); what each hears is tests/it/task_stream.rs's.
        row(
            get.clone(),
            "/v1/tasks/stream?after=0".to_owned(),
            Status(200),
            Status(200),
            Status(200),
        ),
        global(&get, "/v1/events", Status(200)),
        global(&get, "/v1/events/stream", Status(200)),
        global(&get, &format!("/v1/streams/task-{id}/events"), Status(200)),
        global(&get, "/v1/audit/verify", Status(200)),
        global(&get, "/v1/projections", Status(200)),
        global(&get, "/v1/projections/tasks", Status(200)),
        global(&post, "/v1/projections/tasks/rebuild", Skip),
        global(&get, "/v1/ledgers", Status(200)),
        global(&post, "/v1/projections/tasks/pause", Status(200)),
        global(&post, "/v1/projections/tasks/resume", Status(200)),
        global(&get, "/v1/ledgers/bank/status", Status(200)),
        global(&get, "/v1/ledgers/bank/holes", Status(200)),
        global(&get, "/v1/keys", Status(200)),
        global(&post, &format!("/v1/keys/{id}/revoke"), Status(404)),
        global(&post, &format!("/v1/keys/{id}/rotate"), Status(404)),
    ];
    rows.push(Row {
        body: Some(json!({"name": "matrix", "scopes": ["tasks:read"], "tenant": "acme"})),
        ..global(&post, "/v1/keys", Status(201))
    });
    rows.push(Row {
        body: Some(json!({"text": "hi"})),
        ..row(
            post.clone(),
            format!("/v1/devices/{ACME_IMEI}/messages"),
            Status(202),
            Missing,
            Status(202),
        )
    });
    rows.push(Row {
        body: Some(json!({"from_sequence": 1, "to_sequence": 1, "reference": "batch-1"})),
        ..global(&post, "/v1/ledgers/bank/confirmations", Status(201))
    });
    rows.push(Row {
        body: Some(json!({"tenant": "acme"})),
        ..global(
            &Method::PUT,
            &format!("/v1/devices/{ACME_IMEI}"),
            Status(200),
        )
    });
    // Acme's webhook (created before the matrix runs): another tenant is
    // answered as for a missing one; deleting it comes last.
    // Each tenant's own list (what is in it: tests/it/webhooks.rs).
    rows.push(row(
        get.clone(),
        "/v1/webhooks".to_owned(),
        Status(200),
        Status(200),
        Status(200),
    ));
    rows.push(Row {
        body: Some(
            json!({"url": "http://127.0.0.1:9/hook", "events": ["task.*"], "tenant": "acme"}),
        ),
        ..row(
            post.clone(),
            "/v1/webhooks".to_owned(),
            Status(201),
            Status(403),
            Status(201),
        )
    });
    rows.push(own(&get, format!("/v1/webhooks/{webhook}")));
    rows.push(own(&get, format!("/v1/webhooks/{webhook}/deliveries")));
    rows.push(own(&post, format!("/v1/webhooks/{webhook}/enable")));
    rows.push(Row {
        body: Some(json!({"from_position": 1})),
        ..row(
            post.clone(),
            format!("/v1/webhooks/{webhook}/replay"),
            Status(202),
            Missing,
            Status(202),
        )
    });
    // Acme's plan (made after the "before" answers were taken, under an
    // Idempotency-Key, so its id is known in advance).
    rows.push(own(&get, format!("/v1/plans/{plan}")));
    rows.push(row(
        get.clone(),
        "/v1/plans".to_owned(),
        Status(200),
        Status(200),
        Status(200),
    ));
    rows.push(own(&post, format!("/v1/plans/{plan}/cancel")));
    rows.push(row(
        Method::DELETE,
        format!("/v1/webhooks/{webhook}"),
        Status(204),
        Missing,
        Status(404),
    ));
    rows
}

/// Every key of the matrix holds `admin` (every scope), so a refusal is
/// the tenant's, never a scope's.
async fn keys(app: &TestApp) -> (String, String, String) {
    (
        app.tenant_key("acme", &[Scope::Admin]).await,
        app.tenant_key("globex", &[Scope::Admin]).await,
        app.key(&[Scope::Admin]).await,
    )
}

/// Starts and completes `task` as a worker would, and waits until the read
/// model shows it succeeded.
async fn succeed(app: &TestApp, platform: &str, task: TaskId) {
    app.as_worker(task, start_first_attempt(task, "worker-1"))
        .await;
    app.as_worker(task, complete_first_attempt(task)).await;
    let path = format!("/v1/tasks/{}?min_version=3", task.0);
    let (status, body) = app.read(Some(platform), &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_shows_a_tenant_only_its_own_and_platform_routes_need_a_platform_key() {
    let app = TestApp::spawn_with_config(&config(), |_| {}).await;
    let (acme, globex, platform) = keys(&app).await;
    let task = derived_id("acme", "acme", "order-1");
    let created = app
        .post(&acme, "/v1/webhooks")
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["task.succeeded"]}));
    let webhook: Value = send(created).await.json().await.unwrap();
    let (plan_key_id, plan_key) =
        create_tenant_key(&app.store(), "acme", &[Scope::Admin], random_bytes()).await;
    let plan = plan_id_for(
        &"acme".parse().unwrap(),
        Submitter {
            key_id: plan_key_id.0,
            idempotency_key: Some("matrix-plan"),
        },
    )
    .0;
    let rows = matrix(task, webhook["id"].as_str().expect("acme's webhook"), plan);

    // Before anything exists: what a missing task or device answers.
    let mut before = Vec::new();
    for row in &rows {
        let mut answers = Vec::new();
        for (key, expect) in [(&acme, row.acme), (&globex, row.globex)] {
            answers.push(if expect == Expect::Missing {
                let answer = call(&app, key, &row.method, &row.path, row.body.as_ref()).await;
                assert_eq!(
                    answer.0, 404,
                    "{} {} before: {}",
                    row.method, row.path, answer.1
                );
                Some(answer.1)
            } else {
                None
            });
        }
        before.push(answers);
    }

    // Acme's task (frontend_id left out, tenant left out), succeeded;
    // acme's device; an MO message from a device nobody was given.
    let (status, submitted) = app
        .submit(
            &acme,
            json!({"kind": "echo", "params": {"message": "a"}, "client_task_id": "order-1"}),
        )
        .await;
    assert_eq!(status, 201, "{submitted}");
    assert_eq!(submitted["id"], task.0.to_string());
    assert_eq!(submitted["tenant"], "acme");
    assert_eq!(
        submitted["frontend_id"], "acme",
        "frontend_id defaults to the tenant"
    );
    succeed(&app, &platform, task).await;
    let submitted_plan = app
        .post(&plan_key, "/v1/plans")
        .header("idempotency-key", "matrix-plan")
        .json(&json!({"tasks": [
            {"name": "a", "kind": "echo", "params": {"message": "a"}},
            {"name": "b", "kind": "echo", "params": {"message": "b"}, "depends_on": ["a"]}
        ]}));
    let answer = send(submitted_plan).await;
    assert_eq!(answer.status(), 201);
    let made: Value = answer.json().await.unwrap();
    assert_eq!(made["id"], plan.to_string());
    let assign = app
        .http
        .put(app.url(&format!("/v1/devices/{ACME_IMEI}")))
        .bearer_auth(&platform)
        .json(&json!({"tenant": "acme"}));
    assert_eq!(send(assign).await.status(), 200);
    let mo = mo_form_body(&MoFields::sample(b"from nobody's"), None);
    assert_eq!(mo_webhook(&app, FORM, mo).await.status(), 200);
    for imei in [ACME_IMEI, UNASSIGNED_IMEI] {
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                let (status, _) = app
                    .read(Some(&platform), &format!("/v1/devices/{imei}"))
                    .await;
                (status == 200)
                    .then_some(())
                    .ok_or_else(|| format!("device {imei} not projected"))
            },
        )
        .await;
    }

    for (row, before) in rows.iter().zip(&before) {
        let keys = [("acme", &acme, row.acme), ("globex", &globex, row.globex)];
        for ((name, key, expect), before) in keys.into_iter().zip(before) {
            let (status, body) = call(&app, key, &row.method, &row.path, row.body.as_ref()).await;
            let what = format!("{name}: {} {} → {status} {body}", row.method, row.path);
            match expect {
                Expect::Status(code) => assert_eq!(status, code, "{what}"),
                Expect::Missing => {
                    assert_eq!(status, 404, "{what}");
                    assert_eq!(Some(&body), before.as_ref(), "{what}: not as if missing");
                }
                Expect::Platform => {
                    assert_eq!(status, 403, "{what}");
                    assert!(
                        body.contains("needs a platform key (all tenants); this key is tenant")
                            && body.contains(&format!("tenant {name}'s")),
                        "{what}"
                    );
                }
                Expect::Skip => {}
            }
        }
        if let Expect::Status(code) = row.platform {
            let (status, body) =
                call(&app, &platform, &row.method, &row.path, row.body.as_ref()).await;
            assert_eq!(
                status, code,
                "platform: {} {} → {body}",
                row.method, row.path
            );
        }
    }

    // Listings: each tenant its own; the platform every tenant's.
    let (status, globex_task) = app
        .submit(&globex, json!({"kind": "echo", "params": {"message": "g"}}))
        .await;
    assert_eq!(status, 201, "{globex_task}");
    let listed = |key: &str, query: &str| {
        let path = format!("/v1/tasks?min_position={}{query}", globex_task["position"]);
        let app = &app;
        let key = key.to_owned();
        async move {
            let (status, page) = app.read(Some(&key), &path).await;
            assert_eq!(status, 200, "{path}: {page}");
            let mut ids: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|task| task["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let acme_id = task.0.to_string();
    let globex_id = globex_task["id"].as_str().unwrap().to_owned();
    // Acme's: its task and its plan's two.
    let mut acme_ids = vec![acme_id.clone()];
    acme_ids.extend(["a", "b"].map(|name| task_id_in(PlanId(plan), name).0.to_string()));
    acme_ids.sort();
    let mut both = acme_ids.clone();
    both.push(globex_id.clone());
    both.sort();
    assert_eq!(listed(&acme, "").await, acme_ids);
    assert_eq!(listed(&globex, "").await, vec![globex_id.clone()]);
    assert_eq!(listed(&platform, "").await, both);
    assert_eq!(listed(&platform, "&tenant=acme").await, acme_ids);
    assert_eq!(listed(&globex, "&tenant=acme").await, Vec::<String>::new());
    assert_eq!(
        listed(&platform, "&tenant=nobody").await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(&platform, "&tenant=Not%20A%20Name").await,
        Vec::<String>::new()
    );
    let csv = |key: &str| app.get(key, "/v1/tasks").header("accept", "text/csv");
    let acme_csv = send(csv(&acme)).await.text().await.unwrap();
    assert!(
        acme_csv.contains(&acme_id) && !acme_csv.contains(&globex_id),
        "{acme_csv}"
    );
    let globex_csv = send(csv(&globex)).await.text().await.unwrap();
    assert!(globex_csv.contains(&globex_id) && !globex_csv.contains(&acme_id));
    let (_, devices) = app.read(Some(&acme), "/v1/devices").await;
    let imeis: Vec<&str> = devices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|device| device["imei"].as_str().unwrap())
        .collect();
    assert_eq!(imeis, vec![ACME_IMEI]);
    let imeis = |key: &str, query: &str| {
        let path = format!("/v1/devices{query}");
        let app = &app;
        let key = key.to_owned();
        async move {
            let (status, page) = app.read(Some(&key), &path).await;
            assert_eq!(status, 200, "{path}: {page}");
            let imeis: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|device| device["imei"].as_str().unwrap().to_owned())
                .collect();
            imeis
        }
    };
    assert_eq!(imeis(&globex, "").await, Vec::<String>::new());
    assert_eq!(imeis(&globex, "?tenant=acme").await, Vec::<String>::new());
    assert_eq!(imeis(&platform, "?tenant=acme").await, vec![ACME_IMEI]);
    assert_eq!(
        imeis(&platform, "?tenant=nobody").await,
        Vec::<String>::new()
    );
    assert_eq!(
        imeis(&platform, "").await.len(),
        2,
        "assigned and unassigned"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_squat_on_each_others_client_ids() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let (acme, globex, platform) = keys(&app).await;
    let body = json!({"kind": "echo", "params": {"message": "mine"}, "client_task_id": "order-7"});
    let (status, first) = app.submit(&acme, body.clone()).await;
    assert_eq!(status, 201, "{first}");
    // The same client id in another tenant: another task, not acme's.
    let (status, other) = app.submit(&globex, body.clone()).await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["id"], first["id"]);
    assert_eq!(other["tenant"], "globex");
    // Retries find each tenant's own.
    let (status, again) = app.submit(&globex, body.clone()).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &other["id"]));
    let (status, again) = app.submit(&acme, body.clone()).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]));
    // A different request under the client id conflicts with globex's own
    // task and names only it.
    let changed =
        json!({"kind": "echo", "params": {"message": "other"}, "client_task_id": "order-7"});
    let (status, conflict) = app.submit(&globex, changed).await;
    assert_eq!(status, 409, "{conflict}");
    let detail = conflict["detail"].as_str().unwrap();
    assert!(detail.contains(other["id"].as_str().unwrap()), "{detail}");
    assert!(!detail.contains(first["id"].as_str().unwrap()), "{detail}");
    // One Idempotency-Key from a platform key in two tenants: two tasks.
    let keyed = |tenant: &str| {
        app.post(&platform, "/v1/tasks")
            .header("idempotency-key", "retry-1")
            .json(&json!({"kind": "echo", "params": {"message": "k"}, "tenant": tenant}))
    };
    let in_acme: Value = send(keyed("acme")).await.json().await.unwrap();
    let in_globex: Value = send(keyed("globex")).await.json().await.unwrap();
    assert_ne!(in_acme["id"], in_globex["id"]);
    assert_eq!(
        (in_acme["tenant"].as_str(), in_globex["tenant"].as_str()),
        (Some("acme"), Some("globex"))
    );
    // Who may name which tenant.
    let unnamed = json!({"kind": "echo", "params": {"message": "x"}});
    app.submit_refused(
        &platform,
        unnamed,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["must name the task's tenant"],
    )
    .await;
    let badly_named = json!({"kind": "echo", "params": {"message": "x"}, "tenant": "Bad Name"});
    app.submit_refused(
        &platform,
        badly_named,
        StatusCode::UNPROCESSABLE_ENTITY,
        &[],
    )
    .await;
    let in_globex = json!({"kind": "echo", "params": {"message": "x"}, "tenant": "globex"});
    app.submit_refused(&acme, in_globex, StatusCode::FORBIDDEN, &["tenant acme's"])
        .await;
    let (status, named) = app
        .submit(
            &acme,
            json!({"kind": "echo", "params": {"message": "x"}, "tenant": "acme", "frontend_id": "web"}),
        )
        .await;
    assert_eq!(status, 201, "{named}");
    assert_eq!(
        (named["tenant"].as_str(), named["frontend_id"].as_str()),
        (Some("acme"), Some("web"))
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_assigned_by_a_platform_admin_and_its_earlier_messages_follow_it() {
    let app = TestApp::spawn_with_config(&config(), |_| {}).await;
    let (acme, globex, platform) = keys(&app).await;
    let mo = mo_form_body(&MoFields::sample(b"before anyone"), None);
    assert_eq!(mo_webhook(&app, FORM, mo).await.status(), 200);
    let messages = format!("/v1/devices/{UNASSIGNED_IMEI}/messages");
    // Recorded, and visible to platform keys only.
    let received = eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let (status, page) = app.read(Some(&platform), &messages).await;
            (status == 200
                && page["items"]
                    .as_array()
                    .is_some_and(|items| items.len() == 1))
            .then_some(page)
            .ok_or_else(|| "the MO message is not shown to the platform".to_owned())
        },
    )
    .await;
    assert_eq!(received["items"][0]["direction"], "mo");
    assert_eq!(app.read(Some(&acme), &messages).await.0, 404);
    let (_, device) = app
        .read(Some(&platform), &format!("/v1/devices/{UNASSIGNED_IMEI}"))
        .await;
    assert_eq!(device["tenant"], Value::Null);

    // A tenant cannot assign; a malformed tenant is refused.
    let assign = |key: &str, body: Value| {
        app.http
            .put(app.url(&format!("/v1/devices/{UNASSIGNED_IMEI}")))
            .bearer_auth(key)
            .json(&body)
    };
    assert_eq!(
        send(assign(&acme, json!({"tenant": "acme"})))
            .await
            .status(),
        403
    );
    assert_eq!(
        send(assign(&platform, json!({"tenant": "No Good"})))
            .await
            .status(),
        422
    );
    let assigned: Value = send(assign(&platform, json!({"tenant": "acme"})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(assigned["tenant"], "acme");
    let (status, page) = app.read(Some(&acme), &messages).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.read(Some(&globex), &messages).await.0, 404);

    // The CLI equivalent gives it to globex.
    let out = taskledger_ok(
        &app.database.url,
        &["devices", "assign", UNASSIGNED_IMEI, "--tenant", "globex"],
    );
    assert!(out.contains("assigned to tenant globex"), "{out}");
    assert_eq!(app.read(Some(&globex), &messages).await.0, 200);
    assert_eq!(app.read(Some(&acme), &messages).await.0, 404);
    let sent = app
        .post(&acme, &format!("/v1/devices/{UNASSIGNED_IMEI}/messages"))
        .json(&json!({"text": "not yours"}));
    assert_eq!(send(sent).await.status(), 404);
    app.finish().await;
}

/// A raw event in its stored form, as the previous release wrote it.
async fn append_raw(store: &impl EventStore, stream: &StreamId, event_type: &str, data: Value) {
    store
        .append(
            stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(event_type, data)],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_upgrades_into_the_default_tenant() {
    // The previous release's schema: migrations 1 to 11.
    let database = TestDatabase::create_empty().await;
    let mut client = database.client().await;
    taskledger_events::migrate::migrate_up_to(&mut client, 11)
        .await
        .unwrap();
    // Its events, in their old shapes: no access, no tenant.
    let store = taskledger_events::postgres::PgEventStore::connect(
        &database.url,
        taskledger_events::postgres::StoreOptions::default(),
    )
    .unwrap();
    // A secret of the previous release's format: no key id in it.
    let secret = &old_format_secret([7; 32]);
    let key_id = Uuid::new_v4();
    append_raw(
        &store,
        &ApiKeyId(key_id).stream_id(),
        "ApiKeyCreated",
        json!({
            "key_id": key_id, "name": "old frontend", "scopes": ["tasks:write", "tasks:read"],
            "key_hash": hash_secret(secret), "created_at": "2026-01-01T00:00:00Z",
            "created_by": "cli"
        }),
    )
    .await;
    let task = derived_id("default", "web", "order-1");
    // The previous release derived it so, too.
    assert_eq!(
        task.0,
        Uuid::new_v5(
            &Uuid::from_u128(0x6c1e_5a0f_9b7d_4e2a_8f31_0c5d_2b9e_7a44),
            b"client:3:web:order-1"
        )
    );
    append_raw(
        &store,
        &task.stream_id(),
        "TaskSubmitted",
        json!({
            "task_id": task.0, "kind": "echo", "params": {"message": "old"},
            "frontend_id": "web", "client_task_id": "order-1", "priority": 0,
            "timeout_seconds": 30, "max_attempts": 1,
            "submitted_at": "2026-01-01T00:00:01Z", "submitted_by": key_id.to_string()
        }),
    )
    .await;
    drop(client);

    // Served by this release: migrated, projected.
    let app = TestApp::spawn_on(database, |settings| {
        let path = std::env::temp_dir().join(format!("taskledger-kinds-{}.toml", Uuid::new_v4()));
        std::fs::write(&path, KINDS).unwrap();
        settings.config = Some(path);
    })
    .await;
    let read = eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let (status, body) = app
                .read(Some(secret), &format!("/v1/tasks/{}", task.0))
                .await;
            (status == 200)
                .then_some(body)
                .ok_or_else(|| format!("the old key does not read its task: {status}"))
        },
    )
    .await;
    assert_eq!(read["tenant"], "default");
    let client = app.database.client().await;
    let key_tenant: Option<String> = client
        .query_one("SELECT tenant FROM api_keys WHERE key_id = $1", &[&key_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key_tenant.as_deref(), Some("default"));
    let (status, listed) = app.read(Some(secret), "/v1/tasks").await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"][0]["id"], task.0.to_string());
    // A retry of the old submission finds the old task.
    let (status, again) = app
        .submit(
            secret,
            json!({"kind": "echo", "params": {"message": "old"}, "frontend_id": "web",
                   "client_task_id": "order-1"}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], task.0.to_string());
    app.finish().await;
}
