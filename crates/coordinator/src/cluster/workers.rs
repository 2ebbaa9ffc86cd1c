//! The worker table: connected workers with a domain status, the attempts
//! each connection was given, and the lost ones still listed. No locks and
//! no I/O; [`Cluster`](super::Cluster) owns one and sends what it returns.
//! The wire form (`v1::WorkerInfo`) is made at the service edge.
//!
//! Invariants: a worker id is bound to the principal that first registered
//! it while it is connected or listed as lost; a worker runs at most one
//! attempt (`Busy` with a [`Task`]); a message is accepted only from the
//! connection that holds the id now, about the ranks it runs
//! ([`Claim::Current`]) or an attempt it ran before ([`Claim::Stale`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use camshaft_proto::v1::{self, CoordinatorMessage};
use camshaft_store::{JobId, LeaseId};
use tonic::Status;

use super::placement::Candidate;
use crate::{Error, Result};

/// The outbound half of a worker's control stream.
pub type WorkerSender =
    tokio::sync::mpsc::UnboundedSender<std::result::Result<CoordinatorMessage, Status>>;

/// Where a worker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Connected, free for an attempt.
    Idle,
    /// Running ranks of an attempt.
    Busy,
    /// Leaving: it gets no new work.
    Draining,
    /// Its stream ended or its lease ran out.
    Lost,
}

/// The ranks a worker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The job.
    pub job: JobId,
    /// Its attempt.
    pub attempt: u32,
    /// The global ranks this worker hosts.
    pub ranks: Vec<u32>,
}

/// A worker as `ListWorkers` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    /// Its id.
    pub id: String,
    /// Its host's name.
    pub hostname: String,
    /// The devices it registered.
    pub devices: Vec<v1::Device>,
    /// Where it stands.
    pub status: WorkerStatus,
    /// What it runs (a lost worker keeps what it ran when lost).
    pub task: Option<Task>,
    /// When it (last) registered.
    pub registered_unix_ms: i64,
    /// When the coordinator last heard from it.
    pub last_heartbeat_unix_ms: i64,
    /// When its lease expires unless renewed.
    pub lease_expires_unix_ms: i64,
    /// Its Camshaft version.
    pub version: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// A connected worker: what it shows and its connection.
pub struct Link {
    /// Which connection this is (a reconnect replaces the entry).
    pub conn: u64,
    /// What it shows.
    pub worker: Worker,
    /// Its control stream.
    pub tx: WorkerSender,
    /// Its lease in the store.
    pub lease: LeaseId,
    /// The address its stream comes from (replaces a `0.0.0.0` ring address).
    pub peer_ip: Option<IpAddr>,
    /// The principal whose credential opened the stream.
    pub principal: String,
    /// The attempts this connection was given, newest last (at most
    /// [`PAST_ATTEMPTS_KEPT`]).
    assigned: Vec<(JobId, u32)>,
}

/// Attempts a connection remembers having been given.
pub const PAST_ATTEMPTS_KEPT: usize = 16;

/// A worker whose lease ended, listed until `lost_worker_ttl_ms` passes.
struct LostWorker {
    worker: Worker,
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

/// Connected workers by id, and the lost ones still listed.
#[derive(Default)]
pub struct WorkerTable {
    live: BTreeMap<String, Link>,
    lost: BTreeMap<String, LostWorker>,
}

impl Link {
    /// A new connection of `worker`.
    pub fn new(
        conn: u64,
        worker: Worker,
        tx: WorkerSender,
        lease: LeaseId,
        peer_ip: Option<IpAddr>,
        principal: String,
    ) -> Link {
        Link {
            conn,
            worker,
            tx,
            lease,
            peer_ip,
            principal,
            assigned: Vec::new(),
        }
    }

    /// The attempt it runs.
    pub fn attempt(&self) -> Option<(JobId, u32)> {
        self.worker.task.as_ref().map(|t| (t.job, t.attempt))
    }

    /// Sends `message` on its stream; false when the stream is gone.
    pub fn send(&self, message: v1::coordinator_message::Message) -> bool {
        self.tx
            .send(Ok(CoordinatorMessage {
                message: Some(message),
            }))
            .is_ok()
    }

    /// Gives it `ranks` of `attempt` of `job`: busy.
    fn start(&mut self, job: JobId, attempt: u32, ranks: Vec<u32>) {
        if self.assigned.len() >= PAST_ATTEMPTS_KEPT {
            self.assigned.remove(0);
        }
        self.assigned.push((job, attempt));
        self.worker.status = WorkerStatus::Busy;
        self.worker.task = Some(Task {
            job,
            attempt,
            ranks,
        });
    }
}

impl WorkerTable {
    /// Connected workers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The connection of `id`, if it is `conn`.
    pub fn link(&self, id: &str, conn: u64) -> Option<&Link> {
        self.live.get(id).filter(|l| l.conn == conn)
    }

    /// [`WorkerTable::link`], to change.
    pub fn link_mut(&mut self, id: &str, conn: u64) -> Option<&mut Link> {
        self.live.get_mut(id).filter(|l| l.conn == conn)
    }

