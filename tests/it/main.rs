//! Integration tests of the service over real HTTP against real PostgreSQL.

mod access;
mod audit;
mod auth;
mod console;
mod console_apiref;
mod console_devices;
mod console_ops;
mod deploy;
mod devices;
mod feed;
mod helpers;
mod keys;
mod limits;
mod mirror;
mod openapi;
mod outofbox;
mod probes;
mod process;
mod quickstart;
mod replay;
mod rockblock;
mod routes;
mod running;
mod support;
mod tasks;
mod tenants;
