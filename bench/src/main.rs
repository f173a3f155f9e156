//! The `taskledger-bench` command: parses the command line, sets up logging
//! and runs one benchmark. A binary of its own so that the service binary
//! carries no benchmark code and none of the repository's test keys.

mod api;
mod append;
mod bare;
mod celery;
mod cli;
mod gateway;
mod growth;
mod measure;
mod mo;
mod noop;
mod plain;
mod queues;
mod rebuild;
mod seed;
mod tasks;
mod verify;
mod webhooks;

use clap::Parser;

/// mimalloc instead of the system allocator: on the API path glibc's
/// malloc and free were a quarter of all instructions (`bench api` under
/// callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    taskledger::service::telemetry::init(&cli.log_filter);
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Once, on standard error: `{:#}` prints the whole context
            // chain on one line.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
