//! The embedded store: one data dir on one machine, for `camshaft up` and tests.
//!
//! See the crate documentation for the on-disk format and why an acknowledged
//! write survives a crash, and `files` for the write-ahead log's record format
//! and how a torn tail is told from corruption.

mod blobs;
pub(crate) mod files;
mod membership;
mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use self::blobs::ChunkStore;
use self::files::{DirLock, LogWriter, read_log, tmp_path, write_atomic};
use self::membership::Membership;
use self::state::{Commit, DurableState, Op};
use crate::error::{Error, Result};
use crate::format;
use crate::records::{
    Alias, AliasChange, AliasEvent, Checkpoint, CheckpointManifest, JobId, JobRecord, JobState,
    LATEST, LeaseId, ModelRef, ModelVersion, RegisteredModel, WorkerEvent, WorkerRecord, now_ms,
    validate_name,
};
use crate::store::{Store, WatchStream, Watched};

/// Settings of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The directory that holds everything; created if missing. One store per
    /// directory at a time.
    pub data_dir: PathBuf,
    /// Checkpoints kept per job; older ones are pruned after each put (at
    /// least 1). Default 3.
    pub keep_checkpoints: usize,
    /// When the write-ahead log grows past this many bytes, the state is
    /// written to a snapshot and the log starts again. Default 8 MiB.
    pub snapshot_after_bytes: u64,
}

impl EmbeddedConfig {
    /// Defaults for a data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            keep_checkpoints: 3,
            snapshot_after_bytes: 8 << 20,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.keep_checkpoints == 0 {
            return Err(Error::invalid(
                "keep_checkpoints must be at least 1 (a job needs its last checkpoint to resume)",
            ));
        }
        Ok(())
    }
}

/// The file-backed [`Store`] for one machine. Open it once per data dir and
/// share it (`Arc<EmbeddedStore>` or `Arc<dyn Store>`) between tasks.
#[derive(Debug)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    membership: Arc<Membership>,
}

#[derive(Debug)]
struct Inner {
    config: EmbeddedConfig,
    chunks: ChunkStore,
    /// Shared by everything that writes or reads chunk files, exclusive for
    /// garbage collection: a chunk written for a manifest not yet committed,
    /// or being read, is never collected under it. Taken before `durable`.
    blob_gate: RwLock<()>,
    durable: Mutex<Durable>,
    /// Dropped last: the data dir stays ours until everything else is closed.
    _lock: DirLock,
}

#[derive(Debug)]
struct Durable {
    state: DurableState,
    log: LogWriter,
    alias_watchers: Vec<mpsc::UnboundedSender<AliasEvent>>,
}

const SNAPSHOT: &str = "snapshot.json";
const LOG: &str = "wal.log";
const BLOBS: &str = "blobs";

impl EmbeddedStore {
    /// Opens (or creates) the store in `config.data_dir`: takes the lock,
    /// loads the snapshot, replays the log, and removes chunk files that no
    /// committed record refers to (left by writes a crash interrupted).
    ///
    /// Fails with [`Error::DataDirLocked`] when another store has the dir.
    /// Must be called inside a tokio runtime (the lease reaper is a task).
    pub async fn open(config: EmbeddedConfig) -> Result<EmbeddedStore> {
        config.validate()?;
        let inner = tokio::task::spawn_blocking(move || Inner::open(config))
            .await
            .map_err(task_failed)??;
        let membership = Arc::new(Membership::new());
        Membership::spawn_reaper(Arc::downgrade(&membership));
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
            membership,
        })
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// Runs `f` on a blocking thread: every file operation goes through here,
    /// never on a tokio worker.
    async fn blocking<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Inner) -> Result<R> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(task_failed)?
    }
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Unavailable {
        reason: format!("embedded store task failed: {e}"),
    }
}

