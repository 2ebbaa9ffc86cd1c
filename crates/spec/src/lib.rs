//! `camshaft-spec`: Camshaft's vocabulary, with no tonic and no libtorch,
//! and the checks a model version must pass before the registry stores it.
//! Every other crate (the wire, the store, the coordinator, the worker,
//! vision, the explainer, `ctl`) speaks these types; `camshaft-proto`'s
//! `vocab` module is the one place they meet the wire's.
//!
//! - **Names** ([`vocab`]): [`Arch`], [`Head`], [`Normalization`],
//!   [`ResizeMethod`], [`Precision`], [`DatasetKind`], [`PretrainedSource`],
//!   [`DeviceKind`], [`CollectiveBackend`], [`RegisterPolicy`],
//!   [`MonitorMetric`], each with its one short-name table (`resnet18`,
//!   `cam`, `bf16`, ...), which serde, `ctl`, config files and logs share.
//! - **Models**: [`ModelSpec`] (arch, head, class names, input side,
//!   normalisation), serialised as every checkpoint's `spec.json` is, and
//!   [`VersionSpec`], a registered version's (the model and its
//!   [`ResizeMethod`]); both read stored JSON or name the key that failed;
//!   [`ModelShape`] and [`ModelShape::expected_parameters`], every tensor
//!   name and shape `camshaft-vision` builds for an arch × head × class
//!   count (a test in `crates/vision/tests/spec_shapes.rs` builds every
//!   combination with libtorch and compares, so the table cannot drift).
//! - **References** ([`ModelRef`]): `name`, `name@alias`, `name:version`,
//!   and the one name rule ([`check_name`], [`validate_name`],
//!   [`validate_alias`]): an alias is never all digits, since `name:3` is
//!   version 3.
//! - **Jobs** ([`TrainingSpec`]): built only by [`TrainingSpec::complete`]
//!   from a [`TrainingRequest`]: every default of a job in one place, the
//!   [`FailurePolicy`] included, and a default the model fixes (the CNN's
//!   32 px and linear head) follows the model.
//! - **Registration checks**, the invariant *registered means loadable*: a
//!   version exists only once its weights have been checked against its
//!   spec — every tensor name and shape, nothing missing, nothing else —
//!   and its spec is within the registry's [`SpecLimits`]. [`check_spec`]
//!   reads a stored spec and applies the limits; [`ModelShape::check_weights`]
//!   (or [`check_weights`] from the spec JSON) reads a safetensors header,
//!   never the data. Errors list the first [`PROBLEMS_SHOWN`] problems and
//!   count the rest; every user string in any error is cut to a short prefix.
//!   [`state_dict_safetensors`] turns a `torch.save` state dict (read by
//!   `camshaft-pth`, no libtorch) into the float32 safetensors the registry
//!   stores.
//! - [`sweep`]: the all-reduce sweep's settings and formulas.
//!
//! # Example
//!
//! ```
//! use camshaft_spec::{Arch, Head, ModelSpec, SpecLimits, check_spec};
//!
//! let stored = serde_json::json!({
//!     "arch": "resnet34",
//!     "head": "cam",
//!     "class_names": ["cat", "dog"],
//!     "input_size": 512,
//!     "normalization": "imagenet",
//! });
//! let spec = ModelSpec::from_value(&stored)?;
//! assert_eq!((spec.arch, spec.head), (Arch::Resnet34, Head::Cam));
//! assert_eq!("ResNet34".parse::<Arch>()?, Arch::Resnet34);
//! let shape = check_spec(&stored, &SpecLimits::default())?;
//! assert_eq!(shape, spec.shape());
//! let expected = shape.expected_parameters();
//! assert!(expected.contains(&("fc.weight".to_string(), vec![2, 512])));
//!
//! let err = shape.check_weights(b"PK\x03\x04, a zip").unwrap_err();
//! assert!(err.to_string().starts_with("weights are not a safetensors file"));
//!
//! let huge = serde_json::json!({
//!     "arch": "resnet18", "head": "cam", "class_names": vec!["x"; 20_000],
//!     "input_size": 224, "normalization": "none",
//! });
//! let err = check_spec(&huge, &SpecLimits::default()).unwrap_err();
//! assert_eq!(err.to_string(), "bad model spec: 20000 classes; at most 1000 are allowed");
//! # Ok::<(), camshaft_spec::Error>(())
//! ```

