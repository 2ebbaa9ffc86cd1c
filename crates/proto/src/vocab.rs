//! The one place the wire meets the vocabulary: conversions between the
//! `camshaft.v1` messages and enums and `camshaft-spec`'s types.
//!
//! - Each vocabulary enum of the wire (`v1::Arch`, `v1::Head`,
//!   `v1::Precision`, ...) takes its short names from `camshaft-spec`
//!   (`SHORT_NAMES`, `short_name`, `from_short_name`), converts from the
//!   spec's enum (`From`) and to it ([`vocab`](v1::Arch::vocab): `None` for
//!   UNSPECIFIED).
//! - [`training_request`] reads a wire `JobSpec` as a
//!   [`TrainingRequest`], and [`complete_training`] completes it into a
//!   [`TrainingSpec`], where every job default lives; [`training_job_spec`]
//!   is the completed spec as the wire (and the store) keeps it.
//! - `v1::ModelSpec` ↔ [`VersionSpec`]: [`v1::ModelSpec::to_version_spec`]
//!   and `From<&VersionSpec>`.
//! - `camshaft-spec`'s errors become this crate's [`Error`] (`From`).

use camshaft_spec::{
    self as spec, FieldError, ModelSpec, TrainingRequest, TrainingSpec, VersionSpec,
};

use crate::names::known;
use crate::v1;
use crate::{Error, Result};

macro_rules! vocabulary {
    ($ty:ident, [$($variant:ident),+ $(,)?]) => {
        impl From<spec::$ty> for v1::$ty {
            fn from(value: spec::$ty) -> Self {
                match value {
                    $(spec::$ty::$variant => v1::$ty::$variant,)+
                }
            }
        }

        impl v1::$ty {
            #[doc = concat!("The short names of every ", stringify!($ty), " besides UNSPECIFIED (`camshaft-spec`'s).")]
            pub const SHORT_NAMES: &'static [&'static str] = spec::$ty::NAMES;

            #[doc = concat!("The vocabulary's ", stringify!($ty), "; `None` for UNSPECIFIED.")]
            pub fn vocab(self) -> Option<spec::$ty> {
                match self {
                    $(v1::$ty::$variant => Some(spec::$ty::$variant),)+
                    v1::$ty::Unspecified => None,
                }
            }

            /// The short name (`unspecified` for the zero value).
            pub fn short_name(self) -> &'static str {
                self.vocab().map_or("unspecified", spec::$ty::name)
            }

            /// The value with this short name (ASCII case ignored; a few aliases accepted).
            pub fn from_short_name(name: &str) -> Result<Self> {
                Ok(spec::$ty::from_name(name)?.into())
            }
        }
    };
}

vocabulary!(Arch, [Cnn, Resnet18, Resnet34]);
vocabulary!(Head, [Linear, Fastai, Cam]);
vocabulary!(Normalization, [None, Imagenet]);
vocabulary!(ResizeMethod, [Crop, Squish, Pad]);
vocabulary!(Precision, [Fp32, Bf16, Fp16]);
vocabulary!(DatasetKind, [Synthetic, Cifar10, Pets, PetsBreeds, Folder]);
vocabulary!(PretrainedSource, [None, Imagenet, Path]);
vocabulary!(DeviceKind, [Cpu, Cuda]);
vocabulary!(CollectiveBackend, [Nccl, Ring]);
vocabulary!(RegisterPolicy, [Last, Best]);
vocabulary!(MonitorMetric, [ValidLoss, Accuracy]);

impl From<spec::Error> for Error {
    fn from(e: spec::Error) -> Self {
        match e {
            spec::Error::UnknownName {
                what,
                value,
                expected,
            } => Error::UnknownName {
                what,
                value,
                expected,
            },
            spec::Error::InvalidName {
                what,
                value,
                reason,
            } => Error::InvalidName {
                what,
                value,
                reason,
            },
            spec::Error::InvalidModelRef { reference, reason } => {
                Error::InvalidModelRef { reference, reason }
            }
            other => Error::OutOfRange {
                what: "model spec",
                reason: other.to_string(),
            },
        }
    }
}

