//! `ctl bench`: benchmarks of a running cluster through its ordinary APIs —
//! the coordinator's SubmitJob, WatchJob, CancelJob and ListWorkers, the
//! explainer's Explain — no special server support needed.
//!
//! - `ctl bench train` measures training throughput and scaling: for each
//!   rank count N in `--ranks` it lays the ranks out on the cluster
//!   ([`placement::place`]: `workers × gpus_per_worker = N` GPUs, or N CPU
//!   workers), submits a synthetic-data job of `--warmup-epochs +
//!   --epochs` epochs (`--repeats` times), follows it, and takes each
//!   measured epoch's images/s from the epoch rows ([`stats::epoch_rate`]).
//!   Per N: the median and min–max over epochs × repeats, and the scaling
//!   efficiency `(rate(N)/N) / (rate(b)/b)` against the fewest ranks `b`
//!   ([`stats::efficiency`]).
//! - `ctl bench time-to-accuracy` runs one job and reports the wall time and
//!   epochs until the validation accuracy first reaches `--target`.
//! - `ctl bench explain` loads the explainer instead ([`explain`](mod@explain)):
//!   images/s, requests/s and p50/p90/p99 latency per image size and number
//!   of concurrent clients.
//!
//! - `ctl bench allreduce` ([`allreduce`](mod@allreduce)) runs one job
//!   whose ranks sweep all-reduce message sizes on the cluster's own
//!   communicator (ring or NCCL) instead of training, and prints
//!   nccl-tests' table (size, count, type, redop, time, algbw, busbw,
//!   #wrong) as the rows arrive.
//!
//! Each training job is cancelled as soon as its last needed epoch is in,
//! so a benchmark registers no model versions (a sweep has none); Ctrl-C cancels the running job too
//! (exit code 130). A cluster with fewer ranks than asked is refused before
//! anything is submitted (exit code 2). Results: a table on stdout, progress
//! on stderr, `--json FILE`, and for `train` `--report DIR` ([`report`]).
//!
//! ```text
//! $ ctl bench train --model cnn --ranks 1,2 --train-len 2048 --epochs 3 --report bench/
//! cnn/linear in fp32 on 32×32 synthetic images, batch 64 per rank, 2048 training samples per epoch; ...
//! RANKS  LAYOUT   IMAGES/S  MIN–MAX       PER RANK  EFFICIENCY  EPOCH TIME  JOBS
//! 1      1 × cpu  1311.4    854.9–1882.8  1311.4    1.00        1.67 s      j-1,j-2
//! 2      2 × cpu  1296.8    990.9–1587.4  648.4     0.49        1.65 s      j-3,j-4
//! $ ctl bench time-to-accuracy --model resnet18 --dataset cifar10 --target 0.94 --max-epochs 30
//! $ ctl bench explain --model synthetic --clients 1,8 --size 224 --seconds 5 --report bench/
//! $ ctl bench allreduce --ranks 2 --max-bytes 1M --json allreduce.json
//! ```

pub mod allreduce;
pub mod explain;
pub mod placement;
mod plot;
pub mod report;
pub mod stats;

use std::path::PathBuf;

use camshaft_proto::security::AuthChannel;
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::job_event::Event;
use camshaft_proto::v1::{
    CancelJobRequest, EpochMetrics, JobSpec, JobState, ListWorkersRequest, SubmitJobRequest,
};
use clap::{Args, Subcommand};
use tokio::sync::watch as signal_watch;

use crate::client::Servers;
use crate::console;
use crate::error::{AlreadyReported, CallError, EXIT_FAILED, EXIT_INTERRUPTED, InputError};
use crate::job_spec::{JobOptions, TrainingOptions, build_job_spec};
use crate::jobs::dataset_name;
use crate::trace::StepBreakdown;
use crate::watch::JobEvents;
use placement::{Capacity, Placement, RankDevice, place};
use report::{AccuracyPoint, TimeToAccuracyReport, TrainPoint, TrainReport};
use stats::{Summary, efficiency, epoch_rate, measured_rows};

