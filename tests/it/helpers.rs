//! Starting the service on a fresh database for a test.

use std::net::SocketAddr;

use taskledger::settings::Settings;
use taskledger::shutdown::{self, ShutdownTrigger};
use taskledger::startup::Application;
use taskledger_events::testing::TestDatabase;
use tokio::task::JoinHandle;

/// A running service and its database.
pub(crate) struct TestApp {
    pub(crate) address: SocketAddr,
    pub(crate) database: TestDatabase,
    pub(crate) stop: ShutdownTrigger,
    pub(crate) server: JoinHandle<anyhow::Result<()>>,
    pub(crate) http: reqwest::Client,
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub(crate) async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let database = TestDatabase::create().await;
        let mut settings = Settings::for_database(database.url.clone());
        adjust(&mut settings);
        let (stop, signal) = shutdown::channel();
        let application = Application::build(&settings, signal)
            .await
            .expect("building the app");
        let address = application.local_addr().unwrap();
        let server = tokio::spawn(application.run_until_stopped());
        Self {
            address,
            database,
            stop,
            server,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops the server (it must stop cleanly) and drops the database.
    pub(crate) async fn finish(self) {
        self.stop.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.server)
            .await
            .expect("the server did not stop within 10 s of the shutdown signal")
            .expect("the server task panicked")
            .expect("the server failed");
        self.database.drop_database().await;
    }
}
