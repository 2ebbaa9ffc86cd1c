//! A training job's spec with every default applied: [`TrainingSpec`],
//! built only by [`TrainingSpec::complete`] from what a client asked for
//! ([`TrainingRequest`], which `camshaft-proto` reads from the wire's
//! `JobSpec`). Every default of a job lives here, the failure policy
//! included; a default the model fixes (the CNN's linear head and 32 px)
//! follows the model, not the data set.

use std::collections::BTreeMap;

use crate::model_ref::{validate_alias, validate_name};
use crate::vocab::{
    Arch, CollectiveBackend, DatasetKind, DeviceKind, Head, MonitorMetric, Normalization,
    Precision, PretrainedSource, RegisterPolicy, ResizeMethod,
};

/// Most epochs one job may ask for.
pub const MAX_EPOCHS: u32 = 10_000;
/// Most workers (or GPUs per worker) one job may ask for.
pub const MAX_WORKERS: u32 = 1024;
/// Largest per-rank batch.
pub const MAX_BATCH: u32 = 65_536;
/// Largest `early_stop_patience`, in epochs.
pub const MAX_PATIENCE: u32 = 1000;
/// Frozen epochs of a fine-tune, by default.
pub const DEFAULT_FREEZE_EPOCHS: u32 = 1;
/// A collective operation that takes longer fails the attempt, by default: 60 s.
pub const DEFAULT_COLLECTIVE_TIMEOUT_MS: u64 = 60_000;

/// How many failures a job survives before it fails for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failed attempts (task errors, lost workers, timeouts) re-run before
    /// the job fails.
    pub max_failures: u32,
    /// Restarts for a change of membership (a worker joined or left)
    /// before the job fails.
    pub max_membership_changes: u32,
}

impl FailurePolicy {
    /// A training job's: 3 failures, 10 membership changes.
    pub const TRAINING: FailurePolicy = FailurePolicy {
        max_failures: 3,
        max_membership_changes: 10,
    };
    /// An all-reduce sweep's: a failed sweep is reported, not re-run,
    /// unless the client asks.
    pub const SWEEP: FailurePolicy = FailurePolicy {
        max_failures: 0,
        max_membership_changes: 0,
    };

    /// The policy with what the client asked for in place of the defaults.
    pub fn with(self, max_failures: Option<u32>, max_membership_changes: Option<u32>) -> Self {
        FailurePolicy {
            max_failures: max_failures.unwrap_or(self.max_failures),
            max_membership_changes: max_membership_changes.unwrap_or(self.max_membership_changes),
        }
    }
}

/// Generated data as a client asked for it (0 or `None`: the default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyntheticRequest {
    /// Training images.
    pub train_len: u32,
    /// Validation images.
    pub valid_len: u32,
    /// Image side.
    pub image_size: u32,
    /// Classes.
    pub num_classes: u32,
    /// Generator seed.
    pub seed: Option<u64>,
}

/// A data set as a client asked for it (`None`: the default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetRequest {
    /// The data set; required.
    pub kind: Option<DatasetKind>,
    /// Where it lives on the workers (empty: their default root).
    pub data_dir: String,
    /// Download it if missing.
    pub download: bool,
    /// Fraction held out for validation.
    pub valid_pct: Option<f64>,
    /// Seed of the train/validation split.
    pub split_seed: Option<u64>,
    /// Generation settings, for synthetic data.
    pub synthetic: SyntheticRequest,
}

