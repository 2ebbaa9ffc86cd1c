//! The worker's one error type.

/// What can stop a worker (a task's own failure is reported to the
/// coordinator as `TaskFailed`, not returned).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The devices asked for are not there.
    #[error("device: {0}")]
    Device(String),
    /// The coordinator refused the worker (a version mismatch, a bad id).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
