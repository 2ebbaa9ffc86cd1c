//! `camshaft`: the server binary. `camshaft up` runs the whole cluster in
//! one process (coordinator, workers, explainer, embedded store);
//! `camshaft coordinator|worker|explainer` run one service each. Flags and
//! an optional TOML `--config` file become each service's `Config`; the
//! services themselves live in their library crates.

mod cli;

use std::io::IsTerminal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,hyper=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // libtorch's parallelism belongs to the compute threads (rank and
    // inference threads); every other thread runs its tensor work serially
    // (see camshaft_vision::threads).
    camshaft_vision::threads::run_serially_here();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(camshaft_vision::threads::run_serially_here)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("camshaft: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camshaft: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
