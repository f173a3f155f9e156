//! `taskledger serve` as a child process in its own process group, for
//! tests that crash a part of the service for real: SIGKILL reaches the
//! whole group (a runner's attempts die with it), and a test that panics
//! leaves no process behind.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use taskledger::config::FileConfig;
use uuid::Uuid;

use crate::running::{amqp_url, delete_topology};
use crate::support::cli::{free_port, BINARY};
use crate::support::poll::eventually;

/// A running `taskledger serve`, killed with its group when dropped.
pub(crate) struct ServeProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ServeProcess {
    /// Starts `taskledger serve` with the environment `adjust` sets (it
    /// must set `TASKLEDGER_LISTEN` to `127.0.0.1:{port}`), standard error
    /// to `log`, and waits up to 30 s until its `/readyz` answers 200.
    ///
    /// # Panics
    /// When it exits or is not ready within 30 s (with its log).
    pub(crate) async fn start(
        name: &str,
        port: u16,
        log: PathBuf,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new(BINARY);
        command.arg("serve");
        adjust(&mut command);
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let process = std::cell::RefCell::new(Self {
            name: name.to_owned(),
            child,
            log,
        });
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/readyz");
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let ready = http.get(&url).send().await;
                if matches!(&ready, Ok(response) if response.status() == 200) {
                    return Ok(());
                }
                let mut process = process.borrow_mut();
                if let Some(status) = process.child.try_wait().unwrap() {
                    panic!(
                        "{name} exited with {status} before it was ready:\n{}",
                        std::fs::read_to_string(&process.log).unwrap_or_default()
                    );
                }
                Err(format!("{name} was not ready within 30 s"))
            },
        )
        .await;
        process.into_inner()
    }

    /// SIGKILL to its group: nothing of it cleans up.
    ///
    /// # Panics
    /// When it had already exited.
    pub(crate) fn kill(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "{} had already exited:\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL -- {group}");
        self.child.wait().unwrap();
    }

    /// SIGTERM to the process (it stops as on a deploy), unless it has
    /// exited already; waits for it.
    pub(crate) fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// `taskledger serve` processes on one broker prefix of their own, sharing
/// a directory: its `kinds.toml` configures them, and each logs to
/// `{worker id}.log` in it.
pub(crate) struct ServeProcesses {
    pub(crate) prefix: String,
    pub(crate) dir: PathBuf,
    lease_ttl_seconds: i64,
    processes: Vec<ServeProcess>,
}

impl ServeProcesses {
    /// A new prefix, and a new directory `{name}-{uuid}` in the temporary
    /// directory holding `kinds` as `kinds.toml`; no process yet. Their
    /// leases will last `lease_ttl_seconds`.
    pub(crate) fn prepare(name: &str, kinds: &str, lease_ttl_seconds: i64) -> Self {
        let prefix = format!("tl-test-{}", Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(format!("{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kinds.toml"), kinds).unwrap();
        Self {
            prefix,
            dir,
            lease_ttl_seconds,
            processes: Vec::new(),
        }
    }

    /// Starts a process (`name` in failures) on the database at
    /// `database_url` with `roles`, `slots` runner slots, worker id
    /// `worker_id` and its files in `data_dir`, and waits until it is
    /// ready; its index.
    pub(crate) async fn start(
        &mut self,
        database_url: &str,
        name: &str,
        worker_id: &str,
        roles: &str,
        slots: usize,
        data_dir: PathBuf,
    ) -> usize {
        let port = free_port();
        let log = self.dir.join(format!("{worker_id}.log"));
        let process = ServeProcess::start(name, port, log, |command| {
            command
                .env("DATABASE_URL", database_url)
                .env("AMQP_URL", amqp_url())
                .env("TASKLEDGER_AMQP_PREFIX", &self.prefix)
                .env("TASKLEDGER_ROLES", roles)
                .env("TASKLEDGER_RUNNER_SLOTS", slots.to_string())
                .env("TASKLEDGER_WORKER_ID", worker_id)
                .env("TASKLEDGER_CONFIG", self.dir.join("kinds.toml"))
                .env("TASKLEDGER_DATA_DIR", data_dir)
                .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "TASKLEDGER_LEASE_TTL_SECONDS",
                    self.lease_ttl_seconds.to_string(),
                )
                .env("TASKLEDGER_LOG", "info");
        })
        .await;
        self.processes.push(process);
        self.processes.len() - 1
    }

    /// SIGKILL to process `index`'s group: nothing of it cleans up.
    pub(crate) fn kill(&mut self, index: usize) {
        self.processes[index].kill();
    }

    /// SIGTERM to every process, waiting for each.
    pub(crate) fn stop_all(&mut self) {
        for process in &mut self.processes {
            process.stop();
        }
    }

    /// Deletes the broker's exchanges and queues of `config`'s kinds under
    /// the prefix, and the directory.
    pub(crate) async fn clean_up(&self, config: &FileConfig) {
        delete_topology(&self.prefix, config).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A test that panics leaves no process behind: SIGKILL to its group.
impl Drop for ServeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}
