//! The etcd store: the cluster's [`Store`] on an etcd v3 cluster.
//!
//! # Key layout
//!
//! Every key starts with [`EtcdConfig::prefix`] (default `/camshaft/`), so
//! several clusters or tests share one etcd without seeing each other.
//! Numbers in keys are decimal, zero-padded to 20 digits, so key order is
//! numeric order (`<n>` below).
//!
//! ```text
//! jobs/<n>                      JobRecord json; its `revision` is the key's mod_revision
//! counters/job                  the last job number assigned (decimal)
//! models/<name>/versions/<v>    ModelVersion json (the weights' BlobManifest inside)
//! models/<name>/aliases/<alias> the version it points at (decimal)
//! counters/model/<name>         the last version assigned; never decreases, so
//!                               versions are not reused after deletes
//! checkpoints/<job>/<id>        CheckpointManifest json
//! counters/checkpoint/<job>     the last checkpoint id assigned
//! chunks/<sha256>               raw chunk bytes, at most CHUNK_SIZE (1 MiB);
//!                               files <blob_dir>/<ab>/<sha256> instead with blob_dir
//! pending/<lease>               hashes of the chunks of a blob write in flight,
//!                               on a lease (gone if the writer dies)
//! gc-lock                       held on a lease while chunk files are removed
//! workers/<id>                  WorkerRecord json, attached to the worker's lease
//! ```
//!
//! Every json value above (and the `pending/` markers) is written in the
//! stored-record envelope `{"format": 1, "record": ...}` and read through it
//! (see the crate documentation); counters and aliases are plain decimals.
//!
//! # Writes
//!
//! Every write is one etcd transaction. Ids are assigned inside it: read the
//! counter, then `if mod_revision(counter) unchanged then put counter+1 and
//! the record`, retrying when another writer got there first.
//! [`Store::update_job`] compares the job key's mod_revision with
//! [`JobRecord::revision`]. `register_model` puts the version and moves
//! `latest` in the same transaction; `delete_model_version` compares that
//! nothing under the model changed since it read the aliases.
//!
//! A blob (checkpoint or weights) is written before the transaction that
//! names it: first a `pending/<lease>` marker listing its chunk hashes, then
//! each chunk in a request of its own (only if absent: chunks are content
//! addressed), then the manifest transaction, which also deletes the marker
//! and, for checkpoints, prunes the job's oldest manifests beyond
//! [`EtcdConfig::keep_checkpoints`] with one range delete. A manifest
//! transaction stays a handful of operations however large the blob, far
//! under etcd's 128 per transaction and 1.5 MiB per request.
//!
//! After a commit that dropped manifests, chunks that no manifest and no
//! marker names are removed: the store reads markers and manifests at one
//! revision R, and deletes (at most 100 per transaction) under the compare
//! "nothing under `pending/`, `checkpoints/` or `models/` was written after
//! R" — any blob write that could reuse a chunk starts by writing a marker,
//! so it makes the deletion fail rather than lose its chunk. Chunk files
//! cannot be deleted inside a transaction, so with `blob_dir` the collector
//! first takes `gc-lock` under the same compare, and writers wait for it
//! before they write their marker.
//!
//! # Reads
//!
//! A blob read fetches the manifest and then every chunk *at the manifest's
//! revision*, so a checkpoint pruned and collected meanwhile still reads
//! whole (if etcd compacted that revision away, the read starts over). Every
//! chunk and the whole blob are checked against their sha256, with the same
//! [`Error::Corrupt`] messages as the embedded store.
//!
//! # Leases, workers and watches
//!
//! Leases are etcd leases. etcd counts whole seconds with a minimum of 2 s, so
//! a TTL is rounded up to whole seconds and to at least 2 s. A worker record
//! is put with its lease and vanishes with it. `watch_workers` and
//! `watch_aliases` read a snapshot at revision R and watch from R+1, so no
//! change is missed or repeated; expiry shows up as a deletion. When etcd
//! cancels the watch (its revision was compacted, the member lost its leader
//! or the connection broke) the [`WatchStream`](crate::WatchStream) ends, as the trait says, and
//! the holder watches again.
//!
//! # Running out of space
//!
//! etcd keeps every revision until it is compacted, and refuses writes once
//! its database reaches the quota (NOSPACE alarm). When `put_checkpoint`
//! meets that, the store prunes the job's checkpoints beyond the retention,
//! removes unreferenced chunks, compacts to the current revision,
//! defragments every endpoint, disarms the NOSPACE alarm, and retries once.
//! Any other write fails with an [`Error::Unavailable`] that says so. Run
//! etcd with `--auto-compaction-retention` in production so it rarely comes
//! to that.
//!
//! # Errors
//!
//! Unreachable endpoints, no leader, and requests that take longer than
//! [`EtcdConfig::request_timeout_ms`] are [`Error::Unavailable`] naming the
//! endpoints (a call never hangs on a dead etcd); a request etcd finds too
//! large is [`Error::InvalidArgument`].

