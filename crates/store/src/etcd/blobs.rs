//! Blobs of the etcd store: chunks in etcd (or files under `blob_dir`),
//! written behind a `pending/` marker, read verified at the manifest's
//! revision, and collected when nothing refers to them. The module doc of
//! [`crate::etcd`] explains why this order is safe.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::{Inner, decode, encode, errors, header_revision};
use crate::embedded::files::write_atomic_via;
use crate::error::{Error, Result};
use crate::records::{BlobManifest, CHUNK_SIZE, CheckpointManifest, ModelVersion};

/// TTL of the lease under a blob write's `pending/` marker; kept alive while
/// the write runs, so it only matters when the writer dies.
const WRITE_LEASE_TTL_SECS: i64 = 60;

/// TTL of the lease under `gc-lock`: a collector that dies holds writers up
/// for at most this long.
const GC_LOCK_TTL_SECS: i64 = 30;

/// Chunk deletions per transaction (etcd allows 128 operations).
const DELETES_PER_TXN: usize = 100;

/// Temp files of chunk writes older than this are left-overs of a writer
/// that died, and are removed by garbage collection.
const STALE_TEMP_FILE: Duration = Duration::from_secs(3600);

/// Makes chunk temp file names unique within the process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A blob whose chunks are written and whose manifest is not committed yet.
/// The commit deletes [`marker`](Self::marker) in its transaction; then
/// [`Inner::finish_blob`] ends the lease.
pub(super) struct PendingBlob {
    pub(super) manifest: BlobManifest,
    /// The `pending/<lease>` key listing the chunks.
    pub(super) marker: String,
    lease: i64,
    keeper: JoinHandle<()>,
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        // Dropped without `finish_blob` (a cancelled call): the lease then
        // expires on its own and takes the marker with it.
        self.keeper.abort();
    }
}

/// A chunk as fetched: where it lives (for messages) and its bytes, if there.
struct Fetched {
    location: String,
    bytes: Option<Bytes>,
}

enum FetchFailure {
    /// etcd compacted the revision the manifest was read at.
    Compacted,
    Failed(Error),
}

impl From<Error> for FetchFailure {
    fn from(e: Error) -> Self {
        FetchFailure::Failed(e)
    }
}

impl Inner {
    /// Writes the marker, then every chunk of `blob` that is not stored yet.
    pub(super) async fn write_blob(&self, blob: &Bytes) -> Result<PendingBlob> {
        let hashed = blob.clone();
        let manifest = tokio::task::spawn_blocking(move || BlobManifest {
            sha256: sha256_hex(&hashed),
            size: hashed.len() as u64,
            chunks: hashed.chunks(CHUNK_SIZE).map(sha256_hex).collect(),
        })
        .await
        .map_err(|e| Error::Unavailable {
            reason: format!("hashing a blob failed: {e}"),
        })?;

        let lease = self
            .rpc(
                "grant a blob-write lease",
                self.client.lease_client().grant(WRITE_LEASE_TTL_SECS, None),
            )
            .await?
            .id();
        let pending = PendingBlob {
            marker: self.keys.pending_write(lease),
            manifest,
            lease,
            keeper: self.spawn_keeper(lease),
        };
        match self.write_chunks(&pending, blob).await {
            Ok(()) => Ok(pending),
            Err(e) => {
                self.finish_blob(pending).await;
                Err(e)
            }
        }
    }

