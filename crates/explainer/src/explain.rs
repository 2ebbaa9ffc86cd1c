//! The explain logic, free of gRPC transport: validate a request, resolve and
//! load the model version, decode images on blocking threads, run one forward
//! pass (per `max_batch` images) on a blocking thread, build the response.

use std::sync::Arc;
use std::time::Instant;

use camshaft_data::{DecodeLimits, ResizeMethod, RgbImage};
use camshaft_proto::v1::{
    ClassMap, Colormap as WireColormap, ExplainMethod, ExplainRequest, ExplainResponse,
    FaithfulnessMetric, ImageErrorKind, ImageExplanation,
};
use camshaft_render::{ActivationMap, Colormap, OverlayOptions};
use camshaft_store::Store;
use camshaft_vision::{CamMethod, Model, cam};
use tch::{Kind, Tensor};

use crate::models::{LoadedModel, ModelCache};
use crate::{Config, Error, Result};

/// How images are resized to the model's input size: the validation
/// preprocessing (the largest centred square, scaled).
pub const RESIZE: ResizeMethod = ResizeMethod::Crop;

/// Answers `ExplainRequest`s; shared by every call of the service.
pub struct ExplainEngine {
    max_images: usize,
    max_batch: usize,
    limits: DecodeLimits,
    cache: ModelCache,
    started_unix_ms: i64,
}

/// The options of one request, checked.
#[derive(Clone, Copy, Debug)]
struct Options {
    method: CamMethod,
    top_k: usize,
    overlay: Option<OverlayOptions>,
    upsampled: bool,
}

/// One image that decoded and whose target is in range.
struct GoodImage {
    index: usize,
    image: RgbImage,
    target: Option<i64>,
}

impl ExplainEngine {
    /// An engine with `config`'s limits, loading models from `store` onto
    /// `device`.
    pub fn new(config: &Config, store: Arc<dyn Store>, device: tch::Device) -> Self {
        ExplainEngine {
            max_images: config.max_images_per_request,
            max_batch: config.max_batch.max(1),
            limits: DecodeLimits {
                max_pixels: config.max_image_pixels,
                max_bytes: config.max_image_bytes,
            },
            cache: ModelCache::new(store, device, config.model_cache_size),
            started_unix_ms: camshaft_proto::now_unix_ms(),
        }
    }

    /// The loaded model versions.
    pub fn cache(&self) -> &ModelCache {
        &self.cache
    }

    /// When the engine was created (ms since the Unix epoch).
    pub fn started_unix_ms(&self) -> i64 {
        self.started_unix_ms
    }

    /// Explains one request (see the crate doc for the contract).
    pub async fn explain(&self, request: ExplainRequest) -> Result<ExplainResponse> {
        let started = Instant::now();
        let n = request.images.len();
        if n > self.max_images {
            return Err(Error::InvalidRequest(format!(
                "{n} images in one request, over the limit of {}; split them over several requests (ExplainStream)",
                self.max_images
            )));
        }
        let reference = camshaft_proto::ModelRef::parse(&request.model)
            .map_err(|e| Error::BadModelRef(e.to_string()))?;
        let store_ref = match &reference.selector {
            camshaft_proto::VersionSelector::Latest => camshaft_store::ModelRef::Alias(
                reference.name.clone(),
                camshaft_proto::LATEST_ALIAS.to_string(),
            ),
            camshaft_proto::VersionSelector::Alias(alias) => {
                camshaft_store::ModelRef::Alias(reference.name.clone(), alias.clone())
            }
            camshaft_proto::VersionSelector::Version(v) => {
                camshaft_store::ModelRef::Version(reference.name.clone(), *v)
            }
        };
        let (wanted_method, mut options) = check_options(&request)?;
        // Resolved per request: an alias that moved is seen by the next call.
        let version = self
            .cache
            .store()
            .get_model(&store_ref)
            .await
            .map_err(Error::from_store)?;
        let loaded = self.cache.get(&version).await?;
        options.method = match wanted_method {
            ExplainMethod::Unspecified if loaded.has_cam => CamMethod::Cam,
            ExplainMethod::Unspecified | ExplainMethod::GradCam => CamMethod::GradCam,
            ExplainMethod::Cam if loaded.has_cam => CamMethod::Cam,
            ExplainMethod::Cam => {
                return Err(Error::CamNeedsPooledHead {
                    model: loaded.key.clone(),
                    head: loaded.spec.head.to_string(),
                });
            }
            ExplainMethod::GradCamPlusPlus => {
                return Err(Error::Unimplemented(
                    "EXPLAIN_METHOD_GRAD_CAM_PLUS_PLUS".into(),
                ));
            }
        };
        let classes = loaded.spec.num_classes();
        options.top_k = options.top_k.min(classes);

        // Decode every image on the blocking pool, in parallel.
        let mut results: Vec<ImageExplanation> = Vec::with_capacity(n);
        let mut decoding = Vec::with_capacity(n);
        for (index, input) in request.images.into_iter().enumerate() {
            results.push(ImageExplanation {
                id: input.id.clone(),
                ..Default::default()
            });
            if let Some(t) = input.target_class
                && (t < 0 || t as usize >= classes)
            {
                set_error(
                    &mut results[index],
                    ImageErrorKind::TargetOutOfRange,
                    format!(
                        "image #{index} ({:?}): target_class {t} is outside 0..{classes}",
                        input.id
                    ),
                );
                continue;
            }
            let limits = self.limits;
            let what = format!("#{index} ({:?})", input.id);
            let target = input.target_class.map(i64::from);
            decoding.push((
                index,
                target,
                tokio::task::spawn_blocking(move || {
                    camshaft_data::decode_image(&input.data, &what, &limits)
                }),
            ));
        }
        let mut good = Vec::with_capacity(decoding.len());
        for (index, target, task) in decoding {
            match task.await {
                Ok(Ok(image)) => good.push(GoodImage {
                    index,
                    image,
                    target,
                }),
                Ok(Err(e)) => set_error(&mut results[index], decode_error_kind(&e), e.to_string()),
                Err(e) => set_error(
                    &mut results[index],
                    ImageErrorKind::Internal,
                    format!("image #{index}: decoding failed: {e}"),
                ),
            }
        }
        let good_count = good.len();

        if !good.is_empty() {
            let model = Arc::clone(&loaded);
            let max_batch = self.max_batch;
            let explained = tokio::task::spawn_blocking(move || {
                model.with_model(|m| explain_images(m, &model, good, options, max_batch))
            })
            .await
            .map_err(|e| Error::Internal(format!("inference task: {e}")))??;
            for (index, explanation) in explained {
                let id = std::mem::take(&mut results[index].id);
                results[index] = ImageExplanation { id, ..explanation };
            }
        }
        tracing::info!(
            model = %loaded.key,
            images = n,
            explained = good_count,
            method = ?options.method,
            ms = started.elapsed().as_millis() as u64,
            "explained"
        );
        Ok(ExplainResponse {
            model_version: loaded.key.clone(),
            results,
            request_id: request.request_id,
        })
    }
}

