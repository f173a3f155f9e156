//! Integration tests of the PostgreSQL event store and of command handling
//! against it, each in its own database.

mod append;
mod command;
mod concurrency;
mod helpers;
mod regressions;
mod snapshots;
mod subscribe;
mod upcast;
