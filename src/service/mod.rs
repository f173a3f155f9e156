//! Building and running one process: the database ([`database`]), start-up
//! and the run loop with its worker supervision ([`startup`]), the one
//! shutdown signal ([`shutdown`]), logging ([`telemetry`]) and the outside
//! parts a process needs ([`dependencies`]).

pub mod database;
pub mod dependencies;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
