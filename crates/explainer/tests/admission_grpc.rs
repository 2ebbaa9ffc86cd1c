//! Admission by cost and failed model loads, over real gRPC on loopback:
//! what a request is charged (decoded bytes from its headers, compute units
//! from its images, `top_k` and faithfulness), that the charge is held
//! until the work really stopped, and that a version that cannot be loaded
//! is answered from memory instead of being loaded on every request.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use camshaft_explainer::Config;
use camshaft_proto::v1::{ExplainMethod, FaithfulnessMetric, ImageErrorKind};
use camshaft_vision::{Head, Model};
use common::{
    Cluster, bomb_png, input, metric_value, png, png_claiming, register_raw, request, spec,
    wait_for_metric,
};
use tonic::Code;

const MIB: u64 = 1 << 20;
const UNITS: &str = "camshaft_explainer_admitted_compute_units";
const BYTES: &str = "camshaft_explainer_admitted_decode_bytes";
const QUEUED: &str = "camshaft_explainer_queued_images";
const DECODING: &str = "camshaft_explainer_decoding_images";

/// `top_k` × faithfulness is what a request costs: one image with deletion
/// AUC is 1 + 21 passes per map, so with `top_k` 2 (or 5: capped at the
/// model's 2 classes) it is 43 units, over a per-request limit of 40
/// (INVALID_ARGUMENT naming the key), as are two images with `top_k` 1
/// (44). One such image is 22 units; while they wait for their pass (it
/// needs four images) two fit a queue of 60 units, a third is refused with
/// RESOURCE_EXHAUSTED and a retry hint, two plain images (1 unit each)
/// still fit and fill the pass; then everything is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_and_faithfulness_are_charged_as_compute_units() {
    let config = Config {
        max_compute_units_per_request: 40,
        max_queued_compute_units: 60,
        max_batch: 4,
        max_batch_wait_ms: 600_000,
        ..Config::default()
    };
    let c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;
    let scored = |images: usize, top_k: u32, seed: u8| {
        let images = (0..images)
            .map(|i| input(&format!("s{i}"), png(64, 64, seed + i as u8)))
            .collect();
        let mut req = request("pets", images, ExplainMethod::Cam);
        req.top_k = Some(top_k);
        req.faithfulness = FaithfulnessMetric::DeletionAuc as i32;
        req
    };
    for (images, top_k, units) in [(1, 2, 43), (1, 5, 43), (2, 1, 44)] {
        let status = c
            .client()
            .explain(scored(images, top_k, 1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(&format!("{units} compute units"))
                && status.message().contains("max_compute_units_per_request"),
            "{}",
            status.message()
        );
    }
    assert_eq!(c.metric(UNITS, &[]).await, 0.0);

    let mut waiting = Vec::new();
    for seed in [10u8, 20] {
        let mut client = c.client();
        waiting.push(tokio::spawn(async move {
            client.explain(scored(1, 1, seed)).await
        }));
        let expected = 22.0 * waiting.len() as f64;
        wait_for_metric(&c, UNITS, &[], |v| v == expected).await;
    }
    let status = c.client().explain(scored(1, 1, 30)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("44 compute units queued (limit 60, max_queued_compute_units)"),
        "{}",
        status.message()
    );
    assert!(camshaft_proto::retry_after(&status).is_some_and(|d| d > Duration::ZERO));

    let plain = c
        .client()
        .explain(request(
            "pets",
            vec![input("p", png(64, 64, 40)), input("q", png(64, 64, 41))],
            ExplainMethod::Cam,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(plain.results.iter().all(|r| r.error.is_empty()));
    for w in waiting {
        let resp = w.await.unwrap().unwrap().into_inner();
        let r = &resp.results[0];
        assert!(r.error.is_empty(), "{}", r.error);
        assert!(r.maps[0].faithfulness.is_some());
    }
    assert_eq!(c.metric("camshaft_explainer_batches_total", &[]).await, 1.0);
    for gauge in [UNITS, BYTES, QUEUED] {
        wait_for_metric(&c, gauge, &[], |v| v == 0.0).await;
    }
    c.stop().await;
}

/// A cancelled call's images that already wait in a pass keep their charge
/// (images and compute units) until the pass runs and drops them; the
/// call's end (CANCELLED) does not give it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_keeps_its_charge_until_its_pass_ends() {
    let config = Config {
        max_batch: 4,
        max_batch_wait_ms: 600_000,
        ..Config::default()
    };
    let c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;
    let two = |seed: u8| {
        request(
            "pets",
            vec![
                input("a", png(64, 64, seed)),
                input("b", png(64, 64, seed + 1)),
            ],
            ExplainMethod::Cam,
        )
    };
    let mut client = c.client();
    let call = tokio::spawn(async move { client.explain(two(1)).await });
    // Admitted and decoded: what is left charged is the two model inputs
    // (64² × 15 bytes each), waiting in the pass for two more images.
    wait_for_metric(&c, UNITS, &[], |v| v == 2.0).await;
    wait_for_metric(&c, BYTES, &[], |v| v == 2.0 * 64.0 * 64.0 * 15.0).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    wait_for_metric(
        &c,
        "camshaft_explainer_requests_total",
        &["code=\"CANCELLED\""],
        |v| v == 1.0,
    )
    .await;
    // The call is over; its images are not.
    let text = c.scrape().await;
    assert_eq!(metric_value(&text, UNITS, &[]), 2.0, "{text}");
    assert_eq!(metric_value(&text, QUEUED, &[]), 2.0);
    assert_eq!(metric_value(&text, BYTES, &[]), 2.0 * 64.0 * 64.0 * 15.0);

    // Two more images fill the pass: the cancelled ones are dropped, these
    // are computed, and everything is given back.
    let resp = c.client().explain(two(5)).await.unwrap().into_inner();
    assert!(resp.results.iter().all(|r| r.error.is_empty()));
    assert_eq!(
        c.metric(
            "camshaft_explainer_images_dropped_total",
            &["reason=\"cancelled\""]
        )
        .await,
        2.0
    );
    assert_eq!(
        c.metric("camshaft_explainer_batch_size_sum", &[]).await,
        2.0
    );
    for gauge in [UNITS, BYTES, QUEUED] {
        wait_for_metric(&c, gauge, &[], |v| v == 0.0).await;
    }
    c.stop().await;
}

/// A cancelled call's decoding keeps its charge while it runs: eight real
/// 4096² 16-bit RGBA bombs (185 MB charged each) on two decoding tasks;
/// the call is cancelled once decoding started. Whenever an image is still
/// being decoded, its bytes are charged (the admitted-bytes gauge is read
/// before the decoding gauge in each scrape); the tasks stop between
/// images, so some are never decoded; then everything is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_keeps_its_decode_charge_until_decoding_stops() {
    let config = Config {
        decode_tasks_per_request: Some(2),
        ..Config::default()
    };
    let mut c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;
    // Load the model first: the call below must reach decoding at once.
    c.client
        .explain(request(
            "pets",
            vec![input("w", png(64, 64, 1))],
            ExplainMethod::Cam,
        ))
        .await
        .unwrap();
    let bomb = bomb_png(4096, 4096);
    let images = (0..8)
        .map(|i| input(&format!("b{i}"), bomb.clone()))
        .collect();
    let mut client = c.client();
    let call = tokio::spawn(async move {
        client
            .explain(request("pets", images, ExplainMethod::Cam))
            .await
    });
    wait_for_metric(&c, DECODING, &[], |v| v > 0.0).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    wait_for_metric(
        &c,
        "camshaft_explainer_requests_total",
        &["code=\"CANCELLED\""],
        |v| v == 1.0,
    )
    .await;
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let mut charged_while_decoding = 0;
    loop {
        let text = c.scrape().await;
        let bytes = metric_value(&text, BYTES, &[]);
        let decoding = metric_value(&text, DECODING, &[]);
        if decoding > 0.0 {
            assert!(bytes >= 185e6, "{decoding} decoding, {bytes} bytes charged");
            charged_while_decoding += 1;
        }
        if decoding == 0.0 && bytes == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < until, "{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        charged_while_decoding > 0,
        "the decoding ended before the cancellation was seen"
    );
    // The image seen decoding was decoded; the tasks stopped before their
    // last images (a task that started after the cancellation decodes
    // none).
    let skipped = c
        .metric(
            "camshaft_explainer_images_dropped_total",
            &["reason=\"cancelled\""],
        )
        .await;
    assert!((1.0..=7.0).contains(&skipped), "{skipped} images skipped");
    assert_eq!(c.metric(UNITS, &[]).await, 0.0);
    c.stop().await;
}

