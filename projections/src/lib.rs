//! The read side of taskledger: the projector runtime ([`runtime`]) — batches
//! of the global order applied with the checkpoint in the same transaction,
//! one active instance per projector across processes — and the read models
//! built with it.
//!
//! Projectors are deterministic: no clock, no network; everything they need
//! is in the events, so every projection can be thrown away and rebuilt from
//! the log with the same result.

pub mod api_keys;
pub mod devices;
pub mod ledgers;
pub mod runtime;
pub mod tasks;

pub use runtime::{Projector, ProjectorError, ProjectorRuntime, ProjectorState, ProjectorStatus};
