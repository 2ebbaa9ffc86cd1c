//! `camshaft-bench`: Camshaft against PyTorch eager, side by side.
//!
//! Each bench runs our implementation (through `camshaft-vision` and
//! `camshaft-data`) and then its reference script in `benches/reference/`
//! with the same thread count on the same machine, takes the median of
//! several timed repeats after a warm-up, and reports
//! `bench | ours | pytorch | ratio (ours/pytorch) | goal` on stdout and as
//! JSON. See `benches/README.md` for what each bench measures.
//!
//! ```text
//! cargo run --release -p camshaft-benches -- all
//! cargo run --release -p camshaft-benches -- train --model resnet18 --repeats 3
//! ```

mod allreduce;
mod cam;
mod ddp;
mod explain;
mod group;
mod loader;
mod measure;
mod optim;
mod reference;
mod report;
mod scaling;
mod suite;
mod train;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand};

use crate::reference::Reference;
use crate::report::Report;
use crate::suite::Suite;

/// Camshaft against PyTorch eager: training steps, image loading, CAM.
#[derive(Debug, Parser)]
#[command(name = "camshaft-bench", version)]
struct Cli {
    /// Intra-op threads on both sides (`tch::set_num_threads`,
    /// `torch.set_num_threads`); the loader bench always uses 1.
    #[arg(long, global = true, default_value_t = 2)]
    threads: i32,
    /// Rounds of (ours, PyTorch) per bench, samples pooled: more rounds
    /// spread a busy machine's noise over both sides.
    #[arg(long, global = true, default_value_t = 1)]
    rounds: usize,
    /// Where to write the JSON results.
    #[arg(long, global = true, default_value = "bench-results/latest.json")]
    json: PathBuf,
    /// Device of the training and CAM benches on both sides: `cpu`, `cuda`
    /// or `cuda:N` (the loader bench is CPU work either way).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Python with torch 2.11 and torchvision (default: `<repo>/.venv/bin/python`).
    #[arg(long, global = true, env = "CAMSHAFT_PYTHON")]
    python: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The benches.
#[derive(Debug, Subcommand)]
enum Command {
    /// Training steps/s: small CNN and ResNet18, batch 64, 32×32 (goal ≥1.0×).
    Train(train::TrainArgs),
    /// One Adam step over ResNet18's parameters: ours fused and per-tensor
    /// vs PyTorch's AdamW default and fused=True.
    Optim(optim::OptimArgs),
    /// JPEG decode + resize to 512 + normalise, images/s per core (goal ≥2× PIL).
    Loader(loader::LoaderArgs),
    /// CAM of a batch of 8 at 512×512 with ResNet34 + CAM head (goal ≥1.0×).
    Cam(cam::CamArgs),
    /// Data-parallel steps/s of 2 ranks over the TCP ring vs PyTorch DDP
    /// over gloo, ResNet18 (goal ≥1.0×).
    Ddp(ddp::DdpArgs),
    /// All-reduce time, algbw and busbw per message size like nccl-tests'
    /// all_reduce_perf, ring (or NCCL) vs torch.distributed gloo (or NCCL).
    Allreduce(allreduce::AllreduceArgs),
    /// Training images/s of 1..N ranks over the ring, scaling efficiency and
    /// a per-step breakdown, vs PyTorch DDP over gloo.
    Scaling(scaling::ScalingArgs),
    /// CAM through the gRPC explainer at 1/8/32 clients, 224/512 px, vs
    /// PyTorch and TorchCAM (goal ≥1.5× PyTorch's images/s on CPU).
    Explain(explain::ExplainArgs),
    /// Every bench with its defaults.
    All(AllArgs),
}

/// Options of `all`.
#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Also print the loader's per-stage breakdown (as `loader --stages`).
    #[arg(long)]
    stages: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ensure!(cli.threads >= 1, "--threads must be at least 1");
    ensure!(cli.rounds >= 1, "--rounds must be at least 1");
    let suite = Suite {
        threads: cli.threads,
        rounds: cli.rounds,
        reference: Reference::locate(cli.python.clone()),
        device: measure::parse_device(&cli.device)?,
    };
    let results = match &cli.command {
        Command::Train(args) => suite.train(args)?,
        Command::Optim(args) => suite.optim(args)?,
        Command::Loader(args) => suite.loader(args)?,
        Command::Cam(args) => suite.cam(args)?,
        Command::Ddp(args) => suite.ddp(args)?,
        Command::Allreduce(args) => suite.allreduce(args)?,
        Command::Scaling(args) => suite.scaling(args)?,
        Command::All(args) => suite.all(args.stages)?,
        Command::Explain(args) => {
            return explain::run(args, cli.threads, &suite.reference, &cli.json);
        }
    };
    let report = Report {
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        threads: cli.threads,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        rounds: cli.rounds,
        results,
    };
    print!("{}", report.table());
    report
        .write_json(&cli.json)
        .with_context(|| format!("cannot save the results to {}", cli.json.display()))?;
    eprintln!("results written to {}", cli.json.display());
    Ok(())
}
