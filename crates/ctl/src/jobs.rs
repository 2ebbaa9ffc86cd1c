//! `ctl submit-job` and `ctl jobs list|get|watch|cancel`.

use std::path::Path;

use anyhow::Context;
use camshaft_proto::v1::{
    AllReduceRow, Arch, CancelJobRequest, CollectiveBackend, CollectiveBench, DatasetKind,
    DeviceKind, EpochMetrics, GetJobRequest, Head, Job, JobSpec, JobState, ListJobsRequest,
    PretrainedSource, SubmitJobRequest,
};
use camshaft_spec::DEFAULT_FREEZE_EPOCHS;
use camshaft_spec::sweep::SweepConfig;

use crate::cli::{JobsCommand, SubmitJobArgs};
use crate::client::Servers;
use crate::console;
use crate::error::{CallError, InputError};
use crate::job_spec::{JobOptions, build_job_spec};
use crate::output::{
    AllReduceTable, Table, allreduce_footer, failure_line, format_age, format_bytes, format_utc,
    state_name,
};
use crate::trace::StepBreakdown;
use crate::watch;

/// `ctl submit-job`: builds the spec, submits it, prints the job id (and
/// with `--wait`, follows the job to its end).
pub async fn submit(servers: &Servers, args: SubmitJobArgs) -> anyhow::Result<()> {
    let file = match &args.spec {
        Some(path) => JobOptions::from_file(path)?,
        None => JobOptions::default(),
    };
    let spec = build_job_spec(&args.options.over(file))?;
    let mut client = servers.coordinator().await?;
    let job = client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            request_id: args.request_id.clone().unwrap_or_default(),
        })
        .await
        .map_err(CallError::wrap("coordinator", "SubmitJob"))?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("the coordinator accepted the job but returned none"))?;
    if !args.wait {
        return console::line(&job.id);
    }
    console::line(format!("submitted {}", job.id))?;
    watch::watch(servers, Some(client), &job.id, args.logs).await
}

/// `ctl jobs ...`.
pub async fn run(servers: &Servers, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { states, json } => list(servers, &states, json).await,
        JobsCommand::Get { id, json } => get(servers, &id, json).await,
        JobsCommand::Watch { id, logs } => watch::watch(servers, None, &id, logs).await,
        JobsCommand::Trace { id, epoch, output } => {
            trace(servers, &id, epoch, output.as_deref()).await
        }
        JobsCommand::Cancel { id, reason } => cancel(servers, &id, reason).await,
    }
}

/// Parses `--state` values (short names such as `running`).
pub fn parse_states(names: &[String]) -> Result<Vec<JobState>, InputError> {
    names
        .iter()
        .map(|n| JobState::from_short_name(n).map_err(|e| InputError::new(e.to_string())))
        .collect()
}

async fn list(servers: &Servers, states: &[String], json: bool) -> anyhow::Result<()> {
    let states: Vec<i32> = parse_states(states)?.into_iter().map(i32::from).collect();
    let mut client = servers.coordinator().await?;
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(ListJobsRequest {
                states: states.clone(),
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(CallError::wrap("coordinator", "ListJobs"))?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            break;
        }
        page_token = page.next_page_token;
    }
    if json {
        return console::line(serde_json::to_string_pretty(&jobs)?);
    }
    let now = camshaft_proto::now_unix_ms();
    let mut table = Table::new(&[
        "ID", "STATE", "NAME", "DATASET", "MODEL", "EPOCHS", "ATTEMPT", "CREATED", "RESULT",
    ]);
    for job in &jobs {
        let spec = job.spec.clone().unwrap_or_default();
        table.row(vec![
            job.id.clone(),
            state_name(job.state),
            if spec.name.is_empty() {
                "-".into()
            } else {
                spec.name.clone()
            },
            dataset_name(&spec),
            model_name(&spec),
            progress_cell(job, &spec),
            job.attempt.to_string(),
            format!("{} ago", format_age(now, job.created_unix_ms)),
            result_cell(job),
        ]);
    }
    console::text(table.render())
}

