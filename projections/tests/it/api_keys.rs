//! The `api_keys` projector: rows follow keys being created and revoked,
//! only hashes reach the table, a rebuild from scratch gives the same rows,
//! rotation moves the replaced hash aside, and a revocation of a key it has
//! no row for stops it (never skipped).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use taskledger_events::apikey::{
    generate_secret, hash_secret, ApiKeyCommand, ApiKeyEvent, ApiKeyId, ApiKeyRevoked, ApiKeys,
    CreateApiKey, RevokeApiKey, RotateApiKey, Scope,
};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::Access;
use taskledger_events::{EventStore, ExpectedVersion, Metadata};
use taskledger_projections::api_keys::ApiKeysProjector;
use taskledger_projections::ProjectorRuntime;

use crate::helpers::{
    at, checkpoint, column, database, quick_retries, record, reset, wait_until, Running,
};

/// Decides `command` on the key's stream as it is stored and appends the
/// result at the version read, as the service does.
async fn handle(store: &PgEventStore, command: ApiKeyCommand) {
    let stream_id = command.key_id().stream_id();
    taskledger_events::command::execute::<ApiKeys>(
        store,
        &stream_id,
        command,
        uuid::Uuid::now_v7(),
        Metadata::default(),
    )
    .await
    .unwrap();
}

/// Creates a key named `name` with `scopes` (its secret made from
/// `random`) through [`handle`]: its id and secret.
async fn create(
    store: &PgEventStore,
    name: &str,
    random: [u8; 32],
    scopes: &[Scope],
) -> (ApiKeyId, String) {
    let key_id = ApiKeyId(uuid::Uuid::new_v4());
    let secret = generate_secret(key_id, random);
    let create = CreateApiKey {
        key_id,
        name: name.into(),
        scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
        key_hash: hash_secret(&secret),
        created_at: at(0),
        created_by: Some("operator".into()),
        access: Access::AllTenants,
        expires_at: None,
        rate_limit: None,
    };
    handle(store, ApiKeyCommand::Create(create)).await;
    (key_id, secret)
}

async fn rows(client: &tokio_postgres::Client) -> Vec<String> {
    let sql = "SELECT row_to_json(k)::text FROM (SELECT * FROM api_keys ORDER BY key_id) k";
    column(client, sql).await
}

fn runtime(store: &PgEventStore) -> ProjectorRuntime<ApiKeysProjector> {
    ProjectorRuntime::new(store.clone(), ApiKeysProjector, quick_retries())
}

