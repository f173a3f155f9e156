//! Test helpers (feature `testing`, and this crate's own tests): the
//! given/when/then harness of every aggregate ([`given`], [`given_state`]),
//! the fixed values its tests start from ([`at`], [`FIXED_ID`]) and the
//! checks of its stored events ([`assert_round_trips`],
//! [`assert_refuses_other_shapes`]),
//! and a fresh, migrated PostgreSQL database per test ([`TestDatabase`]),
//! copied from a template that is migrated once per set of migrations;
//! [`own_pool`] shows a store's own connections and
//! [`listening_connections`] counts its listeners.
//!
//! The server is taken from `TEST_DATABASE_URL` (any database on the server;
//! default `postgres://postgres@127.0.0.1:5432/postgres`).

use tokio_postgres::NoTls;

mod fixed;
mod given;
mod histories;
mod stored;
pub use fixed::{at, FIXED_ID, FIXED_ID_SHORT};
pub use given::{assert_not_found_names, given, given_state, Given, Then};
pub use histories::{DeviceHistory, LedgerHistory};
pub use stored::{assert_refuses_other_shapes, assert_round_trips, assert_stored_as, recorded};

use crate::migrate;
use crate::postgres::PgEventStore;

/// The pool behind `store`'s own statements, which
/// [`PgEventStore::pool`] never hands out: for tests of what those
/// connections are set up with.
pub fn own_pool(store: &PgEventStore) -> &deadpool_postgres::Pool {
    store.own_pool()
}

/// How many backends of the database `client` is connected to are
/// listening (`LISTEN`): a store has one, shared by all its subscriptions.
pub async fn listening_connections(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
            &[],
        )
        .await
        .expect("counting the listening connections")
        .get(0)
}

/// The server tests use when `TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const TEMPLATE_LOCK_KEY: i64 = 0x746c_7465_6d70_6c74; // "tltemplt"

/// A database that exists for one test. Call [`TestDatabase::drop_database`]
/// at the end of the test; `scripts/test.sh` removes any a failed test left.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name (`tl_test_…`).
    pub name: String,
    /// A URL for it.
    pub url: String,
    server: tokio_postgres::Config,
}

fn server_config() -> tokio_postgres::Config {
    let url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_SERVER.to_owned());
    url.parse().unwrap_or_else(|error| {
        panic!("TEST_DATABASE_URL {url:?} is not a valid PostgreSQL URL: {error}")
    })
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|error| {
        panic!(
            "cannot reach PostgreSQL for tests at {:?}:{:?} ({error}); \
             start it with scripts/services.sh or set TEST_DATABASE_URL",
            config.get_hosts(),
            config.get_ports()
        )
    });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl TestDatabase {
    /// Creates a new database with every migration applied.
    ///
    /// # Panics
    /// When PostgreSQL cannot be reached or the database cannot be created;
    /// the message says how to start the server.
    pub async fn create() -> Self {
        let server = server_config();
        let admin = connect(&server).await;
        let template = format!("tl_template_{}", migrate::fingerprint());
        ensure_template(&server, &admin, &template).await;
        Self::copy_of(server, &admin, &template).await
    }

    /// Creates a new, empty database: no migration applied (for upgrade
    /// tests, which migrate it as an earlier release did with
    /// [`migrate::migrate_up_to`]).
    ///
    /// # Panics
    /// As [`TestDatabase::create`].
    pub async fn create_empty() -> Self {
        let server = server_config();
        let admin = connect(&server).await;
        Self::copy_of(server, &admin, "template0").await
    }

    /// A new database named `tl_test_<uuid>`, a copy of `template`.
    async fn copy_of(
        server: tokio_postgres::Config,
        admin: &tokio_postgres::Client,
        template: &str,
    ) -> Self {
        let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .unwrap_or_else(|error| panic!("creating test database {name}: {error}"));
        let mut config = server.clone();
        config.dbname(&name);
        Self {
            url: config_to_url(&config),
            name,
            server,
        }
    }

    /// A client connected to this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        let config: tokio_postgres::Config = self.url.parse().expect("test database URL");
        connect(&config).await
    }

    /// Drops the database, closing any connections still open to it.
    pub async fn drop_database(self) {
        let admin = connect(&self.server).await;
        if let Err(error) = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
        {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

async fn ensure_template(
    server: &tokio_postgres::Config,
    admin: &tokio_postgres::Client,
    template: &str,
) {
    if template_exists(admin, template).await {
        return;
    }
    // One test process builds it; the others wait on the lock and find it.
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_KEY])
        .await
        .expect("taking the template lock");
    if !template_exists(admin, template).await {
        // A template left half-made by an interrupted run is rebuilt.
        for statement in [
            format!("DROP DATABASE IF EXISTS {template} WITH (FORCE)"),
            format!("CREATE DATABASE {template}"),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
        let mut config = server.clone();
        config.dbname(template);
        {
            let mut client = connect(&config).await;
            migrate::migrate(&mut client)
                .await
                .unwrap_or_else(|error| panic!("migrating the template database: {error}"));
        }
        // The template must have no connections when it is copied.
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}';
                 ALTER DATABASE {template} IS_TEMPLATE true"
            ))
            .await
            .expect("marking the template database");
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK_KEY])
        .await
        .expect("releasing the template lock");
}

async fn template_exists(admin: &tokio_postgres::Client, template: &str) -> bool {
    admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate",
            &[&template],
        )
        .await
        .expect("looking up the template database")
        .is_some()
}

/// A `postgres://` URL for a parsed configuration (host, port, user,
/// password, database).
pub fn config_to_url(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|password| format!(":{}", String::from_utf8_lossy(password)))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{dbname}")
}
