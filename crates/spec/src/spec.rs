//! The spec side: what a stored spec must say for `camshaft-vision` to build
//! its model ([`ModelShape::from_spec`]), and the registry's limits on top
//! of that ([`check_spec`], [`SpecLimits`]).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::vocab::{Arch, Head, Normalization, ResizeMethod};
use crate::{Error, Result, quote};

/// The largest input side `camshaft-vision` builds a model for (its
/// `ModelSpec::validate`, and the wire's `MAX_INPUT_SIZE`).
pub const VISION_MAX_INPUT_SIZE: u32 = 4096;

/// Everything needed to rebuild a model and feed it: saved beside every
/// checkpoint and model version, as JSON with exactly these keys
/// (`{"arch": "resnet34", "head": "cam", "class_names": [...],
/// "input_size": 512, "normalization": "imagenet"}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The body.
    pub arch: Arch,
    /// The head.
    pub head: Head,
    /// One name per output class, in logit order.
    pub class_names: Vec<String>,
    /// Square input side in pixels.
    pub input_size: u32,
    /// Input normalisation.
    pub normalization: Normalization,
}

/// A registered version's spec as the registry stores it: the model's
/// keys, and beside them `"resize"`, how images become its input square:
/// what the version was validated with, and so what the explainer must do
/// (crop for versions stored before it was recorded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionSpec {
    /// The model.
    #[serde(flatten)]
    pub model: ModelSpec,
    /// How images are resized to `model.input_size`.
    #[serde(default)]
    pub resize: ResizeMethod,
}

impl VersionSpec {
    /// Reads a stored version spec (JSON), or says what is wrong with it,
    /// naming the key: [`ModelSpec::from_value`], then `resize`.
    pub fn from_value(spec: &Value) -> Result<Self> {
        let model = ModelSpec::from_value(spec)?;
        let resize = match spec.get("resize") {
            None => ResizeMethod::default(),
            Some(Value::String(name)) => ResizeMethod::from_stored_name(name).ok_or_else(|| {
                Error::Spec(format!(
                    "resize {} is not one of {}",
                    quote(name),
                    ResizeMethod::NAMES.join(", ")
                ))
            })?,
            Some(_) => return Err(Error::Spec("resize is not a string".into())),
        };
        Ok(VersionSpec { model, resize })
    }

    /// The spec as stored (JSON).
    pub fn to_value(&self) -> Value {
        // Strings and numbers always serialise.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The ResNet layers a map can be taken at (torchvision's module names).
const RESNET_LAYERS: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];
/// The lecture CNN's modules a map can be taken at (`nn.Sequential` indices).
const CNN_LAYERS: [&str; 3] = ["0", "1", "2"];

impl ModelSpec {
    /// Reads a stored spec (JSON), or says what is wrong with it: the
    /// checks of [`ModelShape::from_spec`] (each naming the key that
    /// failed), then serde.
    pub fn from_value(spec: &Value) -> Result<Self> {
        ModelShape::from_spec(spec)?;
        serde_json::from_value(spec.clone()).map_err(|e| Error::Spec(e.to_string()))
    }

    /// [`ModelSpec::from_value`] of JSON bytes (a stored `spec.json`).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Spec(format!("it is not JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// The spec as stored (JSON).
    pub fn to_value(&self) -> Value {
        // A struct of strings and numbers always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// What decides this model's tensors.
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            arch: self.arch,
            head: self.head,
            num_classes: self.class_names.len(),
            input_size: self.input_size,
        }
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Channels of the body's last feature map.
    pub fn feature_channels(&self) -> i64 {
        match self.arch {
            Arch::Cnn => 128,
            Arch::Resnet18 | Arch::Resnet34 => 512,
        }
    }

    /// Side of the body's last feature map for this input size.
    pub fn feature_size(&self) -> i64 {
        let s = i64::from(self.input_size);
        match self.arch {
            Arch::Cnn => (s - 4) / 2,
            // conv1 (stride 2), max-pool (stride 2), layer2..4 (stride 2 each).
            Arch::Resnet18 | Arch::Resnet34 => {
                let mut s = s;
                for _ in 0..5 {
                    s = (s + 1) / 2;
                }
                s
            }
        }
    }

