//! Given these events, when this command, expect these events or this error;
//! and the secret helpers against known vectors.

use std::collections::BTreeSet;

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::tenant::Access;
use crate::testing::{self, at, Given, FIXED_ID, FIXED_ID_SHORT};
use crate::{Metadata, RecordedEvent, RefusalKind};

fn key_id() -> ApiKeyId {
    ApiKeyId(FIXED_ID)
}

fn scopes(names: &[Scope]) -> BTreeSet<Scope> {
    names.iter().copied().collect()
}

fn key_hash() -> String {
    hash_secret(&generate_secret(key_id(), [7; 32]))
}

// ---- the framework: crate::testing, for API keys ----------------------------

fn given(history: impl IntoIterator<Item = ApiKeyEvent>) -> Given<ApiKeys> {
    testing::given(history)
}

/// The key after `command`, decided in the state `history` leaves, was
/// exactly `expected`.
#[track_caller]
fn key_after(
    history: impl IntoIterator<Item = ApiKeyEvent>,
    command: ApiKeyCommand,
    expected: ApiKeyEvent,
) -> ApiKey {
    given(history)
        .when(command)
        .then_expect(vec![expected])
        .expect("the key exists")
}

// ---- commands and events -------------------------------------------------------

fn create_api_key() -> CreateApiKey {
    CreateApiKey {
        key_id: key_id(),
        name: "ci deploys".into(),
        scopes: scopes(&[Scope::TasksWrite, Scope::TasksRead]),
        key_hash: key_hash(),
        created_at: at(0),
        created_by: Some("admin-key".into()),
        access: Access::AllTenants,
        expires_at: None,
        rate_limit: None,
    }
}

fn create() -> ApiKeyCommand {
    ApiKeyCommand::Create(create_api_key())
}

fn revoke() -> ApiKeyCommand {
    ApiKeyCommand::Revoke(RevokeApiKey {
        key_id: key_id(),
        reason: Some("leaked in a build log".into()),
        revoked_at: at(60),
        revoked_by: Some("admin-key".into()),
    })
}

/// Revokes `key_id` at second 5, with no reason and no actor.
fn revoke_without_a_reason(key_id: ApiKeyId) -> ApiKeyCommand {
    ApiKeyCommand::Revoke(RevokeApiKey {
        key_id,
        reason: None,
        revoked_at: at(5),
        revoked_by: None,
    })
}

fn created() -> ApiKeyEvent {
    ApiKeyEvent::Created(create_api_key())
}

fn revoked() -> ApiKeyEvent {
    ApiKeyEvent::Revoked(ApiKeyRevoked {
        reason: Some("leaked in a build log".into()),
        revoked_at: at(60),
        revoked_by: Some("admin-key".into()),
    })
}

// ---- create ----------------------------------------------------------------------

#[test]
fn create_makes_an_active_key() {
    let key = key_after([], create(), created());
    assert_eq!(
        key,
        ApiKey {
            id: key_id(),
            name: "ci deploys".into(),
            scopes: scopes(&[Scope::TasksWrite, Scope::TasksRead]),
            key_hash: key_hash(),
            previous_key_hash: None,
            rotated_at: None,
            created_at: at(0),
            created_by: Some("admin-key".into()),
            access: Access::AllTenants,
            expires_at: None,
            rate_limit: None,
            revoked_at: None,
            revoked_reason: None,
            revoked_by: None,
        }
    );
    assert!(key.is_active());
}

#[test]
fn a_key_expires_at_the_instant_it_names_and_not_before_it_is_created() {
    let mut expiring = create_api_key();
    expiring.expires_at = Some(at(3600));
    let key = key_after(
        [],
        ApiKeyCommand::Create(expiring.clone()),
        ApiKeyEvent::Created(expiring),
    );
    assert!(key.is_usable_at(at(3599)));
    assert!(!key.is_usable_at(at(3600)));

    let mut backwards = create_api_key();
    backwards.expires_at = Some(at(0));
    given(Vec::<ApiKeyEvent>::new())
        .when(ApiKeyCommand::Create(backwards))
        .then_error(RefusalKind::Invalid, "expires_at must be after created_at");
}

