//! fastai's Adam on libtorch's fused AdamW kernel against the per-tensor
//! update: the same trajectory (to 1e-6 after 50 steps) on the lecture's
//! CNN and on ResNet18, the same checkpoint format, and a learner that
//! resumes exactly from the fused state.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;

use camshaft_data::SyntheticConfig;
use camshaft_vision::optim::{Adam, AdamConfig, AdamKernel};
use camshaft_vision::{
    Arch, Head, Learner, LearnerConfig, LoaderConfig, LrRange, Model, ModelSpec, Normalization,
    Plan,
};
use tch::{Device, Kind, Reduction, Tensor};

fn model(arch: Arch, size: u32) -> Model {
    let spec = ModelSpec {
        arch,
        head: if arch == Arch::Cnn {
            Head::Linear
        } else {
            Head::Cam
        },
        class_names: (0..3).map(|i| format!("c{i}")).collect(),
        input_size: size,
        normalization: Normalization::None,
    };
    Model::new(spec, Device::Cpu).unwrap()
}

fn optimizer(m: &Model, kernel: AdamKernel) -> Adam {
    let config = AdamConfig {
        kernel,
        ..AdamConfig::default()
    };
    Adam::new(config, m.param_groups(), |n| {
        m.is_batch_norm(n) || n.ends_with(".bias")
    })
}

fn max_abs_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> (f64, String) {
    a.iter()
        .map(|(k, t)| ((t - &b[k]).abs().max().double_value(&[]), k.clone()))
        .fold(
            (0.0, String::new()),
            |acc, x| if x.0 > acc.0 { x } else { acc },
        )
}

/// 50 steps of both kernels on twin models, with the one-cycle momentum
/// moving and a learning rate per parameter group. Both take the
/// gradients of the fused model: two models whose weights differ by
/// rounding can take different ReLU and max-pool branches, and on random
/// batches that turned a 2e-8 difference into 1e-5 within 35 steps
/// (measured), which is the model's chaos, not the optimisers'.
fn agree_after_50_steps(arch: Arch, size: u32, batch: i64) {
    tch::manual_seed(11);
    let fused_model = model(arch, size);
    let mut per_tensor_model = model(arch, size);
    per_tensor_model
        .var_store_mut()
        .copy(fused_model.var_store())
        .unwrap();
    let mut fused = optimizer(&fused_model, AdamKernel::Fused);
    let mut per_tensor = optimizer(&per_tensor_model, AdamKernel::PerTensor);
    assert!(fused.is_fused() && !per_tensor.is_fused());
    let groups = fused.num_groups();
    for step in 0..50 {
        let x = Tensor::randn(
            [batch, 3, size as i64, size as i64],
            (Kind::Float, Device::Cpu),
        );
        let y = Tensor::randint(3, [batch], (Kind::Int64, Device::Cpu));
        let pos = step as f64 / 50.0;
        let mom = 0.95 - 0.1 * (std::f64::consts::PI * pos).sin();
        let lrs: Vec<f64> = (0..groups).map(|g| 1e-3 * (g + 1) as f64).collect();
        for (m, opt) in [
            (&fused_model, &mut fused),
            (&per_tensor_model, &mut per_tensor),
        ] {
            opt.zero_grad();
            let loss = m.forward_t(&x, true).cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                0.0,
            );
            loss.backward();
        }
        tch::no_grad(|| {
            let theirs = per_tensor_model.named_variables();
            for (name, p) in fused_model.named_variables() {
                if p.requires_grad() {
                    theirs[&name].grad().copy_(&p.grad());
                }
            }
        });
        fused.step(&lrs, mom).unwrap();
        per_tensor.step(&lrs, mom).unwrap();
    }
    // The parameters (BatchNorm's running statistics come from forward
    // passes, not from the optimisers).
    let params = |m: &Model| -> BTreeMap<String, Tensor> {
        let mut vars = m.named_variables();
        vars.retain(|k, _| !camshaft_vision::model::is_buffer(k));
        vars
    };
    let (diff, name) = max_abs_diff(&params(&fused_model), &params(&per_tensor_model));
    assert!(diff <= 1e-6, "{arch}: {name} differs by {diff}");
}

