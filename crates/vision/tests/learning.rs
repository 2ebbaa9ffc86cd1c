//! The learner learns (in fp32, and in bf16 autocast channels-last),
//! resumes exactly (float16's loss scaler included), and its CAMs point at
//! the object.
//!
//! All on the synthetic shapes set (generated, nothing downloaded) on CPU.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use camshaft_data::{Dataset, ResizeMethod, Split, Synthetic, SyntheticConfig};
use camshaft_vision::cam::{POINTING_TOLERANCE, explain, pointing_game};
use camshaft_vision::model::{channels_last, is_channels_last};
use camshaft_vision::precision::{LossScaleConfig, LossScaleState};
use camshaft_vision::{
    Arch, CamMethod, Head, Learner, LearnerConfig, LoaderConfig, LrRange, Model, ModelSpec,
    Normalization, Plan, Precision,
};
use tch::{Device, Tensor};

/// These tests run one at a time and seed libtorch's global generator as
/// `train --seed` does, so each model starts from the same weights
/// on every run and the example reproduces a test's numbers.
fn serial(seed: u64) -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    guard
}

fn data(cfg: &SyntheticConfig) -> camshaft_data::Splits {
    cfg.splits().unwrap()
}

fn model(arch: Arch, head: Head, cfg: &SyntheticConfig) -> Model {
    let spec = ModelSpec {
        arch,
        head,
        class_names: cfg.class_names(),
        input_size: cfg.image_size,
        normalization: Normalization::None,
    };
    Model::new(spec, Device::Cpu).unwrap()
}

/// Two models with the same initial weights.
fn twins(arch: Arch, head: Head, cfg: &SyntheticConfig) -> (Model, Model) {
    let a = model(arch, head, cfg);
    let mut b = model(arch, head, cfg);
    b.var_store_mut().copy(a.var_store()).unwrap();
    (a, b)
}

fn learner(arch: Arch, head: Head, cfg: &SyntheticConfig, batch_size: usize) -> Learner {
    with_model(model(arch, head, cfg), cfg, batch_size)
}

fn with_model(model: Model, cfg: &SyntheticConfig, batch_size: usize) -> Learner {
    with_config(model, cfg, batch_size, LearnerConfig::default())
}

/// A learner over the synthetic set `cfg` with `base`'s settings (mixed
/// precision, layout) and the loader and progress these tests use.
fn with_config(
    model: Model,
    cfg: &SyntheticConfig,
    batch_size: usize,
    base: LearnerConfig,
) -> Learner {
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
    Learner::new(model, data(cfg), config).unwrap()
}

/// The lecture's small CNN, 2 shapes at 32×32: 0.94 after 6 epochs
/// (`train --arch cnn --head linear --image-size 32 --classes 2
/// --epochs 6 --lr 3e-3 --train-len 4096 --seed 1`; 0.98 with seed 2),
/// about 15 s on 2 cores; chance is 0.5.
#[test]
fn small_cnn_learns_synthetic_shapes() {
    let _serial = serial(1);
    let cfg = SyntheticConfig {
        seed: 1,
        train_len: 4096,
        valid_len: 512,
        image_size: 32,
        num_classes: 2,
    };
    let mut l = learner(Arch::Cnn, Head::Linear, &cfg, 64);
    let rows = l.fit_one_cycle(6, LrRange::Single(3e-3)).unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last.valid_samples, 512);
    assert_eq!(last.train_samples, 4096);
    assert!(last.train_loss < rows[0].train_loss);
    assert!(last.accuracy >= 0.85, "accuracy {:.3}", last.accuracy);
}