/// A raw enum field of a `JobSpec` read as the vocabulary's value (`None`
/// for UNSPECIFIED), or a [`FieldError`] for a number no variant has.
fn field<W, S>(
    field: &'static str,
    raw: i32,
    vocab: fn(W) -> Option<S>,
) -> Result<Option<S>, FieldError>
where
    W: TryFrom<i32>,
{
    known::<W>(field, raw).map(vocab).map_err(|e| FieldError {
        field,
        reason: e.to_string(),
    })
}

/// What a wire `JobSpec` asks for, its enums read: an unknown number is
/// refused naming its field, UNSPECIFIED is "the default".
pub fn training_request(spec: &v1::JobSpec) -> Result<TrainingRequest, FieldError> {
    Ok(TrainingRequest {
        name: spec.name.clone(),
        dataset: dataset_request(spec.dataset.as_ref())?,
        arch: field("arch", spec.arch, v1::Arch::vocab)?,
        head: field("head", spec.head, v1::Head::vocab)?,
        pretrained: field("pretrained", spec.pretrained, v1::PretrainedSource::vocab)?,
        pretrained_path: spec.pretrained_path.clone(),
        normalization: field(
            "normalization",
            spec.normalization,
            v1::Normalization::vocab,
        )?,
        epochs: spec.epochs,
        fine_tune: spec.fine_tune,
        freeze_epochs: spec.freeze_epochs,
        lr: spec.lr,
        batch_size: spec.batch_size,
        image_size: spec.image_size,
        resize: field("resize", spec.resize, v1::ResizeMethod::vocab)?,
        flip: spec.flip,
        weight_decay: spec.weight_decay,
        seed: spec.seed,
        workers: spec.workers,
        gpus_per_worker: spec.gpus_per_worker,
        device: field("device", spec.device, v1::DeviceKind::vocab)?,
        min_workers: spec.min_workers,
        max_failures: spec.max_failures,
        max_membership_changes: spec.max_membership_changes,
        checkpoint_every: spec.checkpoint_every,
        keep_checkpoints: spec.keep_checkpoints,
        precision: field("precision", spec.precision, v1::Precision::vocab)?,
        channels_last: spec.channels_last,
        collective: field("collective", spec.collective, v1::CollectiveBackend::vocab)?,
        bucket_mib: spec.bucket_mib,
        collective_timeout_ms: spec.collective_timeout_ms,
        aliases: spec.aliases.clone(),
        profile_steps: spec.profile_steps,
        cuda_graphs: spec.cuda_graphs,
        register: field("register", spec.register, v1::RegisterPolicy::vocab)?,
        monitor: field("monitor", spec.monitor, v1::MonitorMetric::vocab)?,
        early_stop_patience: spec.early_stop_patience,
        tags: spec
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        description: spec.description.clone(),
    })
}

/// What a wire `DatasetSpec` asks for (none: nothing, so the data set is
/// missing).
pub fn dataset_request(
    dataset: Option<&v1::DatasetSpec>,
) -> Result<spec::DatasetRequest, FieldError> {
    let dataset = dataset.cloned().unwrap_or_default();
    let synthetic = dataset.synthetic.unwrap_or_default();
    Ok(spec::DatasetRequest {
        kind: field("dataset.kind", dataset.kind, v1::DatasetKind::vocab)?,
        data_dir: dataset.data_dir,
        download: dataset.download,
        valid_pct: dataset.valid_pct,
        split_seed: dataset.split_seed,
        synthetic: spec::SyntheticRequest {
            train_len: synthetic.train_len,
            valid_len: synthetic.valid_len,
            image_size: synthetic.image_size,
            num_classes: synthetic.num_classes,
            seed: synthetic.seed,
        },
    })
}

/// A wire `JobSpec` of a training job completed: [`training_request`], then
/// [`TrainingSpec::complete`] (`random_seed` is the seed if none is set).
/// A stored (completed) spec completes to what it says.
pub fn complete_training(spec: &v1::JobSpec, random_seed: u64) -> Result<TrainingSpec, FieldError> {
    TrainingSpec::complete(training_request(spec)?, random_seed)
}