#[test]
fn fused_and_per_tensor_agree_on_the_cnn() {
    agree_after_50_steps(Arch::Cnn, 32, 8);
}

#[test]
fn fused_and_per_tensor_agree_on_resnet18() {
    agree_after_50_steps(Arch::Resnet18, 32, 4);
}

/// The fused state saves in the per-tensor update's format and back.
#[test]
fn fused_state_saves_in_the_common_format() {
    tch::manual_seed(3);
    let m = model(Arch::Cnn, 32);
    let mut fused = optimizer(&m, AdamKernel::Fused);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    for _ in 0..3 {
        fused.zero_grad();
        m.forward_t(&x, true).sum(Kind::Float).backward();
        fused.step(&[1e-3; 2], 0.9).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    fused.save(&path).unwrap();
    let mut per_tensor = optimizer(&m, AdamKernel::PerTensor);
    per_tensor.load(&path).unwrap();
    let again = dir.path().join("again.safetensors");
    per_tensor.save(&again).unwrap();
    let read = |p| -> BTreeMap<String, Tensor> {
        Tensor::read_safetensors(p).unwrap().into_iter().collect()
    };
    let (a, b) = (read(&path), read(&again));
    assert_eq!(a.len(), b.len());
    assert_eq!(a["step.0.weight"].int64_value(&[0]), 3);
    assert_eq!(max_abs_diff(&a, &b).0, 0.0);
}

/// A ResNet18 learner (fused by default) through a checkpoint between its
/// two epochs ends with the weights of the run that never stopped.
#[test]
fn fused_learner_resumes_exactly() {
    let cfg = SyntheticConfig {
        seed: 4,
        train_len: 64,
        valid_len: 16,
        image_size: 32,
        num_classes: 2,
    };
    let config = LearnerConfig {
        loader: LoaderConfig {
            batch_size: 16,
            image_size: 32,
            seed: 4,
            ..LoaderConfig::default()
        },
        progress: false,
        ..LearnerConfig::default()
    };
    let spec = ModelSpec {
        arch: Arch::Resnet18,
        head: Head::Cam,
        class_names: cfg.class_names(),
        input_size: 32,
        normalization: Normalization::None,
    };
    tch::manual_seed(4);
    let a = Model::new(spec.clone(), Device::Cpu).unwrap();
    let mut b = Model::new(spec, Device::Cpu).unwrap();
    b.var_store_mut().copy(a.var_store()).unwrap();
    let mut straight = Learner::new(a, cfg.splits().unwrap(), config.clone()).unwrap();
    let mut first = Learner::new(b, cfg.splits().unwrap(), config.clone()).unwrap();
    assert!(straight.optimizer().is_fused());
    let plan = Plan::one_cycle(2, LrRange::Single(3e-3));
    straight.start(plan.clone()).unwrap();
    first.start(plan).unwrap();
    straight.next_epoch().unwrap();
    let a1 = straight.next_epoch().unwrap().unwrap();
    first.next_epoch().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    first.save_checkpoint(&ckpt).unwrap();
    drop(first);
    let mut resumed =
        Learner::from_checkpoint(&ckpt, cfg.splits().unwrap(), Device::Cpu, &config).unwrap();
    assert!(resumed.optimizer().is_fused());
    let b1 = resumed.next_epoch().unwrap().unwrap();
    assert_eq!(a1.train_loss, b1.train_loss);
    let (diff, name) = max_abs_diff(
        &straight.model().named_variables(),
        &resumed.model().named_variables(),
    );
    assert_eq!(diff, 0.0, "{name} differs by {diff}");
}
