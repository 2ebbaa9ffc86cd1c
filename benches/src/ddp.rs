//! `ddp`: data-parallel training steps per second of a group of ranks on
//! this machine, ours against PyTorch DDP with gloo.
//!
//! Ours: `ranks` threads, one intra-op thread each, each with the same
//! [`Model`] (linear head, 10 classes) and fastai's [`Adam`], joined by the
//! TCP ring ([`RingCommunicator`] on loopback) through [`BucketedSync`]
//! (25 MiB buckets): a step is forward → cross-entropy → `zero_grad` →
//! backward → gradient all-reduce (average) → `step`, as the learner does
//! it. PyTorch: `reference/ddp.py`, `ranks` processes with one thread each,
//! `DistributedDataParallel` over gloo (its default 25 MiB buckets), the
//! same model and `AdamW`. Both sides time rank 0 and report group steps/s;
//! each rank steps on its own random batch of `batch` images.

use std::hint::black_box;

use camshaft_collective::{BucketedSync, CollectiveConfig, RingCommunicator, RingListener};
use camshaft_vision::learner::GradientSync;
use camshaft_vision::optim::{Adam, AdamConfig};
use camshaft_vision::{Arch, HeadKind, Model, ModelSpec, Normalization};
use clap::Parser;
use tch::{Device, Kind, Reduction, Tensor};

use crate::measure::rates;
use crate::train::TrainModel;

/// Options of `ddp`.
#[derive(Clone, Debug, Parser)]
pub struct DdpArgs {
    /// Model to train (the CNN or ResNet18).
    #[arg(long, value_enum, default_value_t = TrainModel::Resnet18)]
    pub model: TrainModel,
    /// Ranks in the group (threads for ours, processes for PyTorch).
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Images per step per rank.
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    /// Square input side.
    #[arg(long, default_value_t = 32)]
    pub size: u32,
    /// Steps per timed repeat.
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed repeats; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

impl DdpArgs {
    /// The single architecture of `--model` (`both` means ResNet18).
    pub fn arch(&self) -> Arch {
        match self.model {
            TrainModel::Cnn => Arch::Cnn,
            _ => Arch::Resnet18,
        }
    }

    /// The reference script's name and arguments.
    pub fn reference_args(&self) -> (&'static str, Vec<String>) {
        let args = [
            ("--model", self.arch().to_string()),
            ("--ranks", self.ranks.to_string()),
            ("--batch", self.batch.to_string()),
            ("--size", self.size.to_string()),
            ("--steps", self.steps.to_string()),
            ("--warmup", self.warmup.to_string()),
            ("--repeats", self.repeats.to_string()),
        ];
        (
            "ddp.py",
            args.into_iter()
                .flat_map(|(k, v)| [k.to_string(), v])
                .collect(),
        )
    }
}

/// Our group's steps per second (rank 0's clock), one sample per repeat.
pub fn ours(args: &DdpArgs) -> anyhow::Result<Vec<f64>> {
    tch::set_num_threads(1);
    let listeners = (0..args.ranks)
        .map(|_| RingListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().to_string())
        .collect();
    let ranks: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let (peers, args) = (peers.clone(), args.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let comm = RingCommunicator::connect(
                    listener,
                    rank,
                    args.ranks,
                    peers,
                    CollectiveConfig::default(),
                )?;
                rank_steps(rank, &args, Box::new(BucketedSync::new(comm)))
            })
        })
        .collect();
    let mut samples = Vec::new();
    for (rank, handle) in ranks.into_iter().enumerate() {
        let rates = handle
            .join()
            .map_err(|_| anyhow::anyhow!("rank {rank} panicked"))??;
        if rank == 0 {
            samples = rates;
        }
    }
    Ok(samples)
}

fn rank_steps(
    rank: usize,
    args: &DdpArgs,
    mut sync: Box<dyn GradientSync>,
) -> anyhow::Result<Vec<f64>> {
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch: args.arch(),
        head: HeadKind::Linear,
        class_names: (0..10).map(|i| format!("class{i}")).collect(),
        input_size: args.size,
        normalization: Normalization::None,
    };
    let model = Model::new(spec, Device::Cpu)?;
    let mut opt = Adam::new(AdamConfig::default(), model.param_groups(), |name| {
        model.is_batch_norm(name) || name.ends_with(".bias")
    });
    let vars: Vec<Tensor> = model.named_variables().into_values().collect();
    sync.broadcast(&vars)?;
    let lrs = vec![1e-3; opt.num_groups()];
    let size = i64::from(args.size);
    tch::manual_seed(1 + rank as i64);
    let x = Tensor::randn([args.batch, 3, size, size], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [args.batch], (Kind::Int64, Device::Cpu));
    let mut step = || -> anyhow::Result<()> {
        let logits = model.forward_t(&x, true);
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
        opt.zero_grad();
        loss.f_backward()?;
        sync.average(&opt.gradients())?;
        opt.step(&lrs, 0.9)?;
        black_box(&loss);
        Ok(())
    };
    rates(args.warmup, args.repeats, || {
        for _ in 0..args.steps {
            step()?;
        }
        Ok(args.steps)
    })
}
