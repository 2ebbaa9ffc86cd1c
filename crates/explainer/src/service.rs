//! The thin tonic adapter over [`ExplainEngine`]: deadlines from
//! `grpc-timeout`, per-call metrics, `ExplainStream` pipelining.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camshaft_proto::v1::explainer_server::Explainer;
use camshaft_proto::v1::{ExplainRequest, ExplainResponse};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::{Metrics, Rpc};
use crate::{Error, ExplainEngine};

/// How many requests of one `ExplainStream` are explained at once (their
/// responses still leave in request order).
const STREAM_IN_FLIGHT: usize = 4;

/// The `camshaft.v1.Explainer` service.
#[derive(Clone)]
pub struct ExplainerService {
    engine: Arc<ExplainEngine>,
    preloader: Option<Arc<crate::preload::Preloader>>,
}

impl ExplainerService {
    /// The service over `engine`.
    pub fn new(engine: Arc<ExplainEngine>) -> Self {
        ExplainerService {
            engine,
            preloader: None,
        }
    }

    /// The service showing `preloader`'s states in `GetServerInfo`.
    pub(crate) fn with_preloader(mut self, preloader: Arc<crate::preload::Preloader>) -> Self {
        self.preloader = Some(preloader);
        self
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ExplainResponse, Status>> + Send>>;

/// The deadline a `grpc-timeout` header sets (`<1..8 digits><H|M|S|m|u|n>`);
/// `None` when absent or malformed.
pub fn grpc_deadline(metadata: &tonic::metadata::MetadataMap, now: Instant) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    now.checked_add(timeout)
}

/// Counts one call in `requests_total` when it is answered, or as
/// CANCELLED when it is dropped unanswered (the client went away, the
/// stream ended): the work it admitted may go on, and its end shows here.
struct CallRecord {
    metrics: Arc<Metrics>,
    rpc: Rpc,
    started: Instant,
    answered: bool,
}

impl CallRecord {
    fn start(metrics: &Arc<Metrics>, rpc: Rpc) -> Self {
        CallRecord {
            metrics: Arc::clone(metrics),
            rpc,
            started: Instant::now(),
            answered: false,
        }
    }

    fn answered(mut self, code: tonic::Code) {
        self.answered = true;
        self.metrics
            .observe_call(self.rpc, code, self.started.elapsed());
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .observe_call(self.rpc, tonic::Code::Cancelled, self.started.elapsed());
        }
    }
}