/// A completed training job as the wire and the store keep it: every
/// default written out, so that [`complete_training`] of it gives `spec`
/// back. (A non-synthetic data set carries an empty `synthetic` message, as
/// it always has.)
pub fn training_job_spec(spec: &TrainingSpec) -> v1::JobSpec {
    let r = spec.to_request();
    let enum_or_zero = |v: Option<i32>| v.unwrap_or(0);
    let d = r.dataset;
    v1::JobSpec {
        name: r.name,
        dataset: Some(v1::DatasetSpec {
            kind: enum_or_zero(d.kind.map(|k| v1::DatasetKind::from(k) as i32)),
            data_dir: d.data_dir,
            download: d.download,
            valid_pct: d.valid_pct,
            split_seed: d.split_seed,
            synthetic: Some(v1::SyntheticDataset {
                train_len: d.synthetic.train_len,
                valid_len: d.synthetic.valid_len,
                image_size: d.synthetic.image_size,
                num_classes: d.synthetic.num_classes,
                seed: d.synthetic.seed,
            }),
        }),
        arch: v1::Arch::from(spec.arch) as i32,
        head: v1::Head::from(spec.head) as i32,
        pretrained: enum_or_zero(r.pretrained.map(|p| v1::PretrainedSource::from(p) as i32)),
        pretrained_path: r.pretrained_path,
        normalization: v1::Normalization::from(spec.normalization) as i32,
        epochs: r.epochs,
        fine_tune: r.fine_tune,
        freeze_epochs: r.freeze_epochs,
        lr: r.lr,
        batch_size: r.batch_size,
        image_size: r.image_size,
        resize: v1::ResizeMethod::from(spec.resize) as i32,
        flip: r.flip,
        weight_decay: r.weight_decay,
        seed: r.seed,
        workers: r.workers,
        gpus_per_worker: r.gpus_per_worker,
        device: enum_or_zero(r.device.map(|d| v1::DeviceKind::from(d) as i32)),
        min_workers: r.min_workers,
        max_failures: r.max_failures,
        max_membership_changes: r.max_membership_changes,
        checkpoint_every: r.checkpoint_every,
        keep_checkpoints: r.keep_checkpoints,
        precision: v1::Precision::from(spec.precision) as i32,
        channels_last: r.channels_last,
        collective: enum_or_zero(r.collective.map(|c| v1::CollectiveBackend::from(c) as i32)),
        bucket_mib: r.bucket_mib,
        collective_timeout_ms: r.collective_timeout_ms,
        aliases: r.aliases,
        profile_steps: r.profile_steps,
        cuda_graphs: r.cuda_graphs,
        collective_bench: None,
        register: v1::RegisterPolicy::from(spec.register) as i32,
        monitor: v1::MonitorMetric::from(spec.monitor) as i32,
        early_stop_patience: r.early_stop_patience,
        tags: r.tags.into_iter().collect(),
        description: r.description,
    }
}

impl From<&VersionSpec> for v1::ModelSpec {
    fn from(spec: &VersionSpec) -> Self {
        let model = &spec.model;
        v1::ModelSpec {
            arch: v1::Arch::from(model.arch) as i32,
            head: v1::Head::from(model.head) as i32,
            class_names: model.class_names.clone(),
            input_size: model.input_size,
            normalization: v1::Normalization::from(model.normalization) as i32,
            resize: v1::ResizeMethod::from(spec.resize) as i32,
        }
    }
}

impl v1::ModelSpec {
    /// The vocabulary's spec of this wire spec, after
    /// [`validate`](v1::ModelSpec::validate): normalisation `none` and resize
    /// `crop` when UNSPECIFIED.
    pub fn to_version_spec(&self) -> Result<VersionSpec> {
        self.validate()?;
        let missing = |what| Error::Missing { what };
        Ok(VersionSpec {
            model: ModelSpec {
                arch: self.arch().vocab().ok_or(missing("ModelSpec.arch"))?,
                head: self.head().vocab().ok_or(missing("ModelSpec.head"))?,
                class_names: self.class_names.clone(),
                input_size: self.input_size,
                normalization: self.normalization().vocab().unwrap_or_default(),
            },
            resize: self.resize().vocab().unwrap_or_default(),
        })
    }
}

