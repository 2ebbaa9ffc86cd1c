//! The domain records the store keeps: jobs, model versions, checkpoints,
//! workers, and the names that address them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest chunk a blob is split into (1 MiB): etcd refuses requests over
/// 1.5 MiB, and the embedded store uses the same layout so both behave alike.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The alias that [`Store::register_model`](crate::Store::register_model)
/// moves to every new version, and that a bare model name resolves through.
pub const LATEST: &str = "latest";

/// Milliseconds since the Unix epoch, the time stamp of every record.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A job's id, `j-<n>`, assigned by the store in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "j-{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.strip_prefix("j-")
            .and_then(|n| n.parse().ok())
            .map(JobId)
            .ok_or_else(|| Error::invalid(format!("job id {s:?} is not of the form j-<n>")))
    }
}

impl TryFrom<String> for JobId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for workers.
    Queued,
    /// An attempt is training.
    Running,
    /// Finished; a model version was registered.
    Succeeded,
    /// Gave up (restart budget spent or a bad spec found late).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// Whether the job will not change state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Why an attempt ended early.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The rank that failed, when one did.
    pub rank: Option<u32>,
    /// The worker that failed, when one did.
    pub worker: Option<String>,
    /// What happened, for people ("lease expired", "NCCL error: ...").
    pub reason: String,
    /// The kind of failure as the coordinator names it (`task_error`,
    /// `worker_lost`, ...), which decides the budget it is charged to.
    #[serde(default)]
    pub kind: String,
    /// The epoch in progress when it failed, if any.
    #[serde(default)]
    pub epoch: Option<u32>,
    /// When it was recorded (ms since the Unix epoch).
    #[serde(default)]
    pub recorded_ms: u64,
}

/// One try at running a job with a fixed group of workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt, then 2, ...
    pub number: u32,
    /// Worker ids in rank order.
    pub workers: Vec<String>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it ended, once it has.
    pub ended_ms: Option<u64>,
    /// Why it ended early, if it did.
    pub failure: Option<Failure>,
}

/// A training job as the coordinator keeps it.
///
/// Updated only through [`Store::update_job`](crate::Store::update_job), a
/// compare-and-set on [`revision`](Self::revision).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Assigned by the store.
    pub id: JobId,
    /// The job spec as the coordinator validated it (its schema belongs to the
    /// coordinator; the store keeps it opaque).
    pub spec: serde_json::Value,
    /// Current state.
    pub state: JobState,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// Per-epoch metric rows in the order they happened (restarts included),
    /// opaque to the store.
    pub history: Vec<serde_json::Value>,
    /// The registered model version (`name:version`) once the job succeeded.
    pub model_version: Option<String>,
    /// Why the job failed or was cancelled, once it did or was.
    #[serde(default)]
    pub error: Option<String>,
    /// Creation time (ms since the Unix epoch).
    pub created_ms: u64,
    /// Last update time (ms since the Unix epoch), set by the store.
    pub updated_ms: u64,
    /// The store revision of the last write of this record, set by the store.
    /// Pass the record back unchanged in this field to update it.
    pub revision: u64,
}

/// Where a blob's bytes are: its chunks, in order, each under its sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobManifest {
    /// Hex sha256 of the whole blob.
    pub sha256: String,
    /// Length of the whole blob in bytes.
    pub size: u64,
    /// Hex sha256 of each chunk, in order; each chunk is at most [`CHUNK_SIZE`].
    pub chunks: Vec<String>,
}

/// A checkpoint without its bytes: what `latest_checkpoint` and
/// `list_checkpoints` return, and what a reader trusts only once it is there
/// (it is written after every chunk).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// The job it belongs to.
    pub job_id: JobId,
    /// Assigned by the store, increasing per job from 1.
    pub id: u64,
    /// The epoch it was taken after (as the writer numbers them).
    pub epoch: u64,
    /// The writer's metadata (optimiser step, schedule position, metrics, ...).
    pub meta: serde_json::Value,
    /// Where the bytes are.
    pub blob: BlobManifest,
    /// When it was written (ms since the Unix epoch).
    pub created_ms: u64,
}

