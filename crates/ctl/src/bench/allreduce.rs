//! `ctl bench allreduce`: the all-reduce bandwidth of the cluster's own
//! ranks and communicator (the TCP ring on CPU workers, NCCL on GPUs),
//! printed as nccl-tests' `all_reduce_perf` prints it.
//!
//! The ranks are laid out from `ListWorkers` like `ctl bench train`'s
//! ([`place`]); one job with `JobSpec.collective_bench` set is submitted,
//! whose group is formed like a training group. Every rank runs the sweep
//! of `camshaft_collective::sweep` on the real communicator; rank 0 reports
//! each size as the group agreed on it (time: the slowest rank's; `#wrong`:
//! all ranks'), and the rows arrive here as `Allreduce` job events and are
//! printed as they come. The job succeeds without registering anything.
//!
//! ```text
//! $ ctl bench allreduce --ranks 2 --report bench/allreduce
//! # all-reduce, 2 ranks (2 × cpu), ring, in place, float sum; time = the slowest rank's mean µs per call; busbw = algbw · 2(n−1)/n
//! #       size         count      type   redop      time   algbw   busbw #wrong
//! #        (B)    (elements)                        (us)  (GB/s)  (GB/s)
//!            8             2     float     sum     27.07    0.00    0.00      0
//! ...
//!     67108864      16777216     float     sum  50188.60    1.34    1.34      0
//! # Out of bounds values : 0 OK
//! # Avg bus bandwidth    : 0.6888 GB/s
//! # Peak bus bandwidth   : 2.0075 GB/s at 512.0 KiB (2 ranks)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use camshaft_proto::security::AuthChannel;
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::job_event::Event;
use camshaft_proto::v1::{
    AllReduceRow, CollectiveBackend, CollectiveBench, DeviceKind, JobSpec, JobState,
    SubmitJobRequest,
};
use camshaft_spec::sweep::{DEFAULT_MAX_BYTES, MAX_SWEEP_BYTES, SWEEP_ELEMENT_BYTES};
use clap::Args;
use plotters::prelude::*;
use serde::Serialize;

use super::placement::{Placement, RankDevice, place};
use super::plot::{self, Frame};
use super::{cancel, capacity, interrupt_flag, interrupted};
use crate::client::Servers;
use crate::console;
use crate::error::{AlreadyReported, CallError, EXIT_INTERRUPTED, InputError};
use crate::output::{AllReduceTable, allreduce_footer, format_bytes};
use crate::watch::JobEvents;

