//! A hostile client on the same network as a real `camshaft up`: each
//! attack the security review tried, the answer a well-guarded service
//! gives, and afterwards the process alive and jobs, versions and aliases
//! as they were. The default config (clients anonymous, workers with the
//! credential `camshaft up` wrote) and one with a tokens file.
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_cluster_tests::{Cluster, free_port};
use camshaft_proto::security::{AuthChannel, ClientSecurity, TlsConfig};
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::worker_link_client::WorkerLinkClient;
use camshaft_proto::v1::{self, import_model_request::Part};
use tonic::Code;

async fn channel(addr: &str, token: Option<&str>) -> AuthChannel {
    let security = ClientSecurity::with_token(&TlsConfig::default(), token).unwrap();
    let channel = security.endpoint(addr).unwrap().connect().await.unwrap();
    security.channel(channel)
}

/// What a stranger must not be able to change: jobs (with their
/// revisions), versions, aliases.
async fn state(addr: &str, token: Option<&str>) -> String {
    let mut c = CoordinatorClient::new(channel(addr, token).await);
    let jobs = c
        .list_jobs(v1::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let models = c
        .list_models(v1::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .versions;
    let jobs: Vec<_> = jobs
        .iter()
        .map(|j| (&j.id, j.state, j.attempt, &j.error))
        .collect();
    format!("{jobs:?}\n{models:?}")
}

fn checkpoint_header(size: u64) -> v1::CheckpointPart {
    v1::CheckpointPart {
        part: Some(v1::checkpoint_part::Part::Header(v1::CheckpointHeader {
            job_id: "j-1".into(),
            attempt: 1,
            meta_json: "{}".into(),
            size_bytes: size,
            ..Default::default()
        })),
    }
}

fn import_header(spec: v1::ModelSpec, size: u64) -> v1::ImportModelRequest {
    v1::ImportModelRequest {
        part: Some(Part::Header(v1::ImportModelHeader {
            name: "pwned".into(),
            spec: Some(spec),
            format: v1::WeightsFormat::Safetensors as i32,
            size_bytes: size,
            aliases: vec!["prod".into()],
            ..Default::default()
        })),
    }
}

fn resnet18_cam(classes: usize, input_size: u32) -> v1::ModelSpec {
    v1::ModelSpec {
        arch: v1::Arch::Resnet18 as i32,
        head: v1::Head::Cam as i32,
        class_names: (0..classes).map(|i| format!("c{i}")).collect(),
        input_size,
        normalization: v1::Normalization::Imagenet as i32,
        ..Default::default()
    }
}

/// A safetensors file holding one f32 tensor `name` of `shape`.
fn safetensors(name: &str, shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let header = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[0,{}]}}}}"#,
        n * 4
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, n * 4));
    out
}

async fn import(
    addr: &str,
    token: Option<&str>,
    spec: v1::ModelSpec,
    weights: Vec<u8>,
) -> tonic::Status {
    let parts = vec![
        import_header(spec, weights.len() as u64),
        v1::ImportModelRequest {
            part: Some(Part::Chunk(weights.into())),
        },
    ];
    CoordinatorClient::new(channel(addr, token).await)
        .max_encoding_message_size(camshaft_proto::MAX_MESSAGE_BYTES)
        .import_model(tokio_stream::iter(parts))
        .await
        .unwrap_err()
}

/// Calls `path`, which no server serves, with an empty message.
async fn call_unknown(channel: AuthChannel, path: String) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<v1::GetServerInfoRequest, v1::GetServerInfoResponse>::default();
    grpc.unary(
        tonic::Request::new(v1::GetServerInfoRequest::default()),
        path.try_into().unwrap(),
        codec,
    )
    .await
    .map_or_else(|e| e.code(), |_| Code::Ok)
}

