//! `ddp`: data-parallel training steps per second of a group of ranks on
//! this machine, ours against PyTorch DDP with gloo. [`group_training`] is
//! also what `scaling` runs at each group size.
//!
//! Ours: `ranks` threads, `threads` intra-op threads each (one for `ddp`),
//! each with the same [`Model`] (linear head, 10 classes) and fastai's
//! [`Adam`], joined by the TCP ring ([`RingCommunicator`] on loopback)
//! through [`BucketedCollective`] (25 MiB buckets): a step is forward →
//! cross-entropy → `zero_grad` → backward → gradient all-reduce (average) →
//! `step`, as the learner's `train_step` does it. PyTorch:
//! `reference/ddp.py`, `ranks` processes with `threads` threads each,
//! `DistributedDataParallel` over gloo (its default 25 MiB buckets), the
//! same model and `AdamW`. Both sides time rank 0 and report group steps/s;
//! each rank steps on its own random batches of `batch` images.
//!
//! [`RingCommunicator`]: camshaft_collective::RingCommunicator

use std::hint::black_box;
use std::time::Instant;

use camshaft_collective::{BucketedCollective, Communicator};
use camshaft_vision::optim::{Adam, AdamConfig};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization};
use clap::Parser;
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::group::{Backend, run_group};
use crate::measure::rates;
use crate::reference::script_call;
use crate::train::TrainModel;

/// The training side of a data-parallel bench: model, batch and timing.
#[derive(Clone, Debug, clap::Args)]
pub struct GroupTraining {
    /// Model to train (the CNN or ResNet18).
    #[arg(long, value_enum, default_value_t = TrainModel::Resnet18)]
    pub model: TrainModel,
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

/// Options of `ddp`.
#[derive(Clone, Debug, Parser)]
pub struct DdpArgs {
    #[command(flatten)]
    pub training: GroupTraining,
    /// Ranks in the group (threads for ours, processes for PyTorch).
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
}

impl GroupTraining {
    /// The single architecture of `--model` (`both` means ResNet18).
    pub fn arch(&self) -> Arch {
        match self.model {
            TrainModel::Cnn => Arch::Cnn,
            _ => Arch::Resnet18,
        }
    }

    /// `reference/ddp.py`'s name and arguments for a group of `ranks` with
    /// `threads` intra-op threads per rank.
    pub fn reference_args(&self, ranks: usize, threads: i32) -> (&'static str, Vec<String>) {
        script_call(
            "ddp.py",
            [
                ("--model", self.arch().to_string()),
                ("--ranks", ranks.to_string()),
                ("--threads", threads.to_string()),
                ("--batch", self.batch.to_string()),
                ("--size", self.size.to_string()),
                ("--steps", self.steps.to_string()),
                ("--warmup", self.warmup.to_string()),
                ("--repeats", self.repeats.to_string()),
            ],
        )
    }
}

/// Mean seconds per timed step that rank 0 spent in each part of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepPhases {
    /// Handing the step its batch (a pre-made synthetic batch: near zero;
    /// the real loader's cost is the `loader` bench's).
    pub data: f64,
    /// Forward pass and cross-entropy.
    pub forward: f64,
    /// `zero_grad` and backward.
    pub backward: f64,
    /// `BucketedCollective::average` over the group (all buckets).
    pub all_reduce: f64,
    /// The Adam step.
    pub optimiser: f64,
}

impl StepPhases {
    /// The parts, named, in step order.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("data", self.data),
            ("forward", self.forward),
            ("backward", self.backward),
            ("all-reduce", self.all_reduce),
            ("optimiser", self.optimiser),
        ]
    }

    /// The part-by-part sum of two.
    pub fn plus(&self, other: &StepPhases) -> Self {
        StepPhases {
            data: self.data + other.data,
            forward: self.forward + other.forward,
            backward: self.backward + other.backward,
            all_reduce: self.all_reduce + other.all_reduce,
            optimiser: self.optimiser + other.optimiser,
        }
    }

    /// Every part divided by `n` (totals over `n` steps to a mean).
    pub fn divided(self, n: f64) -> Self {
        StepPhases {
            data: self.data / n,
            forward: self.forward / n,
            backward: self.backward / n,
            all_reduce: self.all_reduce / n,
            optimiser: self.optimiser / n,
        }
    }

    /// The sum of the parts.
    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, s)| s).sum()
    }
}

/// What rank 0 measured in a group training run.
#[derive(Clone, Debug)]
pub struct GroupRun {
    /// Group steps per second, one sample per timed repeat.
    pub steps_per_sec: Vec<f64>,
    /// Where a timed step's time went, on average.
    pub phases: StepPhases,
}

/// A group of `ranks` ranks (threads, `threads` intra-op threads each)
/// training over the TCP ring; rank 0's clock.
pub fn group_training(
    args: &GroupTraining,
    ranks: usize,
    threads: i32,
) -> anyhow::Result<GroupRun> {
    tch::set_num_threads(threads);
    let mut runs = run_group(Backend::Ring, ranks, |rank, comm| {
        tch::set_num_threads(threads);
        rank_steps(rank, args, comm)
    })?;
    Ok(runs.swap_remove(0))
}

/// Our group's steps per second (rank 0's clock, one intra-op thread per
/// rank), one sample per repeat.
pub fn ours(args: &DdpArgs) -> anyhow::Result<Vec<f64>> {
    Ok(group_training(&args.training, args.ranks, 1)?.steps_per_sec)
}

/// Distinct synthetic batches each rank cycles through.
const BATCHES: usize = 4;

fn rank_steps(
    rank: usize,
    args: &GroupTraining,
    comm: Box<dyn Communicator>,
) -> anyhow::Result<GroupRun> {
    let mut sync = BucketedCollective::new(comm);
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch: args.arch(),
        head: Head::Linear,
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
    let batches: Vec<(Tensor, Tensor)> = (0..BATCHES)
        .map(|_| {
            (
                Tensor::randn([args.batch, 3, size, size], (Kind::Float, Device::Cpu)),
                Tensor::randint(10, [args.batch], (Kind::Int64, Device::Cpu)),
            )
        })
        .collect();
    let mut phases = StepPhases::default();
    let mut step = |i: usize, phases: &mut StepPhases| -> anyhow::Result<()> {
        let mut clock = Instant::now();
        let mut lap = |part: &mut f64| {
            let now = Instant::now();
            *part += (now - clock).as_secs_f64();
            clock = now;
        };
        let (x, y) = &batches[i % BATCHES];
        black_box((x, y));
        lap(&mut phases.data);
        let logits = model.forward_t(x, true);
        let loss = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)?;
        lap(&mut phases.forward);
        opt.zero_grad();
        loss.f_backward()?;
        lap(&mut phases.backward);
        sync.average(&opt.gradients())?;
        lap(&mut phases.all_reduce);
        opt.step(&lrs, 0.9)?;
        lap(&mut phases.optimiser);
        black_box(&loss);
        Ok(())
    };
    let mut unused = StepPhases::default();
    for i in 0..args.warmup {
        step(i, &mut unused)?;
    }
    let steps_per_sec = rates(0, args.repeats, || {
        for i in 0..args.steps {
            step(i, &mut phases)?;
        }
        Ok(args.steps)
    })?;
    let timed = (args.steps * args.repeats).max(1) as f64;
    Ok(GroupRun {
        steps_per_sec,
        phases: phases.divided(timed),
    })
}
