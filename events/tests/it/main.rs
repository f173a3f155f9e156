//! Integration tests of the PostgreSQL event store, each in its own database.

mod append;
mod concurrency;
mod helpers;
mod regressions;
mod subscribe;
mod upcast;