/// `ctl bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Training images/s and scaling efficiency for each rank count.
    Train(TrainArgs),
    /// Wall time and epochs until the validation accuracy reaches a target.
    TimeToAccuracy(TimeToAccuracyArgs),
    /// Explainer images/s and latency for each number of concurrent clients.
    Explain(explain::ExplainBenchArgs),
    /// All-reduce algorithm and bus bandwidth per message size on the
    /// cluster's ranks and communicator (nccl-tests' all_reduce_perf table).
    Allreduce(allreduce::AllreduceArgs),
}

/// `ctl bench train`.
#[derive(Clone, Debug, Args)]
#[command(
    mut_arg("model", default_model),
    mut_arg("head", default_head),
    mut_arg("profile_steps", |a| a.hide(true))
)]
pub struct TrainArgs {
    /// The model and training options (the flags of `submit-job`).
    #[command(flatten)]
    pub training: TrainingOptions,
    /// Rank counts to measure, comma-separated; efficiency is relative to the smallest.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1"
    )]
    pub ranks: Vec<u32>,
    /// Side of the synthetic images, pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 32)]
    pub image_size: u32,
    /// Training samples per epoch (default: the coordinator's, 2000).
    #[arg(long, value_name = "N")]
    pub train_len: Option<u32>,
    /// Validation samples per epoch (default: the coordinator's, 500).
    #[arg(long, value_name = "N")]
    pub valid_len: Option<u32>,
    /// Epochs run first and left out of the numbers.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub warmup_epochs: u32,
    /// Epochs measured per job.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub epochs: u32,
    /// Jobs per rank count.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeats: u32,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a Markdown report with SVG plots into this folder, and a
    /// Chrome-trace timeline of each rank count's last measured epoch
    /// (`trace-<N>ranks.json`).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Do not time the steps' phases (no breakdown, no timeline); on GPUs
    /// the timing synchronises the device after every phase.
    #[arg(long)]
    pub no_breakdown: bool,
}