/// `ctl bench allreduce`.
#[derive(Clone, Debug, Args)]
pub struct AllreduceArgs {
    /// Ranks in the group [default: every rank the cluster has for the device].
    #[arg(long)]
    pub ranks: Option<u32>,
    /// What the ranks run on: cpu or cuda [default: cuda for --collective
    /// nccl or when a worker has GPUs, else cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// The communicator: ring (TCP, CPU tensors) or nccl (CUDA tensors)
    /// [default: nccl when every rank is on a GPU, else the ring].
    #[arg(long)]
    pub collective: Option<String>,
    /// Smallest message (bytes; K, M and G suffixes are binary, as in
    /// nccl-tests).
    #[arg(long, default_value = "8", value_parser = parse_bytes)]
    pub min_bytes: u64,
    /// Largest message, at most 1G [default: 1G on GPUs, 64M on CPUs].
    #[arg(long, value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Timed all-reduces per size [default: 32 MiB worth, 3 to 50].
    #[arg(long)]
    pub iters: Option<u32>,
    /// Untimed all-reduces per size before the timed ones.
    #[arg(long, default_value_t = 5)]
    pub warmup: u32,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a report folder: report.md, busbw.svg, bench.json.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// `ctl bench allreduce` with its flags checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AllreduceBench {
    /// `--ranks`; `None`: every rank of the cluster.
    pub ranks: Option<u32>,
    /// `--device`.
    pub device: Option<RankDevice>,
    /// `--collective`.
    pub collective: CollectiveBackend,
    /// The sweep, as the job spec carries it.
    pub sweep: CollectiveBench,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--report`.
    pub report: Option<PathBuf>,
}

/// `8`, `4K`, `1M`, `1G` (binary units, as nccl-tests reads them; `KiB`,
/// `MB` and friends are the same).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size in bytes (e.g. 8, 4K, 1M, 1G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}: use K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl AllreduceBench {
    /// Checks the flags (the coordinator checks the spec again on submit).
    pub fn from_args(args: AllreduceArgs) -> Result<AllreduceBench, InputError> {
        let mut device = args.device.as_deref().map(RankDevice::parse).transpose()?;
        let collective = match args.collective.as_deref().map(str::to_ascii_lowercase) {
            None => CollectiveBackend::Unspecified,
            Some(name) if name == "ring" => CollectiveBackend::Ring,
            Some(name) if name == "nccl" => CollectiveBackend::Nccl,
            Some(name) => {
                return Err(InputError::new(format!(
                    "unknown collective {name:?}: use ring or nccl"
                )));
            }
        };
        if collective == CollectiveBackend::Nccl {
            if device == Some(RankDevice::Cpu) {
                return Err(InputError::new(
                    "--collective nccl needs --device cuda (NCCL reduces CUDA tensors)",
                ));
            }
            device = Some(RankDevice::Cuda);
        }
        if args.ranks == Some(0) {
            return Err(InputError::new("--ranks must be at least 1"));
        }
        let on_gpus = device == Some(RankDevice::Cuda) && collective != CollectiveBackend::Ring;
        let max_bytes = args.max_bytes.unwrap_or(if on_gpus {
            MAX_SWEEP_BYTES
        } else {
            DEFAULT_MAX_BYTES
        });
        if args.min_bytes < SWEEP_ELEMENT_BYTES {
            return Err(InputError::new(format!(
                "--min-bytes must be at least {SWEEP_ELEMENT_BYTES} (one float), not {}",
                args.min_bytes
            )));
        }
        if max_bytes > MAX_SWEEP_BYTES {
            return Err(InputError::new(format!(
                "--max-bytes must be at most 1G, not {max_bytes}"
            )));
        }
        if args.min_bytes > max_bytes {
            return Err(InputError::new(format!(
                "--min-bytes {} is above --max-bytes {max_bytes}",
                args.min_bytes
            )));
        }
        if args.iters == Some(0) {
            return Err(InputError::new("--iters must be at least 1"));
        }
        Ok(AllreduceBench {
            ranks: args.ranks,
            device,
            collective,
            sweep: CollectiveBench {
                min_bytes: args.min_bytes,
                max_bytes,
                iters: args.iters.unwrap_or(0),
                warmup: Some(args.warmup),
            },
            json: args.json,
            report: args.report,
        })
    }

    /// The job spec of the sweep on `placement`.
    pub fn spec(&self, placement: &Placement) -> JobSpec {
        JobSpec {
            name: "allreduce".into(),
            workers: placement.workers,
            gpus_per_worker: placement.gpus_per_worker,
            device: match placement.device {
                RankDevice::Cpu => DeviceKind::Cpu,
                RankDevice::Cuda => DeviceKind::Cuda,
            } as i32,
            collective: self.collective as i32,
            collective_bench: Some(self.sweep),
            ..JobSpec::default()
        }
    }
}

/// What `--json` and `--report` hold.
#[derive(Clone, Debug, Serialize)]
pub struct AllreduceReport {
    /// The job that ran the sweep.
    pub job_id: String,
    /// Where the ranks ran.
    pub placement: Placement,
    /// The communicator measured: `ring` or `nccl`.
    pub collective: String,
    /// The sweep as the coordinator stored it (defaults applied).
    pub min_bytes: u64,
    /// Largest message.
    pub max_bytes: u64,
    /// Timed all-reduces per size; 0: 32 MiB worth, 3 to 50 (each row has its own).
    pub iters: u32,
    /// Untimed all-reduces per size.
    pub warmup: u32,
    /// One row per size, smallest first (nccl-tests' columns).
    pub rows: Vec<AllReduceRow>,
    /// The highest bus bandwidth, GB/s.
    pub peak_busbw_gbps: f64,
    /// The size it was reached at.
    pub peak_bytes: u64,
    /// The mean bus bandwidth over the sizes (nccl-tests' "Avg bus bandwidth").
    pub avg_busbw_gbps: f64,
    /// Wrong elements over every size and rank.
    pub wrong: u64,
}

impl AllreduceReport {
    /// The report of `rows`.
    pub fn new(
        job_id: String,
        placement: Placement,
        spec: &JobSpec,
        rows: Vec<AllReduceRow>,
    ) -> AllreduceReport {
        let sweep = spec.collective_bench.unwrap_or_default();
        let collective = rows
            .first()
            .map_or(spec.collective(), AllReduceRow::collective);
        let peak = rows
            .iter()
            .max_by(|a, b| a.busbw_gbps.total_cmp(&b.busbw_gbps));
        AllreduceReport {
            job_id,
            placement,
            collective: collective.short_name().to_string(),
            min_bytes: sweep.min_bytes,
            max_bytes: sweep.max_bytes,
            iters: sweep.iters,
            warmup: sweep.warmup.unwrap_or(5),
            peak_busbw_gbps: peak.map_or(0.0, |r| r.busbw_gbps),
            peak_bytes: peak.map_or(0, |r| r.bytes),
            avg_busbw_gbps: rows.iter().map(|r| r.busbw_gbps).sum::<f64>()
                / rows.len().max(1) as f64,
            wrong: rows.iter().map(|r| r.wrong).sum(),
            rows,
        }
    }

    /// The line above the table.
    pub fn workload(&self) -> String {
        workload(&self.placement, &self.collective)
    }

    /// The nccl-tests table with its closing lines.
    pub fn table(&self) -> String {
        let mut table = AllReduceTable::default();
        let mut lines: Vec<String> = self.rows.iter().flat_map(|r| table.lines(r)).collect();
        lines.extend(allreduce_footer(&self.rows));
        lines.join("\n") + "\n"
    }

    /// `report.md`: the workload, the table and the plot.
    pub fn markdown(&self) -> String {
        format!(
            "# All-reduce bandwidth\n\n{}\n\nJob `{}`; {} … {}, warm-up {} per size, iters {}. \
             `time` is the slowest rank's mean µs per call (nccl-tests' `-a 3`; the JSON's \
             `mean_time_us` is the mean over ranks, its default `-a 1`); `algbw = size / time`, \
             `busbw = algbw · 2(n−1)/n` (nccl-tests' definitions).\n\n```text\n{}```\n\n\
             ![bus bandwidth against message size](busbw.svg)\n",
            self.workload().trim_start_matches("# "),
            self.job_id,
            format_bytes(self.min_bytes),
            format_bytes(self.max_bytes),
            self.warmup,
            if self.iters == 0 {
                "32 MiB worth (3 to 50)".to_string()
            } else {
                self.iters.to_string()
            },
            self.table()
        )
    }
}

fn workload(placement: &Placement, collective: &str) -> String {
    format!(
        "# all-reduce, {} rank{} ({}), {collective}, in place, float sum; \
         time = the slowest rank's mean µs per call; busbw = algbw · 2(n−1)/n",
        placement.ranks,
        if placement.ranks == 1 { "" } else { "s" },
        placement.label()
    )
}

/// Bus bandwidth against message size, sizes on a log₂ axis.
pub fn busbw_svg(report: &AllreduceReport) -> anyhow::Result<String> {
    let points: Vec<(f64, f64)> = report
        .rows
        .iter()
        .map(|r| ((r.bytes.max(1) as f64).log2(), r.busbw_gbps))
        .collect();
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(x, _)| {
            (lo.min(x), hi.max(x))
        });
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let top = points.iter().map(|&(_, y)| y).fold(0.0, f64::max).max(1e-3) * 1.15;
    let size_label = |x: &f64| format_bytes(2f64.powf(x.round()) as u64);
    let frame = Frame {
        caption: &format!(
            "All-reduce bus bandwidth — {} ranks, {}",
            report.placement.ranks, report.collective
        ),
        x: ("message size", (lo - 0.5)..(hi + 0.5)),
        y: ("busbw (GB/s)", 0.0..top),
        x_labels: Some(&size_label),
        legend: None,
    };
    plot::svg(frame, |chart| {
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            ShapeStyle::from(&BLUE).stroke_width(2),
        ))?;
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, BLUE.filled())),
        )?;
        Ok(())
    })
}

/// Writes the `--report` folder: `report.md`, `busbw.svg` and `bench.json`.
/// Returns the Markdown file's path.
pub fn write_report(dir: &Path, report: &AllreduceReport) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        anyhow::Ok(path)
    };
    write("busbw.svg", busbw_svg(report)?)?;
    super::report::write_json(&dir.join("bench.json"), report)?;
    write("report.md", report.markdown())
}

/// `ctl bench allreduce`.
pub async fn run(servers: &Servers, bench: AllreduceBench) -> anyhow::Result<()> {
    let mut client = servers.coordinator().await?;
    let capacity = capacity(&mut client, bench.device).await?;
    let ranks = bench.ranks.unwrap_or(capacity.total_ranks().max(1));
    let placement = place(ranks, &capacity)?;
    let mut interrupt = interrupt_flag();
    let job = client
        .submit_job(SubmitJobRequest {
            request_id: String::new(),
            spec: Some(bench.spec(&placement)),
        })
        .await
        .map_err(CallError::wrap("coordinator", "SubmitJob"))?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("the coordinator accepted the job but returned none"))?;
    eprintln!("all-reduce sweep: {}", job.id);
    let spec = job.spec.unwrap_or_default();
    let mut cancel_client = client.clone();
    let rows = tokio::select! {
        rows = follow(servers, client, &job.id, &placement) => rows?,
        () = interrupted(&mut interrupt) => {
            cancel(&mut cancel_client, &job.id, "ctl bench interrupted (Ctrl-C)").await?;
            eprintln!("\ninterrupted: cancelled {}", job.id);
            return Err(AlreadyReported { code: EXIT_INTERRUPTED }.into());
        }
    };
    let report = AllreduceReport::new(job.id, placement, &spec, rows);
    for line in allreduce_footer(&report.rows) {
        console::line(line)?;
    }
    if let Some(path) = &bench.json {
        super::report::write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &bench.report {
        let markdown = write_report(dir, &report)?;
        eprintln!("wrote {}", markdown.display());
    }
    if report.wrong > 0 {
        anyhow::bail!(
            "{} elements were summed wrong: the communicator is broken",
            report.wrong
        );
    }
    Ok(())
}

/// Prints the rows as they arrive; returns those of the attempt that
/// finished once the job succeeded.
async fn follow(
    servers: &Servers,
    client: CoordinatorClient<AuthChannel>,
    job_id: &str,
    placement: &Placement,
) -> anyhow::Result<Vec<AllReduceRow>> {
    let mut events = JobEvents::open(servers, Some(client), job_id, false).await?;
    let mut table = AllReduceTable::default();
    let mut rows: Vec<AllReduceRow> = Vec::new();
    loop {
        let event = events.next().await?;
        match event.event {
            Some(Event::Allreduce(row)) => {
                if rows.is_empty() {
                    let collective = row.collective().short_name().to_string();
                    console::line(workload(placement, &collective))?;
                }
                // A restarted attempt measures every size again.
                if rows.last().is_some_and(|r| r.attempt != row.attempt) {
                    rows.clear();
                }
                for line in table.lines(&row) {
                    console::line(line)?;
                }
                rows.push(row);
            }
            Some(Event::StateChanged(change)) => {
                let to = JobState::try_from(change.to).unwrap_or(JobState::Unspecified);
                match to {
                    JobState::Succeeded => return Ok(rows),
                    JobState::Failed | JobState::Cancelled => {
                        anyhow::bail!(
                            "all-reduce job {job_id} {}: {}",
                            to.short_name(),
                            change.reason
                        )
                    }
                    _ => {}
                }
            }
            Some(Event::Failure(failure)) => {
                eprintln!("  {job_id} {}", crate::output::failure_line(&failure));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AllreduceArgs,
    }

    fn bench(flags: &[&str]) -> Result<AllreduceBench, InputError> {
        let cli =
            Cli::try_parse_from(std::iter::once("allreduce").chain(flags.iter().copied())).unwrap();
        AllreduceBench::from_args(cli.args)
    }

    #[test]
    fn sizes_read_like_nccl_tests() {
        assert_eq!(parse_bytes("8"), Ok(8));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("1T").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn flags_become_a_sweep_spec() {
        let b = bench(&["--ranks", "2", "--max-bytes", "1M", "--iters", "7"]).unwrap();
        assert_eq!(b.sweep.min_bytes, 8);
        assert_eq!(b.sweep.max_bytes, 1 << 20);
        assert_eq!((b.sweep.iters, b.sweep.warmup), (7, Some(5)));
        let placement = Placement {
            ranks: 2,
            workers: 2,
            gpus_per_worker: 0,
            device: RankDevice::Cpu,
        };
        let spec = b.spec(&placement);
        assert_eq!((spec.workers, spec.device()), (2, DeviceKind::Cpu));
        assert!(spec.dataset.is_none() && spec.epochs == 0);
        // NCCL implies GPUs and nccl-tests' 1 GiB default.
        let nccl = bench(&["--collective", "nccl"]).unwrap();
        assert_eq!(nccl.device, Some(RankDevice::Cuda));
        assert_eq!(nccl.sweep.max_bytes, 1 << 30);
        assert_eq!(bench(&[]).unwrap().sweep.max_bytes, 64 << 20);
    }

    #[test]
    fn bad_flags_are_input_errors() {
        let error = |flags: &[&str]| bench(flags).unwrap_err().to_string();
        assert!(error(&["--max-bytes", "2G"]).contains("at most 1G"));
        assert!(error(&["--min-bytes", "2"]).contains("at least 4"));
        assert!(error(&["--min-bytes", "1M", "--max-bytes", "1K"]).contains("above"));
        assert!(error(&["--ranks", "0"]).contains("at least 1"));
        assert!(error(&["--collective", "gloo"]).contains("ring or nccl"));
        assert!(error(&["--collective", "nccl", "--device", "cpu"]).contains("cuda"));
    }

    #[test]
    fn the_report_has_the_table_the_peak_and_a_plot() {
        let row = |bytes: u64, busbw: f64| AllReduceRow {
            bytes,
            count: bytes / 4,
            dtype: "float".into(),
            redop: "sum".into(),
            time_us: 10.0,
            algbw_gbps: busbw,
            busbw_gbps: busbw,
            wrong: 0,
            world_size: 2,
            iters: 5,
            attempt: 1,
            collective: CollectiveBackend::Ring as i32,
            mean_time_us: 9.0,
        };
        let spec = JobSpec {
            collective_bench: Some(CollectiveBench {
                min_bytes: 8,
                max_bytes: 32,
                iters: 0,
                warmup: Some(5),
            }),
            ..JobSpec::default()
        };
        let placement = Placement {
            ranks: 2,
            workers: 2,
            gpus_per_worker: 0,
            device: RankDevice::Cpu,
        };
        let report = AllreduceReport::new(
            "j-1".into(),
            placement,
            &spec,
            vec![row(8, 0.5), row(16, 1.5), row(32, 1.0)],
        );
        assert_eq!((report.peak_bytes, report.peak_busbw_gbps), (16, 1.5));
        assert_eq!(report.collective, "ring");
        let markdown = report.markdown();
        assert!(markdown.contains("2 ranks (2 × cpu), ring"), "{markdown}");
        assert!(markdown.contains("# Peak bus bandwidth   : 1.5000 GB/s at 16 B"));
        let svg = busbw_svg(&report).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("busbw (GB/s)"));
    }
}
