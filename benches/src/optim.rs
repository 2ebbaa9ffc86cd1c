//! `optim`: the optimiser phase alone, one Adam step over ResNet18's
//! parameters (62 tensors, 11.2M floats) with fixed random gradients.
//!
//! Ours: fastai's [`Adam`] with the learner's groups and decay rule, on the
//! fused kernel or per tensor. PyTorch: `reference/optim_step.py`,
//! `AdamW(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)`,
//! default implementation or `fused=True`.

use camshaft_vision::optim::{Adam, AdamConfig, AdamKernel};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization};
use clap::Parser;
use tch::{Device, Tensor};

use crate::measure::rates;
use crate::reference::script_call;

/// Options of `optim`.
#[derive(Clone, Debug, Parser)]
pub struct OptimArgs {
    /// Steps per timed repeat.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed repeats; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

impl OptimArgs {
    /// The reference script's name and arguments.
    pub fn reference_args(&self, threads: i32) -> (&'static str, Vec<String>) {
        script_call(
            "optim_step.py",
            [
                ("--steps", self.steps.to_string()),
                ("--warmup", self.warmup.to_string()),
                ("--repeats", self.repeats.to_string()),
                ("--threads", threads.to_string()),
            ],
        )
    }
}

/// Our optimiser steps per second, one sample per repeat.
pub fn ours(args: &OptimArgs, kernel: AdamKernel, device: Device) -> anyhow::Result<Vec<f64>> {
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch: Arch::Resnet18,
        head: Head::Linear,
        class_names: (0..10).map(|i| format!("class{i}")).collect(),
        input_size: 32,
        normalization: Normalization::None,
    };
    let model = Model::new(spec, device)?;
    let config = AdamConfig {
        kernel,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(config, model.param_groups(), |name| {
        model.is_batch_norm(name) || name.ends_with(".bias")
    });
    // Gradients exist after one backward; then they are fixed random values.
    model
        .forward_t(
            &Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, device)),
            true,
        )
        .sum(tch::Kind::Float)
        .backward();
    tch::no_grad(|| {
        for g in opt.gradients() {
            let _ = g.shallow_clone().normal_(0.0, 1e-2);
        }
    });
    let lrs = vec![1e-3; opt.num_groups()];
    for _ in 0..args.warmup {
        opt.step(&lrs, 0.9)?;
    }
    crate::measure::sync(device);
    rates(0, args.repeats, || {
        for _ in 0..args.steps {
            opt.step(&lrs, 0.9)?;
        }
        crate::measure::sync(device);
        Ok(args.steps)
    })
}
