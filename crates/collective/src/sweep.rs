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
//! row's time is the slowest rank's (nccl-tests' `-a 3`; its default `-a 1`
//! averages over ranks, kept as [`SweepRow::mean_time_us`]): a collective
//! is as fast as its slowest member. As in nccl-tests, `algbw = size / time` and
//! `busbw = algbw · 2(n−1)/n` ([`algbw`], [`busbw`]): the bytes each rank's
//! links carry in a bandwidth-optimal ring, comparable across group sizes.
//!
//! The formulas live here so the local benchmark (`camshaft-bench
//! allreduce`), the worker that runs a cluster sweep and `ctl bench
//! allreduce`, which prints it, agree on them.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::{Communicator, Error, ReduceOp, Result};

/// The largest message a sweep may ask for (nccl-tests' usual `-e 1G`).
pub const MAX_SWEEP_BYTES: u64 = 1 << 30;

/// nccl-tests' name of the sweep's element type (the `type` column).
pub const SWEEP_DTYPE: &str = "float";

/// nccl-tests' name of the sweep's reduction (the `redop` column).
pub const SWEEP_REDOP: &str = "sum";

/// Bytes per element of the sweep's float32 buffers.
pub const SWEEP_ELEMENT_BYTES: u64 = 4;

/// What to sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepConfig {
    /// Smallest message in bytes.
    pub min_bytes: u64,
    /// Largest message in bytes.
    pub max_bytes: u64,
    /// Timed all-reduces per size; `None`: [`default_iters`].
    pub iters: Option<u32>,
    /// Untimed all-reduces per size.
    pub warmup: u32,
}

/// One message size of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepSize {
    /// Message size in bytes: `count` float32 elements.
    pub bytes: u64,
    /// Elements per rank.
    pub count: u64,
    /// Timed all-reduces.
    pub iters: u32,
}

/// What the group measured at one size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepRow {
    /// The size.
    pub size: SweepSize,
    /// Microseconds per all-reduce on the slowest rank.
    pub time_us: f64,
    /// Microseconds per all-reduce, the mean over ranks.
    pub mean_time_us: f64,
    /// Elements whose checked sum was wrong, over all ranks.
    pub wrong: u64,
    /// Ranks in the group.
    pub world_size: usize,
}

impl SweepRow {
    /// nccl-tests' algorithm bandwidth, GB/s.
    pub fn algbw(&self) -> f64 {
        algbw(self.size.bytes, self.time_us)
    }

    /// nccl-tests' bus bandwidth, GB/s.
    pub fn busbw(&self) -> f64 {
        busbw(self.algbw(), self.world_size)
    }
}

/// nccl-tests' algorithm bandwidth in GB/s: message bytes per second.
pub fn algbw(bytes: u64, time_us: f64) -> f64 {
    bytes as f64 / (time_us * 1e-6) / 1e9
}

/// nccl-tests' bus bandwidth of an all-reduce of `ranks`:
/// `algbw · 2(n−1)/n`, what each rank's links carry in a ring (0 for one
/// rank, as nccl-tests prints it).
pub fn busbw(algbw: f64, ranks: usize) -> f64 {
    let n = ranks as f64;
    algbw * 2.0 * (n - 1.0) / n
}

/// Timed all-reduces of a `bytes` message when none were asked for: 32 MiB
/// worth, at least 3 and at most 50 (small messages are cheap, large ones
/// slow on a CPU ring).
pub fn default_iters(bytes: u64) -> u32 {
    ((32u64 << 20) / bytes.max(1)).clamp(3, 50) as u32
}

impl SweepConfig {
    /// The sizes, smallest first, each a whole number of float32 elements:
    /// `min_bytes` (at least one element), doubling while at most
    /// `max_bytes`.
    pub fn sizes(&self) -> Vec<SweepSize> {
        let mut sizes = Vec::new();
        let mut bytes = self.min_bytes.max(SWEEP_ELEMENT_BYTES);
        while bytes <= self.max_bytes {
            let count = bytes / SWEEP_ELEMENT_BYTES;
            let whole = count * SWEEP_ELEMENT_BYTES;
            sizes.push(SweepSize {
                bytes: whole,
                count,
                iters: self.iters.unwrap_or_else(|| default_iters(whole)).max(1),
            });
            bytes = bytes.saturating_mul(2);
        }
        sizes
    }

    /// Runs the sweep on this rank of `comm` (every rank calls it with the
    /// same config) and hands each size's row to `on_row` as soon as the
    /// group agreed on it. Tensors live on the communicator's device.
    pub fn run(
        &self,
        comm: &mut dyn Communicator,
        mut on_row: impl FnMut(&SweepRow),
    ) -> Result<Vec<SweepRow>> {
        let mut rows = Vec::new();
        for size in self.sizes() {
            let row = measure(comm, size, self.warmup)?;
            on_row(&row);
            rows.push(row);
        }
        Ok(rows)
    }
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
    fn busbw_is_the_ring_share_of_algbw() {
        assert_eq!(busbw(1.0, 1), 0.0);
        assert_eq!(busbw(1.0, 2), 1.0);
        assert_eq!(busbw(4.0, 4), 6.0);
        assert!((algbw(1_000_000, 1000.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sizes_double_in_whole_elements() {
        let config = SweepConfig {
            min_bytes: 6,
            max_bytes: 48,
            iters: None,
            warmup: 0,
        };
        let bytes: Vec<u64> = config.sizes().iter().map(|s| s.bytes).collect();
        assert_eq!(bytes, [4, 12, 24, 48]);
        let nccl_tests = SweepConfig {
            min_bytes: 8,
            max_bytes: 1 << 20,
            ..config
        };
        assert_eq!(nccl_tests.sizes().len(), 18);
        assert_eq!(nccl_tests.sizes()[0].iters, 50);
        assert_eq!(default_iters(1 << 30), 3);
    }

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
                    let rows = config.run(&mut comm, |_| seen += 1).unwrap();
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