/// `ctl bench time-to-accuracy`.
#[derive(Clone, Debug, Args)]
#[command(mut_arg("model", default_model), mut_arg("head", default_head))]
pub struct TimeToAccuracyArgs {
    /// The model and training options (the flags of `submit-job`).
    #[command(flatten)]
    pub training: TrainingOptions,
    /// Validation accuracy to reach, in (0, 1].
    #[arg(long, value_name = "ACCURACY")]
    pub target: f64,
    /// Epochs the job may run (its one-cycle schedule spans them all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_epochs: u32,
    /// Ranks of the job.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub ranks: u32,
    /// Data set: synthetic, cifar10, pets, pets-breeds or folder.
    #[arg(long, value_name = "KIND", default_value = "synthetic")]
    pub dataset: String,
    /// Directory of the data set on the workers.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Let the workers download the data set when it is missing.
    #[arg(long)]
    pub download: bool,
    /// Initial body weights: imagenet, none, or a path on the workers.
    #[arg(long, value_name = "imagenet|none|PATH")]
    pub pretrained: Option<String>,
    /// Square input side in pixels (default: the data set's).
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<u32>,
    /// Synthetic data set: training samples.
    #[arg(long, value_name = "N")]
    pub train_len: Option<u32>,
    /// Synthetic data set: validation samples.
    #[arg(long, value_name = "N")]
    pub valid_len: Option<u32>,
    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `ctl bench train`'s flags, checked: what to submit for every rank count.
#[derive(Clone, Debug)]
pub struct TrainBench {
    /// The job options common to every job (epochs and layout are per job).
    pub options: JobOptions,
    /// Rank counts, in the order given.
    pub ranks: Vec<u32>,
    /// `--device`, when given.
    pub device: Option<RankDevice>,
    /// Epochs left out.
    pub warmup_epochs: u32,
    /// Epochs measured.
    pub epochs: u32,
    /// Jobs per rank count.
    pub repeats: u32,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--report`.
    pub report: Option<PathBuf>,
}

/// `ctl bench time-to-accuracy`'s flags, checked.
#[derive(Clone, Debug)]
pub struct TimeToAccuracyBench {
    /// The job options (epochs and layout are filled in at submission).
    pub options: JobOptions,
    /// Ranks of the job.
    pub ranks: u32,
    /// `--device`, when given.
    pub device: Option<RankDevice>,
    /// The accuracy to reach.
    pub target: f64,
    /// The job's epochs.
    pub max_epochs: u32,
    /// `--json`.
    pub json: Option<PathBuf>,
}

/// `--model` of the benchmarks: the small CNN unless told otherwise (a job
/// has no default network).
fn default_model(arg: clap::Arg) -> clap::Arg {
    arg.default_value("cnn")
}

/// `--head` of the benchmarks: linear (the one head the CNN has).
fn default_head(arg: clap::Arg) -> clap::Arg {
    arg.default_value("linear")
}

/// The job options of a benchmark's `training` flags. `--device` is left
/// out: [`bench_spec`] sets it from the placement.
fn bench_options(training: &TrainingOptions) -> JobOptions {
    JobOptions {
        training: TrainingOptions {
            device: None,
            ..training.clone()
        },
        // A benchmark job is cancelled after its last epoch, so it
        // registers nothing; should one finish anyway, the name says why.
        name: Some("bench".into()),
        ..JobOptions::default()
    }
}

/// `--device` as the placement understands it.
fn rank_device(training: &TrainingOptions) -> Result<Option<RankDevice>, InputError> {
    training
        .device
        .as_deref()
        .map(RankDevice::parse)
        .transpose()
}

/// Checks `options` by building a spec from them, so a bad model or head
/// name is reported before the cluster is asked anything.
fn check_options(options: &JobOptions) -> Result<(), InputError> {
    build_job_spec(&JobOptions {
        epochs: Some(1),
        ..options.clone()
    })
    .map(drop)
}

impl TrainBench {
    /// Checks the flags.
    pub fn from_args(args: TrainArgs) -> Result<TrainBench, InputError> {
        if args.ranks.is_empty() {
            return Err(InputError::new("--ranks needs at least one rank count"));
        }
        for (i, &n) in args.ranks.iter().enumerate() {
            if n == 0 {
                return Err(InputError::new("--ranks: a rank count must be at least 1"));
            }
            if args.ranks[..i].contains(&n) {
                return Err(InputError::new(format!("--ranks lists {n} twice")));
            }
        }
        if args.epochs == 0 {
            return Err(InputError::new("--epochs must be at least 1"));
        }
        if args.repeats == 0 {
            return Err(InputError::new("--repeats must be at least 1"));
        }
        let options = JobOptions {
            dataset: Some("synthetic".into()),
            image_size: Some(args.image_size),
            train_len: args.train_len,
            valid_len: args.valid_len,
            ..bench_options(&TrainingOptions {
                profile_steps: !args.no_breakdown,
                ..args.training.clone()
            })
        };
        check_options(&options)?;
        Ok(TrainBench {
            device: rank_device(&args.training)?,
            options,
            ranks: args.ranks,
            warmup_epochs: args.warmup_epochs,
            epochs: args.epochs,
            repeats: args.repeats,
            json: args.json,
            report: args.report,
        })
    }
}

impl TimeToAccuracyBench {
    /// Checks the flags.
    pub fn from_args(args: TimeToAccuracyArgs) -> Result<TimeToAccuracyBench, InputError> {
        if !(args.target > 0.0 && args.target <= 1.0) {
            return Err(InputError::new(format!(
                "--target is a validation accuracy in (0, 1], not {}",
                args.target
            )));
        }
        if args.max_epochs == 0 {
            return Err(InputError::new("--max-epochs must be at least 1"));
        }
        if args.ranks == 0 {
            return Err(InputError::new("--ranks must be at least 1"));
        }
        let options = JobOptions {
            dataset: Some(args.dataset.clone()),
            data_dir: args.data_dir.clone(),
            download: args.download,
            pretrained: args.pretrained.clone(),
            image_size: args.image_size,
            train_len: args.train_len,
            valid_len: args.valid_len,
            ..bench_options(&args.training)
        };
        check_options(&options)?;
        Ok(TimeToAccuracyBench {
            device: rank_device(&args.training)?,
            options,
            ranks: args.ranks,
            target: args.target,
            max_epochs: args.max_epochs,
            json: args.json,
        })
    }
}

/// The spec of one benchmark job: `options` with the layout and epochs.
/// One checkpoint at the end at most (checkpoints are not what is measured).
pub fn bench_spec(
    options: &JobOptions,
    placement: &Placement,
    epochs: u32,
) -> Result<JobSpec, InputError> {
    build_job_spec(&JobOptions {
        epochs: Some(epochs),
        workers: Some(placement.workers),
        gpus_per_worker: (placement.gpus_per_worker > 0).then_some(placement.gpus_per_worker),
        checkpoint_every: Some(epochs),
        training: TrainingOptions {
            device: Some(placement.device.short_name().into()),
            ..options.training.clone()
        },
        ..options.clone()
    })
}

/// `ctl bench ...`.
pub async fn run(servers: &Servers, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Train(args) => train(servers, TrainBench::from_args(args)?).await,
        BenchCommand::TimeToAccuracy(args) => {
            time_to_accuracy(servers, TimeToAccuracyBench::from_args(args)?).await
        }
        BenchCommand::Explain(args) => {
            explain::run(servers, explain::ExplainBench::from_args(args)?).await
        }
        BenchCommand::Allreduce(args) => {
            allreduce::run(servers, allreduce::AllreduceBench::from_args(args)?).await
        }
    }
}

/// Becomes true on the first Ctrl-C (and stays so).
fn interrupt_flag() -> signal_watch::Receiver<bool> {
    let (tx, rx) = signal_watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        } else {
            // No signal handler: never interrupted. Keep the sender alive.
            std::future::pending::<()>().await;
        }
    });
    rx
}

async fn interrupted(flag: &mut signal_watch::Receiver<bool>) {
    if flag.wait_for(|&on| on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The capacity of the cluster for `device`, warning about busy workers.
async fn capacity(
    client: &mut CoordinatorClient<AuthChannel>,
    device: Option<RankDevice>,
) -> anyhow::Result<Capacity> {
    let workers = client
        .list_workers(ListWorkersRequest {
            include_lost: false,
        })
        .await
        .map_err(CallError::wrap("coordinator", "ListWorkers"))?
        .into_inner()
        .workers;
    let capacity = Capacity::of(&workers, device);
    if capacity.busy > 0 {
        eprintln!(
            "note: {} worker{} busy with other jobs; benchmark jobs wait for them, \
             and shared hosts skew the numbers",
            capacity.busy,
            if capacity.busy == 1 { " is" } else { "s are" }
        );
    }
    Ok(capacity)
}

/// A benchmark job as followed to its end.
#[derive(Debug)]
struct FollowedJob {
    id: String,
    /// The stored spec (the coordinator's defaults applied).
    spec: JobSpec,
    /// Epoch rows with the coordinator's time of each, in arrival order.
    rows: Vec<(i64, EpochMetrics)>,
    /// When the job first became RUNNING (coordinator clock, unix ms).
    running_since_ms: Option<i64>,
}

/// Submits `spec`, follows the job and cancels it once `enough` says so of
/// an epoch row (or on Ctrl-C, which ends the command with exit code 130).
/// A job that fails, or is cancelled by someone else, is an error.
async fn run_job(
    servers: &Servers,
    client: &mut CoordinatorClient<AuthChannel>,
    spec: JobSpec,
    label: &str,
    interrupt: &mut signal_watch::Receiver<bool>,
    enough: impl FnMut(&EpochMetrics) -> bool,
) -> anyhow::Result<FollowedJob> {
    if *interrupt.borrow() {
        return Err(AlreadyReported {
            code: EXIT_INTERRUPTED,
        }
        .into());
    }
    let job = client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .map_err(CallError::wrap("coordinator", "SubmitJob"))?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("the coordinator accepted the job but returned none"))?;
    eprintln!("{label}: {}", job.id);
    let mut cancel_client = client.clone();
    let followed = FollowedJob {
        id: job.id.clone(),
        spec: job.spec.unwrap_or_default(),
        rows: Vec::new(),
        running_since_ms: None,
    };
    tokio::select! {
        result = follow(servers, client.clone(), followed, enough) => result,
        () = interrupted(interrupt) => {
            cancel(&mut cancel_client, &job.id, "ctl bench interrupted (Ctrl-C)").await?;
            eprintln!("\ninterrupted: cancelled {}", job.id);
            Err(AlreadyReported { code: EXIT_INTERRUPTED }.into())
        }
    }
}

/// Cancels `job_id`; one that has just finished is fine.
async fn cancel(
    client: &mut CoordinatorClient<AuthChannel>,
    job_id: &str,
    reason: &str,
) -> anyhow::Result<()> {
    match client
        .cancel_job(CancelJobRequest {
            job_id: job_id.to_string(),
            reason: reason.to_string(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
        Err(status) => Err(CallError::new("coordinator", "CancelJob", &status).into()),
    }
}

/// Reason recorded on a benchmark job cancelled after its last needed epoch.
const MEASURED: &str = "ctl bench: measured (cancelled after its last needed epoch)";

async fn follow(
    servers: &Servers,
    client: CoordinatorClient<AuthChannel>,
    mut job: FollowedJob,
    mut enough: impl FnMut(&EpochMetrics) -> bool,
) -> anyhow::Result<FollowedJob> {
    let mut events = JobEvents::open(servers, Some(client), &job.id, false).await?;
    let mut stopped = false;
    loop {
        let event = events.next().await?;
        match event.event {
            Some(Event::StateChanged(change)) => {
                let to = JobState::try_from(change.to).unwrap_or(JobState::Unspecified);
                if to == JobState::Running && job.running_since_ms.is_none() {
                    job.running_since_ms = Some(event.unix_ms);
                }
                if to.is_terminal() {
                    return finished(job, to, stopped, &change.reason);
                }
            }
            Some(Event::Epoch(row)) => {
                eprintln!(
                    "  {} epoch {}: {:.1} images/s, accuracy {:.4}, {:.2} s",
                    job.id,
                    row.epoch,
                    epoch_rate(&row).unwrap_or(0.0),
                    row.accuracy,
                    row.seconds
                );
                if !stopped && enough(&row) {
                    cancel(events.client(), &job.id, MEASURED).await?;
                    stopped = true;
                }
                job.rows.push((event.unix_ms, row));
            }
            Some(Event::Failure(failure)) => {
                eprintln!("  {} {}", job.id, crate::output::failure_line(&failure));
            }
            _ => {}
        }
    }
}

fn finished(
    job: FollowedJob,
    state: JobState,
    stopped: bool,
    reason: &str,
) -> anyhow::Result<FollowedJob> {
    match state {
        JobState::Succeeded => Ok(job),
        JobState::Cancelled if stopped => Ok(job),
        JobState::Cancelled => {
            anyhow::bail!("benchmark job {} was cancelled: {reason}", job.id)
        }
        _ => anyhow::bail!("benchmark job {} failed: {reason}", job.id),
    }
}

/// One rank count's raw samples, before the efficiency is known.
struct Measured {
    placement: Placement,
    jobs: Vec<String>,
    /// Images/s of every measured epoch.
    rates: Vec<f64>,
    /// Wall seconds of every measured epoch.
    seconds: Vec<f64>,
    /// Step-time breakdowns of the measured epochs that have profiles.
    breakdowns: Vec<StepBreakdown>,
    /// The last measured epoch with profiles, and its job.
    traced: Option<(String, EpochMetrics)>,
}

/// `ctl bench train`.
pub async fn train(servers: &Servers, bench: TrainBench) -> anyhow::Result<()> {
    let mut client = servers.coordinator().await?;
    let capacity = capacity(&mut client, bench.device).await?;
    // Every rank count is checked before the first job is submitted.
    let placements: Vec<Placement> = bench
        .ranks
        .iter()
        .map(|&n| place(n, &capacity))
        .collect::<Result<_, _>>()?;
    let mut interrupt = interrupt_flag();
    let total_epochs = bench.warmup_epochs + bench.epochs;
    let mut stored_spec: Option<JobSpec> = None;
    let mut measured: Vec<Measured> = Vec::new();
    for placement in &placements {
        let spec = bench_spec(&bench.options, placement, total_epochs)?;
        let (mut jobs, mut rates, mut seconds) = (Vec::new(), Vec::new(), Vec::new());
        let (mut breakdowns, mut traced) = (Vec::new(), None);
        for repeat in 1..=bench.repeats {
            let label = format!(
                "{} rank{} ({}), repeat {repeat}/{}",
                placement.ranks,
                if placement.ranks == 1 { "" } else { "s" },
                placement.label(),
                bench.repeats
            );
            let job = run_job(
                servers,
                &mut client,
                spec.clone(),
                &label,
                &mut interrupt,
                |row| row.epoch + 1 >= total_epochs,
            )
            .await?;
            let rows: Vec<EpochMetrics> = job.rows.iter().map(|(_, r)| r.clone()).collect();
            let kept = measured_rows(&rows, bench.warmup_epochs);
            if kept.is_empty() {
                anyhow::bail!(
                    "benchmark job {} ended without a measured epoch (it ran {} of {total_epochs})",
                    job.id,
                    rows.len()
                );
            }
            if let Some(row) = kept.iter().find(|r| r.world_size != placement.ranks) {
                eprintln!(
                    "note: {} ran epoch {} on {} ranks, not {}",
                    job.id, row.epoch, row.world_size, placement.ranks
                );
            }
            rates.extend(kept.iter().filter_map(epoch_rate));
            seconds.extend(kept.iter().map(|r| r.seconds));
            breakdowns.extend(kept.iter().filter_map(StepBreakdown::of));
            if let Some(row) = kept.iter().rev().find(|r| !r.step_profiles.is_empty()) {
                traced = Some((job.id.clone(), row.clone()));
            }
            jobs.push(job.id);
            stored_spec.get_or_insert(job.spec);
        }
        measured.push(Measured {
            placement: *placement,
            jobs,
            rates,
            seconds,
            breakdowns,
            traced,
        });
    }

    let medians: Vec<(u32, f64)> = measured
        .iter()
        .map(|m| (m.placement.ranks, stats::median(&m.rates).unwrap_or(0.0)))
        .collect();
    let efficiencies = efficiency(&medians);
    let mut points = Vec::new();
    let mut traces = Vec::new();
    for (
        Measured {
            placement,
            jobs,
            rates,
            seconds,
            breakdowns,
            traced,
        },
        efficiency,
    ) in measured.into_iter().zip(efficiencies)
    {
        if let Some((job, row)) = traced {
            traces.push((placement.ranks, crate::trace::chrome_trace(&job, &row)));
        }
        let images_per_sec = Summary::of(rates).ok_or_else(|| {
            anyhow::anyhow!("no epoch of {} reported its images/s", jobs.join(", "))
        })?;
        points.push(TrainPoint {
            images_per_sec_per_rank: images_per_sec.median / f64::from(placement.ranks),
            placement,
            jobs,
            images_per_sec,
            efficiency,
            epoch_seconds: Summary::of(seconds).unwrap_or(Summary {
                median: 0.0,
                min: 0.0,
                max: 0.0,
                samples: Vec::new(),
            }),
            step_ms: StepBreakdown::median(&breakdowns),
        });
    }
    let spec = stored_spec.unwrap_or_default();
    let report = TrainReport {
        model: crate::jobs::model_name(&spec)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        head: spec.head().short_name().to_string(),
        precision: spec.precision().short_name().to_string(),
        channels_last: spec.channels_last,
        device: capacity.device,
        image_size: spec.image_size,
        batch_size: spec.batch_size,
        train_len: spec
            .dataset
            .as_ref()
            .and_then(|d| d.synthetic.as_ref())
            .map(|s| s.train_len)
            .unwrap_or_default(),
        warmup_epochs: bench.warmup_epochs,
        epochs: bench.epochs,
        repeats: bench.repeats,
        points,
    };
    console::line(report.workload())?;
    console::text(report.table())?;
    if let Some(breakdown) = report.breakdown_table() {
        console::line("step time, ms per step (mean over ranks; the slowest rank's all-reduce):")?;
        console::text(breakdown)?;
    }
    if let Some(path) = &bench.json {
        report::write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &bench.report {
        let markdown = report::write_report(dir, &report)?;
        eprintln!("wrote {}", markdown.display());
        for (ranks, trace) in &traces {
            let path = dir.join(format!("trace-{ranks}ranks.json"));
            report::write_json(&path, trace)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `ctl bench time-to-accuracy`.
pub async fn time_to_accuracy(servers: &Servers, bench: TimeToAccuracyBench) -> anyhow::Result<()> {
    let mut client = servers.coordinator().await?;
    let capacity = capacity(&mut client, bench.device).await?;
    let placement = place(bench.ranks, &capacity)?;
    let spec = bench_spec(&bench.options, &placement, bench.max_epochs)?;
    let mut interrupt = interrupt_flag();
    let (target, max_epochs) = (bench.target, bench.max_epochs);
    let label = format!(
        "time to accuracy {target} on {} rank{} ({})",
        placement.ranks,
        if placement.ranks == 1 { "" } else { "s" },
        placement.label()
    );
    let job = run_job(servers, &mut client, spec, &label, &mut interrupt, |row| {
        row.accuracy >= target || row.epoch + 1 >= max_epochs
    })
    .await?;
    let report = time_to_accuracy_report(&job, placement, target, max_epochs);
    console::line(report.summary())?;
    if let Some(path) = &bench.json {
        report::write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    if report.reached {
        Ok(())
    } else {
        Err(AlreadyReported { code: EXIT_FAILED }.into())
    }
}

fn time_to_accuracy_report(
    job: &FollowedJob,
    placement: Placement,
    target: f64,
    max_epochs: u32,
) -> TimeToAccuracyReport {
    // Wall time from the first RUNNING; from the first epoch's start should
    // the state change be missing.
    let start_ms = job.running_since_ms.unwrap_or_else(|| {
        job.rows
            .first()
            .map(|(ms, row)| ms - (row.seconds * 1000.0) as i64)
            .unwrap_or_default()
    });
    let curve: Vec<AccuracyPoint> = job
        .rows
        .iter()
        .map(|(ms, row)| AccuracyPoint {
            epoch: row.epoch,
            accuracy: row.accuracy,
            wall_seconds: (ms - start_ms) as f64 / 1000.0,
        })
        .collect();
    let reaching = job.rows.iter().position(|(_, r)| r.accuracy >= target);
    let best_accuracy = job.rows.iter().map(|(_, r)| r.accuracy).fold(0.0, f64::max);
    TimeToAccuracyReport {
        model: crate::jobs::model_name(&job.spec),
        dataset: dataset_name(&job.spec),
        placement,
        target,
        max_epochs,
        job_id: job.id.clone(),
        reached: reaching.is_some(),
        epochs: reaching.map(|i| job.rows[i].1.epoch + 1),
        wall_seconds: reaching.map(|i| curve[i].wall_seconds),
        epoch_seconds: reaching.map(|i| job.rows[..=i].iter().map(|(_, r)| r.seconds).sum()),
        accuracy: reaching.map(|i| job.rows[i].1.accuracy),
        best_accuracy,
        curve,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cli::{Cli, Command};
    use camshaft_proto::v1::{Arch, CollectiveBackend, DeviceKind, Head, JobSpec, Precision};
    use clap::Parser;

    fn train_args(args: &[&str]) -> TrainArgs {
        let cli = Cli::try_parse_from(["ctl", "bench", "train"].iter().chain(args)).unwrap();
        let Command::Bench(BenchCommand::Train(args)) = cli.command else {
            panic!("bench train expected");
        };
        args
    }

    #[test]
    fn train_flags_become_a_checked_bench() {
        let bench = TrainBench::from_args(train_args(&[
            "--model",
            "resnet18",
            "--ranks",
            "4,1,2",
            "--train-len",
            "256",
            "--device",
            "cpu",
        ]))
        .unwrap();
        assert_eq!(bench.ranks, [4, 1, 2]);
        assert_eq!(
            (bench.warmup_epochs, bench.epochs, bench.repeats),
            (1, 3, 1)
        );
        assert_eq!(bench.device, Some(RankDevice::Cpu));
        let placement = Placement {
            ranks: 4,
            workers: 2,
            gpus_per_worker: 2,
            device: RankDevice::Cuda,
        };
        let spec: JobSpec = bench_spec(&bench.options, &placement, 4).unwrap();
        assert_eq!((spec.workers, spec.gpus_per_worker), (2, 2));
        assert_eq!(spec.device(), DeviceKind::Cuda);
        assert_eq!((spec.epochs, spec.checkpoint_every), (4, 4));
        assert_eq!(spec.image_size, 32);
        assert_eq!(spec.dataset.unwrap().synthetic.unwrap().train_len, 256);
        assert_eq!(spec.name, "bench");
    }

    #[test]
    fn the_benchmarks_take_submit_jobs_training_flags_with_their_own_defaults() {
        let bench = TrainBench::from_args(train_args(&[])).unwrap();
        let training = &bench.options.training;
        assert_eq!(training.model.as_deref(), Some("cnn"));
        assert_eq!(training.head.as_deref(), Some("linear"));
        let bench = TrainBench::from_args(train_args(&[
            "--model",
            "resnet18",
            "--head",
            "cam",
            "--batch-size",
            "16",
            "--precision",
            "bf16",
            "--channels-last",
            "--collective",
            "ring",
        ]))
        .unwrap();
        let spec = build_job_spec(&JobOptions {
            epochs: Some(1),
            ..bench.options
        })
        .unwrap();
        assert_eq!((spec.arch(), spec.head()), (Arch::Resnet18, Head::Cam));
        assert_eq!(spec.batch_size, 16);
        assert_eq!(spec.precision(), Precision::Bf16);
        assert!(spec.channels_last);
        assert_eq!(spec.collective(), CollectiveBackend::Ring);
        // submit-job has no default network: the coordinator asks for one.
        let cli = Cli::try_parse_from(["ctl", "submit-job", "--dataset", "pets"]).unwrap();
        let Command::SubmitJob(args) = cli.command else {
            panic!("submit-job expected");
        };
        assert_eq!(args.options.training.model, None);
        assert_eq!(args.options.training.head, None);
        let tta = TimeToAccuracyBench::from_args(tta_args()).unwrap();
        assert_eq!(tta.options.training.model.as_deref(), Some("cnn"));
    }

    #[test]
    fn bad_train_flags_are_input_errors() {
        let err = |args: &[&str]| {
            TrainBench::from_args(train_args(args))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&["--ranks", "1,2,1"]), "--ranks lists 1 twice");
        assert!(err(&["--ranks", "0"]).contains("at least 1"));
        assert!(err(&["--epochs", "0"]).contains("--epochs"));
        assert!(err(&["--model", "vgg"]).contains("vgg"));
        assert!(err(&["--device", "tpu"]).contains("tpu"));
    }

    #[test]
    fn time_to_accuracy_counts_epochs_and_wall_time_from_the_start() {
        let row = |epoch: u32, accuracy: f64| EpochMetrics {
            epoch,
            accuracy,
            seconds: 10.0,
            ..Default::default()
        };
        let job = FollowedJob {
            id: "j-2".into(),
            spec: JobSpec::default(),
            rows: vec![
                (13_000, row(0, 0.6)),
                (24_000, row(1, 0.95)),
                (35_000, row(2, 0.97)),
            ],
            running_since_ms: Some(2_000),
        };
        let placement = Placement {
            ranks: 1,
            workers: 1,
            gpus_per_worker: 0,
            device: RankDevice::Cpu,
        };
        let report = time_to_accuracy_report(&job, placement, 0.94, 5);
        assert!(report.reached);
        assert_eq!(report.epochs, Some(2));
        assert_eq!(report.wall_seconds, Some(22.0));
        assert_eq!(report.epoch_seconds, Some(20.0));
        assert_eq!(report.best_accuracy, 0.97);
        let never = time_to_accuracy_report(&job, placement, 0.99, 3);
        assert!(!never.reached && never.epochs.is_none());
        assert!(
            never
                .summary()
                .starts_with("never reached accuracy 0.99 in 3 epochs")
        );
        assert!(
            TimeToAccuracyBench::from_args(TimeToAccuracyArgs {
                target: 94.0,
                ..tta_args()
            })
            .is_err()
        );
    }

    fn tta_args() -> TimeToAccuracyArgs {
        let cli =
            Cli::try_parse_from(["ctl", "bench", "time-to-accuracy", "--target", "0.9"]).unwrap();
        let Command::Bench(BenchCommand::TimeToAccuracy(args)) = cli.command else {
            panic!("bench time-to-accuracy expected");
        };
        args
    }
}
