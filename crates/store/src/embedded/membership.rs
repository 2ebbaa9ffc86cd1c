//! Leases and the worker records attached to them: memory only.
//!
//! A lease is a promise that its holder is alive; it means nothing after the
//! process that granted it is gone, so nothing here is written to disk and a
//! reopened store starts with no leases and no workers (workers register
//! again when their keep-alive fails with `NotFound`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::records::{LeaseId, WorkerEvent, WorkerRecord, now_ms};
use crate::store::{WatchStream, Watched};

/// How often the reaper looks for expired leases at most: an expired lease's
/// records go within its TTL plus this.
const REAP_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug)]
struct MembershipState {
    next_lease: i64,
    leases: HashMap<LeaseId, Lease>,
    workers: BTreeMap<String, WorkerRecord>,
    watchers: Vec<mpsc::UnboundedSender<WorkerEvent>>,
}

/// The live leases and workers of one embedded store.
#[derive(Debug)]
pub(crate) struct Membership {
    state: Mutex<MembershipState>,
}

impl Membership {
    pub(crate) fn new() -> Membership {
        // Seed ids from the clock so a lease id held from before a restart
        // never names a new lease.
        let seed = i64::try_from(now_ms()).unwrap_or(1) << 16;
        Membership {
            state: Mutex::new(MembershipState {
                next_lease: seed.max(1),
                leases: HashMap::new(),
                workers: BTreeMap::new(),
                watchers: Vec::new(),
            }),
        }
    }

    /// Starts the task that expires leases; it ends when the membership is
    /// dropped.
    pub(crate) fn spawn_reaper(membership: Weak<Membership>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(membership) = membership.upgrade() else {
                    return;
                };
                membership.lock().expire(Instant::now());
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, MembershipState> {
        // Every method leaves the state consistent before anything can
        // panic, so a poisoned lock holds good data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::invalid("a lease ttl must be more than zero"));
        }
        let mut state = self.lock();
        let id = LeaseId(state.next_lease);
        state.next_lease += 1;
        let deadline = Instant::now() + ttl;
        state.leases.insert(id, Lease { ttl, deadline });
        Ok(id)
    }

    pub(crate) fn keep_alive(&self, id: LeaseId) -> Result<Duration> {
        let mut state = self.lock();
        let now = Instant::now();
        state.expire(now);
        let lease = state
            .leases
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("{id} (expired or revoked)")))?;
        lease.deadline = now + lease.ttl;
        Ok(lease.ttl)
    }

    pub(crate) fn revoke(&self, id: LeaseId) -> Result<()> {
        let mut state = self.lock();
        state.expire(Instant::now());
        if state.leases.remove(&id).is_none() {
            return Err(Error::not_found(format!("{id} (expired or revoked)")));
        }
        state.drop_workers_of(id);
        Ok(())
    }

    pub(crate) fn put_worker(&self, worker: WorkerRecord) -> Result<()> {
        let mut state = self.lock();
        state.expire(Instant::now());
        if !state.leases.contains_key(&worker.lease) {
            return Err(Error::not_found(format!(
                "{} for worker {} (expired or revoked)",
                worker.lease, worker.id
            )));
        }
        state.workers.insert(worker.id.clone(), worker.clone());
        state.notify(WorkerEvent::Put(worker));
        Ok(())
    }

    pub(crate) fn remove_worker(&self, id: &str) -> Result<()> {
        let mut state = self.lock();
        if state.workers.remove(id).is_none() {
            return Err(Error::not_found(format!("worker {id}")));
        }
        state.notify(WorkerEvent::Removed { id: id.to_owned() });
        Ok(())
    }

    pub(crate) fn list(&self) -> Vec<WorkerRecord> {
        let mut state = self.lock();
        state.expire(Instant::now());
        state.workers.values().cloned().collect()
    }

    pub(crate) fn watch(&self) -> Watched<Vec<WorkerRecord>, WorkerEvent> {
        let mut state = self.lock();
        state.expire(Instant::now());
        let (sender, events) = mpsc::unbounded_channel();
        state.watchers.push(sender);
        Watched {
            current: state.workers.values().cloned().collect(),
            events: WatchStream::new(events),
        }
    }
}

impl MembershipState {
    fn expire(&mut self, now: Instant) {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.leases.remove(&id);
            tracing::debug!(lease = %id, "lease expired");
            self.drop_workers_of(id);
        }
    }

    fn drop_workers_of(&mut self, lease: LeaseId) {
        let gone: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.lease == lease)
            .map(|w| w.id.clone())
            .collect();
        for id in gone {
            self.workers.remove(&id);
            tracing::info!(worker = %id, %lease, "worker record removed with its lease");
            self.notify(WorkerEvent::Removed { id });
        }
    }

    fn notify(&mut self, event: WorkerEvent) {
        self.watchers
            .retain(|watcher| watcher.send(event.clone()).is_ok());
    }
}
