//! The fastai-style learner: `fit`, `fit_one_cycle`, `fine_tune`, `lr_find`
//! and validation metrics.
//!
//! A run is a [`Plan`]; [`Learner::next_epoch`] trains one epoch of it and
//! returns its [`EpochStats`], so a caller (the example, a worker) can report
//! and checkpoint between epochs. Data-parallel training plugs in through
//! [`GradientSync`]; one process uses [`SingleProcess`].
//!
//! Beside the training loop, each in its own module and re-exported here:
//! the epoch table (`table`: [`EpochStats`], [`Metric`], [`EpochTable`]),
//! step profiling (`profile`: [`StepPhase`], [`RankStepProfile`], and how
//! profiles travel through [`GradientSync::sum`]), and checkpoints that
//! resume exactly (`checkpoint`: [`CheckpointMeta`],
//! [`Learner::save_checkpoint`], [`Learner::from_checkpoint`]).
//!
//! Reproducibility: the sample order and augmentation come from the loader's
//! `(seed, epoch)`, dropout from `tch::manual_seed(seed + epoch)` set at the
//! start of every epoch, so a run resumed from a checkpoint continues the
//! same loss curve as the run that never stopped.

mod checkpoint;
mod profile;
mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use camshaft_data::Splits;
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

pub use self::checkpoint::{CHECKPOINT_FILES, CheckpointMeta};
pub use self::profile::{PHASES, RankStepProfile, StepPhase, StepTrace, TRACED_STEPS};
use self::profile::{StepClock, gather_profiles};
pub use self::table::{EpochStats, EpochTable, Metric};
use crate::graphs::{GraphSlot, Next, StepGraph};
use crate::loader::{Batch, Loader, LoaderConfig, Shard, to_device};
use crate::model::{Model, channels_last};
use crate::optim::{Adam, AdamConfig};
use crate::precision::{
    Autocast, LossScaleConfig, LossScaleState, LossScaler, Precision, found_non_finite,
};
use crate::schedule::{LrRange, Plan};
use crate::{Error, Result};

/// What data-parallel training needs from a communicator.
pub trait GradientSync: Send {
    /// Average `tensors` (gradients) over all ranks, in place.
    fn average(&mut self, tensors: &[Tensor]) -> Result<()>;
    /// Sum `values` over all ranks, in place (exact metric reduction).
    fn sum(&mut self, values: &mut [f64]) -> Result<()>;
    /// Overwrite `tensors` with rank 0's values on every rank.
    fn broadcast(&mut self, tensors: &[Tensor]) -> Result<()>;
}

/// One process, no communication.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl GradientSync for SingleProcess {
    fn average(&mut self, _: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn sum(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &[Tensor]) -> Result<()> {
        Ok(())
    }
}

/// Learner settings besides the model and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnerConfig {
    /// Batching, resizing, augmentation and the seed.
    pub loader: LoaderConfig,
    /// Optimiser hyper-parameters.
    pub adam: AdamConfig,
    /// Metric columns of the table.
    pub metrics: Vec<Metric>,
    /// This rank's place in a data-parallel group.
    pub shard: Shard,
    /// Draw a progress bar on stderr during epochs (only on a terminal).
    pub progress: bool,
    /// The forward pass's dtype (autocast); float32 by default.
    #[serde(default)]
    pub precision: Precision,
    /// Weights and inputs channels-last (NHWC strides).
    #[serde(default)]
    pub channels_last: bool,
    /// Dynamic loss scaling, used with [`Precision::Fp16`].
    #[serde(default)]
    pub loss_scale: LossScaleConfig,
    /// Time each training step's phases on every rank
    /// ([`EpochStats::step_profiles`]); on a GPU each phase then ends with
    /// a device synchronisation.
    #[serde(default)]
    pub profile_steps: bool,
    /// Replay training steps' forward and backward passes from a CUDA
    /// graph (see [`crate::graphs`]) where they can: on a CUDA device,
    /// without `profile_steps`. On by default.
    #[serde(default = "yes")]
    pub cuda_graphs: bool,
}

fn yes() -> bool {
    true
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            loader: LoaderConfig::default(),
            adam: AdamConfig::default(),
            metrics: vec![Metric::Accuracy],
            shard: Shard::default(),
            progress: true,
            precision: Precision::Fp32,
            channels_last: false,
            loss_scale: LossScaleConfig::default(),
            profile_steps: false,
            cuda_graphs: true,
        }
    }
}