impl Inner {
    fn open(config: EmbeddedConfig) -> Result<Inner> {
        let dir = config.data_dir.clone();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        for name in [SNAPSHOT, LOG] {
            let tmp = tmp_path(&dir.join(name));
            if tmp.exists() {
                fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
            }
        }

        let snapshot_path = dir.join(SNAPSHOT);
        let mut state = match fs::read(&snapshot_path) {
            Ok(bytes) => format::decode::<DurableState>(
                &format!("snapshot {}", snapshot_path.display()),
                &bytes,
            )?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DurableState::default(),
            Err(e) => return Err(Error::io(&snapshot_path, e)),
        };

        let log_path = dir.join(LOG);
        let log = if log_path.exists() {
            let contents = read_log(&log_path)?;
            let mut replayed = 0;
            for (i, record) in contents.records.iter().enumerate() {
                let commit: Commit = format::decode(
                    &format!("write-ahead log {} record {i}", log_path.display()),
                    record,
                )?;
                if commit.revision <= state.revision {
                    continue; // already in the snapshot
                }
                if commit.revision != state.revision + 1 {
                    return Err(Error::corrupt(format!(
                        "write-ahead log {} jumps from revision {} to {}",
                        log_path.display(),
                        state.revision,
                        commit.revision
                    )));
                }
                for op in commit.ops {
                    state.apply(op);
                }
                state.revision = commit.revision;
                replayed += 1;
            }
            tracing::debug!(path = %log_path.display(), replayed, revision = state.revision, "replayed write-ahead log");
            if contents.outdated {
                // Appending would mix formats: keep its commits in a snapshot
                // and start a new log (a crash in between replays nothing
                // twice, as for any snapshot).
                write_snapshot(&dir, &state)?;
                tracing::info!(path = %log_path.display(), revision = state.revision, "replaced a version 1 write-ahead log with a snapshot and a new log");
                LogWriter::create(&log_path)?
            } else {
                LogWriter::open(&log_path, contents.valid_len)?
            }
        } else {
            LogWriter::create(&log_path)?
        };

        let chunks = ChunkStore::open(dir.join(BLOBS))?;
        let removed = chunks.collect_garbage(&state.live_chunks())?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed chunk files of interrupted or pruned writes"
            );
        }
        Ok(Inner {
            config,
            chunks,
            blob_gate: RwLock::new(()),
            durable: Mutex::new(Durable {
                state,
                log,
                alias_watchers: Vec::new(),
            }),
            _lock: lock,
        })
    }

    fn durable(&self) -> Result<MutexGuard<'_, Durable>> {
        // A panic while the lock was held may have left memory behind the
        // log; refuse rather than serve it. Reopening replays the log.
        self.durable.lock().map_err(|_| Error::Unavailable {
            reason: "embedded store state is unusable after a panic; reopen the store".into(),
        })
    }

    /// Removes chunk files nothing refers to. Failure is logged, not
    /// returned: the write that led here is already committed, and the next
    /// collection (or open) tries again.
    fn collect_garbage(&self) {
        let _gate = self
            .blob_gate
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let live = match self.durable() {
            Ok(durable) => durable.state.live_chunks(),
            Err(_) => return,
        };
        match self.chunks.collect_garbage(&live) {
            Ok(removed) => tracing::debug!(removed, "collected garbage chunks"),
            Err(e) => tracing::warn!(error = %e, "garbage collection of chunks failed"),
        }
    }

    fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.blob_gate
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes the whole state to the snapshot file atomically.
fn write_snapshot(dir: &Path, state: &DurableState) -> Result<()> {
    let bytes = format::encode(state)?;
    write_atomic(&dir.join(SNAPSHOT), &bytes)?;
    tracing::debug!(
        revision = state.revision,
        bytes = bytes.len(),
        "wrote snapshot"
    );
    Ok(())
}

impl Durable {
    /// The revision the next commit gets.
    fn next_revision(&self) -> u64 {
        self.state.revision + 1
    }

    /// Logs `ops` as one commit (durable when this returns), applies them,
    /// tells alias watchers, and snapshots when the log has grown.
    fn commit(&mut self, config: &EmbeddedConfig, ops: Vec<Op>) -> Result<u64> {
        let revision = self.next_revision();
        let commit = Commit { revision, ops };
        let payload = format::encode(&commit)?;
        self.log.append(&payload)?;
        let mut events = Vec::new();
        for op in commit.ops {
            events.extend(self.state.apply(op));
        }
        self.state.revision = revision;
        for event in events {
            self.alias_watchers
                .retain(|watcher| watcher.send(event.clone()).is_ok());
        }
        if self.log.len() > config.snapshot_after_bytes
            && let Err(e) = self.snapshot(&config.data_dir)
        {
            // The commit is durable in the log; a later commit retries.
            tracing::warn!(error = %e, "writing a snapshot of the embedded store failed");
        }
        Ok(revision)
    }