mod blobs;
mod config;
mod errors;
mod keys;
mod space;
mod watches;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KeyValue,
    KvClient, PutOptions, Txn, TxnOp, TxnResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

pub use self::config::{EtcdConfig, EtcdTls};
use self::keys::Keys;
use crate::error::{Error, Result};
use crate::format;
use crate::records::{
    Alias, AliasChange, AliasEvent, Checkpoint, CheckpointManifest, JobId, JobRecord, JobState,
    LATEST, LeaseId, MAX_ALIAS_HISTORY, ModelRef, ModelVersion, RegisteredModel, WorkerEvent,
    WorkerRecord, now_ms, validate_name,
};
use crate::store::{Store, Watched};

/// The largest response the store accepts from etcd (a `list_jobs` of many
/// long histories; tonic's default is 4 MiB).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// How many times a compare-and-set that lost to another writer is retried
/// before the operation gives up with [`Error::Unavailable`].
const MAX_ATTEMPTS: u32 = 200;

/// The [`Store`] on etcd. Connect once per process and share it
/// (`Arc<EtcdStore>` or `Arc<dyn Store>`); it is a handle on a pool of
/// connections. Dropping it ends its watches.
pub struct EtcdStore {
    inner: Arc<Inner>,
    /// Dropped with the store: every watch task sees it go and ends.
    _shutdown: watch::Sender<()>,
    shutdown: watch::Receiver<()>,
}

/// What every operation (and every watch task) needs.
pub(crate) struct Inner {
    client: Client,
    config: EtcdConfig,
    keys: Keys,
    /// `host:port,...` for messages.
    endpoints: String,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (a read under the
    /// prefix), so a wrong address fails here rather than at the first use.
    /// Fails with [`Error::Unavailable`] when no endpoint answers within the
    /// connect and request timeouts, [`Error::InvalidArgument`] for bad
    /// settings.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        config.validate()?;
        let endpoints = config.endpoint_list();
        let options = connect_options(&config)?;
        let urls = config.urls();
        let connect = Client::connect(urls, Some(options));
        let limit = config.connect_timeout() + config.request_timeout();
        let client = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(errors::from_etcd(&endpoints, "connect", e)),
            Err(_) => {
                return Err(errors::timed_out(
                    &endpoints,
                    "connect",
                    u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                ));
            }
        };
        let keys = Keys::new(&config.prefix);
        let inner = Inner {
            client,
            config,
            keys,
            endpoints,
        };
        let root = inner.keys.root().to_owned();
        inner
            .rpc(
                "read the store prefix",
                inner.kv().get(
                    root,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            )
            .await?;
        let (sender, receiver) = watch::channel(());
        Ok(EtcdStore {
            inner: Arc::new(inner),
            _shutdown: sender,
            shutdown: receiver,
        })
    }

    /// The settings it was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout())
        // Notice a dead connection under an idle watch.
        .with_keep_alive(Duration::from_secs(10), config.request_timeout())
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                Error::invalid(format!(
                    "etcd tls file {} cannot be read: {e}",
                    path.display()
                ))
            })
        };
        let mut tls_options = etcd_client::TlsOptions::new();
        tls_options = match &tls.ca_file {
            Some(ca) => tls_options.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?)),
            None => tls_options.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            tls_options =
                tls_options.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls_options);
    }
    Ok(options)
}