/// Seconds per step phase ([`camshaft_spec::StepPhase::ALL`] order) as the
/// wire's `StepPhases`.
pub fn phases_to_wire(seconds: &[f64; camshaft_spec::PHASES]) -> v1::StepPhases {
    let [data, forward, backward, allreduce, optimizer] = *seconds;
    v1::StepPhases {
        data,
        forward,
        backward,
        allreduce,
        optimizer,
    }
}

/// The wire's `StepPhases` as seconds per phase, in
/// [`camshaft_spec::StepPhase::ALL`] order (zeros when absent).
pub fn phases_from_wire(phases: Option<&v1::StepPhases>) -> [f64; camshaft_spec::PHASES] {
    phases.map_or([0.0; camshaft_spec::PHASES], |p| {
        [p.data, p.forward, p.backward, p.allreduce, p.optimizer]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_vocabulary_enum_round_trips() {
        for &arch in spec::Arch::ALL {
            assert_eq!(v1::Arch::from(arch).vocab(), Some(arch));
            assert_eq!(v1::Arch::from(arch).short_name(), arch.name());
        }
        for &kind in spec::DatasetKind::ALL {
            assert_eq!(v1::DatasetKind::from(kind).vocab(), Some(kind));
        }
        assert_eq!(v1::Precision::Unspecified.vocab(), None);
        assert_eq!(v1::Precision::Unspecified.short_name(), "unspecified");
        assert_eq!(
            v1::DeviceKind::from_short_name("GPU"),
            Ok(v1::DeviceKind::Cuda)
        );
        assert_eq!(
            v1::Head::from_short_name("mlp").unwrap_err().to_string(),
            "unknown head \"mlp\"; expected one of: linear, fastai, cam"
        );
    }

    #[test]
    fn a_completed_job_spec_is_a_fixed_point_on_the_wire() {
        let wire = v1::JobSpec {
            dataset: Some(v1::DatasetSpec {
                kind: v1::DatasetKind::Pets as i32,
                ..Default::default()
            }),
            arch: v1::Arch::Resnet34 as i32,
            head: v1::Head::Fastai as i32,
            pretrained: v1::PretrainedSource::Imagenet as i32,
            fine_tune: true,
            resize: v1::ResizeMethod::Squish as i32,
            epochs: 2,
            ..Default::default()
        };
        let spec = complete_training(&wire, 11).unwrap();
        assert_eq!(spec.resize, spec::ResizeMethod::Squish);
        let stored = training_job_spec(&spec);
        assert_eq!(
            (stored.image_size, stored.seed, stored.max_failures),
            (224, Some(11), Some(3))
        );
        assert_eq!(complete_training(&stored, 99).unwrap(), spec);
        assert_eq!(
            training_job_spec(&complete_training(&stored, 99).unwrap()),
            stored
        );
        let err = complete_training(&v1::JobSpec { arch: 99, ..wire }, 1).unwrap_err();
        assert_eq!(err.field, "arch");
    }

    #[test]
    fn model_specs_convert_with_their_resize() {
        let wire = v1::ModelSpec {
            arch: v1::Arch::Resnet18 as i32,
            head: v1::Head::Cam as i32,
            class_names: vec!["cat".into(), "dog".into()],
            input_size: 224,
            normalization: v1::Normalization::Unspecified as i32,
            resize: v1::ResizeMethod::Pad as i32,
        };
        let spec = wire.to_version_spec().unwrap();
        assert_eq!(spec.resize, spec::ResizeMethod::Pad);
        assert_eq!(spec.model.normalization, spec::Normalization::None);
        let back = v1::ModelSpec::from(&spec);
        assert_eq!(back.normalization(), v1::Normalization::None);
        assert_eq!(back.resize(), v1::ResizeMethod::Pad);
    }

    #[test]
    fn phases_travel_in_their_order() {
        let seconds = [1.0, 2.0, 3.0, 4.0, 5.0];
        let wire = phases_to_wire(&seconds);
        assert_eq!((wire.data, wire.optimizer), (1.0, 5.0));
        assert_eq!(phases_from_wire(Some(&wire)), seconds);
        assert_eq!(phases_from_wire(None), [0.0; 5]);
    }
}