fn set_error(result: &mut ImageExplanation, kind: ImageErrorKind, message: String) {
    result.error = message;
    result.error_kind = kind as i32;
}

fn decode_error_kind(err: &camshaft_data::Error) -> ImageErrorKind {
    use camshaft_data::Error as D;
    match err {
        D::EmptyImage { .. } => ImageErrorKind::Empty,
        D::ImageTooLarge { .. } | D::FileTooLarge { .. } => ImageErrorKind::TooLarge,
        _ => ImageErrorKind::Undecodable,
    }
}

/// Checks the request's options; returns the asked method (resolved against
/// the model later) and the rest.
fn check_options(request: &ExplainRequest) -> Result<(ExplainMethod, Options)> {
    let method = ExplainMethod::try_from(request.method)
        .map_err(|_| Error::InvalidRequest(format!("unknown ExplainMethod {}", request.method)))?;
    let colormap = match WireColormap::try_from(request.colormap)
        .map_err(|_| Error::InvalidRequest(format!("unknown Colormap {}", request.colormap)))?
    {
        WireColormap::Unspecified | WireColormap::Magma => Colormap::Magma,
        WireColormap::Viridis => Colormap::Viridis,
        WireColormap::Inferno => Colormap::Inferno,
        WireColormap::Jet => Colormap::Jet,
    };
    let alpha = request.alpha.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidRequest(format!(
            "alpha {alpha} is outside [0, 1]"
        )));
    }
    match FaithfulnessMetric::try_from(request.faithfulness) {
        Ok(FaithfulnessMetric::Unspecified) => {}
        Ok(metric) => {
            return Err(Error::Unimplemented(format!(
                "faithfulness scores ({})",
                metric.as_str_name()
            )));
        }
        Err(_) => {
            return Err(Error::InvalidRequest(format!(
                "unknown FaithfulnessMetric {}",
                request.faithfulness
            )));
        }
    }
    let options = Options {
        method: CamMethod::Cam,
        top_k: request.top_k.unwrap_or(1).max(1) as usize,
        overlay: request.return_overlay.then_some(OverlayOptions {
            colormap,
            alpha,
            range: None,
        }),
        upsampled: request.return_upsampled_maps,
    };
    Ok((method, options))
}

