//! The coordinator's state: connected workers, job transitions and
//! scheduling. The tonic adapters in `service` only translate to and from
//! this.
//!
//! Every job transition (assign, epoch row, failure, completion, cancel)
//! runs under one async lock, `transitions`, and is a compare-and-set on the
//! job's record in the store, so two transitions never interleave and a
//! stale coordinator cannot overwrite a newer one. Worker connections live in
//! memory (a std mutex, never held across an `.await`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camshaft_proto::now_unix_ms;
use camshaft_proto::v1::{
    self, CoordinatorMessage, DeviceKind, FailureKind, JobSpec, WorkerState,
    coordinator_message::Message as ToWorker, job_event::Event,
};
use camshaft_store::{
    Attempt, Failure, JobId, JobRecord, JobState, LeaseId, Store, WorkerRecord, bundle, now_ms,
};
use tokio::sync::mpsc;
use tonic::Status;

use crate::jobs::{self, JobLog};
use crate::metrics::Metrics;
use crate::model_events::ModelEventLog;
use crate::{Config, Error, Result, registry, spec};
use camshaft_proto::v1::model_event::Event as ModelEvent;

/// The outbound half of a worker's control stream.
pub type WorkerSender = mpsc::UnboundedSender<Result<CoordinatorMessage, Status>>;

/// The coordinator's major version; a worker with another one is refused.
fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or("")
}

/// A connected worker.
struct WorkerConn {
    /// Which connection this is (a reconnect replaces the entry).
    conn: u64,
    info: v1::WorkerInfo,
    tx: WorkerSender,
    lease: LeaseId,
    /// The job attempt it runs, if any.
    task: Option<(JobId, u32)>,
    /// The address its stream comes from (replaces a `0.0.0.0` ring address).
    peer_ip: Option<std::net::IpAddr>,
    /// The principal whose credential opened the stream; the worker id
    /// stays bound to it.
    principal: String,
    /// The attempts this connection was given, newest last (at most
    /// [`PAST_ATTEMPTS_KEPT`]): late messages of those are dropped quietly,
    /// messages about any other are refused.
    assigned: Vec<(JobId, u32)>,
}

/// Attempts a connection remembers having been given.
const PAST_ATTEMPTS_KEPT: usize = 16;

/// A worker whose lease ended, listed until `lost_worker_ttl_ms` passes.
struct LostWorker {
    info: v1::WorkerInfo,
    principal: String,
    since_ms: u64,
}

/// What a worker's message about `(job, attempt, rank)` refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A rank this connection runs now.
    Current,
    /// An attempt this connection ran, no longer current: drop quietly.
    Stale,
}

/// The ranks of a running attempt, as far as the coordinator follows them.
#[derive(Debug, Default)]
struct Group {
    world_size: u32,
    /// Worker ids, in the rank order of their first rank.
    workers: Vec<String>,
    offers: BTreeMap<u32, v1::RendezvousOffer>,
    done: std::collections::BTreeSet<u32>,
    /// Rank 0's final checkpoint.
    checkpoint: String,
    /// `Assignment.attempt_secret`: only the group's workers have it.
    secret: Vec<u8>,
    /// Log lines kept for this attempt, and dropped past the limit.
    log_lines: u32,
    logs_dropped: u64,
}

/// How an attempt ended early.
#[derive(Debug)]
pub struct AttemptFailure {
    /// Which budget it is charged to.
    pub kind: FailureKind,
    /// The failing rank, if one.
    pub rank: Option<u32>,
    /// The worker to blame, if one.
    pub worker: Option<String>,
    /// What happened.
    pub reason: String,
    /// The epoch in progress.
    pub epoch: Option<u32>,
    /// Whether a restart can help.
    pub retryable: bool,
}