impl Inner {
    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Runs one etcd call under the request timeout and maps its failure.
    async fn rpc<T>(
        &self,
        doing: &str,
        call: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.config.request_timeout(), call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(errors::from_etcd(&self.endpoints, doing, e)),
            Err(_) => Err(errors::timed_out(
                &self.endpoints,
                doing,
                self.config.request_timeout_ms,
            )),
        }
    }

    async fn get(
        &self,
        doing: &str,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<GetResponse> {
        self.rpc(doing, self.kv().get(key, options)).await
    }

    async fn get_prefix(&self, doing: &str, prefix: &str) -> Result<GetResponse> {
        self.get(doing, prefix, Some(GetOptions::new().with_prefix()))
            .await
    }

    async fn txn(&self, doing: &str, txn: Txn) -> Result<TxnResponse> {
        self.rpc(doing, self.kv().txn(txn)).await
    }

    /// The last number a counter handed out (0 for none) and the counter's
    /// mod_revision (0 when absent), to compare in the transaction that
    /// takes the next one.
    async fn read_counter(&self, key: &str) -> Result<(u64, i64)> {
        let response = self.get("read a counter", key, None).await?;
        match response.kvs().first() {
            None => Ok((0, 0)),
            Some(kv) => {
                let value = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        Error::corrupt(format!("counter {key} does not hold a decimal number"))
                    })?;
                Ok((value, kv.mod_revision()))
            }
        }
    }

    /// Sleeps a little before attempt `attempt + 1` of a compare-and-set,
    /// or gives up after [`MAX_ATTEMPTS`].
    async fn lost_race(&self, doing: &str, attempt: u32) -> Result<()> {
        if attempt + 1 >= MAX_ATTEMPTS {
            return Err(Error::Unavailable {
                reason: format!(
                    "etcd at {}: gave up to {doing} after {MAX_ATTEMPTS} attempts lost to concurrent writers",
                    self.endpoints
                ),
            });
        }
        // Spread the retries of writers that collided (no rand dependency:
        // the clock's nanoseconds are jitter enough).
        let jitter = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
                % 1000,
        );
        let base = u64::from(attempt.min(20));
        tokio::time::sleep(Duration::from_micros(base * 500 + jitter * (base + 1))).await;
        Ok(())
    }

    fn job(&self, kv: &KeyValue) -> Result<JobRecord> {
        let mut job: JobRecord = decode(kv)?;
        job.revision = revision(kv.mod_revision());
        Ok(job)
    }

    /// The version an alias key holds.
    fn alias_value(kv: &KeyValue) -> Result<u64> {
        std::str::from_utf8(kv.value())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "alias key {} does not hold a version number",
                    String::from_utf8_lossy(kv.key())
                ))
            })
    }

    /// Resolves a model reference at one revision: the alias and the version
    /// it names are read consistently.
    /// Drops `name`'s oldest alias changes beyond [`MAX_ALIAS_HISTORY`].
    /// Best effort: the change that led here is committed, and the next
    /// one prunes again.
    async fn prune_alias_history(&self, name: &str) {
        let prefix = self.keys.alias_history(name);
        let Ok(response) = self
            .get(
                "read alias history",
                &prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
        else {
            return;
        };
        let mut kvs: Vec<_> = response.kvs().iter().collect();
        if kvs.len() <= MAX_ALIAS_HISTORY {
            return;
        }
        kvs.sort_by_key(|kv| kv.mod_revision());
        let excess = kvs.len() - MAX_ALIAS_HISTORY;
        for chunk in kvs[..excess].chunks(100) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|kv| TxnOp::delete(kv.key().to_vec(), None))
                .collect();
            if let Err(e) = self
                .txn("prune alias history", Txn::new().and_then(ops))
                .await
            {
                tracing::warn!(model = name, error = %e, "pruning alias history failed");
                return;
            }
        }
    }

    async fn resolve(&self, model: &ModelRef) -> Result<(ModelVersion, i64)> {
        let not_found = || Error::not_found(format!("model {model}"));
        let (version, at) = match model {
            ModelRef::Version(_, version) => (*version, None),
            ModelRef::Alias(name, alias) => {
                let response = self
                    .get("read a model alias", &self.keys.alias(name, alias), None)
                    .await?;
                let kv = response.kvs().first().ok_or_else(not_found)?;
                (
                    Self::alias_value(kv)?,
                    Some(header_revision(response.header())?),
                )
            }
        };
        let options = at.map(|r| GetOptions::new().with_revision(r));
        let response = self
            .get(
                "read a model version",
                &self.keys.version(model.name(), version),
                options,
            )
            .await?;
        let kv = response.kvs().first().ok_or_else(not_found)?;
        Ok((decode(kv)?, header_revision(response.header())?))
    }

    async fn job_exists(&self, id: JobId) -> Result<()> {
        let response = self
            .get(
                "read a job",
                &self.keys.job(id),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
        if response.count() == 0 {
            return Err(Error::not_found(format!("job {id}")));
        }
        Ok(())
    }

    /// One attempt of `put_checkpoint` (the caller handles running out of
    /// space).
    async fn put_checkpoint_once(
        &self,
        job_id: JobId,
        epoch: u64,
        meta: &serde_json::Value,
        blob: &Bytes,
    ) -> Result<(CheckpointManifest, bool)> {
        self.job_exists(job_id).await?;
        let pending = self.write_blob(blob).await?;
        let result = self.commit_checkpoint(job_id, epoch, meta, &pending).await;
        self.finish_blob(pending).await;
        result
    }

    async fn commit_model(
        &self,
        name: &str,
        spec: &serde_json::Value,
        lineage: &serde_json::Value,
        pending: &blobs::PendingBlob,
    ) -> Result<ModelVersion> {
        let counter = self.keys.model_counter(name);
        for attempt in 0.. {
            let (last, counter_revision) = self.read_counter(&counter).await?;
            let model = ModelVersion {
                name: name.to_owned(),
                version: last + 1,
                spec: spec.clone(),
                lineage: lineage.clone(),
                weights: pending.manifest.clone(),
                created_ms: now_ms(),
            };
            let version = model.version.to_string();
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    counter.as_str(),
                    CompareOp::Equal,
                    counter_revision,
                )])
                .and_then([
                    TxnOp::put(counter.as_str(), version.clone(), None),
                    TxnOp::put(
                        self.keys.version(name, model.version),
                        encode(&model)?,
                        None,
                    ),
                    TxnOp::put(self.keys.alias(name, LATEST), version, None),
                    TxnOp::delete(pending.marker.as_str(), None),
                ]);
            if self.txn("register a model version", txn).await?.succeeded() {
                return Ok(model);
            }
            self.lost_race("register a model version", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }

    async fn commit_checkpoint(
        &self,
        job_id: JobId,
        epoch: u64,
        meta: &serde_json::Value,
        pending: &blobs::PendingBlob,
    ) -> Result<(CheckpointManifest, bool)> {
        let counter = self.keys.checkpoint_counter(job_id);
        let keep = self.config.keep_checkpoints;
        for attempt in 0.. {
            let (last, counter_revision) = self.read_counter(&counter).await?;
            let existing = self
                .get(
                    "list checkpoints",
                    &self.keys.checkpoints(job_id),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            let id = last + 1;
            let manifest = CheckpointManifest {
                job_id,
                id,
                epoch,
                meta: meta.clone(),
                blob: pending.manifest.clone(),
                created_ms: now_ms(),
            };
            let mut ops = vec![
                TxnOp::put(counter.as_str(), id.to_string(), None),
                TxnOp::put(self.keys.checkpoint(job_id, id), encode(&manifest)?, None),
                TxnOp::delete(pending.marker.as_str(), None),
            ];
            // Keys sort numerically: everything before the oldest kept one goes.
            let prune = (existing.kvs().len() + 1).saturating_sub(keep);
            if prune > 0 {
                let first_kept = existing.kvs().get(prune).map_or_else(
                    || self.keys.checkpoint(job_id, id),
                    |kv| String::from_utf8_lossy(kv.key()).into_owned(),
                );
                ops.push(TxnOp::delete(
                    self.keys.checkpoints(job_id),
                    Some(DeleteOptions::new().with_range(first_kept)),
                ));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    counter.as_str(),
                    CompareOp::Equal,
                    counter_revision,
                )])
                .and_then(ops);
            if self.txn("commit a checkpoint", txn).await?.succeeded() {
                return Ok((manifest, prune > 0));
            }
            self.lost_race("commit a checkpoint", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }
}