/// The result of [`Learner::lr_find`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrFind {
    /// Learning rates tried, one per step.
    pub lrs: Vec<f64>,
    /// Smoothed training loss at each.
    pub losses: Vec<f64>,
    /// fastai's `valley` suggestion.
    pub suggestion: f64,
}

/// Trains a [`Model`] on [`Splits`].
pub struct Learner {
    model: Model,
    data: Splits,
    loader: Loader,
    opt: Adam,
    config: LearnerConfig,
    plan: Option<Plan>,
    epochs_done: usize,
    history: Vec<EpochStats>,
    sync: Box<dyn GradientSync>,
    cancel: Option<Arc<AtomicBool>>,
    scaler: Option<LossScaler>,
    /// Float16 steps skipped in a row for overflowing gradients.
    skipped_in_a_row: u32,
    /// The captured training step, when CUDA graphs apply.
    graph: GraphSlot,
}

/// Float16 steps skipped in a row before the run counts as diverged: the
/// scale has then fallen by 2⁵⁰, far below any that recovers.
const MAX_SKIPPED_IN_A_ROW: u32 = 50;

/// What one training step did.
#[derive(Clone, Copy, Debug)]
struct StepOutcome {
    /// This rank's mean loss on its batch.
    loss: f64,
    /// Float16 overflow: the optimiser step was skipped (on every rank).
    skipped: bool,
    /// The group's gradients are not finite (and, with float16, have not
    /// been for too many steps): no step was taken and none should follow.
    diverged: bool,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("model", &self.model)
            .field("epochs_done", &self.epochs_done)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

fn cross_entropy(logits: &Tensor, labels: &Tensor, reduction: Reduction) -> Result<Tensor> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, reduction, -100, 0.0)?)
}

impl Learner {
    /// A learner for `model` on `data`, one process.
    pub fn new(mut model: Model, data: Splits, config: LearnerConfig) -> Result<Self> {
        config.shard.validate()?;
        if model.is_inference_only() {
            return Err(Error::Config(
                "this model's body was converted for inference (Model::body_in): it cannot be trained".into(),
            ));
        }
        let n = model.spec().num_classes();
        if data.train.class_names().len() != n {
            return Err(Error::Config(format!(
                "the model has {n} classes but the data set has {}",
                data.train.class_names().len()
            )));
        }
        let loader = Loader::new(config.loader.clone())?;
        if config.channels_last {
            // Before the optimiser, so its state takes the same layout.
            model.to_channels_last()?;
        }
        let scaler = if config.precision.needs_loss_scaling() {
            Some(LossScaler::new(config.loss_scale, model.device())?)
        } else {
            None
        };
        let opt = Self::make_optimizer(&model, config.adam);
        Ok(Learner {
            model,
            data,
            loader,
            opt,
            config,
            plan: None,
            epochs_done: 0,
            history: Vec::new(),
            sync: Box::new(SingleProcess),
            cancel: None,
            scaler,
            skipped_in_a_row: 0,
            graph: GraphSlot::default(),
        })
    }

    fn make_optimizer(model: &Model, adam: AdamConfig) -> Adam {
        Adam::new(adam, model.param_groups(), |name| {
            model.is_batch_norm(name) || name.ends_with(".bias")
        })
    }

    /// Train data-parallel through `sync`: rank 0's weights and buffers are
    /// broadcast now, so every rank starts from the same model.
    pub fn set_sync(&mut self, mut sync: Box<dyn GradientSync>) -> Result<()> {
        let vars: Vec<Tensor> = self.model.named_variables().into_values().collect();
        sync.broadcast(&vars)?;
        self.sync = sync;
        Ok(())
    }

