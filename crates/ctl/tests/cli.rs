//! Runs the `ctl` binary against fake coordinator and explainer servers on
//! loopback ports: exact output, exit codes, and the watch's reconnect.

#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use camshaft_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use camshaft_proto::v1::explainer_server::{Explainer, ExplainerServer};
use camshaft_proto::v1::job_event::Event;
use camshaft_proto::v1::*;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

/// What the fake coordinator saw and how it should end jobs.
#[derive(Default)]
struct FakeCoordinator {
    submitted: Mutex<Vec<JobSpec>>,
    watch_after: Mutex<Vec<u64>>,
    imported: Mutex<Vec<ImportModelHeader>>,
    fail: bool,
}

fn event(sequence: u64, event: Event) -> Result<JobEvent, Status> {
    Ok(JobEvent {
        job_id: "j-7".into(),
        sequence,
        unix_ms: 0,
        event: Some(event),
    })
}

fn state(from: JobState, to: JobState, reason: &str, world_size: u32) -> Event {
    Event::StateChanged(JobStateChanged {
        from: from as i32,
        to: to as i32,
        attempt: 1,
        reason: reason.into(),
        world_size,
    })
}

fn epoch(epoch: u32, stage: u32) -> Event {
    Event::Epoch(EpochMetrics {
        epoch,
        stage,
        attempt: 1,
        train_loss: 0.5,
        valid_loss: 0.25,
        accuracy: 0.75,
        seconds: 12.0,
        ..Default::default()
    })
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl Coordinator for FakeCoordinator {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        self.submitted.lock().unwrap().push(spec.clone());
        Ok(Response::new(SubmitJobResponse {
            job: Some(Job {
                id: "j-7".into(),
                spec: Some(spec),
                state: JobState::Pending as i32,
                ..Default::default()
            }),
        }))
    }

    async fn get_job(
        &self,
        _request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        Ok(Response::new(GetJobResponse {
            job: Some(Job {
                id: "j-7".into(),
                state: JobState::Failed as i32,
                error: "rank 0: nan loss".into(),
                ..Default::default()
            }),
        }))
    }

    async fn list_jobs(
        &self,
        _request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        unimplemented()
    }

    async fn cancel_job(
        &self,
        _request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        Err(Status::failed_precondition("job j-7 already succeeded"))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let after = request.into_inner().after_sequence;
        self.watch_after.lock().unwrap().push(after);
        let events = if self.fail {
            vec![
                event(
                    1,
                    state(JobState::Pending, JobState::Running, "1 worker", 1),
                ),
                event(2, state(JobState::Running, JobState::Failed, "gave up", 0)),
            ]
        } else if after == 0 {
            // The first stream breaks after two events, as when the
            // coordinator restarts.
            vec![
                event(
                    1,
                    state(JobState::Pending, JobState::Running, "1 worker", 1),
                ),
                event(2, epoch(0, 0)),
                Err(Status::unavailable("coordinator restarting")),
            ]
        } else {
            vec![
                // A replay of an event the client saw already.
                event(2, epoch(0, 0)),
                event(3, epoch(1, 1)),
                event(
                    4,
                    Event::ModelRegistered(ModelRegistered {
                        version: Some(ModelVersion {
                            name: "synthetic".into(),
                            version: 3,
                            aliases: vec!["latest".into()],
                            ..Default::default()
                        }),
                    }),
                ),
                event(5, state(JobState::Running, JobState::Succeeded, "", 0)),
            ]
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        unimplemented()
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        unimplemented()
    }

    async fn get_model(
        &self,
        _request: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        Ok(Response::new(GetModelResponse {
            version: Some(ModelVersion {
                name: "pets".into(),
                version: 1,
                spec: Some(ModelSpec {
                    class_names: vec!["cat".into(), "dog".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }))
    }

    async fn set_alias(
        &self,
        _request: Request<SetAliasRequest>,
    ) -> Result<Response<SetAliasResponse>, Status> {
        unimplemented()
    }

    async fn delete_alias(
        &self,
        _request: Request<DeleteAliasRequest>,
    ) -> Result<Response<DeleteAliasResponse>, Status> {
        unimplemented()
    }

    async fn delete_model(
        &self,
        _request: Request<DeleteModelRequest>,
    ) -> Result<Response<DeleteModelResponse>, Status> {
        unimplemented()
    }

    async fn import_model(
        &self,
        request: Request<Streaming<ImportModelRequest>>,
    ) -> Result<Response<ImportModelResponse>, Status> {
        use camshaft_proto::v1::import_model_request::Part;
        use sha2::Digest;
        let mut stream = request.into_inner();
        let Some(ImportModelRequest {
            part: Some(Part::Header(header)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument("header first"));
        };
        let mut weights = Vec::new();
        while let Some(part) = stream.message().await? {
            match part.part {
                Some(Part::Chunk(chunk)) => weights.extend_from_slice(&chunk),
                _ => return Err(Status::invalid_argument("chunks after the header")),
            }
        }
        if header.size_bytes != weights.len() as u64
            || header.sha256 != hex::encode(sha2::Sha256::digest(&weights))
        {
            return Err(Status::invalid_argument("size or sha256 mismatch"));
        }
        // The upload is safetensors whatever the original file was.
        safetensors::SafeTensors::deserialize(&weights)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let version = ModelVersion {
            name: header.name.clone(),
            version: 4,
            spec: header.spec.clone(),
            ..Default::default()
        };
        self.imported.lock().unwrap().push(header);
        Ok(Response::new(ImportModelResponse {
            version: Some(version),
        }))
    }

    async fn update_model_version(
        &self,
        _: Request<camshaft_proto::v1::UpdateModelVersionRequest>,
    ) -> Result<Response<camshaft_proto::v1::UpdateModelVersionResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn get_alias_history(
        &self,
        _: Request<camshaft_proto::v1::GetAliasHistoryRequest>,
    ) -> Result<Response<camshaft_proto::v1::GetAliasHistoryResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    type WatchModelsStream =
        Pin<Box<dyn Stream<Item = Result<camshaft_proto::v1::ModelEvent, Status>> + Send>>;

    async fn watch_models(
        &self,
        _: Request<camshaft_proto::v1::WatchModelsRequest>,
    ) -> Result<Response<Self::WatchModelsStream>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

/// Answers every image whose bytes are a PNG with a 4×4 overlay, anything
/// else with a per-image error; records the requests. With `refuse_every`
/// `(n, code)`, every n-th call fails with `code` instead (with a 20 ms
/// `retry-after-ms` for RESOURCE_EXHAUSTED).
#[derive(Default)]
struct FakeExplainer {
    requests: Mutex<Vec<ExplainRequest>>,
    refuse_every: Option<(usize, tonic::Code)>,
}

fn png(side: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(side, side, image::Rgb([200, 40, 40]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

#[tonic::async_trait]
impl Explainer for FakeExplainer {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let request = request.into_inner();
        let calls = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(request.clone());
            requests.len()
        };
        if let Some((n, code)) = self.refuse_every
            && calls % n == 0
        {
            return Err(if code == tonic::Code::ResourceExhausted {
                camshaft_proto::ErrorKind::ResourceExhausted
                    .status_with_retry("queue full", std::time::Duration::from_millis(20))
            } else {
                Status::new(code, "refused by the fake")
            });
        }
        let results = request
            .images
            .iter()
            .map(|image| {
                if image.data.starts_with(b"\x89PNG") {
                    ImageExplanation {
                        id: image.id.clone(),
                        class_names: vec!["cat".into(), "dog".into()],
                        probabilities: vec![0.25, 0.75],
                        predicted_class: 1,
                        overlay_png: png(4).into(),
                        ..Default::default()
                    }
                } else {
                    ImageExplanation {
                        id: image.id.clone(),
                        error: "not a PNG or JPEG".into(),
                        error_kind: ImageErrorKind::Undecodable as i32,
                        ..Default::default()
                    }
                }
            })
            .collect();
        // Says what ran when layers were asked (as the explainer always does).
        let recipe = (!request.target_layers.is_empty()).then(|| ExplanationRecipe {
            method: request.method,
            target_layers: request.target_layers.clone(),
            precision: "fp32".into(),
            faithfulness_baseline: request.faithfulness_baseline,
            aug_smooth: request.aug_smooth,
        });
        Ok(Response::new(ExplainResponse {
            model_version: "pets:1".into(),
            results,
            request_id: request.request_id,
            recipe,
        }))
    }

    type ExplainStreamStream = Pin<Box<dyn Stream<Item = Result<ExplainResponse, Status>> + Send>>;

    async fn explain_stream(
        &self,
        _request: Request<Streaming<ExplainRequest>>,
    ) -> Result<Response<Self::ExplainStreamStream>, Status> {
        unimplemented()
    }
}

async fn serve_coordinator(fake: Arc<FakeCoordinator>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CoordinatorServer::from_arc(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

async fn serve_explainer(fake: Arc<FakeExplainer>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExplainerServer::from_arc(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// Runs `ctl` with these arguments off the runtime's threads.
async fn ctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ctl"))
            .args(&args)
            .env_remove("CAMSHAFT_COORDINATOR")
            .env_remove("CAMSHAFT_EXPLAINER")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_without_wait_prints_only_the_job_id() {
    let fake = Arc::new(FakeCoordinator::default());
    let addr = serve_coordinator(fake.clone()).await;
    let out = ctl(&[
        "--coordinator",
        &addr.to_string(),
        "submit-job",
        "--dataset",
        "synthetic",
        "--model",
        "resnet18",
        "--head",
        "cam",
        "--image-size",
        "48",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "j-7\n");
    let spec = fake.submitted.lock().unwrap()[0].clone();
    assert_eq!(spec.arch(), Arch::Resnet18);
    assert_eq!(spec.head(), Head::Cam);
    assert_eq!(spec.epochs, 0, "unset flags stay unset");
    assert_eq!(spec.dataset.unwrap().synthetic.unwrap().image_size, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reconnects_after_the_last_sequence_and_succeeds() {
    let fake = Arc::new(FakeCoordinator::default());
    let addr = serve_coordinator(fake.clone()).await;
    let out = ctl(&[
        "--coordinator",
        &format!("http://{addr}"),
        "submit-job",
        "--dataset",
        "synthetic",
        "--wait",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "submitted j-7\n\
         [running] 1 worker, world size 1\n\
         epoch  train_loss  valid_loss  accuracy  time   images/s\n\
         0      0.500000    0.250000    0.750000  00:12  0\n\
         epoch  train_loss  valid_loss  accuracy  time   images/s\n\
         1      0.500000    0.250000    0.750000  00:12  0\n\
         registered synthetic:3 (aliases: latest)\n\
         [succeeded]\n"
    );
    assert_eq!(*fake.watch_after.lock().unwrap(), vec![0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_exits_1_with_its_error() {
    let fake = Arc::new(FakeCoordinator {
        fail: true,
        ..Default::default()
    });
    let addr = serve_coordinator(fake).await;
    let out = ctl(&["--coordinator", &addr.to_string(), "jobs", "watch", "j-7"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "[running] 1 worker, world size 1\n[failed] gave up\n"
    );
    assert_eq!(stderr(&out), "job j-7 failed: rank 0: nan loss\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_and_unreachable_servers_have_their_exit_codes() {
    let fake = Arc::new(FakeCoordinator::default());
    let addr = serve_coordinator(fake).await;
    let out = ctl(&["--coordinator", &addr.to_string(), "jobs", "cancel", "j-7"]).await;
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        stderr(&out),
        "error: CancelJob on the coordinator failed: FAILED_PRECONDITION: job j-7 already succeeded\n"
    );

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = ctl(&[
        "--coordinator",
        &format!("127.0.0.1:{port}"),
        "jobs",
        "list",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the coordinator at http://127.0.0.1:{port}: "
        )) && err.ends_with("— is `camshaft up` running?\n"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_sends_layers_smoothing_and_baseline_and_says_what_ran() {
    let explainer = Arc::new(FakeExplainer::default());
    let explainer_addr = serve_explainer(explainer.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("cat.png");
    std::fs::write(&good, png(8)).unwrap();
    let out = ctl(&[
        "--explainer",
        &explainer_addr.to_string(),
        "explain",
        "--model",
        "pets",
        "--method",
        "score-cam",
        "--layer",
        "layer3",
        "--layer",
        "layer4",
        "--aug-smooth",
        "--faithfulness",
        "road",
        "--baseline",
        "blur",
        "--out",
        &dir.path().join("cams").display().to_string(),
        &good.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let request = explainer.requests.lock().unwrap()[0].clone();
    assert_eq!(request.method, ExplainMethod::ScoreCam as i32);
    assert_eq!(request.target_layers, ["layer3", "layer4"]);
    assert!(request.aug_smooth);
    assert_eq!(request.faithfulness, FaithfulnessMetric::Road as i32);
    assert_eq!(
        request.faithfulness_baseline,
        FaithfulnessBaseline::Blur as i32
    );
    let text = stdout(&out);
    assert_eq!(
        text.lines().next(),
        Some("explained with score_cam at layer3+layer4 (fp32, baseline blur, aug_smooth)"),
        "{text}"
    );
    let bad = ctl(&[
        "--explainer",
        &explainer_addr.to_string(),
        "explain",
        "--model",
        "pets",
        "--baseline",
        "grey",
        &good.display().to_string(),
    ])
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("mean, black, blur"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_writes_overlays_and_a_grid_and_reports_bad_images() {
    let explainer = Arc::new(FakeExplainer::default());
    let explainer_addr = serve_explainer(explainer.clone()).await;
    let coordinator_addr = serve_coordinator(Arc::new(FakeCoordinator::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("cat.png");
    std::fs::write(&good, png(8)).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let same_name = sub.join("cat.jpg");
    std::fs::write(&same_name, png(8)).unwrap();
    let bad = dir.path().join("notes.png");
    std::fs::write(&bad, b"hello").unwrap();
    let missing = dir.path().join("missing.png");
    let out_dir = dir.path().join("cams");
    let grid = dir.path().join("grid.png");
    let paths = [&good, &same_name, &bad, &missing].map(|p| p.display().to_string());
    let out = ctl(&[
        "--coordinator",
        &coordinator_addr.to_string(),
        "--explainer",
        &explainer_addr.to_string(),
        "explain",
        "--model",
        "pets",
        "--target",
        "dog",
        "--out",
        &out_dir.display().to_string(),
        "--grid",
        &grid.display().to_string(),
        &paths[0],
        &paths[1],
        &paths[2],
        &paths[3],
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        format!(
            "{}  predicted=dog  p=0.75  -> {}",
            paths[0],
            out_dir.join("cat.png").display()
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "{}  predicted=dog  p=0.75  -> {}",
            paths[1],
            out_dir.join("cat-1.png").display()
        )
    );
    assert_eq!(lines[2], format!("{}  error: not a PNG or JPEG", paths[2]));
    assert!(lines[3].starts_with(&format!("{}  error: cannot read", paths[3])));
    assert_eq!(lines[4], format!("grid -> {}", grid.display()));
    assert!(out_dir.join("cat.png").is_file());
    assert!(out_dir.join("cat-1.png").is_file());
    assert!(image::open(&grid).is_ok());

    let requests = explainer.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.model, "pets");
    assert!(request.return_overlay);
    assert_eq!(request.images.len(), 3, "the unreadable file is not sent");
    assert_eq!(request.images[0].id, "cat.png");
    assert_eq!(
        request.images[0].target_class,
        Some(1),
        "dog resolved by name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_checks_locally_then_uploads_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("cifar-cnn.safetensors");
    // What a three-class lecture CNN saves: every tensor the spec expects.
    let spec = camshaft_spec::ModelSpec {
        arch: camshaft_spec::Arch::Cnn,
        head: camshaft_spec::Head::Linear,
        class_names: vec!["a".into(), "b".into(), "c".into()],
        input_size: 32,
        normalization: camshaft_spec::Normalization::None,
    };
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = spec
        .shape()
        .expected_parameters()
        .into_iter()
        .map(|(name, shape)| {
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let data = vec![0u8; 4 * shape.iter().product::<usize>()];
            (name, shape, data)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap();
        (name.clone(), view)
    });
    std::fs::write(
        &weights,
        safetensors::tensor::serialize(views, &None).unwrap(),
    )
    .unwrap();
    let fake = Arc::new(FakeCoordinator::default());
    let addr = serve_coordinator(fake.clone()).await;
    let weights_arg = weights.display().to_string();
    let import = |classes: &'static str| {
        let addr = addr.to_string();
        let weights_arg = weights_arg.clone();
        async move {
            ctl(&[
                "--coordinator",
                &addr,
                "models",
                "import",
                "--name",
                "cifar",
                "--arch",
                "cnn",
                "--head",
                "linear",
                "--classes",
                classes,
                "--image-size",
                "32",
                "--alias",
                "prod",
                &weights_arg,
            ])
            .await
        }
    };
    let out = import("a,b,c").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "registered cifar:4\n");
    let header = fake.imported.lock().unwrap()[0].clone();
    assert_eq!(header.file_name, "cifar-cnn.safetensors");
    assert_eq!(header.format(), WeightsFormat::Safetensors);
    assert_eq!(header.aliases, vec!["prod"]);
    let spec = header.spec.unwrap();
    assert_eq!(spec.class_names, vec!["a", "b", "c"]);
    assert_eq!(spec.resize(), ResizeMethod::Crop);
    assert_eq!(spec.normalization(), Normalization::None);

    // Two classes do not fit three-class weights: refused before any upload.
    let out = import("a,b").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("do not fit"), "{}", stderr(&out));
    assert_eq!(fake.imported.lock().unwrap().len(), 1);
}

/// `ctl bench explain` counts RESOURCE_EXHAUSTED and goes on; any other
/// failed call is counted too and makes it exit 1 after the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_explain_counts_refused_calls_by_code() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.png", "b.png"] {
        std::fs::write(dir.path().join(name), png(8)).unwrap();
    }
    let images = dir.path().display().to_string();
    let json = dir.path().join("bench.json");
    let run = |code: tonic::Code| {
        let (images, json) = (images.clone(), json.display().to_string());
        async move {
            let explainer = Arc::new(FakeExplainer {
                refuse_every: Some((3, code)),
                ..Default::default()
            });
            let addr = serve_explainer(explainer.clone()).await.to_string();
            let out = ctl(&[
                "--explainer",
                &addr,
                "bench",
                "explain",
                "--model",
                "pets",
                "--images",
                &images,
                "--clients",
                "1,2",
                "--images-per-request",
                "2",
                "--seconds",
                "0.5",
                "--warmup-seconds",
                "0",
                "--json",
                &json,
            ])
            .await;
            let value: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let calls = explainer.requests.lock().unwrap().len();
            (out, value, calls)
        }
    };

    let (out, value, calls) = run(tonic::Code::ResourceExhausted).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("RESOURCE_EXHAUSTED="),
        "{}",
        stdout(&out)
    );
    assert_eq!(value["model_version"], "pets:1");
    let points = value["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    let mut counted = 0;
    for point in points {
        assert_eq!(point["images"], "2 files");
        let requests = point["requests"].as_u64().unwrap();
        let refused = point["errors"]["RESOURCE_EXHAUSTED"].as_u64().unwrap();
        assert!(requests > 0 && refused > 0, "{point}");
        assert_eq!(point["images_explained"].as_u64(), Some(2 * requests));
        counted += requests + refused;
    }
    // Every call but the first (the check before timing) was in a window.
    assert!((counted as usize) < calls, "{counted} of {calls}");

    let (out, value, _) = run(tonic::Code::Internal).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed (see ERRORS)"),
        "{}",
        stderr(&out)
    );
    assert!(value["points"][0]["errors"]["INTERNAL"].as_u64().unwrap() > 0);
}

/// `ctl` is a client: it runs on a laptop without libtorch, so the binary
/// names no torch library among those it needs (`ldd`, where there is one).
#[test]
fn the_binary_needs_no_libtorch() {
    let Ok(out) = Command::new("ldd").arg(env!("CARGO_BIN_EXE_ctl")).output() else {
        eprintln!("no ldd here: not checked");
        return;
    };
    let libraries = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd failed: {out:?}");
    assert!(libraries.contains("libc.so"), "ldd lists: {libraries}");
    assert!(
        !libraries.to_ascii_lowercase().contains("torch"),
        "ctl links libtorch: {libraries}"
    );
}