/// The shared state behind every coordinator RPC.
pub struct Cluster {
    config: Config,
    store: Arc<dyn Store>,
    workers: Mutex<BTreeMap<String, WorkerConn>>,
    /// Workers whose lease ended, kept for `ListWorkers(include_lost)`
    /// until `lost_worker_ttl_ms` passes.
    lost: Mutex<BTreeMap<String, LostWorker>>,
    logs: Mutex<HashMap<JobId, Arc<JobLog>>>,
    groups: Mutex<HashMap<(JobId, u32), Group>>,
    transitions: tokio::sync::Mutex<()>,
    /// Held while a version's tags and description are read and rewritten.
    registry_edits: tokio::sync::Mutex<()>,
    /// The registry's change feed (`WatchModels`).
    model_events: ModelEventLog,
    next_conn: AtomicU64,
    next_worker: AtomicU64,
    /// Makes assigned worker ids unique to this coordinator's run.
    id_prefix: String,
    /// When this coordinator started.
    pub started_unix_ms: i64,
    metrics: Metrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map consistent; a panic elsewhere
    // does not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// A coordinator over `store`.
    pub fn new(config: Config, store: Arc<dyn Store>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Cluster {
            config,
            store,
            workers: Mutex::new(BTreeMap::new()),
            lost: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            transitions: tokio::sync::Mutex::new(()),
            registry_edits: tokio::sync::Mutex::new(()),
            model_events: ModelEventLog::new(format!("{:x}", now_unix_ms())),
            next_conn: AtomicU64::new(1),
            next_worker: AtomicU64::new(1),
            id_prefix: format!("{:x}", now_ms() % 0x10_0000),
            started_unix_ms: now_unix_ms(),
            metrics,
        })
    }

    /// The registry's change feed.
    pub fn model_events(&self) -> &ModelEventLog {
        &self.model_events
    }

    /// Points `name@alias` at `version` as `by`, records it in the feed,
    /// and returns the version it pointed at before (`None`: new alias).
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        by: &str,
    ) -> Result<Option<u64>> {
        let before = self.set_alias_quietly(name, alias, version, by).await?;
        if before != Some(version) {
            self.model_events
                .push(ModelEvent::AliasChanged(v1::AliasChange {
                    name: name.into(),
                    alias: alias.into(),
                    from_version: before,
                    to_version: Some(version),
                    changed_by: by.into(),
                    unix_ms: now_unix_ms(),
                    revision: 0,
                }));
        }
        Ok(before)
    }

    /// Removes `name@alias` as `by` and records it in the feed; returns the
    /// version it pointed at.
    pub async fn remove_alias(&self, name: &str, alias: &str, by: &str) -> Result<u64> {
        let before = registry::aliases_of(&self.store.list_models().await?, name)
            .get(alias)
            .copied()
            .ok_or_else(|| Error::NotFound(format!("no alias {name}@{alias}")))?;
        self.store.remove_alias_by(name, alias, by).await?;
        self.model_events
            .push(ModelEvent::AliasChanged(v1::AliasChange {
                name: name.into(),
                alias: alias.into(),
                from_version: Some(before),
                to_version: None,
                changed_by: by.into(),
                unix_ms: now_unix_ms(),
                revision: 0,
            }));
        Ok(before)
    }

    /// Workers connected now.
    pub fn worker_count(&self) -> usize {
        lock(&self.workers).len()
    }

    /// Counts a job that reached its final `state`; its throughput gauge goes.
    fn finished(&self, id: JobId, state: &str) {
        self.metrics.jobs_finished.with_label_values(&[state]).inc();
        let _ = self
            .metrics
            .images_per_second
            .remove_label_values(&[id.to_string().as_str()]);
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ───────────────────────────── jobs ─────────────────────────────

    /// Jobs a previous coordinator left running cannot be reattached (their
    /// workers' streams died with it): they go back to the queue, charged
    /// to no budget, and resume from their last checkpoint.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        for record in self.store.list_jobs().await? {
            if record.state == JobState::Running {
                tracing::warn!(job_id = %record.id, "job was running when the coordinator stopped; requeued");
                self.fail_attempt(
                    record.id,
                    record.attempts.len() as u32,
                    AttemptFailure {
                        kind: FailureKind::CoordinatorRestart,
                        rank: None,
                        worker: None,
                        reason: "the coordinator restarted".into(),
                        epoch: None,
                        retryable: true,
                    },
                )
                .await?;
            }
        }
        self.schedule().await;
        Ok(())
    }

    /// Validates `spec`, stores the job as `principal`'s and queues it;
    /// RESOURCE_EXHAUSTED when the principal has
    /// `max_active_jobs_per_principal` jobs pending or running.
    /// A retried submit with the same non-empty `request_id` from the same
    /// principal returns the job the first one created.
    pub async fn submit(
        self: &Arc<Self>,
        spec: JobSpec,
        principal: &str,
        request_id: &str,
    ) -> Result<v1::Job> {
        check_request_id(request_id)?;
        let seed = now_ms() ^ (u64::from(std::process::id()) << 32);
        let spec = spec::complete(spec, seed)?;
        if let Some(bench) = &spec.collective_bench {
            self.check_sweep_fits(&spec, bench.max_bytes)?;
        }
        registry::check_aliases(&spec.aliases, &self.config.model_limits)?;
        let max_size = self.config.model_limits.max_input_size;
        if spec.collective_bench.is_none() && spec.image_size > max_size {
            // Refused now rather than after training, at registration.
            return Err(Error::InvalidField {
                field: "spec.image_size".into(),
                reason: format!(
                    "image_size {} is over model_limits.max_input_size ({max_size}): \
                     the trained model could not be registered",
                    spec.image_size
                ),
            });
        }
        // Counted and created under the transition lock, so concurrent
        // submits cannot pass the quota together.
        let guard = self.transitions.lock().await;
        let stored = self.store.list_jobs().await?;
        if !request_id.is_empty()
            && let Some(first) = stored
                .iter()
                .find(|j| jobs::request_id(j) == request_id && jobs::created_by(j) == principal)
        {
            tracing::info!(job_id = %first.id, %principal, "submit retried with the same request_id");
            return Ok(jobs::to_wire(first, None));
        }
        let limit = self.config.max_active_jobs_per_principal;
        let active = stored
            .iter()
            .filter(|j| !j.state.is_terminal() && jobs::created_by(j) == principal)
            .count();
        if active >= limit as usize {
            return Err(Error::ResourceExhausted(format!(
                "{principal} has {active} jobs pending or running, the most \
                 max_active_jobs_per_principal ({limit}) allows; wait for one to end or cancel one"
            )));
        }
        let record = self
            .store
            .create_job(jobs::stored_spec(&spec, principal, request_id)?)
            .await?;
        drop(guard);
        tracing::info!(job_id = %record.id, name = %spec.name, %principal, "job submitted");
        self.log(&record)
            .push(Event::StateChanged(v1::JobStateChanged {
                from: v1::JobState::Unspecified as i32,
                to: v1::JobState::Pending as i32,
                reason: "submitted".into(),
                ..Default::default()
            }));
        self.metrics.jobs_submitted.inc();
        self.schedule_soon();
        Ok(jobs::to_wire(&record, None))
    }

    /// Refuses an all-reduce sweep whose largest message no known worker's
    /// device could hold (by the memory the workers registered; a cluster
    /// that reports none is given the benefit of the doubt).
    fn check_sweep_fits(&self, spec: &JobSpec, max_bytes: u64) -> Result<()> {
        let need = spec::sweep_bytes_needed(max_bytes);
        let cuda =
            spec.device() == DeviceKind::Cuda || spec.collective() == v1::CollectiveBackend::Nccl;
        let cpu = spec.device() == DeviceKind::Cpu;
        let largest = lock(&self.workers)
            .values()
            .flat_map(|w| w.info.devices.iter())
            .filter(|d| match d.kind() {
                DeviceKind::Cuda => !cpu,
                _ => !cuda,
            })
            .map(|d| d.memory_bytes)
            .filter(|&m| m > 0)
            .max();
        match largest {
            Some(largest) if largest < need => Err(Error::InvalidArgument(format!(
                "collective_bench.max_bytes {max_bytes} needs about {need} bytes on each rank's \
                 device, and the largest device of the cluster's workers has {largest}"
            ))),
            _ => Ok(()),
        }
    }

    /// A job by its wire id.
    pub async fn job(&self, id: &str) -> Result<v1::Job> {
        let record = self.store.get_job(parse_job_id(id)?).await?;
        self.wire_job(&record).await
    }

    async fn wire_job(&self, record: &JobRecord) -> Result<v1::Job> {
        let last = self
            .store
            .latest_checkpoint(record.id)
            .await?
            .map(|c| (c.id, c.epoch));
        Ok(jobs::to_wire(record, last))
    }

    /// Every job, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>> {
        let mut all = self.store.list_jobs().await?;
        all.sort_by_key(|j| std::cmp::Reverse(j.id.0));
        Ok(all)
    }

    /// The event log of a job (rebuilt from its record after a restart).
    pub async fn job_log(&self, id: &str) -> Result<Arc<JobLog>> {
        let id = parse_job_id(id)?;
        if let Some(log) = lock(&self.logs).get(&id) {
            return Ok(Arc::clone(log));
        }
        let record = self.store.get_job(id).await?;
        Ok(Arc::clone(
            lock(&self.logs)
                .entry(id)
                .or_insert_with(|| Arc::new(JobLog::from_record(&record))),
        ))
    }

    fn log(&self, record: &JobRecord) -> Arc<JobLog> {
        Arc::clone(
            lock(&self.logs)
                .entry(record.id)
                .or_insert_with(|| Arc::new(JobLog::new(record.id.to_string()))),
        )
    }

    /// Cancels a pending or running job.
    pub async fn cancel(
        self: &Arc<Self>,
        id: &str,
        reason: &str,
        principal: &str,
    ) -> Result<v1::Job> {
        let id = parse_job_id(id)?;
        let _guard = self.transitions.lock().await;
        let record = self.store.get_job(id).await?;
        match record.state {
            JobState::Cancelled => return self.wire_job(&record).await,
            s if s.is_terminal() => {
                return Err(Error::FailedPrecondition(format!(
                    "job {id} already {}",
                    jobs::wire_state(&record).short_name()
                )));
            }
            _ => {}
        }
        let from = jobs::wire_state(&record);
        let mut reason = if reason.is_empty() {
            format!("cancelled by {principal}")
        } else {
            reason.to_string()
        };
        truncate_utf8(&mut reason, self.config.max_log_line_bytes as usize);
        let attempt = record.attempts.len() as u32;
        let record = self
            .modify(id, |job| {
                job.state = JobState::Cancelled;
                job.error = Some(reason.clone());
                if let Some(a) = job.attempts.last_mut() {
                    a.ended_ms.get_or_insert_with(now_ms);
                }
                Ok(())
            })
            .await?;
        self.release_workers(id, attempt, &reason);
        self.finished(id, "cancelled");
        self.log(&record)
            .push(Event::StateChanged(v1::JobStateChanged {
                from: from as i32,
                to: v1::JobState::Cancelled as i32,
                attempt,
                reason: reason.clone(),
                world_size: 0,
            }));
        tracing::info!(job_id = %id, %reason, %principal, "job cancelled");
        drop(_guard);
        self.schedule_soon();
        self.wire_job(&record).await
    }

    /// Re-reads a job and applies `change` until the compare-and-set wins.
    async fn modify(
        &self,
        id: JobId,
        mut change: impl FnMut(&mut JobRecord) -> Result<()>,
    ) -> Result<JobRecord> {
        for _ in 0..8 {
            let mut record = patiently("reading a job", || self.store.get_job(id)).await?;
            change(&mut record)?;
            let written =
                patiently("writing a job", || self.store.update_job(record.clone())).await;
            match written {
                Err(camshaft_store::Error::Conflict { .. }) => continue,
                other => return Ok(other?),
            }
        }
        Err(Error::Internal(format!(
            "job {id} kept changing under the coordinator"
        )))
    }

    /// Whether `attempt` is the running attempt of job `id`.
    pub async fn is_current(&self, id: JobId, attempt: u32) -> Result<bool> {
        Ok(is_current(&self.store.get_job(id).await?, attempt))
    }

    /// Records one epoch row of the current attempt.
    pub async fn epoch_done(
        &self,
        id: JobId,
        attempt: u32,
        mut row: v1::EpochMetrics,
    ) -> Result<()> {
        let _guard = self.transitions.lock().await;
        row.attempt = attempt;
        let value = serde_json::to_value(&row)
            .map_err(|e| Error::Internal(format!("cannot encode an epoch row: {e}")))?;
        let mut current = true;
        let record = self
            .modify(id, |job| {
                current = is_current(job, attempt);
                if current {
                    job.history.push(value.clone());
                    drop_old_timelines(&mut job.history);
                }
                Ok(())
            })
            .await?;
        if current {
            self.metrics.epochs.inc();
            self.metrics
                .images_per_second
                .with_label_values(&[id.to_string().as_str()])
                .set(row.images_per_sec);
            self.log(&record).push(Event::Epoch(row));
        }
        Ok(())
    }

    /// Records one size of an all-reduce sweep of the current attempt: the
    /// rows go where a training job's epoch rows go (`history`), and
    /// [`jobs::to_wire`] shows them as `allreduce_rows`.
    pub async fn allreduce_row(
        &self,
        id: JobId,
        attempt: u32,
        mut row: v1::AllReduceRow,
    ) -> Result<()> {
        let _guard = self.transitions.lock().await;
        row.attempt = attempt;
        let value = serde_json::to_value(&row)
            .map_err(|e| Error::Internal(format!("cannot encode an all-reduce row: {e}")))?;
        let mut current = true;
        let record = self
            .modify(id, |job| {
                current = is_current(job, attempt) && jobs::is_collective_bench(job);
                if current {
                    job.history.push(value.clone());
                }
                Ok(())
            })
            .await?;
        if current {
            self.log(&record).push(Event::Allreduce(row));
        }
        Ok(())
    }

    /// Records a log line of a rank of `attempt`: at most
    /// `max_log_lines_per_attempt` lines an attempt (the first line past it
    /// says how the rest went), each cut to `max_log_line_bytes`.
    pub fn rank_log(&self, id: JobId, attempt: u32, mut line: v1::LogLine) {
        let keep = {
            let mut groups = lock(&self.groups);
            let Some(group) = groups.get_mut(&(id, attempt)) else {
                return;
            };
            if group.log_lines >= self.config.max_log_lines_per_attempt {
                group.logs_dropped += 1;
                if group.logs_dropped > 1 {
                    return;
                }
                line.level = "warn".into();
                line.message = format!(
                    "attempt {attempt} logged more than max_log_lines_per_attempt ({}) lines; \
                     later lines are dropped",
                    self.config.max_log_lines_per_attempt
                );
            } else {
                group.log_lines += 1;
            }
            true
        };
        truncate_utf8(&mut line.message, self.config.max_log_line_bytes as usize);
        truncate_utf8(&mut line.level, 16);
        let log = lock(&self.logs).get(&id).cloned();
        if let (true, Some(log)) = (keep, log) {
            log.push(Event::Log(line));
        }
    }

    /// Ends the current attempt of `id` with `failure`: the job restarts
    /// from its last checkpoint while the failure's budget lasts, else fails.
    /// A report about an attempt that is no longer current is ignored.
    pub async fn fail_attempt(
        self: &Arc<Self>,
        id: JobId,
        attempt: u32,
        failure: AttemptFailure,
    ) -> Result<()> {
        let guard = self.transitions.lock().await;
        let record = self.store.get_job(id).await?;
        if !is_current(&record, attempt) {
            return Ok(());
        }
        let spec = jobs::spec_of(&record);
        let stored = Failure {
            rank: failure.rank,
            worker: failure.worker.clone(),
            reason: failure.reason.clone(),
            kind: failure.kind.short_name().to_string(),
            epoch: failure.epoch,
            recorded_ms: now_ms(),
        };
        let mut give_up = None;
        let record = self
            .modify(id, |job| {
                if let Some(a) = job.attempts.last_mut() {
                    a.ended_ms = Some(now_ms());
                    a.failure = Some(stored.clone());
                }
                let (failures, changes) = jobs::budgets_used(job);
                give_up = if !failure.retryable {
                    Some("it cannot succeed on retry".to_string())
                } else if failures > spec.max_failures.unwrap_or(3) {
                    Some(format!(
                        "max_failures ({}) is spent",
                        spec.max_failures.unwrap_or(3)
                    ))
                } else if changes > spec.max_membership_changes.unwrap_or(10) {
                    Some(format!(
                        "max_membership_changes ({}) is spent",
                        spec.max_membership_changes.unwrap_or(10)
                    ))
                } else {
                    None
                };
                match &give_up {
                    Some(why) => {
                        job.state = JobState::Failed;
                        job.error = Some(format!(
                            "attempt {attempt} failed ({}): {}; giving up because {why}",
                            failure.kind.short_name(),
                            failure.reason
                        ));
                    }
                    None => job.state = JobState::Queued,
                }
                Ok(())
            })
            .await?;
        self.release_workers(id, attempt, &failure.reason);
        self.metrics
            .attempt_failures
            .with_label_values(&[failure.kind.short_name()])
            .inc();
        if record.state == JobState::Failed {
            self.finished(id, "failed");
        }
        let log = self.log(&record);
        log.push(Event::Failure(jobs::wire_failure(attempt, &stored)));
        let to = jobs::wire_state(&record);
        log.push(Event::StateChanged(v1::JobStateChanged {
            from: v1::JobState::Running as i32,
            to: to as i32,
            attempt,
            reason: record
                .error
                .clone()
                .unwrap_or_else(|| format!("restarting after {}", failure.kind.short_name())),
            world_size: 0,
        }));
        tracing::warn!(job_id = %id, attempt, kind = failure.kind.short_name(), reason = %failure.reason, state = to.short_name(), "attempt failed");
        drop(guard);
        self.schedule_soon();
        Ok(())
    }

    /// Registers the model of a finished attempt from its final checkpoint
    /// and marks the job succeeded (or failed, if registration fails).
    pub async fn complete(
        self: &Arc<Self>,
        id: JobId,
        attempt: u32,
        checkpoint_id: &str,
    ) -> Result<()> {
        let guard = self.transitions.lock().await;
        let record = self.store.get_job(id).await?;
        if !is_current(&record, attempt) {
            return Ok(());
        }
        // An all-reduce sweep has no model: its rows are its result.
        let bench = jobs::is_collective_bench(&record);
        let registered = if bench {
            None
        } else {
            Some(self.register_trained(&record, checkpoint_id).await)
        };
        let (state, error, version) = match registered {
            None => (JobState::Succeeded, None, None),
            Some(Ok(v)) => (JobState::Succeeded, None, Some(v)),
            Some(Err(e)) => (
                JobState::Failed,
                Some(format!("registering the trained model failed: {e}")),
                None,
            ),
        };
        let model_version = version
            .as_ref()
            .map(|v| format!("{}:{}", v.name, v.version));
        let early_stop = if bench {
            None
        } else {
            self.early_stop_of(id, checkpoint_id).await
        };
        let record = self
            .modify(id, |job| {
                job.state = state;
                job.error.clone_from(&error);
                job.model_version.clone_from(&model_version);
                if let Some(stop) = &early_stop {
                    jobs::record_early_stop(job, stop);
                }
                if let Some(a) = job.attempts.last_mut() {
                    a.ended_ms = Some(now_ms());
                }
                Ok(())
            })
            .await?;
        self.release_workers(id, attempt, "the job is done");
        self.finished(
            id,
            if state == JobState::Succeeded {
                "succeeded"
            } else {
                "failed"
            },
        );
        let log = self.log(&record);
        let registered_epoch = version
            .as_ref()
            .and_then(|v| v.lineage.as_ref())
            .and_then(|l| {
                l.epoch
                    .map(|e| format!("registered epoch {e} ({})", l.selected_by))
            });
        if let Some(version) = version {
            tracing::info!(job_id = %id, model = %format!("{}:{}", version.name, version.version), "job succeeded");
            log.push(Event::ModelRegistered(v1::ModelRegistered {
                version: Some(version),
            }));
        } else if bench {
            tracing::info!(job_id = %id, sizes = record.history.len(), "all-reduce sweep succeeded");
        } else {
            tracing::error!(job_id = %id, error = ?error, "job failed at registration");
        }
        let done = if bench {
            "every size measured".to_string()
        } else {
            let registered = registered_epoch.unwrap_or_else(|| "registered".into());
            match &early_stop {
                Some(stop) => format!(
                    "stopped early after epoch {}: {}; {registered}",
                    stop.epoch, stop.reason
                ),
                None => format!("trained and {registered}"),
            }
        };
        log.push(Event::StateChanged(v1::JobStateChanged {
            from: v1::JobState::Running as i32,
            to: jobs::wire_state(&record) as i32,
            attempt,
            reason: error.unwrap_or(done),
            world_size: 0,
        }));
        drop(guard);
        self.schedule_soon();
        Ok(())
    }

    async fn register_trained(
        &self,
        record: &JobRecord,
        checkpoint_id: &str,
    ) -> Result<v1::ModelVersion> {
        let spec = jobs::spec_of(record);
        let checkpoint_id: u64 = checkpoint_id.parse().map_err(|_| {
            Error::Internal(format!(
                "the final checkpoint id {checkpoint_id:?} is not a number"
            ))
        })?;
        let checkpoint = patiently("reading the final checkpoint", || {
            self.store.get_checkpoint(record.id, checkpoint_id)
        })
        .await?;
        // Which epoch the worker says the job registers (`register: best`
        // ships that epoch's weights beside the checkpoint's own).
        let selection = checkpoint
            .manifest
            .meta
            .get(bundle::SELECTION)
            .cloned()
            .unwrap_or_default();
        let files = bundle::unpack(&checkpoint.blob)?;
        let weights = [bundle::BEST_WEIGHTS, bundle::WEIGHTS]
            .iter()
            .find_map(|name| files.iter().find(|(n, _)| n == name))
            .map(|(_, data)| data.clone())
            .ok_or_else(|| Error::Internal("the final checkpoint has no weights".into()))?;
        let model_spec = checkpoint
            .manifest
            .meta
            .get("spec")
            .cloned()
            .ok_or_else(|| Error::Internal("the checkpoint has no model spec".into()))?;
        // Explained with the pixels it was validated on.
        let model_spec = registry::with_resize(model_spec, spec.resize());
        let epoch = selection
            .get("epoch")
            .and_then(serde_json::Value::as_u64)
            .and_then(|e| u32::try_from(e).ok());
        let selected_by = selection
            .get("selected_by")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("last")
            .to_string();
        // The chosen epoch's row (of the latest attempt that ran it), else
        // the last row.
        let rows: Vec<v1::EpochMetrics> = record
            .history
            .iter()
            .filter_map(|row| serde_json::from_value(row.clone()).ok())
            .collect();
        let last = epoch
            .and_then(|e| rows.iter().rev().find(|row| row.epoch == e))
            .or(rows.last())
            .cloned()
            .unwrap_or_default();
        let lineage = v1::Lineage {
            job_id: record.id.to_string(),
            dataset: spec::dataset_label(&spec),
            metrics: [
                ("accuracy".to_string(), last.accuracy),
                ("valid_loss".to_string(), last.valid_loss),
                ("train_loss".to_string(), last.train_loss),
            ]
            .into(),
            created_unix_ms: now_unix_ms(),
            checkpoint_id: checkpoint_id.to_string(),
            created_by: jobs::created_by(record).to_string(),
            epoch: Some(epoch.unwrap_or(last.epoch)),
            selected_by,
            ..Default::default()
        };
        let annotations = (&spec.tags, spec.description.as_str());
        self.register(
            &spec.name,
            model_spec,
            lineage,
            weights,
            &spec.aliases,
            annotations,
        )
        .await
    }

    /// Why the final checkpoint of a job says training stopped early, if it
    /// does.
    async fn early_stop_of(&self, id: JobId, checkpoint_id: &str) -> Option<v1::EarlyStop> {
        let checkpoint_id: u64 = checkpoint_id.parse().ok()?;
        let manifests = self.store.list_checkpoints(id).await.ok()?;
        let manifest = manifests.iter().find(|m| m.id == checkpoint_id)?;
        let stop = manifest.meta.get(bundle::SELECTION)?.get("early_stop")?;
        serde_json::from_value(stop.clone()).ok()
    }

    /// Changes the tags and description of `name:version` (read, change,
    /// write, one edit at a time) and returns the version.
    pub async fn update_version(
        &self,
        name: &str,
        version: u64,
        remove_tags: &[String],
        set_tags: &std::collections::HashMap<String, String>,
        description: Option<&str>,
    ) -> Result<v1::ModelVersion> {
        if let Some(description) = description {
            registry::check_description("description", description)?;
        }
        let _edit = self.registry_edits.lock().await;
        let stored = self
            .store
            .get_model(&camshaft_store::ModelRef::Version(
                name.to_string(),
                version,
            ))
            .await?;
        let (tags, old_description) = registry::annotations(&stored.lineage);
        let tags = registry::updated_tags(tags, remove_tags, set_tags)?;
        let description = description.unwrap_or(&old_description);
        let lineage = registry::with_annotations(stored.lineage, &tags, description);
        let updated = self
            .store
            .update_model_lineage(name, version, lineage)
            .await?;
        let models = self.store.list_models().await?;
        let wire = registry::to_wire(&updated, &registry::aliases_of(&models, name));
        self.model_events
            .push(ModelEvent::VersionUpdated(wire.clone()));
        Ok(wire)
    }

    /// Stores `weights` as the next version of `name` with its tags and
    /// description, points `latest` and `aliases` at it, and returns its
    /// wire form.
    pub async fn register(
        &self,
        name: &str,
        model_spec: serde_json::Value,
        lineage: v1::Lineage,
        weights: bytes::Bytes,
        aliases: &[String],
        (tags, description): (&std::collections::HashMap<String, String>, &str),
    ) -> Result<v1::ModelVersion> {
        // A version exists only once its weights fit its spec: an import
        // checked this already; a trained model's checkpoint is checked here.
        registry::check_registrable(&model_spec, &weights, &self.config.model_limits)?;
        let lineage = serde_json::to_value(&lineage)
            .map_err(|e| Error::Internal(format!("cannot encode lineage: {e}")))?;
        let lineage = registry::with_annotations(lineage, tags, description);
        // `latest` moves with the registration; the feed says from where.
        let latest_before = registry::aliases_of(&self.store.list_models().await?, name)
            .get(camshaft_store::LATEST)
            .copied();
        // A retry after an ambiguous failure may register a second,
        // identical version: better than losing a trained model.
        let version = patiently("registering a model", || {
            self.store
                .register_model(name, model_spec.clone(), lineage.clone(), weights.clone())
        })
        .await?;
        let by = version
            .lineage
            .get("created_by")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut moved = vec![(camshaft_store::LATEST.to_string(), latest_before)];
        for alias in aliases {
            let before = self
                .set_alias_quietly(name, alias, version.version, &by)
                .await?;
            moved.push((alias.clone(), before));
        }
        let models = patiently("listing models", || self.store.list_models()).await?;
        let wire = registry::to_wire(&version, &registry::aliases_of(&models, name));
        self.model_events
            .push(ModelEvent::VersionRegistered(wire.clone()));
        for (alias, before) in moved
            .into_iter()
            .filter(|(_, b)| *b != Some(version.version))
        {
            self.model_events
                .push(ModelEvent::AliasChanged(v1::AliasChange {
                    name: name.into(),
                    alias,
                    from_version: before,
                    to_version: Some(version.version),
                    changed_by: by.clone(),
                    unix_ms: now_unix_ms(),
                    revision: 0,
                }));
        }
        Ok(wire)
    }

    /// [`Cluster::set_alias`] without the feed event (a registration
    /// reports its aliases after its version).
    async fn set_alias_quietly(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        by: &str,
    ) -> Result<Option<u64>> {
        let before = registry::aliases_of(&self.store.list_models().await?, name)
            .get(alias)
            .copied();
        patiently("setting an alias", || {
            self.store.set_alias_by(name, alias, version, by)
        })
        .await?;
        Ok(before)
    }

    // ───────────────────────────── workers ─────────────────────────────

    /// Admits a worker: checks its version, takes a lease, stores its record,
    /// answers `Registered`. A worker reconnecting under the same id replaces
    /// its old stream (and whatever it ran is failed as lost).
    pub async fn register_worker(
        self: &Arc<Self>,
        register: v1::Register,
        principal: &str,
        tx: WorkerSender,
        peer_ip: Option<std::net::IpAddr>,
    ) -> Result<(String, u64)> {
        let ours = env!("CARGO_PKG_VERSION");
        if major(&register.version) != major(ours) {
            return Err(Error::FailedPrecondition(format!(
                "worker version {:?} does not match the coordinator's major version {ours}",
                register.version
            )));
        }
        check_register(&register)?;
        let id = if register.worker_id.is_empty() {
            // Unique across coordinator restarts: a worker keeps the id it
            // was given and presents it again when it reconnects.
            let n = self.next_worker.fetch_add(1, Ordering::Relaxed);
            format!("w-{}-{n}", self.id_prefix)
        } else {
            camshaft_store::validate_name("worker id", &register.worker_id)?;
            register.worker_id.clone()
        };
        let owner = lock(&self.workers)
            .get(&id)
            .map(|w| w.principal.clone())
            .or_else(|| {
                self.prune_lost();
                lock(&self.lost).get(&id).map(|l| l.principal.clone())
            });
        if let Some(owner) = owner
            && owner != principal
        {
            tracing::warn!(worker_id = %id, %principal, %owner, "refused a worker id of another principal");
            return Err(Error::PermissionDenied(format!(
                "worker id {id} belongs to another principal"
            )));
        }
        let lease = self.store.grant_lease(self.config.lease_ttl()).await?;
        let now = now_unix_ms();
        self.store
            .put_worker(WorkerRecord {
                id: id.clone(),
                hostname: register.hostname.clone(),
                devices: register.devices.iter().map(device_label).collect(),
                lease,
                meta: serde_json::json!({ "version": register.version, "labels": register.labels }),
                registered_ms: now_ms(),
            })
            .await?;
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let info = v1::WorkerInfo {
            worker_id: id.clone(),
            hostname: register.hostname,
            devices: register.devices,
            state: WorkerState::Idle as i32,
            registered_unix_ms: now,
            last_heartbeat_unix_ms: now,
            lease_expires_unix_ms: now + self.config.lease_ttl_ms as i64,
            version: register.version,
            labels: register.labels,
            ..Default::default()
        };
        let _ = tx.send(Ok(CoordinatorMessage {
            message: Some(ToWorker::Registered(v1::Registered {
                worker_id: id.clone(),
                lease_ttl_ms: self.config.lease_ttl_ms,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                coordinator_version: ours.to_string(),
                keep_running: Vec::new(),
            })),
        }));
        let replaced = lock(&self.workers).insert(
            id.clone(),
            WorkerConn {
                conn,
                info,
                tx,
                lease,
                task: None,
                peer_ip,
                principal: principal.to_string(),
                assigned: Vec::new(),
            },
        );
        lock(&self.lost).remove(&id);
        tracing::info!(worker_id = %id, "worker registered");
        if let Some(old) = replaced {
            let _ = old.tx.send(Err(Status::aborted(
                "replaced by a newer connection with the same worker id",
            )));
            if let Some((job, attempt)) = old.task {
                self.fail_attempt(job, attempt, lost(&id, "it reconnected mid-attempt"))
                    .await?;
            }
        }
        self.schedule_soon();
        Ok((id, conn))
    }

    /// Notes that a worker is alive.
    pub async fn heartbeat(&self, id: &str, conn: u64) {
        let lease = {
            let mut workers = lock(&self.workers);
            let Some(w) = workers.get_mut(id).filter(|w| w.conn == conn) else {
                return;
            };
            let now = now_unix_ms();
            w.info.last_heartbeat_unix_ms = now;
            w.info.lease_expires_unix_ms = now + self.config.lease_ttl_ms as i64;
            w.lease
        };
        if let Err(e) = self.store.keep_alive(lease).await {
            tracing::warn!(worker_id = %id, error = %e, "lease keep-alive failed");
        }
    }

    /// A worker leaves cleanly: it gets no new work, and the attempt it
    /// runs is re-formed without it, charged to `max_membership_changes`.
    pub async fn drain(self: &Arc<Self>, id: &str, conn: u64, reason: &str) -> Result<()> {
        let task = match lock(&self.workers).get_mut(id).filter(|w| w.conn == conn) {
            Some(w) => {
                w.info.state = WorkerState::Draining as i32;
                w.task
            }
            None => None,
        };
        if let Some((job, attempt)) = task {
            let failure = AttemptFailure {
                kind: FailureKind::MembershipChange,
                rank: None,
                worker: Some(id.to_string()),
                reason: format!("worker {id} left: {reason}"),
                epoch: None,
                retryable: true,
            };
            self.fail_attempt(job, attempt, failure).await?;
        }
        Ok(())
    }

    /// A worker's stream ended (or went silent past its lease): it is lost,
    /// and so is the attempt it was running.
    pub async fn worker_gone(self: &Arc<Self>, id: &str, conn: u64, reason: &str) {
        let gone = {
            let mut workers = lock(&self.workers);
            match workers.get(id) {
                Some(w) if w.conn == conn => workers.remove(id),
                _ => None,
            }
        };
        let Some(mut gone) = gone else {
            return;
        };
        tracing::warn!(worker_id = %id, %reason, "worker lost");
        if let Err(e) = self.store.revoke_lease(gone.lease).await {
            tracing::debug!(worker_id = %id, error = %e, "revoking the lease failed");
        }
        gone.info.state = WorkerState::Lost as i32;
        let task = gone.task.take();
        self.prune_lost();
        lock(&self.lost).insert(
            id.to_string(),
            LostWorker {
                info: gone.info,
                principal: gone.principal,
                since_ms: now_ms(),
            },
        );
        if let Some((job, attempt)) = task
            && let Err(e) = self.fail_attempt(job, attempt, lost(id, reason)).await
        {
            tracing::error!(job_id = %job, error = %e, "recording a lost worker failed");
        }
    }

    /// The workers, by id (live ones, plus lost ones if asked).
    pub fn list_workers(&self, include_lost: bool) -> Vec<v1::WorkerInfo> {
        let mut all: BTreeMap<String, v1::WorkerInfo> = lock(&self.workers)
            .iter()
            .map(|(id, w)| (id.clone(), w.info.clone()))
            .collect();
        if include_lost {
            self.prune_lost();
            for (id, lost) in lock(&self.lost).iter() {
                all.entry(id.clone()).or_insert_with(|| lost.info.clone());
            }
        }
        all.into_values().collect()
    }

    /// Forgets workers lost longer than `lost_worker_ttl_ms` ago.
    fn prune_lost(&self) {
        let cutoff = now_ms().saturating_sub(self.config.lost_worker_ttl_ms);
        lock(&self.lost).retain(|_, l| l.since_ms > cutoff);
    }

    /// What a message of connection `conn` of `worker` about `rank` of
    /// `job`'s `attempt` refers to: one of its current ranks, or an attempt
    /// it ran before. PERMISSION_DENIED for anything it was never given (or
    /// a rank it does not host).
    pub fn claim(
        &self,
        worker: &str,
        conn: u64,
        job: JobId,
        attempt: u32,
        rank: u32,
    ) -> Result<Claim> {
        let workers = lock(&self.workers);
        let Some(w) = workers.get(worker).filter(|w| w.conn == conn) else {
            return Err(Error::PermissionDenied(format!(
                "worker {worker} is not attached"
            )));
        };
        if w.task == Some((job, attempt)) {
            if w.info.ranks.contains(&rank) {
                return Ok(Claim::Current);
            }
        } else if w.assigned.contains(&(job, attempt)) {
            return Ok(Claim::Stale);
        }
        Err(Error::PermissionDenied(format!(
            "worker {worker} was not given rank {rank} of attempt {attempt} of job {job}"
        )))
    }

    /// The attempt of `job` whose rank `rank` connection `conn` runs now,
    /// or of the last attempt of `job` it ran (a late log line): the
    /// attempt a log line of it belongs to. PERMISSION_DENIED otherwise.
    pub fn current_attempt_of(
        &self,
        worker: &str,
        conn: u64,
        job: JobId,
        rank: u32,
    ) -> Result<u32> {
        let workers = lock(&self.workers);
        let Some(w) = workers.get(worker).filter(|w| w.conn == conn) else {
            return Err(Error::PermissionDenied(format!(
                "worker {worker} is not attached"
            )));
        };
        match w.task {
            Some((j, attempt)) if j == job && w.info.ranks.contains(&rank) => Ok(attempt),
            Some((j, _)) if j == job => Err(Error::PermissionDenied(format!(
                "worker {worker} does not run rank {rank} of job {job}"
            ))),
            _ => w
                .assigned
                .iter()
                .rev()
                .find(|(j, _)| *j == job)
                .map(|(_, a)| *a)
                .ok_or_else(|| {
                    Error::PermissionDenied(format!("worker {worker} was not given job {job}"))
                }),
        }
    }

    /// Checks `secret` against the attempt's `attempt_secret`: a checkpoint
    /// call of anyone but the attempt's group is PERMISSION_DENIED.
    pub fn check_attempt_secret(&self, job: JobId, attempt: u32, secret: &[u8]) -> Result<()> {
        let groups = lock(&self.groups);
        match groups.get(&(job, attempt)) {
            Some(group) if same_secret(&group.secret, secret) => Ok(()),
            _ => Err(Error::PermissionDenied(format!(
                "attempt {attempt} of job {job} is not running, or the attempt secret is wrong"
            ))),
        }
    }

    /// Tells every worker to exit and closes their streams (a stopping
    /// coordinator must not wait for them).
    pub fn shutdown_workers(&self, reason: &str) {
        for (_, w) in std::mem::take(&mut *lock(&self.workers)) {
            let _ = w.tx.send(Ok(CoordinatorMessage {
                message: Some(ToWorker::Shutdown(v1::Shutdown {
                    reason: reason.to_string(),
                    drain: false,
                })),
            }));
        }
    }

    /// Frees the workers of an attempt and tells them to stop its ranks
    /// (a no-op for ranks that already ended); forgets its group.
    fn release_workers(&self, job: JobId, attempt: u32, reason: &str) {
        lock(&self.groups).remove(&(job, attempt));
        for w in lock(&self.workers).values_mut() {
            if w.task != Some((job, attempt)) {
                continue;
            }
            w.task = None;
            w.info.job_id.clear();
            w.info.ranks.clear();
            if w.info.state == WorkerState::Busy as i32 {
                w.info.state = WorkerState::Idle as i32;
            }
            let _ = w.tx.send(Ok(CoordinatorMessage {
                message: Some(ToWorker::Cancel(v1::Cancel {
                    job_id: job.to_string(),
                    attempt,
                    reason: reason.to_string(),
                })),
            }));
        }
    }

    // ───────────────────────────── groups ─────────────────────────────

    /// Records a rank's rendezvous data; once every rank of the group
    /// offered, sends them all the `Rendezvous`.
    pub fn rendezvous_offer(&self, worker: &str, mut offer: v1::RendezvousOffer) -> Result<()> {
        let job = parse_job_id(&offer.job_id)?;
        let peer_ip = lock(&self.workers).get(worker).and_then(|w| w.peer_ip);
        if let (Some(ip), Some((host, port))) = (peer_ip, offer.ring_address.rsplit_once(':'))
            && matches!(host, "0.0.0.0" | "[::]" | "::")
        {
            offer.ring_address =
                std::net::SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string();
        }
        if offer.rank != 0 {
            // Only rank 0's NCCL id is used; nobody else may supply one.
            offer.nccl_unique_id = Default::default();
        }
        let complete = {
            let mut groups = lock(&self.groups);
            let Some(group) = groups.get_mut(&(job, offer.attempt)) else {
                return Ok(());
            };
            group.offers.insert(offer.rank, offer.clone());
            (group.offers.len() == group.world_size as usize).then(|| {
                let offers: Vec<&v1::RendezvousOffer> = group.offers.values().collect();
                (
                    group.workers.clone(),
                    v1::Rendezvous {
                        job_id: job.to_string(),
                        attempt: offer.attempt,
                        nccl_unique_id: offers[0].nccl_unique_id.clone(),
                        ring_peers: offers.iter().map(|o| o.ring_address.clone()).collect(),
                    },
                )
            })
        };
        if let Some((workers, rendezvous)) = complete {
            tracing::info!(job_id = %job, attempt = offer.attempt, ranks = rendezvous.ring_peers.len(), "rendezvous complete");
            let all = lock(&self.workers);
            for id in &workers {
                if let Some(w) = all.get(id) {
                    let _ = w.tx.send(Ok(CoordinatorMessage {
                        message: Some(ToWorker::Rendezvous(rendezvous.clone())),
                    }));
                }
            }
        }
        Ok(())
    }

    /// Records a finished rank; when the whole group finished, registers
    /// rank 0's final checkpoint.
    pub async fn rank_done(self: &Arc<Self>, job: JobId, done: v1::TaskDone) -> Result<()> {
        let finished = {
            let mut groups = lock(&self.groups);
            let Some(group) = groups.get_mut(&(job, done.attempt)) else {
                return Ok(());
            };
            group.done.insert(done.rank);
            if done.rank == 0 {
                group.checkpoint = done.final_checkpoint_id.clone();
            }
            (group.done.len() == group.world_size as usize).then(|| group.checkpoint.clone())
        };
        match finished {
            Some(checkpoint) => self.complete(job, done.attempt, &checkpoint).await,
            None => Ok(()),
        }
    }

    // ───────────────────────────── scheduling ─────────────────────────────

    /// Runs a scheduling pass on another task (callers may hold locks).
    pub fn schedule_soon(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.schedule().await });
    }

    /// Assigns queued jobs, oldest first, to idle workers that can run them.
    pub async fn schedule(self: &Arc<Self>) {
        if let Err(e) = self.schedule_pass().await {
            tracing::error!(error = %e, "scheduling failed");
        }
    }

    async fn schedule_pass(self: &Arc<Self>) -> Result<()> {
        let _guard = self.transitions.lock().await;
        let mut queued: Vec<JobRecord> = self
            .store
            .list_jobs()
            .await?
            .into_iter()
            .filter(|j| j.state == JobState::Queued)
            .collect();
        queued.sort_by_key(|j| j.id.0);
        for record in queued {
            let spec = jobs::spec_of(&record);
            let restart = !record.attempts.is_empty();
            if let Some(group) = self.pick_group(&spec, restart) {
                self.assign(record, spec, group).await?;
            }
        }
        Ok(())
    }

    /// Idle workers that can run `spec`, each with the devices of its
    /// ranks: `spec.workers` of them, or (on a restart) as many as are
    /// there down to `min_workers`. GPUs where the spec asks for CUDA or
    /// leaves the device open and every picked worker has them.
    fn pick_group(&self, spec: &JobSpec, restart: bool) -> Option<Vec<(String, Vec<v1::Device>)>> {
        let wanted = spec.workers.max(1) as usize;
        let least = if restart {
            spec.min_workers.clamp(1, spec.workers.max(1)) as usize
        } else {
            wanted
        };
        let workers = lock(&self.workers);
        let idle: Vec<(&String, &WorkerConn)> = workers
            .iter()
            .filter(|(_, w)| w.task.is_none() && w.info.state == WorkerState::Idle as i32)
            .collect();
        let gpus = |w: &WorkerConn| -> Option<Vec<v1::Device>> {
            let all: Vec<v1::Device> = w
                .info
                .devices
                .iter()
                .filter(|d| d.kind() == DeviceKind::Cuda)
                .cloned()
                .collect();
            let want = if spec.gpus_per_worker == 0 {
                all.len()
            } else {
                spec.gpus_per_worker as usize
            };
            (want > 0 && all.len() >= want).then(|| all.into_iter().take(want).collect())
        };
        let cpu = || {
            vec![v1::Device {
                kind: DeviceKind::Cpu as i32,
                name: "cpu".into(),
                ..Default::default()
            }]
        };
        let on_gpus: Vec<(String, Vec<v1::Device>)> = idle
            .iter()
            .filter_map(|(id, w)| gpus(w).map(|d| ((*id).clone(), d)))
            .take(wanted)
            .collect();
        let nccl_only = spec.collective() == v1::CollectiveBackend::Nccl;
        let group = match spec.device() {
            DeviceKind::Cuda => on_gpus,
            _ if nccl_only => on_gpus,
            DeviceKind::Cpu => idle
                .iter()
                .take(wanted)
                .map(|(id, _)| ((*id).clone(), cpu()))
                .collect(),
            DeviceKind::Unspecified => {
                if on_gpus.len() >= least {
                    on_gpus
                } else {
                    idle.iter()
                        .take(wanted)
                        .map(|(id, _)| ((*id).clone(), cpu()))
                        .collect()
                }
            }
        };
        (group.len() >= least).then_some(group)
    }

    async fn assign(
        self: &Arc<Self>,
        record: JobRecord,
        spec: JobSpec,
        group: Vec<(String, Vec<v1::Device>)>,
    ) -> Result<()> {
        let id = record.id;
        let attempt = record.attempts.len() as u32 + 1;
        let resume = self
            .store
            .latest_checkpoint(id)
            .await?
            .map(|c| c.id.to_string())
            .unwrap_or_default();
        let from = jobs::wire_state(&record);
        let workers: Vec<String> = group.iter().map(|(w, _)| w.clone()).collect();
        let world_size: u32 = group.iter().map(|(_, d)| d.len() as u32).sum();
        let all_cuda = group
            .iter()
            .all(|(_, d)| d.iter().all(|d| d.kind() == DeviceKind::Cuda));
        let backend = if all_cuda && spec.collective() != v1::CollectiveBackend::Ring {
            v1::CollectiveBackend::Nccl
        } else {
            v1::CollectiveBackend::Ring
        };
        let secret = camshaft_proto::security::random_bytes::<32>()?.to_vec();
        let record = self
            .modify(id, |job| {
                job.state = JobState::Running;
                job.attempts.push(Attempt {
                    number: attempt,
                    workers: workers.clone(),
                    started_ms: now_ms(),
                    ended_ms: None,
                    failure: None,
                });
                Ok(())
            })
            .await?;
        lock(&self.groups).insert(
            (id, attempt),
            Group {
                world_size,
                workers: workers.clone(),
                secret: secret.clone(),
                ..Group::default()
            },
        );
        let mut next_rank = 0u32;
        let mut unsent = None;
        {
            let mut all = lock(&self.workers);
            for (worker, devices) in &group {
                let ranks: Vec<v1::LocalRank> = devices
                    .iter()
                    .enumerate()
                    .map(|(local, device)| v1::LocalRank {
                        rank: next_rank + local as u32,
                        local_rank: local as u32,
                        device: Some(device.clone()),
                    })
                    .collect();
                next_rank += ranks.len() as u32;
                let assignment = v1::Assignment {
                    job_id: id.to_string(),
                    attempt,
                    world_size,
                    ranks: ranks.clone(),
                    spec: Some(spec.clone()),
                    backend: backend as i32,
                    resume_checkpoint_id: resume.clone(),
                    shard_seed: spec.seed.unwrap_or(0),
                    rendezvous_timeout_ms: self.config.rendezvous_timeout_ms,
                    num_workers: group.len() as u32,
                    attempt_secret: secret.clone().into(),
                };
                let sent = all.get_mut(worker).is_some_and(|w| {
                    w.task = Some((id, attempt));
                    if w.assigned.len() >= PAST_ATTEMPTS_KEPT {
                        w.assigned.remove(0);
                    }
                    w.assigned.push((id, attempt));
                    w.info.state = WorkerState::Busy as i32;
                    w.info.job_id = id.to_string();
                    w.info.ranks = ranks.iter().map(|r| r.rank).collect();
                    w.tx.send(Ok(CoordinatorMessage {
                        message: Some(ToWorker::Assignment(assignment)),
                    }))
                    .is_ok()
                });
                if !sent {
                    unsent.get_or_insert_with(|| worker.clone());
                }
            }
        }
        let mut reason = format!(
            "{} worker(s) ({}), {}",
            workers.len(),
            workers.join(", "),
            backend.short_name()
        );
        if !resume.is_empty() {
            reason.push_str(&format!(", resuming from checkpoint {resume}"));
        }
        tracing::info!(job_id = %id, attempt, world_size, workers = %workers.join(","), "attempt started");
        self.log(&record)
            .push(Event::StateChanged(v1::JobStateChanged {
                from: from as i32,
                to: v1::JobState::Running as i32,
                attempt,
                reason,
                world_size,
            }));
        // Failures found here are recorded on another task, once this pass
        // frees the transition lock.
        let this = Arc::clone(self);
        let rendezvous = Duration::from_millis(self.config.rendezvous_timeout_ms);
        tokio::spawn(async move {
            let failure = match unsent {
                Some(worker) => lost(&worker, "it disconnected before its assignment"),
                None if world_size <= 1 => return,
                None => {
                    tokio::time::sleep(rendezvous).await;
                    let missing: Vec<u32> = match lock(&this.groups).get(&(id, attempt)) {
                        Some(g) => (0..g.world_size)
                            .filter(|r| !g.offers.contains_key(r))
                            .collect(),
                        None => return,
                    };
                    if missing.is_empty() {
                        return;
                    }
                    AttemptFailure {
                        kind: FailureKind::CollectiveTimeout,
                        rank: missing.first().copied(),
                        worker: None,
                        reason: format!(
                            "ranks {missing:?} did not offer rendezvous data within {} ms",
                            rendezvous.as_millis()
                        ),
                        epoch: None,
                        retryable: true,
                    }
                }
            };
            if let Err(e) = this.fail_attempt(id, attempt, failure).await {
                tracing::error!(job_id = %id, error = %e, "recording a failed start failed");
            }
        });
        Ok(())
    }

    /// The number of live workers and of pending or running jobs.
    pub async fn counts(&self) -> (u32, u32, bool) {
        let live = lock(&self.workers).len() as u32;
        match self.store.list_jobs().await {
            Ok(all) => (
                live,
                all.iter().filter(|j| !j.state.is_terminal()).count() as u32,
                true,
            ),
            Err(_) => (live, 0, false),
        }
    }
}