    /// Stop training at the next batch when `flag` becomes true
    /// ([`Error::Cancelled`]).
    pub fn set_cancel_flag(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Give the model back.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &Adam {
        &self.opt
    }

    /// The settings.
    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// Epoch rows so far.
    pub fn history(&self) -> &[EpochStats] {
        &self.history
    }

    /// The current plan and how many of its epochs are done.
    pub fn progress(&self) -> (Option<&Plan>, usize) {
        (self.plan.as_ref(), self.epochs_done)
    }

    /// Start a new plan (the epoch count restarts at 0).
    pub fn start(&mut self, plan: Plan) -> Result<()> {
        plan.validate()?;
        self.plan = Some(plan);
        self.epochs_done = 0;
        Ok(())
    }

    /// Train the next epoch of the plan; `None` when the plan is done.
    pub fn next_epoch(&mut self) -> Result<Option<EpochStats>> {
        let Some(plan) = self.plan.clone() else {
            return Ok(None);
        };
        let Some((stage_index, epoch_in_stage)) = plan.locate(self.epochs_done) else {
            return Ok(None);
        };
        let stage = plan.stages[stage_index];
        let epoch = self.epochs_done;
        let started = Instant::now();
        self.model.set_frozen(stage.frozen);
        tch::manual_seed(self.config.loader.seed.wrapping_add(epoch as u64) as i64);

        let indices = self.train_indices(epoch)?;
        let batches = self
            .loader
            .batches(self.data.train.clone(), indices, epoch, true);
        let steps = batches.len();
        let total = (stage.epochs * steps) as f64;
        let group_lrs = stage.lr.per_group(self.opt.num_groups());
        let bar = self.progress_bar(steps as u64, format!("epoch {epoch}"));
        // Loss sums and sample counts: all samples, and those of steps whose
        // loss was finite (a float16 step can overflow and be skipped).
        let (mut loss_sum, mut loss_seen, mut seen, mut skipped) = (0.0f64, 0u64, 0u64, 0u64);
        let mut last_lr = 0.0f64;
        let mut clock = self
            .config
            .profile_steps
            .then(|| StepClock::new(self.config.shard.rank, self.model.device()));
        for (step, batch) in batches.enumerate() {
            self.check_cancelled()?;
            let batch = batch?;
            let pos = (epoch_in_stage * steps + step) as f64 / total;
            let (mult, mom) = stage.schedule.at(pos);
            let lrs: Vec<f64> = group_lrs.iter().map(|lr| lr * mult).collect();
            last_lr = lrs.last().copied().unwrap_or(0.0);
            let outcome = self.train_step(
                &batch,
                &lrs,
                mom,
                clock.as_mut().map(|c| (c, step)),
                Some(stage.frozen),
            )?;
            if outcome.diverged {
                return Err(Error::Diverged {
                    epoch,
                    step,
                    loss: outcome.loss,
                });
            }
            let n = batch.indices.len() as u64;
            if outcome.loss.is_finite() {
                loss_sum += outcome.loss * n as f64;
                loss_seen += n;
            }
            seen += n;
            skipped += u64::from(outcome.skipped);
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", outcome.loss));
        }
        bar.finish_and_clear();
        let train_secs = started.elapsed().as_secs_f64();
        let mut sums = [loss_sum, loss_seen as f64, seen as f64];
        self.sync.sum(&mut sums)?;
        let step_profiles = match clock {
            Some(clock) => gather_profiles(
                self.sync.as_mut(),
                &clock.profile,
                self.config.shard.world_size,
            )?,
            None => Vec::new(),
        };
        if let Some(scaler) = &self.scaler {
            tracing::info!(
                epoch,
                skipped_steps = skipped,
                loss_scale = scaler.state()?.scale,
                "float16 loss scaling"
            );
        }
        let (valid_loss, accuracy, valid_samples) = self.evaluate()?;
        let stats = EpochStats {
            epoch,
            stage: stage_index,
            train_loss: sums[0] / sums[1].max(1.0),
            valid_loss,
            accuracy,
            train_samples: sums[2] as u64,
            valid_samples,
            seconds: started.elapsed().as_secs_f64(),
            images_per_sec: sums[2] / train_secs.max(1e-9),
            lr: last_lr,
            step_profiles,
        };
        tracing::info!(
            epoch,
            train_loss = stats.train_loss,
            valid_loss,
            accuracy,
            images_per_sec = stats.images_per_sec,
            "epoch done"
        );
        self.epochs_done += 1;
        self.history.push(stats.clone());
        Ok(Some(stats))
    }

    /// Run the rest of the plan, calling `on_epoch` after each epoch.
    pub fn run(
        &mut self,
        mut on_epoch: impl FnMut(&Learner, &EpochStats) -> Result<()>,
    ) -> Result<()> {
        while let Some(stats) = self.next_epoch()? {
            on_epoch(self, &stats)?;
        }
        Ok(())
    }

    /// fastai's `fit(epochs, lr)`: constant learning rate.
    pub fn fit(&mut self, epochs: usize, lr: f64) -> Result<Vec<EpochStats>> {
        self.run_plan(Plan::fit(epochs, lr))
    }

    /// fastai's `fit_one_cycle(epochs, lr_max)`.
    pub fn fit_one_cycle(&mut self, epochs: usize, lr_max: LrRange) -> Result<Vec<EpochStats>> {
        self.run_plan(Plan::one_cycle(epochs, lr_max))
    }

    /// fastai's `fine_tune(epochs, base_lr, freeze_epochs)`.
    pub fn fine_tune(
        &mut self,
        epochs: usize,
        base_lr: f64,
        freeze_epochs: usize,
    ) -> Result<Vec<EpochStats>> {
        self.run_plan(Plan::fine_tune(epochs, base_lr, freeze_epochs))
    }

    fn run_plan(&mut self, plan: Plan) -> Result<Vec<EpochStats>> {
        self.start(plan)?;
        let mut rows = Vec::new();
        while let Some(s) = self.next_epoch()? {
            rows.push(s);
        }
        Ok(rows)
    }

    /// This rank's training indices for `epoch`; an error when the data set
    /// holds less than one batch of the whole group.
    fn train_indices(&self, epoch: usize) -> Result<Vec<usize>> {
        let cfg = &self.config;
        let n = self.data.train.len();
        let indices = cfg
            .shard
            .train_indices(n, cfg.loader.batch_size, cfg.loader.seed, epoch);
        if indices.is_empty() {
            return Err(Error::Config(format!(
                "the training set ({n} samples) is smaller than one batch of the group ({} × {})",
                cfg.shard.world_size, cfg.loader.batch_size
            )));
        }
        Ok(indices)
    }

    /// The batch on the model's device, in its layout.
    fn inputs(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let (x, y) = to_device(batch, self.model.device());
        let x = if self.config.channels_last {
            channels_last(&x)?
        } else {
            x
        };
        Ok((x, y))
    }

    /// Why training steps run eagerly rather than replay a CUDA graph
    /// ([`crate::graphs`]), or `None` when they replay one (after the
    /// warm-up).
    pub fn cuda_graphs_unavailable(&self) -> Option<&'static str> {
        crate::graphs::unavailable(
            self.config.cuda_graphs,
            self.model.device(),
            self.config.profile_steps,
        )
    }

