//! Celery, the baseline of `taskledger-bench tasks --celery`: a virtual
//! environment of its own with pinned Celery and a PostgreSQL driver
//! (installed with `pip` where missing), a worker module and a driver
//! script the benchmark writes beside it, one prefork worker (4 processes,
//! `acks_late`, RabbitMQ broker, SQLAlchemy result backend in a scratch
//! database) and one driver process per run, which submits, waits for every
//! result and prints what it measured as one JSON line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::process::{Child, Command};

/// What the virtual environment holds: its folder is named after it, so a
/// new pin makes a new environment.
const PINS: &[&str] = &[
    "celery==5.7.0",
    "sqlalchemy==2.1.9",
    "psycopg2-binary==2.9.13",
];

/// The worker module: one task, which runs `true` as the `local` kind does.
const WORKER: &str = r#"
import os
import subprocess

from celery import Celery

app = Celery("tlbench", broker=os.environ["TLBENCH_BROKER"], backend=os.environ["TLBENCH_BACKEND"])
app.conf.update(
    task_acks_late=True,
    task_default_queue=os.environ["TLBENCH_QUEUE"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="tlbench.noop")
def noop():
    subprocess.run(["true"], check=True)
"#;

/// The driver: `driver.py TASKS SUBMITTERS RATE` (RATE 0: as fast as the
/// submitters go) submits, then reads every result's `date_done` from the
/// backend's table and prints {tasks, failed, seconds, latencies_ms}:
/// seconds from the first submit to the last result, latencies from each
/// submit to its result.
const DRIVER: &str = r#"
import json
import os
import sys
import threading
import time
from datetime import timezone

import psycopg2

from tlbench_worker import noop

tasks, submitters, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
submitted = {}
lock = threading.Lock()
start = time.time()


def submit(first):
    for index in range(first, tasks, submitters):
        if rate > 0:
            delay = start + index / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        at = time.time()
        result = noop.apply_async()
        with lock:
            submitted[result.id] = at


threads = [threading.Thread(target=submit, args=(k,)) for k in range(submitters)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()

connection = psycopg2.connect(os.environ["TLBENCH_RESULTS_DSN"])
connection.autocommit = True
done, failed = {}, 0
deadline = time.time() + 300
while len(done) < tasks:
    pending = [task_id for task_id in submitted if task_id not in done]
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT task_id, status, date_done FROM celery_taskmeta WHERE task_id = ANY(%s)",
                (pending,),
            )
            for task_id, status, date_done in cursor.fetchall():
                if status in ("SUCCESS", "FAILURE"):
                    done[task_id] = date_done.replace(tzinfo=timezone.utc).timestamp()
                    failed += status != "SUCCESS"
    except psycopg2.errors.UndefinedTable:
        pass
    if time.time() > deadline:
        sys.exit(f"{len(done)} of {tasks} results within 300 s")
    time.sleep(0.05)

latencies = sorted((done[task_id] - at) * 1000.0 for task_id, at in submitted.items())
seconds = max(done.values()) - min(submitted.values())
print(json.dumps({"tasks": tasks, "failed": failed, "seconds": seconds, "latencies_ms": latencies}))
"#;

/// Celery's side: its environment, and its worker while it runs.
pub(crate) struct Celery {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    worker: Child,
}

/// One driver run's figures.
pub(crate) struct CeleryRun {
    pub(crate) tasks: usize,
    pub(crate) failed: usize,
    pub(crate) elapsed: Duration,
    /// Submit → result, sorted.
    pub(crate) latencies: Vec<Duration>,
}

impl Celery {
    /// Makes the environment under `cache` where missing, writes the
    /// scripts and starts the worker: prefork, 4 processes, broker
    /// `amqp_url`, queue `queue`, results in `results_url` (a PostgreSQL URL).
    ///
    /// # Errors
    /// When Python, `venv` or `pip` fail, or the worker does not start.
    pub(crate) async fn start(
        cache: &Path,
        amqp_url: &str,
        results_url: &str,
        queue: &str,
    ) -> anyhow::Result<Self> {
        let dir = cache.join(format!("venv-{}", PINS.join("-").replace("==", "-")));
        let python = dir.join("bin/python");
        let ready = Command::new(&python)
            .args(["-c", "import celery, sqlalchemy, psycopg2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if !ready {
            eprintln!("installing {} into {}", PINS.join(" "), dir.display());
            run(Command::new("python3").arg("-m").arg("venv").arg(&dir)).await?;
            run(Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(PINS))
            .await?;
        }
        std::fs::write(dir.join("tlbench_worker.py"), WORKER)?;
        std::fs::write(dir.join("tlbench_driver.py"), DRIVER)?;
        let env = vec![
            ("TLBENCH_BROKER", amqp_url.to_owned()),
            (
                "TLBENCH_BACKEND",
                format!(
                    "db+{}",
                    results_url.replacen("postgres://", "postgresql+psycopg2://", 1)
                ),
            ),
            ("TLBENCH_RESULTS_DSN", results_url.to_owned()),
            ("TLBENCH_QUEUE", queue.to_owned()),
            ("PYTHONPATH", dir.display().to_string()),
        ];
        // `python -m celery`, not the `celery` script: the script's first
        // line names the environment's path when it was made.
        let worker = Command::new(&python)
            .args([
                "-m",
                "celery",
                "-A",
                "tlbench_worker",
                "worker",
                "--pool=prefork",
                "--concurrency=4",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .current_dir(&dir)
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the Celery worker")?;
        Ok(Self { dir, env, worker })
    }

    /// One driver run: `tasks` submitted by `submitters` threads, at
    /// `rate` per second in all (0: unpaced).
    ///
    /// # Errors
    /// When the driver fails or a result does not come within 300 s.
    pub(crate) async fn run(
        &self,
        tasks: usize,
        submitters: usize,
        rate: f64,
    ) -> anyhow::Result<CeleryRun> {
        let output = Command::new(self.dir.join("bin/python"))
            .arg(self.dir.join("tlbench_driver.py"))
            .args([tasks.to_string(), submitters.to_string(), rate.to_string()])
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(name, value)| (*name, value.as_str())))
            .stderr(Stdio::inherit())
            .output()
            .await
            .context("running the Celery driver")?;
        if !output.status.success() {
            bail!("the Celery driver failed: {}", output.status);
        }
        let figures: Value = serde_json::from_slice(&output.stdout)
            .context("reading the Celery driver's figures")?;
        let number = |field: &str| figures[field].as_f64().unwrap_or_default();
        Ok(CeleryRun {
            tasks: number("tasks") as usize,
            failed: number("failed") as usize,
            elapsed: Duration::from_secs_f64(number("seconds").max(0.0)),
            latencies: figures["latencies_ms"]
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_f64)
                        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1_000.0))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Stops the worker with a warm shutdown (SIGTERM), killing it after
    /// 20 s.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.worker.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), self.worker.wait())
            .await
            .is_err()
        {
            self.worker.kill().await?;
        }
        Ok(())
    }
}

async fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .await
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
