//! `camshaft-spec`: what a model version must satisfy before the
//! registry stores it, checked without libtorch.
//!
//! The invariant it serves: **registered means loadable.** A version exists
//! only once its weights have been checked against its spec — every tensor
//! name and shape the architecture and head expect, nothing missing, nothing
//! else — so the explainer never meets a version it cannot build, and the
//! spec is within the registry's limits, so no version makes every request
//! about it expensive.
//!
//! - [`check_spec`] reads a stored spec (`camshaft_vision::ModelSpec` as
//!   JSON: `arch`, `head`, `class_names`, `input_size`, `normalization`),
//!   checks it against [`SpecLimits`] (number and length of class names,
//!   input side, aliases per registration) and returns its [`ModelShape`].
//! - [`ModelShape::expected_parameters`] lists every variable
//!   `camshaft-vision` builds for an [`Arch`] × [`Head`] × class count (and,
//!   for the CNN's flatten head, input side), under torchvision's names. A
//!   test in `crates/vision/tests/spec_shapes.rs` builds every combination
//!   with libtorch and compares, so the table cannot drift from the models.
//! - [`ModelShape::check_weights`] (or [`check_weights`] from the spec JSON)
//!   reads a safetensors header, never the data, and compares it with that
//!   table. Its error lists the first [`PROBLEMS_SHOWN`] problems and counts
//!   the rest; every user string in any error is cut to a short prefix.
//!
//! # Example
//!
//! ```
//! use camshaft_spec::{Arch, Head, SpecLimits, check_spec};
//!
//! let spec = serde_json::json!({
//!     "arch": "resnet34",
//!     "head": "cam",
//!     "class_names": ["cat", "dog"],
//!     "input_size": 512,
//!     "normalization": "imagenet",
//! });
//! let shape = check_spec(&spec, &SpecLimits::default())?;
//! assert_eq!((shape.arch, shape.head, shape.num_classes), (Arch::Resnet34, Head::Cam, 2));
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

mod spec;
pub mod sweep;
mod weights;

pub use spec::{Arch, Head, ModelShape, SpecLimits, VISION_MAX_INPUT_SIZE, check_spec};
pub use weights::PROBLEMS_SHOWN;

/// Why a spec, a set of limits or a weight file was refused. Every variant
/// is the caller's input being wrong (gRPC INVALID_ARGUMENT).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The spec cannot describe a model vision builds, or breaks a limit.
    #[error("bad model spec: {0}")]
    Spec(String),
    /// A [`SpecLimits`] that cannot be used.
    #[error("bad spec limits: {0}")]
    Limits(String),
    /// The weights are not a safetensors file.
    #[error("weights are not a safetensors file: {0}")]
    NotSafetensors(String),
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