    /// Training steps whose forward and backward passes replayed a CUDA
    /// graph so far.
    pub fn cuda_graph_replays(&self) -> u64 {
        self.graph.replays()
    }

    /// Forward (under autocast), backward (of the scaled loss with float16),
    /// gradient averaging, then the optimiser step if the averaged gradients
    /// are finite. The check runs on the all-reduced gradients, which are
    /// the same on every rank, so the whole group agrees: with float16 it
    /// skips the step and backs the scale off, otherwise every rank fails
    /// with [`Error::Diverged`] (a NaN on one rank reaches the others
    /// through the all-reduce instead of leaving them waiting on it).
    ///
    /// `frozen`: the stage's setting, where the forward and backward
    /// passes may come from a CUDA graph (see [`crate::graphs`]).
    fn train_step(
        &mut self,
        batch: &Batch,
        lrs: &[f64],
        mom: f64,
        mut clock: Option<(&mut StepClock, usize)>,
        frozen: Option<bool>,
    ) -> Result<StepOutcome> {
        let mut end = |phase| {
            if let Some((clock, step)) = clock.as_mut() {
                clock.end(phase, *step);
            }
        };
        let loss = match self.graph_step(batch, frozen)? {
            Some(loss) => loss,
            None => {
                let (x, y) = self.inputs(batch)?;
                end(StepPhase::Data);
                let loss = self.forward(&x, &y)?;
                end(StepPhase::Forward);
                self.backward(&loss)?;
                end(StepPhase::Backward);
                loss
            }
        };
        let grads = self.opt.gradients();
        self.sync.average(&grads)?;
        // The verdict stays on the device: the fused optimiser skips itself
        // when it is set, so the step needs one read back, at its end.
        let found_inf = match &self.scaler {
            Some(scaler) => scaler.unscale_on_device(&grads)?,
            None => found_non_finite(&grads, self.model.device())?,
        };
        end(StepPhase::Allreduce);
        self.opt.step_unless(lrs, mom, &found_inf)?;
        let read = Tensor::f_cat(
            &[
                loss.f_detach()?.f_to_kind(Kind::Float)?.f_reshape([1])?,
                found_inf.shallow_clone(),
            ],
            0,
        )?
        .f_to_device(tch::Device::Cpu)?;
        let (value, finite) = (
            read.f_double_value(&[0])?,
            read.f_double_value(&[1])? == 0.0,
        );
        let mut outcome = StepOutcome {
            loss: value,
            skipped: false,
            diverged: false,
        };
        match &mut self.scaler {
            Some(scaler) => {
                scaler.update_found_inf(&found_inf)?;
                if finite {
                    self.skipped_in_a_row = 0;
                } else {
                    self.skipped_in_a_row += 1;
                    outcome.skipped = true;
                    outcome.diverged = self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW;
                }
            }
            None => outcome.diverged = !finite,
        }
        end(StepPhase::Optimizer);
        Ok(outcome)
    }

