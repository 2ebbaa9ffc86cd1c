//! Failure budgets: after an attempt failed, whether the job goes back to
//! the queue or fails. A pure decision over the job's policy and the
//! failures of its attempts so far (the one that just failed included).
//!
//! Invariants (table and property tests below):
//! - a failure that cannot succeed on retry fails the job at once;
//! - task errors, lost workers and collective timeouts are charged to
//!   `max_failures`, workers leaving to `max_membership_changes`, a
//!   coordinator restart to nothing;
//! - a budget of N allows N restarts: the job fails on the N+1-th failure
//!   charged to it, never before.

use camshaft_proto::v1::{FailureKind, JobSpec};
use camshaft_store::JobRecord;

/// The failure policy of a job and the seed its shards are drawn with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Restarts charged to [`counts_as_failure`] kinds allowed.
    pub max_failures: u32,
    /// Restarts after workers left allowed.
    pub max_membership_changes: u32,
    /// `Assignment.shard_seed`.
    pub shard_seed: u64,
}

/// The policy of `spec`: its failure limits from
/// [`crate::spec::failure_policy`] (the job defaults of `camshaft-spec`,
/// which submit already applied; they cover a stored spec without them),
/// and its seed, which submit always sets (0 for a sweep, which has none).
pub fn policy(spec: &JobSpec) -> Policy {
    let limits = crate::spec::failure_policy(spec);
    Policy {
        max_failures: limits.max_failures,
        max_membership_changes: limits.max_membership_changes,
        shard_seed: spec.seed.unwrap_or(0),
    }
}

/// The failure kinds charged to `max_failures`.
pub fn counts_as_failure(kind: FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::TaskError | FailureKind::WorkerLost | FailureKind::CollectiveTimeout
    )
}

/// Failures charged to each budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    /// Charged to `max_failures`.
    pub failures: u32,
    /// Charged to `max_membership_changes`.
    pub membership_changes: u32,
}

impl Used {
    /// What the failed attempts of `record` used.
    pub fn by(record: &JobRecord) -> Used {
        Used::of(
            record
                .attempts
                .iter()
                .filter_map(|a| a.failure.as_ref())
                .map(crate::jobs::failure_kind),
        )
    }

    /// What the failures of a job's attempts, in any order, used.
    pub fn of(kinds: impl IntoIterator<Item = FailureKind>) -> Used {
        kinds
            .into_iter()
            .fold(Used::default(), |used, kind| match kind {
                k if counts_as_failure(k) => Used {
                    failures: used.failures + 1,
                    ..used
                },
                FailureKind::MembershipChange => Used {
                    membership_changes: used.membership_changes + 1,
                    ..used
                },
                _ => used,
            })
    }
}

/// What happens to a job after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Back to the queue: it restarts from its last checkpoint.
    Requeue,
    /// The job fails; why it is given up.
    GiveUp(String),
}

/// The verdict on a job whose attempts used `used` (the failure just
/// recorded included), the last failure `retryable` or not.
pub fn verdict(policy: &Policy, used: Used, retryable: bool) -> Verdict {
    if !retryable {
        Verdict::GiveUp("it cannot succeed on retry".to_string())
    } else if used.failures > policy.max_failures {
        Verdict::GiveUp(format!("max_failures ({}) is spent", policy.max_failures))
    } else if used.membership_changes > policy.max_membership_changes {
        Verdict::GiveUp(format!(
            "max_membership_changes ({}) is spent",
            policy.max_membership_changes
        ))
    } else {
        Verdict::Requeue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_of_verdicts() {
        let p = Policy {
            max_failures: 2,
            max_membership_changes: 1,
            shard_seed: 0,
        };
        let used = |failures, membership_changes| Used {
            failures,
            membership_changes,
        };
        let cases = [
            (used(1, 0), true, None),
            (used(2, 1), true, None),
            (used(3, 0), true, Some("max_failures (2) is spent")),
            (
                used(0, 2),
                true,
                Some("max_membership_changes (1) is spent"),
            ),
            (used(0, 0), false, Some("it cannot succeed on retry")),
        ];
        for (used, retryable, expected) in cases {
            let expected = match expected {
                Some(why) => Verdict::GiveUp(why.to_string()),
                None => Verdict::Requeue,
            };
            assert_eq!(verdict(&p, used, retryable), expected, "{used:?}");
        }
    }

    #[test]
    fn kinds_are_charged_to_their_budget_and_defaults_apply() {
        let used = Used::of([
            FailureKind::TaskError,
            FailureKind::WorkerLost,
            FailureKind::CollectiveTimeout,
            FailureKind::MembershipChange,
            FailureKind::CoordinatorRestart,
            FailureKind::Unspecified,
        ]);
        assert_eq!(
            used,
            Used {
                failures: 3,
                membership_changes: 1
            }
        );
        assert_eq!(
            policy(&JobSpec::default()),
            Policy {
                max_failures: 3,
                max_membership_changes: 10,
                shard_seed: 0
            }
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn kinds() -> impl Strategy<Value = FailureKind> {
            prop::sample::select(vec![
                FailureKind::TaskError,
                FailureKind::WorkerLost,
                FailureKind::CollectiveTimeout,
                FailureKind::MembershipChange,
                FailureKind::CoordinatorRestart,
            ])
        }

        proptest! {
            /// Failures recorded one by one: the job is requeued until the
            /// first failure that passes a budget, and gives up exactly there.
            #[test]
            fn budgets_run_out_when_they_should(
                max_failures in 0u32..5,
                max_membership_changes in 0u32..5,
                failures in prop::collection::vec(kinds(), 1..20),
            ) {
                let policy = Policy { max_failures, max_membership_changes, shard_seed: 0 };
                for n in 1..=failures.len() {
                    let used = Used::of(failures[..n].iter().copied());
                    let over = used.failures > max_failures
                        || used.membership_changes > max_membership_changes;
                    let v = verdict(&policy, used, true);
                    prop_assert_eq!(v == Verdict::Requeue, !over, "after {:?}", &failures[..n]);
                    if over {
                        break;
                    }
                }
                let restarts_charged = failures
                    .iter()
                    .filter(|k| counts_as_failure(**k))
                    .count() as u32;
                let all = Used::of(failures.iter().copied());
                prop_assert_eq!(all.failures, restarts_charged);
                prop_assert!(all.failures + all.membership_changes <= failures.len() as u32);
                // A failure that cannot succeed on retry always gives up.
                prop_assert!(matches!(verdict(&policy, Used::default(), false), Verdict::GiveUp(_)));
            }
        }
    }
}