    /// The names of the body's layers a map can be taken at, shallowest
    /// first; the last is the body's output (the default): torchvision's
    /// `layer1` … `layer4` for a ResNet, the lecture's `nn.Sequential`
    /// indices `0` (convolution), `1` (ReLU), `2` (max-pool) for the CNN.
    pub fn layer_names(&self) -> &'static [&'static str] {
        match self.arch {
            Arch::Cnn => &CNN_LAYERS,
            Arch::Resnet18 | Arch::Resnet34 => &RESNET_LAYERS,
        }
    }

    /// Channels of the feature map after layer `index` (into
    /// [`ModelSpec::layer_names`]; past the last, the last's).
    pub fn layer_channels(&self, index: usize) -> i64 {
        match self.arch {
            Arch::Cnn => 128,
            Arch::Resnet18 | Arch::Resnet34 => 64 << index.min(3),
        }
    }

    /// Input pixel at the centre of the receptive field of feature-map cell
    /// `i` (along either axis). ResNet: every stride-2 stage is padded so that
    /// output `o` is centred on input `2o`, hence `32·i`; CNN: the unpadded
    /// 5×5 convolution then the 2×2 max-pool centre cell `i` on `2i + 2.5`.
    /// Bilinear upsampling with `align_corners=False` (the lecture's drawing)
    /// assumes `(i + ½)·stride` instead: half a cell off for a ResNet.
    pub fn feature_center(&self, i: u32) -> f64 {
        match self.arch {
            Arch::Cnn => 2.0 * f64::from(i) + 2.5,
            Arch::Resnet18 | Arch::Resnet34 => 32.0 * f64::from(i),
        }
    }

    /// Checks that the model can be built: at least two classes, an input
    /// side in the architecture's
    /// [`min_input_size`](Arch::min_input_size)`..=`[`VISION_MAX_INPUT_SIZE`].
    pub fn validate(&self) -> Result<()> {
        if self.class_names.len() < 2 {
            return Err(Error::Spec(format!(
                "a classifier needs at least 2 classes, got {}",
                self.class_names.len()
            )));
        }
        let min = self.arch.min_input_size();
        if !(min..=VISION_MAX_INPUT_SIZE).contains(&self.input_size) {
            return Err(Error::Spec(format!(
                "input size {} is outside {min}..={VISION_MAX_INPUT_SIZE} for {}",
                self.input_size, self.arch
            )));
        }
        Ok(())
    }
}

/// What decides a model's tensors: its architecture, head, number of classes
/// and (for the CNN's flatten head only) input side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelShape {
    /// The body.
    pub arch: Arch,
    /// The head.
    pub head: Head,
    /// Number of output classes (at least 2).
    pub num_classes: usize,
    /// Square input side in pixels.
    pub input_size: u32,
}

impl ModelShape {
    /// Reads a stored spec ([`ModelSpec`] as JSON: `arch`, `head`,
    /// `class_names`, `input_size`, `normalization`) and checks that it
    /// parses and that `camshaft-vision` can build its model, naming the key
    /// that fails: known names spelled as serde reads them (lowercase), at
    /// least two class names (strings),
    /// an input side in the architecture's
    /// [`min_input_size`](Arch::min_input_size)`..=`[`VISION_MAX_INPUT_SIZE`].
    /// The registry's own limits are [`check_spec`]'s.
    pub fn from_spec(spec: &Value) -> Result<Self> {
        let bad = |reason: String| Error::Spec(reason);
        let spec = spec
            .as_object()
            .ok_or_else(|| bad("it is not a JSON object".into()))?;
        let text = |key: &str| -> Result<&str> {
            match spec.get(key) {
                None => Err(bad(format!("{key} is missing"))),
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(bad(format!("{key} is not a string"))),
            }
        };
        let arch = text("arch")?;
        let arch = Arch::from_stored_name(arch).ok_or_else(|| {
            bad(format!(
                "arch {} is not one of cnn, resnet18, resnet34",
                quote(arch)
            ))
        })?;
        let head = text("head")?;
        let head = Head::from_stored_name(head).ok_or_else(|| {
            bad(format!(
                "head {} is not one of linear, fastai, cam",
                quote(head)
            ))
        })?;
        let normalization = text("normalization")?;
        if Normalization::from_stored_name(normalization).is_none() {
            return Err(bad(format!(
                "normalization {} is not one of imagenet, none",
                quote(normalization)
            )));
        }
        let names = class_names(spec)?;
        if names.len() < 2 {
            return Err(bad(format!(
                "a classifier needs at least 2 classes, got {}",
                names.len()
            )));
        }
        if let Some(i) = names.iter().position(|n| !n.is_string()) {
            return Err(bad(format!("class name {i} is not a string")));
        }
        let input_size = spec
            .get("input_size")
            .ok_or_else(|| bad("input_size is missing".into()))?;
        let input_size = input_size
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| {
                bad(format!(
                    "input_size {} is not a whole number of pixels",
                    quote(&input_size.to_string())
                ))
            })?;
        let min = arch.min_input_size();
        if !(min..=VISION_MAX_INPUT_SIZE).contains(&input_size) {
            return Err(bad(format!(
                "input_size {input_size} is outside {min}..={VISION_MAX_INPUT_SIZE} for {arch}"
            )));
        }
        Ok(ModelShape {
            arch,
            head,
            num_classes: names.len(),
            input_size,
        })
    }
}