    /// The mean loss of a training batch, under autocast.
    fn forward(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let _autocast = Autocast::enter(self.config.precision, self.model.device())?;
        cross_entropy(&self.model.forward_t(x, true), y, Reduction::Mean)
    }

    /// The gradients of `loss` (scaled, with float16) in place of the last.
    fn backward(&self, loss: &Tensor) -> Result<()> {
        self.opt.zero_grad();
        match &self.scaler {
            Some(scaler) => scaler.scale(loss)?.f_backward()?,
            None => loss.f_backward()?,
        }
        Ok(())
    }

    /// The forward and backward passes of a training step replayed from a
    /// CUDA graph (captured first when the warm-up is over): the loss,
    /// with the gradients in place. `None` where the step runs eagerly.
    /// A capture that fails is logged and training goes on eagerly.
    fn graph_step(&mut self, batch: &Batch, frozen: Option<bool>) -> Result<Option<Tensor>> {
        let Some(frozen) = frozen else {
            return Ok(None);
        };
        if self.cuda_graphs_unavailable().is_some() {
            return Ok(None);
        }
        let values = [&batch.images, &batch.labels];
        match self.graph.next(frozen, &values) {
            Next::Eager => Ok(None),
            Next::Replay(graph) => Ok(Some(graph.replay(&values)?.shallow_clone())),
            Next::Capture => {
                let (x, y) = self.inputs(batch)?;
                let captured = StepGraph::capture(self.model.device(), vec![x, y], |xy| {
                    let loss = self.forward(&xy[0], &xy[1])?;
                    self.backward(&loss)?;
                    Ok(loss)
                });
                match captured {
                    Ok(graph) => {
                        let loss = graph.replay_as_is()?.shallow_clone();
                        tracing::info!(frozen, "training steps replay a CUDA graph");
                        self.graph.captured(frozen, graph);
                        Ok(Some(loss))
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "cannot capture the training step as a CUDA graph: eager steps from now on"
                        );
                        self.graph.failed();
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The loss scaler's state (float16 runs only).
    pub fn loss_scale(&self) -> Result<Option<LossScaleState>> {
        self.scaler.as_ref().map(LossScaler::state).transpose()
    }

    /// Give every rank rank 0's BatchNorm statistics (they drift apart as
    /// each rank normalises its own batches), as DDP does. A collective:
    /// where rank 0 calls [`Learner::save_checkpoint`] (which calls this),
    /// every other rank must call this.
    pub fn sync_buffers(&mut self) -> Result<()> {
        let buffers: Vec<Tensor> = self
            .model
            .named_variables()
            .into_iter()
            .filter(|(k, _)| crate::model::is_buffer(k))
            .map(|(_, v)| v)
            .collect();
        self.sync.broadcast(&buffers)
    }

    fn check_cancelled(&self) -> Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }

    fn progress_bar(&self, len: u64, prefix: String) -> indicatif::ProgressBar {
        if !self.config.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} {elapsed}<{eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix);
        bar
    }

    /// Validation loss, accuracy and sample count over the whole validation
    /// set (this rank's disjoint block, summed over the group).
    pub fn evaluate(&mut self) -> Result<(f64, f64, u64)> {
        self.sync_buffers()?;
        let indices = self.config.shard.eval_indices(self.data.valid.len());
        let batches = self
            .loader
            .batches(self.data.valid.clone(), indices, 0, false);
        let bar = self.progress_bar(batches.len() as u64, "valid".into());
        let mut sums = [0.0f64; 3];
        let _guard = tch::no_grad_guard();
        let _autocast = Autocast::enter(self.config.precision, self.model.device())?;
        for batch in batches {
            self.check_cancelled()?;
            let batch = batch?;
            let (x, y) = self.inputs(&batch)?;
            let logits = self.model.forward_t(&x, false);
            sums[0] += cross_entropy(&logits, &y, Reduction::Sum)?.f_double_value(&[])?;
            sums[1] += logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&y)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])? as f64;
            sums[2] += batch.indices.len() as f64;
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.sync.sum(&mut sums)?;
        let n = sums[2].max(1.0);
        Ok((sums[0] / n, sums[1] / n, sums[2] as u64))
    }