/// Two epochs straight, or one epoch, a checkpoint, a new process's worth of
/// state rebuilt from it, and the second epoch: the same numbers.
#[test]
fn resumed_run_continues_the_same_loss_curve() {
    let _serial = serial(2);
    let cfg = SyntheticConfig {
        seed: 2,
        train_len: 512,
        valid_len: 128,
        image_size: 32,
        num_classes: 3,
    };
    let (a, b) = twins(Arch::Cnn, Head::Linear, &cfg);
    let mut straight = with_model(a, &cfg, 32);
    let mut first = with_model(b, &cfg, 32);
    let plan = Plan::one_cycle(2, LrRange::Single(2e-3));
    straight.start(plan.clone()).unwrap();
    first.start(plan).unwrap();
    let a0 = straight.next_epoch().unwrap().unwrap();
    let a1 = straight.next_epoch().unwrap().unwrap();
    let b0 = first.next_epoch().unwrap().unwrap();
    assert_eq!(a0.train_loss, b0.train_loss);

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    first.save_checkpoint(&ckpt).unwrap();
    drop(first);
    let mut resumed = Learner::from_checkpoint(
        &ckpt,
        data(&cfg),
        Device::Cpu,
        &LearnerConfig {
            progress: false,
            ..LearnerConfig::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.history().len(), 1);
    let b1 = resumed.next_epoch().unwrap().unwrap();
    assert!(
        resumed.next_epoch().unwrap().is_none(),
        "the plan had two epochs"
    );
    assert_eq!(b1.epoch, 1);
    assert!(
        (a1.train_loss - b1.train_loss).abs() <= 1e-6,
        "{} vs {}",
        a1.train_loss,
        b1.train_loss
    );
    assert!((a1.valid_loss - b1.valid_loss).abs() <= 1e-6);
    let (wa, wb) = (
        straight.model().named_variables(),
        resumed.model().named_variables(),
    );
    for (name, t) in &wa {
        let diff = (t - &wb[name]).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
    }
    // A damaged checkpoint is refused with the reason, not loaded half-way.
    std::fs::write(ckpt.join("optimizer.safetensors"), b"garbage").unwrap();
    let err = Learner::from_checkpoint(&ckpt, data(&cfg), Device::Cpu, &LearnerConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("optimiser state"), "{err}");
}

/// A ResNet18 with the CAM head learns 2 shapes at 128×128 (a 4×4 feature
/// map), and the CAM of the true class peaks on the object: the pointing game
/// with its usual 15-pixel tolerance, while the map of the *other* class
/// avoids the object. This is the run of `train` with its defaults
/// (`--image-size 128 --classes 2 --epochs 4 --lr 3e-3 --batch-size 32
/// --seed 42`): accuracy 1.00, pointing 0.84 with the per-tensor Adam and
/// 0.77 with the fused one (0.53 with no tolerance; one cell is 32 px),
/// other class 0.05-0.10; a random peak scores about 0.33.
/// From-scratch CAMs vary with the seed (0.66 to 0.90 over the seeds tried,
/// all at accuracy 1.00), so the seed is fixed; the run is deterministic on
/// CPU.
#[test]
fn resnet18_learns_and_its_cam_points_at_the_object() {
    let _serial = serial(42);
    let cfg = SyntheticConfig {
        seed: 42,
        train_len: 2048,
        valid_len: 512,
        image_size: 128,
        num_classes: 2,
    };
    let mut l = learner(Arch::Resnet18, Head::Cam, &cfg, 32);
    let rows = l.fit_one_cycle(4, LrRange::Single(3e-3)).unwrap();
    let accuracy = rows.last().unwrap().accuracy;
    let valid = Synthetic::new(cfg, Split::Valid).unwrap();
    let score = pointing_game(l.model(), &valid, 256, CamMethod::Cam, POINTING_TOLERANCE).unwrap();
    let other = other_class_pointing(l.model(), &valid, 128);
    eprintln!("accuracy {accuracy:.3}, pointing game {score:.3}, other class {other:.3}");
    assert!(accuracy >= 0.95, "accuracy {accuracy:.3}");
    // 0.84 with the per-tensor Adam, 0.766 with the fused kernel (the same
    // update to rounding, another trajectory): the seed spread (0.66-0.90)
    // is wider than the optimisers' difference; random scores ~0.33.
    assert!(
        score >= 0.75,
        "pointing game {score:.3} (accuracy {accuracy:.3})"
    );
    assert!(
        other <= 0.2,
        "the wrong class's map points at the object {other:.3} of the time"
    );
}

/// The pointing game for the class the image is *not*.
fn other_class_pointing(model: &Model, valid: &Synthetic, n: usize) -> f64 {
    let images: Vec<_> = (0..n).map(|i| valid.image(i).unwrap()).collect();
    let targets: Vec<_> = (0..n).map(|i| Some(1 - valid.label(i) as i64)).collect();
    let exps = explain(
        model,
        &images,
        CamMethod::Cam,
        &targets,
        ResizeMethod::Squish,
    )
    .unwrap();
    let hits = exps
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            let img = &images[*i];
            e.peak_in_box(
                model.spec(),
                img.width(),
                img.height(),
                &valid.object_box(*i),
                POINTING_TOLERANCE,
            )
        })
        .count();
    hits as f64 / n as f64
}

