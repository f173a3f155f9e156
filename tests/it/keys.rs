//! `taskledger keys`: the real binary against a real database.

use std::process::Output;

use taskledger_events::apikey::{hash_secret, key_id_of_secret, SECRET_LENGTH};
use taskledger_events::testing::TestDatabase;

use crate::support::cli::{stderr, stdout, taskledger};

/// `taskledger keys args…` against `database`.
fn keys(database: &TestDatabase, args: &[&str]) -> Output {
    taskledger(&database.url, &[&["keys"], args].concat())
}

/// `taskledger keys create --name name --scopes scopes --all-tenants`
/// against `database`.
fn create(database: &TestDatabase, name: &str, scopes: &str) -> Output {
    keys(
        database,
        &[
            "create",
            "--name",
            name,
            "--scopes",
            scopes,
            "--all-tenants",
        ],
    )
}

#[tokio::test]
async fn create_list_and_revoke_keys_storing_only_hashes() {
    let database = TestDatabase::create().await;
    let created = create(&database, "frontend-a", "tasks:write,tasks:read");
    assert!(created.status.success(), "{}", stderr(&created));
    let out = stdout(&created);
    let secret = out.lines().last().unwrap().to_owned();
    assert!(
        secret.starts_with("tlk_") && secret.len() == SECRET_LENGTH,
        "the key alone on the last line: {out:?}"
    );
    let key_id = out.split_whitespace().nth(3).unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&key_id).is_ok(), "{out}");
    assert_eq!(
        key_id_of_secret(&secret).map(|id| id.to_string()),
        Some(key_id.clone()),
        "the secret names its key"
    );

    let listed = keys(&database, &["list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let list = stdout(&listed);
    assert!(
        list.contains(&key_id)
            && list.contains("frontend-a")
            && list.contains("tasks:write,tasks:read"),
        "{list}"
    );
    assert!(list.contains("active") && !list.contains(&secret), "{list}");

    // Only the hash is stored, in the log and in the read model.
    let client = database.client().await;
    let row = client
        .query_one("SELECT key_hash FROM api_keys", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), hash_secret(&secret));
    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);

    let revoked = keys(&database, &["revoke", &key_id, "--reason", "rotated"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let list = stdout(&keys(&database, &["list"]));
    assert!(list.contains("revoked"), "{list}");
    let again = keys(&database, &["revoke", &key_id]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already revoked"),
        "{}",
        stderr(&again)
    );
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn a_key_names_its_tenant_and_expiry_in_the_list() {
    let database = TestDatabase::create().await;
    let created = keys(
        &database,
        &[
            "create",
            "--name",
            "acme-web",
            "--scopes",
            "tasks:read",
            "--tenant",
            "acme",
            "--expires-in",
            "30d",
            "--rate-limit",
            "5",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).contains("for tenant acme") && stdout(&created).contains("expiring"),
        "{}",
        stdout(&created)
    );
    let platform = create(&database, "ops", "admin");
    assert!(
        stdout(&platform).contains("for all tenants"),
        "{}",
        stdout(&platform)
    );
    let list = stdout(&keys(&database, &["list"]));
    let acme = list.lines().find(|line| line.contains("acme-web")).unwrap();
    assert!(
        acme.contains(" acme ") && acme.contains("active until"),
        "{list}"
    );
    let ops = list.lines().find(|line| line.contains("ops")).unwrap();
    assert!(ops.contains(" * "), "{list}");
    let client = database.client().await;
    let row = client
        .query_one(
            "SELECT tenant, rate_limit, expires_at > now() + interval '29 days'
             FROM api_keys WHERE name = 'acme-web'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("acme"));
    assert_eq!(row.get::<_, Option<i32>>(1), Some(5));
    assert!(row.get::<_, bool>(2));
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn bad_key_commands_fail_with_clear_messages_and_change_nothing() {
    let database = TestDatabase::create().await;
    let bad_scope = create(&database, "x", "tasks:write,tasks:delete");
    assert!(!bad_scope.status.success());
    assert!(
        stderr(&bad_scope).contains("unknown scope \"tasks:delete\""),
        "{}",
        stderr(&bad_scope)
    );
    assert!(
        stderr(&bad_scope).contains("tasks:read"),
        "lists the valid scopes: {}",
        stderr(&bad_scope)
    );
    let empty_name = create(&database, "", "admin");
    assert!(!empty_name.status.success());
    let base = ["create", "--name", "x", "--scopes", "tasks:read"];
    for (extra, says) in [
        (&[][..], "--tenant"),
        (
            &["--tenant", "acme", "--all-tenants"][..],
            "cannot be used with",
        ),
        (&["--tenant", "Acme Corp"][..], "lowercase letters"),
        (
            &["--all-tenants", "--expires-in", "soon"][..],
            "such as 30d",
        ),
        (&["--all-tenants", "--expires-in", "0s"][..], "such as 30d"),
        (&["--all-tenants", "--rate-limit", "0"][..], "--rate-limit"),
        (
            &["--all-tenants", "--rate-limit", "fast"][..],
            "--rate-limit",
        ),
    ] {
        let refused = keys(&database, &[&base[..], extra].concat());
        assert!(!refused.status.success(), "{extra:?}");
        assert!(
            stderr(&refused).contains(says),
            "{extra:?}: {}",
            stderr(&refused)
        );
    }
    let unknown = keys(&database, &["revoke", &uuid::Uuid::new_v4().to_string()]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("does not exist"),
        "{}",
        stderr(&unknown)
    );
    let client = database.client().await;
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "nothing was written");
    drop(client);
    database.drop_database().await;
}