/// An etcd revision as the store's `u64`.
fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| Error::Unavailable {
            reason: "etcd answered without a response header".into(),
        })
}

/// `value` in the stored-record envelope ([`crate::format`]).
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    format::encode(value)
}

/// The record under `kv`'s key, read through the envelope
/// ([`crate::format`]); an error names the key.
fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    let key = format!("etcd key {}", String::from_utf8_lossy(kv.key()));
    format::decode(&key, kv.value())
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        let config = &self.inner.config;
        let blobs = config
            .blob_dir
            .as_ref()
            .map(|dir| format!(", blobs in {}", dir.display()))
            .unwrap_or_default();
        format!(
            "etcd store at {} (prefix {}{blobs})",
            self.inner.endpoints, config.prefix
        )
    }

    // ----- jobs -----

    async fn create_job(&self, spec: serde_json::Value) -> Result<JobRecord> {
        let inner = &self.inner;
        let counter = inner.keys.job_counter();
        for attempt in 0.. {
            let (last, counter_revision) = inner.read_counter(&counter).await?;
            let now = now_ms();
            let mut job = JobRecord {
                id: JobId(last + 1),
                spec: spec.clone(),
                state: JobState::Queued,
                attempts: Vec::new(),
                history: Vec::new(),
                model_version: None,
                error: None,
                created_ms: now,
                updated_ms: now,
                revision: 0,
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    counter.as_str(),
                    CompareOp::Equal,
                    counter_revision,
                )])
                .and_then([
                    TxnOp::put(counter.as_str(), job.id.0.to_string(), None),
                    TxnOp::put(inner.keys.job(job.id), encode(&job)?, None),
                ]);
            let response = inner.txn("create a job", txn).await?;
            if response.succeeded() {
                job.revision = revision(header_revision(response.header())?);
                return Ok(job);
            }
            inner.lost_race("create a job", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        let inner = &self.inner;
        let response = inner.get("read a job", &inner.keys.job(id), None).await?;
        let kv = response
            .kvs()
            .first()
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        inner.job(kv)
    }

    async fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        let inner = &self.inner;
        let response = inner.get_prefix("list jobs", &inner.keys.jobs()).await?;
        response.kvs().iter().map(|kv| inner.job(kv)).collect()
    }

    async fn update_job(&self, job: JobRecord) -> Result<JobRecord> {
        let inner = &self.inner;
        let key = inner.keys.job(job.id);
        let changed = |found: u64| {
            Error::conflict(format!(
                "job {} changed since it was read (expected revision {}, found {found})",
                job.id, job.revision
            ))
        };
        let current = self.get_job(job.id).await?;
        if current.revision != job.revision {
            return Err(changed(current.revision));
        }
        let mut updated = JobRecord {
            created_ms: current.created_ms,
            updated_ms: now_ms(),
            revision: 0,
            ..job.clone()
        };
        let expected = i64::try_from(job.revision).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(key.as_str(), encode(&updated)?, None)]);
        let response = inner.txn("update a job", txn).await?;
        if !response.succeeded() {
            let found = self.get_job(job.id).await?;
            return Err(changed(found.revision));
        }
        updated.revision = revision(header_revision(response.header())?);
        Ok(updated)
    }

    // ----- model registry -----

    async fn register_model(
        &self,
        name: &str,
        spec: serde_json::Value,
        lineage: serde_json::Value,
        weights: Bytes,
    ) -> Result<ModelVersion> {
        validate_name("model name", name)?;
        let inner = &self.inner;
        let pending = inner.write_blob(&weights).await?;
        let result = inner.commit_model(name, &spec, &lineage, &pending).await;
        inner.finish_blob(pending).await;
        result
    }

    async fn update_model_lineage(
        &self,
        name: &str,
        version: u64,
        lineage: serde_json::Value,
    ) -> Result<ModelVersion> {
        let inner = &self.inner;
        let key = inner.keys.version(name, version);
        for attempt in 0.. {
            let response = inner.get("read a model version", &key, None).await?;
            let kv = response
                .kvs()
                .first()
                .ok_or_else(|| Error::not_found(format!("model {name}:{version}")))?;
            let mut model: ModelVersion = decode(kv)?;
            model.lineage = lineage.clone();
            // Only if the version is still the one read (not deleted or
            // changed meanwhile).
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key.as_str(), encode(&model)?, None)]);
            if inner.txn("update a model version", txn).await?.succeeded() {
                return Ok(model);
            }
            inner.lost_race("update a model version", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }

    async fn get_model(&self, model: &ModelRef) -> Result<ModelVersion> {
        Ok(self.inner.resolve(model).await?.0)
    }

    async fn list_models(&self) -> Result<Vec<RegisteredModel>> {
        let inner = &self.inner;
        let response = inner
            .get_prefix("list models", &inner.keys.models())
            .await?;
        let mut models: BTreeMap<String, RegisteredModel> = BTreeMap::new();
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if inner.keys.is_version(&key) {
                let version: ModelVersion = decode(kv)?;
                model_entry(&mut models, &version.name.clone())
                    .versions
                    .push(version);
            } else if let Some((name, alias)) = inner.keys.parse_alias(&key) {
                let version = Inner::alias_value(kv)?;
                model_entry(&mut models, name)
                    .aliases
                    .insert(alias.to_owned(), version);
            }
        }
        Ok(models.into_values().collect())
    }

    async fn set_alias_by(&self, name: &str, alias: &str, version: u64, by: &str) -> Result<()> {
        validate_name("model name", name)?;
        validate_name("alias", alias)?;
        let inner = &self.inner;
        let alias_key = inner.keys.alias(name, alias);
        let version_key = inner.keys.version(name, version);
        for attempt in 0.. {
            let response = inner.get("read a model alias", &alias_key, None).await?;
            let (current, alias_revision) = match response.kvs().first() {
                Some(kv) => (Some(Inner::alias_value(kv)?), kv.mod_revision()),
                None => (None, 0),
            };
            if current == Some(version) {
                return Ok(());
            }
            let change = AliasChange {
                name: name.to_string(),
                alias: alias.to_string(),
                from: current,
                to: Some(version),
                by: by.to_string(),
                unix_ms: now_ms(),
                revision: 0,
            };
            let change_key = inner
                .keys
                .alias_change(name, change.unix_ms, alias, alias_revision);
            let txn = Txn::new()
                .when([
                    Compare::version(version_key.as_str(), CompareOp::Greater, 0),
                    Compare::mod_revision(alias_key.as_str(), CompareOp::Equal, alias_revision),
                ])
                .and_then([
                    TxnOp::put(alias_key.as_str(), version.to_string(), None),
                    TxnOp::put(change_key.as_str(), encode(&change)?, None),
                ]);
            if inner.txn("set a model alias", txn).await?.succeeded() {
                inner.prune_alias_history(name).await;
                return Ok(());
            }
            let exists = inner
                .get(
                    "read a model version",
                    &version_key,
                    Some(GetOptions::new().with_count_only()),
                )
                .await?;
            if exists.count() == 0 {
                return Err(Error::not_found(format!("model {name}:{version}")));
            }
            inner.lost_race("set a model alias", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }

    async fn remove_alias_by(&self, name: &str, alias: &str, by: &str) -> Result<()> {
        let inner = &self.inner;
        let key = inner.keys.alias(name, alias);
        for attempt in 0.. {
            let response = inner.get("read a model alias", &key, None).await?;
            let Some(kv) = response.kvs().first() else {
                return Err(Error::not_found(format!("alias {name}@{alias}")));
            };
            let (current, revision) = (Inner::alias_value(kv)?, kv.mod_revision());
            let change = AliasChange {
                name: name.to_string(),
                alias: alias.to_string(),
                from: Some(current),
                to: None,
                by: by.to_string(),
                unix_ms: now_ms(),
                revision: 0,
            };
            let change_key = inner
                .keys
                .alias_change(name, change.unix_ms, alias, revision);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([
                    TxnOp::delete(key.as_str(), None),
                    TxnOp::put(change_key.as_str(), encode(&change)?, None),
                ]);
            if inner.txn("remove a model alias", txn).await?.succeeded() {
                inner.prune_alias_history(name).await;
                return Ok(());
            }
            inner.lost_race("remove a model alias", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }

    async fn alias_history(&self, name: &str, alias: Option<&str>) -> Result<Vec<AliasChange>> {
        let inner = &self.inner;
        let response = inner
            .get_prefix("read alias history", &inner.keys.alias_history(name))
            .await?;
        let mut changes = Vec::new();
        for kv in response.kvs() {
            let mut change: AliasChange = decode(kv)?;
            if alias.is_some_and(|a| a != change.alias) {
                continue;
            }
            change.revision = revision(kv.mod_revision());
            changes.push(change);
        }
        changes.sort_by_key(|c| c.revision);
        Ok(changes)
    }

    async fn delete_model_version(&self, name: &str, version: u64) -> Result<()> {
        let inner = &self.inner;
        let model_prefix = inner.keys.model(name);
        let version_key = inner.keys.version(name, version);
        for attempt in 0.. {
            let response = inner.get_prefix("read a model", &model_prefix).await?;
            let read_at = header_revision(response.header())?;
            let mut versions = Vec::new();
            let mut aliases = BTreeMap::new();
            for kv in response.kvs() {
                let key = String::from_utf8_lossy(kv.key());
                if inner.keys.is_version(&key) {
                    versions.push(decode::<ModelVersion>(kv)?.version);
                } else if let Some((_, alias)) = inner.keys.parse_alias(&key) {
                    aliases.insert(alias.to_owned(), Inner::alias_value(kv)?);
                }
            }
            if !versions.contains(&version) {
                return Err(Error::not_found(format!("model {name}:{version}")));
            }
            let pinned: Vec<&str> = aliases
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
            let mut ops = vec![TxnOp::delete(version_key.as_str(), None)];
            if aliases.get(LATEST) == Some(&version) {
                let latest = inner.keys.alias(name, LATEST);
                let previous = versions.iter().rev().find(|v| **v != version);
                ops.push(match previous {
                    Some(previous) => TxnOp::put(latest, previous.to_string(), None),
                    None => TxnOp::delete(latest, None),
                });
            }
            // Nothing under the model changed since the read: no alias
            // moved onto this version, no version was registered.
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(model_prefix.as_str(), CompareOp::Less, read_at + 1)
                        .with_prefix(),
                ])
                .and_then(ops);
            if inner.txn("delete a model version", txn).await?.succeeded() {
                inner.collect_garbage().await;
                return Ok(());
            }
            inner.lost_race("delete a model version", attempt).await?;
        }
        unreachable!("the loop returns or gives up")
    }

    async fn model_weights(&self, name: &str, version: u64) -> Result<Bytes> {
        let model = &ModelRef::Version(name.to_owned(), version);
        let inner = &self.inner;
        let ((), blob) = inner
            .read_blob(&format!("weights of model {model}"), move || async move {
                let (found, at) = inner.resolve(model).await?;
                Ok(((), found.weights, at))
            })
            .await?;
        Ok(blob)
    }

    async fn watch_aliases(&self) -> Result<Watched<Vec<Alias>, AliasEvent>> {
        watches::aliases(&self.inner, self.shutdown.clone()).await
    }

    // ----- checkpoints -----

    async fn put_checkpoint(
        &self,
        job_id: JobId,
        epoch: u64,
        meta: serde_json::Value,
        blob: Bytes,
    ) -> Result<CheckpointManifest> {
        let inner = &self.inner;
        let (manifest, pruned) = match inner.put_checkpoint_once(job_id, epoch, &meta, &blob).await
        {
            Err(e) if errors::is_out_of_space(&e) => {
                tracing::warn!(job_id = %job_id, error = %e, "etcd is out of space; pruning, compacting and defragmenting, then retrying the checkpoint once");
                inner.recover_space(job_id).await?;
                inner
                    .put_checkpoint_once(job_id, epoch, &meta, &blob)
                    .await?
            }
            other => other?,
        };
        if pruned {
            inner.collect_garbage().await;
        }
        Ok(manifest)
    }

    async fn list_checkpoints(&self, job_id: JobId) -> Result<Vec<CheckpointManifest>> {
        let inner = &self.inner;
        inner.job_exists(job_id).await?;
        let response = inner
            .get_prefix("list checkpoints", &inner.keys.checkpoints(job_id))
            .await?;
        response.kvs().iter().map(decode).collect()
    }

    async fn latest_checkpoint(&self, job_id: JobId) -> Result<Option<CheckpointManifest>> {
        let inner = &self.inner;
        inner.job_exists(job_id).await?;
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(
                etcd_client::SortTarget::Key,
                etcd_client::SortOrder::Descend,
            )
            .with_limit(1);
        let response = inner
            .get(
                "read the latest checkpoint",
                &inner.keys.checkpoints(job_id),
                Some(options),
            )
            .await?;
        response.kvs().first().map(decode).transpose()
    }

    async fn get_checkpoint(&self, job_id: JobId, id: u64) -> Result<Checkpoint> {
        let inner = &self.inner;
        let key = &inner.keys.checkpoint(job_id, id);
        let (manifest, blob) = inner
            .read_blob(&format!("checkpoint {id} of job {job_id}"), move || async move {
                let response = inner.get("read a checkpoint", key, None).await?;
                let Some(kv) = response.kvs().first() else {
                    inner.job_exists(job_id).await?;
                    return Err(Error::not_found(format!(
                        "checkpoint {id} of job {job_id} (never written, or pruned by retention)"
                    )));
                };
                let manifest: CheckpointManifest = decode(kv)?;
                let blob = manifest.blob.clone();
                Ok((manifest, blob, header_revision(response.header())?))
            })
            .await?;
        Ok(Checkpoint { manifest, blob })
    }

    // ----- leases and workers -----

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::invalid("a lease ttl must be more than zero"));
        }
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(MIN_LEASE_TTL_SECS);
        let inner = &self.inner;
        let response = inner
            .rpc(
                "grant a lease",
                inner.client.lease_client().grant(seconds, None),
            )
            .await?;
        Ok(LeaseId(response.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let inner = &self.inner;
        let not_found = || Error::not_found(format!("{lease} (expired or revoked)"));
        let renew = async {
            // The first keep-alive is sent (and its answer checked) by
            // `keep_alive`; the second one reads back the TTL.
            let (mut keeper, mut answers) = inner.client.lease_client().keep_alive(lease.0).await?;
            keeper.keep_alive().await?;
            answers.message().await
        };
        match inner.rpc("renew a lease", renew).await {
            Ok(Some(answer)) if answer.ttl() > 0 => Ok(Duration::from_secs(
                u64::try_from(answer.ttl()).unwrap_or(0),
            )),
            Ok(Some(_)) | Err(Error::NotFound { .. }) => Err(not_found()),
            Ok(None) => Err(Error::Unavailable {
                reason: format!(
                    "etcd at {} closed the keep-alive stream of {lease}",
                    inner.endpoints
                ),
            }),
            Err(e) => Err(e),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let inner = &self.inner;
        match inner
            .rpc(
                "revoke a lease",
                inner.client.lease_client().revoke(lease.0),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::NotFound { .. }) => {
                Err(Error::not_found(format!("{lease} (expired or revoked)")))
            }
            Err(e) => Err(e),
        }
    }

    async fn put_worker(&self, worker: WorkerRecord) -> Result<()> {
        if worker.id.is_empty() {
            return Err(Error::invalid("a worker id must not be empty"));
        }
        let inner = &self.inner;
        let mut kv = inner.kv();
        let put = kv.put(
            inner.keys.worker(&worker.id),
            encode(&worker)?,
            Some(PutOptions::new().with_lease(worker.lease.0)),
        );
        match inner.rpc("register a worker", put).await {
            Ok(_) => Ok(()),
            Err(Error::NotFound { .. }) => Err(Error::not_found(format!(
                "{} for worker {} (expired or revoked)",
                worker.lease, worker.id
            ))),
            Err(e) => Err(e),
        }
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        let inner = &self.inner;
        let response = inner
            .rpc(
                "remove a worker",
                inner.kv().delete(inner.keys.worker(id), None),
            )
            .await?;
        if response.deleted() == 0 {
            return Err(Error::not_found(format!("worker {id}")));
        }
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        let inner = &self.inner;
        let response = inner
            .get_prefix("list workers", &inner.keys.workers())
            .await?;
        let mut workers: Vec<WorkerRecord> =
            response.kvs().iter().map(decode).collect::<Result<_>>()?;
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    async fn watch_workers(&self) -> Result<Watched<Vec<WorkerRecord>, WorkerEvent>> {
        watches::workers(&self.inner, self.shutdown.clone()).await
    }
}

/// etcd's smallest lease TTL; shorter requests are rounded up to it.
const MIN_LEASE_TTL_SECS: i64 = 2;

fn model_entry<'m>(
    models: &'m mut BTreeMap<String, RegisteredModel>,
    name: &str,
) -> &'m mut RegisteredModel {
    models
        .entry(name.to_owned())
        .or_insert_with(|| RegisteredModel {
            name: name.to_owned(),
            versions: Vec::new(),
            aliases: BTreeMap::new(),
        })
}
