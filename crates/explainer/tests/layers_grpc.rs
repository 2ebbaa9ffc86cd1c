//! Issue 19's explanation options through the real gRPC explainer: target
//! layers (names, resolution, refusals with a field violation), the recipe
//! every answer names, Score-CAM's cost at admission, and the CNN's layers.
//! The numbers themselves are checked against PyTorch in
//! `methods_reference.rs`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use camshaft_explainer::Config;
use camshaft_proto::v1::{ExplainMethod, ExplainRequest, FaithfulnessBaseline, FaithfulnessMetric};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization};
use common::{Cluster, input, png, request};
use tonic::Code;

fn ask(model: &str, method: ExplainMethod, layers: &[&str]) -> ExplainRequest {
    let mut req = request(model, vec![input("a", png(64, 64, 3))], method);
    req.target_layers = layers.iter().map(|l| l.to_string()).collect();
    req
}

/// The status of a refused request: its code, message and field violations.
async fn refused(c: &mut Cluster, req: ExplainRequest) -> (Code, String, Vec<String>) {
    let status = c.client.explain(req).await.unwrap_err();
    let fields = camshaft_proto::field_violations(&status)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    (status.code(), status.message().to_string(), fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_are_named_checked_and_reported() {
    let mut c = Cluster::start(Config::default()).await;
    c.register("cam", Head::Cam).await;
    c.register("fastai", Head::Fastai).await;

    // Each layer's resolution at 64 px, named in the answer.
    for (layer, side) in [("layer1", 16), ("layer2", 8), ("layer3", 4), ("layer4", 2)] {
        let resp = c
            .client
            .explain(ask("fastai", ExplainMethod::GradCam, &[layer]))
            .await
            .unwrap()
            .into_inner();
        let r = &resp.results[0];
        assert!(r.error.is_empty(), "{layer}: {}", r.error);
        assert_eq!((r.maps[0].height, r.maps[0].width), (side, side), "{layer}");
        let recipe = resp.recipe.unwrap();
        assert_eq!(recipe.target_layers, [layer]);
        assert_eq!(recipe.method, ExplainMethod::GradCam as i32);
        assert_eq!(recipe.precision, "fp32");
    }
    // Fused at the finest layer's resolution.
    let resp = c
        .client
        .explain(ask(
            "fastai",
            ExplainMethod::LayerCam,
            &["layer4", "layer2"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results[0].maps[0].height, 8);
    assert_eq!(resp.recipe.unwrap().target_layers, ["layer2", "layer4"]);

    // Unknown names list the valid ones, with a field violation.
    let (code, message, fields) =
        refused(&mut c, ask("fastai", ExplainMethod::GradCam, &["layer5"])).await;
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(fields, ["target_layers"]);
    assert!(
        message.contains("layer1, layer2, layer3, layer4"),
        "{message}"
    );
    let (code, _, fields) = refused(
        &mut c,
        ask("fastai", ExplainMethod::GradCam, &["layer3", "layer3"]),
    )
    .await;
    assert_eq!(
        (code, fields.as_slice()),
        (Code::InvalidArgument, &["target_layers".to_string()][..])
    );
    let five = ["layer1", "layer2", "layer3", "layer4", "layer1"];
    let (code, message, _) = refused(&mut c, ask("fastai", ExplainMethod::GradCam, &five)).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("over the limit of 4"), "{message}");

    // CAM only at the last layer, never smoothed; unset picks Grad-CAM there.
    let (code, message, fields) =
        refused(&mut c, ask("cam", ExplainMethod::Cam, &["layer3"])).await;
    assert_eq!(
        (code, fields.as_slice()),
        (Code::InvalidArgument, &["target_layers".to_string()][..])
    );
    assert!(message.contains("last layer (layer4)"), "{message}");
    let mut smooth = ask("cam", ExplainMethod::Cam, &[]);
    smooth.aug_smooth = true;
    let (code, _, fields) = refused(&mut c, smooth).await;
    assert_eq!(
        (code, fields.as_slice()),
        (Code::InvalidArgument, &["aug_smooth".to_string()][..])
    );
    for (layers, smooth, method) in [
        (&[][..], false, ExplainMethod::Cam),
        (&["layer3"][..], false, ExplainMethod::GradCam),
        (&[][..], true, ExplainMethod::GradCam),
    ] {
        let mut req = ask("cam", ExplainMethod::Unspecified, layers);
        req.aug_smooth = smooth;
        let resp = c.client.explain(req).await.unwrap().into_inner();
        let recipe = resp.recipe.unwrap();
        assert_eq!(recipe.method, method as i32, "{layers:?} smooth {smooth}");
        assert_eq!(recipe.aug_smooth, smooth);
        if smooth {
            let values = &resp.results[0].maps[0].values;
            assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{values:?}");
        }
    }

    // An unknown baseline is refused; a known one is named (not for ROAD).
    let mut req = ask("fastai", ExplainMethod::GradCam, &[]);
    req.faithfulness = FaithfulnessMetric::DeletionAuc as i32;
    req.faithfulness_baseline = 9;
    let (code, _, fields) = refused(&mut c, req.clone()).await;
    assert_eq!(
        (code, fields.as_slice()),
        (
            Code::InvalidArgument,
            &["faithfulness_baseline".to_string()][..]
        )
    );
    req.faithfulness_baseline = FaithfulnessBaseline::Blur as i32;
    let resp = c.client.explain(req.clone()).await.unwrap().into_inner();
    assert!(resp.results[0].maps[0].faithfulness.is_some());
    assert_eq!(
        resp.recipe.unwrap().faithfulness_baseline,
        FaithfulnessBaseline::Blur as i32
    );
    req.faithfulness = FaithfulnessMetric::Road as i32;
    let resp = c.client.explain(req).await.unwrap().into_inner();
    let road = resp.results[0].maps[0].faithfulness.unwrap();
    assert!((-1.0..=1.0).contains(&road), "{road}");
    assert_eq!(resp.recipe.unwrap().faithfulness_baseline, 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_cam_pays_a_pass_per_channel_at_admission() {
    let mut c = Cluster::start(Config::default()).await;
    c.register("fastai", Head::Fastai).await;
    // layer4: 512 channels + the body = 513 units an image: one fits the
    // default 1024 a request, two do not.
    let mut two = ask("fastai", ExplainMethod::ScoreCam, &[]);
    two.images.push(input("b", png(64, 64, 4)));
    let (code, message, _) = refused(&mut c, two).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("1026 compute units") && message.contains("max_compute_units_per_request"),
        "{message}"
    );
    // Smoothing multiplies the maps' pass by six: 40 images with deletion
    // AUC cost 40 × (1 + 21) = 880 units, smoothed 40 × (6 + 21) = 1080.
    let mut many = request(
        "fastai",
        (0..40)
            .map(|i| input(&i.to_string(), png(64, 64, i as u8)))
            .collect(),
        ExplainMethod::GradCam,
    );
    many.faithfulness = FaithfulnessMetric::DeletionAuc as i32;
    assert!(c.client.explain(many.clone()).await.is_ok());
    many.aug_smooth = true;
    let (code, message, _) = refused(&mut c, many).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("1080 compute units"), "{message}");
    // layer2: 128 channels: admitted, and a map with no negative value.
    let resp = c
        .client
        .explain(ask("fastai", ExplainMethod::ScoreCam, &["layer2"]))
        .await
        .unwrap()
        .into_inner();
    let map = &resp.results[0].maps[0];
    assert_eq!((map.height, map.width), (8, 8));
    assert!(map.values.iter().all(|&v| v >= 0.0) && map.values.iter().any(|&v| v > 0.0));
    assert_eq!(resp.recipe.unwrap().method, ExplainMethod::ScoreCam as i32);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cnn_names_its_sequential_indices() {
    let mut c = Cluster::start(Config::default()).await;
    tch::manual_seed(4);
    let spec = ModelSpec {
        arch: Arch::Cnn,
        head: Head::Linear,
        class_names: vec!["a".into(), "b".into()],
        input_size: 32,
        normalization: Normalization::None,
    };
    let model = Model::new(spec, tch::Device::Cpu).unwrap();
    c.register_model("cnn", &model).await;
    let mut req = ask("cnn", ExplainMethod::Unspecified, &[]);
    req.images = vec![input("a", png(32, 32, 1))];
    let resp = c.client.explain(req.clone()).await.unwrap().into_inner();
    let recipe = resp.recipe.unwrap();
    assert_eq!(recipe.target_layers, ["2"]);
    assert_eq!(
        recipe.method,
        ExplainMethod::GradCam as i32,
        "a flatten head"
    );
    assert_eq!(resp.results[0].maps[0].height, 14);
    req.target_layers = vec!["0".into()];
    let resp = c.client.explain(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        resp.results[0].maps[0].height, 28,
        "the convolution's output"
    );
    req.target_layers = vec!["layer4".into()];
    let (code, message, _) = refused(&mut c, req).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("0, 1, 2"), "{message}");
    c.stop().await;
}
