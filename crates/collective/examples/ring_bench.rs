//! All-reduce bandwidth of the TCP ring with N ranks as threads on loopback,
//! printed like nccl-tests (busbw = algbw · 2(N−1)/N).
//!
//! `ring_bench --ranks 2 --max-bytes 67108864`

mod common;

use std::process::ExitCode;

use camshaft_collective::{CollectiveConfig, RingCommunicator, RingListener};
use clap::Parser;
use tch::Device;

#[derive(Parser)]
struct Args {
    /// Number of ranks (threads).
    #[arg(long, default_value_t = 2)]
    ranks: usize,
    /// Smallest message in bytes.
    #[arg(long, default_value_t = 8)]
    min_bytes: usize,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_bytes: usize,
    /// Ring pipeline slice in bytes.
    #[arg(long, default_value_t = CollectiveConfig::default().slice_bytes)]
    slice_bytes: usize,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    tch::set_num_threads(1);
    let config = CollectiveConfig {
        slice_bytes: args.slice_bytes,
        ..CollectiveConfig::default()
    };
    let sizes = common::sizes(args.min_bytes, args.max_bytes);
    let listeners = (0..args.ranks)
        .map(|_| RingListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().to_string())
        .collect();
    let label = format!("tcp ring on loopback, slice {} B", args.slice_bytes);
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let (peers, config, sizes, label) =
                (peers.clone(), config.clone(), sizes.clone(), label.clone());
            let ranks = args.ranks;
            std::thread::spawn(move || -> anyhow::Result<bool> {
                let mut comm = RingCommunicator::connect(listener, rank, ranks, peers, config)?;
                common::run(&mut comm, Device::Cpu, &sizes, &label)
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