/// Blocking: preprocess, forward (one pass per `max_batch` images), maps,
/// overlays. Returns `(request index, explanation)` pairs.
fn explain_images(
    model: &Model,
    loaded: &LoadedModel,
    good: Vec<GoodImage>,
    options: Options,
    max_batch: usize,
) -> Result<Vec<(usize, ImageExplanation)>> {
    let torch = |e: camshaft_vision::Error| Error::Internal(format!("model {}: {e}", loaded.key));
    let tch_err = |e: tch::TchError| Error::Internal(format!("model {}: {e}", loaded.key));
    let size = loaded.spec.input_size;
    let mut out = Vec::with_capacity(good.len());
    let mut rest = good;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(max_batch));
        let chunk = std::mem::replace(&mut rest, tail);
        let (images, metas): (Vec<RgbImage>, Vec<(usize, Option<i64>)>) = chunk
            .into_iter()
            .map(|g| (g.image, (g.index, g.target)))
            .unzip();
        let targets: Vec<Option<i64>> = metas.iter().map(|m| m.1).collect();
        let x = cam::preprocess(model, &images, RESIZE).map_err(torch)?;
        let (logits, maps, chosen) =
            cam::explain_batch(model, &x, options.method, &targets).map_err(torch)?;
        let logits = logits.to_kind(Kind::Float).to_device(tch::Device::Cpu);
        let probs = logits.f_softmax(-1, Kind::Float).map_err(tch_err)?;
        let logits_rows = rows(&logits).map_err(tch_err)?;
        let prob_rows = rows(&probs).map_err(tch_err)?;

        // maps[0] is the target; then the most probable other classes.
        let mut classes_per_image: Vec<Vec<i64>> = chosen.iter().map(|&c| vec![c]).collect();
        for (classes, p) in classes_per_image.iter_mut().zip(&prob_rows) {
            let mut order: Vec<i64> = (0..p.len() as i64).collect();
            order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]));
            let target = classes[0];
            classes.extend(
                order
                    .into_iter()
                    .filter(|&c| c != target)
                    .take(options.top_k - 1),
            );
        }
        let mut map_sets = vec![map_rows(&maps).map_err(tch_err)?];
        for rank in 1..options.top_k {
            let targets: Vec<Option<i64>> = classes_per_image
                .iter()
                .map(|c| c.get(rank).copied())
                .collect();
            let (_, maps, _) =
                cam::explain_batch(model, &x, options.method, &targets).map_err(torch)?;
            map_sets.push(map_rows(&maps).map_err(tch_err)?);
        }

        for (i, (index, _)) in metas.iter().enumerate() {
            let p = &prob_rows[i];
            let predicted = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(k, _)| k);
            let class_maps: Vec<ClassMap> = map_sets
                .iter()
                .zip(&classes_per_image[i])
                .map(|(set, &class)| {
                    let (h, w, values) = &set[i];
                    ClassMap {
                        class_index: class as i32,
                        height: *h as i32,
                        width: *w as i32,
                        values: values.clone(),
                        faithfulness: None,
                    }
                })
                .collect();
            let mut upsampled_maps = Vec::new();
            if options.upsampled {
                for m in &class_maps {
                    let values = camshaft_render::upsample_bilinear(&activation(m), size, size)
                        .map_err(|e| Error::Internal(format!("upsampling: {e}")))?;
                    upsampled_maps.push(ClassMap {
                        class_index: m.class_index,
                        height: size as i32,
                        width: size as i32,
                        values,
                        faithfulness: None,
                    });
                }
            }
            let overlay_png = match (&options.overlay, class_maps.first()) {
                (Some(opts), Some(first)) => {
                    let resized = camshaft_data::resize(&images[i], size, RESIZE, (0.5, 0.5));
                    let drawn = camshaft_render::overlay(&resized, &activation(first), opts)
                        .and_then(|img| camshaft_render::encode_png(&img))
                        .map_err(|e| Error::Internal(format!("overlay: {e}")))?;
                    drawn.into()
                }
                _ => Default::default(),
            };
            out.push((
                *index,
                ImageExplanation {
                    class_names: loaded.spec.class_names.clone(),
                    probabilities: p.clone(),
                    predicted_class: predicted as i32,
                    maps: class_maps,
                    overlay_png,
                    upsampled_maps,
                    logits: logits_rows[i].clone(),
                    ..Default::default()
                },
            ));
        }
    }
    Ok(out)
}

fn activation(m: &ClassMap) -> ActivationMap<'_> {
    ActivationMap {
        values: &m.values,
        height: m.height as u32,
        width: m.width as u32,
    }
}

/// Rows of a `(N, C)` tensor.
fn rows(t: &Tensor) -> std::result::Result<Vec<Vec<f32>>, tch::TchError> {
    let t = t
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous();
    (0..t.size()[0])
        .map(|i| Vec::<f32>::try_from(&t.get(i)))
        .collect()
}

/// `(height, width, values)` of each map of a `(N, h, w)` tensor.
fn map_rows(t: &Tensor) -> std::result::Result<Vec<(i64, i64, Vec<f32>)>, tch::TchError> {
    let t = t
        .detach()
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let size = t.size();
    let (h, w) = (size[1], size[2]);
    (0..size[0])
        .map(|i| Ok((h, w, Vec::<f32>::try_from(&t.get(i).flatten(0, -1))?)))
        .collect()
}
