//! Dynamic batching: the images of concurrent requests for one model
//! version fill one forward pass, up to `max_batch` images (on a CPU, no
//! more than [`CPU_PASS_PIXELS`] of input) or until `max_batch_wait_ms`
//! after the first one arrived, whichever comes first.
//!
//! Each loaded version has `model_replicas` inference threads, each with its
//! own copy of the weights, pulling from one shared queue. A thread takes
//! the oldest image, then waits (at most the max wait) for more until the
//! batch is full; it drops the images whose request gave up (deadline passed,
//! client gone: its reply channel is closed) before computing, splits the rest
//! by recipe (a pass computes one method at one set of layers) and answers each image on its own
//! channel. The threads end when the version is dropped (its queue closes).
//!
//! Each queued image carries its admission [`Ticket`]: its compute units
//! are given back when its pass is computed or it is dropped from the
//! queue — not when its caller goes away, since a pass that started runs
//! to its end — and the rest of the ticket goes back with the answer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camshaft_vision::cam::MapRecipe;
use camshaft_vision::{Model, Precision};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tokio::sync::oneshot;

use crate::inference::{ImageJob, RawExplanation, run_batch};
use crate::metrics::{Dropped, Metrics};
use crate::queue::Ticket;
use crate::{Error, Result};

/// How a version's batcher runs (from the [`Config`](crate::Config)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more images after the first of a batch.
    pub max_wait: Duration,
    /// Inference threads (each with its own copy of the weights).
    pub replicas: usize,
    /// Intra-op threads of each inference thread on a CPU with more than
    /// one replica: libtorch's thread count (`tch::get_num_threads`) shared
    /// out, so replicas do not oversubscribe the cores. `None`: leave
    /// libtorch's count as it is (one replica, or a GPU).
    pub threads_per_replica: Option<i32>,
    /// Most input pixels in one pass ([`CPU_PASS_PIXELS`] on a CPU; `None`:
    /// only `max_batch` counts).
    pub max_pass_pixels: Option<u64>,
    /// Keep an image's results independent of its batch: a lone image runs
    /// as a pass of two copies where a pass of one differs (see the crate doc).
    pub batch_invariant: bool,
    /// The dtype the body's convolutions run in ([`Config::precision`](crate::Config::precision)).
    pub precision: Precision,
}

impl BatchSettings {
    /// The settings of `config`.
    /// The settings of `config`. On a CPU with several replicas the
    /// threads are shared out of libtorch's count as it is now.
    pub fn from_config(config: &crate::Config) -> Self {
        let replicas = config.model_replicas.max(1);
        let on_cpu = config.parse_device().is_ok_and(|d| d == tch::Device::Cpu);
        let threads_per_replica = (on_cpu && replicas > 1).then(|| {
            let replicas = i32::try_from(replicas).unwrap_or(i32::MAX);
            (tch::get_num_threads() / replicas).max(1)
        });
        BatchSettings {
            max_batch: config.max_batch.max(1),
            max_wait: Duration::from_millis(config.max_batch_wait_ms),
            replicas,
            threads_per_replica,
            max_pass_pixels: on_cpu.then_some(CPU_PASS_PIXELS),
            batch_invariant: config.batch_invariant,
            precision: config.precision,
        }
    }
}

/// Most input pixels in one pass on a CPU: 8 images at 224 px, 1 at 512 px.
/// A CPU computes a ResNet per image fastest in passes of about this size;
/// larger passes leave the caches and cost more per image (at 224 px a pass
/// of 32 takes ~15% more per image than one of 8, at 512 px a pass of 4
/// ~35% more than a pass of 1, on 2 cores).
pub const CPU_PASS_PIXELS: u64 = 8 * 224 * 224;