#[test]
fn a_stranger_on_the_network_cannot_take_the_default_cluster_down_or_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let config = dir.path().join("camshaft.toml");
    std::fs::write(
        &config,
        format!(
            "[coordinator]\nmetrics_listen = \"{metrics}\"\nmax_active_jobs_per_principal = 8\n"
        ),
    )
    .unwrap();
    let mut cluster = Cluster::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let addr = cluster.coordinator_addr.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Something to protect: a job that waits for two workers.
        let mut c = CoordinatorClient::new(channel(&addr, None).await);
        let pending = c
            .submit_job(v1::SubmitJobRequest {
                request_id: String::new(),
                spec: Some(v1::JobSpec {
                    dataset: Some(v1::DatasetSpec {
                        kind: v1::DatasetKind::Synthetic as i32,
                        ..Default::default()
                    }),
                    arch: v1::Arch::Cnn as i32,
                    head: v1::Head::Linear as i32,
                    image_size: 32,
                    epochs: 1,
                    workers: 2,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        let before = state(&addr, None).await;

        // WorkerLink without the workers' credential: nothing gets in,
        // whatever the header claims (2^40 or u64::MAX bytes used to abort
        // the process).
        for size in [1u64 << 40, u64::MAX] {
            let e = WorkerLinkClient::new(channel(&addr, None).await)
                .put_checkpoint(tokio_stream::iter([checkpoint_header(size)]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(v1::WorkerMessage {
            message: Some(v1::worker_message::Message::Register(v1::Register {
                version: "0.1.0".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let e = WorkerLinkClient::new(channel(&addr, Some("guessed-token")).await)
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = WorkerLinkClient::new(channel(&addr, None).await)
            .get_checkpoint(v1::GetCheckpointRequest {
                job_id: pending.id.clone(),
                checkpoint_id: "1".into(),
                ..Default::default()
            })
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

        // Imports: weights that do not fit their spec, a million class
        // names, an input size the explainer would choke on.
        let e = import(
            &addr,
            None,
            resnet18_cam(2, 224),
            safetensors("fc.weight", &[3, 512]),
        )
        .await;
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("do not fit"), "{e:?}");
        for (spec, says) in [
            (resnet18_cam(20_000, 224), "class"),
            (resnet18_cam(2, 8192), "input"),
        ] {
            let e = import(&addr, None, spec, safetensors("fc.weight", &[2, 512])).await;
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(says), "{e:?}");
        }

        // A 100 KB name comes back as a short quote.
        let e = c
            .get_model(v1::GetModelRequest {
                model: "n".repeat(100_000),
            })
            .await
            .unwrap_err();
        assert!(e.message().len() < 400, "{} bytes", e.message().len());

        // Unknown method paths do not grow the metrics.
        let size = |text: String| text.len();
        let first = size(
            camshaft_metrics::scrape(metrics.parse().unwrap())
                .await
                .unwrap(),
        );
        let anyone = channel(&addr, None).await;
        for i in 0..300 {
            let code = call_unknown(anyone.clone(), format!("/evil.S{i}/M{i}")).await;
            assert_eq!(code, Code::Unimplemented);
        }
        let after = size(
            camshaft_metrics::scrape(metrics.parse().unwrap())
                .await
                .unwrap(),
        );
        assert!(after < first + 4_000, "{first} -> {after} bytes");

        // Pending jobs are bounded per principal: 8 here.
        let mut refused = None;
        for _ in 0..12 {
            if let Err(e) = c
                .submit_job(v1::SubmitJobRequest {
                    request_id: String::new(),
                    spec: Some(v1::JobSpec {
                        collective_bench: Some(v1::CollectiveBench::default()),
                        workers: 5,
                        ..Default::default()
                    }),
                })
                .await
            {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("the ninth active job is refused");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

        // A finished job's watch past its end ends at once.
        c.cancel_job(v1::CancelJobRequest {
            job_id: pending.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
        let mut watch = c
            .watch_job(v1::WatchJobRequest {
                job_id: pending.id.clone(),
                after_sequence: u64::MAX,
                include_logs: true,
            })
            .await
            .unwrap()
            .into_inner();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
            .await
            .expect("the watch ended");
        assert!(ended.unwrap().is_none());

        // Nothing the stranger did changed a version or an alias.
        let now = state(&addr, None).await;
        let models = |s: &str| s.lines().last().unwrap_or_default().to_string();
        assert_eq!(models(&now), models(&before));
    });
    assert!(cluster.is_running(), "camshaft up died:\n{}", cluster.log());
    cluster.stop().unwrap();
}

/// A peak of the process `pid`'s memory (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Resets the peak of `pid` to its current memory (`clear_refs` 5).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

fn png(image: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// An imported model is explainable at once; eight concurrent requests
/// each with a decompression bomb just under the pixel limit (5657×5657,
/// 16-bit RGBA: 250 KB that decode to 256 MB, plus the RGB copy) raise the
/// process's peak memory by no more than the explainer's decode budget
/// (`max_decode_bytes_in_flight`, 1 GiB by default) and some slack: the
/// review saw 2.3 GB before admission was charged by decoded bytes.
#[test]
fn an_imported_model_explains_and_bombs_stay_within_the_decode_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("data"), &[]).unwrap();
    let pid = cluster.pid().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spec = v1::ModelSpec {
        arch: v1::Arch::Cnn as i32,
        head: v1::Head::Linear as i32,
        class_names: vec!["a".into(), "b".into()],
        input_size: 32,
        normalization: v1::Normalization::None as i32,
        ..Default::default()
    };
    // Zero weights of exactly the shapes the spec needs.
    let shape = camshaft_spec::ModelShape {
        arch: camshaft_spec::Arch::Cnn,
        head: camshaft_spec::Head::Linear,
        num_classes: 2,
        input_size: 32,
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dims) in shape.expected_parameters() {
        let bytes = 4 * dims.iter().product::<i64>() as usize;
        header.insert(
            name,
            serde_json::json!({"dtype": "F32", "shape": dims, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend_from_slice(header.as_bytes());
    weights.resize(weights.len() + offset, 0);

    let bomb = png(image::DynamicImage::ImageRgba16(image::ImageBuffer::new(
        5657, 5657,
    )));
    let small = png(image::DynamicImage::ImageRgb8(image::ImageBuffer::new(
        40, 30,
    )));
    let explainer = cluster.explainer_addr.clone();
    let addr = cluster.coordinator_addr.clone();
    runtime.block_on(async {
        let parts = v1::ImportModelRequest::stream_parts(
            v1::ImportModelHeader {
                name: "tiny".into(),
                spec: Some(spec),
                format: v1::WeightsFormat::Safetensors as i32,
                ..Default::default()
            },
            weights.into(),
            0,
        );
        CoordinatorClient::new(channel(&addr, None).await)
            .import_model(tokio_stream::iter(parts))
            .await
            .unwrap();
        let explain = |data: Vec<u8>| {
            let explainer = explainer.clone();
            async move {
                camshaft_proto::v1::explainer_client::ExplainerClient::new(
                    channel(&explainer, None).await,
                )
                .max_encoding_message_size(camshaft_proto::MAX_MESSAGE_BYTES)
                .max_decoding_message_size(camshaft_proto::MAX_MESSAGE_BYTES)
                .explain(v1::ExplainRequest {
                    model: "tiny".into(),
                    images: vec![v1::ImageInput {
                        id: "x".into(),
                        data: data.into(),
                        target_class: None,
                    }],
                    ..Default::default()
                })
                .await
            }
        };
        let answer = explain(small.clone()).await.unwrap().into_inner();
        assert!(
            answer.results[0].error.is_empty(),
            "{:?}",
            answer.results[0]
        );
        reset_peak(pid);
        let before = peak_memory(pid);
        let calls: Vec<_> = (0..8)
            .map(|_| tokio::spawn(explain(bomb.clone())))
            .collect();
        let mut refused = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    refused += 1;
                }
            }
        }
        let growth = peak_memory(pid).saturating_sub(before);
        eprintln!(
            "8 bombs at once: {refused} refused, peak memory +{} MiB",
            growth >> 20
        );
        assert!(refused > 0, "eight bombs at once fit no 1 GiB budget");
        assert!(
            growth < (1 << 30) + (512 << 20),
            "peak memory grew {} MiB",
            growth >> 20
        );
        // Still explaining.
        explain(small).await.unwrap();
    });
    assert!(cluster.is_running(), "camshaft up died:\n{}", cluster.log());
    cluster.stop().unwrap();
}

#[test]
fn with_tokens_each_role_does_only_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let tokens = dir.path().join("tokens.csv");
    let (editor, viewer) = ("editor-0123456789abcdef", "viewer-0123456789abcdef");
    std::fs::write(
        &tokens,
        format!("{editor},alice,editor\n{viewer},val,viewer\n"),
    )
    .unwrap();
    let editor_file = dir.path().join("editor-token");
    std::fs::write(&editor_file, editor).unwrap();
    let config = dir.path().join("camshaft.toml");
    std::fs::write(
        &config,
        format!(
            "auth_tokens_file = \"{}\"\n[coordinator]\nmetrics_listen = \"{metrics}\"\n",
            tokens.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut cluster = Cluster::start_with(
        &data,
        &["--config", config.to_str().unwrap()],
        &[("CAMSHAFT_TOKEN_FILE", editor_file.as_path())],
    )
    .unwrap();
    let addr = cluster.coordinator_addr.clone();
    let worker_token = std::fs::read_to_string(data.join("worker-token")).unwrap();
    let worker_token = worker_token.trim();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let before = state(&addr, Some(viewer)).await;
        let list = |token: Option<&'static str>| {
            let addr = addr.clone();
            async move {
                CoordinatorClient::new(channel(&addr, token).await)
                    .list_jobs(v1::ListJobsRequest::default())
                    .await
                    .map_or_else(|e| e.code(), |_| Code::Ok)
            }
        };
        assert_eq!(list(Some(viewer)).await, Code::Ok);
        assert_eq!(list(None).await, Code::Unauthenticated);
        let e = CoordinatorClient::new(channel(&addr, Some(worker_token)).await)
            .list_jobs(v1::ListJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "the worker credential is not a client's"
        );
        let e = import(
            &addr,
            Some(viewer),
            resnet18_cam(2, 224),
            safetensors("fc.weight", &[2, 512]),
        )
        .await;
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = WorkerLinkClient::new(channel(&addr, Some(editor)).await)
            .put_checkpoint(tokio_stream::iter([checkpoint_header(u64::MAX)]))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "a client token is not a worker's"
        );
        // Metrics ask for a client token too.
        let addr_m = metrics.parse().unwrap();
        let e = camshaft_metrics::scrape(addr_m)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("401"), "{e}");
        assert!(
            camshaft_metrics::scrape_as(addr_m, Some(worker_token))
                .await
                .is_err()
        );
        camshaft_metrics::scrape_as(addr_m, Some(viewer))
            .await
            .unwrap();
        assert_eq!(state(&addr, Some(viewer)).await, before);
    });
    // The in-process worker still got in with its own credential, and
    // `ctl` with the editor's token submits: a job runs end to end.
    let out = cluster
        .ctl_ok(&[
            "submit-job",
            "--dataset",
            "synthetic",
            "--model",
            "cnn",
            "--head",
            "linear",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--train-len",
            "64",
            "--valid-len",
            "32",
            "--wait",
        ])
        .unwrap();
    assert!(out.contains("registered"), "{out}");
    let job = cluster.ctl_ok(&["jobs", "get", "j-1"]).unwrap();
    assert!(job.contains("alice"), "{job}");
    assert!(cluster.is_running());
    cluster.stop().unwrap();
}
