//! Integration tests of the projector runtime against real PostgreSQL.

mod api_keys;
mod helpers;
mod runtime;
mod statements;
mod statistics;
mod tasks;