/// A training job as a client asked for it: the wire's `JobSpec` with its
/// enums read (UNSPECIFIED is `None`) and nothing filled in. Zero, empty
/// and `None` mean "the default".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingRequest {
    /// Model name to register (empty: the data set's name).
    pub name: String,
    /// The data.
    pub dataset: DatasetRequest,
    /// Body; required.
    pub arch: Option<Arch>,
    /// Head (the CNN's is fixed).
    pub head: Option<Head>,
    /// Starting weights.
    pub pretrained: Option<PretrainedSource>,
    /// File for `PretrainedSource::Path`.
    pub pretrained_path: String,
    /// Input normalisation (default: ImageNet's for a pretrained body).
    pub normalization: Option<Normalization>,
    /// Epochs; required.
    pub epochs: u32,
    /// fastai's `fine_tune` (frozen epochs first).
    pub fine_tune: bool,
    /// Frozen epochs of a fine-tune.
    pub freeze_epochs: Option<u32>,
    /// Peak learning rate.
    pub lr: Option<f64>,
    /// Per-rank batch.
    pub batch_size: u32,
    /// Input side.
    pub image_size: u32,
    /// How images become squares.
    pub resize: Option<ResizeMethod>,
    /// Random horizontal flips.
    pub flip: Option<bool>,
    /// AdamW weight decay.
    pub weight_decay: Option<f64>,
    /// Seed of initialisation and shuffling.
    pub seed: Option<u64>,
    /// Workers.
    pub workers: u32,
    /// GPUs per worker (0: one rank per worker).
    pub gpus_per_worker: u32,
    /// Device kind (`None`: any).
    pub device: Option<DeviceKind>,
    /// Fewest workers to run on.
    pub min_workers: u32,
    /// Failed attempts re-run.
    pub max_failures: Option<u32>,
    /// Membership restarts allowed.
    pub max_membership_changes: Option<u32>,
    /// Epochs between checkpoints.
    pub checkpoint_every: u32,
    /// Checkpoints kept.
    pub keep_checkpoints: u32,
    /// Forward-pass precision.
    pub precision: Option<Precision>,
    /// Channels-last memory format.
    pub channels_last: bool,
    /// Collective (`None`: NCCL when every rank is on CUDA, else the ring).
    pub collective: Option<CollectiveBackend>,
    /// Gradient bucket size in MiB.
    pub bucket_mib: u32,
    /// Collective timeout in ms.
    pub collective_timeout_ms: u64,
    /// Aliases to set on the registered version.
    pub aliases: Vec<String>,
    /// Per-step phase timings.
    pub profile_steps: bool,
    /// CUDA graphs for training steps (`None`: on).
    pub cuda_graphs: Option<bool>,
    /// Which epoch is registered.
    pub register: Option<RegisterPolicy>,
    /// The metric for `best` and early stopping.
    pub monitor: Option<MonitorMetric>,
    /// Epochs without improvement before stopping (0: off).
    pub early_stop_patience: u32,
    /// Tags of the registered version.
    pub tags: BTreeMap<String, String>,
    /// Description of the registered version.
    pub description: String,
}

/// Generated data, complete.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticData {
    /// Training images (default 2000).
    pub train_len: u32,
    /// Validation images (default 500).
    pub valid_len: u32,
    /// Image side (default: the job's image side if set, else 64).
    pub image_size: u32,
    /// Classes, 2..=6 (default 2).
    pub num_classes: u32,
    /// Generator seed (default: the job's seed).
    pub seed: u64,
}

/// A data set, complete.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The data set.
    pub kind: DatasetKind,
    /// Where it lives on the workers (empty: their default root).
    pub data_dir: String,
    /// Download it if missing.
    pub download: bool,
    /// Fraction held out for validation, in (0, 1) (default 0.2).
    pub valid_pct: f64,
    /// Seed of the split (default 42).
    pub split_seed: u64,
    /// Generation settings, for [`DatasetKind::Synthetic`] only.
    pub synthetic: Option<SyntheticData>,
}

/// Where the starting weights come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pretrained {
    /// Freshly initialised.
    None,
    /// torchvision's ImageNet weights.
    Imagenet,
    /// A file on the workers.
    Path(String),
}

