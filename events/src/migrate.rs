//! Schema migrations for every table taskledger owns, applied in order, once,
//! under a session advisory lock so that several processes starting together
//! do not race. The SQL lives in the repository's `migrations/` folder.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::error::StoreError;

/// One migration: a number, a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in ascending order; never reused.
    pub version: i64,
    /// A short name, for logs.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../../migrations/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "projector_checkpoints",
        sql: include_str!("../../migrations/0002_projector_checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "task_read_models",
        sql: include_str!("../../migrations/0003_task_read_models.sql"),
    },
    Migration {
        version: 4,
        name: "api_keys",
        sql: include_str!("../../migrations/0004_api_keys.sql"),
    },
    Migration {
        version: 5,
        name: "relay_checkpoints",
        sql: include_str!("../../migrations/0005_relay_checkpoints.sql"),
    },
    Migration {
        version: 6,
        name: "attempt_leases",
        sql: include_str!("../../migrations/0006_attempt_leases.sql"),
    },
    Migration {
        version: 7,
        name: "device_read_models",
        sql: include_str!("../../migrations/0007_device_read_models.sql"),
    },
    Migration {
        version: 8,
        name: "ledger_status",
        sql: include_str!("../../migrations/0008_ledger_status.sql"),
    },
    Migration {
        version: 9,
        name: "projection_operations",
        sql: include_str!("../../migrations/0009_projection_operations.sql"),
    },
    Migration {
        version: 10,
        name: "installation",
        sql: include_str!("../../migrations/0010_installation.sql"),
    },
    Migration {
        version: 11,
        name: "task_inputs_and_failed_logs",
        sql: include_str!("../../migrations/0011_task_inputs_and_failed_logs.sql"),
    },
    Migration {
        version: 12,
        name: "api_key_access",
        sql: include_str!("../../migrations/0012_api_key_access.sql"),
    },
    Migration {
        version: 13,
        name: "tenants",
        // One file per projector's tables, so each projector's schema
        // names only its own.
        sql: concat!(
            include_str!("../../migrations/0013_task_tenants.sql"),
            include_str!("../../migrations/0013_device_tenants.sql")
        ),
    },
    Migration {
        version: 14,
        name: "api_key_rotation",
        sql: include_str!("../../migrations/0014_api_key_rotation.sql"),
    },
    Migration {
        version: 15,
        name: "blob_owners",
        sql: include_str!("../../migrations/0015_blob_owners.sql"),
    },
    Migration {
        version: 16,
        name: "device_assignment_index",
        sql: include_str!("../../migrations/0016_device_assignment_index.sql"),
    },
    Migration {
        version: 17,
        name: "task_retry_due",
        sql: include_str!("../../migrations/0017_task_retry_due.sql"),
    },
    Migration {
        version: 18,
        name: "task_executor_jobs",
        sql: include_str!("../../migrations/0018_task_executor_jobs.sql"),
    },
    Migration {
        version: 19,
        name: "attempt_lease_kinds",
        sql: include_str!("../../migrations/0019_attempt_lease_kinds.sql"),
    },
    Migration {
        version: 21,
        name: "webhooks",
        sql: include_str!("../../migrations/0021_webhooks.sql"),
    },
    Migration {
        version: 22,
        name: "task_graphs",
        // The `tasks` projector's columns apart, so its schema names only
        // its own tables.
        sql: concat!(
            include_str!("../../migrations/0022_task_graphs.sql"),
            include_str!("../../migrations/0022_graph_follower.sql")
        ),
    },
    Migration {
        version: 23,
        name: "aggregate_snapshots",
        sql: include_str!("../../migrations/0023_aggregate_snapshots.sql"),
    },
    Migration {
        version: 24,
        name: "ledger_anchors",
        sql: include_str!("../../migrations/0024_ledger_anchors.sql"),
    },
    Migration {
        version: 25,
        name: "plans",
        sql: include_str!("../../migrations/0025_plans.sql"),
    },
];

/// Held while migrating, so concurrent start-ups apply each migration once.
const MIGRATION_LOCK_KEY: i64 = 0x746c_6d69_6772_6174; // "tlmigrat"

impl Migration {
    fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// A fingerprint of all migrations: changes whenever one is added or edited.
/// Test helpers name their template database after it.
pub fn fingerprint() -> String {
    let mut hasher = Sha256::new();
    for migration in MIGRATIONS {
        hasher.update(migration.version.to_be_bytes());
        hasher.update(migration.sql.as_bytes());
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// Applies every migration the database does not have yet and returns the
/// versions it applied (empty when the schema was current).
///
/// # Errors
/// [`StoreError::Migration`] when a migration fails or an applied one was
/// edited afterwards (its checksum no longer matches); [`StoreError::Database`]
/// when the database cannot be reached.
pub async fn migrate(client: &mut Client) -> Result<Vec<i64>, StoreError> {
    migrate_up_to(client, i64::MAX).await
}

/// [`migrate`], but only the migrations up to and including version
/// `last`: a database as an earlier release left it, for upgrade tests.
///
/// # Errors
/// As [`migrate`].
pub async fn migrate_up_to(client: &mut Client, last: i64) -> Result<Vec<i64>, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(StoreError::db("taking the migration lock"))?;
    let result = apply_pending(client, last).await;
    // Released explicitly; the lock would also go with the session.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(StoreError::db("releasing the migration lock"));
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_pending(client: &mut Client, last: i64) -> Result<Vec<i64>, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    bigint      PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(StoreError::db("creating schema_migrations"))?;
    let rows = client
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await
        .map_err(StoreError::db("reading schema_migrations"))?;
    let applied: std::collections::HashMap<i64, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let mut newly_applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .take_while(|migration| migration.version <= last)
    {
        if let Some(checksum) = applied.get(&migration.version) {
            if *checksum != migration.checksum() {
                return Err(StoreError::Migration {
                    version: migration.version,
                    name: migration.name,
                    reason: "it was changed after it had been applied; add a new migration instead"
                        .into(),
                });
            }
            continue;
        }
        let failed = |error: tokio_postgres::Error| StoreError::Migration {
            version: migration.version,
            name: migration.name,
            reason: error
                .as_db_error()
                .map_or_else(|| error.to_string(), |db| db.message().to_owned()),
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        newly_applied.push(migration.version);
    }
    Ok(newly_applied)
}