impl BatchSettings {
    /// These settings with `model`'s own ([`Config::models`](crate::Config::models))
    /// over them; `cpu_threads` is libtorch's thread count to share out
    /// between the replicas on a CPU.
    pub fn with_model(mut self, model: &crate::config::ModelSettings, cpu_threads: i32) -> Self {
        if let Some(max_batch) = model.max_batch {
            self.max_batch = max_batch.max(1);
        }
        if let Some(ms) = model.max_batch_wait_ms {
            self.max_wait = Duration::from_millis(ms);
        }
        if let Some(precision) = model.precision {
            self.precision = precision;
        }
        if let Some(replicas) = model.replicas {
            self.replicas = replicas.max(1);
            let on_cpu = self.max_pass_pixels.is_some();
            self.threads_per_replica = (on_cpu && self.replicas > 1).then(|| {
                let replicas = i32::try_from(self.replicas).unwrap_or(i32::MAX);
                (cpu_threads / replicas).max(1)
            });
        }
        self
    }

    /// Most images in one pass of a model whose input is `input_size`²:
    /// `max_batch`, and on a CPU no more than [`CPU_PASS_PIXELS`] allow
    /// (at least one).
    pub fn pass_images(&self, input_size: u32) -> usize {
        let by_pixels = self.max_pass_pixels.map_or(usize::MAX, |pixels| {
            let per_image = u64::from(input_size).pow(2).max(1);
            usize::try_from(pixels / per_image).unwrap_or(usize::MAX)
        });
        self.max_batch.min(by_pixels).max(1)
    }
}

/// An image's answer, with what is left of its admission ticket.
type Answer = (Result<RawExplanation>, Ticket);

/// One image waiting for a forward pass.
struct QueuedImage {
    recipe: Arc<MapRecipe>,
    job: ImageJob,
    deadline: Option<Instant>,
    /// Held while the image is queued or computed.
    ticket: Ticket,
    reply: oneshot::Sender<Answer>,
}

/// The queue of one model version and its inference threads.
pub(crate) struct Batcher {
    queue: Sender<QueuedImage>,
}

impl Batcher {
    /// Starts one inference thread per model in `replicas`.
    pub(crate) fn start(
        key: &str,
        replicas: Vec<Model>,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (queue, images) = crossbeam_channel::unbounded();
        for (i, model) in replicas.into_iter().enumerate() {
            let images = images.clone();
            let metrics = Arc::clone(&metrics);
            let name = format!("infer-{i}-{key}");
            std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn({
                    let key = key.to_string();
                    move || inference_loop(&key, &model, &images, settings, &metrics)
                })
                .map_err(|e| Error::Internal(format!("cannot start an inference thread: {e}")))?;
        }
        Ok(Batcher { queue })
    }

