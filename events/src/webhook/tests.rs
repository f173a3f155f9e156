//! Given these events, when this command, expect these events or this
//! refusal; and the kinds, ids and stored form.

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::testing::{self, at, Given, FIXED_ID, FIXED_ID_SHORT};
use crate::RefusalKind;

fn id() -> WebhookId {
    WebhookId(FIXED_ID)
}

fn given(history: impl IntoIterator<Item = WebhookEvent>) -> Given<Webhooks> {
    testing::given(history)
}

fn create_webhook(url: &str, kinds: &[&str]) -> CreateWebhook {
    CreateWebhook {
        webhook_id: id(),
        tenant: "acme".parse().unwrap(),
        url: url.to_owned(),
        event_kinds: kinds.iter().map(|kind| (*kind).to_owned()).collect(),
        created_at: at(0),
        created_by: Some("key-1".into()),
    }
}

fn created() -> WebhookEvent {
    WebhookEvent::Created(create_webhook(
        "https://hooks.example/taskledger",
        &["task.*"],
    ))
}

fn disabled(reason: &str) -> WebhookEvent {
    WebhookEvent::Disabled(WebhookDisabled {
        reason: reason.into(),
        disabled_at: at(10),
        disabled_by: Some("key-1".into()),
    })
}

fn attempt(outcome: DeliveryOutcome, number: u32) -> WebhookDeliveryAttempted {
    WebhookDeliveryAttempted {
        message_id: message_id(id(), Uuid::nil()),
        position: 42,
        kind: "task.succeeded".into(),
        attempt: number,
        attempted_at: at(20),
        duration_ms: 12,
        status_code: Some(500),
        error: None,
        outcome,
        next_attempt_at: (outcome == DeliveryOutcome::Retrying).then(|| at(21)),
    }
}

fn record(outcome: DeliveryOutcome, number: u32, reason: Option<&str>) -> WebhookCommand {
    WebhookCommand::RecordDelivery(RecordDelivery {
        webhook_id: id(),
        attempt: attempt(outcome, number),
        give_up_reason: reason.map(str::to_owned),
    })
}

#[test]
fn a_webhook_is_created_enabled() {
    let state = given([])
        .when(WebhookCommand::Create(create_webhook(
            "https://hooks.example/taskledger",
            &["task.*"],
        )))
        .then_expect(vec![created()])
        .unwrap();
    assert_eq!(state.status, WebhookStatus::Enabled);
    assert_eq!(state.tenant.as_str(), "acme");
    given([created()])
        .when(WebhookCommand::Create(create_webhook(
            "http://a.example/",
            &["task.*"],
        )))
        .then_error(RefusalKind::AlreadyExists, FIXED_ID_SHORT);
}

#[test]
fn bad_urls_and_kinds_are_refused_naming_the_rule() {
    for (url, part) in [
        ("ftp://hooks.example/", "http:// or https://"),
        ("https://user:pw@hooks.example/", "credentials"),
        ("https:///path", "host"),
        ("https://hooks.example/a b", "spaces"),
    ] {
        given([])
            .when(WebhookCommand::Create(create_webhook(url, &["task.*"])))
            .then_error(RefusalKind::Invalid, part);
    }
    let refusal = given([])
        .when(WebhookCommand::Create(create_webhook(
            "https://hooks.example/",
            &["task.succeeded", "task.exploded", "tasks"],
        )))
        .then_error(RefusalKind::Invalid, "unknown event kinds");
    assert!(refusal.message().contains("task.exploded"), "{refusal:?}");
    assert!(refusal.message().contains("tasks;"), "{refusal:?}");
    assert!(
        refusal.message().contains("device.message.received"),
        "{refusal:?}"
    );
    given([])
        .when(WebhookCommand::Create(create_webhook(
            "https://hooks.example/",
            &[],
        )))
        .then_error(RefusalKind::Invalid, "at least one");
}

#[test]
fn disable_enable_and_delete() {
    let state = given([created()])
        .when(WebhookCommand::Disable(DisableWebhook {
            webhook_id: id(),
            reason: "maintenance".into(),
            disabled_at: at(10),
            disabled_by: Some("key-1".into()),
        }))
        .then_expect(vec![disabled("maintenance")])
        .unwrap();
    assert_eq!(state.status, WebhookStatus::Disabled);
    assert_eq!(state.disabled_reason.as_deref(), Some("maintenance"));
    let enable = WebhookCommand::Enable(EnableWebhook {
        webhook_id: id(),
        enabled_at: at(11),
        enabled_by: None,
    });
    let enabled = WebhookEvent::Enabled(WebhookEnabled {
        enabled_at: at(11),
        enabled_by: None,
    });
    let state = given([created(), disabled("x")])
        .when(enable.clone())
        .then_expect(vec![enabled])
        .unwrap();
    assert_eq!(state.status, WebhookStatus::Enabled);
    assert_eq!(state.disabled_reason, None);
    given([created()]).when(enable).then_expect(vec![]);

    let delete = WebhookCommand::Delete(DeleteWebhook {
        webhook_id: id(),
        deleted_at: at(12),
        deleted_by: None,
    });
    let deleted = WebhookEvent::Deleted(WebhookDeleted {
        deleted_at: at(12),
        deleted_by: None,
    });
    given([created()])
        .when(delete.clone())
        .then_expect(vec![deleted.clone()]);
    given([created(), deleted])
        .when(delete)
        .then_error(RefusalKind::NotFound, "does not exist");
}

