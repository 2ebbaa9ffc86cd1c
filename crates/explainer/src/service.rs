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