/// How long a job transition keeps retrying a store that is unavailable
/// (etcd restarting, a lost leader) before it gives up with the error.
const STORE_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `op` until it succeeds, fails with something other than
/// [`camshaft_store::Error::Unavailable`], or [`STORE_PATIENCE`] has passed,
/// backing off from 100 ms to 5 s. Only for operations that are safe to
/// repeat (reads, compare-and-set writes).
async fn patiently<T, F, Fut>(what: &str, mut op: F) -> camshaft_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = camshaft_store::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Err(camshaft_store::Error::Unavailable { reason })
                if tokio::time::Instant::now() + backoff < deadline =>
            {
                tracing::warn!(%what, %reason, retry_in_ms = backoff.as_millis() as u64, "store unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// What one worker may declare about itself: its record is kept and listed.
const MAX_DEVICES: usize = 64;
const MAX_LABELS: usize = 32;
const MAX_FIELD_BYTES: usize = 256;

/// Refuses a `Register` that declares more than a worker has any need to.
fn check_register(r: &v1::Register) -> Result<()> {
    let long = std::iter::once(&r.hostname)
        .chain(r.labels.iter().flat_map(|(k, v)| [k, v]))
        .chain(r.devices.iter().map(|d| &d.name))
        .any(|s| s.len() > MAX_FIELD_BYTES);
    if r.devices.len() > MAX_DEVICES || r.labels.len() > MAX_LABELS || long {
        return Err(Error::InvalidArgument(format!(
            "a worker registers at most {MAX_DEVICES} devices and {MAX_LABELS} labels, \
             each name at most {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn is_current(job: &JobRecord, attempt: u32) -> bool {
    job.state == JobState::Running && job.attempts.len() as u32 == attempt
}

fn lost(worker: &str, reason: &str) -> AttemptFailure {
    AttemptFailure {
        kind: FailureKind::WorkerLost,
        rank: None,
        worker: Some(worker.to_string()),
        reason: format!("worker {worker} lost: {reason}"),
        epoch: None,
        retryable: true,
    }
}

/// `cuda:0`, `cpu`: how a worker record names a device.
fn device_label(d: &v1::Device) -> String {
    match d.kind() {
        DeviceKind::Cuda => format!("cuda:{}", d.index),
        _ => "cpu".to_string(),
    }
}

/// Most characters of a submit's idempotency key.
const MAX_REQUEST_ID: usize = 128;

/// An idempotency key: at most [`MAX_REQUEST_ID`] printable ASCII
/// characters (empty: none).
fn check_request_id(request_id: &str) -> Result<()> {
    if request_id.len() > MAX_REQUEST_ID || !request_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidField {
            field: "request_id".into(),
            reason: format!(
                "request_id must be at most {MAX_REQUEST_ID} printable ASCII characters, not {}",
                camshaft_proto::short(request_id)
            ),
        });
    }
    Ok(())
}

/// Parses a wire job id (`j-17`).
pub fn parse_job_id(id: &str) -> Result<JobId> {
    id.parse()
        .map_err(|_| Error::InvalidArgument(format!("{id:?} is not a job id (like j-17)")))
}

/// Epoch rows that keep their step timelines (`step_profiles[].last_steps`)
/// in a job's stored history; older rows keep only the per-phase totals, so
/// a long profiled job stays far below the store's value size limit.
const TIMELINES_KEPT: usize = 2;

fn drop_old_timelines(history: &mut [serde_json::Value]) {
    let old = history.len().saturating_sub(TIMELINES_KEPT);
    for row in &mut history[..old] {
        if let Some(profiles) = row
            .get_mut("step_profiles")
            .and_then(serde_json::Value::as_array_mut)
        {
            for profile in profiles {
                if let Some(steps) = profile.get_mut("last_steps") {
                    *steps = serde_json::Value::Array(Vec::new());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_last_rows_keep_their_timelines() {
        let row = |epoch: u32| {
            json!({"epoch": epoch, "step_profiles": [
                {"rank": 0, "steps": 4, "last_steps": [{"step": 3}]},
                {"rank": 1, "steps": 4, "last_steps": [{"step": 3}]},
            ]})
        };
        let mut history: Vec<serde_json::Value> = (0..4).map(row).collect();
        history.push(json!({"epoch": 4}));
        drop_old_timelines(&mut history);
        let kept: Vec<bool> = history
            .iter()
            .map(|r| r["step_profiles"][1]["last_steps"][0]["step"] == 3)
            .collect();
        assert_eq!(kept, [false, false, false, true, false]);
        assert_eq!(history[0]["step_profiles"][1]["steps"], 4, "totals stay");
    }
}