#[test]
fn a_key_created_before_tenants_existed_is_the_default_tenants() {
    let mut stored = serde_json::to_value(create_api_key()).unwrap();
    let object = stored.as_object_mut().unwrap();
    for field in ["access", "expires_at", "rate_limit"] {
        object.remove(field);
    }
    let old: ApiKeyCreated = serde_json::from_value(stored).unwrap();
    assert_eq!(old.access.tenant().unwrap().as_str(), "default");
    assert_eq!((old.expires_at, old.rate_limit), (None, None));
}

#[test]
fn create_happens_only_once() {
    given([created()]).when(create()).then_error(
        RefusalKind::AlreadyExists,
        "api key 3f2a1b4c… already exists",
    );
    // A revoked key's id is not free again.
    given([created(), revoked()])
        .when(create())
        .then_error(RefusalKind::AlreadyExists, "already exists");
}

/// Makes one field of a valid command invalid.
type Spoil = fn(&mut CreateApiKey);

#[test]
fn create_refuses_each_bad_field_with_its_own_message() {
    let cases: [(Spoil, &str); 11] = [
        (|c| c.name = String::new(), "name must not be empty"),
        (
            |c| c.name = "n".repeat(MAX_NAME_BYTES + 1),
            "name is 101 bytes long; the limit is 100",
        ),
        // 34 three-byte characters: 102 bytes, though only 34 characters.
        (
            |c| c.name = "€".repeat(34),
            "name is 102 bytes long; the limit is 100",
        ),
        (
            |c| c.name = "ci\ndeploys".into(),
            "name must not contain control characters",
        ),
        (|c| c.scopes.clear(), "scopes must name at least one scope"),
        (
            |c| c.key_hash = String::new(),
            "key_hash must be 64 lowercase",
        ),
        (
            |c| c.key_hash = c.key_hash.to_uppercase(),
            "key_hash must be 64 lowercase",
        ),
        (|c| c.key_hash.truncate(63), "key_hash must be 64 lowercase"),
        (|c| c.key_hash.push('0'), "key_hash must be 64 lowercase"),
        (
            |c| c.key_hash = "g".repeat(64),
            "key_hash must be 64 lowercase",
        ),
        // The secret instead of its hash.
        (
            |c| c.key_hash = generate_secret(key_id(), [7; 32]),
            "key_hash must be 64 lowercase",
        ),
    ];
    for (spoil, message) in cases {
        let mut command = create_api_key();
        spoil(&mut command);
        given([])
            .when(ApiKeyCommand::Create(command))
            .then_error(RefusalKind::Invalid, message);
    }
}

#[test]
fn create_accepts_every_limit_exactly() {
    let mut command = create_api_key();
    command.name = "n".repeat(MAX_NAME_BYTES);
    command.scopes = scopes(&[Scope::AuditRead]);
    command.created_by = None;
    let key = key_after(
        [],
        ApiKeyCommand::Create(command.clone()),
        ApiKeyEvent::Created(command.clone()),
    );
    assert_eq!(key.name.len(), MAX_NAME_BYTES);

    command.scopes = Scope::ALL.into_iter().collect();
    let key = given([])
        .when(ApiKeyCommand::Create(command))
        .then_expect_any()
        .unwrap();
    assert_eq!(key.scopes.len(), Scope::ALL.len());
}

// ---- revoke -------------------------------------------------------------------------

#[test]
fn revoke_ends_an_active_key() {
    let key = key_after([created()], revoke(), revoked());
    assert!(!key.is_active());
    assert_eq!(key.revoked_at, Some(at(60)));
    assert_eq!(key.revoked_reason.as_deref(), Some("leaked in a build log"));
    assert_eq!(key.revoked_by.as_deref(), Some("admin-key"));
    assert_eq!(key.key_hash, key_hash(), "the hash stays for the record");
}

