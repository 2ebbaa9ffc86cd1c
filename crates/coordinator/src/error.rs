//! The coordinator's one error type and its mapping to gRPC status codes.

use camshaft_proto::ErrorKind;

/// Everything that can go wrong in the coordinator, one variant per kind of
/// failure; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The request is wrong and stays wrong (a bad job spec, a bad name).
    #[error("{0}")]
    InvalidArgument(String),
    /// One field of the request is wrong: INVALID_ARGUMENT with a
    /// `google.rpc.BadRequest` field violation naming it.
    #[error("{reason}")]
    InvalidField {
        /// The field's path (`spec.lr`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such job, model, alias or worker.
    #[error("{0}")]
    NotFound(String),
    /// Valid, but not in the current state (cancelling a finished job).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (a worker message about a job it was
    /// not assigned, a worker id of another principal).
    #[error("{0}")]
    PermissionDenied(String),
    /// A quota is full (active jobs of a principal); retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The store cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt stored data.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server could not be started or stopped.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status code this error is answered with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::InvalidArgument(_) | Error::InvalidField { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) | Error::Transport(_) => ErrorKind::Internal,
        }
    }
}

impl From<camshaft_store::Error> for Error {
    fn from(err: camshaft_store::Error) -> Self {
        use camshaft_store::Error as S;
        match err {
            S::NotFound { .. } => Error::NotFound(err.to_string()),
            S::Conflict { .. } => Error::FailedPrecondition(err.to_string()),
            S::InvalidArgument { reason } => Error::InvalidArgument(reason),
            S::Unavailable { reason } => Error::Unavailable(reason),
            other => Error::Internal(format!("store: {other}")),
        }
    }
}

impl From<camshaft_proto::Error> for Error {
    fn from(err: camshaft_proto::Error) -> Self {
        match err {
            camshaft_proto::Error::Security(reason) => Error::Config(reason),
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidField { field, reason } => camshaft_proto::invalid_field(&field, reason),
            err => err.kind().status(err.to_string()),
        }
    }
}
