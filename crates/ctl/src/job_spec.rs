//! `ctl submit-job`'s options: the same set from flags and from a JSON spec
//! file (`--spec FILE`), merged (flags win) and turned into a
//! [`JobSpec`] for `Coordinator.SubmitJob`.
//!
//! Options that are not given stay unset (0, `None`, UNSPECIFIED), so the
//! coordinator applies its defaults and records them in the stored spec.

use std::path::Path;

use camshaft_proto::v1::{
    Arch, CollectiveBackend, DatasetKind, DatasetSpec, DeviceKind, Head, JobSpec, MonitorMetric,
    Normalization, Precision, PretrainedSource, RegisterPolicy, ResizeMethod, SyntheticDataset,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::InputError;

/// Every option of a job, as flags (`--batch-size 32`) and as spec-file keys
/// (`"batch-size": 32` or `"batch_size": 32`). Enumerations stay strings here
/// and are checked by [`build_job_spec`], so both sources report a bad name
/// the same way.
///
/// Unknown spec-file keys are refused by [`JobOptions::from_json`] against
/// [`SPEC_KEYS`] (serde's `deny_unknown_fields` does not work with the
/// flattened [`TrainingOptions`]).
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct JobOptions {
    /// Data set: synthetic, cifar10, pets, pets-breeds or folder.
    #[arg(long, value_name = "KIND")]
    pub dataset: Option<String>,
    /// Directory of the data set on the workers (default: the worker's data dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Let the workers download the data set when it is missing.
    #[arg(long)]
    pub download: bool,
    /// Fraction of samples held out for validation when the data set has no split.
    #[arg(long, value_name = "FRACTION")]
    pub valid_pct: Option<f64>,
    /// Seed of that random validation split.
    #[arg(long, value_name = "SEED")]
    pub split_seed: Option<u64>,
    /// Synthetic data set: number of training samples.
    #[arg(long, value_name = "N")]
    pub train_len: Option<u32>,
    /// Synthetic data set: number of validation samples.
    #[arg(long, value_name = "N")]
    pub valid_len: Option<u32>,
    /// Synthetic data set: number of classes (2..=6).
    #[arg(long, value_name = "N")]
    pub classes: Option<u32>,
    /// The network and how its ranks train (flags shared with `ctl bench`).
    #[command(flatten)]
    #[serde(flatten)]
    pub training: TrainingOptions,
    /// Initial body weights: imagenet, none, or a .pth/.safetensors path on the workers.
    #[arg(long, value_name = "imagenet|none|PATH")]
    pub pretrained: Option<String>,
    /// Input normalisation: imagenet or none.
    #[arg(long, value_name = "NORM")]
    pub normalize: Option<String>,
    /// Epochs of fit_one_cycle, or the unfrozen epochs of fine_tune.
    #[arg(long, value_name = "N")]
    pub epochs: Option<u32>,
    /// fastai's fine_tune (frozen stage, then unfrozen) instead of fit_one_cycle.
    #[arg(long)]
    pub fine_tune: bool,
    /// Frozen epochs of fine_tune.
    #[arg(long, value_name = "N")]
    pub freeze_epochs: Option<u32>,
    /// Decoupled weight decay of Adam.
    #[arg(long, value_name = "WD")]
    pub weight_decay: Option<f64>,
    /// Square input side in pixels (also the synthetic images' size).
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<u32>,
    /// How images become square: crop, squish or pad.
    #[arg(long, value_name = "METHOD")]
    pub resize: Option<String>,
    /// No random horizontal flips in training.
    #[arg(long)]
    pub no_flip: bool,
    /// Name to register the trained model under (default: the data set's kind).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Workers in the training group.
    #[arg(long, value_name = "N")]
    pub workers: Option<u32>,
    /// Fewest workers to start or restart with.
    #[arg(long, value_name = "N")]
    pub min_workers: Option<u32>,
    /// Ranks (GPUs) per worker.
    #[arg(long, value_name = "N")]
    pub gpus_per_worker: Option<u32>,
    /// Restarts allowed after crashes.
    #[arg(long, value_name = "N")]
    pub max_failures: Option<u32>,
    /// Restarts allowed for membership changes.
    #[arg(long, value_name = "N")]
    pub max_membership_changes: Option<u32>,
    /// Write a checkpoint every N epochs.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u32>,
    /// Checkpoints kept per job.
    #[arg(long, value_name = "N")]
    pub keep_checkpoints: Option<u32>,
    /// Alias to point at the registered version besides `latest` (repeatable).
    #[arg(long = "alias", value_name = "ALIAS")]
    #[serde(rename = "alias", deserialize_with = "one_or_many")]
    pub aliases: Vec<String>,
    /// Which epoch to register: last, or best (by --monitor; fastai's
    /// SaveModelCallback).
    #[arg(long, value_name = "last|best")]
    pub register: Option<String>,
    /// Validation metric that picks the best epoch and drives early
    /// stopping: valid_loss (default) or accuracy.
    #[arg(long, value_name = "METRIC")]
    pub monitor: Option<String>,
    /// Stop after this many epochs in a row without improvement of
    /// --monitor (0: never).
    #[arg(long, value_name = "PATIENCE")]
    pub early_stop: Option<u32>,
    /// Tag of the registered version, `key=value` (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    #[serde(rename = "tag", deserialize_with = "one_or_many")]
    pub tags: Vec<String>,
    /// Description of the registered version.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

/// `key=value` tags as a map; a tag without `=` or given twice is an error.
pub fn parse_tags(
    tags: &[String],
) -> Result<std::collections::HashMap<String, String>, InputError> {
    let mut map = std::collections::HashMap::new();
    for tag in tags {
        let (key, value) = tag
            .split_once('=')
            .ok_or_else(|| InputError::new(format!("tag {tag:?} is not key=value")))?;
        if map.insert(key.to_string(), value.to_string()).is_some() {
            return Err(InputError::new(format!("tag {key:?} is given twice")));
        }
    }
    Ok(map)
}

/// The options of a job that `ctl bench train` and `ctl bench
/// time-to-accuracy` take as well: the network and how its ranks train.
/// Flattened into [`JobOptions`] and into the benchmarks' flags, so a new
/// training flag (a field here, a line in [`TrainingOptions::over`] and
/// [`build_job_spec`], a key in [`SPEC_KEYS`]) reaches `submit-job`, spec
/// files and both benchmarks at once.
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct TrainingOptions {
    /// Network body: cnn, resnet18 or resnet34.
    #[arg(long, value_name = "ARCH")]
    pub model: Option<String>,
    /// Classifier head: linear, fastai or cam (the cnn has linear only).
    #[arg(long, value_name = "HEAD")]
    pub head: Option<String>,
    /// Samples per batch per rank.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// Maximum (fit_one_cycle) or base (fine_tune) learning rate.
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Seed of initialisation, sample order and augmentation.
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
    /// Device kind to train on: cpu or cuda.
    #[arg(long, value_name = "KIND")]
    pub device: Option<String>,
    /// Forward-pass precision (autocast): fp32, bf16 or fp16 (with dynamic
    /// loss scaling).
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// Weights and inputs channels-last (NHWC).
    #[arg(long)]
    pub channels_last: bool,
    /// Gradient all-reduce backend: nccl or ring.
    #[arg(long, value_name = "BACKEND")]
    pub collective: Option<String>,
    /// Time every step's phases on every rank (data, forward, backward,
    /// all-reduce, optimiser), for `ctl jobs trace` and bench breakdowns.
    #[arg(long)]
    pub profile_steps: bool,
    /// Run every training step eagerly: no CUDA graphs (by default a CUDA
    /// step's forward and backward passes replay a graph after a few
    /// eager steps).
    #[arg(long)]
    pub no_cuda_graphs: bool,
}

impl TrainingOptions {
    /// These options over `base`: every option set here wins; switches are
    /// on when either has them on.
    pub fn over(self, base: TrainingOptions) -> TrainingOptions {
        TrainingOptions {
            model: self.model.or(base.model),
            head: self.head.or(base.head),
            batch_size: self.batch_size.or(base.batch_size),
            lr: self.lr.or(base.lr),
            seed: self.seed.or(base.seed),
            device: self.device.or(base.device),
            precision: self.precision.or(base.precision),
            channels_last: self.channels_last || base.channels_last,
            collective: self.collective.or(base.collective),
            profile_steps: self.profile_steps || base.profile_steps,
            no_cuda_graphs: self.no_cuda_graphs || base.no_cuda_graphs,
        }
    }
}

/// Spec-file keys, in the spelling of the long flags. Keys may also use `_`
/// for `-`. (A unit test keeps this list and [`JobOptions`] in step.)
pub const SPEC_KEYS: &[&str] = &[
    "dataset",
    "data-dir",
    "download",
    "valid-pct",
    "split-seed",
    "train-len",
    "valid-len",
    "classes",
    "model",
    "head",
    "pretrained",
    "normalize",
    "epochs",
    "fine-tune",
    "freeze-epochs",
    "lr",
    "weight-decay",
    "batch-size",
    "image-size",
    "resize",
    "no-flip",
    "name",
    "seed",
    "workers",
    "min-workers",
    "gpus-per-worker",
    "device",
    "precision",
    "channels-last",
    "collective",
    "profile-steps",
    "no-cuda-graphs",
    "max-failures",
    "max-membership-changes",
    "checkpoint-every",
    "keep-checkpoints",
    "alias",
    "register",
    "monitor",
    "early-stop",
    "tag",
    "description",
];

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl JobOptions {
    /// Parses a spec file's text: a JSON object whose keys are [`SPEC_KEYS`]
    /// (with `-` or `_`). An unknown key is an error naming it.
    pub fn from_json(text: &str) -> Result<JobOptions, InputError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| InputError::new(format!("spec file is not valid JSON: {e}")))?;
        let serde_json::Value::Object(object) = value else {
            return Err(InputError::new(
                "spec file must hold a JSON object like {\"dataset\": \"synthetic\"}",
            ));
        };
        let mut normalised = serde_json::Map::new();
        for (key, value) in object {
            let canonical = key.replace('_', "-");
            if !SPEC_KEYS.contains(&canonical.as_str()) {
                return Err(InputError::new(format!(
                    "unknown key {key:?} in spec file; known keys: {}",
                    SPEC_KEYS.join(", ")
                )));
            }
            if normalised.contains_key(&canonical) {
                return Err(InputError::new(format!(
                    "key {canonical:?} appears twice in spec file (as `-` and `_`)"
                )));
            }
            normalised.insert(canonical, value);
        }
        serde_json::from_value(serde_json::Value::Object(normalised))
            .map_err(|e| InputError::new(format!("spec file: {e}")))
    }

    /// Reads and parses a spec file (see [`JobOptions::from_json`]).
    pub fn from_file(path: &Path) -> Result<JobOptions, InputError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            InputError::new(format!("cannot read spec file {}: {e}", path.display()))
        })?;
        JobOptions::from_json(&text)
            .map_err(|e| InputError::new(format!("{}: {e}", path.display())))
    }

    /// These options over `base`: every option set here wins, the rest come
    /// from `base`. Switches are on when either has them on; aliases given
    /// here replace `base`'s.
    pub fn over(self, base: JobOptions) -> JobOptions {
        JobOptions {
            dataset: self.dataset.or(base.dataset),
            data_dir: self.data_dir.or(base.data_dir),
            download: self.download || base.download,
            valid_pct: self.valid_pct.or(base.valid_pct),
            split_seed: self.split_seed.or(base.split_seed),
            train_len: self.train_len.or(base.train_len),
            valid_len: self.valid_len.or(base.valid_len),
            classes: self.classes.or(base.classes),
            pretrained: self.pretrained.or(base.pretrained),
            normalize: self.normalize.or(base.normalize),
            epochs: self.epochs.or(base.epochs),
            fine_tune: self.fine_tune || base.fine_tune,
            freeze_epochs: self.freeze_epochs.or(base.freeze_epochs),
            weight_decay: self.weight_decay.or(base.weight_decay),
            image_size: self.image_size.or(base.image_size),
            resize: self.resize.or(base.resize),
            no_flip: self.no_flip || base.no_flip,
            name: self.name.or(base.name),
            workers: self.workers.or(base.workers),
            min_workers: self.min_workers.or(base.min_workers),
            gpus_per_worker: self.gpus_per_worker.or(base.gpus_per_worker),
            training: self.training.over(base.training),
            max_failures: self.max_failures.or(base.max_failures),
            max_membership_changes: self.max_membership_changes.or(base.max_membership_changes),
            checkpoint_every: self.checkpoint_every.or(base.checkpoint_every),
            keep_checkpoints: self.keep_checkpoints.or(base.keep_checkpoints),
            aliases: if self.aliases.is_empty() {
                base.aliases
            } else {
                self.aliases
            },
            register: self.register.or(base.register),
            monitor: self.monitor.or(base.monitor),
            early_stop: self.early_stop.or(base.early_stop),
            tags: if self.tags.is_empty() {
                base.tags
            } else {
                self.tags
            },
            description: self.description.or(base.description),
        }
    }
}

