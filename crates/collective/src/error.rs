//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in `camshaft-collective`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value or argument is out of range or inconsistent.
    #[error("invalid collective configuration: {0}")]
    Config(String),
    /// A tensor the collective cannot work on (device, dtype, layout).
    #[error("unsupported tensor: {0}")]
    Tensor(String),
    /// A call made no progress for the configured timeout.
    #[error("{op} timed out after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// The collective ("all-reduce", "broadcast", "connect", ...).
        op: &'static str,
        /// What it was waiting for ("ring peer 1 (127.0.0.1:4000)").
        waiting_for: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The communicator was aborted through its [`crate::Aborter`].
    #[error("collective was aborted")]
    Aborted,
    /// A ring neighbour closed, reset or broke its connection.
    #[error("ring peer {rank} ({addr}) {what} during {op}")]
    PeerLost {
        /// The neighbour's rank.
        rank: usize,
        /// The neighbour's address.
        addr: String,
        /// The collective.
        op: &'static str,
        /// What happened ("closed the connection", "reset the connection: ...").
        what: String,
    },
    /// Setting up the ring failed (bind, connect, handshake).
    #[error("ring set-up: {0}")]
    Setup(String),
    /// The ranks do not agree on the call (op, dtype, element count, root).
    #[error("mismatched collective: {0}")]
    Mismatch(String),
    /// An earlier failure left the communicator unusable.
    #[error("communicator is unusable after an earlier failure: {0}")]
    Broken(String),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The NCCL (or CUDA runtime) library could not be loaded.
    #[error("{library} could not be loaded (tried {tried})")]
    LibraryMissing {
        /// "libnccl" or "libcudart".
        library: &'static str,
        /// Every path tried, with the loader's reason.
        tried: String,
    },
    /// An NCCL call returned an error.
    #[error("nccl {call} failed: {message} (ncclResult_t {code})")]
    Nccl {
        /// The NCCL function.
        call: &'static str,
        /// The raw `ncclResult_t`.
        code: i32,
        /// `ncclGetErrorString` of it.
        message: String,
    },
    /// A CUDA call or requirement failed (no device, bad device index).
    #[error("cuda: {0}")]
    Cuda(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
