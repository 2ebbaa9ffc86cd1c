//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `camshaft-vision`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch refused an operation (shape mismatch, out of memory, ...).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A libtorch function reached through `camshaft-aten` failed.
    #[error(transparent)]
    Aten(#[from] camshaft_aten::Error),
    /// Reading or decoding a data set failed.
    #[error(transparent)]
    Data(#[from] camshaft_data::Error),
    /// Drawing a map failed.
    #[error(transparent)]
    Render(#[from] camshaft_render::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A weight file does not fit the model (names or shapes).
    #[error("weights {}: {reason}", path.display())]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What does not fit, listing the offending keys.
        reason: String,
    },
    /// A checkpoint is missing a part or does not match the model.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request (images, target classes) does not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// Training diverged: the group's averaged gradients became NaN or
    /// infinite (with float16: for too many steps in a row).
    #[error(
        "training diverged at epoch {epoch}, step {step}: the averaged gradients are not finite (this rank's loss is {loss})"
    )]
    Diverged {
        /// Epoch (0-based) of the bad step.
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// This rank's loss at that step.
        loss: f64,
    },
    /// Training was stopped from outside (cancelled job, shutdown).
    #[error("training cancelled")]
    Cancelled,
    /// A collective of a data-parallel group failed (a peer died, a
    /// timeout); the [`GradientSync`](crate::learner::GradientSync)'s own
    /// error, kept typed so its caller can tell the kinds apart.
    #[error("collective: {0}")]
    Collective(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
