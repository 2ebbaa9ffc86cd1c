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
//! | `camshaft_explainer_admitted_decode_bytes` | gauge | — |
//! | `camshaft_explainer_admitted_compute_units` | gauge | — |
//! | `camshaft_explainer_decoding_images` | gauge | — |
//! | `camshaft_explainer_model_loads_total` | counter | `result` (`loaded`, `failed`) |
//! | `camshaft_explainer_batch_size` | histogram | — |
//! | `camshaft_explainer_batch_inference_seconds` | histogram | — |
//! | `camshaft_explainer_batches_total` | counter | `method` |
//! | `camshaft_explainer_model_inflight_images` | gauge | `model`, `version` |
//! | `camshaft_explainer_model_images_total` | counter | `model`, `version` |
//! | `camshaft_explainer_model_latency_seconds` | histogram | `model`, `version` |
//!
//! Every label value comes from a closed set: `rpc` from [`Rpc`], `method`
//! from [`CamMethod::name`], `result` and `reason` from fixed names (an
//! image error kind this build does not know is `unknown`), `code` from
//! the gRPC code. Nothing a client sends becomes a label.
//!
//! The `model` and `version` labels (Triton's convention) name loaded
//! versions only: a version's series appear when it has loaded and are
//! removed when it is evicted and no request still uses it, so there are
//! at most `model_cache_size` versions' series (plus evicted versions that
//! requests in flight still hold). The `model_*` series: images queued or
//! computing for the version (queue depth), images it answered (rate:
//! images/s), and the time from an image entering its queue to its answer
//! (queue wait plus pass).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camshaft_metrics::prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
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
    admitted_bytes: IntGauge,
    admitted_units: IntGauge,
    decoding: IntGauge,
    model_loads: IntCounterVec,
    batch_size: Histogram,
    batch_seconds: Histogram,
    batches: IntCounterVec,
    model_inflight: IntGaugeVec,
    model_images: IntCounterVec,
    model_latency: HistogramVec,
    /// Holders of each `(model, version)` label set ([`ModelSeries`]).
    model_series: Mutex<HashMap<(String, String), usize>>,
    /// Recent compute seconds per compute unit (moving average), for retry
    /// hints.
    recent_unit_secs: Mutex<Option<f64>>,
}

/// The RPCs calls are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rpc {
    /// `Explain`.
    Explain,
    /// One request of an `ExplainStream`.
    ExplainStream,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Explain => "Explain",
            Rpc::ExplainStream => "ExplainStream",
        }
    }
}

/// Why an image was dropped before compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its request's deadline passed.
    Deadline,
    /// Its caller went away (call cancelled, client gone).
    Cancelled,
}

impl Dropped {
    const ALL: [Dropped; 2] = [Dropped::Deadline, Dropped::Cancelled];

