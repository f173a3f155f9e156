//! The read side of taskledger: the projector runtime ([`runtime`]) — batches
//! of the global order applied with the checkpoint in the same transaction,
//! one active instance per projector across processes — and the read models
//! built with it.
//!
//! Projectors are deterministic: no clock, no network; everything they need
//! is in the events, so every projection can be thrown away and rebuilt from
//! the log with the same result.

pub mod api_keys;
mod declare;
pub mod devices;
pub mod ledgers;
pub mod plans;
pub mod rebuild;
pub mod runtime;
pub mod statistics;
pub mod tasks;

pub use runtime::{Projector, ProjectorError, ProjectorRuntime, ProjectorState, ProjectorStatus};

/// Every projector the service runs, by name.
pub fn all() -> Vec<std::sync::Arc<dyn Projector>> {
    vec![
        std::sync::Arc::new(tasks::TasksProjector),
        std::sync::Arc::new(api_keys::ApiKeysProjector),
        std::sync::Arc::new(devices::DevicesProjector),
        std::sync::Arc::new(ledgers::LedgersProjector),
        std::sync::Arc::new(plans::PlansProjector),
    ]
}

/// The tables every projector of [`all`] writes (the live ones).
pub fn tables() -> Vec<&'static str> {
    all()
        .iter()
        .flat_map(|projector| projector.tables().iter().copied())
        .collect()
}

/// The projector called `name`.
///
/// # Errors
/// [`UnknownProjection`], which lists the projections there are.
pub fn by_name(name: &str) -> Result<std::sync::Arc<dyn Projector>, UnknownProjection> {
    all()
        .into_iter()
        .find(|projector| projector.name() == name)
        .ok_or_else(|| UnknownProjection(name.to_owned()))
}

/// No projector has this name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("there is no projection called {0:?}; the projections are {known}", known = all().iter().map(|projector| projector.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownProjection(pub String);
