//! Training steps replayed from a CUDA graph compute what eager steps
//! compute: two epochs of one-cycle training of ResNet18 on the synthetic
//! shapes (fp32, and bf16 autocast channels-last) end as close to an eager
//! run as a second eager run does, in the epochs' losses and every weight.
//!
//! Needs a CUDA device: `cargo test -p camshaft-vision --test cuda_graphs
//! -- --ignored` (`scripts/gpu-check` runs it).
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_data::SyntheticConfig;
use camshaft_vision::{
    Arch, Head, Learner, LearnerConfig, LoaderConfig, LrRange, Model, ModelSpec, Normalization,
    Precision,
};
use tch::{Device, Kind};

fn learner(model: Model, data: &SyntheticConfig, base: LearnerConfig) -> Learner {
    let config = LearnerConfig {
        loader: LoaderConfig {
            batch_size: 32,
            image_size: data.image_size,
            seed: data.seed,
            ..LoaderConfig::default()
        },
        progress: false,
        ..base
    };
    Learner::new(model, data.splits().unwrap(), config).unwrap()
}

/// The largest difference between two runs: of the epochs' losses and of
/// any weight.
fn spread(a: &Learner, b: &Learner) -> (f64, f64) {
    let losses = a
        .history()
        .iter()
        .zip(b.history())
        .flat_map(|(x, y)| {
            [
                (x.train_loss - y.train_loss).abs(),
                (x.valid_loss - y.valid_loss).abs(),
            ]
        })
        .fold(0.0, f64::max);
    let (av, bv) = (a.model().named_variables(), b.model().named_variables());
    let weights = av
        .iter()
        .map(|(name, x)| {
            (x.to_kind(Kind::Double) - bv[name].to_kind(Kind::Double))
                .abs()
                .max()
                .double_value(&[])
        })
        .fold(0.0, f64::max);
    (losses, weights)
}

fn same_run(precision: Precision, channels_last: bool) {
    assert!(
        tch::Cuda::is_available(),
        "this test needs a CUDA device (run it with --ignored where one is)"
    );
    tch::Cuda::cudnn_set_benchmark(false);
    let data = SyntheticConfig {
        train_len: 400,
        valid_len: 64,
        image_size: 32,
        ..SyntheticConfig::default()
    };
    let spec = ModelSpec {
        arch: Arch::Resnet18,
        head: Head::Linear,
        class_names: data.class_names(),
        input_size: data.image_size,
        normalization: Normalization::None,
    };
    let device = Device::Cuda(0);
    let first = Model::new(spec.clone(), device).unwrap();
    let mut models = vec![];
    for _ in 0..2 {
        let mut m = Model::new(spec.clone(), device).unwrap();
        m.var_store_mut().copy(first.var_store()).unwrap();
        models.push(m);
    }
    let base = LearnerConfig {
        precision,
        channels_last,
        ..LearnerConfig::default()
    };
    let eager_config = LearnerConfig {
        cuda_graphs: false,
        ..base.clone()
    };
    let mut runs = vec![learner(first, &data, eager_config.clone())];
    runs.push(learner(models.remove(0), &data, eager_config));
    runs.push(learner(models.remove(0), &data, base));
    assert_eq!(runs[2].cuda_graphs_unavailable(), None);
    for run in &mut runs {
        run.fit_one_cycle(2, LrRange::Single(3e-3)).unwrap();
    }
    assert_eq!(runs[0].cuda_graph_replays(), 0);
    // 400 images in batches of 32: 12 full steps an epoch (and a short
    // one, eager); the first epoch's first 3 steps warm up.
    let replays = runs[2].cuda_graph_replays();
    assert!(replays >= 2 * 12 - 3, "{replays} steps replayed");
    // Some CUDA kernels of the backward pass add with atomics (max and
    // average pooling), so eager runs differ in their last bits and Adam
    // can grow that; the graph must stay as close to eager as eager is to
    // itself. A replay of stale inputs or gradients would be far off.
    let (loss_noise, weight_noise) = spread(&runs[0], &runs[1]);
    let (loss_diff, weight_diff) = spread(&runs[0], &runs[2]);
    eprintln!(
        "{precision:?}: eager vs eager {loss_noise:e} (losses) {weight_noise:e} (weights); \
         eager vs graph {loss_diff:e} {weight_diff:e}"
    );
    assert!(
        loss_diff <= 4.0 * loss_noise + 1e-5,
        "losses: {loss_diff:e}"
    );
    assert!(
        weight_diff <= 4.0 * weight_noise + 1e-5,
        "weights: {weight_diff:e}"
    );
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn graph_steps_equal_eager_steps_in_fp32() {
    same_run(Precision::Fp32, false);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check runs it"]
fn graph_steps_equal_eager_steps_in_bf16_channels_last() {
    same_run(Precision::Bf16, true);
}