/// A checkpoint with its verified bytes.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Its manifest.
    pub manifest: CheckpointManifest,
    /// The blob, whose sha256 matched the manifest.
    pub blob: bytes::Bytes,
}

/// One registered version of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The model's name.
    pub name: String,
    /// Assigned by the store: 1, 2, ... per name, never reused even after a
    /// version is deleted.
    pub version: u64,
    /// How to build the network the weights load into (architecture, head,
    /// classes, input size, normalisation); opaque to the store.
    pub spec: serde_json::Value,
    /// Where it came from (job, data set, metrics, import path); opaque.
    pub lineage: serde_json::Value,
    /// Where its weights are.
    pub weights: BlobManifest,
    /// When it was registered (ms since the Unix epoch).
    pub created_ms: u64,
}

impl ModelVersion {
    /// `name:version`, the reference that always means this version.
    pub fn reference(&self) -> ModelRef {
        ModelRef::Version(self.name.clone(), self.version)
    }
}

/// A model name with all its versions and aliases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// The name.
    pub name: String,
    /// Its versions, oldest first.
    pub versions: Vec<ModelVersion>,
    /// alias → version.
    pub aliases: BTreeMap<String, u64>,
}

/// How a caller names a model version: `name` (its `latest` alias),
/// `name@alias`, or `name:version`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// `name@alias` (a bare `name` parses as `name@latest`).
    Alias(String, String),
    /// `name:version`.
    Version(String, u64),
}

impl ModelRef {
    /// The model name.
    pub fn name(&self) -> &str {
        match self {
            ModelRef::Alias(name, _) | ModelRef::Version(name, _) => name,
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Alias(name, alias) => write!(f, "{name}@{alias}"),
            ModelRef::Version(name, version) => write!(f, "{name}:{version}"),
        }
    }
}

impl FromStr for ModelRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some((name, alias)) = s.split_once('@') {
            validate_name("model name", name)?;
            validate_name("alias", alias)?;
            Ok(ModelRef::Alias(name.to_owned(), alias.to_owned()))
        } else if let Some((name, version)) = s.split_once(':') {
            validate_name("model name", name)?;
            let version = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::invalid(format!(
                    "model reference {s:?}: version {version:?} is not a positive integer"
                ))
            })?;
            Ok(ModelRef::Version(name.to_owned(), version))
        } else {
            validate_name("model name", s)?;
            Ok(ModelRef::Alias(s.to_owned(), LATEST.to_owned()))
        }
    }
}

/// An etcd-style lease id; records attached to a lease vanish when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease {:x}", self.0)
    }
}

/// A worker that is alive: the record exists exactly while its lease does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker's id (unique in the cluster; chosen by the worker or the
    /// coordinator).
    pub id: String,
    /// The host it runs on, for people.
    pub hostname: String,
    /// Its devices, one per rank it can run (`cuda:0`, `cpu`, ...).
    pub devices: Vec<String>,
    /// The lease that keeps the record alive.
    pub lease: LeaseId,
    /// Anything else the coordinator wants to know (addresses, versions);
    /// opaque to the store.
    pub meta: serde_json::Value,
    /// When it registered (ms since the Unix epoch).
    pub registered_ms: u64,
}

/// A change to the live worker set.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerEvent {
    /// A worker registered or replaced its record.
    Put(WorkerRecord),
    /// A worker's record is gone: removed, or its lease expired or was revoked.
    Removed {
        /// The worker's id.
        id: String,
    },
}

/// Alias changes kept per model name ([`Store::alias_history`]); older
/// ones are dropped as new ones come.
///
/// [`Store::alias_history`]: crate::Store::alias_history
pub const MAX_ALIAS_HISTORY: usize = 1000;

