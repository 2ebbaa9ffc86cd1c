//! Scheduling: queued jobs, oldest first, placed on idle workers
//! ([`placement`](super::placement)) and started, and an attempt whose
//! ranks do not all meet in time failed.

use std::sync::Arc;
use std::time::Duration;

use camshaft_proto::v1::{
    self, FailureKind, JobSpec, coordinator_message::Message as ToWorker, job_event::Event,
};
use camshaft_store::{Attempt, JobRecord, JobState, now_ms};

use super::placement::{self, Placement};
use super::rendezvous::Group;
use super::{AttemptFailure, Cluster, budget, lost};
use crate::{Result, jobs};

impl Cluster {
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
            let read =
                jobs::spec_of(&record).and_then(|spec| Ok((crate::spec::group(&spec)?, spec)));
            let (group, spec) = match read {
                Ok(read) => read,
                Err(e) => {
                    // Submit completed it: only a store edited by hand gets here.
                    tracing::error!(job = %record.id, error = %e, "a stored job's spec does not read; left queued");
                    continue;
                }
            };
            let restart = !record.attempts.is_empty();
            let placed = placement::place(&group, &self.state().workers.idle(), restart);
            if let Some(placed) = placed {
                self.assign(record, spec, placed).await?;
            }
        }
        Ok(())
    }

    /// Starts the next attempt of `record` where `placed` says: the record
    /// turns RUNNING, every worker gets its `Assignment`, and a watcher
    /// fails the attempt if a worker is gone or the ranks do not all offer
    /// their rendezvous data in time.
    async fn assign(
        self: &Arc<Self>,
        record: JobRecord,
        spec: JobSpec,
        placed: Placement,
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
        let workers = placed.worker_ids();
        let world_size = placed.world_size();
        let backend = v1::CollectiveBackend::from(placed.backend);
        let shard_seed = budget::policy(&spec).shard_seed;
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
        let mut unsent = None;
        {
            let mut state = self.state();
            state.groups.insert(
                (id, attempt),
                Group::new(world_size, workers.clone(), secret.clone()),
            );
            for ((worker, devices), ranks) in placed.workers.iter().zip(placed.rank_ranges()) {
                let ranks: Vec<v1::LocalRank> = devices
                    .iter()
                    .zip(ranks)
                    .enumerate()
                    .map(|(local, (device, rank))| v1::LocalRank {
                        rank,
                        local_rank: local as u32,
                        device: Some(device.clone()),
                    })
                    .collect();
                let assignment = v1::Assignment {
                    job_id: id.to_string(),
                    attempt,
                    world_size,
                    ranks: ranks.clone(),
                    spec: Some(spec.clone()),
                    backend: backend as i32,
                    resume_checkpoint_id: resume.clone(),
                    shard_seed,
                    rendezvous_timeout_ms: self.config.rendezvous_timeout_ms,
                    num_workers: placed.workers.len() as u32,
                    attempt_secret: secret.clone().into(),
                };
                let rank_ids = ranks.iter().map(|r| r.rank).collect();
                let sent = state.workers.start(
                    worker,
                    id,
                    attempt,
                    rank_ids,
                    ToWorker::Assignment(assignment),
                );
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
                    let missing = match this.state().groups.get(&(id, attempt)) {
                        Some(g) => g.missing(),
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
}
