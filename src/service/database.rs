//! Getting to a usable database: create it if it is missing, apply the
//! migrations, open the event store.

use anyhow::Context;
use secrecy::ExposeSecret;
use taskledger_events::migrate;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::config::settings::Settings;

/// Connects to the configured database, creating it first when the server
/// says it does not exist, and applies pending migrations. Returns the
/// migrations applied.
///
/// # Errors
/// When the server cannot be reached, the database cannot be created, or a
/// migration fails; the message names the database and what to do.
pub async fn prepare(settings: &Settings) -> anyhow::Result<Vec<i64>> {
    let config = parse_url(settings.database_url.expose_secret())?;
    let mut client = match connect(&config).await {
        Ok(client) => client,
        Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            if !settings.create_database {
                return Err(missing(&config));
            }
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

/// Checks that the configured database exists and answers, for commands
/// that only read or change an existing installation.
///
/// # Errors
/// When it does not exist (saying how to point at the right one) or cannot
/// be reached.
pub async fn require_existing(settings: &Settings) -> anyhow::Result<()> {
    let config = parse_url(settings.database_url.expose_secret())?;
    match connect(&config).await {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            Err(missing(&config))
        }
        Err(error) => Err(error).with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {} (is it running? scripts/services.sh starts it)",
                describe(&config)
            )
        }),
    }
}

/// The refusal of a missing database, naming it and the way out.
fn missing(config: &tokio_postgres::Config) -> anyhow::Error {
    anyhow::anyhow!(
        "the database {} does not exist. Set DATABASE_URL (or --database-url) to the one \
         the service uses, or pass --create-database to create this one",
        describe(config)
    )
}

/// `host:port/dbname` of a URL for messages (never the password), or the
/// parse error.
pub fn describe_url(url: &str) -> String {
    parse_url(url).map_or_else(|error| error.to_string(), |config| describe(&config))
}

/// This installation's id: the one recorded in the database, or a new one
/// recorded now (by the first `serve`; concurrent first starts agree).
///
/// # Errors
/// When the database cannot be read or written.
pub async fn installation_id(store: &PgEventStore) -> anyhow::Result<uuid::Uuid> {
    let client = store.pool().get().await?;
    client
        .execute(
            "INSERT INTO installation (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&uuid::Uuid::new_v4()],
        )
        .await
        .context("recording this installation's id")?;
    let row = client
        .query_one("SELECT id FROM installation", &[])
        .await
        .context("reading this installation's id")?;
    Ok(row.get(0))
}

/// Opens the event store on the configured database (which [`prepare`] has
/// made ready).
///
/// # Errors
/// When the URL does not parse.
pub fn open_store(settings: &Settings) -> anyhow::Result<PgEventStore> {
    let options = StoreOptions {
        pool_size: settings.db_pool_size,
        pool_wait: std::time::Duration::from_millis(settings.db_pool_wait_ms.max(1)),
        ..StoreOptions::default()
    };
    PgEventStore::connect(settings.database_url.expose_secret(), options)
        .context("opening the event store")
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