/// Header bombs (a few dozen bytes declaring 5657×5657 16-bit RGBA) are
/// charged what they would decode to (~354 MB each) before any decoder
/// runs: three decoded at once are over a 768 MiB budget, so the request is
/// INVALID_ARGUMENT naming the key; decoded one at a time they fit, and
/// each fails on its own as undecodable. A PNG whose header cannot be read
/// is refused without decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bombs_are_charged_from_their_headers() {
    let config = |tasks| Config {
        max_decode_bytes_in_flight: 768 * MIB,
        decode_tasks_per_request: Some(tasks),
        ..Config::default()
    };
    let wide = Cluster::start(config(4)).await;
    wide.register("pets", Head::Cam).await;
    let narrow = wide.beside(config(1)).await;
    let bombs = || {
        let mut images: Vec<_> = (0..3)
            .map(|i| input(&format!("b{i}"), png_claiming(5657, 5657, 16, 6)))
            .collect();
        images.push(input("cut", png(64, 64, 1)[..20].to_vec()));
        request("pets", images, ExplainMethod::Cam)
    };
    let status = wide.client().explain(bombs()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("max_decode_bytes_in_flight"),
        "{}",
        status.message()
    );
    let resp = narrow.client().explain(bombs()).await.unwrap().into_inner();
    for r in &resp.results[..3] {
        assert_eq!(
            r.error_kind,
            ImageErrorKind::Undecodable as i32,
            "{}",
            r.error
        );
    }
    assert_eq!(
        resp.results[3].error_kind,
        ImageErrorKind::Undecodable as i32
    );
    assert!(
        resp.results[3].error.contains("header"),
        "{}",
        resp.results[3].error
    );
    for c in [&wide, &narrow] {
        assert_eq!(c.metric(BYTES, &[]).await, 0.0);
    }
    narrow.stop().await;
    wide.stop().await;
}

