//! Short names of the wire-only enums (`magma`, `grad_cam`, `running`, ...),
//! as the CLI, config files and logs spell them, and checked reads of enum
//! fields. The enums of the vocabulary (`Arch`, `Head`, `Precision`, ...)
//! take theirs from `camshaft-spec`, through [`crate::vocab`].
//!
//! prost stores an enum field as a raw `i32` and its getter silently maps an
//! unknown number to the UNSPECIFIED variant; [`known`] and [`required`] refuse
//! instead, for the validation of incoming requests.

use crate::v1::{
    Colormap, ExplainMethod, FailureKind, FaithfulnessBaseline, FaithfulnessMetric, ImageErrorKind,
    JobState, ServerRole, WeightsFormat, WorkerState,
};
use crate::{Error, Result};

macro_rules! short_names {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal $(| $alias:literal)*),+ $(,)?]) => {
        impl $ty {
            #[doc = concat!("The short names of every ", $what, " besides UNSPECIFIED, in declaration order.")]
            pub const SHORT_NAMES: &'static [&'static str] = &[$($name),+];

            #[doc = concat!("The short name of this ", $what, " (`unspecified` for the zero value).")]
            pub fn short_name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                    $ty::Unspecified => "unspecified",
                }
            }

            #[doc = concat!("The ", $what, " with this short name (ASCII case ignored; a few aliases accepted).")]
            pub fn from_short_name(name: &str) -> Result<Self> {
                let lower = name.trim().to_ascii_lowercase();
                match lower.as_str() {
                    $($name $(| $alias)* => Ok($ty::$variant),)+
                    _ => Err(Error::UnknownName {
                        what: $what,
                        value: name.to_string(),
                        expected: Self::SHORT_NAMES.join(", "),
                    }),
                }
            }
        }
    };
}

short_names!(JobState, "job state", [
    Pending => "pending",
    Running => "running",
    Restarting => "restarting",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
]);
short_names!(FailureKind, "failure kind", [
    TaskError => "task_error",
    WorkerLost => "worker_lost",
    CollectiveTimeout => "collective_timeout",
    MembershipChange => "membership_change",
    CoordinatorRestart => "coordinator_restart",
]);
short_names!(WorkerState, "worker state", [Idle => "idle", Busy => "busy", Draining => "draining", Lost => "lost"]);
short_names!(ExplainMethod, "method", [
    Cam => "cam",
    GradCam => "grad_cam" | "gradcam" | "grad-cam",
    GradCamPlusPlus => "grad_cam_plus_plus" | "gradcam++" | "grad-cam++" | "gradcampp",
    XgradCam => "xgrad_cam" | "xgradcam" | "xgrad-cam",
    LayerCam => "layer_cam" | "layercam" | "layer-cam",
    HiresCam => "hires_cam" | "hirescam" | "hires-cam",
    ScoreCam => "score_cam" | "scorecam" | "score-cam",
]);
short_names!(Colormap, "colormap", [Magma => "magma", Viridis => "viridis", Inferno => "inferno", Jet => "jet"]);
short_names!(FaithfulnessMetric, "faithfulness metric", [
    DeletionAuc => "deletion_auc" | "deletion",
    AverageDrop => "average_drop" | "drop",
    Road => "road",
]);
short_names!(FaithfulnessBaseline, "faithfulness baseline", [Mean => "mean", Black => "black", Blur => "blur"]);
short_names!(WeightsFormat, "weights format", [Safetensors => "safetensors", Pth => "pth" | "pt"]);
short_names!(ServerRole, "server role", [Coordinator => "coordinator", Worker => "worker", Explainer => "explainer"]);
short_names!(ImageErrorKind, "image error kind", [
    Undecodable => "undecodable",
    Empty => "empty",
    TooLarge => "too_large",
    TargetOutOfRange => "target_out_of_range",
    Internal => "internal",
]);

/// Reads a raw enum field, refusing numbers no variant has (UNSPECIFIED passes).
/// `what` names the field in the error, e.g. `"JobSpec.arch"`.
pub fn known<E: TryFrom<i32>>(what: &'static str, raw: i32) -> Result<E> {
    E::try_from(raw).map_err(|_| Error::InvalidEnum { what, value: raw })
}

/// Reads a raw enum field that must be set: like [`known`], and UNSPECIFIED
/// (0) is refused too.
pub fn required<E: TryFrom<i32>>(what: &'static str, raw: i32) -> Result<E> {
    if raw == 0 {
        return Err(Error::Missing { what });
    }
    known(what, raw)
}

impl JobState {
    /// SUCCEEDED, FAILED or CANCELLED: nothing will happen to the job any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Arch, DatasetKind, Head};

    #[test]
    fn short_names_round_trip() {
        for name in Arch::SHORT_NAMES {
            let arch = Arch::from_short_name(name).expect("listed names parse");
            assert_eq!(arch.short_name(), *name);
        }
        for name in DatasetKind::SHORT_NAMES {
            assert_eq!(
                DatasetKind::from_short_name(name).map(DatasetKind::short_name),
                Ok(*name)
            );
        }
        for name in ExplainMethod::SHORT_NAMES {
            assert_eq!(
                ExplainMethod::from_short_name(name).map(ExplainMethod::short_name),
                Ok(*name)
            );
        }
        assert_eq!(
            ExplainMethod::from_short_name("GradCAM++"),
            Ok(ExplainMethod::GradCamPlusPlus)
        );
        assert_eq!(
            ExplainMethod::from_short_name("HiResCAM"),
            Ok(ExplainMethod::HiresCam)
        );
        assert_eq!(Colormap::Unspecified.short_name(), "unspecified");
    }

    #[test]
    fn unknown_short_name_lists_the_choices() {
        let err = Head::from_short_name("mlp").expect_err("mlp is no head");
        assert_eq!(
            err.to_string(),
            "unknown head \"mlp\"; expected one of: linear, fastai, cam"
        );
        assert!(Arch::from_short_name("unspecified").is_err());
    }

    #[test]
    fn raw_enum_fields_are_checked() {
        assert_eq!(known::<Arch>("JobSpec.arch", 2), Ok(Arch::Resnet18));
        assert_eq!(known::<Arch>("JobSpec.arch", 0), Ok(Arch::Unspecified));
        assert!(known::<Arch>("JobSpec.arch", 99).is_err());
        assert_eq!(
            required::<Arch>("JobSpec.arch", 0)
                .expect_err("0 is unset")
                .to_string(),
            "JobSpec.arch is not set"
        );
    }

    #[test]
    fn terminal_states() {
        assert!(JobState::Cancelled.is_terminal());
        assert!(!JobState::Restarting.is_terminal());
    }
}
