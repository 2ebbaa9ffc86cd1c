//! Conv+BatchNorm folding for serving: the folded ResNet gives the unfolded
//! model's logits and CAM maps (to 1e-4 in float32; in bfloat16 no farther
//! from float32 than the unfolded bfloat16 model is), channels-last or not,
//! and with its convolutions packed for oneDNN.
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_vision::cam::{CamMethod, cam_all_classes, explain_batch};
use camshaft_vision::model::channels_last;
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization, Precision};
use tch::{Device, Kind, Tensor};

fn spec(arch: Arch) -> ModelSpec {
    ModelSpec {
        arch,
        head: Head::Cam,
        class_names: (0..4).map(|i| format!("c{i}")).collect(),
        input_size: 64,
        normalization: Normalization::None,
    }
}

/// A ResNet whose BatchNorms hold trained-looking statistics and affine
/// parameters (fresh ones are the identity, which would fold trivially).
fn trained_looking(arch: Arch) -> Model {
    tch::manual_seed(5);
    let m = Model::new(spec(arch), Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (name, v) in m.named_variables() {
            let mut v = v;
            let r = Tensor::rand_like(&v);
            if name.ends_with(".running_var")
                || (m.is_batch_norm(&name) && name.ends_with(".weight"))
            {
                v.copy_(&(r * 1.5 + 0.25));
            } else if name.ends_with(".running_mean")
                || (m.is_batch_norm(&name) && name.ends_with(".bias"))
            {
                v.copy_(&((r - 0.5) * 0.4));
            }
        }
    });
    m
}

fn copy_of(m: &Model, arch: Arch) -> Model {
    let mut c = Model::new(spec(arch), Device::Cpu).unwrap();
    c.var_store_mut().copy(m.var_store()).unwrap();
    c
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn folded_resnets_give_the_same_logits_and_maps() {
    for arch in [Arch::Resnet18, Arch::Resnet34] {
        let plain = trained_looking(arch);
        let mut folded = copy_of(&plain, arch);
        folded.fold_batch_norm().unwrap();
        assert!(folded.is_folded() && folded.is_inference_only());
        let x = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
        let (logits, maps) = cam_all_classes(&plain, &x).unwrap();
        let (flogits, fmaps) = cam_all_classes(&folded, &x).unwrap();
        let scale = logits.abs().max().double_value(&[]).max(1.0);
        assert!(max_diff(&logits, &flogits) / scale < 1e-4, "{arch} logits");
        assert!(max_diff(&maps, &fmaps) / scale < 1e-4, "{arch} maps");
        // Grad-CAM differentiates through the folded body as well.
        let targets = [None, Some(1), Some(2)];
        let (_, g, _) = explain_batch(&plain, &x, CamMethod::GradCam, &targets).unwrap();
        let (_, fg, _) = explain_batch(&folded, &x, CamMethod::GradCam, &targets).unwrap();
        let gscale = g.abs().max().double_value(&[]).max(1e-6);
        assert!(max_diff(&g, &fg) / gscale < 1e-4, "{arch} grad-cam");

        // Channels-last after folding: the folded weights and new biases
        // are converted too.
        folded.to_channels_last().unwrap();
        let (clogits, _) = cam_all_classes(&folded, &channels_last(&x).unwrap()).unwrap();
        assert!(
            max_diff(&logits, &clogits) / scale < 1e-4,
            "{arch} channels-last"
        );

        // Packed for oneDNN: the same logits and maps, and Grad-CAM, which
        // differentiates through tch's convolutions past the packed
        // features.
        let convs = folded.pack_convolutions().unwrap();
        assert_eq!(convs, if arch == Arch::Resnet18 { 20 } else { 36 });
        assert!(folded.is_packed());
        let xl = channels_last(&x).unwrap();
        let (plogits, pmaps) = cam_all_classes(&folded, &xl).unwrap();
        assert!(max_diff(&logits, &plogits) / scale < 1e-4, "{arch} packed");
        assert!(max_diff(&maps, &pmaps) / scale < 1e-4, "{arch} packed maps");
        let (_, pg, _) = explain_batch(&folded, &xl, CamMethod::GradCam, &targets).unwrap();
        assert!(max_diff(&g, &pg) / gscale < 1e-4, "{arch} packed grad-cam");
    }
}

#[test]
fn only_folded_float32_cpu_bodies_pack() {
    let arch = Arch::Resnet18;
    let mut plain = trained_looking(arch);
    assert!(plain.pack_convolutions().is_err(), "unfolded");
    let mut bf16 = copy_of(&plain, arch);
    bf16.fold_batch_norm().unwrap();
    bf16.body_in(Precision::Bf16).unwrap();
    assert!(bf16.pack_convolutions().is_err(), "bfloat16 body");
    plain.fold_batch_norm().unwrap();
    plain.pack_convolutions().unwrap();
    assert!(plain.body_in(Precision::Bf16).is_err(), "packed, then bf16");
    assert!(plain.body_in(Precision::Fp32).is_ok());
}

#[test]
fn folded_bf16_bodies_stay_as_close_as_unfolded_ones() {
    let arch = Arch::Resnet18;
    let reference = trained_looking(arch);
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let (logits, _) = cam_all_classes(&reference, &x).unwrap();
    let mut plain = copy_of(&reference, arch);
    plain.body_in(Precision::Bf16).unwrap();
    let mut folded = copy_of(&reference, arch);
    folded.fold_batch_norm().unwrap();
    folded.body_in(Precision::Bf16).unwrap();
    let (plain_logits, _) = cam_all_classes(&plain, &x).unwrap();
    let (folded_logits, _) = cam_all_classes(&folded, &x).unwrap();
    let scale = logits.abs().max().double_value(&[]).max(1.0);
    let (e_plain, e_folded) = (
        max_diff(&logits, &plain_logits) / scale,
        max_diff(&logits, &folded_logits) / scale,
    );
    assert!(e_folded < 0.05, "bf16 folded is {e_folded} from float32");
    assert!(
        e_folded <= 2.0 * e_plain + 1e-3,
        "folded {e_folded} vs unfolded {e_plain}"
    );
    // Folding after the conversion would fold rounded statistics: refused.
    assert!(plain.fold_batch_norm().is_err());
}

#[test]
fn the_small_cnn_has_nothing_to_fold() {
    let mut s = spec(Arch::Cnn);
    s.head = Head::Linear;
    s.input_size = 32;
    let plain = Model::new(s.clone(), Device::Cpu).unwrap();
    let mut folded = Model::new(s, Device::Cpu).unwrap();
    folded.var_store_mut().copy(plain.var_store()).unwrap();
    folded.fold_batch_norm().unwrap();
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(
        max_diff(&plain.forward_t(&x, false), &folded.forward_t(&x, false)),
        0.0
    );
}