    /// Writes the whole state to the snapshot, then starts an empty log. A
    /// crash between the two leaves a log whose commits are all in the
    /// snapshot; replay skips them by revision.
    fn snapshot(&mut self, dir: &Path) -> Result<()> {
        write_snapshot(dir, &self.state)?;
        self.log = LogWriter::create(&dir.join(LOG))?;
        Ok(())
    }

    fn job(&self, id: JobId) -> Result<&JobRecord> {
        self.state
            .jobs
            .get(&id.0)
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    fn resolve(&self, model: &ModelRef) -> Result<&ModelVersion> {
        let entry = self.state.models.get(model.name());
        let version = match model {
            ModelRef::Version(_, version) => Some(*version),
            ModelRef::Alias(_, alias) => entry.and_then(|e| e.aliases.get(alias).copied()),
        };
        version
            .and_then(|v| entry.and_then(|e| e.versions.get(&v)))
            .ok_or_else(|| Error::not_found(format!("model {model}")))
    }

    fn checkpoint(&self, job_id: JobId, id: u64) -> Result<&CheckpointManifest> {
        self.job(job_id)?;
        self.state
            .checkpoints
            .get(&job_id.0)
            .and_then(|c| c.manifests.get(&id))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "checkpoint {id} of job {job_id} (never written, or pruned by retention)"
                ))
            })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded store at {}", self.data_dir().display())
    }

    async fn create_job(&self, spec: serde_json::Value) -> Result<JobRecord> {
        self.blocking(move |inner| {
            let mut durable = inner.durable()?;
            let now = now_ms();
            let job = JobRecord {
                id: JobId(durable.state.next_job.max(1)),
                spec,
                state: JobState::Queued,
                attempts: Vec::new(),
                history: Vec::new(),
                model_version: None,
                error: None,
                created_ms: now,
                updated_ms: now,
                revision: durable.next_revision(),
            };
            durable.commit(&inner.config, vec![Op::PutJob(job.clone())])?;
            Ok(job)
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        self.blocking(move |inner| inner.durable()?.job(id).cloned())
            .await
    }

    async fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        self.blocking(|inner| Ok(inner.durable()?.state.jobs.values().cloned().collect()))
            .await
    }

    async fn update_job(&self, job: JobRecord) -> Result<JobRecord> {
        self.blocking(move |inner| {
            let mut durable = inner.durable()?;
            let current = durable.job(job.id)?;
            if current.revision != job.revision {
                return Err(Error::conflict(format!(
                    "job {} changed since it was read (expected revision {}, found {})",
                    job.id, job.revision, current.revision
                )));
            }
            let job = JobRecord {
                created_ms: current.created_ms,
                updated_ms: now_ms(),
                revision: durable.next_revision(),
                ..job
            };
            durable.commit(&inner.config, vec![Op::PutJob(job.clone())])?;
            Ok(job)
        })
        .await
    }

    async fn register_model(
        &self,
        name: &str,
        spec: serde_json::Value,
        lineage: serde_json::Value,
        weights: Bytes,
    ) -> Result<ModelVersion> {
        validate_name("model name", name)?;
        let name = name.to_owned();
        self.blocking(move |inner| {
            let _gate = inner.read_gate();
            let manifest = inner.chunks.write_blob(&weights)?;
            let mut durable = inner.durable()?;
            let version = durable
                .state
                .models
                .get(&name)
                .map_or(1, |e| e.next_version.max(1));
            let model = ModelVersion {
                name: name.clone(),
                version,
                spec,
                lineage,
                weights: manifest,
                created_ms: now_ms(),
            };
            let ops = vec![
                Op::PutModelVersion(model.clone()),
                Op::SetAlias {
                    name,
                    alias: LATEST.to_owned(),
                    version,
                },
            ];
            durable.commit(&inner.config, ops)?;
            Ok(model)
        })
        .await
    }

    async fn update_model_lineage(
        &self,
        name: &str,
        version: u64,
        lineage: serde_json::Value,
    ) -> Result<ModelVersion> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            let mut durable = inner.durable()?;
            let mut model = durable.resolve(&ModelRef::Version(name, version))?.clone();
            model.lineage = lineage;
            durable.commit(&inner.config, vec![Op::PutModelVersion(model.clone())])?;
            Ok(model)
        })
        .await
    }

    async fn alias_history(&self, name: &str, alias: Option<&str>) -> Result<Vec<AliasChange>> {
        let (name, alias) = (name.to_owned(), alias.map(str::to_owned));
        self.blocking(move |inner| {
            let durable = inner.durable()?;
            Ok(durable
                .state
                .models
                .get(&name)
                .map(|e| {
                    e.alias_history
                        .iter()
                        .filter(|c| alias.as_ref().is_none_or(|a| &c.alias == a))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default())
        })
        .await
    }

    async fn get_model(&self, model: &ModelRef) -> Result<ModelVersion> {
        let model = model.clone();
        self.blocking(move |inner| inner.durable()?.resolve(&model).cloned())
            .await
    }

    async fn list_models(&self) -> Result<Vec<RegisteredModel>> {
        self.blocking(|inner| Ok(inner.durable()?.state.registered_models()))
            .await
    }

    async fn set_alias_by(&self, name: &str, alias: &str, version: u64, by: &str) -> Result<()> {
        validate_name("model name", name)?;
        validate_name("alias", alias)?;
        let (name, alias, by) = (name.to_owned(), alias.to_owned(), by.to_owned());
        self.blocking(move |inner| {
            let mut durable = inner.durable()?;
            durable.resolve(&ModelRef::Version(name.clone(), version))?;
            let current = durable
                .state
                .models
                .get(&name)
                .and_then(|e| e.aliases.get(&alias))
                .copied();
            if current == Some(version) {
                return Ok(());
            }
            let change = AliasChange {
                name: name.clone(),
                alias: alias.clone(),
                from: current,
                to: Some(version),
                by,
                unix_ms: now_ms(),
                revision: durable.next_revision(),
            };
            durable.commit(
                &inner.config,
                vec![
                    Op::SetAlias {
                        name,
                        alias,
                        version,
                    },
                    Op::RecordAliasChange(change),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_alias_by(&self, name: &str, alias: &str, by: &str) -> Result<()> {
        let (name, alias, by) = (name.to_owned(), alias.to_owned(), by.to_owned());
        self.blocking(move |inner| {
            let mut durable = inner.durable()?;
            let current = durable
                .state
                .models
                .get(&name)
                .and_then(|e| e.aliases.get(&alias))
                .copied();
            let Some(current) = current else {
                return Err(Error::not_found(format!("alias {name}@{alias}")));
            };
            let change = AliasChange {
                name: name.clone(),
                alias: alias.clone(),
                from: Some(current),
                to: None,
                by,
                unix_ms: now_ms(),
                revision: durable.next_revision(),
            };
            durable.commit(
                &inner.config,
                vec![
                    Op::RemoveAlias { name, alias },
                    Op::RecordAliasChange(change),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_model_version(&self, name: &str, version: u64) -> Result<()> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            {
                let mut durable = inner.durable()?;
                durable.resolve(&ModelRef::Version(name.clone(), version))?;
                let mut ops = vec![Op::DeleteModelVersion {
                    name: name.clone(),
                    version,
                }];
                if let Some(entry) = durable.state.models.get(&name) {
                    let pinned: Vec<&str> = entry
                        .aliases
                        .iter()
                        .filter(|(alias, v)| **v == version && alias.as_str() != LATEST)
                        .map(|(alias, _)| alias.as_str())
                        .collect();
                    if !pinned.is_empty() {
                        return Err(Error::conflict(format!(
                            "model {name}:{version} is still aliased as {}; move or remove the alias first",
                            pinned.join(", ")
                        )));
                    }
                    if entry.aliases.get(LATEST) == Some(&version) {
                        let previous = entry.versions.keys().rev().find(|v| **v != version);
                        ops.push(match previous {
                            Some(previous) => Op::SetAlias {
                                name: name.clone(),
                                alias: LATEST.to_owned(),
                                version: *previous,
                            },
                            None => Op::RemoveAlias {
                                name: name.clone(),
                                alias: LATEST.to_owned(),
                            },
                        });
                    }
                }
                durable.commit(&inner.config, ops)?;
            }
            inner.collect_garbage();
            Ok(())
        })
        .await
    }

    async fn model_weights(&self, name: &str, version: u64) -> Result<Bytes> {
        let model = ModelRef::Version(name.to_owned(), version);
        self.blocking(move |inner| {
            let _gate = inner.read_gate();
            let manifest = inner.durable()?.resolve(&model)?.weights.clone();
            inner
                .chunks
                .read_blob(&manifest, &format!("weights of model {model}"))
        })
        .await
    }

    async fn watch_aliases(&self) -> Result<Watched<Vec<Alias>, AliasEvent>> {
        self.blocking(|inner| {
            let mut durable = inner.durable()?;
            let (sender, events) = mpsc::unbounded_channel();
            durable.alias_watchers.push(sender);
            Ok(Watched {
                current: durable.state.aliases(),
                events: WatchStream::new(events),
            })
        })
        .await
    }

    async fn put_checkpoint(
        &self,
        job_id: JobId,
        epoch: u64,
        meta: serde_json::Value,
        blob: Bytes,
    ) -> Result<CheckpointManifest> {
        self.blocking(move |inner| {
            // Fail fast, before writing chunks, when the job does not exist.
            inner.durable()?.job(job_id)?;
            let (checkpoint, pruned) = {
                let _gate = inner.read_gate();
                let manifest = inner.chunks.write_blob(&blob)?;
                let mut durable = inner.durable()?;
                durable.job(job_id)?;
                let existing = durable.state.checkpoints.get(&job_id.0);
                let id = existing.map_or(1, |c| c.next_id.max(1));
                let checkpoint = CheckpointManifest {
                    job_id,
                    id,
                    epoch,
                    meta,
                    blob: manifest,
                    created_ms: now_ms(),
                };
                let keep = inner.config.keep_checkpoints;
                let old: Vec<u64> = existing
                    .map(|c| c.manifests.keys().copied().collect())
                    .unwrap_or_default();
                let prune = (old.len() + 1).saturating_sub(keep);
                let mut ops = vec![Op::PutCheckpoint(checkpoint.clone())];
                ops.extend(
                    old.iter()
                        .take(prune)
                        .map(|&id| Op::DeleteCheckpoint { job_id, id }),
                );
                durable.commit(&inner.config, ops)?;
                (checkpoint, prune > 0)
            };
            if pruned {
                inner.collect_garbage();
            }
            Ok(checkpoint)
        })
        .await
    }

    async fn list_checkpoints(&self, job_id: JobId) -> Result<Vec<CheckpointManifest>> {
        self.blocking(move |inner| {
            let durable = inner.durable()?;
            durable.job(job_id)?;
            Ok(durable
                .state
                .checkpoints
                .get(&job_id.0)
                .map(|c| c.manifests.values().cloned().collect())
                .unwrap_or_default())
        })
        .await
    }

    async fn latest_checkpoint(&self, job_id: JobId) -> Result<Option<CheckpointManifest>> {
        self.blocking(move |inner| {
            let durable = inner.durable()?;
            durable.job(job_id)?;
            Ok(durable
                .state
                .checkpoints
                .get(&job_id.0)
                .and_then(|c| c.manifests.values().next_back().cloned()))
        })
        .await
    }

    async fn get_checkpoint(&self, job_id: JobId, id: u64) -> Result<Checkpoint> {
        self.blocking(move |inner| {
            let _gate = inner.read_gate();
            let manifest = inner.durable()?.checkpoint(job_id, id)?.clone();
            let blob = inner
                .chunks
                .read_blob(&manifest.blob, &format!("checkpoint {id} of job {job_id}"))?;
            Ok(Checkpoint { manifest, blob })
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.membership.grant(ttl)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.membership.keep_alive(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.membership.revoke(lease)
    }

    async fn put_worker(&self, worker: WorkerRecord) -> Result<()> {
        if worker.id.is_empty() {
            return Err(Error::invalid("a worker id must not be empty"));
        }
        self.membership.put_worker(worker)
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        self.membership.remove_worker(id)
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        Ok(self.membership.list())
    }

    async fn watch_workers(&self) -> Result<Watched<Vec<WorkerRecord>, WorkerEvent>> {
        Ok(self.membership.watch())
    }
}