impl fmt::Display for ModelShape {
    /// `resnet18 with the cam head for 2 classes`; the CNN's flatten head
    /// also names the input side, which decides its shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} with the {} head for {} classes",
            self.arch, self.head, self.num_classes
        )?;
        if (self.arch, self.head) == (Arch::Cnn, Head::Linear) {
            write!(f, " at {0}×{0} pixels", self.input_size)?;
        }
        Ok(())
    }
}

fn class_names(spec: &serde_json::Map<String, Value>) -> Result<&[Value]> {
    match spec.get("class_names") {
        None => Err(Error::Spec("class_names is missing".into())),
        Some(Value::Array(names)) => Ok(names),
        Some(_) => Err(Error::Spec("class_names is not a list".into())),
    }
}

/// The registry's bounds on what a model version may declare. They keep
/// every request about a version small: each `Explain` answer carries all
/// class names and one probability and logit per class for every image, and
/// the explainer's memory per image grows with the square of the input side.
/// A coordinator configuration can embed this (`{}` is the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecLimits {
    /// Most classes a version may have. Default 1000: ImageNet's, the
    /// largest label set of any weights the cluster works with
    /// (torchvision's `fc`); at 128 bytes a name, an answer for 32 images
    /// then carries at most ~4 MiB of class names.
    pub max_classes: usize,
    /// Longest class name in bytes (UTF-8). Default 128, as for model
    /// names and aliases.
    pub max_class_name_bytes: usize,
    /// Largest input side in pixels. Default 1024: twice the largest the
    /// lecture uses (Pets at 512), where a ResNet34's activations for one
    /// image are already ~4× those at 512. Never above
    /// [`VISION_MAX_INPUT_SIZE`]; the smallest side is the architecture's
    /// ([`Arch::min_input_size`]), not a limit.
    pub max_input_size: u32,
    /// Most aliases one registration (an import, or a job's spec) may set.
    /// Default 16.
    pub max_aliases: usize,
}

impl Default for SpecLimits {
    fn default() -> Self {
        SpecLimits {
            max_classes: 1000,
            max_class_name_bytes: 128,
            max_input_size: 1024,
            max_aliases: 16,
        }
    }
}

impl SpecLimits {
    /// Checks the limits themselves (for a configuration's `validate`):
    /// room for 2 classes with 1-byte names, an input side a ResNet can
    /// take and vision can build.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, why: String| Err(Error::Limits(format!("{what} {why}")));
        if self.max_classes < 2 {
            return bad("max_classes", format!("{} is below 2", self.max_classes));
        }
        if self.max_class_name_bytes == 0 {
            return bad("max_class_name_bytes", "is 0".into());
        }
        let resnet_min = Arch::Resnet18.min_input_size();
        if !(resnet_min..=VISION_MAX_INPUT_SIZE).contains(&self.max_input_size) {
            return bad(
                "max_input_size",
                format!(
                    "{} is outside {resnet_min}..={VISION_MAX_INPUT_SIZE}",
                    self.max_input_size
                ),
            );
        }
        Ok(())
    }
}

