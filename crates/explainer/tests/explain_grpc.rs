//! The explainer over real gRPC on loopback, with a real embedded store.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use camshaft_explainer::{Config, serve};
use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::{ExplainMethod, ExplainRequest, ImageErrorKind, ImageInput};
use camshaft_store::{EmbeddedConfig, EmbeddedStore, Store};
use camshaft_vision::{Arch, CamMethod, HeadKind, Model, ModelSpec, Normalization};
use tonic::Code;
use tonic::transport::Channel;

struct Cluster {
    client: ExplainerClient<Channel>,
    channel: Channel,
    store: Arc<dyn Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<camshaft_explainer::Result<()>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(config: Config) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store")))
                .await
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(config, Arc::clone(&store), listener, async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = ExplainerClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Cluster {
            client,
            channel,
            store,
            stop: Some(stop),
            server,
            dir,
        }
    }

    /// Registers a random-init ResNet18 (64 px, 2 classes) with `head`;
    /// returns the weights bytes.
    async fn register(&self, name: &str, head: HeadKind) -> Vec<u8> {
        let spec = spec(head);
        let model = Model::new(spec.clone(), tch::Device::Cpu).unwrap();
        let path = self.dir.path().join(format!("{name}.safetensors"));
        camshaft_vision::save_weights(&model, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        self.store
            .register_model(
                name,
                serde_json::to_value(&spec).unwrap(),
                serde_json::json!({}),
                bytes.clone().into(),
            )
            .await
            .unwrap();
        bytes
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap().unwrap();
    }
}

fn spec(head: HeadKind) -> ModelSpec {
    ModelSpec {
        arch: Arch::Resnet18,
        head,
        class_names: vec!["cat".into(), "dog".into()],
        input_size: 64,
        normalization: Normalization::Imagenet,
    }
}

fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(3).wrapping_add(seed),
            (y as u8).wrapping_mul(5),
            seed.wrapping_mul(7) ^ (x as u8),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn input(id: &str, data: Vec<u8>) -> ImageInput {
    ImageInput {
        id: id.into(),
        data: data.into(),
        target_class: None,
    }
}

fn request(model: &str, images: Vec<ImageInput>, method: ExplainMethod) -> ExplainRequest {
    ExplainRequest {
        model: model.into(),
        images,
        method: method as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_a_corrupt_image_matches_the_library() {
    let mut c = Cluster::start(Config::default()).await;
    let weights = c.register("pets", HeadKind::Cam).await;
    let images = [png(80, 64, 1), png(64, 64, 2)];
    let mut req = request(
        "pets",
        vec![
            input("a", images[0].clone()),
            input("b", b"definitely not a png".to_vec()),
            input("c", images[1].clone()),
        ],
        ExplainMethod::Cam,
    );
    req.return_overlay = true;
    let resp = c.client.explain(req).await.unwrap().into_inner();
    assert_eq!(resp.model_version, "pets:1");
    assert_eq!(resp.results.len(), 3);
    assert_eq!(resp.results[1].id, "b");
    assert!(
        resp.results[1].error.contains("not a png"),
        "{}",
        resp.results[1].error
    );
    assert_eq!(
        resp.results[1].error_kind,
        ImageErrorKind::Undecodable as i32
    );
    assert!(resp.results[1].maps.is_empty());

    // The same CAM computed with the library directly.
    let mut model = Model::new(spec(HeadKind::Cam), tch::Device::Cpu).unwrap();
    camshaft_vision::load_safetensors_bytes(
        &mut model,
        &weights,
        camshaft_vision::HeadPolicy::Require,
        "pets:1",
    )
    .unwrap();
    for (result, bytes) in [&resp.results[0], &resp.results[2]]
        .into_iter()
        .zip(&images)
    {
        assert!(result.error.is_empty(), "{}", result.error);
        assert_eq!(result.class_names, ["cat", "dog"]);
        let sum: f32 = result.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        let map = &result.maps[0];
        assert_eq!((map.height, map.width), (2, 2));
        assert!(map.values.iter().all(|v| v.is_finite()));
        assert_eq!(map.class_index, result.predicted_class);
        // CAM: the spatial mean of the map is the class's logit.
        let mean = map.values.iter().sum::<f32>() / 4.0;
        assert!((mean - result.logits[map.class_index as usize]).abs() < 1e-4);

        let img = camshaft_data::decode_image(bytes, "test", &Default::default()).unwrap();
        let direct = camshaft_vision::cam::explain(
            &model,
            &[img],
            CamMethod::Cam,
            &[None],
            camshaft_explainer::RESIZE,
        )
        .unwrap();
        for (a, b) in map.values.iter().zip(&direct[0].values) {
            assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
        }
        for (a, b) in result.probabilities.iter().zip(&direct[0].probabilities) {
            assert!((a - b).abs() <= 1e-5);
        }
        let overlay = image::load_from_memory(&result.overlay_png).unwrap();
        assert_eq!((overlay.width(), overlay.height()), (64, 64));
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_have_stable_codes() {
    let config = Config {
        max_images_per_request: 2,
        ..Config::default()
    };
    let mut c = Cluster::start(config).await;
    c.register("pets", HeadKind::Cam).await;
    c.register("fa", HeadKind::Fastai).await;
    let img = || vec![input("x", png(64, 64, 3))];
    let code = |r: Result<_, tonic::Status>| r.map(|_| ()).unwrap_err().code();

    let r = c
        .client
        .explain(request("nobody", img(), ExplainMethod::Cam))
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .client
        .explain(request("pets:0", img(), ExplainMethod::Cam))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let r = c
        .client
        .explain(request("bad name!", img(), ExplainMethod::Cam))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let three = vec![
        input("1", vec![1]),
        input("2", vec![2]),
        input("3", vec![3]),
    ];
    let r = c
        .client
        .explain(request("pets", three, ExplainMethod::Cam))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    let r = c
        .client
        .explain(request("fa", img(), ExplainMethod::Cam))
        .await;
    let status = r.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("GRAD_CAM"),
        "{}",
        status.message()
    );
    let resp = c
        .client
        .explain(request("fa", img(), ExplainMethod::GradCam))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.results[0].error.is_empty());
    assert_eq!(resp.results[0].maps[0].values.len(), 4);
    // Unspecified picks Grad-CAM for the fastai head.
    let resp = c
        .client
        .explain(request("fa", img(), ExplainMethod::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.results[0].maps[0].values.iter().all(|v| *v >= 0.0));

    // A target out of range is that image's error.
    let mut bad_target = img();
    bad_target[0].target_class = Some(2);
    bad_target.push(input("ok", png(64, 64, 4)));
    let resp = c
        .client
        .explain(request("pets", bad_target, ExplainMethod::Cam))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.results[0].error_kind,
        ImageErrorKind::TargetOutOfRange as i32
    );
    assert!(resp.results[1].error.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_stream_and_health() {
    let mut c = Cluster::start(Config::default()).await;
    c.register("pets", HeadKind::Cam).await;
    let one = || vec![input("x", png(64, 64, 5))];
    let resp = c
        .client
        .explain(request("pets@latest", one(), ExplainMethod::Cam))
        .await;
    assert_eq!(resp.unwrap().into_inner().model_version, "pets:1");
    c.register("pets", HeadKind::Cam).await;
    let resp = c
        .client
        .explain(request("pets@latest", one(), ExplainMethod::Cam))
        .await;
    assert_eq!(resp.unwrap().into_inner().model_version, "pets:2");
    c.store.set_alias("pets", "prod", 1).await.unwrap();
    let resp = c
        .client
        .explain(request("pets@prod", one(), ExplainMethod::Cam))
        .await;
    assert_eq!(resp.unwrap().into_inner().model_version, "pets:1");

    // ExplainStream: three requests answered in order.
    let requests: Vec<ExplainRequest> = ["pets:1", "pets:2", "pets"]
        .iter()
        .enumerate()
        .map(|(i, m)| ExplainRequest {
            request_id: format!("r{i}"),
            ..request(m, one(), ExplainMethod::Unspecified)
        })
        .collect();
    let mut stream = c
        .client
        .explain_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(resp) = stream.message().await.unwrap() {
        got.push((resp.request_id, resp.model_version));
    }
    assert_eq!(
        got,
        [
            ("r0".to_string(), "pets:1".to_string()),
            ("r1".into(), "pets:2".into()),
            ("r2".into(), "pets:2".into())
        ]
    );

    // Health.
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    for service in ["", "camshaft.v1.Explainer"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_alias_is_loaded_before_the_next_request() {
    use camshaft_proto::v1::server_info_client::ServerInfoClient;
    let mut c = Cluster::start(Config::default()).await;
    c.register("pets", HeadKind::Cam).await;
    let one = vec![input("x", png(64, 64, 5))];
    let resp = c
        .client
        .explain(request("pets@latest", one, ExplainMethod::Cam))
        .await;
    assert_eq!(resp.unwrap().into_inner().model_version, "pets:1");

    // Registering pets:2 moves `latest`; the explainer loads it unasked.
    c.register("pets", HeadKind::Cam).await;
    let mut info = ServerInfoClient::new(c.channel.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let loaded: Vec<String> = info
            .get_server_info(camshaft_proto::v1::GetServerInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .loaded_models
            .into_iter()
            .map(|m| m.model_version)
            .collect();
        if loaded.contains(&"pets:2".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pets:2 was not loaded: {loaded:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.stop().await;
}
