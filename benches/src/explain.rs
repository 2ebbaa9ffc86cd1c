//! `explain`: images/s and p50/p99 latency of CAM through the real gRPC
//! explainer, against the same CAM in PyTorch and with TorchCAM.
//!
//! Ours: `camshaft_explainer::serve` in this process on loopback over an
//! embedded store holding a freshly initialised ResNet (CAM head, 2 classes,
//! ImageNet normalisation, input `size`); `clients` concurrent gRPC clients
//! each send one JPEG (`size`×`size`, 16 distinct) per `Explain` call, CAM,
//! no overlay, for `--seconds` after one warm-up call each. The server runs
//! with the explainer's default configuration (what a user gets: on a CPU
//! passes of at most 8 images at 224 px, 1 at 512 px), except where
//! `--max-batch`, `--max-batch-wait-ms`, `--replicas` or
//! `--batch-invariant` say otherwise.
//!
//! Reference (`reference/explain_torchcam.py`): the same model in PyTorch
//! eager; `clients` threads each decode a JPEG with PIL, normalise it in
//! NumPy and hand it to one model thread, which runs the body and the CAM
//! of the predicted class (`pytorch`, one image per forward, the way a
//! request-per-call service runs it), or the same through TorchCAM's `CAM`
//! extractor (`torchcam`, fp32 only). With `--precision bf16` both sides
//! run the body in bfloat16. Both sides use `--threads` intra-op threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use camshaft_metrics::stats::quantile;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::{ExplainMethod, ExplainRequest, ImageInput};
use camshaft_store::{EmbeddedConfig, EmbeddedStore, Store};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization, Precision};
use clap::Parser;
use serde::Serialize;

use crate::reference::Reference;

/// Options of `explain`.
#[derive(Clone, Debug, Parser)]
pub struct ExplainArgs {
    /// Concurrent clients (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32])]
    pub clients: Vec<usize>,
    /// Square image sides (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [224u32, 512])]
    pub sizes: Vec<u32>,
    /// Timed seconds per (size, clients) point and side.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// resnet18 or resnet34.
    #[arg(long, default_value = "resnet34")]
    pub arch: String,
    /// The explainer's `max_batch` (default: the explainer's default).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// The explainer's `max_batch_wait_ms` (default: the explainer's
    /// default).
    #[arg(long)]
    pub max_batch_wait_ms: Option<u64>,
    /// The explainer's `model_replicas` (default: the explainer's default).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// The explainer's `batch_invariant` (default: the explainer's default).
    #[arg(long, action = clap::ArgAction::Set)]
    pub batch_invariant: Option<bool>,
    /// The explainer's `precision` (`fp32` or `bf16`); the PyTorch side
    /// runs its convolutions in the same dtype (TorchCAM only in fp32).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Skip the Python side.
    #[arg(long)]
    pub no_reference: bool,
}

/// One measured point.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Point {
    /// `camshaft`, `pytorch` or `torchcam`.
    pub side: String,
    /// Image side.
    pub size: u32,
    /// Concurrent clients.
    pub clients: usize,
    /// Images answered per second.
    pub images_per_s: f64,
    /// Median latency of one call.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
}

fn jpegs(size: u32) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..16u32)
        .map(|seed| {
            let img = image::RgbImage::from_fn(size, size, |x, y| {
                image::Rgb([
                    ((x * 3 + seed * 17) % 256) as u8,
                    ((y * 5 + seed * 29) % 256) as u8,
                    (((x + y) / 3 + seed * 7) % 256) as u8,
                ])
            });
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Jpeg)?;
            Ok(out.into_inner())
        })
        .collect()
}

