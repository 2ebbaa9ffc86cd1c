//! The coordinator's Prometheus metrics, in a registry of its own (served
//! by [`camshaft_metrics::serve`] when `metrics_listen` is set).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `camshaft_coordinator_grpc_requests_total` | counter | `method`, `code` |
//! | `camshaft_coordinator_grpc_request_duration_seconds` | histogram | `method` |
//! | `camshaft_coordinator_workers` | gauge (read at scrape) | — |
//! | `camshaft_coordinator_jobs_submitted_total` | counter | — |
//! | `camshaft_coordinator_jobs_finished_total` | counter | `state` |
//! | `camshaft_coordinator_attempt_failures_total` | counter | `kind` |
//! | `camshaft_coordinator_epochs_total` | counter | — |
//! | `camshaft_coordinator_train_images_per_second` | gauge | `job` (the group's last epoch) |

use std::sync::{Arc, Weak};

use camshaft_metrics::GrpcMetricsLayer;
use camshaft_metrics::prometheus::core::{Collector, Desc};
use camshaft_metrics::prometheus::proto::MetricFamily;
use camshaft_metrics::prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::cluster::Cluster;
use crate::{Error, Result};

const NS: &str = "camshaft_coordinator";

/// Every metric of one coordinator.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) jobs_submitted: IntCounter,
    pub(crate) jobs_finished: IntCounterVec,
    pub(crate) attempt_failures: IntCounterVec,
    pub(crate) epochs: IntCounter,
    pub(crate) images_per_second: GaugeVec,
}

fn bad(e: camshaft_metrics::prometheus::Error) -> Error {
    Error::Internal(format!("metrics: {e}"))
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NS);
        let jobs_submitted =
            IntCounter::with_opts(opts("jobs_submitted_total", "Jobs accepted.")).map_err(bad)?;
        let jobs_finished = IntCounterVec::new(
            opts("jobs_finished_total", "Jobs that ended, by final state."),
            &["state"],
        )
        .map_err(bad)?;
        let attempt_failures = IntCounterVec::new(
            opts(
                "attempt_failures_total",
                "Attempts ended early, by failure kind.",
            ),
            &["kind"],
        )
        .map_err(bad)?;
        let epochs =
            IntCounter::with_opts(opts("epochs_total", "Epoch rows recorded.")).map_err(bad)?;
        let images_per_second = GaugeVec::new(
            opts(
                "train_images_per_second",
                "Training images per second of a job's whole group, last epoch.",
            ),
            &["job"],
        )
        .map_err(bad)?;
        registry
            .register(Box::new(jobs_submitted.clone()))
            .map_err(bad)?;
        registry
            .register(Box::new(jobs_finished.clone()))
            .map_err(bad)?;
        registry
            .register(Box::new(attempt_failures.clone()))
            .map_err(bad)?;
        registry.register(Box::new(epochs.clone())).map_err(bad)?;
        registry
            .register(Box::new(images_per_second.clone()))
            .map_err(bad)?;
        Ok(Metrics {
            registry,
            jobs_submitted,
            jobs_finished,
            attempt_failures,
            epochs,
            images_per_second,
        })
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The request metrics layer for the gRPC server, and the workers gauge
    /// read from `cluster` at each scrape.
    pub(crate) fn attach(&self, cluster: &Arc<Cluster>) -> Result<GrpcMetricsLayer> {
        let workers =
            IntGauge::with_opts(Opts::new("workers", "Workers connected now.").namespace(NS))
                .map_err(bad)?;
        self.registry
            .register(Box::new(WorkersGauge {
                cluster: Arc::downgrade(cluster),
                gauge: workers,
            }))
            .map_err(bad)?;
        Ok(GrpcMetricsLayer::new(&self.registry, NS)
            .map_err(|e| Error::Internal(e.to_string()))?
            .with_known_methods(camshaft_proto::roles::known_methods()))
    }
}

/// Reads the number of connected workers when scraped.
struct WorkersGauge {
    cluster: Weak<Cluster>,
    gauge: IntGauge,
}

impl Collector for WorkersGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(cluster) = self.cluster.upgrade() {
            self.gauge
                .set(i64::try_from(cluster.worker_count()).unwrap_or(i64::MAX));
        }
        self.gauge.collect()
    }
}