/// Parses an optional enum option with the proto's short names; `None` is 0 (UNSPECIFIED).
fn enum_option<E: Into<i32>>(
    value: Option<&str>,
    parse: impl Fn(&str) -> camshaft_proto::Result<E>,
) -> Result<i32, InputError> {
    match value {
        None => Ok(0),
        Some(name) => parse(name)
            .map(Into::into)
            .map_err(|e| InputError::new(e.to_string())),
    }
}

/// Builds the [`JobSpec`] of merged options. Enumeration names, the model
/// name and aliases are checked here; numbers are left to the coordinator,
/// which knows the defaults and limits.
pub fn build_job_spec(options: &JobOptions) -> Result<JobSpec, InputError> {
    let training = &options.training;
    let kind_name = options.dataset.as_deref().ok_or_else(|| {
        InputError::new(
            "no data set: pass --dataset synthetic|cifar10|pets|pets-breeds|folder \
             (or \"dataset\" in the spec file)",
        )
    })?;
    let kind =
        DatasetKind::from_short_name(kind_name).map_err(|e| InputError::new(e.to_string()))?;
    let synthetic = if kind == DatasetKind::Synthetic {
        Some(SyntheticDataset {
            train_len: options.train_len.unwrap_or(0),
            valid_len: options.valid_len.unwrap_or(0),
            image_size: options.image_size.unwrap_or(0),
            num_classes: options.classes.unwrap_or(0),
            seed: None,
        })
    } else {
        let synthetic_only = [
            ("--train-len", options.train_len.is_some()),
            ("--valid-len", options.valid_len.is_some()),
            ("--classes", options.classes.is_some()),
        ];
        if let Some((flag, _)) = synthetic_only.iter().find(|(_, set)| *set) {
            return Err(InputError::new(format!(
                "{flag} applies to --dataset synthetic only, not {}",
                kind.short_name()
            )));
        }
        None
    };
    let dataset = DatasetSpec {
        kind: kind.into(),
        data_dir: options.data_dir.clone().unwrap_or_default(),
        download: options.download,
        valid_pct: options.valid_pct,
        split_seed: options.split_seed,
        synthetic,
    };

    let (pretrained, pretrained_path) = match options.pretrained.as_deref().map(str::trim) {
        None => (PretrainedSource::Unspecified, String::new()),
        Some("") => {
            return Err(InputError::new(
                "--pretrained needs imagenet, none or a path",
            ));
        }
        Some(value) if value.eq_ignore_ascii_case("imagenet") => {
            (PretrainedSource::Imagenet, String::new())
        }
        Some(value) if value.eq_ignore_ascii_case("none") => {
            (PretrainedSource::None, String::new())
        }
        Some(path) => (PretrainedSource::Path, path.to_string()),
    };

    if let Some(name) = &options.name {
        camshaft_proto::validate_name(name).map_err(|e| InputError::new(e.to_string()))?;
    }
    for alias in &options.aliases {
        camshaft_proto::validate_alias(alias).map_err(|e| InputError::new(e.to_string()))?;
    }

    Ok(JobSpec {
        name: options.name.clone().unwrap_or_default(),
        dataset: Some(dataset),
        arch: enum_option(training.model.as_deref(), Arch::from_short_name)?,
        head: enum_option(training.head.as_deref(), Head::from_short_name)?,
        pretrained: pretrained.into(),
        pretrained_path,
        normalization: enum_option(options.normalize.as_deref(), Normalization::from_short_name)?,
        epochs: options.epochs.unwrap_or(0),
        fine_tune: options.fine_tune,
        freeze_epochs: options.freeze_epochs,
        lr: training.lr,
        batch_size: training.batch_size.unwrap_or(0),
        image_size: options.image_size.unwrap_or(0),
        resize: enum_option(options.resize.as_deref(), ResizeMethod::from_short_name)?,
        flip: options.no_flip.then_some(false),
        weight_decay: options.weight_decay,
        seed: training.seed,
        workers: options.workers.unwrap_or(0),
        gpus_per_worker: options.gpus_per_worker.unwrap_or(0),
        device: enum_option(training.device.as_deref(), DeviceKind::from_short_name)?,
        min_workers: options.min_workers.unwrap_or(0),
        max_failures: options.max_failures,
        max_membership_changes: options.max_membership_changes,
        checkpoint_every: options.checkpoint_every.unwrap_or(0),
        keep_checkpoints: options.keep_checkpoints.unwrap_or(0),
        precision: enum_option(training.precision.as_deref(), Precision::from_short_name)?,
        channels_last: training.channels_last,
        collective: enum_option(
            training.collective.as_deref(),
            CollectiveBackend::from_short_name,
        )?,
        bucket_mib: 0,
        collective_timeout_ms: 0,
        aliases: options.aliases.clone(),
        profile_steps: training.profile_steps,
        cuda_graphs: training.no_cuda_graphs.then_some(false),
        collective_bench: None,
        register: enum_option(options.register.as_deref(), RegisterPolicy::from_short_name)?,
        monitor: enum_option(options.monitor.as_deref(), MonitorMetric::from_short_name)?,
        early_stop_patience: options.early_stop.unwrap_or(0),
        tags: parse_tags(&options.tags)?,
        description: options.description.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn registration_flags_and_tags_become_the_job_spec() {
        let options = JobOptions::from_json(
            r#"{"dataset":"synthetic","register":"best","monitor":"accuracy","early_stop":3,
                "tag":["team=vision","stage=dev"],"description":"a try"}"#,
        )
        .unwrap();
        let spec = build_job_spec(&options).unwrap();
        assert_eq!(spec.register(), RegisterPolicy::Best);
        assert_eq!(spec.monitor(), MonitorMetric::Accuracy);
        assert_eq!(spec.early_stop_patience, 3);
        assert_eq!(spec.tags["stage"], "dev");
        assert_eq!(spec.description, "a try");
        let bad = |json: &str| {
            build_job_spec(&JobOptions::from_json(json).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(bad(r#"{"dataset":"synthetic","register":"first"}"#).contains("last, best"));
        assert!(bad(r#"{"dataset":"synthetic","monitor":"f1"}"#).contains("valid_loss, accuracy"));
        assert_eq!(
            bad(r#"{"dataset":"synthetic","tag":"novalue"}"#),
            "tag \"novalue\" is not key=value"
        );
        assert_eq!(
            bad(r#"{"dataset":"synthetic","tag":["a=1","a=2"]}"#),
            "tag \"a\" is given twice"
        );
    }

    #[test]
    fn spec_file_values_become_the_job_spec() {
        let options = JobOptions::from_json(
            r#"{"dataset":"synthetic","model":"resnet18","head":"cam","epochs":3,
                "train_len":64,"valid-len":32,"image-size":48,"classes":3,
                "pretrained":"imagenet","fine_tune":true,"lr":0.002,"alias":"demo"}"#,
        )
        .unwrap();
        let spec = build_job_spec(&options).unwrap();
        assert_eq!(spec.arch(), Arch::Resnet18);
        assert_eq!(spec.head(), Head::Cam);
        assert_eq!(spec.epochs, 3);
        assert_eq!(spec.pretrained(), PretrainedSource::Imagenet);
        assert!(spec.fine_tune);
        assert_eq!(spec.lr, Some(0.002));
        assert_eq!(spec.image_size, 48);
        assert_eq!(spec.aliases, vec!["demo".to_string()]);
        let dataset = spec.dataset.unwrap();
        assert_eq!(dataset.kind(), DatasetKind::Synthetic);
        let synthetic = dataset.synthetic.unwrap();
        assert_eq!(
            (
                synthetic.train_len,
                synthetic.valid_len,
                synthetic.image_size,
                synthetic.num_classes
            ),
            (64, 32, 48, 3)
        );
    }

    #[test]
    fn unset_options_stay_unset() {
        let spec = build_job_spec(&JobOptions {
            dataset: Some("pets".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(spec.arch, 0);
        assert_eq!(spec.head, 0);
        assert_eq!(spec.pretrained, 0);
        assert_eq!(spec.normalization, 0);
        assert_eq!(spec.epochs, 0);
        assert_eq!(spec.lr, None);
        assert_eq!(spec.seed, None);
        assert_eq!(spec.flip, None);
        assert_eq!(spec.freeze_epochs, None);
        assert!(spec.dataset.unwrap().synthetic.is_none());
        assert!(spec.name.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let file = JobOptions::from_json(
            r#"{"dataset":"synthetic","model":"resnet18","epochs":3,"alias":["a","b"],"seed":1}"#,
        )
        .unwrap();
        let flags = JobOptions {
            epochs: Some(5),
            training: TrainingOptions {
                model: Some("resnet34".into()),
                ..Default::default()
            },
            aliases: vec!["c".into()],
            fine_tune: true,
            ..Default::default()
        };
        let spec = build_job_spec(&flags.over(file)).unwrap();
        assert_eq!(spec.epochs, 5);
        assert_eq!(spec.arch(), Arch::Resnet34);
        assert_eq!(spec.aliases, vec!["c".to_string()]);
        assert_eq!(spec.seed, Some(1));
        assert!(spec.fine_tune);
        assert_eq!(spec.dataset.unwrap().kind(), DatasetKind::Synthetic);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = JobOptions::from_json(r#"{"dataset":"pets","epohcs":3}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown key \"epohcs\" in spec file"),
            "{err}"
        );
        let err = JobOptions::from_json(r#"{"batch_size":1,"batch-size":2}"#).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(JobOptions::from_json("[1]").is_err());
        assert!(JobOptions::from_json(r#"{"epochs":"three"}"#).is_err());
    }

    #[test]
    fn bad_enum_names_are_errors() {
        let err = build_job_spec(&JobOptions {
            dataset: Some("synthetic".into()),
            training: TrainingOptions {
                head: Some("mlp".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown head \"mlp\"; expected one of: linear, fastai, cam"
        );
        let err = build_job_spec(&JobOptions {
            dataset: Some("imagenet".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("unknown dataset"), "{err}");
        assert!(
            build_job_spec(&JobOptions::default())
                .unwrap_err()
                .to_string()
                .starts_with("no data set")
        );
    }

    #[test]
    fn pretrained_path_and_synthetic_only_flags() {
        let spec = build_job_spec(&JobOptions {
            dataset: Some("pets-breeds".into()),
            pretrained: Some("/weights/resnet34.pth".into()),
            no_flip: true,
            training: TrainingOptions {
                device: Some("cuda".into()),
                no_cuda_graphs: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(spec.cuda_graphs, Some(false));
        assert_eq!(spec.pretrained(), PretrainedSource::Path);
        assert_eq!(spec.pretrained_path, "/weights/resnet34.pth");
        assert_eq!(spec.flip, Some(false));
        assert_eq!(spec.device(), DeviceKind::Cuda);
        assert_eq!(spec.dataset.unwrap().kind(), DatasetKind::PetsBreeds);
        let err = build_job_spec(&JobOptions {
            dataset: Some("cifar10".into()),
            train_len: Some(10),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--train-len"), "{err}");
    }

    #[test]
    fn spec_keys_match_the_options_and_the_flags() {
        let sorted = |mut keys: Vec<String>| {
            keys.sort();
            keys
        };
        let known = sorted(SPEC_KEYS.iter().map(|k| k.to_string()).collect());
        // Every field, flattened ones included, as serde spells it...
        let serde_json::Value::Object(fields) =
            serde_json::to_value(JobOptions::default()).unwrap()
        else {
            panic!("JobOptions serialises as an object");
        };
        assert_eq!(sorted(fields.keys().cloned().collect()), known);
        // ...and as clap does.
        let command = <JobOptions as clap::Args>::augment_args(clap::Command::new("x"));
        let flags: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        assert_eq!(sorted(flags), known);
        // A key of the flattened part reaches its field; an unknown one is refused.
        let options = JobOptions::from_json(r#"{"channels_last":true,"batch-size":8}"#).unwrap();
        assert!(options.training.channels_last);
        assert_eq!(options.training.batch_size, Some(8));
        assert!(JobOptions::from_json(r#"{"precison":"bf16"}"#).is_err());
    }
}
