//! The measurement loop shared by `ring_bench` and `nccl_check`: one rank's
//! side, printed like nccl-tests by rank 0.

use std::time::Instant;

use camshaft_collective::{Communicator, ReduceOp};
use tch::{Device, Kind, Tensor};

/// Sizes from `min` to `max` bytes, doubling.
pub fn sizes(min: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut s = min.max(4);
    while s <= max {
        out.push(s);
        s *= 2;
    }
    out
}

/// Timed iterations for a size: many for small messages, a few for large.
fn iterations(bytes: usize) -> usize {
    ((256usize << 20) / bytes).clamp(3, 50)
}

/// Runs the table on this rank; rank 0 prints it. Returns whether every
/// check passed on this rank.
pub fn run<C: Communicator>(
    comm: &mut C,
    device: Device,
    sizes: &[usize],
    label: &str,
) -> anyhow::Result<bool> {
    let n = comm.world_size();
    let rank = comm.rank();
    if rank == 0 {
        println!("# {label}: {n} ranks, all-reduce sum, f32, in place");
        println!(
            "# {:>12} {:>12} {:>6} {:>12} {:>10} {:>10} {:>6}",
            "size(B)", "count", "type", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "check"
        );
    }
    let mut all_ok = true;
    for &bytes in sizes {
        let count = (bytes / 4) as i64;
        // Correctness: every rank contributes rank + 1.
        let t = Tensor::full([count], (rank + 1) as f64, (Kind::Float, device));
        comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)?;
        let expected = (n * (n + 1) / 2) as f64;
        let ok = (&t - expected).abs().max().double_value(&[]) == 0.0;
        all_ok &= ok;
        // Timing: zeros stay zeros, so repeated sums cannot overflow.
        let t = Tensor::zeros([count], (Kind::Float, device));
        comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)?;
        let iters = iterations(bytes);
        comm.barrier()?;
        let start = Instant::now();
        for _ in 0..iters {
            comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)?;
        }
        let secs = start.elapsed().as_secs_f64() / iters as f64;
        if rank == 0 {
            let algbw = bytes as f64 / secs / 1e9;
            let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
            println!(
                "  {:>12} {:>12} {:>6} {:>12.1} {:>10.3} {:>10.3} {:>6}",
                bytes,
                count,
                "float",
                secs * 1e6,
                algbw,
                busbw,
                if ok { "ok" } else { "WRONG" }
            );
        }
    }
    Ok(all_ok)
}