async fn ours_point(
    client: &ExplainerClient<tonic::transport::Channel>,
    images: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    seconds: f64,
    size: u32,
) -> anyhow::Result<Point> {
    let call = |mut client: ExplainerClient<tonic::transport::Channel>, bytes: Vec<u8>| async move {
        let started = Instant::now();
        client
            .explain(ExplainRequest {
                model: "bench".into(),
                images: vec![ImageInput {
                    id: String::new(),
                    data: bytes.into(),
                    target_class: None,
                }],
                method: ExplainMethod::Cam as i32,
                ..Default::default()
            })
            .await?;
        Ok::<_, tonic::Status>(started.elapsed())
    };
    // Warm-up: one call per client.
    for i in 0..clients {
        call(client.clone(), images[i % images.len()].clone()).await?;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let client = client.clone();
        let images = Arc::clone(images);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = k;
            while Instant::now() < until {
                let took = call(client.clone(), images[i % images.len()].clone()).await?;
                latencies.push(took.as_secs_f64() * 1e3);
                i += clients;
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Point {
        side: "camshaft".into(),
        size,
        clients,
        images_per_s: latencies.len() as f64 / elapsed,
        p50_ms: quantile(&latencies, 0.5).unwrap_or(f64::NAN),
        p99_ms: quantile(&latencies, 0.99).unwrap_or(f64::NAN),
    })
}

/// The explainer's configuration: its defaults (what a user gets), with
/// the flags given, and a queue deep enough for every client.
fn explainer_config(args: &ExplainArgs) -> camshaft_explainer::Config {
    let defaults = camshaft_explainer::Config::default();
    camshaft_explainer::Config {
        max_batch: args.max_batch.unwrap_or(defaults.max_batch),
        max_batch_wait_ms: args.max_batch_wait_ms.unwrap_or(defaults.max_batch_wait_ms),
        model_replicas: args.replicas.unwrap_or(defaults.model_replicas),
        batch_invariant: args.batch_invariant.unwrap_or(defaults.batch_invariant),
        precision: args.precision,
        max_queued_images: defaults.max_queued_images.max(4096),
        max_queued_compute_units: defaults.max_queued_compute_units.max(65_536),
        max_compute_units_per_request: defaults.max_compute_units_per_request.max(4096),
        ..defaults
    }
}

async fn ours(args: &ExplainArgs) -> anyhow::Result<Vec<Point>> {
    let arch = match args.arch.as_str() {
        "resnet18" => Arch::Resnet18,
        "resnet34" => Arch::Resnet34,
        other => anyhow::bail!("--arch {other:?} is not resnet18 or resnet34"),
    };
    let mut points = Vec::new();
    for &size in &args.sizes {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store"))).await?);
        tch::manual_seed(0);
        let spec = ModelSpec {
            arch,
            head: Head::Cam,
            class_names: vec!["cat".into(), "dog".into()],
            input_size: size,
            normalization: Normalization::Imagenet,
        };
        let model = Model::new(spec.clone(), tch::Device::Cpu)?;
        let path = dir.path().join("bench.safetensors");
        camshaft_vision::save_weights(&model, &path)?;
        store
            .register_model(
                "bench",
                serde_json::to_value(&spec)?,
                serde_json::json!({}),
                std::fs::read(&path)?.into(),
            )
            .await?;
        let config = explainer_config(args);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(camshaft_explainer::serve(config, store, listener, async {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let client = ExplainerClient::new(channel);
        let images = Arc::new(jpegs(size)?);
        for &clients in &args.clients {
            let point = ours_point(&client, &images, clients, args.seconds, size).await?;
            eprintln!("{point:?}");
            points.push(point);
        }
        let _ = stop.send(());
        server.await??;
    }
    Ok(points)
}

/// Runs the bench, prints the table and writes the JSON to `json`.
pub fn run(
    args: &ExplainArgs,
    threads: i32,
    reference: &Reference,
    json: &std::path::Path,
) -> anyhow::Result<()> {
    tch::set_num_threads(threads);
    // As in the `camshaft` binary: only the explainer's inference threads
    // run libtorch in parallel (see camshaft_vision::threads).
    camshaft_vision::threads::run_serially_here();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(camshaft_vision::threads::run_serially_here)
        .build()?;
    let mut points = runtime.block_on(ours(args))?;
    if !args.no_reference {
        let join = |v: Vec<String>| v.join(",");
        let script_args = vec![
            "--clients".to_string(),
            join(args.clients.iter().map(ToString::to_string).collect()),
            "--sizes".into(),
            join(args.sizes.iter().map(ToString::to_string).collect()),
            "--seconds".into(),
            args.seconds.to_string(),
            "--arch".into(),
            args.arch.clone(),
            "--threads".into(),
            threads.to_string(),
            "--precision".into(),
            args.precision.to_string(),
        ];
        let (_, value) = reference.run_json("explain_torchcam.py", &script_args)?;
        let theirs: Vec<Point> = serde_json::from_value(value["points"].clone())
            .context("explain_torchcam.py printed no points")?;
        points.extend(theirs);
    }
    let config = explainer_config(args);
    println!(
        "explainer: max_batch {}, max_batch_wait_ms {}, model_replicas {}, batch_invariant {}, precision {}, device {}; {threads} intra-op threads",
        config.max_batch,
        config.max_batch_wait_ms,
        config.model_replicas,
        config.batch_invariant,
        config.precision,
        config.device
    );
    println!("| size | clients | side | images/s | p50 ms | p99 ms | × pytorch |");
    println!("|---|---|---|---|---|---|---|");
    for p in &points {
        let pytorch = points
            .iter()
            .find(|q| q.side == "pytorch" && q.size == p.size && q.clients == p.clients)
            .map(|q| q.images_per_s);
        let ratio = pytorch.map_or("—".to_string(), |r| format!("{:.2}", p.images_per_s / r));
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            p.size, p.clients, p.side, p.images_per_s, p.p50_ms, p.p99_ms, ratio
        );
    }
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        json,
        serde_json::to_string_pretty(&serde_json::json!({
            "bench": "explain",
            "threads": threads,
            "precision": args.precision.to_string(),
            "points": points,
        }))?,
    )?;
    eprintln!("results written to {}", json.display());
    Ok(())
}