/// fine_tune's frozen epoch trains the head and BatchNorm only; the
/// unfrozen epoch trains the body too.
#[test]
fn fine_tune_freezes_then_unfreezes_the_body() {
    let _serial = serial(4);
    let cfg = SyntheticConfig {
        seed: 4,
        train_len: 128,
        valid_len: 32,
        image_size: 32,
        num_classes: 2,
    };
    let mut l = learner(Arch::Resnet18, Head::Fastai, &cfg, 32);
    let snapshot = |l: &Learner| {
        let v = l.model().named_variables();
        [
            "conv1.weight",
            "layer3.0.conv1.weight",
            "bn1.weight",
            "head.8.weight",
        ]
        .map(|k| v[k].copy())
    };
    let before = snapshot(&l);
    l.start(Plan::fine_tune(1, 2e-3, 1)).unwrap();
    let frozen = l.next_epoch().unwrap().unwrap();
    assert_eq!(frozen.stage, 0);
    let after_frozen = snapshot(&l);
    assert!(
        before[0].equal(&after_frozen[0]),
        "conv1 must not move while frozen"
    );
    assert!(
        before[1].equal(&after_frozen[1]),
        "layer3 must not move while frozen"
    );
    assert!(
        !before[2].equal(&after_frozen[2]),
        "BatchNorm trains while frozen (train_bn)"
    );
    assert!(!before[3].equal(&after_frozen[3]), "the head trains");
    let unfrozen = l.next_epoch().unwrap().unwrap();
    assert_eq!((unfrozen.epoch, unfrozen.stage), (1, 1));
    let after = snapshot(&l);
    assert!(
        !after_frozen[0].equal(&after[0]),
        "conv1 trains once unfrozen"
    );
}