    /// Keeps a blob write's lease alive until aborted.
    fn spawn_keeper(&self, lease: i64) -> JoinHandle<()> {
        let client = self.client.clone();
        let every = Duration::from_secs(u64::try_from(WRITE_LEASE_TTL_SECS / 3).unwrap_or(20));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let mut leases = client.lease_client();
                let renew = tokio::time::timeout(every, leases.keep_alive(lease)).await;
                if let Ok(Err(e)) = renew {
                    tracing::debug!(lease, error = %e, "renewing a blob-write lease failed");
                }
            }
        })
    }

    async fn write_chunks(&self, pending: &PendingBlob, blob: &Bytes) -> Result<()> {
        // The marker first, and only while no collector holds gc-lock (it
        // could be about to delete a chunk this write reuses).
        let marker = encode(&pending.manifest.chunks)?;
        let gc_lock = self.keys.gc_lock();
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(u64::try_from(GC_LOCK_TTL_SECS).unwrap_or(30) + 5);
        loop {
            let txn = Txn::new()
                .when([Compare::version(gc_lock.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    pending.marker.as_str(),
                    marker.clone(),
                    Some(PutOptions::new().with_lease(pending.lease)),
                )]);
            if self.txn("mark a blob write", txn).await?.succeeded() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Unavailable {
                    reason: format!(
                        "etcd at {}: chunk garbage collection held {gc_lock} for more than {GC_LOCK_TTL_SECS} s",
                        self.endpoints
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        for (chunk, hash) in blob.chunks(CHUNK_SIZE).zip(&pending.manifest.chunks) {
            match &self.config.blob_dir {
                None => {
                    // Content addressed: a chunk already there is this chunk.
                    let key = self.keys.chunk(hash);
                    let txn = Txn::new()
                        .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.as_str(), chunk.to_vec(), None)]);
                    self.txn("write a chunk", txn).await?;
                }
                Some(dir) => {
                    let path = chunk_path(dir, hash);
                    let chunk = blob.slice_ref(chunk);
                    tokio::task::spawn_blocking(move || write_chunk_file(&path, &chunk))
                        .await
                        .map_err(|e| Error::Unavailable {
                            reason: format!("writing a chunk file failed: {e}"),
                        })??;
                }
            }
        }
        Ok(())
    }

    /// Ends a blob write: stops renewing its lease and revokes it (which
    /// removes the marker if the commit did not). Failures are logged: the
    /// lease runs out on its own.
    pub(super) async fn finish_blob(&self, pending: PendingBlob) {
        pending.keeper.abort();
        let mut leases = self.client.lease_client();
        let revoke = leases.revoke(pending.lease);
        if let Err(e) = self.rpc("revoke a blob-write lease", revoke).await {
            tracing::debug!(lease = pending.lease, error = %e, "revoking a blob-write lease failed; it expires by itself");
        }
    }

    /// Reads a blob: `locate` reads its manifest (and whatever the caller
    /// wants with it) and the revision it was read at; the chunks are read
    /// at that revision, so a blob pruned meanwhile still reads whole. When
    /// etcd compacted that revision away, it starts over.
    pub(super) async fn read_blob<T, F, Fut>(&self, what: &str, locate: F) -> Result<(T, Bytes)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(T, BlobManifest, i64)>>,
    {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let (found, manifest, at) = locate().await?;
            let chunks = match self.fetch_chunks(&manifest, at).await {
                Ok(chunks) => chunks,
                Err(FetchFailure::Compacted) => continue,
                Err(FetchFailure::Failed(e)) => return Err(e),
            };
            if self.config.blob_dir.is_some() && chunks.iter().any(|c| c.bytes.is_none()) {
                // Files have no revisions: a chunk may have gone with a
                // checkpoint pruned since. Then the checkpoint is gone too.
                locate().await?;
            }
            let what = what.to_owned();
            let blob = tokio::task::spawn_blocking(move || assemble(&manifest, chunks, &what))
                .await
                .map_err(|e| Error::Unavailable {
                    reason: format!("checking a blob failed: {e}"),
                })??;
            return Ok((found, blob));
        }
        Err(Error::Unavailable {
            reason: format!(
                "etcd at {} compacted away the revision of {what} {ATTEMPTS} times while it was read",
                self.endpoints
            ),
        })
    }

    async fn fetch_chunks(
        &self,
        manifest: &BlobManifest,
        at: i64,
    ) -> std::result::Result<Vec<Fetched>, FetchFailure> {
        let mut chunks = Vec::with_capacity(manifest.chunks.len());
        for hash in &manifest.chunks {
            let fetched = match &self.config.blob_dir {
                None => {
                    let key = self.keys.chunk(hash);
                    let mut kv = self.kv();
                    let get = kv.get(key.as_str(), Some(GetOptions::new().with_revision(at)));
                    let timeout = self.config.request_timeout();
                    let mut response = match tokio::time::timeout(timeout, get).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(e)) if errors::is_compacted(&e) => {
                            return Err(FetchFailure::Compacted);
                        }
                        Ok(Err(e)) => {
                            return Err(
                                errors::from_etcd(&self.endpoints, "read a chunk", e).into()
                            );
                        }
                        Err(_) => {
                            return Err(errors::timed_out(
                                &self.endpoints,
                                "read a chunk",
                                self.config.request_timeout_ms,
                            )
                            .into());
                        }
                    };
                    let bytes = response
                        .take_kvs()
                        .into_iter()
                        .next()
                        .map(|kv| Bytes::from(kv.into_key_value().1));
                    Fetched {
                        location: key,
                        bytes,
                    }
                }
                Some(dir) => {
                    let path = chunk_path(dir, hash);
                    let location = path.display().to_string();
                    let bytes = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                        Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(Error::io(&path, e)),
                    })
                    .await
                    .map_err(|e| Error::Unavailable {
                        reason: format!("reading a chunk file failed: {e}"),
                    })??;
                    Fetched { location, bytes }
                }
            };
            chunks.push(fetched);
        }
        Ok(chunks)
    }

    /// Removes chunks that no manifest and no blob write in flight names.
    /// Failures are logged, not returned: the write that led here is
    /// committed, and the next collection tries again.
    pub(super) async fn collect_garbage(&self) {
        for attempt in 0..3 {
            match self.try_collect_garbage().await {
                Ok(Some(removed)) => {
                    tracing::debug!(removed, "collected unreferenced chunks");
                    return;
                }
                // Someone wrote meanwhile; their write may reuse a chunk.
                Ok(None) => tokio::time::sleep(Duration::from_millis(20 << attempt)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection of chunks failed; the next one retries");
                    return;
                }
            }
        }
        tracing::debug!(
            "garbage collection of chunks kept losing to writers; the next one retries"
        );
    }

    /// One try; `None` when a write since the snapshot made it back off.
    async fn try_collect_garbage(&self) -> Result<Option<usize>> {
        let keys = &self.keys;
        let pending = self
            .get_prefix("read blob writes in flight", &keys.pending())
            .await?;
        let at = header_revision(pending.header())?;
        let at_snapshot = || GetOptions::new().with_prefix().with_revision(at);
        let checkpoints = self
            .get(
                "read checkpoint manifests",
                &keys.all_checkpoints(),
                Some(at_snapshot()),
            )
            .await?;
        let models = self
            .get("read model versions", &keys.models(), Some(at_snapshot()))
            .await?;

        let mut live = BTreeSet::new();
        for kv in pending.kvs() {
            live.extend(decode::<Vec<String>>(kv)?);
        }
        for kv in checkpoints.kvs() {
            live.extend(decode::<CheckpointManifest>(kv)?.blob.chunks);
        }
        for kv in models.kvs() {
            if keys.is_version(&String::from_utf8_lossy(kv.key())) {
                live.extend(decode::<ModelVersion>(kv)?.weights.chunks);
            }
        }
        // Nothing that could name a chunk was written after the snapshot.
        let unchanged = [keys.pending(), keys.all_checkpoints(), keys.models()]
            .map(|prefix| Compare::mod_revision(prefix, CompareOp::Less, at + 1).with_prefix());

        match &self.config.blob_dir {
            None => {
                let stored = self
                    .get(
                        "list chunks",
                        &keys.chunks(),
                        Some(at_snapshot().with_keys_only()),
                    )
                    .await?;
                let garbage: Vec<String> = stored
                    .kvs()
                    .iter()
                    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                    .filter(|key| {
                        key.rsplit('/')
                            .next()
                            .is_some_and(|hash| !live.contains(hash))
                    })
                    .collect();
                let mut removed = 0;
                for batch in garbage.chunks(DELETES_PER_TXN) {
                    let txn = Txn::new().when(unchanged.clone()).and_then(
                        batch
                            .iter()
                            .map(|key| TxnOp::delete(key.as_str(), None))
                            .collect::<Vec<_>>(),
                    );
                    if !self
                        .txn("remove unreferenced chunks", txn)
                        .await?
                        .succeeded()
                    {
                        return Ok(None);
                    }
                    removed += batch.len();
                }
                Ok(Some(removed))
            }
            Some(dir) => {
                let lease = self
                    .rpc(
                        "grant the garbage collection lease",
                        self.client.lease_client().grant(GC_LOCK_TTL_SECS, None),
                    )
                    .await?
                    .id();
                let mut when = unchanged.to_vec();
                when.push(Compare::version(keys.gc_lock(), CompareOp::Equal, 0));
                let txn = Txn::new().when(when).and_then([TxnOp::put(
                    keys.gc_lock(),
                    format!("held by pid {}", std::process::id()),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
                let locked = self.txn("take gc-lock", txn).await;
                let removed = match locked {
                    Ok(response) if response.succeeded() => {
                        let dir = dir.clone();
                        tokio::task::spawn_blocking(move || remove_chunk_files(&dir, &live))
                            .await
                            .map_err(|e| Error::Unavailable {
                                reason: format!("removing chunk files failed: {e}"),
                            })
                            .and_then(|r| r)
                            .map(Some)
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                };
                // Revoking the lease releases gc-lock.
                let mut leases = self.client.lease_client();
                let revoke = leases.revoke(lease);
                if let Err(e) = self.rpc("release gc-lock", revoke).await {
                    tracing::warn!(error = %e, "releasing gc-lock failed; it expires with its lease");
                }
                removed
            }
        }
    }
}

/// Joins fetched chunks into the blob, checking every chunk and the whole
/// against the manifest, with the embedded store's messages.
fn assemble(manifest: &BlobManifest, chunks: Vec<Fetched>, what: &str) -> Result<Bytes> {
    let size = usize::try_from(manifest.size)
        .map_err(|_| Error::corrupt(format!("{what}: size {} is too large", manifest.size)))?;
    let mut blob = BytesMut::with_capacity(size);
    let count = manifest.chunks.len();
    for (i, (hash, fetched)) in manifest.chunks.iter().zip(chunks).enumerate() {
        let Some(chunk) = fetched.bytes else {
            return Err(Error::corrupt(format!(
                "{what}: chunk {} of {count} (sha256 {hash}) is missing at {}",
                i + 1,
                fetched.location
            )));
        };
        let actual = sha256_hex(&chunk);
        if &actual != hash {
            return Err(Error::corrupt(format!(
                "{what}: chunk {} of {count} at {} failed its sha256 check (expected {hash}, found {actual})",
                i + 1,
                fetched.location
            )));
        }
        blob.extend_from_slice(&chunk);
    }
    let actual = sha256_hex(&blob);
    if blob.len() as u64 != manifest.size || actual != manifest.sha256 {
        return Err(Error::corrupt(format!(
            "{what}: the blob of {} bytes failed its sha256 check (expected {} bytes with sha256 {}, found sha256 {actual})",
            blob.len(),
            manifest.size,
            manifest.sha256
        )));
    }
    Ok(blob.freeze())
}

fn chunk_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join(hash.get(..2).unwrap_or("xx")).join(hash)
}

/// Writes one chunk file unless it is there: temp file, fsync, rename,
/// fsync the directory.
fn write_chunk_file(path: &Path, chunk: &[u8]) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == chunk.len() as u64) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("chunk");
    let unique = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!("{name}.{}-{unique}.tmp", std::process::id()));
    write_atomic_via(path, &tmp, chunk)
}

/// Removes chunk files not in `live`, and temp files a dead writer left.
/// Other files (and temp files of writes in flight) are left alone.
fn remove_chunk_files(dir: &Path, live: &BTreeSet<String>) -> Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for sub in entries {
        let sub = sub.map_err(|e| Error::io(dir, e))?.path();
        if !sub.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&sub).map_err(|e| Error::io(&sub, e))? {
            let file = file.map_err(|e| Error::io(&sub, e))?.path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_chunk = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let stale_temp = name.ends_with(".tmp")
                && std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| {
                        SystemTime::now()
                            .duration_since(t)
                            .is_ok_and(|age| age > STALE_TEMP_FILE)
                    });
            if (is_chunk && !live.contains(name)) || stale_temp {
                match std::fs::remove_file(&file) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&file, e)),
                }
            }
        }
    }
    Ok(removed)
}
