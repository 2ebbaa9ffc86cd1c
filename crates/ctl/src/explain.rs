//! `ctl explain`: CAM overlays of local images from the explainer, one PNG
//! per image, and optionally the lecture's titled grid of them. With several
//! methods (`--method gradcam,layercam`), one folder of overlays per method
//! and a grid with a row per image and a column per method.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camshaft_proto::bytes::Bytes;
use camshaft_proto::security::AuthChannel;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::{
    Colormap, ExplainMethod, ExplainRequest, ExplainResponse, ExplanationRecipe,
    FaithfulnessBaseline, FaithfulnessMetric, GetModelRequest, ImageExplanation, ImageInput,
};
use camshaft_proto::{ErrorKind, ModelRef};

use crate::cli::ExplainArgs;
use crate::client::Servers;
use crate::console;
use crate::error::{AlreadyReported, CallError, EXIT_FAILED, InputError};

/// Most images sent in one Explain request.
pub const MAX_IMAGES_PER_REQUEST: usize = 64;

/// Most image bytes sent in one Explain request: well under
/// [`camshaft_proto::MAX_MESSAGE_BYTES`], leaving room for the rest of the message.
pub const MAX_BYTES_PER_REQUEST: usize = camshaft_proto::MAX_MESSAGE_BYTES * 3 / 4;

/// Times a request is retried when the explainer is busy or loading the model.
const BUSY_RETRIES: u32 = 5;

/// Output file names, one per input in order: `<file stem>.png`, or
/// `<stem>-<i>.png` (the smallest free `i` ≥ 1) when an earlier input took
/// the name. Names are compared ignoring ASCII case, so that no two files
/// collide on a case-insensitive file system either.
pub fn output_names(inputs: &[PathBuf]) -> Vec<String> {
    let mut taken = HashSet::new();
    inputs
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "image".to_string());
            let mut name = format!("{stem}.png");
            let mut i = 1;
            while !taken.insert(name.to_ascii_lowercase()) {
                name = format!("{stem}-{i}.png");
                i += 1;
            }
            name
        })
        .collect()
}

