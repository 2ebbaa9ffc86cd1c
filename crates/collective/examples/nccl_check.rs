//! Checks NCCL on this machine: a G-rank group as G threads, one per GPU,
//! all-reducing 8 B .. 256 MiB and printing time, algbw and busbw like
//! nccl-tests (busbw = algbw · 2(G−1)/G), with each sum checked.
//! Exits non-zero, saying why, where there is no NCCL or no GPU.
//!
//! `nccl_check --max-bytes 268435456`

mod common;

use std::process::ExitCode;
use std::time::Duration;

use camshaft_collective::{CollectiveConfig, Nccl, NcclCommunicator};
use clap::Parser;
use tch::Device;

#[derive(Parser)]
struct Args {
    /// Number of GPUs (ranks); all visible ones by default.
    #[arg(long)]
    gpus: Option<usize>,
    /// Smallest message in bytes.
    #[arg(long, default_value_t = 8)]
    min_bytes: usize,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_bytes: usize,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let nccl = match Nccl::load() {
        Ok(nccl) => nccl,
        Err(e) => {
            eprintln!("nccl_check: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let visible = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    let gpus = args.gpus.unwrap_or(visible);
    if gpus == 0 || gpus > visible {
        eprintln!(
            "nccl_check: nccl {} loaded from {}, but libtorch sees {visible} CUDA device(s) ({gpus} wanted)",
            nccl.version_string(),
            nccl.path()
        );
        return Ok(ExitCode::from(2));
    }
    println!("# nccl {} from {}", nccl.version_string(), nccl.path());
    let id = nccl.unique_id()?;
    let sizes = common::sizes(args.min_bytes, args.max_bytes);
    let label = format!("nccl, {gpus} GPU(s), one thread per GPU");
    let handles: Vec<_> = (0..gpus)
        .map(|rank| {
            let (nccl, sizes, label) = (nccl.clone(), sizes.clone(), label.clone());
            std::thread::spawn(move || -> anyhow::Result<bool> {
                let config = CollectiveConfig::with_timeout(Duration::from_secs(120));
                let mut comm = NcclCommunicator::new(&nccl, id, rank, gpus, rank, config)?;
                common::run(&mut comm, Device::Cuda(rank), &sizes, &label)
            })
        })
        .collect();
    let mut ok = true;
    for h in handles {
        ok &= h.join().map_err(|_| anyhow::anyhow!("a rank panicked"))??;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
