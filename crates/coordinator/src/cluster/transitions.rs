//! Job transitions: submit, cancel, epoch rows, failures, completion, each
//! a compare-and-set on the job's record under the `transitions` lock, and
//! the job event logs they append to.

use std::sync::Arc;

use camshaft_proto::v1::{self, DeviceKind, FailureKind, JobSpec, job_event::Event};
use camshaft_store::{Failure, JobId, JobRecord, JobState, now_ms};

use super::budget::{self, Used, Verdict};
use super::rendezvous::LogAdmission;
use super::{
    AttemptFailure, Cluster, check_request_id, drop_old_timelines, is_current, parse_job_id,
    patiently, truncate_utf8,
};
use crate::jobs::{self, JobLog};
use crate::{Error, Result, registry, spec};

impl Cluster {
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
            return jobs::to_wire(first, None);
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
        jobs::to_wire(&record, None)
    }

    /// Refuses an all-reduce sweep whose largest message no known worker's
    /// device could hold (by the memory the workers registered; a cluster
    /// that reports none is given the benefit of the doubt).
    fn check_sweep_fits(&self, spec: &JobSpec, max_bytes: u64) -> Result<()> {
        let need = spec::sweep_bytes_needed(max_bytes);
        let cuda =
            spec.device() == DeviceKind::Cuda || spec.collective() == v1::CollectiveBackend::Nccl;
        let cpu = spec.device() == DeviceKind::Cpu;
        let state = self.state();
        let largest = state
            .workers
            .links()
            .flat_map(|l| l.worker.devices.iter())
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
        jobs::to_wire(record, last)
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
        if let Some(log) = self.state().logs.get(&id) {
            return Ok(Arc::clone(log));
        }
        let rebuilt = JobLog::from_record(&self.store.get_job(id).await?)?;
        Ok(Arc::clone(
            self.state()
                .logs
                .entry(id)
                .or_insert_with(|| Arc::new(rebuilt)),
        ))
    }

    pub(super) fn log(&self, record: &JobRecord) -> Arc<JobLog> {
        Arc::clone(
            self.state()
                .logs
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
    pub(super) async fn modify(
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
                    drop_old_timelines(&mut job.history)?;
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
        let max_lines = self.config.max_log_lines_per_attempt;
        let log = {
            let mut state = self.state();
            let Some(group) = state.groups.get_mut(&(id, attempt)) else {
                return;
            };
            match group.admit_log_line(max_lines) {
                LogAdmission::Keep => {}
                LogAdmission::Drop => return,
                LogAdmission::Overflow => {
                    line.level = "warn".into();
                    line.message = format!(
                        "attempt {attempt} logged more than max_log_lines_per_attempt \
                         ({max_lines}) lines; later lines are dropped",
                    );
                }
            }
            state.logs.get(&id).cloned()
        };
        truncate_utf8(&mut line.message, self.config.max_log_line_bytes as usize);
        truncate_utf8(&mut line.level, 16);
        if let Some(log) = log {
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
        let policy = budget::policy(&jobs::spec_of(&record)?);
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
                give_up = match budget::verdict(&policy, Used::by(job), failure.retryable) {
                    Verdict::Requeue => None,
                    Verdict::GiveUp(why) => Some(why),
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

    /// The number of live workers and of pending or running jobs.
    pub async fn counts(&self) -> (u32, u32, bool) {
        let live = self.worker_count() as u32;
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
