//! Planner statistics for the read models where the server's autovacuum
//! does not keep them.
//!
//! The API's listings filter on two or three columns at once (`kind` and
//! `status`, `tenant` and `status`, …) and read a page in index order. With
//! statistics, PostgreSQL walks the ordering index and stops after a page;
//! with none (a table that grew from nothing and was never analyzed) it
//! guesses that each condition keeps 0.5% of the rows, ANDs two bitmaps and
//! sorts every match: on a million tasks `kind=…&status=queued` took 0.8 s
//! against 0.4 ms once analyzed (`bench growth --sections lists`).
//!
//! Autovacuum analyzes a table once `autovacuum_analyze_threshold +
//! autovacuum_analyze_scale_factor × rows` of them changed. Where it is
//! off (for the server, or for a table by its storage options) this keeper
//! applies the same rule, with the server's own two settings, to the
//! projectors' tables, every [`INTERVAL`]; where it is on, the keeper does
//! nothing. It never vacuums (dead rows are the operator's to reclaim, and
//! [`warn_if_autovacuum_is_off`] says so once at start).

use std::future::Future;
use std::time::Duration;

use taskledger_events::postgres::PgEventStore;

/// Why a look at the tables or an analyze failed.
#[derive(Debug, thiserror::Error)]
pub enum StatisticsError {
    /// No connection came from the pool.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database refused or failed a statement.
    #[error("{0}")]
    Database(#[from] tokio_postgres::Error),
}

/// How often the keeper looks at the tables' change counts.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Tables (of `tables`) that autovacuum does not analyze and that changed
/// enough since their last analyze for autovacuum's own rule to analyze
/// them, with their change counts.
const DUE: &str = "
    SELECT s.relname::text, s.n_mod_since_analyze
    FROM unnest($1::text[]) AS wanted(name)
    JOIN pg_stat_user_tables s ON s.relid = to_regclass(wanted.name)
    JOIN pg_class c ON c.oid = s.relid
    WHERE (current_setting('autovacuum') = 'off'
           OR coalesce(c.reloptions, '{}') @> '{autovacuum_enabled=false}')
      AND s.n_mod_since_analyze >
          current_setting('autovacuum_analyze_threshold')::float8
          + current_setting('autovacuum_analyze_scale_factor')::float8
            * greatest(s.n_live_tup, c.reltuples, 0)";

/// Analyzes those of `tables` that are due (see the module) every
/// [`INTERVAL`] until `stop` resolves. A failed look or analyze is logged
/// and tried again next time: statistics are a hint, and the process must
/// not stop for them.
pub async fn keep(store: PgEventStore, tables: Vec<&'static str>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    if let Err(error) = warn_if_autovacuum_is_off(&store).await {
        tracing::warn!(%error, "reading the server's autovacuum setting failed");
    }
    loop {
        if let Err(error) = analyze_due(&store, &tables).await {
            tracing::warn!(%error, "keeping the read models' planner statistics failed; trying again");
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// Analyzes each of `tables` that is due now; the names analyzed.
///
/// # Errors
/// The database failed.
pub async fn analyze_due(
    store: &PgEventStore,
    tables: &[&'static str],
) -> Result<Vec<String>, StatisticsError> {
    let client = store.pool().get().await?;
    let due = client.query(DUE, &[&tables]).await?;
    let mut analyzed = Vec::with_capacity(due.len());
    for row in due {
        let table: String = row.get(0);
        let changed: i64 = row.get(1);
        // Only names of `tables` (the projectors' own) reach here.
        client
            .batch_execute(&format!("ANALYZE \"{}\"", table.replace('"', "\"\"")))
            .await?;
        tracing::info!(
            table,
            changed,
            "analyzed a read model autovacuum does not analyze"
        );
        analyzed.push(table);
    }
    Ok(analyzed)
}

/// Warns once when the server's autovacuum is off: this process keeps the
/// read models' statistics ([`keep`]), but nothing reclaims dead rows.
///
/// # Errors
/// The database failed.
async fn warn_if_autovacuum_is_off(store: &PgEventStore) -> Result<(), StatisticsError> {
    let client = store.pool().get().await?;
    let setting: String = client
        .query_one("SELECT current_setting('autovacuum')", &[])
        .await?
        .get(0);
    if setting == "off" {
        tracing::warn!(
            "autovacuum is OFF on this PostgreSQL server: taskledger analyzes its read models \
             itself as they grow, but dead rows are not reclaimed; turn autovacuum on \
             (or VACUUM regularly)"
        );
    }
    Ok(())
}
