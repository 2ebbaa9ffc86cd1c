//! Request metrics of a whole tonic server, as a tower layer: every call
//! counted by method and status code, and timed to its response head.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::Error;

/// `<namespace>_grpc_requests_total{method, code}` and
/// `<namespace>_grpc_request_duration_seconds{method}` for every call of
/// the server it wraps (`method` is the gRPC path, e.g.
/// `/camshaft.v1.Coordinator/SubmitJob`, or `unknown` for a path outside
/// [`with_known_methods`](GrpcMetricsLayer::with_known_methods); `code` the status of the
/// response head — a stream that fails after its first message counts as
/// its head said, usually `OK`).
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    requests: IntCounterVec,
    seconds: HistogramVec,
    known: Option<&'static HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// Registers the two metrics under `namespace` in `registry`.
    pub fn new(registry: &Registry, namespace: &str) -> Result<Self, Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "grpc_requests_total",
                "gRPC calls, by method and status code.",
            )
            .namespace(namespace),
            &["method", "code"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_request_duration_seconds",
                "Seconds from a gRPC call's arrival to its response head, by method.",
            )
            .namespace(namespace),
            &["method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(GrpcMetricsLayer {
            requests,
            seconds,
            known: None,
        })
    }

    /// Labels calls of paths outside `known` as `unknown`, so callers
    /// inventing paths cannot grow the label set (and `/metrics`) without
    /// bound. Every server should set it (`camshaft_proto::roles::known_methods`).
    pub fn with_known_methods(mut self, known: &'static HashSet<String>) -> Self {
        self.known = Some(known);
        self
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = match self.layer.known {
            Some(known) if !known.contains(path) => "unknown".to_string(),
            _ => path.to_string(),
        };
        let started = Instant::now();
        let layer = self.layer.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", code_name),
                Err(_) => "INTERNAL",
            };
            layer
                .seconds
                .with_label_values(&[method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            layer
                .requests
                .with_label_values(&[method.as_str(), code])
                .inc();
            response
        })
    }
}

/// The canonical name of a gRPC status code number.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_numbers_have_their_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(3), "INVALID_ARGUMENT");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
    }
}
