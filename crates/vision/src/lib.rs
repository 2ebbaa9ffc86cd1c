//! `camshaft-vision`: the lecture's image classifiers on libtorch (via `tch`).
//!
//! - [`model`]: [`Model`] = body (small CNN, ResNet18, ResNet34 with
//!   torchvision's names) + head (linear, fastai, CAM), described by a
//!   [`ModelSpec`]: the vocabulary's (`camshaft-spec`, re-exported here with
//!   [`Arch`], [`Head`] and [`Normalization`]).
//! - [`weights`]: torchvision `.pth` / safetensors import and export.
//! - [`loader`]: [`Loader`] turns a [`camshaft_data::Dataset`] into batches,
//!   with exact per-epoch sharding ([`Shard`]).
//! - [`learner`]: [`Learner`] with fastai's `fit`, `fit_one_cycle`,
//!   `fine_tune`, `lr_find`, the epoch table and exact-resume checkpoints.
//! - [`graphs`]: CUDA graphs for training steps.
//! - [`cam`]: CAM and Grad-CAM, batched, and the lecture's panels.
//!
//! (Compiled, not run, as a doctest: doctests run from a temporary folder
//! that the binaries' rpath to `.venv/libtorch` cannot reach.)
//!
//! ```no_run,standalone_crate
//! use camshaft_data::SyntheticConfig;
//! use camshaft_vision::{Arch, Head, Learner, LearnerConfig, LrRange, Model, ModelSpec, Normalization};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = SyntheticConfig::default().splits()?;
//! let spec = ModelSpec {
//!     arch: Arch::Resnet18,
//!     head: Head::Cam,
//!     class_names: data.train.class_names().to_vec(),
//!     input_size: 64,
//!     normalization: Normalization::None,
//! };
//! let model = Model::new(spec, tch::Device::cuda_if_available())?;
//! let mut learner = Learner::new(model, data, LearnerConfig::default())?;
//! for row in learner.fit_one_cycle(3, LrRange::Single(1e-3))? {
//!     println!("{row:?}");
//! }
//! # Ok(()) }
//! ```

pub mod cam;
mod error;
pub mod graphs;
pub mod learner;
pub mod loader;
pub mod model;
pub mod optim;
pub mod precision;
pub mod schedule;
pub mod threads;
pub mod weights;

pub use cam::{CamMethod, Explanation, Faithfulness};
pub use error::{Error, Result};
pub use learner::{
    EpochStats, EpochTable, GradientSync, Learner, LearnerConfig, Metric, RankStepProfile,
    SingleProcess, StepPhase, StepTrace,
};
pub use loader::{Batch, Loader, LoaderConfig, Shard};
pub use model::{Arch, Head, Model, ModelSpec, Normalization};
pub use precision::Precision;
pub use schedule::{LrRange, Plan, Schedule, Stage};
pub use weights::{HeadPolicy, ImportReport, import_weights, load_safetensors_bytes, save_weights};
