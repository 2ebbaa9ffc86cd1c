//! `ctl`: the command line client of a Camshaft cluster (see the
//! `camshaft_ctl` library for the commands and exit codes).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = camshaft_ctl::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    match camshaft_ctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if !error.is::<camshaft_ctl::error::AlreadyReported>() {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(camshaft_ctl::error::exit_code(&error))
        }
    }
}
