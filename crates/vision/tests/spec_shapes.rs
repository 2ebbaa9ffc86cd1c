//! `camshaft-spec`'s table against the models vision builds, so the
//! two cannot drift apart: for every architecture × head and a few class
//! counts, the weights `save_weights` writes (what a checkpoint, and so a
//! trained version, holds) are exactly the expected tensors and pass
//! `check_weights`; what the check refuses, vision cannot load either, and
//! what it accepts, vision loads.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;

use camshaft_spec::{ModelShape, SpecLimits, check_spec, check_weights};
use camshaft_vision::{
    Arch, Head, HeadPolicy, Model, ModelSpec, Normalization, load_safetensors_bytes, save_weights,
};
use tch::{Device, Kind, Tensor};

const ARCHS: [Arch; 3] = [Arch::Cnn, Arch::Resnet18, Arch::Resnet34];
const HEADS: [Head; 3] = [Head::Linear, Head::Fastai, Head::Cam];

fn spec(arch: Arch, head: Head, classes: usize, input_size: u32) -> ModelSpec {
    ModelSpec {
        arch,
        head,
        class_names: (0..classes).map(|i| format!("class {i}")).collect(),
        input_size,
        normalization: Normalization::Imagenet,
    }
}

/// The spec as stored beside a checkpoint and a model version.
fn stored(spec: &ModelSpec) -> serde_json::Value {
    serde_json::to_value(spec).unwrap()
}

/// `save_weights`' file, as bytes.
fn saved(model: &Model) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    save_weights(model, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// `tensors` written by tch's safetensors writer, as bytes.
fn written(tensors: &[(String, Tensor)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    Tensor::write_safetensors(tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// Name → (dtype, shape) of a safetensors file's header.
fn header(bytes: &[u8]) -> BTreeMap<String, (String, Vec<i64>)> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let shape = info.shape.iter().map(|&d| d as i64).collect();
            (name, (format!("{:?}", info.dtype), shape))
        })
        .collect()
}

fn expected(spec: &ModelSpec) -> BTreeMap<String, (String, Vec<i64>)> {
    // The stored JSON reads back as the same shape the typed spec gives.
    let shape = ModelShape::from_spec(&stored(spec)).unwrap();
    assert_eq!(shape, spec.shape());
    let list = shape.expected_parameters();
    let n = list.len();
    let map: BTreeMap<_, _> = list
        .into_iter()
        .map(|(name, shape)| (name, ("F32".to_string(), shape)))
        .collect();
    assert_eq!(map.len(), n, "the table names a tensor twice");
    map
}

fn loads(spec: &ModelSpec, bytes: &[u8]) -> Result<(), String> {
    let mut model = Model::new(spec.clone(), Device::Cpu).unwrap();
    load_safetensors_bytes(&mut model, bytes, HeadPolicy::Require, "test:1")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_model_saves_exactly_the_tensors_the_table_expects() {
    for arch in ARCHS {
        for head in HEADS {
            // The CNN's flatten head depends on the input side; a ResNet's
            // tensors do not.
            let sizes: &[u32] = match arch {
                Arch::Cnn => &[32, 20],
                _ => &[64],
            };
            for &size in sizes {
                for classes in [2, 37] {
                    let spec = spec(arch, head, classes, size);
                    let what = format!("{arch} {head} {classes} classes at {size}");
                    let model = Model::new(spec.clone(), Device::Cpu).unwrap();
                    let bytes = saved(&model);
                    assert_eq!(header(&bytes), expected(&spec), "{what}");
                    check_weights(&stored(&spec), &bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                    // The registry's spec rules take every combination jobs
                    // and the wire allow (the CNN with a linear head only).
                    let registrable = check_spec(&stored(&spec), &SpecLimits::default());
                    let allowed = arch != Arch::Cnn || head == Head::Linear;
                    assert_eq!(registrable.is_ok(), allowed, "{what}: {registrable:?}");
                }
            }
        }
    }
}

#[test]
fn weights_for_another_head_or_with_a_tensor_missing_are_refused() {
    let pets = spec(Arch::Resnet18, Head::Cam, 2, 64);
    let ten = Model::new(spec(Arch::Resnet18, Head::Cam, 10, 64), Device::Cpu).unwrap();
    let bytes = saved(&ten);
    let err = check_weights(&stored(&pets), &bytes)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "weights do not fit resnet18 with the cam head for 2 classes: \
         fc.weight is [10, 512], expected [2, 512]"
    );
    assert!(loads(&pets, &bytes).is_err());

    // The linear head's weights for a CAM spec: `fc.bias` is one too many.
    let linear = Model::new(spec(Arch::Resnet18, Head::Linear, 2, 64), Device::Cpu).unwrap();
    let bytes = saved(&linear);
    let err = check_weights(&stored(&pets), &bytes)
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("\"fc.bias\" is unexpected"), "{err}");
    assert!(loads(&pets, &bytes).is_err());

    let model = Model::new(pets.clone(), Device::Cpu).unwrap();
    let mut vars: Vec<(String, Tensor)> = model.named_variables().into_iter().collect();
    vars.retain(|(name, _)| name != "layer1.0.bn1.running_var");
    let bytes = written(&vars);
    let err = check_weights(&stored(&pets), &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(": layer1.0.bn1.running_var is missing"),
        "{err}"
    );
    assert!(loads(&pets, &bytes).is_err());
}

#[test]
fn what_the_check_accepts_vision_loads() {
    let pets = spec(Arch::Resnet34, Head::Fastai, 2, 64);
    let model = Model::new(pets.clone(), Device::Cpu).unwrap();
    let vars = model.named_variables();
    // Half-precision weights, with PyTorch's BatchNorm counters beside them
    // (a torchvision state dict saved with `safetensors.torch`).
    for kind in [Kind::Half, Kind::BFloat16] {
        let mut tensors: Vec<(String, Tensor)> = vars
            .iter()
            .map(|(name, t)| (name.clone(), t.to_kind(kind)))
            .collect();
        for name in vars.keys() {
            if let Some(prefix) = name.strip_suffix(".running_var") {
                tensors.push((
                    format!("{prefix}.num_batches_tracked"),
                    Tensor::zeros([], (Kind::Int64, Device::Cpu)),
                ));
            }
        }
        let bytes = written(&tensors);
        check_weights(&stored(&pets), &bytes).unwrap();
        loads(&pets, &bytes).unwrap();
    }
    // Double precision would load, but the registry keeps to 32 bits or fewer.
    let doubles: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(name, t)| (name.clone(), t.to_kind(Kind::Double)))
        .collect();
    let err = check_weights(&stored(&pets), &written(&doubles))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is F64, expected F32, F16 or BF16"), "{err}");
}
