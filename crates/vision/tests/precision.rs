//! Mixed precision and channels-last training on CPU: bfloat16 autocast
//! learns, channels-last computes what the default layout computes, and
//! float16's loss scaler skips overflowing steps without touching the
//! weights, then recovers, and survives a checkpoint.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use camshaft_data::SyntheticConfig;
use camshaft_vision::model::{channels_last, is_channels_last};
use camshaft_vision::precision::{LossScaleConfig, LossScaleState};
use camshaft_vision::{
    Arch, HeadKind, Learner, LearnerConfig, LoaderConfig, LrRange, Model, ModelSpec, Normalization,
    Plan, Precision,
};
use tch::{Device, Tensor};

fn serial(seed: u64) -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    guard
}

fn model(arch: Arch, cfg: &SyntheticConfig) -> Model {
    let spec = ModelSpec {
        arch,
        head: HeadKind::Linear,
        class_names: cfg.class_names(),
        input_size: cfg.image_size,
        normalization: Normalization::None,
    };
    Model::new(spec, Device::Cpu).unwrap()
}

fn learner(model: Model, cfg: &SyntheticConfig, batch_size: usize, base: LearnerConfig) -> Learner {
    let config = LearnerConfig {
        loader: LoaderConfig {
            batch_size,
            image_size: cfg.image_size,
            seed: cfg.seed,
            ..LoaderConfig::default()
        },
        progress: false,
        ..base
    };
    Learner::new(model, cfg.splits().unwrap(), config).unwrap()
}

fn copies(vars: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    vars.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
}

fn max_abs_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    a.iter()
        .map(|(k, v)| (v - &b[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// The small-CNN run of `learning.rs` (0.94 in fp32), in bfloat16 autocast
/// with channels-last weights and inputs: it learns as well, and the
/// weights keep their layout through the optimiser's steps.
#[test]
fn bf16_channels_last_cnn_learns_synthetic_shapes() {
    let _serial = serial(1);
    let cfg = SyntheticConfig {
        seed: 1,
        train_len: 4096,
        valid_len: 512,
        image_size: 32,
        num_classes: 2,
    };
    let base = LearnerConfig {
        precision: Precision::Bf16,
        channels_last: true,
        ..LearnerConfig::default()
    };
    let mut l = learner(model(Arch::Cnn, &cfg), &cfg, 64, base);
    let rows = l.fit_one_cycle(6, LrRange::Single(3e-3)).unwrap();
    let last = rows.last().unwrap();
    assert!(last.train_loss < rows[0].train_loss);
    assert!(last.accuracy >= 0.85, "accuracy {:.3}", last.accuracy);
    let vars = l.model().named_variables();
    let conv = vars.values().find(|v| v.dim() == 4).unwrap();
    assert!(is_channels_last(conv), "strides {:?}", conv.stride());
    assert!(l.loss_scale().unwrap().is_none(), "bf16 needs no scaler");

    // A checkpoint stores the default layout and the resumed run goes on
    // channels-last, with the same values.
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    l.save_checkpoint(&ckpt).unwrap();
    let resumed = Learner::from_checkpoint(
        &ckpt,
        cfg.splits().unwrap(),
        Device::Cpu,
        &LearnerConfig::default(),
    )
    .unwrap();
    assert_eq!(resumed.config().precision, Precision::Bf16);
    let again = resumed.model().named_variables();
    assert_eq!(max_abs_diff(&vars, &again), 0.0);
    assert!(
        again
            .values()
            .filter(|v| v.dim() == 4)
            .all(is_channels_last)
    );
}

/// ResNet18 (BatchNorm, residuals) from the same weights, default layout
/// vs channels-last, fp32: the same logits and the same gradients, up to
/// the kernels' rounding (an optimiser then takes the same step).
#[test]
fn channels_last_computes_the_same_logits_and_gradients() {
    let _serial = serial(3);
    let cfg = SyntheticConfig {
        seed: 3,
        train_len: 64,
        valid_len: 64,
        image_size: 32,
        num_classes: 3,
    };
    let plain = model(Arch::Resnet18, &cfg);
    let mut nhwc = model(Arch::Resnet18, &cfg);
    nhwc.var_store_mut().copy(plain.var_store()).unwrap();
    nhwc.to_channels_last().unwrap();
    let conv = nhwc.named_variables()["conv1.weight"].shallow_clone();
    assert!(is_channels_last(&conv), "strides {:?}", conv.stride());

    let x = Tensor::rand([8, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
    let mut logits = Vec::new();
    for (m, x) in [
        (&plain, x.shallow_clone()),
        (&nhwc, channels_last(&x).unwrap()),
    ] {
        let out = m.forward_t(&x, true);
        out.cross_entropy_for_logits(&y).backward();
        logits.push(out.detach());
    }
    let d = (&logits[0] - &logits[1]).abs().max().double_value(&[]);
    assert!(d < 1e-4, "logits differ by {d}");
    let (ga, gb) = (plain.named_variables(), nhwc.named_variables());
    for (name, a) in &ga {
        if !a.requires_grad() {
            continue;
        }
        let (a, b) = (a.grad(), gb[name].grad());
        let scale = a.abs().max().double_value(&[]).max(1e-6);
        let d = (&a - &b).abs().max().double_value(&[]);
        assert!(
            d <= 1e-3 * scale,
            "{name}: gradients differ by {d} (largest {scale})"
        );
    }
}

/// float16 with a first scale of 2⁴⁰: the scaled gradients overflow, so
/// the first step is skipped (weights untouched, scale halved) on and on
/// until the scale fits; then the run learns, and a checkpoint carries the
/// scaler's state.
#[test]
fn fp16_skips_overflowing_steps_and_recovers() {
    let _serial = serial(4);
    let cfg = SyntheticConfig {
        seed: 4,
        train_len: 32,
        valid_len: 32,
        image_size: 32,
        num_classes: 2,
    };
    let init = 2f64.powi(40);
    let base = LearnerConfig {
        precision: Precision::Fp16,
        loss_scale: LossScaleConfig {
            init_scale: init,
            ..LossScaleConfig::default()
        },
        ..LearnerConfig::default()
    };
    // One batch per epoch: an epoch is one step.
    let mut l = learner(model(Arch::Cnn, &cfg), &cfg, 32, base);
    let before = copies(&l.model().named_variables());
    l.start(Plan::fit(48, 1e-3)).unwrap();
    let first = l.next_epoch().unwrap().unwrap();
    assert!(first.train_loss.is_finite(), "the loss is unscaled");
    assert_eq!(
        max_abs_diff(&before, &l.model().named_variables()),
        0.0,
        "a skipped step changes no weight"
    );
    assert_eq!(
        l.loss_scale().unwrap(),
        Some(LossScaleState {
            scale: init / 2.0,
            growth_tracker: 0
        })
    );
    for _ in 0..47 {
        l.next_epoch().unwrap().unwrap();
    }
    let state = l.loss_scale().unwrap().unwrap();
    assert!(state.scale <= init / 1024.0, "scale {}", state.scale);
    assert!(state.growth_tracker > 0, "clean steps since: {state:?}");
    assert!(max_abs_diff(&before, &l.model().named_variables()) > 0.0);

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    l.save_checkpoint(&ckpt).unwrap();
    let resumed = Learner::from_checkpoint(
        &ckpt,
        cfg.splits().unwrap(),
        Device::Cpu,
        &LearnerConfig::default(),
    )
    .unwrap();
    assert_eq!(resumed.config().precision, Precision::Fp16);
    assert_eq!(resumed.loss_scale().unwrap(), Some(state));
}
