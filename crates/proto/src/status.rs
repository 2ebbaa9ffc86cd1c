//! One gRPC status code per kind of failure, shared by every service.
//!
//! Each service library has its own error enum; each variant names an
//! [`ErrorKind`], and `From<ServiceError> for tonic::Status` goes through
//! [`ErrorKind::status`]. That keeps the codes stable across services, which
//! is what clients (and `ctl`'s exit codes) depend on.

use std::time::Duration;

use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

/// Metadata key of a RESOURCE_EXHAUSTED or UNAVAILABLE answer that says how
/// long to wait before retrying, in whole milliseconds (ASCII decimal).
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// The name google.rpc.Code gives a status code, e.g. `NOT_FOUND`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// gRPC's own retry hint (A6 retry design): the same milliseconds as
/// [`RETRY_AFTER_METADATA`].
pub const RETRY_PUSHBACK_METADATA: &str = "grpc-retry-pushback-ms";

/// INVALID_ARGUMENT for one field of the request, with a
/// `google.rpc.BadRequest` detail naming it (`field` as a path of proto
/// field names, e.g. `spec.dataset.valid_pct`), so clients can show the
/// message beside the field it concerns.
pub fn invalid_field(field: &str, description: impl Into<String>) -> tonic::Status {
    let description = description.into();
    tonic::Status::with_error_details(
        Code::InvalidArgument,
        description.clone(),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// The field violations of an INVALID_ARGUMENT status, as (field,
/// description) pairs; empty when it names none.
pub fn field_violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// The kinds of failure a Camshaft service reports, each with one code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong and will stay wrong: a bad job spec, a malformed
    /// model reference, an option out of range. `INVALID_ARGUMENT`.
    InvalidArgument,
    /// The job, model, version, alias or worker does not exist. `NOT_FOUND`.
    NotFound,
    /// The thing to create exists already. `ALREADY_EXISTS`.
    AlreadyExists,
    /// Valid, but not in the current state: cancelling a finished job,
    /// deleting an aliased version, CAM of a head that cannot have one.
    /// `FAILED_PRECONDITION`.
    FailedPrecondition,
    /// A queue, quota or budget is full; retry later (see
    /// [`RETRY_AFTER_METADATA`]). `RESOURCE_EXHAUSTED`.
    ResourceExhausted,
    /// A dependency (the store, a model still loading, a draining server) is
    /// not available now; retry with backoff. `UNAVAILABLE`.
    Unavailable,
    /// The caller gave up or the operation was cancelled. `CANCELLED`.
    Cancelled,
    /// The operation ran past its deadline on the server. `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// A bug or corrupt stored data (e.g. a checkpoint failing its sha256).
    /// `INTERNAL`.
    Internal,
    /// No (valid) credential where one is needed. `UNAUTHENTICATED`.
    Unauthenticated,
    /// The caller's role or assignment does not allow this: a viewer
    /// submitting, a worker message about a job it was not given.
    /// `PERMISSION_DENIED`.
    PermissionDenied,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Cancelled,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Internal,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
    ];

    /// The status code of this kind.
    pub fn code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Cancelled => Code::Cancelled,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::Internal => Code::Internal,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
        }
    }

    /// The kind a client should assume for a received code. Codes no Camshaft
    /// service sends deliberately map to the nearest kind: `OUT_OF_RANGE`
    /// (tonic's answer to an oversized message) to `InvalidArgument`, `ABORTED`
    /// to `Unavailable` (retryable), everything else to `Internal`.
    pub fn from_code(code: Code) -> ErrorKind {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Unavailable | Code::Aborted => ErrorKind::Unavailable,
            Code::Cancelled => ErrorKind::Cancelled,
            Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::ResourceExhausted | ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
        )
    }

    /// A status of this kind with `message`.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.code(), message)
    }

    /// A status of this kind whose client should retry after `retry_after`,
    /// said three ways: a `google.rpc.RetryInfo` detail (what tonic-types,
    /// grpcio-status and the HTTP side read), `grpc-retry-pushback-ms`
    /// (gRPC's retry policy reads it) and [`RETRY_AFTER_METADATA`] (what
    /// earlier clients read).
    pub fn status_with_retry(
        self,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> tonic::Status {
        let millis = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        let mut metadata = MetadataMap::new();
        metadata.insert(RETRY_AFTER_METADATA, MetadataValue::from(millis));
        metadata.insert(RETRY_PUSHBACK_METADATA, MetadataValue::from(millis));
        tonic::Status::with_error_details_and_metadata(
            self.code(),
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
            metadata,
        )
    }
}

/// The retry hint of a status, if the server sent a valid one.
pub fn retry_after(status: &tonic::Status) -> Option<Duration> {
    if let Some(delay) = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
    {
        return Some(delay);
    }
    let value = status.metadata().get(RETRY_AFTER_METADATA)?;
    let millis: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_violation_survives_the_status() {
        let status = invalid_field("spec.lr", "lr must be in (0, 10], not 0");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "lr must be in (0, 10], not 0");
        assert_eq!(
            field_violations(&status),
            vec![(
                "spec.lr".to_string(),
                "lr must be in (0, 10], not 0".to_string()
            )]
        );
        assert!(field_violations(&ErrorKind::NotFound.status("no")).is_empty());
    }

    #[test]
    fn every_kind_round_trips_through_its_code() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
        }
    }

    #[test]
    fn issue_codes_are_stable() {
        assert_eq!(ErrorKind::InvalidArgument.code(), Code::InvalidArgument);
        assert_eq!(ErrorKind::NotFound.code(), Code::NotFound);
        assert_eq!(
            ErrorKind::FailedPrecondition.code(),
            Code::FailedPrecondition
        );
        assert_eq!(ErrorKind::ResourceExhausted.code(), Code::ResourceExhausted);
        assert_eq!(ErrorKind::Unavailable.code(), Code::Unavailable);
        assert_eq!(
            ErrorKind::from_code(Code::OutOfRange),
            ErrorKind::InvalidArgument
        );
        assert_eq!(ErrorKind::from_code(Code::Unknown), ErrorKind::Internal);
    }

    #[test]
    fn retry_hint_survives_the_status() {
        let status = ErrorKind::ResourceExhausted.status_with_retry(
            "explain queue full (256 images)",
            Duration::from_millis(250),
        );
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(retry_after(&status), Some(Duration::from_millis(250)));
        assert_eq!(
            status
                .metadata()
                .get(RETRY_PUSHBACK_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("250")
        );
        let plain = tonic::Status::new(Code::ResourceExhausted, "old server");
        let mut plain = plain;
        plain
            .metadata_mut()
            .insert(RETRY_AFTER_METADATA, MetadataValue::from(40u64));
        assert_eq!(retry_after(&plain), Some(Duration::from_millis(40)));
        assert_eq!(retry_after(&ErrorKind::NotFound.status("no")), None);
        assert!(ErrorKind::ResourceExhausted.is_retryable());
        assert!(!ErrorKind::InvalidArgument.is_retryable());
    }
}