#[test]
fn revoke_without_a_reason_or_actor() {
    let key = key_after(
        [created()],
        revoke_without_a_reason(key_id()),
        ApiKeyEvent::Revoked(ApiKeyRevoked {
            reason: None,
            revoked_at: at(5),
            revoked_by: None,
        }),
    );
    assert!(!key.is_active());
}

#[test]
fn revoke_of_a_revoked_key_is_refused() {
    given([created(), revoked()]).when(revoke()).then_error(
        RefusalKind::InvalidTransition,
        "api key 3f2a1b4c… is already revoked",
    );
}

#[test]
fn revoke_of_an_unknown_key_is_not_found() {
    given([])
        .when(revoke())
        .then_error(RefusalKind::NotFound, "api key 3f2a1b4c… does not exist");
}

#[test]
fn a_command_for_another_key_than_the_state_is_not_found() {
    let other = ApiKeyId(Uuid::from_u128(7));
    let error = given([created()])
        .when(revoke_without_a_reason(other))
        .then_error(RefusalKind::NotFound, "does not exist");
    assert!(error.message().contains(&other.short()), "{error}");
}

#[test]
fn revoke_refuses_a_reason_with_control_characters_or_too_long() {
    for (reason, message) in [
        (
            "leaked\0".to_owned(),
            "reason must not contain control characters",
        ),
        (
            "a\nb".to_owned(),
            "reason must not contain control characters",
        ),
        (
            "r".repeat(MAX_REASON_BYTES + 1),
            "reason is 501 bytes long; the limit is 500",
        ),
    ] {
        given([created()])
            .when(ApiKeyCommand::Revoke(RevokeApiKey {
                key_id: key_id(),
                reason: Some(reason),
                revoked_at: at(5),
                revoked_by: None,
            }))
            .then_error(RefusalKind::Invalid, message);
    }
    let key = given([created()])
        .when(ApiKeyCommand::Revoke(RevokeApiKey {
            key_id: key_id(),
            reason: Some("r".repeat(MAX_REASON_BYTES)),
            revoked_at: at(5),
            revoked_by: None,
        }))
        .then_expect_any()
        .unwrap();
    assert!(!key.is_active());
}

// ---- rotate ---------------------------------------------------------------------------

fn new_hash() -> String {
    hash_secret(&generate_secret(key_id(), [8; 32]))
}

/// Rotates the key at second 100 with `grace` seconds of grace.
fn rotate_with_grace(grace: i64) -> ApiKeyCommand {
    ApiKeyCommand::Rotate(RotateApiKey {
        key_id: key_id(),
        key_hash: new_hash(),
        grace: chrono::TimeDelta::seconds(grace),
        rotated_at: at(100),
        rotated_by: Some("admin-key".into()),
    })
}

fn rotated() -> ApiKeyEvent {
    ApiKeyEvent::Rotated(ApiKeyRotated {
        key_hash: new_hash(),
        previous_valid_until: at(700),
        rotated_at: at(100),
        rotated_by: Some("admin-key".into()),
    })
}

#[test]
fn rotate_makes_a_new_secret_current_and_keeps_the_old_one_for_its_grace() {
    let key = key_after([created()], rotate_with_grace(600), rotated());
    assert_eq!(key.key_hash, new_hash());
    assert_eq!(key.previous_key_hash, Some((key_hash(), at(700))));
    assert_eq!(key.rotated_at, Some(at(100)));
    assert!(key.is_usable_at(at(100)));
    assert_eq!(key.secret_at(&new_hash(), at(100)), SecretMatch::Current);
    assert_eq!(
        key.secret_at(&key_hash(), at(699)),
        SecretMatch::InGrace(at(700))
    );
    assert_eq!(
        key.secret_at(&key_hash(), at(700)),
        SecretMatch::Replaced(at(700))
    );
    let stranger = hash_secret(&generate_secret(key_id(), [9; 32]));
    assert_eq!(key.secret_at(&stranger, at(100)), SecretMatch::Unknown);
}

