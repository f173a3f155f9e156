//! A restarted deliverer: nothing delivered twice, nothing lost, the same
//! webhook-ids.

use std::time::Duration;

use taskledger::config::settings::Role;
use taskledger_events::testing::TestDatabase;
use uuid::Uuid;

use crate::helpers::TestApp;

use super::{
    app_with, config_with, created, delivered, delivered_positions, failing_hook, hook_url,
    succeeded_task, until_logged, verify, Receiver, SCOPES,
};

/// [`app_with`] no `[webhooks]` lines, on `database` as it is (a restart).
async fn app_on(database: TestDatabase) -> TestApp {
    let path = std::env::temp_dir().join(format!("taskledger-kinds-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, config_with("")).unwrap();
    TestApp::spawn_on(database, |settings| {
        settings.config = Some(path);
        settings.roles = vec![Role::Api, Role::Projector, Role::Webhooks];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_deliverer_delivers_again_under_the_same_webhook_id() {
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, webhook) = failing_hook(&app, &key, 500).await;
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let task = succeeded_task(&app, &key).await;
    receiver.until_got_any("no attempt yet").await;
    // The process stops while the delivery is still failing: its
    // checkpoint has not passed the event.
    let database = app.stop().await;
    let before = receiver.got()[0].id.clone();
    receiver.answer_ok_from_now();
    let app = app_on(database).await;
    let about = delivered(&receiver, task).await;
    let success = about.iter().find(|got| got.answered == 200).unwrap();
    assert_eq!(success.id, before, "the same webhook-id after a restart");
    assert!(verify(&secret, success));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_healthy_webhook_gets_nothing_twice_while_a_dead_one_catches_up() {
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (dead, dead_hook) = failing_hook(&app, &key, 500).await;
    let (healthy, address) = Receiver::start(&[]).await;
    let healthy_hook = created(&app, &key, &hook_url(address), &["task.succeeded"]).await;
    let healthy_id = healthy_hook["id"].as_str().unwrap().to_owned();
    let first = succeeded_task(&app, &key).await;
    delivered(&healthy, first).await;
    let second = succeeded_task(&app, &key).await;
    delivered(&healthy, second).await;
    dead.until_got_any("the dead receiver got no attempt yet")
        .await;
    let dead_ids: Vec<String> = dead.ids();
    // Both healthy deliveries are recorded (a stop between an answer and
    // its record would rightly deliver it again).
    until_logged(&app, &key, &healthy_id, 2, Duration::from_secs(30)).await;

    // The deliverer restarts while the dead receiver still fails its
    // first event: that holds back its own webhook, not the healthy one.
    let database = app.stop().await;
    dead.answer_ok_from_now();
    let app = app_on(database).await;
    let third = succeeded_task(&app, &key).await;
    delivered(&healthy, third).await;
    // The dead one, now answering, gets every event it had not, in order,
    // the first under the id it was first sent with.
    delivered(&dead, third).await;
    let dead_delivered: Vec<String> = dead
        .got()
        .iter()
        .filter(|got| got.answered == 200)
        .map(|got| got.id.clone())
        .collect();
    assert_eq!(dead_delivered.len(), 3, "{dead_delivered:?}");
    assert_eq!(dead_delivered[0], dead_ids[0], "{dead_delivered:?}");
    let dead_positions = delivered_positions(&dead);
    assert!(
        dead_positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{dead_positions:?}"
    );
    assert!(dead_hook["id"].is_string());

    let ids: Vec<String> = healthy.ids();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), 3, "one delivery per task, none again: {ids:?}");
    assert_eq!(unique.len(), 3, "{ids:?}");
    let positions = delivered_positions(&healthy);
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    app.finish().await;
}
