//! A batch's transaction with the statements its connection has prepared:
//! a projector applying one event at a time would otherwise prepare every
//! statement again in every batch, and a prepare is a round trip and a
//! parse on the server (several per task on the busy path).
//!
//! Kept here, not taken from `deadpool-postgres`' statement cache: that
//! one prepares through a pooled client, and a projector's connection is
//! its own (it holds the projector's lock) and is borrowed by the open
//! transaction while a batch runs.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, GenericClient, Row, Statement, Transaction};

/// The most statements kept per connection; a projector whose SQL text
/// varies (built per batch) starts again empty rather than grow.
const MAX_STATEMENTS: usize = 64;

/// Statements prepared on one connection, by their text. Made with the
/// connection and dropped with it: a statement belongs to the session
/// that prepared it. The server re-plans a kept statement itself when a
/// table it names changes (a rebuild's swap) or the `search_path` does.
#[derive(Debug, Default)]
pub struct Statements {
    prepared: Mutex<HashMap<String, Statement>>,
}

impl Statements {
    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.prepared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Statements for one batch only: what a rebuild uses. Its batches are
    /// large (a prepare each is nothing beside them), and its shadow tables
    /// grow from empty with no statistics until the end, so every batch is
    /// planned afresh for what it finds, as before the cache.
    pub fn per_batch() -> Self {
        Self::default()
    }

    /// Forgets every statement (after a failed batch: the next one
    /// prepares afresh, in case a kept statement was the cause).
    pub fn clear(&self) {
        self.kept().clear();
    }

    /// `sql` prepared on `client`'s connection (the one these statements
    /// are of): kept from an earlier batch, or prepared now and kept.
    ///
    /// # Errors
    /// When the server refuses to prepare it.
    pub async fn prepare(
        &self,
        client: &impl GenericClient,
        sql: &str,
    ) -> Result<Statement, Error> {
        if let Some(statement) = self.kept().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        let mut kept = self.kept();
        if kept.len() >= MAX_STATEMENTS {
            kept.clear();
        }
        kept.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Where a batch's statements run: a [`Transaction`], or a client whose
/// connection the runtime opened a transaction on itself (so that `BEGIN`
/// and `COMMIT` travel with the batch's first and last statement instead of
/// each taking a round trip of its own).
#[derive(Clone, Copy)]
enum On<'a> {
    Transaction(&'a Transaction<'a>),
    Open(&'a Client),
}

/// One batch's transaction: its `execute` and `query` methods prepare each
/// SQL text once per connection.
pub struct Batch<'a> {
    on: On<'a>,
    statements: &'a Statements,
}

impl<'a> Batch<'a> {
    /// `tx`, preparing through `statements` (those of `tx`'s connection).
    pub fn new(tx: &'a Transaction<'a>, statements: &'a Statements) -> Self {
        Self {
            on: On::Transaction(tx),
            statements,
        }
    }

    /// `client`, on whose connection the caller has begun a transaction
    /// (and will end it), preparing through `statements`.
    pub(super) fn in_open_transaction(client: &'a Client, statements: &'a Statements) -> Self {
        Self {
            on: On::Open(client),
            statements,
        }
    }

    /// `sql` prepared on this connection, once.
    ///
    /// # Errors
    /// When the server refuses to prepare it.
    pub async fn prepare(&self, sql: &str) -> Result<Statement, Error> {
        match self.on {
            On::Transaction(tx) => self.statements.prepare(tx, sql).await,
            On::Open(client) => self.statements.prepare(client, sql).await,
        }
    }

    /// Executes `sql` (prepared once per connection); the rows it changed.
    ///
    /// # Errors
    /// As [`Transaction::execute`].
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let statement = self.prepare(sql).await?;
        match self.on {
            On::Transaction(tx) => tx.execute(&statement, params).await,
            On::Open(client) => client.execute(&statement, params).await,
        }
    }

    /// The rows of `sql` (prepared once per connection).
    ///
    /// # Errors
    /// As [`Transaction::query`].
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let statement = self.prepare(sql).await?;
        match self.on {
            On::Transaction(tx) => tx.query(&statement, params).await,
            On::Open(client) => client.query(&statement, params).await,
        }
    }

    /// The one row of `sql` (prepared once per connection).
    ///
    /// # Errors
    /// As [`Transaction::query_one`].
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let statement = self.prepare(sql).await?;
        match self.on {
            On::Transaction(tx) => tx.query_one(&statement, params).await,
            On::Open(client) => client.query_one(&statement, params).await,
        }
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("statements", self.statements)
            .finish_non_exhaustive()
    }
}
