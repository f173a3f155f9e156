//! Integration tests of the projector runtime against real PostgreSQL.

mod runtime;
mod tasks;