/// Aborts a task when dropped (a stream whose client went away stops its
/// requests in flight).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tonic::async_trait]
impl Explainer for ExplainerService {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let record = CallRecord::start(self.engine.metrics(), Rpc::Explain);
        let deadline = grpc_deadline(request.metadata(), record.started);
        let answer = self
            .engine
            .explain_until(request.into_inner(), deadline)
            .await;
        let answer = answer.map(Response::new).map_err(|e: Error| {
            tracing::warn!(error = %e, "explain failed");
            Status::from(e)
        });
        let code = answer
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        record.answered(code);
        answer
    }

    type ExplainStreamStream = ResponseStream;

    async fn explain_stream(
        &self,
        request: Request<Streaming<ExplainRequest>>,
    ) -> Result<Response<Self::ExplainStreamStream>, Status> {
        let deadline = grpc_deadline(request.metadata(), Instant::now());
        let mut requests = request.into_inner();
        let engine = Arc::clone(&self.engine);
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT);
        // Up to STREAM_IN_FLIGHT requests are explained at once (their images
        // batch together); `pending` holds them in request order, so
        // responses leave in order, each as soon as it and those before it
        // are done.
        let (pending_tx, mut pending_rx) = tokio::sync::mpsc::channel::<
            AbortOnDrop<Result<ExplainResponse, Status>>,
        >(STREAM_IN_FLIGHT);
        let reader = tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let engine = Arc::clone(&engine);
                let task = tokio::spawn(async move {
                    let record = CallRecord::start(engine.metrics(), Rpc::ExplainStream);
                    let answer = match next {
                        Ok(req) => engine.explain_until(req, deadline).await.map_err(|e| {
                            tracing::warn!(error = %e, "explain (stream) failed");
                            Status::from(e)
                        }),
                        Err(status) => Err(status),
                    };
                    let code = answer
                        .as_ref()
                        .map_or_else(Status::code, |_| tonic::Code::Ok);
                    record.answered(code);
                    answer
                });
                if pending_tx.send(AbortOnDrop(task)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let _reader = AbortOnDrop(reader);
            while let Some(mut task) = pending_rx.recv().await {
                let answer = match (&mut task.0).await {
                    Ok(answer) => answer,
                    Err(e) => Err(Status::internal(format!("explain task: {e}"))),
                };
                let failed = answer.is_err();
                // A request-level error ends the stream after the responses
                // before it; dropping `pending_rx` aborts the ones after.
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl camshaft_proto::v1::server_info_server::ServerInfo for ExplainerService {
    async fn get_server_info(
        &self,
        _request: Request<camshaft_proto::v1::GetServerInfoRequest>,
    ) -> Result<Response<camshaft_proto::v1::GetServerInfoResponse>, Status> {
        use camshaft_proto::v1::{
            Device, DeviceKind, GetServerInfoResponse, LoadedModel, ModelServingSettings,
            ServerRole,
        };
        let cache = self.engine.cache();
        let device = cache.device();
        let store_healthy = cache.store().list_models().await.is_ok();
        let devices = match device {
            tch::Device::Cuda(i) => vec![Device {
                kind: DeviceKind::Cuda as i32,
                index: i as u32,
                ..Default::default()
            }],
            _ => vec![Device {
                kind: DeviceKind::Cpu as i32,
                name: "cpu".into(),
                cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                ..Default::default()
            }],
        };
        Ok(Response::new(GetServerInfoResponse {
            roles: vec![ServerRole::Explainer as i32],
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: self.engine.started_unix_ms(),
            store: cache.store().describe(),
            store_healthy,
            cuda_available: tch::Cuda::is_available(),
            devices,
            loaded_models: cache
                .loaded()
                .iter()
                .map(|m| LoadedModel {
                    model_version: m.key.clone(),
                    aliases: Vec::new(),
                    device: format!("{device:?}").to_lowercase(),
                    loaded_unix_ms: m.loaded_unix_ms,
                    settings: Some(ModelServingSettings {
                        max_batch: u32::try_from(m.settings.max_batch).unwrap_or(u32::MAX),
                        max_batch_wait_ms: u64::try_from(m.settings.max_wait.as_millis())
                            .unwrap_or(u64::MAX),
                        replicas: u32::try_from(m.settings.replicas).unwrap_or(u32::MAX),
                        precision: m.settings.precision.name().to_string(),
                    }),
                    preloaded: cache.is_pinned(&m.key),
                })
                .collect(),
            preload: self
                .preloader
                .as_ref()
                .map(|p| p.states())
                .unwrap_or_default(),
            queue_depth: u32::try_from(self.engine.queued_images()).unwrap_or(u32::MAX),
            queue_capacity: u32::try_from(self.engine.queue_capacity()).unwrap_or(u32::MAX),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grpc_timeout_headers_parse() {
        let now = Instant::now();
        let deadline = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_deadline(&m, now).map(|d| d - now)
        };
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(deadline("3S"), Some(Duration::from_secs(3)));
        assert_eq!(deadline("2M"), Some(Duration::from_secs(120)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(deadline("7u"), Some(Duration::from_micros(7)));
        assert_eq!(deadline("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(deadline("123456789S"), None);
        assert_eq!(deadline("S"), None);
        assert_eq!(deadline("10x"), None);
        assert_eq!(
            grpc_deadline(&tonic::metadata::MetadataMap::new(), now),
            None
        );
    }
}