/// Checks a stored spec for registration: everything
/// [`ModelShape::from_spec`] checks, then `limits` (number of classes,
/// class-name length, input side), and the cluster's rules on names: class
/// names non-empty, distinct, free of control characters (they are printed
/// in terminals and drawn in titles). The lecture's CNN takes the linear head
/// only (as jobs and the wire's `ModelSpec` require, though vision could
/// build others). Errors quote at most a short prefix of any name.
pub fn check_spec(spec: &Value, limits: &SpecLimits) -> Result<ModelShape> {
    let bad = |reason: String| Err(Error::Spec(reason));
    // Count first, so a million names is refused before anything looks at them.
    if let Some(Value::Array(names)) = spec.get("class_names")
        && names.len() > limits.max_classes
    {
        return bad(format!(
            "{} classes; at most {} are allowed",
            names.len(),
            limits.max_classes
        ));
    }
    let shape = ModelShape::from_spec(spec)?;
    if shape.arch == Arch::Cnn && shape.head != Head::Linear {
        return bad(format!(
            "the cnn has a linear head only, not {}",
            shape.head
        ));
    }
    if shape.input_size > limits.max_input_size {
        return bad(format!(
            "input_size {} is over the limit of {}",
            shape.input_size, limits.max_input_size
        ));
    }
    let names = spec
        .get("class_names")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut seen = HashSet::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let name = name.as_str().unwrap_or_default();
        if name.is_empty() {
            return bad(format!("class name {i} is empty"));
        }
        if name.len() > limits.max_class_name_bytes {
            return bad(format!(
                "class name {i} {} is {} bytes long; at most {} allowed",
                quote(name),
                name.len(),
                limits.max_class_name_bytes
            ));
        }
        if name.chars().any(char::is_control) {
            return bad(format!(
                "class name {i} {} holds a control character",
                quote(name)
            ));
        }
        if !seen.insert(name) {
            return bad(format!("class name {} appears twice", quote(name)));
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pets() -> Value {
        json!({
            "arch": "resnet34",
            "head": "cam",
            "class_names": ["cat", "dog"],
            "input_size": 512,
            "normalization": "imagenet",
        })
    }

    fn refused(spec: &Value) -> String {
        check_spec(spec, &SpecLimits::default())
            .unwrap_err()
            .to_string()
    }

    fn with(key: &str, value: Value) -> Value {
        let mut spec = pets();
        spec[key] = value;
        spec
    }

    #[test]
    fn the_lecture_specs_pass() {
        let shape = check_spec(&pets(), &SpecLimits::default()).unwrap();
        assert_eq!(
            shape,
            ModelShape {
                arch: Arch::Resnet34,
                head: Head::Cam,
                num_classes: 2,
                input_size: 512,
            }
        );
        assert_eq!(
            shape.to_string(),
            "resnet34 with the cam head for 2 classes"
        );
        let cifar: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
        let cnn = json!({"arch": "cnn", "head": "linear", "class_names": cifar,
                         "input_size": 32, "normalization": "none"});
        let shape = check_spec(&cnn, &SpecLimits::default()).unwrap();
        assert_eq!(
            shape.to_string(),
            "cnn with the linear head for 10 classes at 32×32 pixels"
        );
    }

    #[test]
    fn class_counts_are_bounded_before_names_are_read() {
        let many: Vec<Value> = (0..20_000).map(|_| Value::Null).collect();
        assert_eq!(
            refused(&with("class_names", many.into())),
            "bad model spec: 20000 classes; at most 1000 are allowed"
        );
        let thousand: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        check_spec(
            &with("class_names", json!(thousand)),
            &SpecLimits::default(),
        )
        .unwrap();
        assert!(refused(&with("class_names", json!(["cat"]))).contains("at least 2 classes"));
        assert!(refused(&with("class_names", json!("cat"))).contains("not a list"));
        assert!(refused(&with("class_names", json!(["cat", 3]))).contains("class name 1 is not"));
    }

    #[test]
    fn class_names_are_bounded_and_quoted_short() {
        let long = "x".repeat(10_000);
        let err = refused(&with("class_names", json!(["cat", long])));
        assert!(err.contains("class name 1 "), "{err}");
        assert!(err.contains("10000 bytes long; at most 128"), "{err}");
        assert!(err.len() < 200, "{err}");
        assert!(err.contains(&format!("\"{}\"…", "x".repeat(64))), "{err}");
        assert!(
            refused(&with("class_names", json!(["cat", ""]))).contains("class name 1 is empty")
        );
        assert!(
            refused(&with("class_names", json!(["cat", "cat"]))).contains("\"cat\" appears twice")
        );
        let err = refused(&with("class_names", json!(["cat", "do\u{1b}[31mg"])));
        assert!(
            err.contains("control character") && err.contains("\\u{1b}"),
            "{err}"
        );
        // Multi-byte names count bytes, and are cut on a character boundary.
        let umlauts = "ü".repeat(100);
        let err = refused(&with("class_names", json!(["cat", umlauts])));
        assert!(err.contains("200 bytes long"), "{err}");
    }

    #[test]
    fn input_sizes_are_bounded_per_arch_and_by_the_limit() {
        assert_eq!(
            refused(&with("input_size", json!(1025))),
            "bad model spec: input_size 1025 is over the limit of 1024"
        );
        assert!(refused(&with("input_size", json!(16))).contains("outside 32..=4096 for resnet34"));
        assert!(refused(&with("input_size", json!(5000))).contains("outside 32..=4096"));
        assert!(refused(&with("input_size", json!(224.5))).contains("not a whole number"));
        assert!(refused(&with("input_size", json!(-1))).contains("not a whole number"));
        let err = refused(&with("input_size", json!("a".repeat(1000))));
        assert!(err.len() < 200, "{err}");
        let mut cnn = with("arch", json!("cnn"));
        cnn["head"] = json!("linear");
        cnn["input_size"] = json!(6);
        check_spec(&cnn, &SpecLimits::default()).unwrap();
        let limits = SpecLimits {
            max_input_size: 2048,
            ..SpecLimits::default()
        };
        check_spec(&with("input_size", json!(2048)), &limits).unwrap();
    }

    #[test]
    fn names_must_be_spelled_as_vision_reads_them() {
        assert!(refused(&with("arch", json!("ResNet18"))).contains("arch \"ResNet18\" is not"));
        assert!(refused(&with("head", json!("gap"))).contains("head \"gap\" is not"));
        assert!(refused(&with("head", json!(1))).contains("head is not a string"));
        assert!(refused(&with("normalization", json!("z"))).contains("normalization"));
        assert!(refused(&json!([1, 2])).contains("not a JSON object"));
        let mut spec = pets();
        spec.as_object_mut().unwrap().remove("input_size");
        assert!(refused(&spec).contains("input_size is missing"));
        let err = refused(&with("arch", json!("r".repeat(100_000))));
        assert!(err.len() < 200, "{err}");
        let mut cnn_cam = with("arch", json!("cnn"));
        cnn_cam["input_size"] = json!(32);
        assert!(refused(&cnn_cam).contains("linear head only, not cam"));
        // Vision could build it, so the weights check alone takes it.
        assert_eq!(ModelShape::from_spec(&cnn_cam).unwrap().head, Head::Cam);
    }

    #[test]
    fn stored_specs_read_typed_with_their_resize() {
        let spec = VersionSpec::from_value(&pets()).unwrap();
        assert_eq!(spec.resize, ResizeMethod::Crop);
        assert_eq!(spec.model.class_names, ["cat", "dog"]);
        let squished = with("resize", json!("squish"));
        let spec = VersionSpec::from_value(&squished).unwrap();
        assert_eq!(spec.resize, ResizeMethod::Squish);
        assert_eq!(spec.to_value(), squished);
        // A checkpoint's spec has no resize key; the model alone writes none.
        assert_eq!(spec.model.to_value(), pets());
        let err = VersionSpec::from_value(&with("resize", json!("stretch"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad model spec: resize \"stretch\" is not one of crop, squish, pad"
        );
        let err = ModelSpec::from_json(b"{").unwrap_err().to_string();
        assert!(err.starts_with("bad model spec: it is not JSON"), "{err}");
        let err = ModelSpec::from_value(&with("arch", json!("vgg"))).unwrap_err();
        assert!(
            err.to_string().contains("arch \"vgg\" is not one of"),
            "{err}"
        );
    }

    #[test]
    fn limits_validate_and_read_from_partial_config() {
        SpecLimits::default().validate().unwrap();
        let limits: SpecLimits = serde_json::from_str(r#"{"max_classes": 50}"#).unwrap();
        assert_eq!(limits.max_classes, 50);
        assert_eq!(limits.max_input_size, 1024);
        assert!(serde_json::from_str::<SpecLimits>(r#"{"max_clases": 50}"#).is_err());
        let bad = SpecLimits {
            max_input_size: 8192,
            ..SpecLimits::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("max_input_size")
        );
        let bad = SpecLimits {
            max_classes: 1,
            ..SpecLimits::default()
        };
        assert!(bad.validate().is_err());
    }
}
