//! The [`Store`] trait every backend implements, and its watch types.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::records::{
    Alias, AliasChange, AliasEvent, Checkpoint, CheckpointManifest, JobId, JobRecord, LeaseId,
    ModelRef, ModelVersion, RegisteredModel, WorkerEvent, WorkerRecord,
};

/// The cluster's memory: jobs, the model registry, checkpoints and the live
/// worker set.
///
/// It speaks domain records, not keys, so a backend is free in its layout. The
/// operations are the ones etcd v3 can do atomically: every write is one
/// transaction (one revision), counters are assigned inside it, updates compare
/// a revision, membership rides on leases, and changes are watched. Services
/// hold an `Arc<dyn Store>` and do not know which backend they have.
///
/// Blobs (checkpoints and model weights) are split into chunks of at most
/// [`CHUNK_SIZE`](crate::CHUNK_SIZE) stored under their sha256; the record
/// that points at them is written after all of them, so a reader sees a whole
/// blob or none. Every blob read verifies every chunk and the whole.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A one-line description for logs ("embedded store at /var/lib/camshaft").
    fn describe(&self) -> String;

    // ----- jobs -----

    /// Creates a job in state `Queued` with the next id (`j-1`, `j-2`, ...).
    async fn create_job(&self, spec: serde_json::Value) -> Result<JobRecord>;

    /// Reads a job.
    async fn get_job(&self, id: JobId) -> Result<JobRecord>;

    /// Every job, in id order.
    async fn list_jobs(&self) -> Result<Vec<JobRecord>>;

    /// Replaces a job's record (spec, state, attempts, history, model
    /// version) if its stored revision still equals `job.revision`; returns
    /// the stored record with its new revision and `updated_ms`. Otherwise fails with
    /// [`Error::Conflict`](crate::Error::Conflict) (someone else, e.g. a stale
    /// coordinator, wrote it since): re-read and decide again. `id` and
    /// `created_ms` cannot change.
    async fn update_job(&self, job: JobRecord) -> Result<JobRecord>;

    // ----- model registry -----

    /// Stores `weights` and registers them as the next version of `name`
    /// (1 for a new name), moving the alias `latest` to it in the same
    /// transaction. Returns the new version.
    async fn register_model(
        &self,
        name: &str,
        spec: serde_json::Value,
        lineage: serde_json::Value,
        weights: Bytes,
    ) -> Result<ModelVersion>;

    /// Replaces the (opaque) lineage of an existing version, the only part
    /// of a version that may change (the coordinator keeps a version's
    /// editable tags and description in it); returns the version as
    /// stored. [`Error::NotFound`](crate::Error::NotFound) if the version
    /// does not exist. Last writer wins: callers read, change and write
    /// under their own lock.
    async fn update_model_lineage(
        &self,
        name: &str,
        version: u64,
        lineage: serde_json::Value,
    ) -> Result<ModelVersion>;

    /// Resolves `name`, `name@alias` or `name:version` to a version.
    async fn get_model(&self, model: &ModelRef) -> Result<ModelVersion>;

    /// Every model name with its versions and aliases, by name.
    async fn list_models(&self) -> Result<Vec<RegisteredModel>>;

    /// Points `name@alias` at an existing version (creating or moving it);
    /// [`Store::set_alias_by`] with nobody named.
    async fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        self.set_alias_by(name, alias, version, "").await
    }

    /// Points `name@alias` at an existing version (creating or moving it)
    /// and, in the same transaction, records the change made `by` in the
    /// alias history (a no-op when it already points there records nothing).
    async fn set_alias_by(&self, name: &str, alias: &str, version: u64, by: &str) -> Result<()>;

    /// Removes `name@alias`; [`Store::remove_alias_by`] with nobody named.
    async fn remove_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.remove_alias_by(name, alias, "").await
    }

    /// Removes `name@alias`, recording the removal `by` in the alias
    /// history in the same transaction.
    async fn remove_alias_by(&self, name: &str, alias: &str, by: &str) -> Result<()>;

    /// The recorded changes of `name`'s aliases (only `alias`'s when
    /// given), oldest first: the last [`MAX_ALIAS_HISTORY`] per name.
    ///
    /// [`MAX_ALIAS_HISTORY`]: crate::MAX_ALIAS_HISTORY
    async fn alias_history(&self, name: &str, alias: Option<&str>) -> Result<Vec<AliasChange>>;

    /// Deletes one version and its weights. Refused with
    /// [`Error::Conflict`](crate::Error::Conflict) while an alias other than
    /// `latest` points at it; `latest` moves to the highest remaining version
    /// (or goes away with the last one).
    async fn delete_model_version(&self, name: &str, version: u64) -> Result<()>;

    /// The weights of `name:version`, verified against their sha256.
    async fn model_weights(&self, name: &str, version: u64) -> Result<Bytes>;

    /// Every alias now, and every change after that snapshot (none missed,
    /// none repeated).
    async fn watch_aliases(&self) -> Result<Watched<Vec<Alias>, AliasEvent>>;

    // ----- checkpoints -----

    /// Stores a checkpoint of an existing job: chunks first, the manifest
    /// last. Then prunes the job's checkpoints to the backend's retention
    /// (the last K) and removes chunks nothing refers to any more.
    async fn put_checkpoint(
        &self,
        job_id: JobId,
        epoch: u64,
        meta: serde_json::Value,
        blob: Bytes,
    ) -> Result<CheckpointManifest>;

    /// The job's retained checkpoints, oldest first.
    async fn list_checkpoints(&self, job_id: JobId) -> Result<Vec<CheckpointManifest>>;

    /// The job's newest checkpoint, if any.
    async fn latest_checkpoint(&self, job_id: JobId) -> Result<Option<CheckpointManifest>>;

    /// A checkpoint with its bytes; every chunk and the whole blob are checked
    /// against their sha256 and a mismatch is an
    /// [`Error::Corrupt`](crate::Error::Corrupt) naming the job, the
    /// checkpoint and the chunk.
    async fn get_checkpoint(&self, job_id: JobId, id: u64) -> Result<Checkpoint>;

    // ----- leases and workers -----

    /// Grants a lease that expires `ttl` after its last keep-alive. (etcd
    /// counts in whole seconds and may round up.)
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease; returns its TTL. An expired or revoked lease is
    /// [`Error::NotFound`](crate::Error::NotFound): the holder must register
    /// again.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Ends a lease now, removing every record attached to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Registers (or replaces) a worker record attached to `worker.lease`,
    /// which must be alive. The record disappears when the lease does.
    async fn put_worker(&self, worker: WorkerRecord) -> Result<()>;

    /// Removes a worker record (its lease stays).
    async fn remove_worker(&self, id: &str) -> Result<()>;

    /// The live workers, by id.
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>>;

    /// The live workers now, and every change after that snapshot (lease
    /// expiry included).
    async fn watch_workers(&self) -> Result<Watched<Vec<WorkerRecord>, WorkerEvent>>;
}

/// A snapshot and the changes after it, as one atomic read: nothing that
/// happens between the two is lost.
#[derive(Debug)]
pub struct Watched<S, E> {
    /// The state when the watch started.
    pub current: S,
    /// Every change after `current`, in order.
    pub events: WatchStream<E>,
}

/// The changes of a watch, in order.
///
/// It ends (`recv` returns `None`) when the backend can no longer guarantee
/// that no event is missed — the store was dropped, or (etcd) the watch was
/// cancelled or its revision compacted. The holder then watches again and
/// reconciles with the new snapshot.
#[derive(Debug)]
pub struct WatchStream<E> {
    events: mpsc::UnboundedReceiver<E>,
}

impl<E> WatchStream<E> {
    /// Wraps the receiving end of a channel a backend feeds.
    pub fn new(events: mpsc::UnboundedReceiver<E>) -> Self {
        WatchStream { events }
    }

    /// The next change, waiting for it; `None` when the watch has ended.
    pub async fn recv(&mut self) -> Option<E> {
        self.events.recv().await
    }

    /// The next change if one is already there.
    pub fn try_recv(&mut self) -> Option<E> {
        self.events.try_recv().ok()
    }
}
