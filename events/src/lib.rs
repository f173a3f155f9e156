//! What can happen and what did happen in taskledger: the event envelope, the
//! [`EventStore`] trait and its PostgreSQL implementation with a gapless,
//! hash-chained global order; the aggregates (task, API key, device,
//! ledger), each implementing the one [`Aggregate`] contract; and the
//! command handling that runs any of them against a store ([`command`]).
//!
//! The crate knows nothing of HTTP, RabbitMQ, Docker or configuration; it is
//! the bottom of the dependency graph (`events` ← `projections` ← `replay` ←
//! the binary).

pub mod aggregate;
pub mod apikey;
pub mod chain;
mod check;
pub mod codec;
pub mod command;
pub mod device;
pub mod envelope;
pub mod error;
pub mod ledger;
pub mod migrate;
pub mod plan;
pub mod postgres;
pub mod refusal;
pub mod snapshot;
pub mod store;
pub mod stream_id;
pub mod task;
pub mod tenant;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod upcast;
pub mod verification;
pub mod webhook;

pub use aggregate::Aggregate;
pub use envelope::{AppendResult, Direction, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
pub use error::{AppendError, InvalidInput, StoreError};
pub use refusal::{Refusal, RefusalKind};
pub use store::{EventStore, Subscription};
pub use stream_id::StreamId;