    /// Queues `jobs` and waits for their answers (in order), each with its
    /// ticket (its compute units given back). Dropping the returned future
    /// drops the images that are still waiting, when an inference thread
    /// next takes them (their tickets with them).
    pub(crate) async fn explain(
        &self,
        recipe: MapRecipe,
        jobs: Vec<(ImageJob, Ticket)>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Answer>> {
        let recipe = Arc::new(recipe);
        let mut replies = Vec::with_capacity(jobs.len());
        for (job, ticket) in jobs {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send(QueuedImage {
                    recipe: Arc::clone(&recipe),
                    job,
                    deadline,
                    ticket,
                    reply,
                })
                .map_err(|_| Error::Internal("the model's inference threads stopped".into()))?;
            replies.push(answer);
        }
        let mut out = Vec::with_capacity(replies.len());
        for answer in replies {
            out.push(answer.await.map_err(|_| {
                Error::Internal("an inference thread dropped an image unanswered".into())
            })?);
        }
        Ok(out)
    }
}

fn inference_loop(
    key: &str,
    model: &Model,
    images: &Receiver<QueuedImage>,
    settings: BatchSettings,
    metrics: &Metrics,
) {
    if let Some(threads) = settings.threads_per_replica {
        // Sets this thread's OpenMP team size (and libtorch's default for
        // threads that have not run a parallel operation yet).
        tch::set_num_threads(threads);
    }
    // A lone image runs as two copies only where a pass of one would give
    // other bits than a pass of two (probed once, on this thread: its
    // thread count is part of what picks libtorch's kernels).
    let duplicate_lone =
        settings.batch_invariant && !crate::inference::lone_pass_is_batch_invariant(model);
    tracing::debug!(model = %key, duplicate_lone, "inference thread ready");
    let pass_images = settings.pass_images(model.spec().input_size);
    // No gradient bookkeeping leaks between batches; Grad-CAM enables what
    // it needs on the feature map itself.
    while let Ok(first) = images.recv() {
        // The batch closes when full, at the max wait, or at the earliest
        // deadline of its images (an expired image is not held open).
        let mut closes = Instant::now() + settings.max_wait;
        if let Some(d) = first.deadline {
            closes = closes.min(d);
        }
        let mut batch = Vec::with_capacity(pass_images);
        batch.push(first);
        while batch.len() < pass_images {
            let next = match images.try_recv() {
                Ok(image) => Ok(image),
                Err(_) => images.recv_timeout(closes.saturating_duration_since(Instant::now())),
            };
            match next {
                Ok(image) => {
                    if let Some(d) = image.deadline {
                        closes = closes.min(d);
                    }
                    batch.push(image);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for image in batch {
            if image.reply.is_closed() {
                metrics.observe_dropped(Dropped::Cancelled, 1);
            } else if image.deadline.is_some_and(|d| d <= now) {
                metrics.observe_dropped(Dropped::Deadline, 1);
                let mut ticket = image.ticket;
                ticket.release_units();
                let _ = image.reply.send((
                    Err(Error::DeadlineExceeded(
                        "the deadline passed while the image was queued".into(),
                    )),
                    ticket,
                ));
            } else {
                live.push(image);
            }
        }
        // A pass computes one recipe (method, layers, smoothing): the
        // batch splits by recipe, oldest first.
        while let Some(first) = live.first() {
            let recipe = Arc::clone(&first.recipe);
            let (same, rest): (Vec<QueuedImage>, Vec<QueuedImage>) =
                live.into_iter().partition(|i| *i.recipe == *recipe);
            live = rest;
            compute(key, model, &recipe, same, settings, duplicate_lone, metrics);
        }
    }
    tracing::debug!(model = %key, "inference thread stopped");
}

fn compute(
    key: &str,
    model: &Model,
    recipe: &MapRecipe,
    batch: Vec<QueuedImage>,
    settings: BatchSettings,
    duplicate_lone: bool,
    metrics: &Metrics,
) {
    let started = Instant::now();
    let mut jobs = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for image in batch {
        jobs.push(image.job);
        replies.push((image.reply, image.ticket));
    }
    let n = jobs.len();
    let units: u64 = replies.iter().map(|(_, t)| t.held().units).sum();
    // A libtorch failure that panics instead of returning an error must not
    // take the thread (and every later request) down with it.
    let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_batch(model, recipe, &jobs, settings.max_batch, duplicate_lone)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(format!("inference panicked: {what}"))
    });
    // The pass is over: its inputs and its units are given back whether or
    // not anyone still waits for the answers.
    drop(jobs);
    metrics.observe_batch(recipe.method, n, units, started.elapsed());
    tracing::debug!(model = %key, images = n, method = recipe.method.name(), layers = ?recipe.layers, aug_smooth = recipe.aug_smooth, ms = started.elapsed().as_millis() as u64, "batch");
    match answer {
        Ok(results) => {
            for ((reply, mut ticket), result) in replies.into_iter().zip(results) {
                ticket.release_units();
                let _ = reply.send((Ok(result), ticket));
            }
        }
        Err(e) => {
            tracing::error!(model = %key, images = n, error = %e, "batch failed");
            for (reply, mut ticket) in replies {
                ticket.release_units();
                let _ = reply.send((Err(Error::Internal(format!("model {key}: {e}"))), ticket));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_passes_are_capped_by_pixels() {
        let cpu = BatchSettings::from_config(&crate::Config {
            max_batch: 32,
            ..crate::Config::default()
        });
        assert_eq!(cpu.pass_images(224), 8);
        assert_eq!(cpu.pass_images(512), 1);
        assert_eq!(cpu.pass_images(64), 32);
        assert_eq!(cpu.pass_images(4096), 1);
        let gpu = BatchSettings::from_config(&crate::Config {
            max_batch: 32,
            device: "cuda".into(),
            ..crate::Config::default()
        });
        assert_eq!(gpu.pass_images(512), 32);
        assert_eq!(gpu.threads_per_replica, None);
    }
}