/// A training job with every default applied and every field checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingSpec {
    /// Model name to register.
    pub name: String,
    /// The data.
    pub dataset: Dataset,
    /// Body.
    pub arch: Arch,
    /// Head.
    pub head: Head,
    /// Starting weights.
    pub pretrained: Pretrained,
    /// Input normalisation.
    pub normalization: Normalization,
    /// Epochs (after the frozen ones of a fine-tune).
    pub epochs: u32,
    /// Frozen epochs of fastai's `fine_tune`; 0 for `fit_one_cycle`.
    pub freeze_epochs: u32,
    /// Peak learning rate (default 1e-3, 2e-3 for a fine-tune).
    pub lr: f64,
    /// Per-rank batch (default 64).
    pub batch_size: u32,
    /// Input side.
    pub image_size: u32,
    /// How images become squares (default crop).
    pub resize: ResizeMethod,
    /// Random horizontal flips (default on).
    pub flip: bool,
    /// AdamW weight decay (default 0.01).
    pub weight_decay: f64,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Workers (default 1).
    pub workers: u32,
    /// GPUs per worker (0: one rank per worker).
    pub gpus_per_worker: u32,
    /// Device kind; `None` places on any device (not a missing value).
    pub device: Option<DeviceKind>,
    /// Fewest workers to run on (default: all of them).
    pub min_workers: u32,
    /// Failures and membership changes survived.
    pub failure_policy: FailurePolicy,
    /// Epochs between checkpoints (default 1).
    pub checkpoint_every: u32,
    /// Checkpoints kept (default 2).
    pub keep_checkpoints: u32,
    /// Forward-pass precision (default fp32).
    pub precision: Precision,
    /// Channels-last memory format.
    pub channels_last: bool,
    /// Collective; `None` picks at placement (NCCL when every rank is on
    /// CUDA, else the ring), not a missing value.
    pub collective: Option<CollectiveBackend>,
    /// Gradient bucket size in MiB (default 25).
    pub bucket_mib: u32,
    /// Collective timeout in ms (default [`DEFAULT_COLLECTIVE_TIMEOUT_MS`]).
    pub collective_timeout_ms: u64,
    /// Aliases to set on the registered version.
    pub aliases: Vec<String>,
    /// Per-step phase timings.
    pub profile_steps: bool,
    /// Replay training steps from CUDA graphs where they apply (default
    /// on; see `camshaft_vision::graphs`).
    pub cuda_graphs: bool,
    /// Which epoch is registered (default last).
    pub register: RegisterPolicy,
    /// The metric for `best` and early stopping (default valid_loss).
    pub monitor: MonitorMetric,
    /// Epochs without improvement before stopping (0: off).
    pub early_stop_patience: u32,
    /// Tags of the registered version.
    pub tags: BTreeMap<String, String>,
    /// Description of the registered version.
    pub description: String,
}

/// Why a request cannot become a [`TrainingSpec`]: the field (a path of
/// the wire's `JobSpec` field names, e.g. `dataset.valid_pct`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field.
    pub field: &'static str,
    /// What is wrong, with the value.
    pub reason: String,
}

fn refuse<T>(field: &'static str, reason: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        field,
        reason: reason.into(),
    })
}

