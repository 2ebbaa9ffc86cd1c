//! The explainer's Prometheus metrics, in a registry of its own (served by
//! [`camshaft_metrics::serve`] when `metrics_listen` is set).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `camshaft_explainer_requests_total` | counter | `rpc` (`Explain`, `ExplainStream`), `code` (gRPC code name) |
//! | `camshaft_explainer_request_duration_seconds` | histogram | `rpc` |
//! | `camshaft_explainer_images_total` | counter | `method`, `result` (`explained` or the image error kind) |
//! | `camshaft_explainer_images_dropped_total` | counter | `reason` (`deadline`, `cancelled`) |
//! | `camshaft_explainer_queued_images` | gauge | — |
//! | `camshaft_explainer_batch_size` | histogram | — |
//! | `camshaft_explainer_batch_inference_seconds` | histogram | — |
//! | `camshaft_explainer_batches_total` | counter | `method` |

use std::sync::Mutex;
use std::time::Duration;

use camshaft_metrics::prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};
use camshaft_proto::v1::ImageErrorKind;
use camshaft_vision::CamMethod;

use crate::{Error, Result};

/// Every metric of one explainer.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    images: IntCounterVec,
    dropped: IntCounterVec,
    queued: IntGauge,
    batch_size: Histogram,
    batch_seconds: Histogram,
    batches: IntCounterVec,
    /// Recent compute seconds per image (moving average), for retry hints.
    recent_image_secs: Mutex<Option<f64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const NS: &str = "camshaft_explainer";

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let bad = |e: camshaft_metrics::prometheus::Error| Error::Internal(format!("metrics: {e}"));
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Explain requests answered, by RPC and status code.",
            )
            .namespace(NS),
            &["rpc", "code"],
        )
        .map_err(bad)?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a request's arrival to its answer.",
            )
            .namespace(NS)
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["rpc"],
        )
        .map_err(bad)?;
        let images = IntCounterVec::new(
            Opts::new(
                "images_total",
                "Images answered, by method and result (explained or the image error kind).",
            )
            .namespace(NS),
            &["method", "result"],
        )
        .map_err(bad)?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "images_dropped_total",
                "Images dropped from a batch before compute: their deadline passed or their client went away.",
            )
            .namespace(NS),
            &["reason"],
        )
        .map_err(bad)?;
        let queued = IntGauge::with_opts(
            Opts::new(
                "queued_images",
                "Images admitted and not answered yet (decoding, queued or computing).",
            )
            .namespace(NS),
        )
        .map_err(bad)?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_size", "Images per forward pass.")
                .namespace(NS)
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .map_err(bad)?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "batch_inference_seconds",
                "Model time of one batch (forward, maps, faithfulness).",
            )
            .namespace(NS)
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .map_err(bad)?;
        let batches = IntCounterVec::new(
            Opts::new("batches_total", "Forward passes run, by method.").namespace(NS),
            &["method"],
        )
        .map_err(bad)?;
        registry
            .register(Box::new(requests.clone()))
            .and_then(|()| registry.register(Box::new(request_seconds.clone())))
            .and_then(|()| registry.register(Box::new(images.clone())))
            .and_then(|()| registry.register(Box::new(dropped.clone())))
            .and_then(|()| registry.register(Box::new(queued.clone())))
            .and_then(|()| registry.register(Box::new(batch_size.clone())))
            .and_then(|()| registry.register(Box::new(batch_seconds.clone())))
            .and_then(|()| registry.register(Box::new(batches.clone())))
            .map_err(bad)?;
        Ok(Metrics {
            registry,
            requests,
            request_seconds,
            images,
            dropped,
            queued,
            batch_size,
            batch_seconds,
            batches,
            recent_image_secs: Mutex::new(None),
        })
    }

    /// The registry (to serve or to read in tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        camshaft_metrics::render(&self.registry)
    }

    /// One answered call of `rpc` with `code`.
    pub(crate) fn observe_call(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .with_label_values(&[rpc, code_name(code)])
            .inc();
        self.request_seconds
            .with_label_values(&[rpc])
            .observe(elapsed.as_secs_f64());
    }

    /// One answered image.
    pub(crate) fn observe_image(&self, method: &str, error_kind: i32) {
        let result = match ImageErrorKind::try_from(error_kind) {
            Ok(ImageErrorKind::Unspecified) => "explained",
            Ok(kind) => kind.as_str_name(),
            Err(_) => "unknown",
        };
        self.images.with_label_values(&[method, result]).inc();
    }

    /// Images dropped before compute.
    pub(crate) fn observe_dropped(&self, reason: &str, images: u64) {
        self.dropped.with_label_values(&[reason]).inc_by(images);
    }

    /// Images dropped before compute so far, all reasons.
    pub fn dropped_images(&self) -> u64 {
        ["deadline", "cancelled"]
            .iter()
            .map(|r| self.dropped.with_label_values(&[r]).get())
            .sum()
    }

    /// Forward passes run so far, all methods.
    pub fn batches(&self) -> u64 {
        CamMethod::ALL
            .iter()
            .map(|m| self.batches.with_label_values(&[m.name()]).get())
            .sum()
    }

    pub(crate) fn set_queued(&self, images: usize) {
        self.queued.set(images as i64);
    }

    /// One batch of `images` computed in `elapsed`.
    pub(crate) fn observe_batch(&self, method: &str, images: usize, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.batches.with_label_values(&[method]).inc();
        self.batch_size.observe(images as f64);
        self.batch_seconds.observe(secs);
        let per_image = secs / images.max(1) as f64;
        let mut recent = self
            .recent_image_secs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *recent = Some(recent.map_or(per_image, |r| 0.8 * r + 0.2 * per_image));
    }

    /// Recent compute seconds per image (passes' time over their images,
    /// whatever their size); 0.05 before the first pass.
    pub(crate) fn recent_image_secs(&self) -> f64 {
        self.recent_image_secs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(0.05)
    }
}

/// The canonical gRPC name of `code` (`OK`, `RESOURCE_EXHAUSTED`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}
