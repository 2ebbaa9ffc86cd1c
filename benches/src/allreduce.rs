//! `allreduce`: the bandwidth of one in-place all-reduce (sum) per message
//! size, as nccl-tests' `all_reduce_perf` prints it, ours against
//! `torch.distributed`.
//!
//! Ours: `ranks` threads joined by the active communicator
//! ([`Backend::Ring`]: the TCP ring on loopback, CPU tensors;
//! [`Backend::Nccl`]: one GPU per rank). PyTorch: `reference/allreduce.py`,
//! `ranks` processes with gloo (or NCCL on GPUs). For each size from
//! `--min-bytes` to `--max-bytes` (×`--step-factor`), both sides first
//! all-reduce a pattern whose sum every rank checks element by element
//! (`#wrong`), then run `--warmup` untimed all-reduces and `--repeats` timed
//! runs of `iters` all-reduces each after a barrier; a sample is the mean
//! time of one all-reduce in a run, on rank 0's clock. As in nccl-tests,
//! `algbw = size / time` and `busbw = algbw · 2(n−1)/n`, the bytes each rank
//! sends and receives in a bandwidth-optimal ring, comparable across group
//! sizes.

use anyhow::{Context, ensure};
pub use camshaft_collective::sweep::{count_wrong, pattern};
use camshaft_collective::{Communicator, ReduceOp};
use camshaft_metrics::stats::median;
use camshaft_spec::sweep;
pub use camshaft_spec::sweep::busbw;
use clap::Parser;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::group::{Backend, run_group};
use crate::measure::{Measurement, sync};
use crate::reference::script_call;
use crate::report::BenchResult;

/// Element type of the reduced tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl Dtype {
    /// The libtorch kind.
    pub fn kind(self) -> Kind {
        match self {
            Dtype::F32 => Kind::Float,
            Dtype::Bf16 => Kind::BFloat16,
            Dtype::F16 => Kind::Half,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        self.kind().elt_size_in_bytes()
    }

    /// nccl-tests' name for it (the `type` column).
    pub fn nccl_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "half",
        }
    }

    /// `torch`'s name for it (the reference script's `--dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "float16",
        }
    }
}

/// Options of `allreduce`.
#[derive(Clone, Debug, Parser)]
pub struct AllreduceArgs {
    /// Communicator: the TCP ring on the CPU, or NCCL on GPUs.
    #[arg(long, value_enum, default_value_t = Backend::Ring)]
    pub backend: Backend,
    /// Ranks in the group (threads for ours, processes for PyTorch)
    /// [default: 2 on the ring, every visible GPU for NCCL].
    #[arg(long)]
    pub ranks: Option<usize>,
    /// Smallest message in bytes.
    #[arg(long, default_value_t = 8)]
    pub min_bytes: usize,
    /// Largest message in bytes (nccl-tests goes to 1 GiB on GPUs; 64 MiB
    /// takes a few seconds per size over loopback on 2 cores).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_bytes: usize,
    /// Each size is this many times the previous one.
    #[arg(long, default_value_t = 2)]
    pub step_factor: usize,
    /// Element type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// Untimed all-reduces per size.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// All-reduces per timed repeat [default: 32 MiB worth, between 3 and
    /// 50].
    #[arg(long)]
    pub iters: Option<usize>,
    /// Timed repeats per size; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

/// One message size of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeStep {
    /// Message size: `count` elements.
    pub bytes: usize,
    /// Elements per rank.
    pub count: usize,
    /// All-reduces per timed repeat.
    pub iters: usize,
}

/// What one side measured at one size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeTiming {
    /// Message size in bytes.
    pub bytes: usize,
    /// Elements per rank.
    pub count: usize,
    /// Mean microseconds per all-reduce, one sample per timed repeat.
    pub samples_us: Vec<f64>,
    /// Elements whose checked sum was wrong, over all ranks.
    pub wrong: u64,
}