impl TrainingSpec {
    /// `request` with every default applied, or the first thing wrong with
    /// it. `random_seed` becomes the seed when the request has none.
    /// A complete spec's request completes to itself.
    pub fn complete(request: TrainingRequest, random_seed: u64) -> Result<Self, FieldError> {
        let r = request;
        let Some(arch) = r.arch else {
            return refuse("arch", "arch is required (cnn, resnet18 or resnet34)");
        };
        // Defaults the model fixes follow the model.
        let Some(head) = r.head.or(arch.fixed_head()) else {
            return refuse("head", "head is required (linear, fastai or cam)");
        };
        if let Some(fixed) = arch.fixed_head()
            && head != fixed
        {
            return refuse(
                "head",
                format!("the {arch} has a {fixed} head only, not {head}"),
            );
        }

        let pretrained = match r.pretrained.unwrap_or_default() {
            PretrainedSource::Imagenet if arch == Arch::Cnn => {
                return refuse("pretrained", "there are no ImageNet weights for the cnn");
            }
            PretrainedSource::Path if r.pretrained_path.is_empty() => {
                return refuse("pretrained_path", "pretrained PATH needs pretrained_path");
            }
            PretrainedSource::None | PretrainedSource::Imagenet
                if !r.pretrained_path.is_empty() =>
            {
                return refuse(
                    "pretrained_path",
                    "pretrained_path is set but pretrained is not PATH",
                );
            }
            PretrainedSource::None => Pretrained::None,
            PretrainedSource::Imagenet => Pretrained::Imagenet,
            PretrainedSource::Path => Pretrained::Path(r.pretrained_path),
        };
        let is_pretrained = pretrained != Pretrained::None;
        let normalization = r.normalization.unwrap_or(if is_pretrained {
            Normalization::Imagenet
        } else {
            Normalization::None
        });

        if r.epochs == 0 || r.epochs > MAX_EPOCHS {
            return refuse(
                "epochs",
                format!("epochs must be 1..={MAX_EPOCHS}, not {}", r.epochs),
            );
        }
        if r.fine_tune && !is_pretrained {
            return refuse(
                "fine_tune",
                "fine_tune needs a pretrained body (pretrained imagenet or PATH)",
            );
        }
        let freeze_epochs = match (r.fine_tune, r.freeze_epochs) {
            (true, n) => match n.unwrap_or(DEFAULT_FREEZE_EPOCHS) {
                n @ 1..=MAX_EPOCHS => n,
                n => {
                    return refuse(
                        "freeze_epochs",
                        format!("freeze_epochs must be 1..={MAX_EPOCHS}, not {n}"),
                    );
                }
            },
            (false, Some(_)) => {
                return refuse("freeze_epochs", "freeze_epochs is set but fine_tune is not");
            }
            (false, None) => 0,
        };
        let lr = r.lr.unwrap_or(if r.fine_tune { 2e-3 } else { 1e-3 });
        if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
            return refuse("lr", format!("lr must be in (0, 10], not {lr}"));
        }
        let batch_size = if r.batch_size == 0 { 64 } else { r.batch_size };
        if batch_size > MAX_BATCH {
            return refuse(
                "batch_size",
                format!("batch_size must be 1..={MAX_BATCH}, not {batch_size}"),
            );
        }

