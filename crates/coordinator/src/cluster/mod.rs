//! The coordinator's state and the decisions it carries out. The tonic
//! adapters in `service` translate to and from this; wire types stay there
//! (and in the messages sent on workers' streams).
//!
//! The decisions are pure and tested without a server:
//! - [`placement`]: which idle workers run an attempt, on which devices,
//!   with which collective;
//! - [`budget`]: whether a failed attempt's job is requeued or fails, and
//!   the one place a job's failure policy defaults are read;
//! - [`rendezvous`]: a running attempt's ranks — their offers, their
//!   `TaskDone`s, its secret and log line allowance;
//! - [`workers`]: the worker table with each worker's [`WorkerStatus`].
//!
//! [`Cluster`] owns the state around them: one std mutex over the worker
//! table, the running attempts' groups and the job event logs (never held
//! across an `.await`), and one async lock, `transitions`, under which every
//! job transition (assign, epoch row, failure, completion, cancel) runs as a
//! compare-and-set on the job's record in the store, so two transitions
//! never interleave and a stale coordinator cannot overwrite a newer one.
//! Its methods live by subject: `transitions` (jobs), `links` (workers'
//! streams), `scheduling`, `registration` (the model registry).

pub(crate) mod budget;
mod links;
pub(crate) mod placement;
mod registration;
pub(crate) mod rendezvous;
mod scheduling;
mod transitions;
pub(crate) mod workers;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camshaft_proto::now_unix_ms;
use camshaft_proto::v1::{self, FailureKind};
use camshaft_store::{JobId, JobRecord, JobState, Store, now_ms};

use crate::jobs::JobLog;
use crate::metrics::Metrics;
use crate::model_events::ModelEventLog;
use crate::{Config, Error, Result};

pub use workers::{Claim, Task, Worker, WorkerSender, WorkerStatus};

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

/// What the coordinator keeps in memory, behind one lock.
#[derive(Default)]
struct State {
    workers: workers::WorkerTable,
    /// The ranks of each running attempt.
    groups: HashMap<(JobId, u32), rendezvous::Group>,
    /// Each job's event log (rebuilt from its record after a restart).
    logs: HashMap<JobId, Arc<JobLog>>,
}

/// The shared state behind every coordinator RPC.
pub struct Cluster {
    config: Config,
    store: Arc<dyn Store>,
    state: Mutex<State>,
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

impl Cluster {
    /// A coordinator over `store`.
    pub fn new(config: Config, store: Arc<dyn Store>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Cluster {
            config,
            store,
            state: Mutex::new(State::default()),
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

    /// The in-memory state. Every critical section leaves it consistent, so
    /// a panic elsewhere does not make it unusable.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry's change feed.
    pub fn model_events(&self) -> &ModelEventLog {
        &self.model_events
    }

    /// Workers connected now.
    pub fn worker_count(&self) -> usize {
        self.state().workers.len()
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

/// Clears the step timelines of every row of `history` but the last
/// [`TIMELINES_KEPT`]. Rows are read as [`v1::EpochMetrics`]; a row that is
/// not one, or keeps no timeline, is left as it is.
fn drop_old_timelines(history: &mut [serde_json::Value]) -> Result<()> {
    let old = history.len().saturating_sub(TIMELINES_KEPT);
    for row in &mut history[..old] {
        let Ok(mut epoch) = serde_json::from_value::<v1::EpochMetrics>(row.clone()) else {
            continue;
        };
        if epoch.step_profiles.iter().all(|p| p.last_steps.is_empty()) {
            continue;
        }
        for profile in &mut epoch.step_profiles {
            profile.last_steps.clear();
        }
        *row = serde_json::to_value(&epoch)
            .map_err(|e| Error::Internal(format!("cannot encode an epoch row: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_last_rows_keep_their_timelines() {
        let row = |epoch: u32, profiled: bool| {
            let profile = |rank| v1::RankStepProfile {
                rank,
                steps: 4,
                last_steps: vec![v1::StepTrace {
                    step: 3,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let row = v1::EpochMetrics {
                epoch,
                step_profiles: if profiled {
                    vec![profile(0), profile(1)]
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            serde_json::to_value(row).unwrap()
        };
        let mut history: Vec<serde_json::Value> = (0..4).map(|e| row(e, true)).collect();
        history.push(row(4, false));
        drop_old_timelines(&mut history).unwrap();
        let rows: Vec<v1::EpochMetrics> = history
            .iter()
            .map(|r| serde_json::from_value(r.clone()).unwrap())
            .collect();
        let kept: Vec<bool> = rows
            .iter()
            .map(|r| {
                r.step_profiles
                    .get(1)
                    .is_some_and(|p| !p.last_steps.is_empty())
            })
            .collect();
        assert_eq!(kept, [false, false, false, true, false]);
        assert_eq!(rows[0].step_profiles[1].steps, 4, "totals stay");
        assert_eq!(history[4], row(4, false));
        // A row that is not an epoch row stays as it is.
        let odd = serde_json::json!({"epoch": "one", "step_profiles": [{"last_steps": [1]}]});
        let mut history = vec![odd.clone(), row(1, true), row(2, true)];
        drop_old_timelines(&mut history).unwrap();
        assert_eq!(history[0], odd);
    }
}
