//! The taskledger service: command line, configuration, HTTP API and the
//! workers, wired on top of the `events`, `projections` and `replay` crates.
//! Only this crate reads configuration or knows axum.
//!
//! - [`cli`]: the subcommands (`serve`, `migrate`, `health`, `keys`,
//!   `projections`, `cleanup`, `replay`).
//! - [`config`]: the configuration file (task kinds) and the settings from
//!   flags and the environment.
//! - [`service`]: building and running a process: the database, start-up,
//!   shutdown, logging, and the outside parts it depends on.
//! - [`http`]: the API, by resource.
//! - [`workers`]: what runs beside the API: the relay, the runner, the
//!   device gateway, and the leader lock they share.
//! - [`adapters`]: what the service talks to: RabbitMQ, the RockBLOCK web
//!   API, the blob directory.
//! - [`commands`], [`submission`], [`metrics`]: command handling with its
//!   metrics, submitting tasks, the process's metrics registry.

pub mod adapters;
pub mod cli;
pub mod commands;
pub mod config;
pub mod http;
pub mod metrics;
pub mod plans;
pub mod service;
pub mod submission;
pub mod workers;
