//! An all-reduce bandwidth sweep's settings and formulas, as nccl-tests'
//! `all_reduce_perf` defines them: float32, sum, in place, message sizes
//! doubling from `min_bytes` to `max_bytes` ([`SweepConfig::sizes`]).
//!
//! A row's time is the slowest rank's mean per call (nccl-tests' `-a 3`;
//! its default `-a 1` averages over ranks, kept as
//! [`SweepRow::mean_time_us`]): a collective is as fast as its slowest
//! member. As in nccl-tests, `algbw = size / time` and
//! `busbw = algbw · 2(n−1)/n` ([`algbw`], [`busbw`]): the bytes each
//! rank's links carry in a bandwidth-optimal ring, comparable across group
//! sizes.
//!
//! This module holds no tensors, so the local benchmark
//! (`camshaft-bench allreduce`), the worker that runs a cluster sweep
//! (`camshaft_collective::sweep::run`) and `ctl bench allreduce`, which
//! prints it without libtorch, agree on them.
//!
//! # Example
//!
//! ```
//! use camshaft_spec::sweep::{SweepConfig, busbw};
//!
//! let config = SweepConfig { min_bytes: 6, max_bytes: 48, iters: None, warmup: 0 };
//! let bytes: Vec<u64> = config.sizes().iter().map(|s| s.bytes).collect();
//! assert_eq!(bytes, [4, 12, 24, 48]);
//! assert_eq!(busbw(4.0, 4), 6.0);
//! ```

/// The largest message a sweep may ask for (nccl-tests' usual `-e 1G`).
pub const MAX_SWEEP_BYTES: u64 = 1 << 30;

/// nccl-tests' name of the sweep's element type (the `type` column).
pub const SWEEP_DTYPE: &str = "float";

/// nccl-tests' name of the sweep's reduction (the `redop` column).
pub const SWEEP_REDOP: &str = "sum";

/// Bytes per element of the sweep's float32 buffers.
pub const SWEEP_ELEMENT_BYTES: u64 = 4;

/// The smallest message a sweep may ask for: one float32.
pub const MIN_SWEEP_BYTES: u64 = SWEEP_ELEMENT_BYTES;

/// Most timed (or warm-up) all-reduces per size.
pub const MAX_SWEEP_ITERS: u32 = 10_000;

/// The smallest message when a sweep names none (nccl-tests' `-b 8`).
pub const DEFAULT_MIN_BYTES: u64 = 8;

/// The largest message when a sweep names none (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Untimed all-reduces per size when a sweep names none.
pub const DEFAULT_WARMUP: u32 = 5;

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
    /// A sweep as a job asks for it (0 bytes: the default; 0 iterations:
    /// [`default_iters`] per size; no warm-up: [`DEFAULT_WARMUP`]), every
    /// default applied and bound checked, or the first field that is wrong.
    pub fn complete(
        min_bytes: u64,
        max_bytes: u64,
        iters: u32,
        warmup: Option<u32>,
    ) -> Result<SweepConfig, crate::FieldError> {
        let refuse = |field: &'static str, reason: String| Err(crate::FieldError { field, reason });
        let min_bytes = if min_bytes == 0 {
            DEFAULT_MIN_BYTES
        } else {
            min_bytes
        };
        let max_bytes = if max_bytes == 0 {
            DEFAULT_MAX_BYTES
        } else {
            max_bytes
        };
        let warmup = warmup.unwrap_or(DEFAULT_WARMUP);
        if min_bytes < MIN_SWEEP_BYTES {
            return refuse(
                "collective_bench.min_bytes",
                format!(
                    "collective_bench.min_bytes must be at least {MIN_SWEEP_BYTES} (one float32), not {min_bytes}"
                ),
            );
        }
        if max_bytes > MAX_SWEEP_BYTES {
            return refuse(
                "collective_bench.max_bytes",
                format!(
                    "collective_bench.max_bytes must be at most 1 GiB ({MAX_SWEEP_BYTES} bytes), not {max_bytes}"
                ),
            );
        }
        if min_bytes > max_bytes {
            return refuse(
                "collective_bench.min_bytes",
                format!("collective_bench.min_bytes {min_bytes} is above max_bytes {max_bytes}"),
            );
        }
        if iters > MAX_SWEEP_ITERS {
            return refuse(
                "collective_bench.iters",
                format!("collective_bench.iters must be at most {MAX_SWEEP_ITERS}, not {iters}"),
            );
        }
        if warmup > MAX_SWEEP_ITERS {
            return refuse(
                "collective_bench.warmup",
                format!("collective_bench.warmup must be at most {MAX_SWEEP_ITERS}, not {warmup}"),
            );
        }
        Ok(SweepConfig {
            min_bytes,
            max_bytes,
            iters: (iters > 0).then_some(iters),
            warmup,
        })
    }

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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
    fn a_row_reports_the_slowest_ranks_bandwidth() {
        let row = SweepRow {
            size: SweepSize {
                bytes: 1_000_000,
                count: 250_000,
                iters: 3,
            },
            time_us: 1000.0,
            mean_time_us: 500.0,
            wrong: 0,
            world_size: 4,
        };
        assert!((row.algbw() - 1.0).abs() < 1e-12);
        assert!((row.busbw() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn a_sweep_completes_with_its_defaults_and_bounds() {
        let defaults = SweepConfig::complete(0, 0, 0, None).unwrap();
        assert_eq!(
            defaults,
            SweepConfig {
                min_bytes: DEFAULT_MIN_BYTES,
                max_bytes: DEFAULT_MAX_BYTES,
                iters: None,
                warmup: DEFAULT_WARMUP,
            }
        );
        assert_eq!(
            SweepConfig::complete(4, 4, 7, Some(0)).unwrap().iters,
            Some(7)
        );
        let refused = |min, max, iters, warmup| {
            SweepConfig::complete(min, max, iters, warmup)
                .unwrap_err()
                .field
        };
        assert_eq!(refused(2, 0, 0, None), "collective_bench.min_bytes");
        assert_eq!(
            refused(0, MAX_SWEEP_BYTES + 1, 0, None),
            "collective_bench.max_bytes"
        );
        assert_eq!(refused(64, 32, 0, None), "collective_bench.min_bytes");
        assert_eq!(
            refused(0, 0, MAX_SWEEP_ITERS + 1, None),
            "collective_bench.iters"
        );
        assert_eq!(
            refused(0, 0, 0, Some(MAX_SWEEP_ITERS + 1)),
            "collective_bench.warmup"
        );
    }
}
