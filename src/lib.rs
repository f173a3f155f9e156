//! The taskledger service: command line, configuration, HTTP API and the
//! workers, wired on top of the `events`, `projections` and `replay` crates.
//! Only this crate reads configuration or knows axum.

pub mod audit;
pub mod blobs;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
pub mod dependencies;
pub mod gateway;
pub mod http;
pub mod keys;
mod leader;
pub mod metrics;
pub mod operators;
pub mod relay;
pub mod rockblock;
pub mod runner;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod submission;
pub mod telemetry;
