//! etcd and gRPC failures as the store's [`Error`], once.

use etcd_client::Error as EtcdError;
use tonic::Code;

use crate::error::Error;

/// Part of the reason of every out-of-space error, so the store can tell one
/// from other unavailability (see [`is_out_of_space`]).
const OUT_OF_SPACE: &str = "is out of space";

/// etcd's answer when its backend database hit the quota (the NOSPACE alarm
/// is then raised and every write is refused until it is disarmed).
const NOSPACE_MESSAGE: &str = "database space exceeded";

/// Maps a failed etcd call (`doing`: "create a job", ...) against
/// `endpoints` to the store's error kinds:
///
/// - cannot connect, no leader, timeouts, cancelled streams → `Unavailable`
///   naming the endpoints;
/// - NOSPACE → `Unavailable` that says what to do about it;
/// - a request over etcd's size limit or a malformed one → `InvalidArgument`;
/// - an unknown or expired lease → `NotFound`;
/// - refused credentials → `Unavailable` saying so (a configuration problem
///   the caller cannot fix by retrying, but the services map it like any
///   unreachable store).
pub(crate) fn from_etcd(endpoints: &str, doing: &str, err: EtcdError) -> Error {
    let unavailable = |detail: String| Error::Unavailable {
        reason: format!("etcd at {endpoints} ({doing}): {detail}"),
    };
    match err {
        EtcdError::GRpcStatus(status) => {
            let message = status.message();
            if message.contains(NOSPACE_MESSAGE) {
                return out_of_space(endpoints, doing);
            }
            if message.contains("requested lease not found") {
                return Error::not_found("lease (expired or revoked)");
            }
            match status.code() {
                Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition
                    if message.contains("request is too large")
                        || message.contains("too many operations") =>
                {
                    Error::invalid(format!(
                        "etcd at {endpoints} refused to {doing}: {message} (etcd takes at most 1.5 MiB and 128 operations per request)"
                    ))
                }
                Code::InvalidArgument => {
                    Error::invalid(format!("etcd at {endpoints} refused to {doing}: {message}"))
                }
                Code::PermissionDenied | Code::Unauthenticated => unavailable(format!(
                    "etcd refused the credentials ({message}); check username and password"
                )),
                code => unavailable(format!("{code:?}: {message}")),
            }
        }
        EtcdError::LeaseKeepAliveError(message) if message.contains("not found") => {
            Error::not_found("lease (expired or revoked)")
        }
        EtcdError::TransportError(e) => unavailable(format!("cannot connect: {e}")),
        other => unavailable(other.to_string()),
    }
}

/// The error of a write etcd refused for lack of space.
pub(crate) fn out_of_space(endpoints: &str, doing: &str) -> Error {
    Error::Unavailable {
        reason: format!(
            "etcd at {endpoints} {OUT_OF_SPACE} (quota reached, NOSPACE alarm raised) and refused to {doing}; prune old checkpoints, then compact and defragment etcd and disarm the alarm (etcdctl alarm disarm)"
        ),
    }
}

/// Whether `err` says etcd is out of space.
pub(crate) fn is_out_of_space(err: &Error) -> bool {
    matches!(err, Error::Unavailable { reason } if reason.contains(OUT_OF_SPACE))
}

/// Whether etcd refused a read at a revision it has compacted away.
pub(crate) fn is_compacted(err: &EtcdError) -> bool {
    matches!(err, EtcdError::GRpcStatus(status) if status.message().contains("compacted"))
}

/// The error of a call that took longer than the request timeout.
pub(crate) fn timed_out(endpoints: &str, doing: &str, timeout_ms: u64) -> Error {
    Error::Unavailable {
        reason: format!("etcd at {endpoints} did not answer within {timeout_ms} ms ({doing})"),
    }
}