/// Splits images of these byte sizes, in order, into contiguous batches of at
/// most `max_images` images and `max_bytes` bytes (an image larger than
/// `max_bytes` goes alone, for the server to judge).
pub fn plan_batches(sizes: &[usize], max_images: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let max_images = max_images.max(1);
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start >= max_images || (i > start && bytes.saturating_add(size) > max_bytes);
        if full {
            batches.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    batches
}

/// The line printed for an explained image: `cat.jpg  predicted=cat  p=0.98  -> cams/cat.png`.
pub fn result_line(file: &str, result: &ImageExplanation, written: Option<&Path>) -> String {
    if !result.error.is_empty() {
        return format!("{file}  error: {}", result.error);
    }
    let (class, prob) = predicted(result);
    let mut line = format!("{file}  predicted={class}  p={prob:.2}");
    if let Some(target) = result.maps.first().map(|m| m.class_index)
        && target != result.predicted_class
    {
        line.push_str(&format!("  target={}", class_name(result, target)));
    }
    if let Some(score) = result.maps.first().and_then(|m| m.faithfulness) {
        line.push_str(&format!("  faithfulness={score:.3}"));
    }
    if let Some(path) = written {
        line.push_str(&format!("  -> {}", path.display()));
    }
    line
}

/// The `--json` line of an image's result.
fn json_line(
    file: &str,
    method: ExplainMethod,
    result: &ImageExplanation,
) -> anyhow::Result<String> {
    let result = camshaft_http::json::typed_to_json("camshaft.v1.ImageExplanation", result)
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(
        serde_json::json!({"file": file, "method": method.short_name(), "result": result})
            .to_string(),
    )
}

fn class_name(result: &ImageExplanation, index: i32) -> String {
    usize::try_from(index)
        .ok()
        .and_then(|i| result.class_names.get(i))
        .cloned()
        .unwrap_or_else(|| format!("class {index}"))
}

/// The predicted class's name and probability.
pub fn predicted(result: &ImageExplanation) -> (String, f32) {
    let prob = usize::try_from(result.predicted_class)
        .ok()
        .and_then(|i| result.probabilities.get(i))
        .copied()
        .unwrap_or(f32::NAN);
    (class_name(result, result.predicted_class), prob)
}

/// One image file as read from disk.
struct Input {
    path: PathBuf,
    data: Result<Bytes, String>,
}

/// Resolves `--target`: a class index, or a class name looked up in the
/// model's spec on the coordinator.
async fn resolve_target(
    servers: &Servers,
    model: &str,
    target: Option<&str>,
) -> anyhow::Result<Option<i32>> {
    let Some(target) = target else {
        return Ok(None);
    };
    if let Ok(index) = target.trim().parse::<i32>() {
        return Ok(Some(index));
    }
    let mut client = servers.coordinator().await?;
    let version = client
        .get_model(GetModelRequest {
            model: model.to_string(),
        })
        .await
        .map_err(CallError::wrap("coordinator", "GetModel"))?
        .into_inner()
        .version
        .unwrap_or_default();
    let names = version.spec.map(|s| s.class_names).unwrap_or_default();
    match names.iter().position(|n| n == target) {
        Some(i) => Ok(Some(i32::try_from(i)?)),
        None => Err(InputError::new(format!(
            "--target {target:?} is not a class of {model} (classes: {})",
            names.join(", ")
        ))
        .into()),
    }
}

/// Sends one request, retrying a while when the explainer is busy
/// (RESOURCE_EXHAUSTED, honouring `retry-after-ms`) or loading (UNAVAILABLE).
pub async fn explain_batch(
    client: &mut ExplainerClient<AuthChannel>,
    request: ExplainRequest,
) -> anyhow::Result<ExplainResponse> {
    let mut attempt = 0;
    loop {
        match client.explain(request.clone()).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status)
                if attempt < BUSY_RETRIES
                    && matches!(
                        ErrorKind::from_code(status.code()),
                        ErrorKind::ResourceExhausted | ErrorKind::Unavailable
                    ) =>
            {
                attempt += 1;
                let pause = camshaft_proto::retry_after(&status)
                    .unwrap_or(Duration::from_millis(250 << attempt))
                    .min(Duration::from_secs(5));
                tracing::info!(attempt, ?pause, code = ?status.code(), "explainer busy; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(status) => return Err(CallError::new("explainer", "Explain", &status).into()),
        }
    }
}

/// `ctl explain`.
pub async fn explain(servers: &Servers, args: ExplainArgs) -> anyhow::Result<()> {
    ModelRef::parse(&args.model).map_err(|e| InputError::new(e.to_string()))?;
    let bad = |e: camshaft_proto::Error| InputError::new(e.to_string());
    let methods = methods(&args.method)?;
    let faithfulness = match &args.faithfulness {
        Some(name) => FaithfulnessMetric::from_short_name(name).map_err(bad)?,
        None => FaithfulnessMetric::Unspecified,
    };
    let baseline = match &args.baseline {
        Some(name) => FaithfulnessBaseline::from_short_name(name).map_err(bad)?,
        None => FaithfulnessBaseline::Unspecified,
    };
    let colormap = match &args.colormap {
        Some(name) => Colormap::from_short_name(name).map_err(bad)?,
        None => Colormap::Unspecified,
    };
    if let Some(alpha) = args.alpha
        && !(0.0..=1.0).contains(&alpha)
    {
        return Err(InputError::new(format!("--alpha {alpha} is outside [0, 1]")).into());
    }
    if args.cols == 0 {
        return Err(InputError::new("--cols must be at least 1").into());
    }
    let target = resolve_target(servers, &args.model, args.target.as_deref()).await?;

    let inputs: Vec<Input> = args
        .images
        .iter()
        .map(|path| Input {
            path: path.clone(),
            data: std::fs::read(path)
                .map(Bytes::from)
                .map_err(|e| format!("cannot read: {e}")),
        })
        .collect();
    let names = output_names(&args.images);
    let sizes: Vec<usize> = inputs
        .iter()
        .map(|i| i.data.as_ref().map_or(0, Bytes::len))
        .collect();
    // One method: overlays straight in --out; several: a folder per method.
    let folders: Vec<PathBuf> = match &methods[..] {
        [_] => vec![args.out.clone()],
        _ => methods
            .iter()
            .map(|m| args.out.join(m.short_name()))
            .collect(),
    };
    for folder in &folders {
        std::fs::create_dir_all(folder).map_err(|e| {
            anyhow::anyhow!("cannot create the output folder {}: {e}", folder.display())
        })?;
    }

    let mut client = servers.explainer().await?;
    let mut failed = false;
    let mut panels = Vec::new();
    // The methods whose recipe (what ran) was printed.
    let mut announced: Vec<ExplainMethod> = Vec::new();
    for batch in plan_batches(&sizes, MAX_IMAGES_PER_REQUEST, MAX_BYTES_PER_REQUEST) {
        let images: Vec<ImageInput> = inputs[batch.clone()]
            .iter()
            .filter_map(|input| {
                let data = input.data.as_ref().ok()?;
                Some(ImageInput {
                    id: file_label(&input.path),
                    data: data.clone(),
                    target_class: target,
                })
            })
            .collect();
        // Per method, the results of this batch's readable images, in order.
        let mut answers = Vec::new();
        for &method in &methods {
            let results = if images.is_empty() {
                Vec::new()
            } else {
                let expected = images.len();
                let response = explain_batch(
                    &mut client,
                    ExplainRequest {
                        model: args.model.clone(),
                        images: images.clone(),
                        method: method.into(),
                        return_overlay: true,
                        top_k: args.top_k,
                        colormap: colormap.into(),
                        alpha: args.alpha,
                        faithfulness: faithfulness.into(),
                        faithfulness_baseline: baseline.into(),
                        target_layers: args.layers.clone(),
                        aug_smooth: args.aug_smooth,
                        ..Default::default()
                    },
                )
                .await?;
                if let Some(recipe) = &response.recipe
                    && !args.json
                    && !announced.contains(&method)
                {
                    announced.push(method);
                    console::line(recipe_line(recipe))?;
                }
                if response.results.len() != expected {
                    anyhow::bail!(
                        "the explainer answered {} results for {expected} images",
                        response.results.len()
                    );
                }
                response.results
            };
            answers.push(results.into_iter());
        }
        for index in batch {
            let input = &inputs[index];
            let shown = input.path.display().to_string();
            if let Err(reason) = &input.data {
                failed = true;
                console::line(format!("{shown}  error: {reason}"))?;
                continue;
            }
            for ((results, folder), &method) in answers.iter_mut().zip(&folders).zip(&methods) {
                let Some(result) = results.next() else {
                    anyhow::bail!("the explainer answered too few results");
                };
                if !result.error.is_empty() {
                    failed = true;
                    console::line(match args.json {
                        true => json_line(&shown, method, &result)?,
                        false => result_line(&shown, &result, None),
                    })?;
                    continue;
                }
                if result.overlay_png.is_empty() {
                    failed = true;
                    console::line(format!("{shown}  error: the explainer returned no overlay"))?;
                    continue;
                }
                let written = folder.join(&names[index]);
                std::fs::write(&written, &result.overlay_png)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", written.display()))?;
                if args.json {
                    console::line(json_line(&shown, method, &result)?)?;
                } else {
                    console::line(result_line(&shown, &result, Some(&written)))?;
                }
                if args.grid.is_some() {
                    let (class, prob) = predicted(&result);
                    let title = camshaft_render::format_title(&class, prob);
                    let title = match methods.len() {
                        1 => title,
                        _ => format!("{} {title}", method_label(method)),
                    };
                    panels.push((result.overlay_png.clone(), title));
                }
            }
        }
    }

    if let Some(grid_path) = &args.grid {
        if panels.is_empty() {
            eprintln!("no overlays to put in the grid {}", grid_path.display());
            failed = true;
        } else {
            let cols = match methods.len() {
                1 => args.cols,
                n => n as u32,
            };
            let path = grid_path.clone();
            tokio::task::spawn_blocking(move || save_grid(&panels, cols, &path)).await??;
            console::line(format!("grid -> {}", grid_path.display()))?;
        }
    }
    if failed {
        return Err(AlreadyReported { code: EXIT_FAILED }.into());
    }
    Ok(())
}

/// The methods of `--method a,b,...`, in order; none named: the server's
/// default (CAM where the head allows it).
fn methods(names: &[String]) -> Result<Vec<ExplainMethod>, InputError> {
    if names.is_empty() {
        return Ok(vec![ExplainMethod::Unspecified]);
    }
    let mut methods = Vec::new();
    for name in names {
        let method =
            ExplainMethod::from_short_name(name).map_err(|e| InputError::new(e.to_string()))?;
        if methods.contains(&method) {
            return Err(InputError::new(format!(
                "--method names {} twice",
                method.short_name()
            )));
        }
        methods.push(method);
    }
    Ok(methods)
}

/// A method's name in grid titles, as its paper spells it.
fn method_label(method: ExplainMethod) -> &'static str {
    match method {
        ExplainMethod::Unspecified => "default",
        ExplainMethod::Cam => "CAM",
        ExplainMethod::GradCam => "Grad-CAM",
        ExplainMethod::GradCamPlusPlus => "Grad-CAM++",
        ExplainMethod::XgradCam => "XGrad-CAM",
        ExplainMethod::LayerCam => "LayerCAM",
        ExplainMethod::HiresCam => "HiResCAM",
        ExplainMethod::ScoreCam => "Score-CAM",
    }
}