#[test]
fn rotate_without_grace_ends_the_old_secret_at_once() {
    let key = given([created()])
        .when(rotate_with_grace(0))
        .then_expect(vec![ApiKeyEvent::Rotated(ApiKeyRotated {
            key_hash: new_hash(),
            previous_valid_until: at(100),
            rotated_at: at(100),
            rotated_by: Some("admin-key".into()),
        })])
        .unwrap();
    assert_eq!(
        key.secret_at(&key_hash(), at(100)),
        SecretMatch::Replaced(at(100))
    );
}

#[test]
fn a_second_rotation_ends_the_grace_of_the_first() {
    let third = hash_secret(&generate_secret(key_id(), [9; 32]));
    let key = given([created(), rotated()])
        .when(ApiKeyCommand::Rotate(RotateApiKey {
            key_id: key_id(),
            key_hash: third.clone(),
            grace: chrono::TimeDelta::seconds(60),
            rotated_at: at(200),
            rotated_by: None,
        }))
        .then_expect_any()
        .unwrap();
    assert_eq!(key.secret_at(&third, at(200)), SecretMatch::Current);
    assert_eq!(
        key.secret_at(&new_hash(), at(200)),
        SecretMatch::InGrace(at(260))
    );
    assert_eq!(key.secret_at(&key_hash(), at(200)), SecretMatch::Unknown);
}

#[test]
fn rotate_refuses_a_revoked_or_expired_key() {
    given([created(), revoked()])
        .when(rotate_with_grace(60))
        .then_error(
            RefusalKind::InvalidTransition,
            "api key 3f2a1b4c… is revoked; create a new key instead",
        );
    let mut expiring = create_api_key();
    expiring.expires_at = Some(at(100));
    given([ApiKeyEvent::Created(expiring)])
        .when(rotate_with_grace(60))
        .then_error(
            RefusalKind::InvalidTransition,
            "api key 3f2a1b4c… expired at 2023-11-14T22:15:00Z",
        );
    given([])
        .when(rotate_with_grace(60))
        .then_error(RefusalKind::NotFound, "api key 3f2a1b4c… does not exist");
}

#[test]
fn rotate_refuses_a_bad_grace_or_hash() {
    given([created()])
        .when(rotate_with_grace(-1))
        .then_error(RefusalKind::Invalid, "grace must not be negative");
    given([created()])
        .when(rotate_with_grace(MAX_ROTATION_GRACE.num_seconds() + 1))
        .then_error(
            RefusalKind::Invalid,
            "grace is 604801 s; the limit is 604800 s (7 days)",
        );
    given([created()])
        .when(rotate_with_grace(MAX_ROTATION_GRACE.num_seconds()))
        .then_expect_any();
    for (hash, message) in [
        (key_hash(), "key_hash is the current secret's"),
        (new_hash().to_uppercase(), "key_hash must be 64 lowercase"),
        (
            generate_secret(key_id(), [8; 32]),
            "key_hash must be 64 lowercase",
        ),
    ] {
        given([created()])
            .when(ApiKeyCommand::Rotate(RotateApiKey {
                key_id: key_id(),
                key_hash: hash,
                grace: chrono::TimeDelta::zero(),
                rotated_at: at(100),
                rotated_by: None,
            }))
            .then_error(RefusalKind::Invalid, message);
    }
}

// ---- apply ---------------------------------------------------------------------------

#[test]
fn apply_leaves_the_state_alone_for_events_that_do_not_fit() {
    assert_eq!(apply(None, &revoked()), None);
    let active = fold(&[created()]);
    assert_eq!(apply(active.clone(), &created()), active);
    assert_eq!(apply(None, &rotated()), None);
    let done = fold(&[created(), revoked()]);
    assert_eq!(apply(done.clone(), &rotated()), done);
    let later = ApiKeyEvent::Revoked(ApiKeyRevoked {
        reason: Some("again".into()),
        revoked_at: at(99),
        revoked_by: None,
    });
    assert_eq!(apply(done.clone(), &later), done);
}

// ---- the stored form -------------------------------------------------------------------

fn recorded(new_event: crate::NewEvent) -> RecordedEvent {
    testing::recorded(new_event, &key_id().stream_id(), at(1))
}

