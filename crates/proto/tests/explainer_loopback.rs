//! A real gRPC round trip over loopback: a tiny echoing Explainer served by
//! tonic on `127.0.0.1:0`, called through the generated client, with the
//! reflection services beside it.

use std::net::SocketAddr;
use std::pin::Pin;

use camshaft_proto::bytes::Bytes;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::explainer_server::{Explainer, ExplainerServer};
use camshaft_proto::v1::{
    ClassMap, ExplainMethod, ExplainRequest, ExplainResponse, ImageExplanation, ImageInput,
};
use camshaft_proto::{ErrorKind, MAX_MESSAGE_BYTES, ModelRef, VersionSelector};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

/// Echoes each image back: the map holds its first bytes as floats, the
/// overlay is the input itself, and the version is `name:7` for any selector.
struct EchoExplainer;

fn echo(request: ExplainRequest) -> Result<ExplainResponse, Status> {
    let model = ModelRef::parse(&request.model).map_err(camshaft_proto::Error::from)?;
    if model.name == "missing" {
        return Err(ErrorKind::NotFound.status(format!("no model {model}")));
    }
    let version = match model.selector {
        VersionSelector::Version(v) => v,
        VersionSelector::Latest | VersionSelector::Alias(_) => 7,
    };
    let results = request
        .images
        .into_iter()
        .map(|image| {
            if image.data.is_empty() {
                return ImageExplanation {
                    id: image.id,
                    error: "image is empty".into(),
                    ..Default::default()
                };
            }
            let head: Vec<f32> = image.data.iter().take(4).map(|&b| f32::from(b)).collect();
            ImageExplanation {
                id: image.id,
                class_names: vec!["cat".into(), "dog".into()],
                probabilities: vec![0.25, 0.75],
                predicted_class: 1,
                maps: vec![ClassMap {
                    class_index: image.target_class.unwrap_or(1),
                    height: 1,
                    width: head.len() as i32,
                    values: head,
                    faithfulness: None,
                }],
                overlay_png: if request.return_overlay {
                    image.data
                } else {
                    Bytes::new()
                },
                ..Default::default()
            }
        })
        .collect();
    Ok(ExplainResponse {
        model_version: ModelRef::version(model.name, version).to_string(),
        results,
        request_id: request.request_id,
        recipe: None,
    })
}

#[tonic::async_trait]
impl Explainer for EchoExplainer {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        echo(request.into_inner()).map(Response::new)
    }

    type ExplainStreamStream =
        Pin<Box<dyn Stream<Item = Result<ExplainResponse, Status>> + Send + 'static>>;

    async fn explain_stream(
        &self,
        request: Request<Streaming<ExplainRequest>>,
    ) -> Result<Response<Self::ExplainStreamStream>, Status> {
        let responses = request.into_inner().map(|request| request.and_then(echo));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// A server on an ephemeral loopback port; dropping the sender stops it.
async fn start_server() -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        .add_service(
            ExplainerServer::new(EchoExplainer)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(camshaft_proto::reflection_v1().expect("reflection v1"))
        .add_service(camshaft_proto::reflection_v1alpha().expect("reflection v1alpha"));
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs until stopped");
    });
    (addr, stop)
}

async fn client(addr: SocketAddr) -> ExplainerClient<Channel> {
    ExplainerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect over loopback")
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn image(id: &str, data: &[u8], target_class: Option<i32>) -> ImageInput {
    ImageInput {
        id: id.into(),
        data: Bytes::copy_from_slice(data),
        target_class,
    }
}

#[tokio::test]
async fn explain_round_trips_over_loopback() {
    let (addr, _stop) = start_server().await;
    let mut client = client(addr).await;

    // 6 MiB of image bytes: over tonic's 4 MiB default, under MAX_MESSAGE_BYTES.
    let big = vec![200u8; 6 * 1024 * 1024];
    let response = client
        .explain(ExplainRequest {
            model: "pets@prod".into(),
            images: vec![
                image("a", &[1, 2, 3, 4, 5], Some(0)),
                image("empty", &[], None),
                image("big", &big, None),
            ],
            method: ExplainMethod::GradCamPlusPlus as i32,
            return_overlay: true,
            top_k: Some(2),
            request_id: "r-1".into(),
            ..Default::default()
        })
        .await
        .expect("explain succeeds")
        .into_inner();

    assert_eq!(response.model_version, "pets:7");
    assert_eq!(response.request_id, "r-1");
    let ids: Vec<&str> = response.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "empty", "big"], "results in request order");

    let a = &response.results[0];
    assert!(a.error.is_empty());
    assert_eq!(a.maps[0].class_index, 0);
    assert_eq!(a.maps[0].values, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(a.maps[0].shape(), Ok((1, 4)));
    assert_eq!(&a.overlay_png[..], &[1, 2, 3, 4, 5]);
    assert_eq!(response.results[1].error, "image is empty");
    assert_eq!(response.results[2].overlay_png.len(), big.len());
}

#[tokio::test]
async fn request_errors_arrive_as_stable_codes() {
    let (addr, _stop) = start_server().await;
    let mut client = client(addr).await;

    let bad = client
        .explain(ExplainRequest {
            model: "pets:latest".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed reference");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("pets:latest"), "{}", bad.message());

    let missing = client
        .explain(ExplainRequest {
            model: "missing:1".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown model");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(ErrorKind::from_code(missing.code()), ErrorKind::NotFound);
}

#[tokio::test]
async fn explain_stream_answers_each_request_in_order() {
    let (addr, _stop) = start_server().await;
    let mut client = client(addr).await;

    let requests: Vec<ExplainRequest> = (0..5u8)
        .map(|i| ExplainRequest {
            model: format!("pets:{}", u64::from(i) + 1),
            images: vec![image(&format!("img-{i}"), &[i, i, i], None)],
            request_id: format!("r-{i}"),
            ..Default::default()
        })
        .collect();
    let mut responses = client
        .explain_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();

    let mut seen = Vec::new();
    while let Some(response) = responses.next().await {
        let response = response.expect("every request is answered");
        assert_eq!(response.results.len(), 1);
        assert!(
            response.results[0].overlay_png.is_empty(),
            "no overlay asked"
        );
        seen.push((response.request_id, response.model_version));
    }
    let expected: Vec<(String, String)> = (0..5)
        .map(|i| (format!("r-{i}"), format!("pets:{}", i + 1)))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_explainer() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let (addr, _stop) = start_server().await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect over loopback");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection stream opens")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("one answer")
        .expect("answer is ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {:?}", answer.message_response);
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in camshaft_proto::SERVICE_NAMES {
        assert!(names.contains(&service), "{service} missing from {names:?}");
    }
}