mod model_ref;
mod spec;
pub mod sweep;
mod training;
pub mod vocab;
mod weights;

pub use model_ref::{
    LATEST_ALIAS, MAX_NAME_LEN, ModelRef, VersionSelector, check_name, validate_alias,
    validate_name,
};
pub use spec::{ModelShape, ModelSpec, SpecLimits, VISION_MAX_INPUT_SIZE, VersionSpec, check_spec};
pub use training::{
    DEFAULT_COLLECTIVE_TIMEOUT_MS, DEFAULT_FREEZE_EPOCHS, Dataset, DatasetRequest, FailurePolicy,
    FieldError, Group, MAX_BATCH, MAX_EPOCHS, MAX_PATIENCE, MAX_WORKERS, Pretrained, SyntheticData,
    SyntheticRequest, TrainingRequest, TrainingSpec,
};
pub use vocab::{
    Arch, CollectiveBackend, DatasetKind, DeviceKind, Head, IMAGENET_MEAN, IMAGENET_STD,
    MonitorMetric, Normalization, PHASES, Precision, PretrainedSource, RegisterPolicy,
    ResizeMethod, StepPhase,
};
pub use weights::{PROBLEMS_SHOWN, state_dict_safetensors};

/// Why a name, a reference, a spec, a set of limits or a weight file was
/// refused. Every variant is the caller's input being wrong (gRPC
/// INVALID_ARGUMENT).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A short name (as the CLI and config files spell it) that is not known.
    #[error("unknown {what} {}; expected one of: {expected}", quote(value))]
    UnknownName {
        /// What was being named, e.g. `architecture`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// The accepted names, comma-separated.
        expected: String,
    },
    /// A model name, alias or other name that breaks the naming rule.
    #[error("invalid {what} {}: {reason}", quote(value))]
    InvalidName {
        /// `model name`, `alias`, ...
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A model reference that is not `name`, `name@alias` or `name:version`.
    #[error("invalid model reference {}: {reason}", quote(reference))]
    InvalidModelRef {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// The spec cannot describe a model vision builds, or breaks a limit.
    #[error("bad model spec: {0}")]
    Spec(String),
    /// A [`SpecLimits`] that cannot be used.
    #[error("bad spec limits: {0}")]
    Limits(String),
    /// The weights are not a safetensors file.
    #[error("weights are not a safetensors file: {0}")]
    NotSafetensors(String),
    /// A state dict holds a tensor that is not floating point, or cannot
    /// be written as safetensors.
    #[error("weights cannot be stored as float32: {0}")]
    NotFloat(String),
    /// The weights are safetensors, but their tensors do not fit the spec.
    #[error("weights do not fit {model}: {}{}", first.join("; "), more_problems(*more))]
    Mismatch {
        /// The model the spec describes, e.g. `resnet18 with the cam head for 2 classes`.
        model: String,
        /// The first few problems, e.g. `fc.weight is [10, 512], expected [2, 512]`.
        first: Vec<String>,
        /// How many more there are.
        more: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn more_problems(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => "; 1 more problem".into(),
        n => format!("; {n} more problems"),
    }
}

/// Checks `safetensors` (a whole file in memory; only its header is read)
/// against the model `spec` describes: [`ModelShape::from_spec`], then
/// [`ModelShape::check_weights`]. No limits: see [`check_spec`] for those.
pub fn check_weights(spec: &serde_json::Value, safetensors: &[u8]) -> Result<()> {
    ModelShape::from_spec(spec)?.check_weights(safetensors)
}

/// Characters of a user's string that an error quotes.
const QUOTED_CHARS: usize = 64;

/// `s` as a quoted, escaped string, cut after [`QUOTED_CHARS`] characters
/// with `…`: errors echo what was sent without echoing a megabyte of it.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTED_CHARS) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}…", &s[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_cut_on_characters() {
        assert_eq!(quote("cat"), "\"cat\"");
        assert_eq!(quote(&"é".repeat(64)), format!("\"{}\"", "é".repeat(64)));
        assert_eq!(quote(&"é".repeat(65)), format!("\"{}\"…", "é".repeat(64)));
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn one_more_problem_is_singular() {
        let err = Error::Mismatch {
            model: "m".into(),
            first: vec!["a".into(), "b".into()],
            more: 1,
        };
        assert_eq!(
            err.to_string(),
            "weights do not fit m: a; b; 1 more problem"
        );
    }
}
