//! `train`: training steps per second of the small CNN and ResNet18.
//!
//! Ours: [`Model`] with a linear head (10 classes), fastai's [`Adam`] over
//! [`Model::param_groups`] at lr 1e-3 and β₁ 0.9 (on the fused kernel
//! unless `--kernel per-tensor`), one fixed random batch; a step is forward
//! (train mode) → cross-entropy → `zero_grad` → backward → the finiteness
//! check → `step_unless` → one read of the loss and the verdict, exactly as
//! the learner does it. PyTorch: `reference/train_step.py`, the same model,
//! `AdamW(betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)` with its default
//! implementation, and again with `fused=True` (a second row).
//!
//! `--precision bf16|fp16` runs the forward pass and the loss under autocast
//! (`torch.autocast` on PyTorch's side) and, for fp16, scales the loss and
//! unscales and checks the gradients (`GradScaler`); `--channels-last` puts
//! the weights and the batch in NHWC (`memory_format=torch.channels_last`).
//! `--cuda-graphs` replays our forward and backward passes from a
//! [`StepGraph`] captured after the warm-up (the learner's CUDA graphs);
//! the finiteness check and the optimiser stay eager, as in the learner.

use std::hint::black_box;

use camshaft_vision::graphs::StepGraph;
use camshaft_vision::model::channels_last;
use camshaft_vision::optim::{Adam, AdamConfig, AdamKernel};
use camshaft_vision::precision::{Autocast, LossScaleConfig, LossScaler, found_non_finite};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization, Precision};
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
    /// Forward-pass precision: fp32, bf16 or fp16 (autocast).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Weights and batch channels-last (NHWC).
    #[arg(long)]
    pub channels_last: bool,
    /// Our optimiser's kernel: fused (default) or per-tensor.
    #[arg(long, value_enum, default_value_t = KernelArg::Fused)]
    pub kernel: KernelArg,
    /// Skip the second PyTorch row (AdamW with `fused=True`).
    #[arg(long)]
    pub no_fused_reference: bool,
    /// Replay our forward and backward passes from a CUDA graph captured
    /// after the warm-up, as the learner does (`--device cuda` only);
    /// PyTorch's side stays eager.
    #[arg(long)]
    pub cuda_graphs: bool,
}

/// `--kernel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// libtorch's fused AdamW kernel.
    Fused,
    /// A few tch ops per parameter tensor.
    PerTensor,
}

impl KernelArg {
    /// The optimiser's setting.
    pub fn kernel(self) -> AdamKernel {
        match self {
            KernelArg::Fused => AdamKernel::Fused,
            KernelArg::PerTensor => AdamKernel::PerTensor,
        }
    }
}

impl TrainArgs {
    /// Steps per timed repeat for `arch`.
    pub fn steps_for(&self, arch: Arch) -> usize {
        self.steps.unwrap_or(if arch == Arch::Cnn { 20 } else { 8 })
    }

    /// The bench's name for `arch` and these settings.
    pub fn name(&self, arch: Arch) -> String {
        let mut name = format!("train_{arch}");
        if self.precision != Precision::Fp32 {
            name.push_str(&format!("_{}", self.precision));
        }
        if self.channels_last {
            name.push_str("_nhwc");
        }
        if self.kernel == KernelArg::PerTensor {
            name.push_str("_per_tensor");
        }
        if self.cuda_graphs {
            name.push_str("_graphs");
        }
        name
    }

    /// Warm-up steps for `arch`.
    pub fn warmup_for(&self, arch: Arch) -> usize {
        self.warmup.unwrap_or(if arch == Arch::Cnn { 5 } else { 3 })
    }

    /// The reference script's name and arguments for `arch`.
    pub fn reference_args(&self, arch: Arch, threads: i32) -> (&'static str, Vec<String>) {
        let mut script = script_call(
            "train_step.py",
            [
                ("--model", arch.to_string()),
                ("--batch", self.batch.to_string()),
                ("--size", self.size.to_string()),
                ("--steps", self.steps_for(arch).to_string()),
                ("--warmup", self.warmup_for(arch).to_string()),
                ("--repeats", self.repeats.to_string()),
                ("--threads", threads.to_string()),
                ("--precision", self.precision.to_string()),
            ],
        );
        if self.channels_last {
            script.1.push("--channels-last".into());
        }
        script
    }
}

/// Our training steps per second for `arch`, one sample per repeat.
pub fn ours(arch: Arch, args: &TrainArgs, device: Device) -> anyhow::Result<Vec<f64>> {
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch,
        head: Head::Linear,
        class_names: (0..10).map(|i| format!("class{i}")).collect(),
        input_size: args.size,
        normalization: Normalization::None,
    };
    let mut model = Model::new(spec, device)?;
    if args.channels_last {
        model.to_channels_last()?;
    }
    // The learner's choice: no weight decay on BatchNorm and bias parameters.
    let config = AdamConfig {
        kernel: args.kernel.kernel(),
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(config, model.param_groups(), |name| {
        model.is_batch_norm(name) || name.ends_with(".bias")
    });
    let lrs = vec![1e-3; opt.num_groups()];
    let size = i64::from(args.size);
    let mut x = Tensor::randn([args.batch, 3, size, size], (Kind::Float, device));
    if args.channels_last {
        x = channels_last(&x)?;
    }
    let scaler = if args.precision.needs_loss_scaling() {
        Some(LossScaler::new(LossScaleConfig::default(), device)?)
    } else {
        None
    };
    let y = Tensor::randint(10, [args.batch], (Kind::Int64, device));
    let steps = args.steps_for(arch);
    let forward_backward =
        |opt: &Adam, x: &Tensor, y: &Tensor| -> camshaft_vision::Result<Tensor> {
            let loss = {
                let _autocast = Autocast::enter(args.precision, device)?;
                let logits = model.forward_t(x, true);
                logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)?
            };
            opt.zero_grad();
            match &scaler {
                Some(scaler) => scaler.scale(&loss)?.f_backward()?,
                None => loss.f_backward()?,
            }
            Ok(loss)
        };
    let step = |opt: &mut Adam, graph: Option<&StepGraph>| -> anyhow::Result<()> {
        let loss = match graph {
            Some(graph) => graph.replay_as_is()?.shallow_clone(),
            None => forward_backward(opt, &x, &y)?,
        };
        // The learner's check of the (all-reduced) gradients, left on the
        // device for the step to skip itself, then one read back.
        let grads = opt.gradients();
        let found_inf = match &scaler {
            Some(scaler) => scaler.unscale_on_device(&grads)?,
            None => found_non_finite(&grads, device)?,
        };
        opt.step_unless(&lrs, 0.9, &found_inf)?;
        let read = Tensor::f_cat(
            &[
                loss.f_detach()?.f_to_kind(Kind::Float)?.f_reshape([1])?,
                found_inf,
            ],
            0,
        )?
        .f_to_device(Device::Cpu)?;
        black_box(read.f_double_value(&[0])?);
        Ok(())
    };
    for _ in 0..args.warmup_for(arch) {
        step(&mut opt, None)?;
    }
    let graph = if args.cuda_graphs {
        let inputs = vec![x.shallow_clone(), y.shallow_clone()];
        Some(StepGraph::capture(device, inputs, |xy| {
            forward_backward(&opt, &xy[0], &xy[1])
        })?)
    } else {
        None
    };
    crate::measure::sync(device);
    rates(0, args.repeats, || {
        for _ in 0..steps {
            step(&mut opt, graph.as_ref())?;
        }
        crate::measure::sync(device);
        Ok(steps)
    })
}
