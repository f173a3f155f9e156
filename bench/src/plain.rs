//! The baseline of `taskledger-bench append --baseline`: what an
//! application gets from PostgreSQL without the log. Plain INSERTs into a
//! scratch copy of the events table (`LIKE events INCLUDING ALL`: the same
//! columns, checks and indexes, whatever the migrations added), the same
//! payload and stream shape as the log's writers, one transaction per
//! INSERT, over at most `connections` connections (writers beyond that
//! share them, as an application's pool would; the server has a connection
//! limit); positions from a sequence, no lock, no
//! hash chain, no head check, no NOTIFY. With `rows_per_transaction` 100 it
//! is the ceiling group commit approaches: the same rows, a hundred to a
//! transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use taskledger_events::chain::{canonical_json, canonical_metadata};
use taskledger_events::Metadata;
use tokio_postgres::{Client, NoTls};

use crate::measure::percentile;

/// A scratch copy of the events table, dropped by [`PlainTable::drop`].
pub(crate) struct PlainTable {
    config: tokio_postgres::Config,
    client: Client,
    name: String,
}

/// What one plain run measured.
#[derive(Debug, Clone)]
pub(crate) struct PlainRun {
    /// Rows committed per second.
    pub(crate) events_per_s: f64,
    /// Median transaction latency.
    pub(crate) p50: Duration,
    /// 99th percentile transaction latency.
    pub(crate) p99: Duration,
}

/// Opens a connection of its own (its driver runs on a spawned task).
async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting for the plain baseline")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a baseline connection failed");
        }
    });
    Ok(client)
}

impl PlainTable {
    /// Creates `bench_plain_{run_id}` like `events`, with its own position
    /// sequence.
    ///
    /// # Errors
    /// When the database refuses.
    pub(crate) async fn create(
        config: &tokio_postgres::Config,
        run_id: &str,
    ) -> anyhow::Result<Self> {
        let client = connect(config).await?;
        let name = format!("bench_plain_{run_id}");
        client
            .batch_execute(&format!(
                "CREATE TABLE {name} (LIKE events INCLUDING ALL);
                 CREATE SEQUENCE {name}_position OWNED BY {name}.global_position;"
            ))
            .await
            .context("creating the baseline's scratch table")?;
        Ok(Self {
            config: config.clone(),
            client,
            name,
        })
    }

    /// Drops the scratch table (and its sequence).
    ///
    /// # Errors
    /// When the database refuses.
    pub(crate) async fn drop(self) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.name))
            .await
            .context("dropping the baseline's scratch table")
    }

    /// `writers` insert `rows_per_transaction` rows per transaction for
    /// `seconds` over at most `connections` connections, each spreading its
    /// rows over `streams_per_writer` streams with consecutive versions.
    ///
    /// # Errors
    /// When the database fails.
    pub(crate) async fn run(
        &self,
        writers: usize,
        rows_per_transaction: usize,
        seconds: f64,
        streams_per_writer: usize,
        connections: usize,
    ) -> anyhow::Result<PlainRun> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let connections = connections.clamp(1, writers.max(1));
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            clients.push(Arc::new(connect(&self.config).await?));
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let client = clients[writer % connections].clone();
                let shape = Shape {
                    table: self.name.clone(),
                    run: run.clone(),
                    writer,
                    streams: streams_per_writer.max(1),
                    rows: rows_per_transaction.max(1),
                };
                tokio::spawn(async move { shape.insert_until(&client, deadline).await })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut rows = 0_u64;
        for task in tasks {
            let (writer_latencies, writer_rows) =
                task.await.context("a baseline writer panicked")??;
            latencies.extend(writer_latencies);
            rows += writer_rows;
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Ok(PlainRun {
            events_per_s: rows as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
        })
    }
}

/// One baseline writer's part.
struct Shape {
    table: String,
    run: String,
    writer: usize,
    streams: usize,
    rows: usize,
}

impl Shape {
    /// Inserts until `deadline`; (transaction latencies, rows).
    async fn insert_until(
        &self,
        client: &Client,
        deadline: Instant,
    ) -> anyhow::Result<(Vec<Duration>, u64)> {
        let table = &self.table;
        // One row: the plainest INSERT there is. More: one INSERT of
        // arrays, as the log's own insert sends them.
        let sql = if self.rows == 1 {
            format!(
                "INSERT INTO {table} (global_position, event_id, stream_id, version, event_type,
                     schema_version, data, metadata, recorded_at, hash)
                 VALUES (nextval('{table}_position'), $1, $2, $3, $4, 1, $5::text::json,
                     $6::text::json, now(), $7)"
            )
        } else {
            format!(
                "INSERT INTO {table} (global_position, event_id, stream_id, version, event_type,
                     schema_version, data, metadata, recorded_at, hash)
                 SELECT nextval('{table}_position'), r.event_id, r.stream_id, r.version,
                     $4, 1, r.data::json, $6::text::json, now(), r.hash
                 FROM unnest($1::uuid[], $2::text[], $3::bigint[], $5::text[], $7::bytea[])
                     AS r(event_id, stream_id, version, data, hash)"
            )
        };
        let statement = client
            .prepare(&sql)
            .await
            .context("preparing the baseline's INSERT")?;
        let stream_ids: Vec<String> = (0..self.streams)
            .map(|n| format!("bench-{}-{}-{n}", self.run, self.writer))
            .collect();
        let metadata = canonical_metadata(&Metadata::default());
        let event_type = "BenchTaskSubmitted".to_owned();
        let mut versions = vec![0_i64; self.streams];
        let mut latencies = Vec::new();
        let mut rows = 0_u64;
        let mut round = 0_usize;
        while Instant::now() < deadline {
            let index = round % self.streams;
            let mut event_ids = Vec::with_capacity(self.rows);
            let mut stream_column = Vec::with_capacity(self.rows);
            let mut version_column = Vec::with_capacity(self.rows);
            let mut data = Vec::with_capacity(self.rows);
            let mut hashes = Vec::with_capacity(self.rows);
            for n in 0..self.rows {
                versions[index] += 1;
                event_ids.push(uuid::Uuid::now_v7());
                stream_column.push(stream_ids[index].clone());
                version_column.push(versions[index]);
                // The log's writers' payload, byte for byte.
                data.push(canonical_json(&json!({
                    "kind": "url-analysis",
                    "frontend_id": format!("frontend-{}", self.writer),
                    "params": { "url": format!("https://example.test/{round}/{n}"), "useragent": "winxpie60" },
                    "priority": 0,
                })));
                let mut hash = uuid::Uuid::new_v4().as_bytes().to_vec();
                hash.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                hashes.push(hash);
            }
            let began = Instant::now();
            if self.rows == 1 {
                client
                    .execute(
                        &statement,
                        &[
                            &event_ids[0],
                            &stream_column[0],
                            &version_column[0],
                            &event_type,
                            &data[0],
                            &metadata,
                            &hashes[0],
                        ],
                    )
                    .await
            } else {
                client
                    .execute(
                        &statement,
                        &[
                            &event_ids,
                            &stream_column,
                            &version_column,
                            &event_type,
                            &data,
                            &metadata,
                            &hashes,
                        ],
                    )
                    .await
            }
            .with_context(|| format!("baseline writer {} inserting", self.writer))?;
            latencies.push(began.elapsed());
            rows += self.rows as u64;
            round += 1;
        }
        Ok((latencies, rows))
    }
}