    fn name(self) -> &'static str {
        match self {
            Dropped::Deadline => "deadline",
            Dropped::Cancelled => "cancelled",
        }
    }
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
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help).namespace(NS)).map_err(bad)
        };
        let admitted_bytes = gauge(
            "admitted_decode_bytes",
            "Bytes of decoded images admitted and not given back (estimated from the headers): images being decoded, and model inputs until answered.",
        )?;
        let admitted_units = gauge(
            "admitted_compute_units",
            "Compute units (224-px forward passes) admitted and not computed yet.",
        )?;
        let decoding = gauge("decoding_images", "Images being decoded now.")?;
        let model_loads = IntCounterVec::new(
            Opts::new(
                "model_loads_total",
                "Model version loads, by result (loaded, failed); a request answered from a remembered failure is not a load.",
            )
            .namespace(NS),
            &["result"],
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
        let model_inflight = IntGaugeVec::new(
            Opts::new(
                "model_inflight_images",
                "Images queued or computing for a loaded model version.",
            )
            .namespace(NS),
            &["model", "version"],
        )
        .map_err(bad)?;
        let model_images = IntCounterVec::new(
            Opts::new(
                "model_images_total",
                "Images a loaded model version answered (maps computed).",
            )
            .namespace(NS),
            &["model", "version"],
        )
        .map_err(bad)?;
        let model_latency = HistogramVec::new(
            HistogramOpts::new(
                "model_latency_seconds",
                "Time from a request's images entering a version's queue to their answers (queue wait and pass).",
            )
            .namespace(NS)
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["model", "version"],
        )
        .map_err(bad)?;
        registry
            .register(Box::new(requests.clone()))
            .and_then(|()| registry.register(Box::new(request_seconds.clone())))
            .and_then(|()| registry.register(Box::new(images.clone())))
            .and_then(|()| registry.register(Box::new(dropped.clone())))
            .and_then(|()| registry.register(Box::new(queued.clone())))
            .and_then(|()| registry.register(Box::new(admitted_bytes.clone())))
            .and_then(|()| registry.register(Box::new(admitted_units.clone())))
            .and_then(|()| registry.register(Box::new(decoding.clone())))
            .and_then(|()| registry.register(Box::new(model_loads.clone())))
            .and_then(|()| registry.register(Box::new(batch_size.clone())))
            .and_then(|()| registry.register(Box::new(batch_seconds.clone())))
            .and_then(|()| registry.register(Box::new(batches.clone())))
            .and_then(|()| registry.register(Box::new(model_inflight.clone())))
            .and_then(|()| registry.register(Box::new(model_images.clone())))
            .and_then(|()| registry.register(Box::new(model_latency.clone())))
            .map_err(bad)?;
        Ok(Metrics {
            registry,
            requests,
            request_seconds,
            images,
            dropped,
            queued,
            admitted_bytes,
            admitted_units,
            decoding,
            model_loads,
            batch_size,
            batch_seconds,
            batches,
            model_inflight,
            model_images,
            model_latency,
            model_series: Mutex::new(HashMap::new()),
            recent_unit_secs: Mutex::new(None),
        })
    }

    /// The series of loaded version `key` (`name:version`); they are
    /// removed when the last holder of them is dropped.
    pub(crate) fn model_series(self: &Arc<Self>, key: &str) -> ModelSeries {
        let (model, version) = key.rsplit_once(':').unwrap_or((key, ""));
        let labels = (model.to_string(), version.to_string());
        *self
            .model_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels.clone())
            .or_insert(0) += 1;
        let values = [labels.0.as_str(), labels.1.as_str()];
        ModelSeries {
            inflight: self.model_inflight.with_label_values(&values),
            images: self.model_images.with_label_values(&values),
            latency: self.model_latency.with_label_values(&values),
            metrics: Arc::clone(self),
            labels,
        }
    }

    /// The `(model, version)` label sets present now.
    pub fn model_label_sets(&self) -> Vec<(String, String)> {
        let mut sets: Vec<_> = self
            .model_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        sets.sort();
        sets
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
    pub(crate) fn observe_call(&self, rpc: Rpc, code: tonic::Code, elapsed: Duration) {
        self.requests
            .with_label_values(&[rpc.name(), code_name(code)])
            .inc();
        self.request_seconds
            .with_label_values(&[rpc.name()])
            .observe(elapsed.as_secs_f64());
    }

    /// One answered image.
    pub(crate) fn observe_image(&self, method: CamMethod, error_kind: i32) {
        let result = match ImageErrorKind::try_from(error_kind) {
            Ok(ImageErrorKind::Unspecified) => "explained",
            Ok(kind) => kind.as_str_name(),
            Err(_) => "unknown",
        };
        self.images
            .with_label_values(&[method.name(), result])
            .inc();
    }

    /// Images dropped before compute (or before decoding).
    pub(crate) fn observe_dropped(&self, reason: Dropped, images: u64) {
        self.dropped
            .with_label_values(&[reason.name()])
            .inc_by(images);
    }

    /// Images dropped before compute so far, all reasons.
    pub fn dropped_images(&self) -> u64 {
        Dropped::ALL
            .iter()
            .map(|r| self.dropped.with_label_values(&[r.name()]).get())
            .sum()
    }

    /// Forward passes run so far, all methods.
    pub fn batches(&self) -> u64 {
        CamMethod::ALL
            .iter()
            .map(|m| self.batches.with_label_values(&[m.name()]).get())
            .sum()
    }

    /// Model version loads that ended with `loaded` (true) or `failed`.
    pub fn model_loads(&self, loaded: bool) -> u64 {
        self.model_loads
            .with_label_values(&[if loaded { "loaded" } else { "failed" }])
            .get()
    }

    pub(crate) fn observe_model_load(&self, loaded: bool) {
        self.model_loads
            .with_label_values(&[if loaded { "loaded" } else { "failed" }])
            .inc();
    }

    /// What admission holds now (see [`crate::queue`]).
    pub(crate) fn set_admitted(&self, images: u64, bytes: u64, units: u64) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.queued.set(gauge(images));
        self.admitted_bytes.set(gauge(bytes));
        self.admitted_units.set(gauge(units));
    }

    /// Counts one image as being decoded until the guard is dropped.
    pub(crate) fn decoding(&self) -> DecodingGuard<'_> {
        self.decoding.inc();
        DecodingGuard(&self.decoding)
    }

    /// One pass of `images` images worth `units` compute units, computed in
    /// `elapsed`.
    pub(crate) fn observe_batch(
        &self,
        method: CamMethod,
        images: usize,
        units: u64,
        elapsed: Duration,
    ) {
        let secs = elapsed.as_secs_f64();
        self.batches.with_label_values(&[method.name()]).inc();
        self.batch_size.observe(images as f64);
        self.batch_seconds.observe(secs);
        let per_unit = secs / units.max(1) as f64;
        let mut recent = self
            .recent_unit_secs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *recent = Some(recent.map_or(per_unit, |r| 0.8 * r + 0.2 * per_unit));
    }

    /// Recent compute seconds per compute unit (passes' time over their
    /// units); 0.05 before the first pass.
    pub(crate) fn recent_unit_secs(&self) -> f64 {
        self.recent_unit_secs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(0.05)
    }
}

