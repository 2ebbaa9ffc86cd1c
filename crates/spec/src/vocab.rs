//! The vocabulary's enums and their one name table: the short names
//! (`resnet18`, `cam`, `imagenet`, `squish`, `bf16`, `pets_breeds`, ...)
//! that `ctl`, job spec files, config files, logs and stored specs use.
//!
//! [`name`](Arch::name) gives the canonical name, which serde writes and
//! reads (stored specs spell names exactly); [`from_name`](Arch::from_name)
//! (and [`FromStr`]) reads what a person typed: ASCII case and surrounding
//! blanks ignored, a few aliases accepted (`gpu` for `cuda`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

macro_rules! vocabulary {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal $(| $alias:literal)*),+ $(,)?]) => {
        impl $ty {
            #[doc = concat!("Every ", $what, ", in declaration order.")]
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            #[doc = concat!("The name of every ", $what, ", in declaration order.")]
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            #[doc = concat!("What a `", stringify!($ty), "` is called in errors: `", $what, "`.")]
            pub const WHAT: &'static str = $what;

            #[doc = concat!("The name of this ", $what, ", as serde, `ctl` and logs spell it.")]
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            #[doc = concat!("The ", $what, " a person named: ASCII case and blanks ignored, a few aliases accepted.")]
            pub fn from_name(name: &str) -> Result<Self> {
                let lower = name.trim().to_ascii_lowercase();
                match lower.as_str() {
                    $($name $(| $alias)* => Ok($ty::$variant),)+
                    _ => Err(Error::UnknownName {
                        what: $what,
                        value: name.to_string(),
                        expected: Self::NAMES.join(", "),
                    }),
                }
            }

            #[doc = concat!("The ", $what, " spelled exactly as stored (no aliases, lowercase).")]
            pub fn from_stored_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                Self::from_name(s)
            }
        }
    };
}

/// The network body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The lecture's one-convolution CNN (`cnn`).
    Cnn,
    /// torchvision's ResNet18 (`resnet18`).
    Resnet18,
    /// torchvision's ResNet34 (`resnet34`).
    Resnet34,
}
vocabulary!(Arch, "architecture", [Cnn => "cnn", Resnet18 => "resnet18", Resnet34 => "resnet34"]);

impl Arch {
    /// The smallest input side whose last feature map is at least 1×1:
    /// the CNN's 5×5 convolution and 2×2 pool need 6, a ResNet's five
    /// stride-2 stages 32.
    pub fn min_input_size(self) -> u32 {
        match self {
            Arch::Cnn => 6,
            Arch::Resnet18 | Arch::Resnet34 => 32,
        }
    }

    /// The input side the architecture fixes, if it does: the lecture's CNN
    /// takes 32×32 images only (its `Linear(25088, n)`); a ResNet pools
    /// globally and takes any side.
    pub fn fixed_input_size(self) -> Option<u32> {
        match self {
            Arch::Cnn => Some(32),
            Arch::Resnet18 | Arch::Resnet34 => None,
        }
    }

    /// The head the architecture fixes, if it does: the CNN has a linear
    /// head only.
    pub fn fixed_head(self) -> Option<Head> {
        match self {
            Arch::Cnn => Some(Head::Linear),
            Arch::Resnet18 | Arch::Resnet34 => None,
        }
    }
}

/// The classifier on top of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// A plain linear layer (`linear`): the lecture's CNN, or torchvision's `fc`.
    Linear,
    /// fastai's `create_head` (`fastai`).
    Fastai,
    /// Global average pooling then a bias-free linear map (`cam`).
    Cam,
}
vocabulary!(Head, "head", [Linear => "linear", Fastai => "fastai", Cam => "cam"]);

/// ImageNet channel means (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Input normalisation applied after scaling pixels to [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Pixels in [0, 1] as they are (`none`).
    #[default]
    None,
    /// `(x − mean) / std` with ImageNet's statistics, for pretrained bodies
    /// (`imagenet`).
    Imagenet,
}
vocabulary!(Normalization, "normalization", [None => "none", Imagenet => "imagenet"]);

impl Normalization {
    /// Per-channel (mean, std), or `None` for no normalisation.
    pub fn mean_std(self) -> Option<([f32; 3], [f32; 3])> {
        match self {
            Normalization::Imagenet => Some((IMAGENET_MEAN, IMAGENET_STD)),
            Normalization::None => None,
        }
    }
}

/// How an image becomes the model's square input, with the meaning of
/// fastai's `ResizeMethod` (`camshaft_data::resize` does it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMethod {
    /// Take the largest square window (side = the shorter side) at the
    /// anchor position and scale it to the output size (`crop`): nothing is
    /// distorted, the ends of the longer side are cut off. fastai's
    /// default; the centre for validation, a random position for training.
    #[default]
    Crop,
    /// Stretch the whole image to the output size, distorting its aspect
    /// ratio (`squish`).
    Squish,
    /// Scale the longer side to the output size and fill the rest with
    /// black (`pad`; fastai's default pad mode is reflection; zeros keep a
    /// CAM honest about what the image contained). The anchor places the
    /// image in the square.
    Pad,
}
vocabulary!(ResizeMethod, "resize method", [Crop => "crop", Squish => "squish", Pad => "pad"]);

/// The dtype the forward pass computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 everywhere (`fp32`).
    #[default]
    Fp32,
    /// Autocast to bfloat16 (`bf16`; float32's range: no loss scaling).
    Bf16,
    /// Autocast to float16 (`fp16`), with dynamic loss scaling.
    Fp16,
}
vocabulary!(Precision, "precision", [Fp32 => "fp32", Bf16 => "bf16", Fp16 => "fp16"]);

