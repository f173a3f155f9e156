//! Integration tests of the service over real HTTP against real PostgreSQL.

mod commands;
mod helpers;
mod probes;
mod process;