/// What the explainer ran, as one line: `explained with grad_cam at layer3
/// (fp32, baseline mean, aug_smooth)`.
pub fn recipe_line(recipe: &ExplanationRecipe) -> String {
    let method =
        ExplainMethod::try_from(recipe.method).map_or("unknown method", ExplainMethod::short_name);
    let mut extras = vec![recipe.precision.clone()];
    if let Ok(baseline) = FaithfulnessBaseline::try_from(recipe.faithfulness_baseline)
        && baseline != FaithfulnessBaseline::Unspecified
    {
        extras.push(format!("baseline {}", baseline.short_name()));
    }
    if recipe.aug_smooth {
        extras.push("aug_smooth".into());
    }
    format!(
        "explained with {method} at {} ({})",
        recipe.target_layers.join("+"),
        extras.join(", ")
    )
}

/// The id sent for an image: its file name.
fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Decodes the overlays and saves them as one titled grid.
fn save_grid(panels: &[(Bytes, String)], cols: u32, path: &Path) -> anyhow::Result<()> {
    let panels = panels
        .iter()
        .map(|(png, title)| {
            let image = image::load_from_memory(png)
                .map_err(|e| anyhow::anyhow!("cannot decode an overlay PNG: {e}"))?
                .to_rgb8();
            Ok(camshaft_render::Panel {
                image,
                title: title.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let grid = camshaft_render::grid(&panels, cols)?;
    camshaft_render::save_png(&grid, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_stems_and_clashes_get_numbers() {
        let inputs: Vec<PathBuf> = ["a/cat.jpg", "b/cat.png", "cat-1.jpg", "c/Cat.jpeg", "dog"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            output_names(&inputs),
            vec![
                "cat.png",
                "cat-1.png",
                "cat-1-1.png",
                "Cat-2.png",
                "dog.png"
            ]
        );
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        assert_eq!(plan_batches(&[1; 5], 2, 100), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            plan_batches(&[60, 60, 10, 200, 1], 64, 100),
            vec![0..1, 1..3, 3..4, 4..5]
        );
        assert_eq!(plan_batches(&[], 64, 100), Vec::<Range<usize>>::new());
        assert_eq!(plan_batches(&[0; 130], 64, 100).len(), 3);
    }

    #[test]
    fn methods_parse_in_order_and_once_each() {
        assert_eq!(methods(&[]).unwrap(), vec![ExplainMethod::Unspecified]);
        let names = ["LayerCAM", "grad-cam"].map(String::from);
        assert_eq!(
            methods(&names).unwrap(),
            vec![ExplainMethod::LayerCam, ExplainMethod::GradCam]
        );
        let twice = ["gradcam", "grad_cam"].map(String::from);
        assert!(methods(&twice).is_err());
        assert_eq!(
            methods(&["Score-CAM".to_string()]).unwrap(),
            vec![ExplainMethod::ScoreCam]
        );
        assert!(methods(&["eigencam".to_string()]).is_err());
    }

    #[test]
    fn the_recipe_line_says_what_ran() {
        let recipe = ExplanationRecipe {
            method: ExplainMethod::LayerCam as i32,
            target_layers: vec!["layer3".into(), "layer4".into()],
            precision: "bf16".into(),
            faithfulness_baseline: FaithfulnessBaseline::Mean as i32,
            aug_smooth: false,
        };
        assert_eq!(
            recipe_line(&recipe),
            "explained with layer_cam at layer3+layer4 (bf16, baseline mean)"
        );
    }

    #[test]
    fn result_lines() {
        let result = ImageExplanation {
            id: "x.jpg".into(),
            class_names: vec!["cat".into(), "dog".into()],
            probabilities: vec![0.981, 0.019],
            predicted_class: 0,
            ..Default::default()
        };
        assert_eq!(
            result_line("x.jpg", &result, Some(Path::new("cams/x.png"))),
            "x.jpg  predicted=cat  p=0.98  -> cams/x.png"
        );
        let bad = ImageExplanation {
            id: "y.jpg".into(),
            error: "not a PNG or JPEG".into(),
            ..Default::default()
        };
        assert_eq!(
            result_line("y.jpg", &bad, None),
            "y.jpg  error: not a PNG or JPEG"
        );
        assert_eq!(predicted(&result), ("cat".to_string(), 0.981));
    }
}