        let seed = r.seed.unwrap_or(random_seed);
        let asked_size = match r.image_size {
            0 => arch.fixed_input_size(),
            n => Some(n),
        };
        let dataset = Dataset::complete(r.dataset, asked_size, seed)?;
        let image_size = asked_size.unwrap_or_else(|| {
            let synthetic = dataset.synthetic.as_ref().map_or(64, |s| s.image_size);
            dataset.kind.default_image_size(synthetic)
        });
        if let Some(fixed) = arch.fixed_input_size()
            && image_size != fixed
        {
            return refuse(
                "image_size",
                format!(
                    "the {arch} takes {fixed}×{fixed} images (its Linear(25088, n) fixes the size), not {image_size}"
                ),
            );
        }
        if !(32..=2048).contains(&image_size) {
            return refuse(
                "image_size",
                format!("image_size must be 32..=2048, not {image_size}"),
            );
        }
        let weight_decay = r.weight_decay.unwrap_or(0.01);
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return refuse(
                "weight_decay",
                format!("weight_decay must be ≥ 0, not {weight_decay}"),
            );
        }

        let group = Group::complete(
            r.workers,
            r.gpus_per_worker,
            r.min_workers,
            r.device,
            r.collective,
        )?;
        if group.min_workers > group.workers {
            return refuse(
                "min_workers",
                format!(
                    "min_workers {} is more than workers {}",
                    group.min_workers, group.workers
                ),
            );
        }

        let name = if r.name.is_empty() {
            dataset.kind.name().to_string()
        } else {
            r.name
        };
        validate_name(&name).or_else(|e| refuse("name", e.to_string()))?;
        for alias in &r.aliases {
            validate_alias(alias).or_else(|e| refuse("aliases", e.to_string()))?;
        }
        if r.early_stop_patience > MAX_PATIENCE {
            return refuse(
                "early_stop_patience",
                format!(
                    "early_stop_patience must be 0 (off) ..={MAX_PATIENCE}, not {}",
                    r.early_stop_patience
                ),
            );
        }
        Ok(TrainingSpec {
            name,
            dataset,
            arch,
            head,
            pretrained,
            normalization,
            epochs: r.epochs,
            freeze_epochs,
            lr,
            batch_size,
            image_size,
            resize: r.resize.unwrap_or_default(),
            flip: r.flip.unwrap_or(true),
            weight_decay,
            seed,
            workers: group.workers,
            gpus_per_worker: group.gpus_per_worker,
            device: group.device,
            min_workers: group.min_workers,
            failure_policy: FailurePolicy::TRAINING.with(r.max_failures, r.max_membership_changes),
            checkpoint_every: r.checkpoint_every.max(1),
            keep_checkpoints: if r.keep_checkpoints == 0 {
                2
            } else {
                r.keep_checkpoints
            },
            precision: r.precision.unwrap_or_default(),
            channels_last: r.channels_last,
            collective: group.collective,
            bucket_mib: if r.bucket_mib == 0 { 25 } else { r.bucket_mib },
            collective_timeout_ms: match r.collective_timeout_ms {
                0 => DEFAULT_COLLECTIVE_TIMEOUT_MS,
                ms => ms,
            },
            aliases: r.aliases,
            profile_steps: r.profile_steps,
            cuda_graphs: r.cuda_graphs.unwrap_or(true),
            register: r.register.unwrap_or_default(),
            monitor: r.monitor.unwrap_or_default(),
            early_stop_patience: r.early_stop_patience,
            tags: r.tags,
            description: r.description,
        })
    }

    /// Whether the job fine-tunes (frozen epochs first).
    pub fn fine_tune(&self) -> bool {
        self.freeze_epochs > 0
    }

    /// The model the job trains, for `class_names` (which the data set
    /// decides when it is loaded).
    pub fn model_spec(&self, class_names: Vec<String>) -> crate::ModelSpec {
        crate::ModelSpec {
            arch: self.arch,
            head: self.head,
            class_names,
            input_size: self.image_size,
            normalization: self.normalization,
        }
    }

    /// The request this spec completes from: what storing it on the wire
    /// keeps. [`TrainingSpec::complete`] of it gives this spec back.
    pub fn to_request(&self) -> TrainingRequest {
        let (pretrained, pretrained_path) = match &self.pretrained {
            Pretrained::None => (PretrainedSource::None, String::new()),
            Pretrained::Imagenet => (PretrainedSource::Imagenet, String::new()),
            Pretrained::Path(p) => (PretrainedSource::Path, p.clone()),
        };
        let d = &self.dataset;
        TrainingRequest {
            name: self.name.clone(),
            dataset: DatasetRequest {
                kind: Some(d.kind),
                data_dir: d.data_dir.clone(),
                download: d.download,
                valid_pct: Some(d.valid_pct),
                split_seed: Some(d.split_seed),
                synthetic: d
                    .synthetic
                    .as_ref()
                    .map(|s| SyntheticRequest {
                        train_len: s.train_len,
                        valid_len: s.valid_len,
                        image_size: s.image_size,
                        num_classes: s.num_classes,
                        seed: Some(s.seed),
                    })
                    .unwrap_or_default(),
            },
            arch: Some(self.arch),
            head: Some(self.head),
            pretrained: Some(pretrained),
            pretrained_path,
            normalization: Some(self.normalization),
            epochs: self.epochs,
            fine_tune: self.fine_tune(),
            freeze_epochs: self.fine_tune().then_some(self.freeze_epochs),
            lr: Some(self.lr),
            batch_size: self.batch_size,
            image_size: self.image_size,
            resize: Some(self.resize),
            flip: Some(self.flip),
            weight_decay: Some(self.weight_decay),
            seed: Some(self.seed),
            workers: self.workers,
            gpus_per_worker: self.gpus_per_worker,
            device: self.device,
            min_workers: self.min_workers,
            max_failures: Some(self.failure_policy.max_failures),
            max_membership_changes: Some(self.failure_policy.max_membership_changes),
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            precision: Some(self.precision),
            channels_last: self.channels_last,
            collective: self.collective,
            bucket_mib: self.bucket_mib,
            collective_timeout_ms: self.collective_timeout_ms,
            aliases: self.aliases.clone(),
            profile_steps: self.profile_steps,
            cuda_graphs: Some(self.cuda_graphs),
            register: Some(self.register),
            monitor: Some(self.monitor),
            early_stop_patience: self.early_stop_patience,
            tags: self.tags.clone(),
            description: self.description.clone(),
        }
    }
}

