//! The one error type of the store.

use std::path::PathBuf;

/// Everything a [`Store`](crate::Store) operation can fail with.
///
/// The variants are the small set of kinds a service maps to a gRPC code once
/// (`NotFound` → NOT_FOUND, `Conflict` → ABORTED or FAILED_PRECONDITION,
/// `Corrupt` → DATA_LOSS, `Unavailable` → UNAVAILABLE, `InvalidArgument` →
/// INVALID_ARGUMENT, the rest → INTERNAL). Messages are lowercase and name the
/// record at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record does not exist (or no longer does: an expired lease, a pruned
    /// checkpoint, a deleted model version).
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. "job j-17" or "model pets@prod".
        what: String,
    },
    /// A compare-and-set lost: the record changed since the caller read it, or
    /// the operation would break an invariant another record relies on.
    #[error("conflict: {what}")]
    Conflict {
        /// What conflicted, with the expected and found revisions where known.
        what: String,
    },
    /// Stored data failed a check (sha256 of a chunk or blob, a log record's
    /// checksum, a record that does not decode). Never silently ignored.
    #[error("corrupt data: {what}")]
    Corrupt {
        /// The job, checkpoint, chunk or file that failed and how.
        what: String,
    },
    /// The backend cannot be reached or is not serving (etcd down, a panicked
    /// store task); the caller may retry with backoff.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The caller passed something the store refuses (a bad model name, a zero
    /// lease TTL, a malformed model reference).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong with it.
        reason: String,
    },
    /// The embedded store's data dir is held by another process (or by another
    /// `EmbeddedStore` in this one).
    #[error(
        "data dir {path} is in use by another store (lock file held{}); share one store per data dir",
        holder.map(|pid| format!(" by pid {pid}")).unwrap_or_default()
    )]
    DataDirLocked {
        /// The data dir.
        path: PathBuf,
        /// The process id written into the lock file by its holder, when readable.
        holder: Option<u32>,
    },
    /// A file-system operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    pub(crate) fn conflict(what: impl Into<String>) -> Self {
        Error::Conflict { what: what.into() }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
