//! An all-reduce bandwidth sweep as nccl-tests' `all_reduce_perf` runs it,
//! over any [`Communicator`]: float32, sum, in place, message sizes doubling
//! from `min_bytes` to `max_bytes`.
//!
//! Per size every rank first all-reduces a [`pattern`] whose exact sum it
//! checks element by element ([`count_wrong`], nccl-tests' `#wrong`), then
//! runs `warmup` untimed all-reduces and, after a barrier, `iters` timed
//! ones; its time is the mean per call. One more small all-reduce gathers
//! every rank's time and wrong count, so every rank knows the slowest
//! rank's time, the mean over ranks and the total of wrong elements. The
//! row's time is the slowest rank's: a collective is as fast as its
//! slowest member.
//!
//! What to sweep and what a row means — [`SweepConfig`], [`SweepRow`],
//! nccl-tests' `algbw` and `busbw` — live in [`camshaft_spec::sweep`],
//! which holds no tensors, so the local benchmark, the worker and
//! `ctl bench allreduce` (no libtorch) agree on them. This module runs the
//! sweep ([`run`]) and checks its sums.

use std::time::Instant;

use camshaft_spec::sweep::{SweepConfig, SweepRow, SweepSize};
use tch::{Device, Kind, Tensor};

use crate::{Communicator, Error, ReduceOp, Result};

/// Runs `config`'s sweep on this rank of `comm` (every rank calls it with
/// the same config) and hands each size's row to `on_row` as soon as the
/// group agreed on it. Tensors live on the communicator's device.
pub fn run(
    config: &SweepConfig,
    comm: &mut dyn Communicator,
    mut on_row: impl FnMut(&SweepRow),
) -> Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for size in config.sizes() {
        let row = measure(comm, size, config.warmup)?;
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// One size on one rank: the checked sum, the warm-up, the timed calls,
/// then the group's slowest time and total of wrong elements.
fn measure(comm: &mut dyn Communicator, size: SweepSize, warmup: u32) -> Result<SweepRow> {
    let (world, rank, device) = (comm.world_size(), comm.rank(), comm.device());
    let count = i64::try_from(size.count)
        .map_err(|_| Error::Config(format!("{} elements are too many", size.count)))?;
    let checked = pattern(count, rank, Kind::Float, device)?;
    comm.all_reduce(std::slice::from_ref(&checked), ReduceOp::Sum)?;
    let wrong = count_wrong(&checked, world)?;
    drop(checked);
    // Zeros stay zeros: repeated sums neither overflow nor lose precision.
    let timed = Tensor::f_zeros([count], (Kind::Float, device))?;
    for _ in 0..warmup {
        comm.all_reduce(std::slice::from_ref(&timed), ReduceOp::Sum)?;
    }
    synchronize(device);
    comm.barrier()?;
    let start = Instant::now();
    for _ in 0..size.iters {
        comm.all_reduce(std::slice::from_ref(&timed), ReduceOp::Sum)?;
    }
    synchronize(device);
    let time_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(size.iters);
    drop(timed);
    // Slot `rank` holds this rank's time, slot `world + rank` its wrong
    // count; everything else is zero, so the sum is every rank's values.
    let mut slots = vec![0.0f64; 2 * world];
    slots[rank] = time_us;
    slots[world + rank] = wrong as f64;
    let gathered = Tensor::from_slice(&slots).f_to_device(device)?;
    comm.all_reduce(std::slice::from_ref(&gathered), ReduceOp::Sum)?;
    let all = Vec::<f64>::try_from(gathered.to_device(Device::Cpu))?;
    Ok(SweepRow {
        size,
        time_us: all[..world].iter().copied().fold(0.0, f64::max),
        mean_time_us: all[..world].iter().sum::<f64>() / world as f64,
        wrong: all[world..].iter().sum::<f64>() as u64,
        world_size: world,
    })
}

/// Waits for the device's queued work (a no-op on the CPU).
fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Rank `rank`'s contribution to the checked sum: element `i` is
/// `h(i) + rank + 1`, where `h(i)` (0..16) is a multiplicative hash of the
/// index, so a chunk summed twice, skipped or put in the wrong place changes
/// the result (small integers: exact in bf16 and f16 too).
pub fn pattern(count: i64, rank: usize, kind: Kind, device: Device) -> tch::Result<Tensor> {
    index_hash(count, device)?
        .f_add_scalar(rank as i64 + 1)?
        .f_to_kind(kind)
}

/// `h(i)` for `i` in `0..count`: Knuth's multiplicative hash, top 4 bits.
fn index_hash(count: i64, device: Device) -> tch::Result<Tensor> {
    Tensor::f_arange(count, (Kind::Int64, device))?
        .f_mul_scalar(2_654_435_761i64)?
        .f_remainder(1i64 << 32)?
        .f_floor_divide_scalar(1i64 << 28)
}

/// Elements of an all-reduced [`pattern`] of `ranks` ranks that differ
/// from the exact sum `n · h(i) + n(n+1)/2`.
pub fn count_wrong(sum: &Tensor, ranks: usize) -> tch::Result<u64> {
    let n = ranks as i64;
    let expected = index_hash(sum.numel() as i64, sum.device())?
        .f_mul_scalar(n)?
        .f_add_scalar(n * (n + 1) / 2)?
        .f_to_kind(Kind::Double)?;
    let wrong = sum
        .f_to_kind(Kind::Double)?
        .f_ne_tensor(&expected)?
        .f_sum(Kind::Int64)?
        .f_int64_value(&[])?;
    Ok(u64::try_from(wrong).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{CollectiveConfig, RingCommunicator, RingListener};

    #[test]
    fn a_wrong_sum_is_counted() {
        let mut sum = pattern(20, 0, Kind::Float, Device::Cpu).unwrap();
        for rank in 1..3 {
            sum += pattern(20, rank, Kind::Float, Device::Cpu).unwrap();
        }
        assert_eq!(count_wrong(&sum, 3).unwrap(), 0);
        let swapped = Tensor::cat(&[sum.narrow(0, 10, 10), sum.narrow(0, 0, 10)], 0);
        assert!(count_wrong(&swapped, 3).unwrap() >= 15);
        assert_eq!(count_wrong(&sum, 2).unwrap(), 20);
    }

    #[test]
    fn a_ring_of_three_sweeps_without_a_wrong_element() {
        let config = SweepConfig {
            min_bytes: 8,
            max_bytes: 4096,
            iters: Some(2),
            warmup: 1,
        };
        let listeners: Vec<RingListener> = (0..3)
            .map(|_| RingListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let peers: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().to_string())
            .collect();
        let handles: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(rank, listener)| {
                let peers = peers.clone();
                std::thread::spawn(move || {
                    let mut comm = RingCommunicator::connect(
                        listener,
                        rank,
                        3,
                        peers,
                        CollectiveConfig::default(),
                    )
                    .unwrap();
                    let mut seen = 0;
                    let rows = run(&config, &mut comm, |_| seen += 1).unwrap();
                    assert_eq!(seen, rows.len());
                    rows
                })
            })
            .collect();
        let rows: Vec<Vec<SweepRow>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(rows[0].len(), 10);
        for row in &rows[0] {
            assert_eq!(row.wrong, 0, "{row:?}");
            assert!(row.time_us > 0.0 && row.busbw() > 0.0, "{row:?}");
            assert!(row.mean_time_us <= row.time_us, "{row:?}");
            assert_eq!(row.world_size, 3);
        }
        // Every rank agreed on the slowest rank's time.
        assert_eq!(rows[0], rows[2]);
    }
}