    /// fastai's `lr_find`: train `num_it` steps with the learning rate growing
    /// exponentially from `start_lr` to `end_lr` (stopping early when the
    /// smoothed loss exceeds 4× its minimum), then restore the weights and
    /// optimiser state. The suggestion is fastai's `valley`.
    pub fn lr_find(&mut self, start_lr: f64, end_lr: f64, num_it: usize) -> Result<LrFind> {
        if !(start_lr > 0.0 && end_lr > start_lr && num_it >= 10) {
            return Err(Error::Config(format!(
                "lr_find needs 0 < start_lr < end_lr and at least 10 steps, got {start_lr}, {end_lr}, {num_it}"
            )));
        }
        let weights: Vec<(Tensor, Tensor)> = self
            .model
            .named_variables()
            .into_values()
            .map(|v| {
                let copy = v.detach().copy();
                (v, copy)
            })
            .collect();
        let opt_state = self.opt.snapshot()?;
        let result = self.lr_find_steps(start_lr, end_lr, num_it);
        tch::no_grad(|| -> Result<()> {
            for (var, saved) in &weights {
                var.shallow_clone().f_copy_(saved)?;
            }
            Ok(())
        })?;
        self.opt.restore(opt_state)?;
        let (lrs, losses) = result?;
        let lo = num_it / 10;
        let hi = losses.len().saturating_sub(5).max(lo + 1).min(losses.len());
        let suggestion = valley(&lrs[lo..hi], &losses[lo..hi]);
        Ok(LrFind {
            lrs,
            losses,
            suggestion,
        })
    }

    fn lr_find_steps(
        &mut self,
        start_lr: f64,
        end_lr: f64,
        num_it: usize,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let (mut lrs, mut losses) = (Vec::new(), Vec::new());
        let (mut avg, mut best) = (0.0f64, f64::INFINITY);
        let groups = self.opt.num_groups();
        let mut epoch = 0;
        'outer: loop {
            let indices = self.train_indices(epoch)?;
            for batch in self
                .loader
                .batches(self.data.train.clone(), indices, epoch, true)
            {
                let i = lrs.len();
                if i >= num_it {
                    break 'outer;
                }
                let batch = batch?;
                let lr = start_lr * (end_lr / start_lr).powf(i as f64 / num_it as f64);
                let outcome = self.train_step(&batch, &vec![lr; groups], 0.9, None, None)?;
                if outcome.diverged {
                    break 'outer;
                }
                let value = outcome.loss;
                avg = 0.98 * avg + 0.02 * value;
                let smooth = avg / (1.0 - 0.98f64.powi(i as i32 + 1));
                lrs.push(lr);
                losses.push(smooth);
                best = best.min(smooth);
                if !smooth.is_finite() || smooth > 4.0 * best {
                    break 'outer;
                }
            }
            epoch += 1;
        }
        Ok((lrs, losses))
    }
}

/// fastai's `valley`: the longest descending run of the loss curve; the
/// suggestion sits two thirds of the way down it.
pub fn valley(lrs: &[f64], losses: &[f64]) -> f64 {
    let n = losses.len();
    if n == 0 {
        return f64::NAN;
    }
    let mut lds = vec![1usize; n];
    let (mut max_start, mut max_end) = (0usize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[max_end] < lds[i] {
                max_end = i;
                max_start = max_end - lds[max_end];
            }
        }
    }
    let sections = (max_end - max_start) as f64 / 3.0;
    let idx = max_start + sections as usize + (sections / 2.0) as usize;
    lrs[idx.min(n - 1)]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn valley_picks_the_descent() {
        let lrs: Vec<f64> = (0..30).map(|i| 10f64.powf(-6.0 + i as f64 * 0.2)).collect();
        let losses: Vec<f64> = (0..30)
            .map(|i| match i {
                0..10 => 2.0,
                10..22 => 2.0 - (i - 9) as f64 * 0.1,
                _ => 1.0 + (i - 21) as f64 * 0.5,
            })
            .collect();
        let s = valley(&lrs, &losses);
        assert!(s > lrs[10] && s < lrs[21], "suggestion {s}");
    }
}