impl Dataset {
    /// `request` with its defaults (a 20% validation split with seed 42;
    /// for synthetic data 2000 + 500 images of 2 classes, seeded with the
    /// job's `seed`, at the job's image side `image_size` if it has one,
    /// else 64), or the first thing wrong with it.
    pub fn complete(
        request: DatasetRequest,
        image_size: Option<u32>,
        seed: u64,
    ) -> Result<Dataset, FieldError> {
        let d = request;
        let Some(kind) = d.kind else {
            return refuse(
                "dataset.kind",
                "dataset.kind is required (synthetic, cifar10, pets, pets_breeds or folder)",
            );
        };
        if kind == DatasetKind::Folder && d.data_dir.is_empty() {
            return refuse(
                "dataset.data_dir",
                "a folder data set needs dataset.data_dir",
            );
        }
        let valid_pct = d.valid_pct.unwrap_or(0.2);
        if !(valid_pct > 0.0 && valid_pct < 1.0) {
            return refuse(
                "dataset.valid_pct",
                format!("dataset.valid_pct must be in (0, 1), not {valid_pct}"),
            );
        }
        let synthetic = if kind == DatasetKind::Synthetic {
            let s = d.synthetic;
            let or = |v: u32, default: u32| if v == 0 { default } else { v };
            let synthetic = SyntheticData {
                train_len: or(s.train_len, 2000),
                valid_len: or(s.valid_len, 500),
                image_size: or(s.image_size, image_size.unwrap_or(64)),
                num_classes: or(s.num_classes, 2),
                seed: s.seed.unwrap_or(seed),
            };
            if !(16..=2048).contains(&synthetic.image_size) {
                return refuse(
                    "dataset.synthetic.image_size",
                    format!(
                        "dataset.synthetic.image_size must be 16..=2048, not {}",
                        synthetic.image_size
                    ),
                );
            }
            if !(2..=6).contains(&synthetic.num_classes) {
                return refuse(
                    "dataset.synthetic.num_classes",
                    format!(
                        "dataset.synthetic.num_classes must be 2..=6, not {}",
                        synthetic.num_classes
                    ),
                );
            }
            Some(synthetic)
        } else {
            None
        };
        Ok(Dataset {
            kind,
            data_dir: d.data_dir,
            download: d.download,
            valid_pct,
            split_seed: d.split_seed.unwrap_or(42),
            synthetic,
        })
    }
}

/// The ranks a job (training or sweep) asks for, complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    /// Workers (default 1).
    pub workers: u32,
    /// GPUs per worker (0: one rank per worker).
    pub gpus_per_worker: u32,
    /// Fewest workers to run on (default: all of them).
    pub min_workers: u32,
    /// Device kind; `None`: any.
    pub device: Option<DeviceKind>,
    /// Collective; `None`: picked at placement.
    pub collective: Option<CollectiveBackend>,
}

