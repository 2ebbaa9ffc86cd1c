//! The explainer's one error type and its mapping to gRPC status codes.

use camshaft_proto::ErrorKind;

use crate::queue::Budget;

/// Everything a request (or starting the server) can fail with. Problems
/// with one image are not errors: they go in that image's `error`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `ExplainRequest.model` is not `name`, `name@alias` or `name:version`.
    #[error("invalid model reference: {0}")]
    BadModelRef(String),
    /// Something else in the request is out of range (too many images, too
    /// many bytes, alpha outside [0, 1], an unknown enum value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// One field of the request is out of range for the model it names
    /// (an unknown layer, CAM away from the last layer): INVALID_ARGUMENT
    /// with a field violation naming `field`.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The request field, e.g. `target_layers`.
        field: &'static str,
        /// What is wrong and what would do.
        reason: String,
    },
    /// The model, alias or version is not registered.
    #[error("{0}")]
    ModelNotFound(String),
    /// CAM was asked of a model whose head is not a pooled linear map.
    #[error(
        "CAM needs a pooled linear head (cam, or linear on a resnet); model {model} has a {head} head: ask for EXPLAIN_METHOD_GRAD_CAM (or leave the method unset)"
    )]
    CamNeedsPooledHead {
        /// `name:version`.
        model: String,
        /// The model's head.
        head: String,
    },
    /// A method or option this server does not implement yet.
    #[error("not implemented: {0}")]
    Unimplemented(String),
    /// Admitting the request would pass one of the admission budgets
    /// (images queued, decoded bytes in flight, compute units queued).
    /// RESOURCE_EXHAUSTED with `retry-after-ms`.
    #[error(
        "the explainer is overloaded: {in_use} {} (limit {limit}, {budget}); this request needs {asked} more; retry in {} ms",
        budget.what(),
        retry_after.as_millis()
    )]
    Overloaded {
        /// The budget that is full.
        budget: Budget,
        /// What was charged to it when the request came.
        in_use: u64,
        /// What the request asked of it.
        asked: u64,
        /// Its configured size.
        limit: u64,
        /// When a retry has a fair chance.
        retry_after: std::time::Duration,
    },
    /// The request's deadline (its `grpc-timeout`) passed before it was
    /// answered.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The store cannot be reached.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// A registered version cannot be loaded: its spec is refused (over
    /// `max_model_input_size` or `max_model_classes`), its weights do not
    /// fit its spec, or loading failed. FAILED_PRECONDITION: the version
    /// stays broken; the failure is remembered for
    /// `failed_load_retry_secs`.
    #[error("model {model} cannot be loaded: {reason}")]
    ModelLoad {
        /// `name:version`.
        model: String,
        /// Why.
        reason: String,
    },
    /// A bug: libtorch failed on a batch, a blocking task panicked.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server could not start or failed while serving.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// `Result` with the explainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kind of failure, which fixes the status code.
    pub fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            Error::Config(_)
            | Error::BadModelRef(_)
            | Error::InvalidRequest(_)
            | Error::InvalidField { .. } => ErrorKind::InvalidArgument,
            Error::ModelNotFound(_) => ErrorKind::NotFound,
            Error::CamNeedsPooledHead { .. } | Error::ModelLoad { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::StoreUnavailable(_) => ErrorKind::Unavailable,
            Error::Overloaded { .. } => ErrorKind::ResourceExhausted,
            Error::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            Error::Internal(_) | Error::Transport(_) => ErrorKind::Internal,
            Error::Unimplemented(_) => return None,
        })
    }

    pub(crate) fn from_store(err: camshaft_store::Error) -> Self {
        use camshaft_store::Error as S;
        match err {
            S::NotFound { .. } => Error::ModelNotFound(err.to_string()),
            S::InvalidArgument { reason } => Error::BadModelRef(reason),
            S::Unavailable { reason } => Error::StoreUnavailable(reason),
            other => Error::Internal(format!("store: {other}")),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        if let Error::Overloaded { retry_after, .. } = &err {
            return ErrorKind::ResourceExhausted.status_with_retry(err.to_string(), *retry_after);
        }
        if let Error::InvalidField { field, .. } = &err {
            return camshaft_proto::invalid_field(field, err.to_string());
        }
        match err.kind() {
            Some(kind) => kind.status(err.to_string()),
            None => tonic::Status::unimplemented(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_error_has_one_stable_code() {
        let code = |e: Error| tonic::Status::from(e).code();
        assert_eq!(code(Error::BadModelRef("x".into())), Code::InvalidArgument);
        assert_eq!(code(Error::ModelNotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(Error::CamNeedsPooledHead {
                model: "m:1".into(),
                head: "fastai".into()
            }),
            Code::FailedPrecondition
        );
        assert_eq!(code(Error::StoreUnavailable("x".into())), Code::Unavailable);
        assert_eq!(code(Error::Unimplemented("x".into())), Code::Unimplemented);
        assert_eq!(
            code(Error::InvalidRequest("too many".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(Error::DeadlineExceeded("late".into())),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code(Error::ModelLoad {
                model: "m:1".into(),
                reason: "fc.weight: file [3, 512], spec [2, 512]".into()
            }),
            Code::FailedPrecondition
        );
        let status = tonic::Status::from(Error::Overloaded {
            budget: Budget::Images,
            in_use: 8,
            asked: 1,
            limit: 8,
            retry_after: std::time::Duration::from_millis(250),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("8 images queued (limit 8, max_queued_images)"),
            "{}",
            status.message()
        );
        assert_eq!(
            camshaft_proto::retry_after(&status),
            Some(std::time::Duration::from_millis(250))
        );
    }
}
