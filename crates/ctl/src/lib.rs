//! `ctl`, the command line client of a Camshaft cluster, as a library; the
//! `ctl` binary parses the command line into a [`cli::Cli`] and calls [`run`].
//!
//! # Modules
//!
//! - [`cli`]: the clap types, parsed once.
//! - [`address`]: `host:port` → `http://host:port`, and the defaults.
//! - [`client`]: connecting to the coordinator and explainer (message limits
//!   raised to [`camshaft_proto::MAX_MESSAGE_BYTES`], one-line errors when a
//!   server is down).
//! - [`job_spec`]: `submit-job`'s options from flags and a JSON spec file,
//!   merged and built into a `JobSpec`.
//! - [`output`]: pure text formatting: fastai's epoch table, job event lines,
//!   tables, times.
//! - [`watch`]: following a job's event stream, reconnecting after
//!   `after_sequence` when it breaks.
//! - [`jobs`], [`models`], [`workers`], [`explain`], [`status`]: the commands.
//! - [`bench`](mod@bench): `ctl bench train` (images/s and scaling efficiency per rank
//!   count, with `--json` and a `--report` folder of Markdown and SVG plots)
//!   and `ctl bench time-to-accuracy`, through the ordinary job API; `ctl
//!   bench explain` (explainer images/s and latency against concurrent clients).
//! - [`trace`]: step-time breakdowns and Chrome-trace timelines from the
//!   ranks' step profiles (`--profile-steps`), for `ctl jobs trace` and
//!   `ctl bench train`.
//! - [`console`]: stdout writes that end quietly on a closed pipe.
//! - [`error`]: the error kinds `ctl` tells apart and their exit codes.
//!
//! # Output and exit codes
//!
//! Results go to stdout, diagnostics to stderr. `ctl submit-job` without
//! `--wait` prints exactly the job id. Exit codes: 0 success; 1 the operation
//! failed (a job ended FAILED or CANCELLED, an image had an error, a server
//! in `ctl status` was unreachable); 2 bad input; 3 a server could not be
//! reached; 4 a server answered with an error status; 130 Ctrl-C detached a
//! watch (the job keeps running).
//!
//! # Example
//!
//! ```text
//! $ ctl submit-job --dataset synthetic --model resnet18 --head cam --epochs 3 --wait
//! submitted j-1
//! [running] 1 worker, world size 1
//! epoch  train_loss  valid_loss  accuracy  time   images/s
//! 0      0.693147    0.681234    0.550000  00:12  1843
//! ...
//! registered synthetic:1 (aliases: latest)
//! [succeeded]
//! $ ctl explain --model synthetic --grid grid.png shapes/*.png
//! ```

pub mod address;
pub mod bench;
pub mod cli;
pub mod client;
pub mod console;
pub mod error;
pub mod explain;
pub mod job_spec;
pub mod jobs;
pub mod models;
pub mod output;
pub mod status;
pub mod trace;
pub mod watch;
pub mod workers;

use camshaft_proto::security::ClientSecurity;
use cli::{Cli, Command, WorkersCommand};
use client::Servers;

/// Runs one parsed command line. Errors carry their exit code (see
/// [`error::exit_code`]); an [`error::AlreadyReported`] error has had its
/// message printed already.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let servers = Servers {
        coordinator: address::normalize_address(&cli.coordinator)
            .map_err(|e| error::InputError::new(format!("--coordinator: {e}")))?,
        explainer: address::normalize_address(&cli.explainer)
            .map_err(|e| error::InputError::new(format!("--explainer: {e}")))?,
        security: ClientSecurity::load(&cli.security.tls(), cli.security.token_file.as_deref())
            .map_err(|e| error::InputError::new(e.to_string()))?,
    };
    match cli.command {
        Command::SubmitJob(args) => jobs::submit(&servers, *args).await,
        Command::Jobs(command) => jobs::run(&servers, command).await,
        Command::Models(command) => models::run(&servers, command).await,
        Command::Workers(WorkersCommand::List { all, json }) => {
            workers::list(&servers, all, json).await
        }
        Command::Explain(args) => explain::explain(&servers, args).await,
        Command::Bench(command) => bench::run(&servers, command).await,
        Command::Status { json } => status::status(&servers, json).await,
    }
}