/// The data set of a spec: `synthetic`, `pets:/data/pets`.
pub fn dataset_name(spec: &JobSpec) -> String {
    match &spec.dataset {
        None => "-".into(),
        Some(dataset) => {
            let kind = DatasetKind::try_from(dataset.kind)
                .map(DatasetKind::short_name)
                .unwrap_or("?");
            if dataset.data_dir.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}:{}", dataset.data_dir)
            }
        }
    }
}

/// Body and head of a spec: `resnet34/cam` (`-` for what is unset);
/// `allreduce` for an all-reduce sweep, which has no model.
pub fn model_name(spec: &JobSpec) -> String {
    if spec.collective_bench.is_some() {
        return "allreduce".into();
    }
    let arch = match Arch::try_from(spec.arch) {
        Ok(Arch::Unspecified) | Err(_) => "-",
        Ok(arch) => arch.short_name(),
    };
    let head = match Head::try_from(spec.head) {
        Ok(Head::Unspecified) | Err(_) => "-",
        Ok(head) => head.short_name(),
    };
    format!("{arch}/{head}")
}

/// Epochs in a job's plan: `epochs`, plus the frozen ones of fine_tune.
pub fn planned_epochs(spec: &JobSpec) -> u32 {
    if spec.fine_tune {
        spec.epochs + spec.freeze_epochs.unwrap_or(DEFAULT_FREEZE_EPOCHS)
    } else {
        spec.epochs
    }
}

/// Sizes of an all-reduce sweep's spec: nccl-tests' doubling from min to
/// max bytes, in whole float32 elements.
pub fn sweep_sizes(bench: &CollectiveBench) -> u32 {
    SweepConfig {
        min_bytes: bench.min_bytes,
        max_bytes: bench.max_bytes,
        iters: None,
        warmup: 0,
    }
    .sizes()
    .len() as u32
}

/// The EPOCHS cell of `ctl jobs list`: epochs done of planned, or sizes
/// measured of the sweep's.
fn progress_cell(job: &Job, spec: &JobSpec) -> String {
    match &spec.collective_bench {
        Some(bench) => format!("{}/{} sizes", job.allreduce_rows.len(), sweep_sizes(bench)),
        None => format!("{}/{}", job.epochs_done, planned_epochs(spec)),
    }
}

fn result_cell(job: &Job) -> String {
    if let Some(result) = sweep_result(job)
        && job.error.is_empty()
    {
        result
    } else if !job.model_version.is_empty() {
        job.model_version.clone()
    } else if !job.error.is_empty() {
        let mut error: String = job.error.chars().take(60).collect();
        if error.len() < job.error.len() {
            error.push('…');
        }
        error
    } else {
        String::new()
    }
}

/// A sweep's result in a few words: its peak bus bandwidth, or for one
/// rank (whose busbw is 0 by definition) its peak algorithm bandwidth.
fn sweep_result(job: &Job) -> Option<String> {
    let peak =
        |f: fn(&AllReduceRow) -> f64| job.allreduce_rows.iter().map(f).max_by(f64::total_cmp);
    match job.allreduce_rows.first()?.world_size {
        1 => Some(format!(
            "1 rank: peak algbw {:.3} GB/s",
            peak(|r| r.algbw_gbps)?
        )),
        _ => Some(format!("peak busbw {:.3} GB/s", peak(|r| r.busbw_gbps)?)),
    }
}

/// A one-line summary of a spec: `synthetic → resnet18/cam, fit_one_cycle 3 epochs, lr 0.001, ...`.
pub fn spec_summary(spec: &JobSpec) -> String {
    if let Some(bench) = &spec.collective_bench {
        return sweep_summary(spec, bench);
    }
    let mut parts = vec![format!("{} → {}", dataset_name(spec), model_name(spec))];
    if spec.fine_tune {
        parts.push(format!(
            "fine_tune({}) after {} frozen",
            spec.epochs,
            spec.freeze_epochs.unwrap_or(DEFAULT_FREEZE_EPOCHS)
        ));
    } else {
        parts.push(format!("fit_one_cycle({})", spec.epochs));
    }
    match PretrainedSource::try_from(spec.pretrained) {
        Ok(PretrainedSource::Imagenet) => parts.push("imagenet weights".into()),
        Ok(PretrainedSource::Path) => parts.push(format!("weights {}", spec.pretrained_path)),
        _ => {}
    }
    if let Some(lr) = spec.lr {
        parts.push(format!("lr {lr}"));
    }
    if spec.batch_size > 0 {
        parts.push(format!("batch {}", spec.batch_size));
    }
    if spec.image_size > 0 {
        parts.push(format!("{}px", spec.image_size));
    }
    if spec.workers > 0 {
        parts.push(format!(
            "{} worker{}",
            spec.workers,
            if spec.workers == 1 { "" } else { "s" }
        ));
    }
    if let Some(seed) = spec.seed {
        parts.push(format!("seed {seed}"));
    }
    parts.join(", ")
}