#[test]
fn every_event_round_trips_through_serde_and_the_envelope() {
    testing::assert_round_trips(
        [created(), revoked(), rotated()],
        &key_id().stream_id(),
        at(1),
    );
    assert_eq!(
        ApiKeyEvent::EVENT_TYPES,
        [
            created().event_type(),
            revoked().event_type(),
            rotated().event_type()
        ]
    );
}

#[test]
fn the_stored_shape_is_stable() {
    testing::assert_stored_as(
        &created(),
        "ApiKeyCreated",
        json!({
            "key_id": "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8",
            "name": "ci deploys",
            "scopes": ["tasks:write", "tasks:read"],
            "key_hash": key_hash(),
            "created_at": "2023-11-14T22:13:20Z",
            "created_by": "admin-key",
            "access": "all_tenants",
            "expires_at": null,
            "rate_limit": null,
        }),
    );
    testing::assert_stored_as(
        &revoked(),
        "ApiKeyRevoked",
        json!({
            "reason": "leaked in a build log",
            "revoked_at": "2023-11-14T22:14:20Z",
            "revoked_by": "admin-key",
        }),
    );
    testing::assert_stored_as(
        &rotated(),
        "ApiKeyRotated",
        json!({
            "key_hash": new_hash(),
            "previous_valid_until": "2023-11-14T22:25:00Z",
            "rotated_at": "2023-11-14T22:15:00Z",
            "rotated_by": "admin-key",
        }),
    );
}

#[test]
fn from_recorded_reads_missing_optional_fields_as_none() {
    let mut stored = recorded(revoked().to_new_event(Uuid::nil(), Metadata::default()));
    stored.data = json!({"revoked_at": "2023-11-14T22:14:20Z", "added_later": true});
    let ApiKeyEvent::Revoked(event) = ApiKeyEvent::from_recorded(&stored).unwrap() else {
        panic!("not an ApiKeyRevoked");
    };
    assert_eq!(event.reason, None);
    assert_eq!(event.revoked_by, None);
}

#[test]
fn from_recorded_refuses_what_is_not_an_api_key_event() {
    let good = recorded(created().to_new_event(Uuid::nil(), Metadata::default()));

    let error = testing::assert_refuses_other_shapes::<ApiKeyEvent>(&good, "TaskSubmitted");
    assert_eq!(
        error.to_string(),
        r#"event at global position 41 has type "TaskSubmitted", which is not an api key event"#
    );

    let mut bad_scope = good;
    bad_scope.data["scopes"] = json!(["tasks:write", "everything"]);
    let error = ApiKeyEvent::from_recorded(&bad_scope).unwrap_err();
    assert!(matches!(error, DecodeError::Malformed { .. }), "{error:?}");
    assert!(error.to_string().contains("everything"), "{error}");
}

// ---- scopes ---------------------------------------------------------------------------

#[test]
fn scopes_have_stable_names_both_ways() {
    let names = [
        "tasks:write",
        "tasks:read",
        "devices:write",
        "devices:read",
        "audit:read",
        "ledger:write",
        "webhooks:write",
        "webhooks:read",
        "admin",
    ];
    for (scope, name) in Scope::ALL.into_iter().zip(names) {
        assert_eq!(scope.as_str(), name);
        assert_eq!(scope.to_string(), name);
        assert_eq!(name.parse::<Scope>(), Ok(scope));
        assert_eq!(serde_json::to_value(scope).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<Scope>(json!(name)).unwrap(), scope);
    }
}

#[test]
fn an_unknown_scope_is_refused_with_the_valid_ones() {
    for name in ["tasks", "Tasks:Write", " admin", "", "tasks:delete"] {
        let error = name.parse::<Scope>().unwrap_err();
        assert_eq!(error.name, name);
        let message = error.to_string();
        assert!(message.contains(&format!("{name:?}")), "{message}");
        for scope in Scope::ALL {
            assert!(message.contains(scope.as_str()), "{message}");
        }
    }
    assert_eq!(
        "everything".parse::<Scope>().unwrap_err().to_string(),
        "unknown scope \"everything\"; valid scopes are tasks:write, tasks:read, \
         devices:write, devices:read, audit:read, ledger:write, webhooks:write, \
         webhooks:read, admin"
    );
    assert!(serde_json::from_value::<Scope>(json!("everything")).is_err());
}