impl SizeTiming {
    /// The median microseconds per all-reduce.
    pub fn time_us(&self) -> f64 {
        median(&self.samples_us).unwrap_or(f64::NAN)
    }
}

/// nccl-tests' algorithm bandwidth in GB/s: message bytes per second (the
/// definition `ctl bench allreduce` uses too, from
/// `camshaft_spec::sweep`).
pub fn algbw(bytes: usize, time_us: f64) -> f64 {
    sweep::algbw(bytes as u64, time_us)
}

impl AllreduceArgs {
    /// The group size: `--ranks` or the backend's default.
    pub fn ranks(&self) -> anyhow::Result<usize> {
        let ranks = self.ranks.unwrap_or_else(|| self.backend.default_ranks());
        match self.backend {
            Backend::Ring => ensure!(ranks >= 1, "--ranks must be at least 1"),
            Backend::Nccl => ensure!(
                ranks >= 1,
                "--backend nccl needs CUDA GPUs, and libtorch sees none on this machine"
            ),
        }
        Ok(ranks)
    }

    /// The sizes to run, smallest first (each a whole number of elements).
    pub fn sizes(&self) -> anyhow::Result<Vec<SizeStep>> {
        ensure!(self.step_factor >= 2, "--step-factor must be at least 2");
        ensure!(
            self.min_bytes <= self.max_bytes,
            "--min-bytes {} is above --max-bytes {}",
            self.min_bytes,
            self.max_bytes
        );
        ensure!(self.repeats >= 1, "--repeats must be at least 1");
        let elt = self.dtype.bytes();
        let mut steps = Vec::new();
        let mut bytes = self.min_bytes.max(elt);
        while bytes <= self.max_bytes {
            let count = bytes / elt;
            let iters = self.iters.unwrap_or(((32usize << 20) / bytes).clamp(3, 50));
            steps.push(SizeStep {
                bytes: count * elt,
                count,
                iters: iters.max(1),
            });
            bytes = bytes.saturating_mul(self.step_factor);
        }
        Ok(steps)
    }