/// `all-reduce sweep 8 B … 1.0 MiB (18 sizes), float sum, 2 workers, ring`.
fn sweep_summary(spec: &JobSpec, bench: &CollectiveBench) -> String {
    let mut parts = vec![format!(
        "all-reduce sweep {} … {} ({} sizes), float sum",
        format_bytes(bench.min_bytes),
        format_bytes(bench.max_bytes),
        sweep_sizes(bench)
    )];
    if bench.iters > 0 {
        parts.push(format!("{} iters", bench.iters));
    }
    parts.push(format!(
        "{} worker{}",
        spec.workers,
        if spec.workers == 1 { "" } else { "s" }
    ));
    if spec.gpus_per_worker > 0 {
        parts.push(format!("{} GPUs each", spec.gpus_per_worker));
    }
    if spec.device() != DeviceKind::Unspecified {
        parts.push(spec.device().short_name().to_string());
    }
    if spec.collective() != CollectiveBackend::Unspecified {
        parts.push(spec.collective().short_name().to_string());
    }
    parts.join(", ")
}

/// The human summary of `ctl jobs get`.
pub fn job_summary(job: &Job) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{:<10}{value}\n", format!("{name}:")));
    };
    field("job", job.id.clone());
    field("state", state_name(job.state));
    field("attempt", job.attempt.to_string());
    if let Some(spec) = &job.spec {
        field("spec", spec_summary(spec));
        field(
            "progress",
            match &spec.collective_bench {
                Some(bench) => format!("{}/{} sizes", job.allreduce_rows.len(), sweep_sizes(bench)),
                None => format!("{}/{} epochs", job.epochs_done, planned_epochs(spec)),
            },
        );
    }
    field("created", format_utc(job.created_unix_ms));
    if !job.created_by.is_empty() {
        field("by", job.created_by.clone());
    }
    if job.started_unix_ms > 0 {
        field("started", format_utc(job.started_unix_ms));
    }
    if job.finished_unix_ms > 0 {
        field("finished", format_utc(job.finished_unix_ms));
    }
    if !job.worker_ids.is_empty() {
        field(
            "workers",
            format!(
                "{} (world size {})",
                job.worker_ids.join(", "),
                job.world_size
            ),
        );
    }
    if !job.last_checkpoint_id.is_empty() {
        field("checkpoint", job.last_checkpoint_id.clone());
    }
    if !job.model_version.is_empty() {
        field("model", job.model_version.clone());
    }
    if let Some(stop) = &job.early_stop {
        field(
            "stopped",
            format!("early after epoch {}: {}", stop.epoch, stop.reason),
        );
    }
    if !job.error.is_empty() {
        field("error", job.error.clone());
    }
    if !job.history.is_empty() {
        out.push('\n');
        let mut table = crate::output::EpochTable::default();
        for metrics in &job.history {
            for line in table.lines(metrics) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    if !job.allreduce_rows.is_empty() {
        out.push('\n');
        let mut table = AllReduceTable::default();
        for row in &job.allreduce_rows {
            for line in table.lines(row) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        for line in allreduce_footer(&job.allreduce_rows) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !job.failures.is_empty() {
        out.push_str("\nfailures:\n");
        for failure in &job.failures {
            out.push_str("  ");
            out.push_str(&failure_line(failure));
            out.push('\n');
        }
    }
    out
}

/// One job, by id.
async fn fetch_job(servers: &Servers, id: &str) -> anyhow::Result<Job> {
    let mut client = servers.coordinator().await?;
    client
        .get_job(GetJobRequest {
            job_id: id.to_string(),
        })
        .await
        .map_err(CallError::wrap("coordinator", "GetJob"))?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("the coordinator returned no job for {id}"))
}

async fn get(servers: &Servers, id: &str, json: bool) -> anyhow::Result<()> {
    let job = fetch_job(servers, id).await?;
    if json {
        console::line(serde_json::to_string_pretty(&job)?)
    } else {
        console::text(job_summary(&job))
    }
}

async fn trace(
    servers: &Servers,
    id: &str,
    epoch: Option<u32>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let job = fetch_job(servers, id).await?;
    let row = profiled_epoch(&job, epoch)?;
    if let Some(b) = StepBreakdown::of(row) {
        let cells: Vec<String> = crate::trace::PHASES
            .iter()
            .zip(b.mean_ms.0)
            .map(|(name, ms)| format!("{name} {ms:.1}"))
            .collect();
        eprintln!(
            "epoch {} ms/step, mean of {} rank{}: {} (total {:.1}; slowest rank's all-reduce {:.1})",
            row.epoch,
            b.ranks,
            if b.ranks == 1 { "" } else { "s" },
            cells.join(", "),
            b.mean_ms.total(),
            b.max_ms.0[3],
        );
    }
    let text = serde_json::to_string(&crate::trace::chrome_trace(id, row))?;
    match output {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => console::line(text),
    }
}

/// The epoch row to trace: `epoch`'s latest run, or the last row with
/// profiles.
pub fn profiled_epoch(job: &Job, epoch: Option<u32>) -> Result<&EpochMetrics, InputError> {
    let profiled = |r: &&EpochMetrics| !r.step_profiles.is_empty();
    match epoch {
        Some(e) => job
            .history
            .iter()
            .rev()
            .find(|r| r.epoch == e)
            .filter(profiled)
            .ok_or_else(|| {
                InputError::new(format!(
                    "job {} has no step profile for epoch {e} (epochs done: {}; it needs --profile-steps)",
                    job.id, job.epochs_done
                ))
            }),
        None => job.history.iter().rev().find(profiled).ok_or_else(|| {
            InputError::new(format!(
                "job {} has no step profiles: submit it with --profile-steps",
                job.id
            ))
        }),
    }
}

async fn cancel(servers: &Servers, id: &str, reason: Option<String>) -> anyhow::Result<()> {
    let mut client = servers.coordinator().await?;
    let job = client
        .cancel_job(CancelJobRequest {
            job_id: id.to_string(),
            reason: reason.unwrap_or_default(),
        })
        .await
        .map_err(CallError::wrap("coordinator", "CancelJob"))?
        .into_inner()
        .job;
    let state = job
        .map(|j| state_name(j.state))
        .unwrap_or_else(|| "cancelled".into());
    console::line(format!("{id} {state}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::output::{epoch_header, epoch_row};
    use camshaft_proto::v1::{DatasetSpec, EpochMetrics};

    #[test]
    fn summary_has_spec_table_and_model() {
        let job = Job {
            id: "j-3".into(),
            state: JobState::Succeeded as i32,
            attempt: 1,
            spec: Some(JobSpec {
                dataset: Some(DatasetSpec {
                    kind: DatasetKind::Synthetic as i32,
                    ..Default::default()
                }),
                arch: Arch::Resnet18 as i32,
                head: Head::Cam as i32,
                epochs: 1,
                seed: Some(7),
                ..Default::default()
            }),
            history: vec![EpochMetrics {
                epoch: 0,
                accuracy: 1.0,
                attempt: 1,
                ..Default::default()
            }],
            epochs_done: 1,
            model_version: "synthetic:1".into(),
            ..Default::default()
        };
        let text = job_summary(&job);
        assert!(
            text.starts_with("job:      j-3\nstate:    succeeded\n"),
            "{text}"
        );
        assert!(
            text.contains("spec:     synthetic → resnet18/cam, fit_one_cycle(1), seed 7\n"),
            "{text}"
        );
        assert!(text.contains("model:    synthetic:1\n"), "{text}");
        assert!(text.contains(&epoch_header()));
        assert!(text.contains(&epoch_row(&job.history[0])));
    }

    #[test]
    fn states_parse() {
        assert_eq!(
            parse_states(&["running".into(), "FAILED".into()]).unwrap(),
            vec![JobState::Running, JobState::Failed]
        );
        assert!(parse_states(&["done".into()]).is_err());
    }
}