// ---- secrets -------------------------------------------------------------------------

#[test]
fn secrets_are_the_prefix_the_key_id_and_base64url_of_the_random_bytes() {
    let counting: [u8; 32] = std::array::from_fn(|index| u8::try_from(index).unwrap());
    let id = "3f2a1b4c5d6e4f708192a3b4c5d6e7f8";
    // Known vectors (Python: base64.urlsafe_b64encode(bytes).rstrip(b"=")).
    let vectors = [
        (counting, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
        ([0; 32], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ([0xff; 32], "__________________________________________8"),
        ([0xfb; 32], "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s"),
    ];
    for (random, encoded) in vectors {
        let secret = generate_secret(key_id(), random);
        assert_eq!(secret, format!("tlk_{id}_{encoded}"));
        assert_eq!(secret.len(), SECRET_LENGTH);
        assert_eq!(key_id_of_secret(&secret), Some(key_id()));
    }
    assert!(generate_secret(key_id(), counting).starts_with(SECRET_PREFIX));
    assert_ne!(
        generate_secret(key_id(), [1; 32]),
        generate_secret(key_id(), [2; 32])
    );
}

#[test]
fn only_a_well_formed_secret_names_a_key_id() {
    let good = generate_secret(key_id(), [0xfb; 32]);
    let legacy = "tlk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    assert_eq!(legacy.len(), LEGACY_SECRET_LENGTH);
    let uppercase_id = good.replacen("3f2a1b4c", "3F2A1B4C", 1);
    let no_separator = good.replacen("e7f8_", "e7f8-", 1);
    let bad_random = format!("{}!", &good[..good.len() - 1]);
    let other_prefix = good.replacen("tlk_", "tlx_", 1);
    for bad in [
        legacy,
        "",
        &good[..good.len() - 1],
        &format!("{good}A"),
        &uppercase_id,
        &no_separator,
        &bad_random,
        &other_prefix,
    ] {
        assert_eq!(key_id_of_secret(bad), None, "{bad:?}");
    }
}

#[test]
fn a_secret_is_kept_only_as_its_sha256() {
    // Known vectors (FIPS 180-2 and Python's hashlib).
    assert_eq!(
        hash_secret(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hash_secret("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let counting: [u8; 32] = std::array::from_fn(|index| u8::try_from(index).unwrap());
    assert_eq!(
        hash_secret("tlk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
        "dc56f2eeecd10f4322ac1c65dcdf7c9b0d07f68130e94f313ab42cc3d538356e"
    );
    // A generated secret's hash is what CreateApiKey accepts.
    let mut command = create_api_key();
    command.key_hash = hash_secret(&generate_secret(key_id(), counting));
    given([])
        .when(ApiKeyCommand::Create(command))
        .then_expect_any();
}

// ---- ids, errors ------------------------------------------------------------------------

#[test]
fn key_ids_name_their_streams() {
    let id = key_id();
    assert_eq!(id.to_string(), "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8");
    assert_eq!(
        id.stream_id().as_str(),
        "apikey-3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8"
    );
    assert!(id.stream_id().as_str().starts_with(ApiKeyId::STREAM_PREFIX));
    assert_eq!(id.short(), FIXED_ID_SHORT);
    assert_eq!(ApiKeyId::from_stream_id(id.stream_id().as_str()), Some(id));
    assert_eq!(
        ApiKeyId::from_stream_id("task-3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8"),
        None
    );
    assert_eq!(ApiKeyId::from_stream_id("apikey-not-a-uuid"), None);
    assert_eq!(serde_json::to_value(id).unwrap(), json!(id.to_string()));
    assert_eq!(ApiKeyId::from(FIXED_ID), id);
}

#[test]
fn errors_name_the_key_and_have_a_kind_name() {
    let error = given([])
        .when(revoke())
        .then_error(RefusalKind::NotFound, "");
    testing::assert_not_found_names(&error, &key_id().short());
}
