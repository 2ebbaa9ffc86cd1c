//! The worker's Prometheus metrics, in a registry of its own (served by
//! [`camshaft_metrics::serve`] when `metrics_listen` is set). Training
//! throughput is the group's and lives on the coordinator
//! (`camshaft_coordinator_train_images_per_second`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `camshaft_worker_allreduce_seconds` | histogram | — (one observation per gradient all-reduce of a step) |
//! | `camshaft_worker_ranks_running` | gauge | — |

use camshaft_metrics::prometheus::{Histogram, HistogramOpts, IntGauge, Opts, Registry};
use camshaft_vision::learner::GradientSync;
use tch::Tensor;

use crate::{Error, Result};

const NS: &str = "camshaft_worker";

/// Every metric of one worker.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    allreduce_seconds: Histogram,
    pub(crate) ranks_running: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Result<Self> {
        let bad = |e: camshaft_metrics::prometheus::Error| Error::Config(format!("metrics: {e}"));
        let registry = Registry::new();
        let allreduce_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "allreduce_seconds",
                "Seconds per gradient all-reduce (every bucket of one step).",
            )
            .namespace(NS)
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .map_err(bad)?;
        let ranks_running = IntGauge::with_opts(
            Opts::new("ranks_running", "Rank threads training now.").namespace(NS),
        )
        .map_err(bad)?;
        registry
            .register(Box::new(allreduce_seconds.clone()))
            .map_err(bad)?;
        registry
            .register(Box::new(ranks_running.clone()))
            .map_err(bad)?;
        Ok(Metrics {
            registry,
            allreduce_seconds,
            ranks_running,
        })
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `sync` with its gradient all-reduces timed.
    pub(crate) fn timed(&self, sync: Box<dyn GradientSync>) -> Box<dyn GradientSync> {
        Box::new(TimedSync {
            inner: sync,
            seconds: self.allreduce_seconds.clone(),
        })
    }
}

/// A gradient sync whose `average` calls are timed.
struct TimedSync {
    inner: Box<dyn GradientSync>,
    seconds: Histogram,
}

impl GradientSync for TimedSync {
    fn average(&mut self, tensors: &[Tensor]) -> camshaft_vision::Result<()> {
        let _timer = self.seconds.start_timer();
        self.inner.average(tensors)
    }

    fn sum(&mut self, values: &mut [f64]) -> camshaft_vision::Result<()> {
        self.inner.sum(values)
    }

    fn broadcast(&mut self, tensors: &[Tensor]) -> camshaft_vision::Result<()> {
        self.inner.broadcast(tensors)
    }
}
