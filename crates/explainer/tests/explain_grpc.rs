//! The explainer over real gRPC on loopback, with a real embedded store.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use camshaft_explainer::Config;
use camshaft_proto::v1::{ExplainMethod, ExplainRequest, FaithfulnessMetric, ImageErrorKind};
use camshaft_vision::{CamMethod, Head, Model};
use common::{Cluster, input, png, request, spec};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_a_corrupt_image_matches_the_library() {
    let mut c = Cluster::start(Config::default()).await;
    let weights = c.register("pets", Head::Cam).await;
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
    let mut model = Model::new(spec(Head::Cam), tch::Device::Cpu).unwrap();
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
            camshaft_data::ResizeMethod::Crop,
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
    c.register("pets", Head::Cam).await;
    c.register("fa", Head::Fastai).await;
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
    c.register("pets", Head::Cam).await;
    let one = || vec![input("x", png(64, 64, 5))];
    let resp = c
        .client
        .explain(request("pets@latest", one(), ExplainMethod::Cam))
        .await;
    assert_eq!(resp.unwrap().into_inner().model_version, "pets:1");
    c.register("pets", Head::Cam).await;
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
    c.register("pets", Head::Cam).await;
    let one = vec![input("x", png(64, 64, 5))];
    let resp = c
        .client
        .explain(request("pets@latest", one, ExplainMethod::Cam))
        .await;
    assert_eq!(resp.unwrap().into_inner().model_version, "pets:1");

    // Registering pets:2 moves `latest`; the explainer loads it unasked.
    c.register("pets", Head::Cam).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grad_cam_plus_plus_and_faithfulness_on_every_map() {
    let mut c = Cluster::start(Config::default()).await;
    c.register("fa", Head::Fastai).await;
    for metric in [
        FaithfulnessMetric::DeletionAuc,
        FaithfulnessMetric::AverageDrop,
    ] {
        let mut req = request(
            "fa",
            vec![input("a", png(96, 64, 1)), input("b", png(64, 64, 9))],
            ExplainMethod::GradCamPlusPlus,
        );
        req.top_k = Some(2);
        req.faithfulness = metric as i32;
        req.return_upsampled_maps = true;
        let resp = c.client.explain(req).await.unwrap().into_inner();
        for r in &resp.results {
            assert!(r.error.is_empty(), "{}", r.error);
            assert_eq!(r.maps.len(), 2);
            assert_ne!(r.maps[0].class_index, r.maps[1].class_index);
            assert_eq!(r.maps[0].class_index, r.predicted_class);
            for m in &r.maps {
                assert!(m.values.iter().all(|v| *v >= 0.0), "ReLU'd map");
                let score = m.faithfulness.unwrap();
                assert!((0.0..=1.0).contains(&score), "{metric:?} {score}");
            }
            assert!(r.upsampled_maps.iter().all(|m| m.faithfulness.is_none()));
        }
    }
    // Without a metric there are no scores.
    let resp = c
        .client
        .explain(request(
            "fa",
            vec![input("a", png(64, 64, 1))],
            ExplainMethod::GradCamPlusPlus,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.results[0].maps[0].faithfulness.is_none());
    let mut bad = request(
        "fa",
        vec![input("a", png(64, 64, 1))],
        ExplainMethod::GradCam,
    );
    bad.faithfulness = 7;
    let status = c.client.explain(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    c.stop().await;
}

/// `precision = "bf16"`: the same version served by a second server over the
/// same store gives CAM maps and logits within a few percent of float32's
/// (not equal: the convolutions really ran in bfloat16), while the head's
/// maths stay float32: a CAM map's mean is still its class's logit, and
/// Grad-CAM through the converted body is still ReLU(CAM) / (H·W), as it
/// must be for a pooled linear head. Faithfulness runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf16_serving_stays_close_to_fp32() {
    let mut fp32 = Cluster::start(Config::default()).await;
    fp32.register("pets", Head::Cam).await;
    let mut bf16 = fp32
        .beside(Config {
            precision: camshaft_vision::Precision::Bf16,
            ..Config::default()
        })
        .await;
    let images = vec![input("a", png(80, 64, 1)), input("b", png(64, 64, 2))];
    let cam = request("pets", images.clone(), ExplainMethod::Cam);
    let want = fp32.client.explain(cam.clone()).await.unwrap().into_inner();
    let got = bf16.client.explain(cam).await.unwrap().into_inner();
    let mut grad = request("pets", images, ExplainMethod::GradCam);
    grad.faithfulness = FaithfulnessMetric::DeletionAuc as i32;
    let grad = bf16.client.explain(grad).await.unwrap().into_inner();
    let mut moved = 0f32;
    for ((w, g), gc) in want.results.iter().zip(&got.results).zip(&grad.results) {
        assert!(
            g.error.is_empty() && gc.error.is_empty(),
            "{} {}",
            g.error,
            gc.error
        );
        let (wm, gm) = (&w.maps[0], &g.maps[0]);
        assert_eq!(wm.class_index, gm.class_index);
        let scale = wm.values.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in wm.values.iter().zip(&gm.values) {
            assert!(
                (a - b).abs() <= 0.08 * scale,
                "CAM {a} vs {b} (largest {scale})"
            );
            moved = moved.max((a - b).abs());
        }
        let scale = w.logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in w.logits.iter().zip(&g.logits) {
            assert!((a - b).abs() <= 0.05 * scale, "logits {a} vs {b}");
        }
        let mean = gm.values.iter().sum::<f32>() / gm.values.len() as f32;
        assert!((mean - g.logits[gm.class_index as usize]).abs() < 1e-4);
        let gcm = &gc.maps[0];
        assert_eq!(gcm.class_index, gm.class_index);
        assert!(gcm.faithfulness.is_some_and(|f| (0.0..=1.0).contains(&f)));
        let cells = gm.values.len() as f32;
        for (c, gv) in gm.values.iter().zip(&gcm.values) {
            assert!(
                (c.max(0.0) / cells - gv).abs() < 1e-5,
                "Grad-CAM {gv} vs CAM {c}"
            );
        }
    }
    assert!(moved > 0.0, "bf16 gave float32's maps bit for bit");
    bf16.stop().await;
    fp32.stop().await;
}

/// Eight single-image requests, sent at once, wait for each other (the pass
/// closes only when full) and are split by method inside the pass; each
/// answer must be bit-for-bit the answer the request gets alone from a
/// server that never batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_exactly_the_maps_they_get_alone() {
    let batching = Config {
        max_batch: 8,
        max_batch_wait_ms: 600_000,
        ..Config::default()
    };
    let c = Cluster::start(batching).await;
    c.register("pets", Head::Cam).await;
    // Two replicas: whichever answers, the weights and the maths are the same.
    let alone = c
        .beside(Config {
            max_batch_wait_ms: 0,
            model_replicas: 2,
            ..Config::default()
        })
        .await;
    let requests: Vec<ExplainRequest> = (0..8u8)
        .map(|i| {
            let method = [
                ExplainMethod::Cam,
                ExplainMethod::GradCam,
                ExplainMethod::GradCamPlusPlus,
            ][usize::from(i % 3)];
            let mut img = input(&format!("img{i}"), png(64 + u32::from(i) * 8, 64, i * 31));
            if i % 4 == 1 {
                img.target_class = Some(1);
            }
            let mut req = request("pets", vec![img], method);
            req.top_k = Some(1 + u32::from(i % 2));
            if i == 5 {
                req.faithfulness = FaithfulnessMetric::AverageDrop as i32;
            }
            req
        })
        .collect();
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|req| {
            let mut client = c.client();
            tokio::spawn(async move { client.explain(req).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut together = Vec::new();
    for t in tasks {
        together.push(t.await.unwrap().unwrap());
    }
    // One pass of eight images, computed as three (one per method).
    assert_eq!(
        c.metric("camshaft_explainer_batch_size_count", &[]).await,
        3.0
    );
    assert_eq!(
        c.metric("camshaft_explainer_batch_size_sum", &[]).await,
        8.0
    );
    let mut client = alone.client();
    for (req, got) in requests.into_iter().zip(&together) {
        let single = client.explain(req).await.unwrap().into_inner();
        assert!(got.results[0].error.is_empty(), "{}", got.results[0].error);
        assert_eq!(&single, got, "batched and alone differ");
    }
    assert_eq!(
        alone
            .metric("camshaft_explainer_batch_size_count", &[])
            .await,
        8.0
    );
    alone.stop().await;
    c.stop().await;
}

/// A full queue refuses with RESOURCE_EXHAUSTED and a retry hint; images
/// whose deadline passes while queued are dropped before any compute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_expired_images_are_dropped() {
    let config = Config {
        max_images_per_request: 2,
        max_queued_images: 2,
        max_batch: 4,
        max_batch_wait_ms: 600_000,
        ..Config::default()
    };
    let c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;
    let two = request(
        "pets",
        vec![input("a", png(64, 64, 1)), input("b", png(64, 64, 2))],
        ExplainMethod::Cam,
    );
    let mut first = tonic::Request::new(two);
    first.set_timeout(std::time::Duration::from_secs(15));
    let mut client = c.client();
    let waiting = tokio::spawn(async move { client.explain(first).await });
    // Wait until both images are admitted (they wait for a pass of four).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while c.metric("camshaft_explainer_queued_images", &[]).await < 2.0 {
        assert!(std::time::Instant::now() < until, "never queued");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut one = tonic::Request::new(request(
        "pets",
        vec![input("c", png(64, 64, 3))],
        ExplainMethod::Cam,
    ));
    one.set_timeout(std::time::Duration::from_secs(30));
    let refused = c.client().explain(one).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let hint = camshaft_proto::retry_after(&refused).expect("retry-after-ms metadata");
    assert!(hint > std::time::Duration::ZERO);
    assert!(
        refused.message().contains("2 images queued"),
        "{}",
        refused.message()
    );

    let late = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(late.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{late:?}"
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while c
        .metric("camshaft_explainer_images_dropped_total", &[])
        .await
        < 2.0
    {
        assert!(std::time::Instant::now() < until, "never dropped");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(c.metric("camshaft_explainer_batches_total", &[]).await, 0.0);
    assert_eq!(c.metric("camshaft_explainer_queued_images", &[]).await, 0.0);
    let text = c.scrape().await;
    assert_eq!(
        common::metric_value(
            &text,
            "camshaft_explainer_requests_total",
            &["code=\"RESOURCE_EXHAUSTED\"", "rpc=\"Explain\""]
        ),
        1.0,
        "{text}"
    );
    assert!(text.contains("# TYPE camshaft_explainer_request_duration_seconds histogram"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stops_at_its_first_failed_request() {
    let mut c = Cluster::start(Config::default()).await;
    c.register("pets", Head::Cam).await;
    let requests: Vec<ExplainRequest> = ["pets", "pets:1", "nobody", "pets"]
        .iter()
        .enumerate()
        .map(|(i, m)| ExplainRequest {
            request_id: format!("r{i}"),
            ..request(
                m,
                vec![input("x", png(64, 64, i as u8))],
                ExplainMethod::Cam,
            )
        })
        .collect();
    let mut stream = c
        .client
        .explain_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(resp)) => ids.push(resp.request_id),
            Ok(None) => panic!("the stream ended without the error"),
            Err(status) => break status,
        }
    };
    assert_eq!(ids, ["r0", "r1"]);
    assert_eq!(status.code(), Code::NotFound);
    c.stop().await;
}

/// The requests of one stream are explained concurrently: four one-image
/// requests can only finish if they share one pass of four (the pass would
/// otherwise wait ten minutes for more images).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_requests_share_passes() {
    let config = Config {
        max_batch: 4,
        max_batch_wait_ms: 600_000,
        ..Config::default()
    };
    let c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;
    let requests: Vec<ExplainRequest> = (0..4u8)
        .map(|i| ExplainRequest {
            request_id: format!("r{i}"),
            ..request("pets", vec![input("x", png(64, 64, i))], ExplainMethod::Cam)
        })
        .collect();
    let mut call = tonic::Request::new(tokio_stream::iter(requests));
    call.set_timeout(std::time::Duration::from_secs(120));
    let mut stream = c.client().explain_stream(call).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(resp) = stream.message().await.unwrap() {
        assert!(resp.results[0].error.is_empty());
        ids.push(resp.request_id);
    }
    assert_eq!(ids, ["r0", "r1", "r2", "r3"]);
    assert_eq!(c.metric("camshaft_explainer_batches_total", &[]).await, 1.0);
    c.stop().await;
}

/// A version is explained with the resize it records (what its job
/// validated with), not always with a centre crop: a wide image gives the
/// logits the model gives the image resized that way, as
/// `camshaft_vision::cam::preprocess` (the validation transform) does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_is_explained_with_the_resize_it_records() {
    use camshaft_data::ResizeMethod;
    let c = Cluster::start(Config::default()).await;
    let spec = spec(Head::Cam);
    let model = Model::new(spec.clone(), tch::Device::Cpu).unwrap();
    let weights = c.register_model("cropped", &model).await;
    for (name, resize) in [("squished", "squish"), ("padded", "pad")] {
        let mut json = serde_json::to_value(&spec).unwrap();
        json["resize"] = resize.into();
        common::register_raw(&c.store, name, json, weights.clone()).await;
    }
    let wide = png(96, 40, 7);
    let decoded = camshaft_data::decode_image(&wide, "wide", &Default::default()).unwrap();
    let mut logits = Vec::new();
    for (name, resize) in [
        ("cropped", ResizeMethod::Crop),
        ("squished", ResizeMethod::Squish),
        ("padded", ResizeMethod::Pad),
    ] {
        let answer = c
            .client()
            .explain(request(
                name,
                vec![input("wide", wide.clone())],
                ExplainMethod::Cam,
            ))
            .await
            .unwrap()
            .into_inner();
        let served = &answer.results[0];
        assert!(served.error.is_empty(), "{}", served.error);
        let direct = camshaft_vision::cam::explain(
            &model,
            std::slice::from_ref(&decoded),
            CamMethod::Cam,
            &[None],
            resize,
        )
        .unwrap();
        for (a, b) in served.probabilities.iter().zip(&direct[0].probabilities) {
            assert!((a - b).abs() <= 1e-5, "{name}: {a} vs {b}");
        }
        logits.push(served.logits.clone());
    }
    assert_ne!(logits[0], logits[1], "crop and squish see other pixels");
    assert_ne!(logits[1], logits[2], "squish and pad see other pixels");
    c.stop().await;
}