    /// `reference/allreduce.py`'s name and arguments for `sizes`.
    pub fn reference_args(&self, ranks: usize, sizes: &[SizeStep]) -> (&'static str, Vec<String>) {
        let list = |f: fn(&SizeStep) -> usize| {
            sizes
                .iter()
                .map(|s| f(s).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        script_call(
            "allreduce.py",
            [
                ("--backend", self.backend.torch_backend().to_string()),
                ("--ranks", ranks.to_string()),
                ("--dtype", self.dtype.torch_name().to_string()),
                ("--sizes", list(|s| s.bytes)),
                ("--iters", list(|s| s.iters)),
                ("--warmup", self.warmup.to_string()),
                ("--repeats", self.repeats.to_string()),
            ],
        )
    }
}

/// Our sweep: rank 0's timings, `wrong` summed over the ranks.
pub fn ours(args: &AllreduceArgs, ranks: usize) -> anyhow::Result<Vec<SizeTiming>> {
    let sizes = args.sizes()?;
    tch::set_num_threads(1);
    let per_rank = run_group(args.backend, ranks, |rank, mut comm| {
        tch::set_num_threads(1);
        let device = args.backend.device(rank);
        sizes
            .iter()
            .map(|step| measure_size(comm.as_mut(), device, args, step))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut rows = per_rank
        .first()
        .cloned()
        .context("the group returned no ranks")?;
    for (i, row) in rows.iter_mut().enumerate() {
        row.wrong = per_rank.iter().map(|r| r[i].wrong).sum();
    }
    Ok(rows)
}

/// One size on one rank: the checked sum, the warm-up, the timed repeats.
fn measure_size(
    comm: &mut dyn Communicator,
    device: Device,
    args: &AllreduceArgs,
    step: &SizeStep,
) -> anyhow::Result<SizeTiming> {
    let (ranks, rank) = (comm.world_size(), comm.rank());
    let kind = args.dtype.kind();
    let count = i64::try_from(step.count)?;
    let checked = pattern(count, rank, kind, device)?;
    comm.all_reduce(std::slice::from_ref(&checked), ReduceOp::Sum)?;
    let wrong = count_wrong(&checked, ranks)?;
    // Zeros stay zeros: repeated sums neither overflow nor lose precision.
    let timed = Tensor::f_zeros([count], (kind, device))?;
    for _ in 0..args.warmup {
        comm.all_reduce(std::slice::from_ref(&timed), ReduceOp::Sum)?;
    }
    let mut samples_us = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        sync(device);
        comm.barrier()?;
        let start = std::time::Instant::now();
        for _ in 0..step.iters {
            comm.all_reduce(std::slice::from_ref(&timed), ReduceOp::Sum)?;
        }
        sync(device);
        samples_us.push(start.elapsed().as_secs_f64() * 1e6 / step.iters as f64);
    }
    Ok(SizeTiming {
        bytes: step.bytes,
        count: step.count,
        samples_us,
        wrong,
    })
}

/// The nccl-tests table of both sides, one row per size, with the ratio of
/// PyTorch's time to ours (>1: ours is faster), then the overall ratio.
pub fn table(
    args: &AllreduceArgs,
    ranks: usize,
    ours: &[SizeTiming],
    theirs: &[SizeTiming],
) -> String {
    let ours_name = format!("ours ({})", args.backend.name());
    let theirs_name = format!("torch {}", args.backend.torch_backend());
    let mut out = format!(
        "# all-reduce, {ranks} ranks, in place; time = median µs per call; busbw = algbw · 2(n−1)/n\n\
         # {:>10} {:>10} {:>8} {:>5}   {ours_name:>30}   {theirs_name:>30}   {:>6}\n\
         # {:>10} {:>10} {:>8} {:>5}   {:>10} {:>6} {:>6} {:>6}   {:>10} {:>6} {:>6} {:>6}\n",
        "",
        "",
        "",
        "",
        "ratio",
        "size(B)",
        "count",
        "type",
        "redop",
        "time(us)",
        "algbw",
        "busbw",
        "#wrong",
        "time(us)",
        "algbw",
        "busbw",
        "#wrong",
    );
    for (a, b) in ours.iter().zip(theirs) {
        let cells = |t: &SizeTiming| {
            let us = t.time_us();
            let alg = algbw(t.bytes, us);
            format!(
                "{us:>10.1} {alg:>6.3} {:>6.3} {:>6}",
                busbw(alg, ranks),
                t.wrong
            )
        };
        out.push_str(&format!(
            "  {:>10} {:>10} {:>8} {:>5}   {}   {}   {:>5.2}×\n",
            a.bytes,
            a.count,
            args.dtype.nccl_name(),
            "sum",
            cells(a),
            cells(b),
            b.time_us() / a.time_us()
        ));
    }
    out.push_str(&format!(
        "# overall (geometric mean of the per-size ratios): {:.2}×\n",
        overall_ratio(ours, theirs)
    ));
    out
}

/// The geometric mean of `theirs / ours` time over sizes both ran.
pub fn overall_ratio(ours: &[SizeTiming], theirs: &[SizeTiming]) -> f64 {
    let logs: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (b.time_us() / a.time_us()).ln())
        .collect();
    (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp()
}

/// The suite's row: bus bandwidth at the largest size on both sides; every
/// size, with its ratio, and the overall ratio in the JSON.
pub fn summary(
    args: &AllreduceArgs,
    ranks: usize,
    ours: &[SizeTiming],
    theirs: &[SizeTiming],
    goal: f64,
) -> anyhow::Result<BenchResult> {
    let (largest, their_largest) = ours.last().zip(theirs.last()).context("no sizes ran")?;
    let busbw_samples = |t: &SizeTiming| {
        let samples = t
            .samples_us
            .iter()
            .map(|&us| busbw(algbw(t.bytes, us), ranks))
            .collect();
        Measurement::from_samples(samples).context("allreduce: no timed repeats")
    };
    let overall = overall_ratio(ours, theirs);
    let rows: Vec<serde_json::Value> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| {
            serde_json::json!({
                "bytes": a.bytes,
                "count": a.count,
                "ours": a,
                "ours_time_us": a.time_us(),
                "pytorch": b,
                "pytorch_time_us": b.time_us(),
                "ratio": b.time_us() / a.time_us(),
            })
        })
        .collect();
    let detail = format!(
        "{ranks} ranks, {} vs torch {}, busbw at {}; {} sizes {}–{}: {overall:.2}× geomean",
        args.backend.name(),
        args.backend.torch_backend(),
        human_bytes(largest.bytes),
        ours.len(),
        human_bytes(ours[0].bytes),
        human_bytes(largest.bytes),
    );
    let extra = serde_json::json!({
        "backend": args.backend.name(),
        "reference_backend": args.backend.torch_backend(),
        "ranks": ranks,
        "dtype": args.dtype.nccl_name(),
        "overall_ratio_geomean": overall,
        "sizes": rows,
    });
    Ok(BenchResult::new(
        format!("allreduce_{}", args.dtype.nccl_name()),
        detail,
        "GB/s busbw",
        busbw_samples(largest)?,
        busbw_samples(their_largest)?,
        goal,
    )
    .with_extra(extra))
}

/// `8 B`, `4 KiB`, `64 MiB`: a size in the largest binary unit that
/// divides it.
fn human_bytes(bytes: usize) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes;
    let mut unit = 0;
    while unit + 1 < units.len() && value >= 1024 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(8), "8 B");
        assert_eq!(human_bytes(1536), "1536 B");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
    }

    #[test]
    fn sizes_double_in_whole_elements() {
        let args = AllreduceArgs::try_parse_from([
            "allreduce",
            "--min-bytes",
            "6",
            "--max-bytes",
            "48",
            "--dtype",
            "f32",
        ])
        .expect("valid flags");
        let bytes: Vec<usize> = args
            .sizes()
            .expect("sizes")
            .iter()
            .map(|s| s.bytes)
            .collect();
        assert_eq!(bytes, [4, 12, 24, 48]);
    }

    #[test]
    fn the_ring_sums_every_size_right() {
        for dtype in ["f32", "bf16", "f16"] {
            let args = AllreduceArgs::try_parse_from([
                "allreduce",
                "--max-bytes",
                "4096",
                "--warmup",
                "1",
                "--repeats",
                "1",
                "--iters",
                "1",
                "--dtype",
                dtype,
            ])
            .expect("valid flags");
            let rows = ours(&args, 3).expect("a ring of 3 threads");
            assert_eq!(rows.len(), 10);
            assert!(rows.iter().all(|r| r.wrong == 0), "{dtype}: {rows:?}");
        }
    }

    #[test]
    fn a_wrong_sum_is_counted() {
        let mut sum = pattern(20, 0, Kind::Float, Device::Cpu).expect("pattern");
        for rank in 1..3 {
            sum += pattern(20, rank, Kind::Float, Device::Cpu).expect("pattern");
        }
        assert_eq!(count_wrong(&sum, 3).expect("count"), 0);
        // Ranks' chunks swapped: a ring that misplaced a chunk.
        let swapped = Tensor::cat(&[sum.narrow(0, 10, 10), sum.narrow(0, 0, 10)], 0);
        let misplaced = count_wrong(&swapped, 3).expect("count");
        assert!(
            misplaced >= 15,
            "{misplaced} of 20 misplaced elements caught"
        );
        assert_eq!(count_wrong(&sum, 2).expect("count"), 20);
    }
}
