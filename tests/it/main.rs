//! Integration tests of the service over real HTTP against real PostgreSQL.

mod audit;
mod auth;
mod commands;
mod devices;
mod feed;
mod helpers;
mod keys;
mod openapi;
mod probes;
mod process;
mod replay;
mod rockblock;
mod routes;
mod running;
mod tasks;