impl Group {
    /// The group's defaults and bounds, shared by training jobs and sweeps:
    /// 1 worker, `min_workers` = `workers`, at most [`MAX_WORKERS`] of
    /// either, and NCCL only on CUDA.
    pub fn complete(
        workers: u32,
        gpus_per_worker: u32,
        min_workers: u32,
        device: Option<DeviceKind>,
        collective: Option<CollectiveBackend>,
    ) -> Result<Group, FieldError> {
        let workers = workers.max(1);
        if workers > MAX_WORKERS || gpus_per_worker > MAX_WORKERS {
            return refuse(
                "workers",
                format!("workers and gpus_per_worker must be at most {MAX_WORKERS}"),
            );
        }
        if collective == Some(CollectiveBackend::Nccl) && device == Some(DeviceKind::Cpu) {
            return refuse(
                "collective",
                "the nccl collective needs CUDA devices, not cpu",
            );
        }
        Ok(Group {
            workers,
            gpus_per_worker,
            min_workers: if min_workers == 0 {
                workers
            } else {
                min_workers
            },
            device,
            collective,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn minimal() -> TrainingRequest {
        TrainingRequest {
            dataset: DatasetRequest {
                kind: Some(DatasetKind::Synthetic),
                ..Default::default()
            },
            arch: Some(Arch::Resnet18),
            head: Some(Head::Cam),
            epochs: 3,
            ..Default::default()
        }
    }

    fn refused(request: TrainingRequest) -> String {
        TrainingSpec::complete(request, 7).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_filled_in_and_complete_is_a_fixed_point() {
        let spec = TrainingSpec::complete(minimal(), 7).unwrap();
        assert_eq!(spec.name, "synthetic");
        assert_eq!((spec.seed, spec.lr, spec.batch_size), (7, 1e-3, 64));
        assert_eq!(
            (spec.image_size, spec.resize, spec.flip),
            (64, ResizeMethod::Crop, true)
        );
        assert_eq!(spec.failure_policy, FailurePolicy::TRAINING);
        assert_eq!((spec.dataset.valid_pct, spec.dataset.split_seed), (0.2, 42));
        let synthetic = spec.dataset.synthetic.clone().unwrap();
        assert_eq!(
            (
                synthetic.train_len,
                synthetic.valid_len,
                synthetic.num_classes,
                synthetic.seed
            ),
            (2000, 500, 2, 7)
        );
        assert_eq!(
            (spec.workers, spec.min_workers, spec.bucket_mib),
            (1, 1, 25)
        );
        assert_eq!(spec.collective_timeout_ms, 60_000);
        assert_eq!(
            (spec.register, spec.monitor),
            (RegisterPolicy::Last, MonitorMetric::ValidLoss)
        );
        assert!(spec.cuda_graphs);
        assert_eq!(TrainingSpec::complete(spec.to_request(), 9).unwrap(), spec);
        let eager = TrainingRequest {
            cuda_graphs: Some(false),
            ..minimal()
        };
        let eager = TrainingSpec::complete(eager, 7).unwrap();
        assert!(!eager.cuda_graphs);
        assert_eq!(
            TrainingSpec::complete(eager.to_request(), 9).unwrap(),
            eager
        );
    }

    #[test]
    fn defaults_follow_the_model_and_the_data() {
        // (dataset, arch, asked image size) → image size.
        let table = [
            (DatasetKind::Synthetic, Arch::Cnn, 0, 32),
            (DatasetKind::Folder, Arch::Cnn, 0, 32),
            (DatasetKind::Pets, Arch::Cnn, 0, 32),
            (DatasetKind::Cifar10, Arch::Resnet18, 0, 32),
            (DatasetKind::Pets, Arch::Resnet34, 0, 224),
            (DatasetKind::Synthetic, Arch::Resnet18, 0, 64),
            (DatasetKind::Synthetic, Arch::Resnet18, 128, 128),
        ];
        for (kind, arch, asked, size) in table {
            let spec = TrainingSpec::complete(
                TrainingRequest {
                    dataset: DatasetRequest {
                        kind: Some(kind),
                        data_dir: "images".into(),
                        ..Default::default()
                    },
                    arch: Some(arch),
                    head: None.or((arch != Arch::Cnn).then_some(Head::Cam)),
                    image_size: asked,
                    ..minimal()
                },
                7,
            )
            .unwrap();
            assert_eq!(spec.image_size, size, "{kind} {arch} {asked}");
            if let Some(s) = &spec.dataset.synthetic {
                assert_eq!(s.image_size, size, "{kind} {arch}");
            }
            if arch == Arch::Cnn {
                assert_eq!(spec.head, Head::Linear);
            }
        }
        // Pretrained bodies get ImageNet's statistics and a fine-tune's lr.
        let spec = TrainingSpec::complete(
            TrainingRequest {
                pretrained: Some(PretrainedSource::Imagenet),
                fine_tune: true,
                ..minimal()
            },
            7,
        )
        .unwrap();
        assert_eq!(
            (spec.normalization, spec.lr, spec.freeze_epochs),
            (Normalization::Imagenet, 2e-3, 1)
        );
        let policy = TrainingSpec::complete(
            TrainingRequest {
                max_failures: Some(0),
                ..minimal()
            },
            7,
        )
        .unwrap()
        .failure_policy;
        assert_eq!(
            (policy.max_failures, policy.max_membership_changes),
            (0, 10)
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let table: [(TrainingRequest, &str); 14] = [
            (
                TrainingRequest {
                    epochs: 0,
                    ..minimal()
                },
                "epochs: epochs must be 1..=10000, not 0",
            ),
            (
                TrainingRequest {
                    arch: None,
                    ..minimal()
                },
                "arch: arch is required",
            ),
            (
                TrainingRequest {
                    dataset: DatasetRequest::default(),
                    ..minimal()
                },
                "dataset.kind: ",
            ),
            (
                TrainingRequest {
                    fine_tune: true,
                    ..minimal()
                },
                "fine_tune: fine_tune needs a pretrained body",
            ),
            (
                TrainingRequest {
                    freeze_epochs: Some(2),
                    ..minimal()
                },
                "freeze_epochs: freeze_epochs is set",
            ),
            (
                TrainingRequest {
                    lr: Some(-1.0),
                    ..minimal()
                },
                "lr: lr must be in (0, 10]",
            ),
            (
                TrainingRequest {
                    name: "no spaces".into(),
                    ..minimal()
                },
                "name: invalid model name \"no spaces\"",
            ),
            (
                TrainingRequest {
                    aliases: vec!["3".into()],
                    ..minimal()
                },
                "aliases: invalid alias \"3\": an alias cannot be all digits",
            ),
            (
                TrainingRequest {
                    workers: 5000,
                    ..minimal()
                },
                "workers: ",
            ),
            (
                TrainingRequest {
                    workers: 2,
                    min_workers: 3,
                    ..minimal()
                },
                "min_workers: min_workers 3 is more than workers 2",
            ),
            (
                TrainingRequest {
                    device: Some(DeviceKind::Cpu),
                    collective: Some(CollectiveBackend::Nccl),
                    ..minimal()
                },
                "collective: the nccl collective needs CUDA devices, not cpu",
            ),
            (
                TrainingRequest {
                    arch: Some(Arch::Cnn),
                    head: Some(Head::Linear),
                    image_size: 64,
                    ..minimal()
                },
                "image_size: the cnn takes 32×32 images (its Linear(25088, n) fixes the size), not 64",
            ),
            (
                TrainingRequest {
                    arch: Some(Arch::Cnn),
                    head: Some(Head::Cam),
                    ..minimal()
                },
                "head: the cnn has a linear head only, not cam",
            ),
            (
                TrainingRequest {
                    early_stop_patience: 1001,
                    ..minimal()
                },
                "early_stop_patience: early_stop_patience must be 0 (off) ..=1000, not 1001",
            ),
        ];
        for (request, expected) in table {
            let err = refused(request);
            assert!(err.starts_with(expected), "{err:?} is not {expected:?}");
        }
        let folder = TrainingRequest {
            dataset: DatasetRequest {
                kind: Some(DatasetKind::Folder),
                ..Default::default()
            },
            ..minimal()
        };
        assert!(refused(folder).starts_with("dataset.data_dir: "));
    }
}
