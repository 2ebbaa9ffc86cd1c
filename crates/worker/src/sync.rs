//! The learner's gradient sync over a group's communicator, and how a failed
//! collective is reported.
//!
//! [`GroupSync`] adapts `camshaft_collective`'s [`BucketedCollective`] to
//! `camshaft_vision`'s [`GradientSync`]. A collective error crosses the
//! learner typed (boxed in [`camshaft_vision::Error::Collective`]), so the
//! rank reports its kind from the error itself ([`collective_failure`]):
//! the group broke (a peer died, a timeout, an abort) is
//! `collective_timeout` and retryable; ranks that disagree or a tensor the
//! collective cannot take is a task error a retry cannot fix.

use camshaft_collective::{BucketedCollective, Communicator};
use camshaft_proto::v1;
use camshaft_vision::learner::GradientSync;
use tch::Tensor;

use crate::task::TaskError;

/// The learner's [`GradientSync`] over `C`: gradients averaged in buckets,
/// metric sums in f64, weights broadcast from rank 0 (see
/// [`BucketedCollective`]).
#[derive(Debug)]
pub struct GroupSync<C>(BucketedCollective<C>);

impl<C: Communicator> GroupSync<C> {
    /// Wraps `comm` with buckets of `bucket_bytes` (at least one tensor each).
    pub fn new(comm: C, bucket_bytes: usize) -> Self {
        GroupSync(BucketedCollective::new(comm).with_bucket_bytes(bucket_bytes))
    }
}

/// The learner's error for a failed collective: the collective's own,
/// boxed, for [`collective_failure`] to read back.
fn to_vision(e: camshaft_collective::Error) -> camshaft_vision::Error {
    camshaft_vision::Error::Collective(Box::new(e))
}

impl<C: Communicator> GradientSync for GroupSync<C> {
    fn average(&mut self, tensors: &[Tensor]) -> camshaft_vision::Result<()> {
        self.0.average(tensors).map_err(to_vision)
    }

    fn sum(&mut self, values: &mut [f64]) -> camshaft_vision::Result<()> {
        self.0.sum(values).map_err(to_vision)
    }

    fn broadcast(&mut self, tensors: &[Tensor]) -> camshaft_vision::Result<()> {
        self.0.broadcast(tensors).map_err(to_vision)
    }
}

impl From<camshaft_collective::Error> for TaskError {
    fn from(e: camshaft_collective::Error) -> Self {
        use camshaft_collective::Error as C;
        match e {
            // The group broke: a restart with the ranks that are alive can help.
            C::Timeout { .. }
            | C::Aborted
            | C::PeerLost { .. }
            | C::Setup(_)
            | C::Broken(_)
            | C::Nccl { .. } => TaskError::collective(e.to_string()),
            // The same job would make the same calls again.
            C::Config(_) | C::Tensor(_) | C::Mismatch(_) | C::LibraryMissing { .. } => {
                TaskError::fatal(e.to_string())
            }
            // As any libtorch or CUDA failure of a training rank.
            C::Torch(_) | C::Cuda(_) => TaskError {
                reason: e.to_string(),
                retryable: true,
                epoch: None,
                kind: v1::FailureKind::TaskError,
            },
        }
    }
}

/// The report of a collective that failed inside the learner: its error's
/// kind when it is `camshaft_collective`'s (what [`GroupSync`] passes on),
/// else a collective failure with its message.
pub(crate) fn collective_failure(source: Box<dyn std::error::Error + Send + Sync>) -> TaskError {
    match source.downcast::<camshaft_collective::Error>() {
        Ok(e) => TaskError::from(*e),
        Err(other) => TaskError::collective(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reported(e: camshaft_collective::Error) -> TaskError {
        TaskError::from(to_vision(e))
    }

    #[test]
    fn a_broken_group_is_a_retryable_collective_failure() {
        let timeout = reported(camshaft_collective::Error::Timeout {
            op: "all-reduce",
            waiting_for: "ring peer 1 (127.0.0.1:4000)".into(),
            timeout: Duration::from_secs(3),
        });
        assert_eq!(timeout.kind, v1::FailureKind::CollectiveTimeout);
        assert!(timeout.retryable);
        // The reason is the collective's own message, not the learner's.
        assert_eq!(
            timeout.reason,
            "all-reduce timed out after 3s waiting for ring peer 1 (127.0.0.1:4000)"
        );
        let lost = reported(camshaft_collective::Error::PeerLost {
            rank: 1,
            addr: "127.0.0.1:4000".into(),
            op: "all-reduce",
            what: "closed the connection".into(),
        });
        assert_eq!(lost.kind, v1::FailureKind::CollectiveTimeout);
        assert_eq!(
            reported(camshaft_collective::Error::Aborted).kind,
            v1::FailureKind::CollectiveTimeout
        );
    }

    #[test]
    fn disagreeing_ranks_are_a_task_error_a_retry_cannot_fix() {
        let mismatch = reported(camshaft_collective::Error::Mismatch(
            "ring peer 0 called broadcast while rank 1 called all-reduce".into(),
        ));
        assert_eq!(mismatch.kind, v1::FailureKind::TaskError);
        assert!(!mismatch.retryable);
        let tensor = reported(camshaft_collective::Error::Tensor("int64".into()));
        assert_eq!(tensor.kind, v1::FailureKind::TaskError);
        assert!(!tensor.retryable);
    }

    #[test]
    fn another_sync_error_is_still_a_collective_failure() {
        let other = TaskError::from(camshaft_vision::Error::Collective("socket gone".into()));
        assert_eq!(other.kind, v1::FailureKind::CollectiveTimeout);
        assert_eq!(other.reason, "socket gone");
    }
}
