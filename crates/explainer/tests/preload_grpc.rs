//! Preloading and per-model settings on a real server over loopback: health
//! (gRPC and `/readyz`) is NOT_SERVING until the preloaded reference is
//! loaded and warmed up, the first request loads nothing, an alias move is
//! followed, a preloaded version is never evicted, and `GetServerInfo`
//! shows each loaded version's own settings.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use camshaft_explainer::{Config, ModelSettings};
use camshaft_proto::v1::server_info_client::ServerInfoClient;
use camshaft_proto::v1::{ExplainMethod, GetServerInfoRequest, GetServerInfoResponse};
use camshaft_vision::{Head, Precision};
use common::{Cluster, input, png, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;

async fn info(c: &Cluster) -> GetServerInfoResponse {
    ServerInfoClient::new(c.channel.clone())
        .get_server_info(GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn health(c: &Cluster) -> ServingStatus {
    let mut client = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    let status = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "camshaft.v1.Explainer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

/// The HTTP status line's code of `GET /readyz` on the server's address.
async fn readyz(c: &Cluster) -> u16 {
    let addr = c.addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Polls `GetServerInfo` until `done` holds (a load takes seconds on a CPU).
async fn until(
    c: &Cluster,
    what: &str,
    done: impl Fn(&GetServerInfoResponse) -> bool,
) -> GetServerInfoResponse {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = info(c).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloaded_versions_are_warm_before_serving_and_follow_their_alias() {
    let mut models = BTreeMap::new();
    models.insert(
        "pets".to_string(),
        ModelSettings {
            max_batch: Some(4),
            max_batch_wait_ms: Some(7),
            replicas: Some(1),
            precision: Some(Precision::Fp32),
        },
    );
    let c = Cluster::start(Config {
        preload: vec!["pets@latest".into()],
        warmup_batch_sizes: vec![1, 3],
        model_cache_size: 2,
        models,
        ..Config::default()
    })
    .await;

    // Nothing registered yet: not serving, and ServerInfo says why.
    assert_eq!(health(&c).await, ServingStatus::NotServing);
    assert_eq!(readyz(&c).await, 503);
    let waiting = until(&c, "a preload error", |i| {
        i.preload.first().is_some_and(|p| !p.error.is_empty())
    })
    .await;
    assert_eq!(waiting.preload.len(), 1);
    assert_eq!(waiting.preload[0].model_ref, "pets@latest");
    assert!(!waiting.preload[0].ready);
    assert!(
        waiting.preload[0].error.contains("pets"),
        "{:?}",
        waiting.preload[0]
    );
    assert_eq!(health(&c).await, ServingStatus::NotServing);

    // Registered: loaded and warmed up (passes of 1 and 3 images) before
    // health turns SERVING.
    c.register("pets", Head::Cam).await;
    let ready = until(&c, "pets:1 ready", |i| i.preload[0].ready).await;
    assert_eq!(ready.preload[0].model_version, "pets:1");
    assert!(ready.preload[0].error.is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&c).await != ServingStatus::Serving {
        assert!(Instant::now() < deadline, "health never turned SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz(&c).await, 200);
    // The warm-up requests: 1 + 3 images, through the engine requests use.
    assert_eq!(
        c.metric("camshaft_explainer_images_total", &["result=\"explained\""])
            .await,
        4.0
    );
    assert!(c.metric("camshaft_explainer_batches_total", &[]).await >= 2.0);
    let loaded = info(&c).await.loaded_models;
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].model_version, "pets:1");
    assert!(loaded[0].preloaded);
    let settings = loaded[0].settings.clone().unwrap();
    assert_eq!(
        (
            settings.max_batch,
            settings.max_batch_wait_ms,
            settings.replicas,
            settings.precision.as_str()
        ),
        (4, 7, 1, "fp32")
    );

    // The first request loads nothing.
    let loads = || {
        c.metric(
            "camshaft_explainer_model_loads_total",
            &["result=\"loaded\""],
        )
    };
    assert_eq!(loads().await, 1.0);
    let one = || vec![input("x", png(64, 64, 5))];
    let resp = c
        .client()
        .explain(request("pets@latest", one(), ExplainMethod::Cam))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_version, "pets:1");
    assert_eq!(loads().await, 1.0);
    // Labelled by model and version: the 4 warm-up images and this one.
    let pets1 = ["model=\"pets\"", "version=\"1\""];
    assert_eq!(
        c.metric("camshaft_explainer_model_images_total", &pets1)
            .await,
        5.0
    );
    assert_eq!(
        c.metric("camshaft_explainer_model_latency_seconds_count", &pets1)
            .await,
        3.0,
        "two warm-up calls and one request"
    );
    assert_eq!(
        c.metric("camshaft_explainer_model_inflight_images", &pets1)
            .await,
        0.0
    );

    // Other models use the global settings and never evict the preloaded
    // version (cache of 2: other:1 goes when other:2 comes).
    c.register("other", Head::Cam).await;
    c.register("other", Head::Cam).await;
    for version in ["other:1", "other:2"] {
        c.client()
            .explain(request(version, one(), ExplainMethod::Cam))
            .await
            .unwrap();
    }
    let loaded = info(&c).await.loaded_models;
    let keys: Vec<&str> = loaded.iter().map(|m| m.model_version.as_str()).collect();
    assert_eq!(keys, ["other:2", "pets:1"]);
    // The evicted version's series are gone; the loaded ones' stay.
    let text = c.scrape().await;
    let series_of = |model: &str, version: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with("camshaft_explainer_model_"))
            .filter(|l| {
                l.contains(&format!("model=\"{model}\""))
                    && l.contains(&format!("version=\"{version}\""))
            })
            .count()
    };
    assert_eq!(series_of("other", "1"), 0, "{text}");
    assert!(series_of("other", "2") > 0);
    assert!(series_of("pets", "1") > 0);
    let other = &loaded[0];
    assert!(!other.preloaded);
    assert_eq!(other.settings.as_ref().unwrap().max_batch, 64);
    assert_eq!(other.settings.as_ref().unwrap().max_batch_wait_ms, 2);

    // `latest` moves: pets:2 is loaded, warmed up and preloaded instead.
    c.register("pets", Head::Cam).await;
    let moved = until(&c, "pets:2 ready", |i| {
        i.preload[0].ready && i.preload[0].model_version == "pets:2"
    })
    .await;
    let pets2 = moved
        .loaded_models
        .iter()
        .find(|m| m.model_version == "pets:2")
        .unwrap();
    assert!(pets2.preloaded);
    assert_eq!(pets2.settings.as_ref().unwrap().max_batch, 4);
    assert!(
        moved
            .loaded_models
            .iter()
            .all(|m| m.model_version == "pets:2" || !m.preloaded),
        "{:?}",
        moved.loaded_models
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_cannot_load_keeps_health_not_serving_with_its_reason() {
    let c = Cluster::start(Config {
        preload: vec!["big:1".into()],
        max_model_input_size: 32,
        max_compute_units_per_request: 1,
        max_queued_compute_units: 1,
        ..Config::default()
    })
    .await;
    // A 64 px version over this explainer's max_model_input_size.
    c.register("big", Head::Cam).await;
    let failed = until(&c, "a load failure", |i| {
        i.preload[0].error.contains("max_model_input_size")
    })
    .await;
    assert!(!failed.preload[0].ready);
    assert!(failed.loaded_models.is_empty());
    assert_eq!(health(&c).await, ServingStatus::NotServing);
    assert_eq!(readyz(&c).await, 503);
    c.stop().await;
}
