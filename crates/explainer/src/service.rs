//! The thin tonic adapter over [`ExplainEngine`].

use std::pin::Pin;
use std::sync::Arc;

use camshaft_proto::v1::explainer_server::Explainer;
use camshaft_proto::v1::{ExplainRequest, ExplainResponse};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::ExplainEngine;

/// How many finished responses of one `ExplainStream` may wait for the client.
const STREAM_BUFFER: usize = 4;

/// The `camshaft.v1.Explainer` service.
#[derive(Clone)]
pub struct ExplainerService {
    engine: Arc<ExplainEngine>,
}

impl ExplainerService {
    /// The service over `engine`.
    pub fn new(engine: Arc<ExplainEngine>) -> Self {
        ExplainerService { engine }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ExplainResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Explainer for ExplainerService {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let response = self
            .engine
            .explain(request.into_inner())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "explain failed");
                Status::from(e)
            })?;
        Ok(Response::new(response))
    }

    type ExplainStreamStream = ResponseStream;

    async fn explain_stream(
        &self,
        request: Request<Streaming<ExplainRequest>>,
    ) -> Result<Response<Self::ExplainStreamStream>, Status> {
        let mut requests = request.into_inner();
        let engine = Arc::clone(&self.engine);
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        // Requests are explained one after the other, so responses leave in
        // request order; the channel lets the next request run while earlier
        // responses are still being sent.
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let answer = match next {
                    Ok(req) => engine.explain(req).await.map_err(|e| {
                        tracing::warn!(error = %e, "explain (stream) failed");
                        Status::from(e)
                    }),
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
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
            Device, DeviceKind, GetServerInfoResponse, LoadedModel, ServerRole,
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
                })
                .collect(),
            ..Default::default()
        }))
    }
}