impl Precision {
    /// Whether gradients need loss scaling to stay representable.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }
}

/// The data set a job trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// Generated shapes (`synthetic`).
    Synthetic,
    /// CIFAR-10 (`cifar10`).
    Cifar10,
    /// Oxford-IIIT Pets, cat or dog (`pets`).
    Pets,
    /// Oxford-IIIT Pets, 37 breeds (`pets_breeds`).
    PetsBreeds,
    /// One folder per class (`folder`).
    Folder,
}
vocabulary!(DatasetKind, "dataset", [
    Synthetic => "synthetic",
    Cifar10 => "cifar10" | "cifar-10",
    Pets => "pets",
    PetsBreeds => "pets_breeds" | "pets-breeds",
    Folder => "folder",
]);

impl DatasetKind {
    /// The image side the data set suggests when neither the model nor the
    /// spec fixes one: CIFAR-10's 32; the generated side for synthetic data
    /// (given apart); 224 for photographs.
    pub fn default_image_size(self, synthetic_side: u32) -> u32 {
        match self {
            DatasetKind::Synthetic => synthetic_side,
            DatasetKind::Cifar10 => 32,
            DatasetKind::Pets | DatasetKind::PetsBreeds | DatasetKind::Folder => 224,
        }
    }
}

/// Where a job's starting weights come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PretrainedSource {
    /// Freshly initialised (`none`).
    #[default]
    None,
    /// torchvision's ImageNet weights (`imagenet`).
    Imagenet,
    /// A file on the workers (`path`).
    Path,
}
vocabulary!(PretrainedSource, "pretrained source", [None => "none", Imagenet => "imagenet", Path => "path"]);

/// The kind of device a job's ranks run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A CPU (`cpu`).
    Cpu,
    /// A CUDA GPU (`cuda`, or `gpu`).
    Cuda,
}
vocabulary!(DeviceKind, "device kind", [Cpu => "cpu", Cuda => "cuda" | "gpu"]);

/// How ranks all-reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectiveBackend {
    /// NCCL, every rank on CUDA (`nccl`).
    Nccl,
    /// The TCP ring (`ring`).
    Ring,
}
vocabulary!(CollectiveBackend, "collective backend", [Nccl => "nccl", Ring => "ring"]);

/// Which epoch of a job becomes the registered version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterPolicy {
    /// The last epoch (`last`).
    #[default]
    Last,
    /// The best epoch by the monitored metric (`best`).
    Best,
}
vocabulary!(RegisterPolicy, "register policy", [Last => "last", Best => "best"]);

/// The metric that picks the best epoch and stops early.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorMetric {
    /// Validation loss, lower is better (`valid_loss`).
    #[default]
    ValidLoss,
    /// Validation accuracy, higher is better (`accuracy`).
    Accuracy,
}
vocabulary!(MonitorMetric, "monitored metric", [ValidLoss => "valid_loss" | "valid-loss", Accuracy => "accuracy"]);

/// The phases of a training step, in the order they run: the learner
/// times them, the wire's `StepPhases` carries them, `ctl jobs trace` and
/// TensorBoard name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepPhase {
    /// Waiting for the loader's next batch and moving it to the device.
    Data,
    /// Forward pass and loss.
    Forward,
    /// Backward pass.
    Backward,
    /// Gradient all-reduce and the group's finiteness check.
    Allreduce,
    /// Optimiser step.
    Optimizer,
}
vocabulary!(StepPhase, "step phase", [
    Data => "data",
    Forward => "forward",
    Backward => "backward",
    Allreduce => "allreduce",
    Optimizer => "optimizer",
]);

/// How many phases a step has: seconds per phase travel as `[f64; PHASES]`
/// in [`StepPhase::ALL`] order.
pub const PHASES: usize = StepPhase::ALL.len();

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_name() {
        for &arch in Arch::ALL {
            assert_eq!(Arch::from_name(arch.name()), Ok(arch));
            let json = serde_json::to_string(&arch).unwrap();
            assert_eq!(json, format!("\"{arch}\""));
        }
        for &p in Precision::ALL {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        for &k in DatasetKind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
            assert_eq!(k.name().parse::<DatasetKind>(), Ok(k));
        }
        for &m in MonitorMetric::ALL {
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(" CAM ".parse::<Head>(), Ok(Head::Cam));
        assert_eq!("gpu".parse::<DeviceKind>(), Ok(DeviceKind::Cuda));
        assert_eq!(Head::from_stored_name("CAM"), None);
    }

    #[test]
    fn unknown_names_list_the_choices() {
        assert_eq!(
            Head::from_name("mlp").unwrap_err().to_string(),
            "unknown head \"mlp\"; expected one of: linear, fastai, cam"
        );
        assert!(serde_json::from_str::<Arch>("\"ResNet18\"").is_err());
    }

    #[test]
    fn the_model_fixes_what_it_fixes() {
        assert_eq!(Arch::Cnn.fixed_input_size(), Some(32));
        assert_eq!(Arch::Cnn.fixed_head(), Some(Head::Linear));
        assert_eq!(Arch::Resnet18.fixed_input_size(), None);
        assert_eq!(DatasetKind::Pets.default_image_size(64), 224);
        assert_eq!(DatasetKind::Synthetic.default_image_size(64), 64);
    }
}