/// One loaded version's `model_*` series (see the module doc).
pub(crate) struct ModelSeries {
    inflight: IntGauge,
    images: IntCounter,
    latency: Histogram,
    metrics: Arc<Metrics>,
    labels: (String, String),
}

impl ModelSeries {
    /// Counts `n` images as in flight while the guard lives.
    pub(crate) fn inflight(&self, n: usize) -> InflightGuard<'_> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.inflight.add(n);
        InflightGuard(&self.inflight, n)
    }

    /// `answered` images answered, `elapsed` after they were queued.
    pub(crate) fn observe(&self, answered: u64, elapsed: Duration) {
        self.images.inc_by(answered);
        self.latency.observe(elapsed.as_secs_f64());
    }
}

impl Drop for ModelSeries {
    fn drop(&mut self) {
        let mut holders = self
            .metrics
            .model_series
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(count) = holders.get_mut(&self.labels) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            holders.remove(&self.labels);
            let values = [self.labels.0.as_str(), self.labels.1.as_str()];
            let m = &self.metrics;
            let _ = m.model_inflight.remove_label_values(&values);
            let _ = m.model_images.remove_label_values(&values);
            let _ = m.model_latency.remove_label_values(&values);
        }
    }
}

/// Images of one call counted in `model_inflight_images` while it lives.
pub(crate) struct InflightGuard<'a>(&'a IntGauge, i64);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.sub(self.1);
    }
}

/// An image being decoded, counted in `decoding_images` while it lives.
pub(crate) struct DecodingGuard<'a>(&'a IntGauge);

impl Drop for DecodingGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
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