/// A version whose weights do not fit its spec (3 classes in the spec, 2 in
/// the file) fails with FAILED_PRECONDITION naming the tensor, and the next
/// request gets the same answer from memory: one failed load, not two. A
/// spec over the configured limits is refused before its weights are
/// fetched; a spec with 100 000 classes (allowed here) is refused from
/// the weights' header before its 200 MB head is built. A new version loads
/// at once; with `failed_load_retry_secs` 0 every request tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_loads_are_remembered_and_checked_before_building() {
    let config = Config {
        max_model_classes: 100_000,
        ..Config::default()
    };
    let c = Cluster::start(config).await;
    let two = Model::new(spec(Head::Cam), tch::Device::Cpu).unwrap();
    let path = c.dir.path().join("two.safetensors");
    camshaft_vision::save_weights(&two, &path).unwrap();
    let weights = std::fs::read(&path).unwrap();
    let with_classes = |n: usize, input_size: u32| {
        let mut s = spec(Head::Cam);
        s.class_names = (0..n).map(|i| i.to_string()).collect();
        s.input_size = input_size;
        serde_json::to_value(s).unwrap()
    };
    register_raw(&c.store, "three", with_classes(3, 64), weights.clone()).await;
    let one = || vec![input("x", png(64, 64, 1))];
    let loads = |result: &'static str| {
        let c = &c;
        async move {
            c.metric(
                "camshaft_explainer_model_loads_total",
                &[&format!("result=\"{result}\"")],
            )
            .await
        }
    };
    for attempt in 0..2 {
        let status = c
            .client()
            .explain(request("three", one(), ExplainMethod::Cam))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status
                .message()
                .contains("fc.weight is [2, 512], expected [3, 512]"),
            "{}",
            status.message()
        );
        assert_eq!(
            status.message().contains("remembered"),
            attempt == 1,
            "{}",
            status.message()
        );
    }
    assert_eq!(loads("failed").await, 1.0);
    assert_eq!(loads("loaded").await, 0.0);

    register_raw(&c.store, "big", with_classes(2, 2048), weights.clone()).await;
    let status = c
        .client()
        .explain(request("big", one(), ExplainMethod::Cam))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("max_model_input_size"),
        "{}",
        status.message()
    );
    register_raw(&c.store, "many", with_classes(100_000, 64), weights.clone()).await;
    let status = c
        .client()
        .explain(request("many", one(), ExplainMethod::Cam))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("fc.weight is [2, 512], expected [100000, 512]"),
        "{}",
        status.message()
    );
    assert_eq!(loads("failed").await, 3.0);

    // A new version of "three" (the alias moves): loaded at once.
    register_raw(
        &c.store,
        "three",
        serde_json::to_value(spec(Head::Cam)).unwrap(),
        weights.clone(),
    )
    .await;
    let resp = c
        .client()
        .explain(request("three", one(), ExplainMethod::Cam))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_version, "three:2");
    let status = c
        .client()
        .explain(request("three:1", one(), ExplainMethod::Cam))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("remembered"),
        "{}",
        status.message()
    );

    // Not remembered: each request loads again.
    let forgetful = c
        .beside(Config {
            failed_load_retry_secs: 0,
            ..Config::default()
        })
        .await;
    for _ in 0..2 {
        let status = forgetful
            .client()
            .explain(request("three:1", one(), ExplainMethod::Cam))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
    assert_eq!(
        forgetful
            .metric(
                "camshaft_explainer_model_loads_total",
                &["result=\"failed\""]
            )
            .await,
        2.0
    );
    forgetful.stop().await;
    c.stop().await;
}
