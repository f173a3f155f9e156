//! The `taskledger` command: parses the command line, sets up logging and
//! hands over to the library.

use clap::Parser;

/// mimalloc instead of the system allocator: on the API path glibc's
/// malloc and free were a quarter of all instructions (`bench api` under
/// callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = taskledger::cli::Cli::parse();
    taskledger::service::telemetry::init(&cli.log_filter);
    match taskledger::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Once, on standard error: `{:#}` prints the whole context
            // chain on one line.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
