//! The error of the hand-written helpers.

use crate::status::ErrorKind;

/// What a helper of this crate refuses, with the offending input in the
/// message (at most its first [`QUOTED_CHARS`](crate::QUOTED_CHARS) characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A model reference that is not `name`, `name@alias` or `name:version`.
    #[error("invalid model reference {}: {reason}", crate::short(reference))]
    InvalidModelRef {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A model name or alias that breaks the naming rule.
    #[error("invalid {what} {}: {reason}", crate::short(value))]
    InvalidName {
        /// `model name` or `alias`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A short enum name (as the CLI and config files spell it) that is not known.
    #[error("unknown {what} {}; expected one of: {expected}", crate::short(value))]
    UnknownName {
        /// What was being named, e.g. `architecture`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// The accepted names, comma-separated.
        expected: String,
    },
    /// An enum field that carries a number no variant has, or UNSPECIFIED where
    /// a value is required.
    #[error("{what} is {value}, which is not a valid value")]
    InvalidEnum {
        /// The field, e.g. `ModelSpec.arch`.
        what: &'static str,
        /// The raw number on the wire.
        value: i32,
    },
    /// A field that must be set is empty, zero or UNSPECIFIED.
    #[error("{what} is not set")]
    Missing {
        /// The field, e.g. `ModelSpec.class_names`.
        what: &'static str,
    },
    /// A field whose value is out of its range.
    #[error("{what}: {reason}")]
    OutOfRange {
        /// The field, e.g. `ModelSpec.input_size`.
        what: &'static str,
        /// What is wrong, with the value.
        reason: String,
    },
    /// A class map whose `values` do not hold `height × width` numbers.
    #[error("class map of class {class_index} is {height}×{width} but holds {len} values")]
    MapShape {
        /// The map's class index.
        class_index: i32,
        /// Its height.
        height: i32,
        /// Its width.
        width: i32,
        /// Number of values it holds.
        len: usize,
    },
    /// A TLS or token setting that cannot be used: a file that cannot be
    /// read, half a key pair, a token an HTTP header cannot carry.
    #[error("{0}")]
    Security(String),
}

impl Error {
    /// The kind of failure, which decides the gRPC status code: every variant
    /// is a problem with the caller's input.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.kind().status(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
