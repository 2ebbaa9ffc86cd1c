//! Jobs as the wire sees them: `v1::Job` from a stored record, and the
//! per-job event log that `WatchJob` replays and follows.

use std::sync::Mutex;

use camshaft_proto::now_unix_ms;
use camshaft_proto::v1::{self, FailureKind, JobEvent, JobSpec, job_event::Event};
use camshaft_store::{Failure, JobRecord, JobState};

use crate::{Error, Result};
use tokio::sync::watch;

/// The wire state of a stored job: a queued job that has run before is
/// restarting.
pub fn wire_state(record: &JobRecord) -> v1::JobState {
    match record.state {
        JobState::Queued if record.attempts.is_empty() => v1::JobState::Pending,
        JobState::Queued => v1::JobState::Restarting,
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

/// The spec a record was created with (complete: defaults were applied on
/// submit); one that does not read is an error naming the job, never an
/// empty spec.
pub fn spec_of(record: &JobRecord) -> Result<JobSpec> {
    serde_json::from_value(record.spec.clone()).map_err(|e| {
        Error::Internal(format!(
            "the stored spec of job {} does not read: {e}",
            record.id
        ))
    })
}

/// The key of the stored spec object that names who submitted the job
/// (beside the spec's own fields; the store keeps the object opaque).
const CREATED_BY: &str = "created_by";
/// Key of the submit's idempotency key in a stored spec (absent without one).
const REQUEST_ID: &str = "request_id";

/// The stored spec of a job `principal` submits, with the submit's
/// idempotency key `request_id` (empty: none).
pub fn stored_spec(spec: &JobSpec, principal: &str, request_id: &str) -> Result<serde_json::Value> {
    let mut json = serde_json::to_value(spec)
        .map_err(|e| crate::Error::Internal(format!("cannot encode the job spec: {e}")))?;
    if let Some(object) = json.as_object_mut() {
        object.insert(CREATED_BY.into(), principal.into());
        if !request_id.is_empty() {
            object.insert(REQUEST_ID.into(), request_id.into());
        }
    }
    Ok(json)
}

/// The idempotency key of the submit that created a job (empty: none).
pub fn request_id(record: &JobRecord) -> &str {
    record
        .spec
        .get(REQUEST_ID)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// Who submitted a job (empty for jobs stored before it was recorded).
pub fn created_by(record: &JobRecord) -> &str {
    record
        .spec
        .get(CREATED_BY)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// The key of the stored spec object that records why training stopped
/// early (`v1::EarlyStop`'s JSON), once it did.
const EARLY_STOP: &str = "early_stop";

/// Records in `record` that training stopped early.
pub fn record_early_stop(record: &mut JobRecord, stop: &v1::EarlyStop) {
    if let (Some(object), Ok(value)) = (record.spec.as_object_mut(), serde_json::to_value(stop)) {
        object.insert(EARLY_STOP.into(), value);
    }
}

/// Why a job's training stopped early, if it did.
pub fn early_stop(record: &JobRecord) -> Option<v1::EarlyStop> {
    record
        .spec
        .get(EARLY_STOP)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Whether a record is an all-reduce sweep (`spec.collective_bench`), whose
/// `history` holds `AllReduceRow`s instead of epoch rows.
pub fn is_collective_bench(record: &JobRecord) -> bool {
    record
        .spec
        .get("collective_bench")
        .is_some_and(|b| !b.is_null())
}

/// The kind of a stored failure.
pub(crate) fn failure_kind(failure: &Failure) -> FailureKind {
    FailureKind::from_short_name(&failure.kind).unwrap_or(FailureKind::Unspecified)
}

/// Failures of a record charged to (`max_failures`, `max_membership_changes`).
pub fn budgets_used(record: &JobRecord) -> (u32, u32) {
    let used = crate::cluster::budget::Used::by(record);
    (used.failures, used.membership_changes)
}

/// The wire form of a failure of attempt `attempt`.
pub fn wire_failure(attempt: u32, failure: &Failure) -> v1::JobFailure {
    v1::JobFailure {
        attempt,
        kind: failure_kind(failure) as i32,
        rank: failure.rank,
        worker_id: failure.worker.clone().unwrap_or_default(),
        reason: failure.reason.clone(),
        epoch: failure.epoch,
        unix_ms: failure.recorded_ms as i64,
    }
}

/// The wire form of a stored job. `last_checkpoint` is the newest
/// checkpoint's (id, epochs done), which lives beside the record.
pub fn to_wire(record: &JobRecord, last_checkpoint: Option<(u64, u64)>) -> Result<v1::Job> {
    let state = wire_state(record);
    let running = state == v1::JobState::Running;
    let current = record.attempts.last();
    let (failures_used, membership_changes_used) = budgets_used(record);
    let bench = is_collective_bench(record);
    Ok(v1::Job {
        id: record.id.to_string(),
        spec: Some(spec_of(record)?),
        created_by: created_by(record).to_string(),
        early_stop: early_stop(record),
        state: state as i32,
        attempt: record.attempts.len() as u32,
        created_unix_ms: record.created_ms as i64,
        started_unix_ms: record.attempts.first().map_or(0, |a| a.started_ms as i64),
        finished_unix_ms: if record.state.is_terminal() {
            record.updated_ms as i64
        } else {
            0
        },
        history: if bench { Vec::new() } else { rows(record) },
        allreduce_rows: if bench { rows(record) } else { Vec::new() },
        failures: record
            .attempts
            .iter()
            .filter_map(|a| a.failure.as_ref().map(|f| wire_failure(a.number, f)))
            .collect(),
        failures_used,
        membership_changes_used,
        worker_ids: match current {
            Some(a) if running => a.workers.clone(),
            _ => Vec::new(),
        },
        world_size: match current {
            Some(a) if running => a.workers.len() as u32,
            _ => 0,
        },
        model_version: record.model_version.clone().unwrap_or_default(),
        error: record.error.clone().unwrap_or_default(),
        last_checkpoint_id: last_checkpoint
            .map(|(id, _)| id.to_string())
            .unwrap_or_default(),
        epochs_done: last_checkpoint.map_or(0, |(_, epochs)| epochs as u32),
    })
}

/// The rows of a record's `history` that decode as `T`.
fn rows<T: serde::de::DeserializeOwned>(record: &JobRecord) -> Vec<T> {
    record
        .history
        .iter()
        .filter_map(|row| serde_json::from_value(row.clone()).ok())
        .collect()
}

/// Whether `event` is the last one of a job (a change to a terminal state).
pub fn is_final(event: &JobEvent) -> bool {
    matches!(&event.event, Some(Event::StateChanged(c)) if c.to().is_terminal())
}

/// One job's events in order, and a signal for followers.
///
/// Kept in memory by the coordinator that recorded them. After a restart the
/// log of an older job is rebuilt from its record ([`JobLog::from_record`]):
/// its epoch rows, failures and current state, without the lost detail
/// (log lines, intermediate state changes).
#[derive(Debug)]
pub struct JobLog {
    job_id: String,
    events: Mutex<Vec<JobEvent>>,
    len: watch::Sender<usize>,
}

impl JobLog {
    /// An empty log for a new job.
    pub fn new(job_id: String) -> Self {
        JobLog {
            job_id,
            events: Mutex::new(Vec::new()),
            len: watch::Sender::new(0),
        }
    }

    /// The log an older job would have had, from its record.
    pub fn from_record(record: &JobRecord) -> Result<Self> {
        let log = JobLog::new(record.id.to_string());
        let job = to_wire(record, None)?;
        log.push(Event::StateChanged(v1::JobStateChanged {
            from: v1::JobState::Unspecified as i32,
            to: v1::JobState::Pending as i32,
            reason: "submitted".into(),
            ..Default::default()
        }));
        for row in &job.history {
            log.push(Event::Epoch(row.clone()));
        }
        for row in &job.allreduce_rows {
            log.push(Event::Allreduce(row.clone()));
        }
        for failure in &job.failures {
            log.push(Event::Failure(failure.clone()));
        }
        if job.state() != v1::JobState::Pending {
            log.push(Event::StateChanged(v1::JobStateChanged {
                from: v1::JobState::Unspecified as i32,
                to: job.state,
                attempt: job.attempt,
                reason: job.error.clone(),
                world_size: job.world_size,
            }));
        }
        Ok(log)
    }

    /// Appends an event, numbered and stamped, and wakes followers.
    pub fn push(&self, event: Event) -> JobEvent {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let event = JobEvent {
            job_id: self.job_id.clone(),
            sequence: events.len() as u64 + 1,
            unix_ms: now_unix_ms(),
            event: Some(event),
        };
        events.push(event.clone());
        self.len.send_replace(events.len());
        event
    }

    /// Events with a sequence number above `after`.
    pub fn after(&self, after: u64) -> Vec<JobEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .skip(usize::try_from(after).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Whether the job's last event is its final one: nothing more will come.
    pub fn is_finished(&self) -> bool {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.last().is_some_and(is_final)
    }

    /// A receiver that changes whenever an event is pushed.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.len.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_are_numbered_and_replayed_after_a_sequence() {
        let log = JobLog::new("j-1".into());
        let mut rx = log.subscribe();
        log.push(Event::Epoch(v1::EpochMetrics::default()));
        log.push(Event::StateChanged(v1::JobStateChanged {
            to: v1::JobState::Succeeded as i32,
            ..Default::default()
        }));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        let rest = log.after(1);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].sequence, 2);
        assert!(is_final(&rest[0]));
        assert!(log.after(2).is_empty());
    }

    #[test]
    fn a_sweep_shows_its_rows_as_allreduce_rows_not_epochs() {
        let row = v1::AllReduceRow {
            bytes: 8,
            count: 2,
            busbw_gbps: 0.5,
            attempt: 1,
            ..Default::default()
        };
        let spec = JobSpec {
            collective_bench: Some(v1::CollectiveBench::default()),
            ..Default::default()
        };
        let record = JobRecord {
            id: camshaft_store::JobId(3),
            spec: serde_json::to_value(&spec).unwrap(),
            state: JobState::Succeeded,
            attempts: Vec::new(),
            history: vec![serde_json::to_value(&row).unwrap()],
            model_version: None,
            error: None,
            created_ms: 0,
            updated_ms: 0,
            revision: 0,
        };
        assert!(is_collective_bench(&record));
        let job = to_wire(&record, None).unwrap();
        assert_eq!(job.allreduce_rows, std::slice::from_ref(&row));
        assert!(job.history.is_empty() && job.model_version.is_empty());
        let replayed = JobLog::from_record(&record).unwrap().after(0);
        assert!(
            replayed
                .iter()
                .any(|e| e.event == Some(Event::Allreduce(row.clone())))
        );
        let training = JobRecord {
            spec: serde_json::to_value(JobSpec::default()).unwrap(),
            ..record
        };
        assert!(!is_collective_bench(&training));
    }
}
