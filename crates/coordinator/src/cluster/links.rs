//! The workers' side: registration, heartbeats, draining and loss, what a
//! worker's message may refer to, and the rendezvous of an attempt's ranks.
//! The decisions are the [`WorkerTable`](super::workers::WorkerTable)'s and
//! the [`Group`](super::rendezvous::Group)'s; this sends what they decide.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use camshaft_proto::now_unix_ms;
use camshaft_proto::v1::{self, FailureKind, coordinator_message::Message as ToWorker};
use camshaft_store::{JobId, WorkerRecord, now_ms};
use tonic::Status;

use super::rendezvous::normalise_offer;
use super::workers::{
    Claim, Link, Worker, WorkerSender, WorkerStatus, check_register, device_label, major,
};
use super::{AttemptFailure, Cluster, lost, parse_job_id};
use crate::{Error, Result};

impl Cluster {
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
        let owner = self.state().workers.owner(&id, self.lost_cutoff_ms());
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
        let worker = Worker {
            id: id.clone(),
            hostname: register.hostname,
            devices: register.devices,
            status: WorkerStatus::Idle,
            task: None,
            registered_unix_ms: now,
            last_heartbeat_unix_ms: now,
            lease_expires_unix_ms: now + self.config.lease_ttl_ms as i64,
            version: register.version,
            labels: register.labels,
        };
        let link = Link::new(conn, worker, tx, lease, peer_ip, principal.to_string());
        link.send(ToWorker::Registered(v1::Registered {
            worker_id: id.clone(),
            lease_ttl_ms: self.config.lease_ttl_ms,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            coordinator_version: ours.to_string(),
            keep_running: Vec::new(),
        }));
        let replaced = self.state().workers.insert(link);
        tracing::info!(worker_id = %id, "worker registered");
        if let Some(old) = replaced {
            let _ = old.tx.send(Err(Status::aborted(
                "replaced by a newer connection with the same worker id",
            )));
            if let Some((job, attempt)) = old.attempt() {
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
            let mut state = self.state();
            let Some(l) = state.workers.link_mut(id, conn) else {
                return;
            };
            let now = now_unix_ms();
            l.worker.last_heartbeat_unix_ms = now;
            l.worker.lease_expires_unix_ms = now + self.config.lease_ttl_ms as i64;
            l.lease
        };
        if let Err(e) = self.store.keep_alive(lease).await {
            tracing::warn!(worker_id = %id, error = %e, "lease keep-alive failed");
        }
    }

    /// A worker leaves cleanly: it gets no new work, and the attempt it
    /// runs is re-formed without it, charged to `max_membership_changes`.
    pub async fn drain(self: &Arc<Self>, id: &str, conn: u64, reason: &str) -> Result<()> {
        let task = match self.state().workers.link_mut(id, conn) {
            Some(l) => {
                l.worker.status = WorkerStatus::Draining;
                l.attempt()
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
        let cutoff = self.lost_cutoff_ms();
        let gone = self.state().workers.lose(id, conn, now_ms(), cutoff);
        let Some((lease, task)) = gone else {
            return;
        };
        tracing::warn!(worker_id = %id, %reason, "worker lost");
        if let Err(e) = self.store.revoke_lease(lease).await {
            tracing::debug!(worker_id = %id, error = %e, "revoking the lease failed");
        }
        if let Some((job, attempt)) = task
            && let Err(e) = self.fail_attempt(job, attempt, lost(id, reason)).await
        {
            tracing::error!(job_id = %job, error = %e, "recording a lost worker failed");
        }
    }

    /// The workers, by id (live ones, plus lost ones if asked).
    pub fn list_workers(&self, include_lost: bool) -> Vec<Worker> {
        let cutoff = include_lost.then(|| self.lost_cutoff_ms());
        self.state().workers.list(cutoff)
    }

    /// Workers lost at or before this are forgotten (`lost_worker_ttl_ms`).
    fn lost_cutoff_ms(&self) -> u64 {
        now_ms().saturating_sub(self.config.lost_worker_ttl_ms)
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
        self.state().workers.claim(worker, conn, job, attempt, rank)
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
        self.state()
            .workers
            .current_attempt_of(worker, conn, job, rank)
    }

    /// Checks `secret` against the attempt's `attempt_secret`: a checkpoint
    /// call of anyone but the attempt's group is PERMISSION_DENIED.
    pub fn check_attempt_secret(&self, job: JobId, attempt: u32, secret: &[u8]) -> Result<()> {
        match self.state().groups.get(&(job, attempt)) {
            Some(group) if group.secret_matches(secret) => Ok(()),
            _ => Err(Error::PermissionDenied(format!(
                "attempt {attempt} of job {job} is not running, or the attempt secret is wrong"
            ))),
        }
    }

    /// Tells every worker to exit and closes their streams (a stopping
    /// coordinator must not wait for them).
    pub fn shutdown_workers(&self, reason: &str) {
        let links = self.state().workers.take_links();
        for l in links {
            l.send(ToWorker::Shutdown(v1::Shutdown {
                reason: reason.to_string(),
                drain: false,
            }));
        }
    }

    /// Frees the workers of an attempt and tells them to stop its ranks
    /// (a no-op for ranks that already ended); forgets its group.
    pub(super) fn release_workers(&self, job: JobId, attempt: u32, reason: &str) {
        let cancel = ToWorker::Cancel(v1::Cancel {
            job_id: job.to_string(),
            attempt,
            reason: reason.to_string(),
        });
        let mut state = self.state();
        state.groups.remove(&(job, attempt));
        state.workers.release(job, attempt, &cancel);
    }

    /// Records a rank's rendezvous data; once every rank of the group
    /// offered, sends them all the `Rendezvous`.
    pub fn rendezvous_offer(&self, worker: &str, offer: v1::RendezvousOffer) -> Result<()> {
        let job = parse_job_id(&offer.job_id)?;
        let mut state = self.state();
        let peer_ip = state.workers.get(worker).and_then(|l| l.peer_ip);
        let offer = normalise_offer(offer, peer_ip);
        let attempt = offer.attempt;
        let Some(group) = state.groups.get_mut(&(job, attempt)) else {
            return Ok(());
        };
        let Some(rendezvous) = group.offer(job.to_string(), offer) else {
            return Ok(());
        };
        let workers = group.workers().to_vec();
        tracing::info!(job_id = %job, attempt, ranks = rendezvous.ring_peers.len(), "rendezvous complete");
        for id in &workers {
            if let Some(l) = state.workers.get(id) {
                l.send(ToWorker::Rendezvous(rendezvous.clone()));
            }
        }
        Ok(())
    }

    /// Records a finished rank; when the whole group finished, registers
    /// rank 0's final checkpoint.
    pub async fn rank_done(self: &Arc<Self>, job: JobId, done: v1::TaskDone) -> Result<()> {
        let finished = match self.state().groups.get_mut(&(job, done.attempt)) {
            Some(group) => group.rank_done(done.rank, &done.final_checkpoint_id),
            None => None,
        };
        match finished {
            Some(checkpoint) => self.complete(job, done.attempt, &checkpoint).await,
            None => Ok(()),
        }
    }
}