/// Runs the projector until its checkpoint is `head`, then stops it.
async fn run_until(store: &PgEventStore, client: &tokio_postgres::Client, head: u64) {
    crate::helpers::run_until(runtime(store), client, head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rows_follow_creation_and_revocation_and_a_rebuild_gives_the_same_rows() {
    let (store, database, client) = database().await;

    let ci_scopes = [Scope::TasksRead, Scope::TasksWrite];
    let (kept, kept_secret) = create(&store, "ci deploys", [1; 32], &ci_scopes).await;
    let (gone, gone_secret) = create(&store, "laptop", [2; 32], &[Scope::Admin]).await;
    handle(
        &store,
        ApiKeyCommand::Revoke(RevokeApiKey {
            key_id: gone,
            reason: Some("laptop lost".into()),
            revoked_at: at(9),
            revoked_by: Some("operator".into()),
        }),
    )
    .await;
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head).await;

    // A presented secret is found by its hash; the secret itself is nowhere.
    let by_secret = |secret: String| {
        let client = &client;
        async move {
            client
                .query_opt(
                    "SELECT key_id, name, scopes, revoked_at, revoked_reason, revoked_by,
                            stream_version
                     FROM api_keys WHERE key_hash = $1",
                    &[&hash_secret(&secret)],
                )
                .await
                .unwrap()
                .map(|row| {
                    (
                        ApiKeyId(row.get(0)),
                        row.get::<_, String>(1),
                        row.get::<_, Vec<String>>(2),
                        row.get::<_, Option<chrono::DateTime<Utc>>>(3),
                        row.get::<_, Option<String>>(4),
                        row.get::<_, Option<String>>(5),
                        row.get::<_, i64>(6),
                    )
                })
        }
    };
    assert_eq!(
        by_secret(kept_secret.clone()).await,
        Some((
            kept,
            "ci deploys".into(),
            vec!["tasks:write".into(), "tasks:read".into()],
            None,
            None,
            None,
            1
        ))
    );
    assert_eq!(
        by_secret(gone_secret.clone()).await,
        Some((
            gone,
            "laptop".into(),
            vec!["admin".into()],
            Some(at(9)),
            Some("laptop lost".into()),
            Some("operator".into()),
            2
        ))
    );
    assert_eq!(by_secret(generate_secret(kept, [3; 32])).await, None);
    let live = rows(&client).await;
    assert_eq!(live.len(), 2);
    for row in &live {
        assert!(
            !row.contains(&kept_secret) && !row.contains(&gone_secret),
            "a secret reached the table: {row}"
        );
    }

    // Rebuilt from scratch, the projection is the same, row for row.
    reset(&client, "api_keys", "api_keys").await;
    run_until(&store, &client, head).await;
    assert_eq!(rows(&client).await, live);
    drop(client);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_of_a_key_without_a_row_stops_the_projector() {
    let (store, database, client) = database().await;

    // Written by other code than decide: a revocation with no creation.
    let orphan = ApiKeyId(uuid::Uuid::new_v4());
    let revoked = ApiKeyEvent::Revoked(ApiKeyRevoked {
        reason: None,
        revoked_at: at(1),
        revoked_by: None,
    });
    record(
        &store,
        &orphan.stream_id(),
        ExpectedVersion::NoStream,
        &[revoked],
    )
    .await;

    let running = Running::start(runtime(&store));
    wait_until(
        "the api_keys projector to report the orphan revocation",
        Duration::from_secs(20),
        async || matches!(checkpoint(&client, "api_keys").await, Some((_, _, Some(_)))),
    )
    .await;
    let (position, _, failure) = checkpoint(&client, "api_keys").await.unwrap();
    let failure = failure.unwrap();
    running.stop().await;
    assert_eq!(position, 0, "the event was skipped");
    assert!(
        failure.contains(&format!(
            "no api key row for {orphan} to apply ApiKeyRevoked"
        )),
        "{failure}"
    );
    assert!(rows(&client).await.is_empty());
    drop(client);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_makes_the_new_hash_current_and_keeps_the_replaced_one_with_its_deadline() {
    let (store, database, client) = database().await;
    let (key, old_secret) = create(&store, "rolled", [4; 32], &[Scope::TasksRead]).await;
    let new_secret = generate_secret(key, [5; 32]);
    handle(
        &store,
        ApiKeyCommand::Rotate(RotateApiKey {
            key_id: key,
            key_hash: hash_secret(&new_secret),
            grace: chrono::TimeDelta::seconds(30),
            rotated_at: at(10),
            rotated_by: Some("operator".into()),
        }),
    )
    .await;
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head).await;
    let row = client
        .query_one(
            "SELECT key_hash, previous_key_hash, previous_valid_until, rotated_at, stream_version
             FROM api_keys WHERE key_id = $1",
            &[&key.0],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), hash_secret(&new_secret));
    assert_eq!(
        row.get::<_, Option<String>>(1),
        Some(hash_secret(&old_secret))
    );
    assert_eq!(row.get::<_, Option<chrono::DateTime<Utc>>>(2), Some(at(40)));
    assert_eq!(row.get::<_, Option<chrono::DateTime<Utc>>>(3), Some(at(10)));
    assert_eq!(row.get::<_, i64>(4), 2);
    drop(client);
    database.drop_database().await;
}