/// lr_find sweeps upwards, suggests a rate inside the sweep and leaves the
/// model as it found it.
#[test]
fn lr_find_suggests_and_restores() {
    let _serial = serial(5);
    let cfg = SyntheticConfig {
        seed: 5,
        train_len: 256,
        valid_len: 32,
        image_size: 32,
        num_classes: 2,
    };
    let mut l = learner(Arch::Cnn, Head::Linear, &cfg, 16);
    let before: Vec<_> = l
        .model()
        .named_variables()
        .into_values()
        .map(|t| t.copy())
        .collect();
    let found = l.lr_find(1e-6, 1.0, 30).unwrap();
    assert!(found.lrs.len() >= 10 && found.lrs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(found.lrs.len(), found.losses.len());
    assert!(found.suggestion >= found.lrs[0] && found.suggestion <= *found.lrs.last().unwrap());
    let after: Vec<_> = l.model().named_variables().into_values().collect();
    assert!(before.iter().zip(&after).all(|(a, b)| a.equal(b)));
    assert!(l.lr_find(1.0, 0.1, 30).is_err());
}

/// `l` saved as a checkpoint and rebuilt from it, as a new process would.
fn through_a_checkpoint(l: &mut Learner, cfg: &SyntheticConfig) -> Learner {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    l.save_checkpoint(&ckpt).unwrap();
    Learner::from_checkpoint(&ckpt, data(cfg), Device::Cpu, &LearnerConfig::default()).unwrap()
}

fn copies(vars: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    vars.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
}

fn max_abs_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    a.iter()
        .map(|(k, v)| (v - &b[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

// Mixed precision and channels-last on CPU: bfloat16 autocast learns,
// channels-last computes what the default layout computes, and float16's
// loss scaler skips overflowing steps without touching the weights, then
// recovers, and survives a checkpoint.

/// The small-CNN run above (0.94 in fp32), in bfloat16 autocast
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
    let mut l = with_config(model(Arch::Cnn, Head::Linear, &cfg), &cfg, 64, base);
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
    let resumed = through_a_checkpoint(&mut l, &cfg);
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
    let (plain, mut nhwc) = twins(Arch::Resnet18, Head::Linear, &cfg);
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

/// `body_in`: fp32 changes nothing; bf16 puts every variable of the body
/// in bfloat16 (the head stays float32) and the features and logits come
/// out float32, near float32's but not equal to them; the model is then
/// neither saved nor trained.
#[test]
fn bf16_body_keeps_float32_features_close() {
    let _serial = serial(5);
    let cfg = SyntheticConfig {
        seed: 5,
        train_len: 8,
        valid_len: 8,
        image_size: 64,
        num_classes: 2,
    };
    let (plain, mut served) = twins(Arch::Resnet18, Head::Cam, &cfg);
    let x = Tensor::rand([4, 3, 64, 64], (tch::Kind::Float, Device::Cpu));
    let _no_grad = tch::no_grad_guard();
    let reference = plain.features(&x, false);
    served.body_in(Precision::Fp32).unwrap();
    assert!(served.features(&x, false).equal(&reference));

    served.body_in(Precision::Bf16).unwrap();
    let vars = served.named_variables();
    for name in [
        "conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer4.1.conv2.weight",
        "bn1.running_var",
        "layer4.1.bn2.weight",
    ] {
        assert_eq!(vars[name].kind(), tch::Kind::BFloat16, "{name}");
    }
    assert_eq!(vars["fc.weight"].kind(), tch::Kind::Float);
    let got = served.features(&x, false);
    assert_eq!(got.kind(), tch::Kind::Float);
    let scale = reference.abs().max().double_value(&[]);
    let d = (&got - &reference).abs().max().double_value(&[]);
    assert!(d > 0.0, "the features are float32's: bf16 did not run");
    assert!(d < 0.03 * scale, "features differ by {d} (largest {scale})");
    let logits = served.forward_t(&x, false);
    assert_eq!(logits.kind(), tch::Kind::Float);
    let expected = plain.forward_t(&x, false);
    let scale = expected.abs().max().double_value(&[]);
    let d = (&logits - &expected).abs().max().double_value(&[]);
    assert!(d < 0.03 * scale, "logits differ by {d} (largest {scale})");

    assert!(served.is_inference_only());
    let dir = tempfile::tempdir().unwrap();
    let saved = camshaft_vision::save_weights(&served, &dir.path().join("w.safetensors"));
    assert!(saved.unwrap_err().to_string().contains("for inference"));
    let refused = Learner::new(served, data(&cfg), LearnerConfig::default());
    assert!(
        refused
            .err()
            .unwrap()
            .to_string()
            .contains("cannot be trained")
    );
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
    let mut l = with_config(model(Arch::Cnn, Head::Linear, &cfg), &cfg, 32, base);
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

    let resumed = through_a_checkpoint(&mut l, &cfg);
    assert_eq!(resumed.config().precision, Precision::Fp16);
    assert_eq!(resumed.loss_scale().unwrap(), Some(state));
}
