//! Every method and the faithfulness scores through the real
//! gRPC explainer against references computed at test time with the
//! `.venv`'s PyTorch (`tests/reference/cam_methods.py`: pytorch-grad-cam's
//! formulas, explainer.proto's faithfulness definitions): at the last
//! layer, at `layer3`, fused over two layers (TorchCAM's formula), Score-CAM,
//! `aug_smooth`, ROAD and the explicit faithfulness baselines.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use camshaft_explainer::Config;
use camshaft_proto::v1::{
    ExplainMethod, ExplainRequest, ExplainResponse, FaithfulnessBaseline, FaithfulnessMetric,
    ImageExplanation,
};
use camshaft_vision::{Arch, Head, HeadPolicy, Model, ModelSpec, Normalization};
use common::{Cluster, input, request};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CAMSHAFT_PYTHON") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

/// Smooth, distinct 128×128 images, so maps and deletion curves are not flat.
fn picture(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(128, 128, |x, y| {
        let (fx, fy) = (x as f32 / 128.0, y as f32 / 128.0);
        let s = seed as f32;
        let blob = (-((fx - 0.3 - 0.1 * s).powi(2) + (fy - 0.6 + 0.1 * s).powi(2)) * 20.0).exp();
        image::Rgb([
            (255.0 * blob) as u8,
            (128.0 + 100.0 * (fx * 9.0 + s).sin()) as u8,
            (128.0 + 100.0 * (fy * 7.0 - s).cos()) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn close(ours: &[f32], theirs: &[f64], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    for (a, b) in ours.iter().zip(theirs) {
        let diff = (f64::from(*a) - b).abs();
        assert!(
            diff <= 1e-4 * scale + 1e-6,
            "{what}: {a} vs {b} (scale {scale})\nours {ours:?}\ntheirs {theirs:?}"
        );
    }
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_and_faithfulness_match_pytorch() {
    let mut c = Cluster::start(Config::default()).await;
    let dir = c.dir.path().to_path_buf();
    let images: Vec<Vec<u8>> = (0..3).map(picture).collect();
    let paths: Vec<PathBuf> = images
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let p = dir.join(format!("img{i}.png"));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    for (head_name, head) in [("cam", Head::Cam), ("fastai", Head::Fastai)] {
        let out = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/cam_methods.py"))
            .arg(head_name)
            .arg(&dir)
            .args(&paths)
            .output()
            .expect("run the .venv python (scripts/setup creates it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spec = ModelSpec {
            arch: Arch::Resnet18,
            head,
            class_names: vec!["cat".into(), "dog".into()],
            input_size: 128,
            normalization: Normalization::Imagenet,
        };
        let mut model = Model::new(spec, tch::Device::Cpu).unwrap();
        camshaft_vision::import_weights(
            &mut model,
            &dir.join(format!("{head_name}.pth")),
            HeadPolicy::Require,
        )
        .unwrap();
        c.register_model(head_name, &model).await;
        let reference: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{head_name}.json"))).unwrap())
                .unwrap();

        let mut methods = vec![
            (ExplainMethod::GradCam, "grad_cam"),
            (ExplainMethod::GradCamPlusPlus, "grad_cam_plus_plus"),
            (ExplainMethod::XgradCam, "xgrad_cam"),
            (ExplainMethod::LayerCam, "layer_cam"),
            (ExplainMethod::HiresCam, "hires_cam"),
        ];
        if head == Head::Cam {
            methods.push((ExplainMethod::Cam, "cam"));
        }
        // The references tell the methods apart: no map is all zero, and
        // behind the fastai head (whose max pool makes the gradient vary
        // over positions) no two methods give the same maps.
        let maps =
            |key: &str| -> Vec<f64> { reference.iter().flat_map(|e| numbers(&e[key])).collect() };
        for (i, &(_, key)) in methods.iter().enumerate() {
            assert!(
                maps(key).iter().any(|&v| v > 1e-6),
                "{head_name} {key}: all zero"
            );
            if head == Head::Fastai {
                for &(_, other) in &methods[..i] {
                    let differ = maps(key)
                        .iter()
                        .zip(maps(other))
                        .any(|(a, b)| (a - b).abs() > 1e-3 * a.abs().max(b.abs()));
                    assert!(differ, "{head_name}: {key} and {other} agree");
                }
            }
        }
        let ask = |method, metric: FaithfulnessMetric| {
            let mut req = request(
                head_name,
                images
                    .iter()
                    .enumerate()
                    .map(|(i, b)| input(&i.to_string(), b.clone()))
                    .collect(),
                method,
            );
            req.faithfulness = metric as i32;
            req
        };
        for (method, key) in methods {
            let metric = if method == ExplainMethod::GradCamPlusPlus {
                FaithfulnessMetric::DeletionAuc
            } else {
                FaithfulnessMetric::Unspecified
            };
            let resp = c
                .client
                .explain(ask(method, metric))
                .await
                .unwrap()
                .into_inner();
            for (r, expected) in resp.results.iter().zip(&reference) {
                let what = format!("{head_name} {key} image {}", r.id);
                assert!(r.error.is_empty(), "{what}: {}", r.error);
                close(
                    &r.logits,
                    &numbers(&expected["logits"]),
                    &format!("{what} logits"),
                );
                assert_eq!(
                    i64::from(r.maps[0].class_index),
                    expected["class"].as_i64().unwrap()
                );
                assert_eq!((r.maps[0].height, r.maps[0].width), (4, 4));
                close(&r.maps[0].values, &numbers(&expected[key]), &what);
                if metric == FaithfulnessMetric::DeletionAuc {
                    deletion_close(r, &expected["deletion_auc"], &what);
                }
            }
        }
        let resp = c
            .client
            .explain(ask(
                ExplainMethod::GradCamPlusPlus,
                FaithfulnessMetric::AverageDrop,
            ))
            .await
            .unwrap()
            .into_inner();
        for (r, expected) in resp.results.iter().zip(&reference) {
            let ours = r.maps[0].faithfulness.unwrap();
            let theirs = expected["average_drop"].as_f64().unwrap();
            assert!(
                (f64::from(ours) - theirs).abs() <= 1e-3,
                "{head_name} average drop {ours} vs {theirs}"
            );
        }
        issue_19_references(&mut c, head_name, head, &images, &reference).await;
    }
    c.stop().await;
}

async fn send(c: &mut Cluster, req: ExplainRequest) -> ExplainResponse {
    c.client.explain(req).await.unwrap().into_inner()
}

/// Layers, fusion, Score-CAM, aug_smooth, ROAD and baselines against the
/// reference, and the recipe each answer names.
async fn issue_19_references(
    c: &mut Cluster,
    head_name: &str,
    head: Head,
    images: &[Vec<u8>],
    reference: &[serde_json::Value],
) {
    let ask = |method: ExplainMethod, layers: &[&str], n: usize| {
        let mut req = request(
            head_name,
            images[..n]
                .iter()
                .enumerate()
                .map(|(i, b)| input(&i.to_string(), b.clone()))
                .collect(),
            method,
        );
        req.target_layers = layers.iter().map(|l| l.to_string()).collect();
        req
    };
    let check = |resp: &ExplainResponse, key: &str, side: i32| {
        for (r, expected) in resp.results.iter().zip(reference) {
            let what = format!("{head_name} {key} image {}", r.id);
            assert!(r.error.is_empty(), "{what}: {}", r.error);
            assert_eq!((r.maps[0].height, r.maps[0].width), (side, side), "{what}");
            close(&r.maps[0].values, &numbers(&expected[key]), &what);
        }
    };
    // Every gradient method at layer3: 8x8 maps at 128 px.
    for (method, key) in [
        (ExplainMethod::GradCam, "grad_cam"),
        (ExplainMethod::GradCamPlusPlus, "grad_cam_plus_plus"),
        (ExplainMethod::XgradCam, "xgrad_cam"),
        (ExplainMethod::LayerCam, "layer_cam"),
        (ExplainMethod::HiresCam, "hires_cam"),
    ] {
        let resp = send(c, ask(method, &["layer3"], 3)).await;
        check(&resp, &format!("layer3_{key}"), 8);
        let recipe = resp.recipe.unwrap();
        assert_eq!(recipe.method, method as i32);
        assert_eq!(recipe.target_layers, ["layer3"]);
        assert_eq!(recipe.precision, "fp32");
        assert!(!recipe.aug_smooth);
        assert_eq!(recipe.faithfulness_baseline, 0, "no score asked");
    }
    // Unspecified at layer3: Grad-CAM (CAM needs the last layer), named.
    let resp = send(c, ask(ExplainMethod::Unspecified, &["layer3"], 3)).await;
    check(&resp, "layer3_grad_cam", 8);
    assert_eq!(resp.recipe.unwrap().method, ExplainMethod::GradCam as i32);
    let resp = send(c, ask(ExplainMethod::Unspecified, &[], 1)).await;
    let expected = if head == Head::Cam {
        ExplainMethod::Cam
    } else {
        ExplainMethod::GradCam
    };
    let recipe = resp.recipe.unwrap();
    assert_eq!(recipe.method, expected as i32, "{head_name}");
    assert_eq!(recipe.target_layers, ["layer4"]);
    // LayerCAM fused over layer3 and layer4 as TorchCAM does, in any order.
    let resp = send(c, ask(ExplainMethod::LayerCam, &["layer4", "layer3"], 3)).await;
    check(&resp, "fused_layer_cam", 8);
    assert_eq!(resp.recipe.unwrap().target_layers, ["layer3", "layer4"]);
    // Score-CAM of the first image (a pass per channel): at layer4 behind
    // the CAM head, at layer3 behind the fastai one.
    if head == Head::Cam {
        let resp = send(c, ask(ExplainMethod::ScoreCam, &[], 1)).await;
        check(&resp, "score_cam", 4);
        assert_eq!(resp.recipe.unwrap().method, ExplainMethod::ScoreCam as i32);
    } else {
        let resp = send(c, ask(ExplainMethod::ScoreCam, &["layer3"], 1)).await;
        check(&resp, "layer3_score_cam", 8);
    }
    // aug_smooth Grad-CAM: pytorch-grad-cam's six augmentations.
    let mut req = ask(ExplainMethod::GradCam, &[], 3);
    req.aug_smooth = true;
    let resp = send(c, req).await;
    check(&resp, "aug_grad_cam", 4);
    assert!(resp.recipe.unwrap().aug_smooth);
    // ROAD, deletion with a black baseline, average drop with a blur one,
    // of the Grad-CAM++ map.
    // ROAD and the blurred drop move the random models' probabilities
    // by 1e-5 to 1e-3: checked relative to their size.
    for (metric, baseline, key, absolute, relative) in [
        (
            FaithfulnessMetric::Road,
            FaithfulnessBaseline::Unspecified,
            "road",
            1e-6,
            0.05,
        ),
        (
            FaithfulnessMetric::DeletionAuc,
            FaithfulnessBaseline::Black,
            "deletion_auc_black",
            2e-3,
            0.0,
        ),
        (
            FaithfulnessMetric::AverageDrop,
            FaithfulnessBaseline::Blur,
            "average_drop_blur",
            1e-6,
            0.05,
        ),
    ] {
        let mut req = ask(ExplainMethod::GradCamPlusPlus, &[], 3);
        req.faithfulness = metric as i32;
        req.faithfulness_baseline = baseline as i32;
        let resp = send(c, req).await;
        for (r, expected) in resp.results.iter().zip(reference) {
            let ours = f64::from(r.maps[0].faithfulness.unwrap());
            let theirs = expected[key].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= absolute + relative * theirs.abs(),
                "{head_name} {key} image {}: {ours} vs {theirs}",
                r.id
            );
        }
        let named = resp.recipe.unwrap().faithfulness_baseline;
        assert_eq!(named, baseline as i32, "{key}: the baseline used is named");
    }
    // The default baseline is named: mean, for every model.
    let mut req = ask(ExplainMethod::GradCamPlusPlus, &[], 1);
    req.faithfulness = FaithfulnessMetric::DeletionAuc as i32;
    let resp = send(c, req).await;
    assert_eq!(
        resp.recipe.unwrap().faithfulness_baseline,
        FaithfulnessBaseline::Mean as i32
    );
}

/// The deletion AUC can differ a little more: maps that agree to 1e-6 can
/// order two nearly equal pixels differently.
fn deletion_close(r: &ImageExplanation, expected: &serde_json::Value, what: &str) {
    let ours = r.maps[0].faithfulness.unwrap();
    let theirs = expected.as_f64().unwrap();
    assert!(
        (f64::from(ours) - theirs).abs() <= 2e-3,
        "{what}: deletion AUC {ours} vs {theirs}"
    );
}