#[test]
fn a_replay_needs_an_enabled_webhook_and_a_position() {
    let replay = |from_position| {
        WebhookCommand::Replay(ReplayWebhook {
            webhook_id: id(),
            from_position,
            requested_at: at(30),
            requested_by: None,
        })
    };
    let state = given([created()])
        .when(replay(7))
        .then_expect(vec![WebhookEvent::ReplayRequested(
            WebhookReplayRequested {
                from_position: 7,
                requested_at: at(30),
                requested_by: None,
            },
        )])
        .unwrap();
    assert_eq!(state.replay, Some((7, 2)));
    given([created()])
        .when(replay(0))
        .then_error(RefusalKind::Invalid, "from_position");
    given([created(), disabled("x")])
        .when(replay(7))
        .then_error(RefusalKind::InvalidTransition, "enable it first");
}

#[test]
fn giving_up_records_the_attempt_and_disables_with_the_reason() {
    let state = given([created()])
        .when(record(DeliveryOutcome::Retrying, 1, None))
        .then_expect(vec![WebhookEvent::DeliveryAttempted(attempt(
            DeliveryOutcome::Retrying,
            1,
        ))])
        .unwrap();
    assert_eq!((state.attempts, state.finished), (1, 0));
    let state = given([created()])
        .when(record(DeliveryOutcome::GaveUp, 9, Some("failing for 1h")))
        .then_expect(vec![
            WebhookEvent::DeliveryAttempted(attempt(DeliveryOutcome::GaveUp, 9)),
            WebhookEvent::Disabled(WebhookDisabled {
                reason: "failing for 1h".into(),
                disabled_at: at(20),
                disabled_by: Some("webhook-deliverer".into()),
            }),
        ])
        .unwrap();
    assert_eq!(state.status, WebhookStatus::Disabled);
    assert_eq!(state.finished_through, 42);
    given([created()])
        .when(record(DeliveryOutcome::GaveUp, 9, None))
        .then_error(RefusalKind::Invalid, "reason");
    given([created()])
        .when(record(DeliveryOutcome::Delivered, 0, None))
        .then_error(RefusalKind::Invalid, "start at 1");
    given([])
        .when(record(DeliveryOutcome::Delivered, 1, None))
        .then_error(RefusalKind::NotFound, "does not exist");
}

#[test]
fn kinds_match_exactly_or_by_their_family() {
    let kinds = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(kind_of("TaskSucceeded"), Some("task.succeeded"));
    assert_eq!(
        kind_of("DeviceMessageReceived"),
        Some("device.message.received")
    );
    assert_eq!(kind_of("TaskProgressRecorded"), None);
    assert_eq!(kind_of("WebhookCreated"), None);
    assert!(wants(&kinds(&["task.*"]), "task.failed"));
    assert!(wants(&kinds(&["task.succeeded"]), "task.succeeded"));
    assert!(!wants(&kinds(&["task.succeeded"]), "task.failed"));
    assert!(!wants(&kinds(&["task.*"]), "device.message.received"));
    assert!(wants(&kinds(&["device.*"]), "device.message.received"));
    for kind in KNOWN_KINDS {
        assert!(UnknownKinds::check(&[kind.to_owned()]).is_ok(), "{kind}");
    }
}

#[test]
fn the_message_id_is_stable_per_event_and_webhook() {
    let event = Uuid::from_u128(7);
    assert_eq!(message_id(id(), event), message_id(id(), event));
    assert_ne!(
        message_id(id(), event),
        message_id(WebhookId(Uuid::nil()), event)
    );
    assert_ne!(
        message_id(id(), event),
        message_id(id(), Uuid::from_u128(8))
    );
    assert!(message_id(id(), event).starts_with("msg_"));
}

#[test]
fn every_event_round_trips_and_has_a_stable_shape() {
    let all = [
        created(),
        disabled("x"),
        WebhookEvent::Enabled(WebhookEnabled {
            enabled_at: at(11),
            enabled_by: None,
        }),
        WebhookEvent::Deleted(WebhookDeleted {
            deleted_at: at(12),
            deleted_by: None,
        }),
        WebhookEvent::ReplayRequested(WebhookReplayRequested {
            from_position: 3,
            requested_at: at(13),
            requested_by: None,
        }),
        WebhookEvent::DeliveryAttempted(attempt(DeliveryOutcome::Delivered, 1)),
    ];
    testing::assert_round_trips(all, &id().stream_id(), at(1));
    assert_eq!(WebhookEvent::EVENT_TYPES.len(), 6);
    testing::assert_stored_as(
        &WebhookEvent::DeliveryAttempted(attempt(DeliveryOutcome::GaveUp, 3)),
        "WebhookDeliveryAttempted",
        json!({
            "message_id": message_id(id(), Uuid::nil()),
            "position": 42,
            "kind": "task.succeeded",
            "attempt": 3,
            "attempted_at": "2023-11-14T22:13:40Z",
            "duration_ms": 12,
            "status_code": 500,
            "error": null,
            "outcome": "gave_up",
        }),
    );
    // A retrying attempt says when the next one is due; one recorded
    // before that field existed reads back without it.
    let retrying = attempt(DeliveryOutcome::Retrying, 1);
    let stored = serde_json::to_value(&retrying).unwrap();
    assert_eq!(stored["next_attempt_at"], "2023-11-14T22:13:41Z");
    let mut old = stored;
    old.as_object_mut().unwrap().remove("next_attempt_at");
    let read: WebhookDeliveryAttempted = serde_json::from_value(old).unwrap();
    assert_eq!(read.next_attempt_at, None);
}
