//! Our ResNets give torchvision's logits on torchvision's weights.
//!
//! The reference state dicts and outputs are made at test time by the
//! `.venv`'s torchvision (`tests/reference/torchvision_logits.py`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use camshaft_vision::weights::read_named_tensors;
use camshaft_vision::{Arch, Head, HeadPolicy, Model, ModelSpec, Normalization, import_weights};
use tch::{Device, Tensor};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CAMSHAFT_PYTHON") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

fn reference(arch: &str, cam_classes: usize, dir: &Path) -> (PathBuf, Tensor, Tensor) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/torchvision_logits.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(arch).arg(dir);
    if cam_classes > 0 {
        cmd.args(["--no-bias-fc", &cam_classes.to_string()]);
    }
    let out = cmd
        .output()
        .expect("run the .venv python (scripts/setup creates it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = if cam_classes > 0 {
        format!("{arch}-cam")
    } else {
        arch.to_string()
    };
    let io = read_named_tensors(&dir.join(format!("{name}-io.pth"))).unwrap();
    let get = |k: &str| io.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    (dir.join(format!("{name}.pth")), get("input"), get("logits"))
}

fn spec(arch: Arch, head: Head, classes: usize) -> ModelSpec {
    ModelSpec {
        arch,
        head,
        class_names: (0..classes).map(|i| format!("class{i}")).collect(),
        input_size: 64,
        normalization: Normalization::Imagenet,
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn resnet18_and_resnet34_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    for (name, arch) in [("resnet18", Arch::Resnet18), ("resnet34", Arch::Resnet34)] {
        let (weights, x, expected) = reference(name, 0, dir.path());
        let mut model = Model::new(spec(arch, Head::Linear, 1000), Device::Cpu).unwrap();
        let report = import_weights(&mut model, &weights, HeadPolicy::Require).unwrap();
        assert!(report.kept_initialised.is_empty());
        let logits = tch::no_grad(|| model.forward_t(&x, false));
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff <= 1e-4, "{name}: max |ours - torchvision| = {diff}");
    }
}

#[test]
fn imagenet_fc_is_dropped_for_a_new_head_and_cam_head_imports_as_is() {
    let dir = tempfile::tempdir().unwrap();
    // ImageNet-shaped weights into a 2-class CAM model: the body loads, fc is dropped.
    let (weights, x, _) = reference("resnet18", 0, dir.path());
    let mut model = Model::new(spec(Arch::Resnet18, Head::Cam, 2), Device::Cpu).unwrap();
    let report = import_weights(&mut model, &weights, HeadPolicy::KeepInitialised).unwrap();
    assert_eq!(report.kept_initialised, vec!["fc.weight".to_string()]);
    assert!(report.ignored.iter().any(|k| k.starts_with("fc.bias")));
    // ...and the strict policy names the offending keys.
    let mut strict = Model::new(spec(Arch::Resnet18, Head::Cam, 2), Device::Cpu).unwrap();
    let err = import_weights(&mut strict, &weights, HeadPolicy::Require)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fc.weight") && err.contains("fc.bias"),
        "{err}"
    );
    // A body mismatch is always an error.
    let mut wrong = Model::new(spec(Arch::Resnet34, Head::Cam, 2), Device::Cpu).unwrap();
    let err = import_weights(&mut wrong, &weights, HeadPolicy::KeepInitialised)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer3.5.conv1.weight"), "{err}");
    let _ = x;

    // A torchvision ResNet whose fc is Linear(512, 2, bias=False) is a CAM-head model.
    let (weights, x, expected) = reference("resnet18", 2, dir.path());
    let mut cam = Model::new(spec(Arch::Resnet18, Head::Cam, 2), Device::Cpu).unwrap();
    import_weights(&mut cam, &weights, HeadPolicy::Require).unwrap();
    let logits = tch::no_grad(|| cam.forward_t(&x, false));
    assert!(max_abs_diff(&logits, &expected) <= 1e-4);
}