    /// The connection of `id`, whichever it is.
    pub fn get(&self, id: &str) -> Option<&Link> {
        self.live.get(id)
    }

    /// Every connection.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.live.values()
    }

    /// The principal `id` is bound to: its connection's, or its lost
    /// entry's (entries lost before `cutoff_ms` forgotten first).
    pub fn owner(&mut self, id: &str, cutoff_ms: u64) -> Option<String> {
        if let Some(link) = self.live.get(id) {
            return Some(link.principal.clone());
        }
        self.prune_lost(cutoff_ms);
        self.lost.get(id).map(|l| l.principal.clone())
    }

    /// Puts `link` in the table (no longer lost); the connection it
    /// replaces, if any.
    pub fn insert(&mut self, link: Link) -> Option<Link> {
        let id = link.worker.id.clone();
        self.lost.remove(&id);
        self.live.insert(id, link)
    }

    /// Removes connection `conn` of `id` and lists it as lost since
    /// `now_ms`; the attempt it ran (entries lost before `cutoff_ms`
    /// forgotten first). `None` when `conn` is not `id`'s connection.
    pub fn lose(
        &mut self,
        id: &str,
        conn: u64,
        now_ms: u64,
        cutoff_ms: u64,
    ) -> Option<(LeaseId, Option<(JobId, u32)>)> {
        self.link(id, conn)?;
        let gone = self.live.remove(id)?;
        let attempt = gone.attempt();
        let mut worker = gone.worker;
        worker.status = WorkerStatus::Lost;
        self.prune_lost(cutoff_ms);
        self.lost.insert(
            id.to_string(),
            LostWorker {
                worker,
                principal: gone.principal,
                since_ms: now_ms,
            },
        );
        Some((gone.lease, attempt))
    }

    /// Forgets workers lost at or before `cutoff_ms`.
    pub fn prune_lost(&mut self, cutoff_ms: u64) {
        self.lost.retain(|_, l| l.since_ms > cutoff_ms);
    }

    /// The workers by id: live ones, and the lost ones (lost after
    /// `lost_cutoff_ms`) when that is given.
    pub fn list(&mut self, lost_cutoff_ms: Option<u64>) -> Vec<Worker> {
        let mut all: BTreeMap<&String, &Worker> =
            self.live.iter().map(|(id, l)| (id, &l.worker)).collect();
        if let Some(cutoff) = lost_cutoff_ms {
            self.lost.retain(|_, l| l.since_ms > cutoff);
            for (id, lost) in &self.lost {
                all.entry(id).or_insert(&lost.worker);
            }
        }
        all.into_values().cloned().collect()
    }

    /// Idle workers, in id order, for placement.
    pub fn idle(&self) -> Vec<Candidate<'_>> {
        self.live
            .values()
            .filter(|l| l.worker.task.is_none() && l.worker.status == WorkerStatus::Idle)
            .map(|l| Candidate {
                id: &l.worker.id,
                devices: &l.worker.devices,
            })
            .collect()
    }

    /// Gives worker `id` `ranks` of `attempt` of `job` and sends it
    /// `message`; false when the worker is gone or its stream closed.
    pub fn start(
        &mut self,
        id: &str,
        job: JobId,
        attempt: u32,
        ranks: Vec<u32>,
        message: v1::coordinator_message::Message,
    ) -> bool {
        self.live.get_mut(id).is_some_and(|l| {
            l.start(job, attempt, ranks);
            l.send(message)
        })
    }

    /// Frees the workers of `attempt` of `job` (a draining one stays
    /// draining) and tells each `message`.
    pub fn release(
        &mut self,
        job: JobId,
        attempt: u32,
        message: &v1::coordinator_message::Message,
    ) {
        for l in self.live.values_mut() {
            if l.attempt() != Some((job, attempt)) {
                continue;
            }
            l.worker.task = None;
            if l.worker.status == WorkerStatus::Busy {
                l.worker.status = WorkerStatus::Idle;
            }
            l.send(message.clone());
        }
    }

    /// Empties the table's connections, for a coordinator that stops.
    pub fn take_links(&mut self) -> Vec<Link> {
        std::mem::take(&mut self.live).into_values().collect()
    }

    /// What a message of connection `conn` of `worker` about `rank` of
    /// `job`'s `attempt` refers to. PERMISSION_DENIED for anything it was
    /// never given (or a rank it does not host).
    pub fn claim(
        &self,
        worker: &str,
        conn: u64,
        job: JobId,
        attempt: u32,
        rank: u32,
    ) -> Result<Claim> {
        let l = self.attached(worker, conn)?;
        let current = l.attempt() == Some((job, attempt));
        if current
            && l.worker
                .task
                .as_ref()
                .is_some_and(|t| t.ranks.contains(&rank))
        {
            return Ok(Claim::Current);
        }
        if !current && l.assigned.contains(&(job, attempt)) {
            return Ok(Claim::Stale);
        }
        Err(Error::PermissionDenied(format!(
            "worker {worker} was not given rank {rank} of attempt {attempt} of job {job}"
        )))
    }

    /// The attempt of `job` whose rank `rank` connection `conn` runs now,
    /// or the last attempt of `job` it ran (a late log line).
    /// PERMISSION_DENIED otherwise.
    pub fn current_attempt_of(
        &self,
        worker: &str,
        conn: u64,
        job: JobId,
        rank: u32,
    ) -> Result<u32> {
        let l = self.attached(worker, conn)?;
        match &l.worker.task {
            Some(t) if t.job == job && t.ranks.contains(&rank) => Ok(t.attempt),
            Some(t) if t.job == job => Err(Error::PermissionDenied(format!(
                "worker {worker} does not run rank {rank} of job {job}"
            ))),
            _ => l
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

    fn attached(&self, worker: &str, conn: u64) -> Result<&Link> {
        self.link(worker, conn)
            .ok_or_else(|| Error::PermissionDenied(format!("worker {worker} is not attached")))
    }
}

/// The coordinator's major version; a worker with another one is refused.
pub fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or("")
}

