//! `train`: training steps per second of the small CNN and ResNet18.
//!
//! Ours: [`Model`] with a linear head (10 classes), fastai's [`Adam`] over
//! [`Model::param_groups`] at lr 1e-3 and β₁ 0.9, one fixed random batch;
//! a step is forward (train mode) → cross-entropy → `zero_grad` → backward →
//! `step`, exactly as the learner does it. PyTorch: `reference/train_step.py`,
//! the same model, `AdamW(betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)`.

use std::hint::black_box;

use camshaft_vision::optim::{Adam, AdamConfig};
use camshaft_vision::{Arch, HeadKind, Model, ModelSpec, Normalization};
use clap::Parser;
use tch::{Device, Kind, Reduction, Tensor};

use crate::measure::rates;
use crate::reference::script_call;

/// Which model(s) `train` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainModel {
    /// The lecture's Conv2d(3,128,5) → ReLU → MaxPool2d(2) → Flatten → Linear.
    Cnn,
    /// torchvision's ResNet18 with a 10-class `fc`.
    Resnet18,
    /// Both, CNN first.
    Both,
}

impl TrainModel {
    /// The architectures to run, in order.
    pub fn archs(self) -> Vec<Arch> {
        match self {
            TrainModel::Cnn => vec![Arch::Cnn],
            TrainModel::Resnet18 => vec![Arch::Resnet18],
            TrainModel::Both => vec![Arch::Cnn, Arch::Resnet18],
        }
    }
}

/// Options of `train`.
#[derive(Clone, Debug, Parser)]
pub struct TrainArgs {
    /// Model(s) to train.
    #[arg(long, value_enum, default_value_t = TrainModel::Both)]
    pub model: TrainModel,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Square input side.
    #[arg(long, default_value_t = 32)]
    pub size: u32,
    /// Steps per timed repeat [default: 20 for the CNN, 8 for ResNet18].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed steps first [default: 5 for the CNN, 3 for ResNet18].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed repeats; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

impl TrainArgs {
    /// Steps per timed repeat for `arch`.
    pub fn steps_for(&self, arch: Arch) -> usize {
        self.steps.unwrap_or(if arch == Arch::Cnn { 20 } else { 8 })
    }

    /// Warm-up steps for `arch`.
    pub fn warmup_for(&self, arch: Arch) -> usize {
        self.warmup.unwrap_or(if arch == Arch::Cnn { 5 } else { 3 })
    }

    /// The reference script's name and arguments for `arch`.
    pub fn reference_args(&self, arch: Arch, threads: i32) -> (&'static str, Vec<String>) {
        script_call(
            "train_step.py",
            [
                ("--model", arch.to_string()),
                ("--batch", self.batch.to_string()),
                ("--size", self.size.to_string()),
                ("--steps", self.steps_for(arch).to_string()),
                ("--warmup", self.warmup_for(arch).to_string()),
                ("--repeats", self.repeats.to_string()),
                ("--threads", threads.to_string()),
            ],
        )
    }
}

/// Our training steps per second for `arch`, one sample per repeat.
pub fn ours(arch: Arch, args: &TrainArgs, device: Device) -> anyhow::Result<Vec<f64>> {
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch,
        head: HeadKind::Linear,
        class_names: (0..10).map(|i| format!("class{i}")).collect(),
        input_size: args.size,
        normalization: Normalization::None,
    };
    let model = Model::new(spec, device)?;
    // The learner's choice: no weight decay on BatchNorm and bias parameters.
    let mut opt = Adam::new(AdamConfig::default(), model.param_groups(), |name| {
        model.is_batch_norm(name) || name.ends_with(".bias")
    });
    let lrs = vec![1e-3; opt.num_groups()];
    let size = i64::from(args.size);
    let x = Tensor::randn([args.batch, 3, size, size], (Kind::Float, device));
    let y = Tensor::randint(10, [args.batch], (Kind::Int64, device));
    let steps = args.steps_for(arch);
    let mut step = || -> anyhow::Result<()> {
        let logits = model.forward_t(&x, true);
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
        opt.zero_grad();
        loss.f_backward()?;
        opt.step(&lrs, 0.9)?;
        black_box(&loss);
        Ok(())
    };
    for _ in 0..args.warmup_for(arch) {
        step()?;
    }
    crate::measure::sync(device);
    rates(0, args.repeats, || {
        for _ in 0..steps {
            step()?;
        }
        crate::measure::sync(device);
        Ok(steps)
    })
}
