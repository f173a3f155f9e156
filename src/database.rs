//! Getting to a usable database: create it if it is missing, apply the
//! migrations, open the event store.

use anyhow::Context;
use taskledger_events::migrate;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::settings::Settings;

/// Connects to the configured database, creating it first when the server
/// says it does not exist, and applies pending migrations. Returns the
/// migrations applied.
///
/// # Errors
/// When the server cannot be reached, the database cannot be created, or a
/// migration fails; the message names the database and what to do.
pub async fn prepare(settings: &Settings) -> anyhow::Result<Vec<i64>> {
    let config = parse_url(&settings.database_url)?;
    let mut client = match connect(&config).await {
        Ok(client) => client,
        Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            create_database(&config).await?;
            connect(&config)
                .await
                .with_context(|| format!("connecting to the new database {}", describe(&config)))?
        }
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                "cannot connect to PostgreSQL at {} (is it running? scripts/services.sh starts it)",
                describe(&config)
            )
            })
        }
    };
    let applied = migrate::migrate(&mut client)
        .await
        .with_context(|| format!("migrating {}", describe(&config)))?;
    Ok(applied)
}

/// Opens the event store on the configured database (which [`prepare`] has
/// made ready).
///
/// # Errors
/// When the URL does not parse.
pub fn open_store(settings: &Settings) -> anyhow::Result<PgEventStore> {
    let options = StoreOptions {
        pool_size: settings.db_pool_size,
        ..StoreOptions::default()
    };
    PgEventStore::connect(&settings.database_url, options).context("opening the event store")
}

fn parse_url(url: &str) -> anyhow::Result<tokio_postgres::Config> {
    url.parse()
        .map_err(|error| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {error}"))
}

async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection closed");
        }
    });
    Ok(client)
}

async fn create_database(config: &tokio_postgres::Config) -> anyhow::Result<()> {
    let name = config
        .get_dbname()
        .context("DATABASE_URL names no database")?
        .to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance)
        .await
        .with_context(|| format!("connecting to the postgres database to create {name:?}"))?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // Another process created it at the same moment: fine.
        Err(error) if error.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating database {name:?}")),
    }
}

/// `host:port/dbname` for messages (never the password).
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("?"))
}