/// What one worker may declare about itself: its record is kept and listed.
const MAX_DEVICES: usize = 64;
const MAX_LABELS: usize = 32;
const MAX_FIELD_BYTES: usize = 256;

/// Refuses a `Register` that declares more than a worker has any need to.
pub fn check_register(r: &v1::Register) -> Result<()> {
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

/// `cuda:0`, `cpu`: how a worker record names a device.
pub fn device_label(d: &v1::Device) -> String {
    match d.kind() {
        v1::DeviceKind::Cuda => format!("cuda:{}", d.index),
        _ => "cpu".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn link(
        id: &str,
        conn: u64,
        principal: &str,
    ) -> (
        Link,
        tokio::sync::mpsc::UnboundedReceiver<std::result::Result<CoordinatorMessage, Status>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = Worker {
            id: id.into(),
            hostname: "h".into(),
            devices: Vec::new(),
            status: WorkerStatus::Idle,
            task: None,
            registered_unix_ms: 0,
            last_heartbeat_unix_ms: 0,
            lease_expires_unix_ms: 0,
            version: String::new(),
            labels: HashMap::new(),
        };
        (
            Link::new(
                conn,
                worker,
                tx,
                LeaseId(conn as i64),
                None,
                principal.into(),
            ),
            rx,
        )
    }

    fn cancel() -> v1::coordinator_message::Message {
        v1::coordinator_message::Message::Cancel(v1::Cancel::default())
    }

    #[test]
    fn claims_follow_the_attempts_a_connection_was_given() {
        let mut t = WorkerTable::default();
        let (a, mut rx) = link("a", 1, "p");
        t.insert(a);
        assert_eq!(t.idle().len(), 1);
        assert!(t.start("a", JobId(7), 1, vec![0, 1], cancel()));
        assert!(rx.try_recv().is_ok(), "the message went out");
        assert!(t.idle().is_empty());
        assert_eq!(t.claim("a", 1, JobId(7), 1, 1).unwrap(), Claim::Current);
        assert!(
            t.claim("a", 1, JobId(7), 1, 2).is_err(),
            "a rank it does not host"
        );
        assert!(
            t.claim("a", 2, JobId(7), 1, 0).is_err(),
            "another connection"
        );
        assert_eq!(t.current_attempt_of("a", 1, JobId(7), 0).unwrap(), 1);
        t.release(JobId(7), 1, &cancel());
        assert_eq!(t.claim("a", 1, JobId(7), 1, 0).unwrap(), Claim::Stale);
        assert_eq!(
            t.current_attempt_of("a", 1, JobId(7), 0).unwrap(),
            1,
            "a late line"
        );
        assert!(t.claim("a", 1, JobId(8), 1, 0).is_err(), "never given");
        assert_eq!(t.list(None)[0].status, WorkerStatus::Idle);
    }

    #[test]
    fn draining_stays_draining_and_lost_workers_stay_listed_and_bound() {
        let mut t = WorkerTable::default();
        let (a, _rx) = link("a", 1, "p");
        t.insert(a);
        t.start("a", JobId(7), 2, vec![0], cancel());
        t.link_mut("a", 1).unwrap().worker.status = WorkerStatus::Draining;
        t.release(JobId(7), 2, &cancel());
        assert_eq!(t.list(None)[0].status, WorkerStatus::Draining);
        assert!(t.idle().is_empty(), "a draining worker gets no work");
        t.start("a", JobId(7), 3, vec![0], cancel());
        assert_eq!(t.lose("a", 2, 100, 0), None, "not its connection");
        let (lease, attempt) = t.lose("a", 1, 100, 0).unwrap();
        assert_eq!((lease, attempt), (LeaseId(1), Some((JobId(7), 3))));
        assert_eq!(t.len(), 0);
        assert!(t.list(None).is_empty());
        let listed = t.list(Some(50));
        assert_eq!(listed[0].status, WorkerStatus::Lost);
        assert_eq!(t.owner("a", 50).as_deref(), Some("p"));
        assert_eq!(t.owner("a", 100), None, "forgotten after the TTL");
    }
}
