//! The cluster's memory for Camshaft, with no libtorch and no dependency on
//! Camshaft's gRPC contract (`camshaft-proto`).
//!
//! This crate owns:
//!
//! - [`Store`]: the object-safe async trait every service holds as
//!   `Arc<dyn Store>` — jobs with compare-and-set updates, the model registry
//!   (versions, aliases, verified weights), chunked checkpoints with
//!   retention, leases and the live worker set, and watches on aliases and
//!   workers. It speaks domain records ([`JobRecord`], [`ModelVersion`],
//!   [`CheckpointManifest`], [`WorkerRecord`]), not keys; its operations are
//!   the ones etcd v3 does atomically (one transaction per write, revisions,
//!   leases, watches), so the etcd backend implements the same trait.
//! - [`EmbeddedStore`]: the file-backed implementation for one machine
//!   (`camshaft up`) and tests.
//! - [`EtcdStore`]: the implementation on an etcd v3 cluster, configured by
//!   [`EtcdConfig`] (`--store etcd://host:port,...` parses with
//!   [`EtcdConfig::from_url`]).
//! - `testing` (feature `testing`): the conformance suite every backend runs,
//!   and `EtcdServer`, a throwaway etcd process for tests.
//!
//! # Invariants (every backend)
//!
//! - Ids are assigned inside the write that creates the record and never
//!   reused: jobs `j-1, j-2, ...`; model versions `1, 2, ...` per name;
//!   checkpoints `1, 2, ...` per job.
//! - A blob (checkpoint or model weights) is split into chunks of at most
//!   [`CHUNK_SIZE`] (1 MiB, under etcd's 1.5 MiB request limit), each stored
//!   under its sha256; the manifest naming them is written after all of them,
//!   so a reader sees the whole blob or nothing. Reads check every chunk and
//!   the whole blob and fail with [`Error::Corrupt`] naming the owner and the
//!   chunk.
//! - [`Store::update_job`] is a compare-and-set on [`JobRecord::revision`]: a
//!   stale writer gets [`Error::Conflict`] instead of overwriting.
//! - A worker record exists exactly while its lease does.
//! - A watch starts with a snapshot and then delivers every later change, in
//!   order; when it cannot (the backend lost it), the stream ends.
//! - Every stored record is versioned (see below): a record in a format this
//!   build does not know, or one that does not parse, is an
//!   [`Error::Corrupt`] naming its key, never a default.
//!
//! # Stored records are versioned
//!
//! Every record is written in an envelope with a format tag,
//! `{"format": 1, "record": {...}}`: each etcd value that holds json (jobs,
//! model versions, alias changes, checkpoint manifests, workers, pending-chunk
//! markers) and each embedded record (every write-ahead log commit, and
//! `snapshot.json`). Format 1 is the records' serde json as this crate defines
//! them. A change to a record that older readers would misread (a renamed or
//! retyped field) bumps the format and teaches the reader to convert the
//! older one; a record in an unknown format fails loudly with the key that
//! holds it, so an older binary never reads a newer record as defaults.
//!
//! Records written before the envelope existed (json without a `format` key;
//! no record has a field of that name) read as format 1, which they are:
//! existing data dirs and etcd prefixes keep working without a migration, and
//! each record moves into the envelope when it is next written (the embedded
//! snapshot, at the next snapshot). The test `tests/formats.rs` reads records
//! and a data dir checked in as written before the envelope.
//!
//! # The embedded store on disk
//!
//! ```text
//! <data dir>/
//!   LOCK               flock'ed while open; holds the owner's pid
//!   wal.log            write-ahead log: "CSLOG\0\0\x02", then records
//!                      [ff "REC"][len u32 LE][crc32 of payload][crc32 of the
//!                      12 header bytes before it]
//!                      [{"format": 1, "record": Commit {revision, ops}}]
//!   snapshot.json      the whole durable state at some revision (optional),
//!                      in the record envelope like each log record
//!   blobs/ab/ab12…     chunk files, named by their sha256
//! ```
//!
//! Metadata (jobs, model versions, aliases, checkpoint manifests) lives in
//! memory and is changed only by a *commit*: a list of ops, validated first,
//! appended to the log as one record, `fdatasync`ed, then applied. A write is
//! acknowledged only after that sync, so after a crash (`kill -9`, power loss
//! with honest disks) replaying the snapshot and the log rebuilds every
//! acknowledged write. The last record may be torn (the process died inside
//! `write`) and is dropped — it was never acknowledged. A record's length is
//! believed only once its header's own crc32 checks out, so a damaged record
//! with another record after it is never taken for a torn tail, whichever
//! byte was hit: opening fails with [`Error::Corrupt`] naming the file and the
//! record's byte offset. A log of the version 1 format (no marker, no header
//! crc32) is read once and replaced by a snapshot and a version 2 log.
//!
//! A multi-record change (a model version plus its `latest` alias; a
//! checkpoint plus the ones retention prunes) is one log record, so it is
//! atomic like an etcd transaction. When the log passes
//! [`EmbeddedConfig::snapshot_after_bytes`], the state is written to
//! `snapshot.json` (temp file, fsync, rename, fsync dir) and the log is
//! replaced by an empty one the same way; commits carry revisions, so a crash
//! between the two replays nothing twice.
//!
//! Chunk files are written before the commit that refers to them (temp file,
//! fsync, rename, fsync dir), so a committed manifest never names a missing
//! chunk. Chunks of a write that crashed before its commit are unreferenced
//! and removed when the store next opens; chunks of pruned checkpoints and
//! deleted versions are removed right after the commit that dropped them.
//!
//! Why a log rather than one file per record: commits need several records
//! changed atomically, which renames cannot give without a log anyway; one
//! sequential `fdatasync` per write is also cheaper than three syncs per file.
//!
//! Leases and worker records are memory only: a lease promises its holder is
//! alive, which means nothing after the granting process restarts. A
//! reopened store has no leases and no workers; holders see `NotFound` on
//! their next keep-alive and register again. Leases expire by the tokio clock.
//!
//! One process owns a data dir: [`EmbeddedStore::open`] takes an `flock` on
//! `LOCK` (dropped by the kernel if the process dies) and a second open fails
//! with [`Error::DataDirLocked`]. Inside the process, share one store through
//! an `Arc`; every file operation runs on tokio's blocking pool.
//!
//! # The etcd store
//!
//! [`EtcdStore`] keeps everything under a key prefix (default `/camshaft/`,
//! so clusters and tests share an etcd without seeing each other):
//!
//! ```text
//! jobs/<n>                      JobRecord json (revision = the key's mod_revision)
//! counters/job                  last job number; counters/model/<name>,
//!                               counters/checkpoint/<job> likewise, never decreasing
//! models/<name>/versions/<v>    ModelVersion json
//! models/<name>/aliases/<alias> version number
//! checkpoints/<job>/<id>        CheckpointManifest json
//! chunks/<sha256>               chunk bytes (or <blob_dir>/<ab>/<sha256> files)
//! pending/<lease>               chunk hashes of a blob write in flight, on a lease
//! gc-lock                       held on a lease while chunk files are removed
//! workers/<id>                  WorkerRecord json, attached to its lease
//! ```
//!
//! Numbers in keys are zero-padded to 20 digits so key order is id order.
//! Every write is one etcd transaction: ids come from a counter compared by
//! mod_revision and bumped in the same transaction (retried when another
//! writer won), `update_job` compares the job key's mod_revision, and
//! `register_model` moves `latest` in the transaction that adds the
//! version. Chunks are written one request each before the manifest
//! transaction (which stays a few operations, under etcd's 128 per
//! transaction and 1.5 MiB per request), behind a lease-held `pending/`
//! marker so that garbage collection — a scan of every manifest, run after
//! each prune or delete, deleting under a compare that nothing was written
//! since the scan — never removes a chunk a write in flight reuses. Reads
//! fetch chunks at the manifest's revision and verify them as the embedded
//! store does.
//!
//! Leases are etcd leases; etcd's TTLs are whole seconds, at least 2, so a
//! shorter TTL is rounded up. Watches read a snapshot at revision R and
//! watch from R+1; when etcd cancels a watch (compaction, lost leader,
//! broken connection) the stream ends and the holder watches again. Every
//! request has [`EtcdConfig::request_timeout_ms`]: a dead etcd is an
//! [`Error::Unavailable`] naming the endpoints, never a hang. When etcd hits
//! its space quota (NOSPACE) during `put_checkpoint`, the store prunes,
//! compacts, defragments, disarms the alarm and retries once. The
//! module documentation ([`etcd`]) has the details.
//!
//! ```no_run
//! use std::sync::Arc;
//! use camshaft_store::{EtcdConfig, EtcdStore, Store};
//!
//! # async fn example() -> camshaft_store::Result<()> {
//! let config = EtcdConfig::from_url("etcd://10.0.0.5:2379,10.0.0.6:2379")?;
//! let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(config).await?);
//! println!("{}", store.describe()); // etcd store at 10.0.0.5:2379,10.0.0.6:2379 (prefix /camshaft/)
//! # Ok(())
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use camshaft_store::{EmbeddedConfig, EmbeddedStore, ModelRef, Store};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await?);
//!
//! let job = store.create_job(serde_json::json!({"dataset": "synthetic"})).await?;
//! assert_eq!(job.id.to_string(), "j-1");
//!
//! let weights = bytes::Bytes::from(vec![7u8; 3 << 20]);
//! store.put_checkpoint(job.id, 1, serde_json::json!({"step": 100}), weights.clone()).await?;
//! let latest = store.latest_checkpoint(job.id).await?.expect("just written");
//! assert_eq!(latest.blob.chunks.len(), 3);
//!
//! let v1 = store.register_model("pets", serde_json::json!({}), serde_json::json!({}), weights).await?;
//! let model = store.get_model(&"pets@latest".parse::<ModelRef>()?).await?;
//! assert_eq!(model.version, v1.version);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod bundle;
mod embedded;
mod error;
pub mod etcd;
mod format;
mod records;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use error::{Error, Result};
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use records::{
    Alias, AliasChange, AliasEvent, Attempt, BlobManifest, CHUNK_SIZE, Checkpoint,
    CheckpointManifest, Failure, JobId, JobRecord, JobState, LATEST, LeaseId, MAX_ALIAS_HISTORY,
    ModelRef, ModelVersion, RegisteredModel, WorkerEvent, WorkerRecord, now_ms, validate_name,
};
pub use store::{Store, WatchStream, Watched};