/// One recorded change of an alias by [`Store::set_alias_by`] or
/// [`Store::remove_alias_by`]: created (`from` unset), moved, or removed
/// (`to` unset).
///
/// [`Store::set_alias_by`]: crate::Store::set_alias_by
/// [`Store::remove_alias_by`]: crate::Store::remove_alias_by
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasChange {
    /// Model name.
    pub name: String,
    /// Alias.
    pub alias: String,
    /// The version it pointed at before; `None` when it was created.
    pub from: Option<u64>,
    /// The version it points at after; `None` when it was removed.
    pub to: Option<u64>,
    /// Who changed it (the caller's principal; empty when not told).
    pub by: String,
    /// When (ms since the Unix epoch).
    pub unix_ms: u64,
    /// The store revision of the change: larger for every later change of
    /// the same store.
    #[serde(default)]
    pub revision: u64,
}

/// A change to a model alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasEvent {
    /// `name@alias` now points at `version`.
    Set {
        /// Model name.
        name: String,
        /// Alias.
        alias: String,
        /// The version it points at now.
        version: u64,
    },
    /// `name@alias` no longer exists.
    Removed {
        /// Model name.
        name: String,
        /// Alias.
        alias: String,
    },
}

/// One alias as listed in a watch snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// Model name.
    pub name: String,
    /// Alias.
    pub alias: String,
    /// The version it points at.
    pub version: u64,
}

/// Checks a name: `camshaft-spec`'s one rule ([`camshaft_spec::check_name`]:
/// 1 to 128 ASCII letters, digits, `.`, `_` and `-`, starting with a letter
/// or digit, so it is safe as a key segment and a file name, and `@`/`:`
/// stay unambiguous in a [`ModelRef`]). An `alias` (`kind`) must also not be
/// all digits ([`camshaft_spec::validate_alias`]): `name:3` is version 3.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let checked = match kind {
        "alias" => camshaft_spec::validate_alias(name),
        "model name" => camshaft_spec::validate_name(name),
        _ => camshaft_spec::check_name("name", name),
    };
    checked.map_err(|e| match e {
        camshaft_spec::Error::InvalidName { reason, .. } => {
            Error::invalid(format!("{kind} {}: {reason}", quoted(name)))
        }
        other => Error::invalid(other.to_string()),
    })
}

/// `s` quoted for an error message: its first 64 characters at most, so an
/// error never echoes an unbounded value back.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(64) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn model_refs_parse_and_print() {
        let r: ModelRef = "pets".parse().unwrap();
        assert_eq!(r, ModelRef::Alias("pets".into(), "latest".into()));
        let r: ModelRef = "pets@prod".parse().unwrap();
        assert_eq!(r.to_string(), "pets@prod");
        let r: ModelRef = "pets:3".parse().unwrap();
        assert_eq!(r, ModelRef::Version("pets".into(), 3));
        assert!("pets:0".parse::<ModelRef>().is_err());
        assert!("pets:x".parse::<ModelRef>().is_err());
        assert!("".parse::<ModelRef>().is_err());
        assert!("a/b".parse::<ModelRef>().is_err());
        assert!("pets@".parse::<ModelRef>().is_err());
        // `pets:3` is version 3, so no alias is all digits (as on the wire).
        let err = "pets@3".parse::<ModelRef>().unwrap_err().to_string();
        assert!(err.contains("an alias cannot be all digits"), "{err}");
        assert!(validate_name("alias", "2024").is_err());
        validate_name("alias", "v2024").unwrap();
        validate_name("model name", "2024").unwrap();
        let err = validate_name("worker id", "w 1").unwrap_err().to_string();
        assert!(err.contains("worker id \"w 1\""), "{err}");
    }

    #[test]
    fn job_ids_round_trip() {
        let id: JobId = "j-17".parse().unwrap();
        assert_eq!(id, JobId(17));
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"j-17\"");
        assert!("17".parse::<JobId>().is_err());
    }
}
