//! The explain logic, free of gRPC transport: validate a request, resolve and
//! load the model version, estimate what it costs from its images' headers
//! and its options and admit it against the budgets, decode and preprocess
//! its images on blocking threads, hand them to the model's batcher (which
//! mixes them with other requests' images into forward passes), and draw
//! the results on blocking threads. Each image's admission ticket travels
//! with it through all of that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use camshaft_data::{DecodeLimits, ResizeMethod, RgbImage};
use camshaft_proto::v1::{
    ClassMap, Colormap as WireColormap, ExplainMethod, ExplainRequest, ExplainResponse,
    ExplanationRecipe, FaithfulnessBaseline, FaithfulnessMetric, ImageErrorKind, ImageExplanation,
};
use camshaft_render::{ActivationMap, Colormap, OverlayOptions};
use camshaft_store::Store;
use camshaft_vision::cam::{Baseline, Faithfulness, MapRecipe};
use camshaft_vision::{CamMethod, Normalization};
use tch::Tensor;

use crate::batcher::BatchSettings;
use crate::cost::{self, IMAGE_OVERHEAD_BYTES};
use crate::inference::{ImageJob, RawExplanation};
use crate::metrics::{Dropped, Metrics};
use crate::models::{LoadLimits, LoadedModel, ModelCache};
use crate::queue::{Admission, Cost};
use crate::{Config, Error, Result};

/// Answers `ExplainRequest`s; shared by every call of the service.
pub struct ExplainEngine {
    max_images: usize,
    limits: DecodeLimits,
    /// Blocking tasks one request's images are decoded on at most.
    decode_workers: usize,
    cache: ModelCache,
    admission: Admission,
    metrics: Arc<Metrics>,
    started_unix_ms: i64,
}

/// The options of one request, checked.
#[derive(Clone, Copy, Debug)]
struct Options {
    method: CamMethod,
    top_k: usize,
    overlay: Option<OverlayOptions>,
    upsampled: bool,
    faithfulness: Option<Faithfulness>,
    /// What removed pixels become in the faithfulness scores.
    baseline: Baseline,
    /// pytorch-grad-cam's `aug_smooth`.
    aug_smooth: bool,
}

/// Most `target_layers` of one request (a ResNet has four).
pub const MAX_TARGET_LAYERS: usize = 4;

/// Why one image is not explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageError {
    /// The wire kind.
    pub kind: ImageErrorKind,
    /// What went wrong, naming the image.
    pub message: String,
}

/// Decodes `bytes` (PNG or JPEG, within `limits`: sizes are checked from
/// the header before any pixel buffer is allocated), resizes it to
/// `size`² with `resize` as validation does (centred) and normalises it: the `(3, size, size)` model
/// input and the resized image (what overlays are drawn on). Never panics;
/// every failure is an [`ImageError`] whose kind says what the client did
/// wrong. Blocking.
pub fn prepare_image(
    bytes: &[u8],
    what: &str,
    limits: &DecodeLimits,
    size: u32,
    resize: ResizeMethod,
    normalization: Normalization,
) -> std::result::Result<(Tensor, RgbImage), ImageError> {
    let image = camshaft_data::decode_image(bytes, what, limits).map_err(|e| ImageError {
        kind: decode_error_kind(&e),
        message: e.to_string(),
    })?;
    let resized = camshaft_data::resize(&image, size, resize, (0.5, 0.5));
    let input = camshaft_vision::loader::to_chw(&resized, normalization);
    Ok((input, resized))
}

impl ExplainEngine {
    /// An engine with `config`'s limits, loading models from `store` onto
    /// `device`, counting into `metrics`.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        device: tch::Device,
        metrics: Arc<Metrics>,
    ) -> Self {
        let settings = BatchSettings::from_config(config);
        ExplainEngine {
            max_images: config.max_images_per_request,
            limits: DecodeLimits {
                max_pixels: config.max_image_pixels,
                max_bytes: config.max_image_bytes,
            },
            decode_workers: config
                .decode_tasks_per_request
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map_or(1, |n| n.get())
                        .min(MAX_DECODE_WORKERS)
                })
                .max(1),
            cache: ModelCache::new(
                store,
                device,
                config.model_cache_size,
                settings,
                LoadLimits::from_config(config),
                Arc::clone(&metrics),
            ),
            admission: Admission::new(config, Arc::clone(&metrics)),
            metrics,
            started_unix_ms: camshaft_proto::now_unix_ms(),
        }
    }

    /// The loaded model versions.
    pub fn cache(&self) -> &ModelCache {
        &self.cache
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Images admitted and not answered yet (decoding, queued or computing).
    pub fn queued_images(&self) -> usize {
        usize::try_from(self.admission.in_use().images).unwrap_or(usize::MAX)
    }

    /// Most images admitted at once ([`Config::max_queued_images`]).
    pub fn queue_capacity(&self) -> usize {
        usize::try_from(self.admission.limits().images).unwrap_or(usize::MAX)
    }

    /// Bytes of decoded images admitted and not given back (see
    /// [`Config::max_decode_bytes_in_flight`]).
    pub fn admitted_decode_bytes(&self) -> u64 {
        self.admission.in_use().bytes
    }

    /// Compute units admitted and not computed yet (see
    /// [`Config::max_queued_compute_units`]).
    pub fn admitted_compute_units(&self) -> u64 {
        self.admission.in_use().units
    }

    /// When the engine was created (ms since the Unix epoch).
    pub fn started_unix_ms(&self) -> i64 {
        self.started_unix_ms
    }

    /// The version the reference `model` (`name`, `name@alias`,
    /// `name:version`) names now.
    pub async fn resolve(&self, model: &str) -> Result<camshaft_store::ModelVersion> {
        let reference = camshaft_proto::ModelRef::parse(model)
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
        self.cache
            .store()
            .get_model(&store_ref)
            .await
            .map_err(Error::from_store)
    }

    /// The loaded model the reference `model` names now, loading it if
    /// it is not loaded.
    pub async fn load(&self, model: &str) -> Result<Arc<LoadedModel>> {
        let version = self.resolve(model).await?;
        self.cache.get(&version).await
    }

    /// Explains one request with no deadline (see the crate doc).
    pub async fn explain(&self, request: ExplainRequest) -> Result<ExplainResponse> {
        self.explain_until(request, None).await
    }

    /// Explains one request; past `deadline` it fails with
    /// [`Error::DeadlineExceeded`] and its images still waiting for a forward
    /// pass are dropped from their batch.
    pub async fn explain_until(
        &self,
        request: ExplainRequest,
        deadline: Option<Instant>,
    ) -> Result<ExplainResponse> {
        let started = Instant::now();
        if deadline.is_some_and(|d| d <= started) {
            return Err(Error::DeadlineExceeded(
                "the request's deadline passed before it arrived".into(),
            ));
        }
        let work = self.explain_inner(request, deadline);
        match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), work).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::DeadlineExceeded(format!(
                    "the request's deadline passed after {} ms",
                    started.elapsed().as_millis()
                ))),
            },
            None => work.await,
        }
    }

    async fn explain_inner(
        &self,
        request: ExplainRequest,
        deadline: Option<Instant>,
    ) -> Result<ExplainResponse> {
        let started = Instant::now();
        let n = request.images.len();
        if n > self.max_images {
            return Err(Error::InvalidRequest(format!(
                "{n} images in one request, over the limit of {}; split them over several requests (ExplainStream)",
                self.max_images
            )));
        }
        let (wanted_method, mut options) = check_options(&request)?;
        // Resolved per request: an alias that moved is seen by the next call.
        let loaded = self.load(&request.model).await?;
        let layers = resolve_layers(&loaded.spec, &request.target_layers)?;
        let last_only = layers == [loaded.spec.layer_names().len() - 1];
        options.method = match wanted_method {
            ExplainMethod::Unspecified if loaded.has_cam && last_only && !options.aug_smooth => {
                CamMethod::Cam
            }
            ExplainMethod::Unspecified | ExplainMethod::GradCam => CamMethod::GradCam,
            ExplainMethod::GradCamPlusPlus => CamMethod::GradCamPlusPlus,
            ExplainMethod::XgradCam => CamMethod::XGradCam,
            ExplainMethod::LayerCam => CamMethod::LayerCam,
            ExplainMethod::HiresCam => CamMethod::HiResCam,
            ExplainMethod::ScoreCam => CamMethod::ScoreCam,
            ExplainMethod::Cam if !loaded.has_cam => {
                return Err(Error::CamNeedsPooledHead {
                    model: loaded.key.clone(),
                    head: loaded.spec.head.to_string(),
                });
            }
            ExplainMethod::Cam if !last_only => {
                return Err(Error::InvalidField {
                    field: "target_layers",
                    reason: format!(
                        "CAM applies the head's linear map at the last layer ({}) only; leave target_layers empty or ask for a gradient method or Score-CAM",
                        loaded.spec.layer_names().last().copied().unwrap_or("?")
                    ),
                });
            }
            ExplainMethod::Cam if options.aug_smooth => {
                return Err(Error::InvalidField {
                    field: "aug_smooth",
                    reason: "aug_smooth applies to the gradient methods and Score-CAM, not CAM"
                        .into(),
                });
            }
            ExplainMethod::Cam => CamMethod::Cam,
        };
        let recipe = MapRecipe {
            method: options.method,
            layers,
            aug_smooth: options.aug_smooth,
        };
        let ran = ExplanationRecipe {
            method: wire_method(recipe.method) as i32,
            target_layers: recipe
                .layers
                .iter()
                .map(|&l| loaded.spec.layer_names()[l].to_string())
                .collect(),
            precision: loaded.settings.precision.name().to_string(),
            faithfulness_baseline: match options.faithfulness {
                None | Some(Faithfulness::Road) => FaithfulnessBaseline::Unspecified,
                Some(_) => wire_baseline(options.baseline),
            } as i32,
            aug_smooth: recipe.aug_smooth,
        };
        let classes = loaded.spec.num_classes();
        options.top_k = options.top_k.min(classes);
        let size = loaded.spec.input_size;
        let normalization = loaded.spec.normalization;
        let resize = loaded.resize;
        let channels: Vec<i64> = recipe
            .layers
            .iter()
            .map(|&l| loaded.spec.layer_channels(l))
            .collect();
        let map_passes = cost::map_passes(recipe.method, &channels, recipe.aug_smooth);
        let image_units = cost::image_units(size, options.top_k, options.faithfulness, map_passes);
        let resident = cost::resident_bytes(size);

        // What each image costs, from what is known before decoding: its
        // target, its header.
        let mut results: Vec<ImageExplanation> = Vec::with_capacity(n);
        let mut planned = Vec::with_capacity(n);
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
            let what = format!("#{index} ({:?})", input.id);
            match self.plan_image(index, input.data, what, input.target_class, size) {
                Ok(image) => planned.push(image),
                Err(e) => set_error(&mut results[index], e.kind, e.message),
            }
        }
        // One request decodes on at most `decode_workers` blocking tasks at
        // once, each holding the decoding of one image at a time: the
        // largest images first, dealt round, so each task's first image is
        // its largest and the request holds the largest few decodings at
        // once (and every image's model input, until answered).
        planned.sort_by_key(|p| std::cmp::Reverse(p.decode_bytes));
        let workers = self.decode_workers.min(planned.len()).max(1);
        let mut shares: Vec<Vec<PlannedImage>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, image) in planned.into_iter().enumerate() {
            shares[i % workers].push(image);
        }
        let share_cost = |share: &[PlannedImage]| Cost {
            images: share.len() as u64,
            bytes: share
                .first()
                .map_or(0, |p| p.decode_bytes)
                .saturating_add(resident.saturating_mul(share.len() as u64)),
            units: image_units.saturating_mul(share.len() as u64),
        };
        let mut whole = Cost {
            images: n as u64,
            ..Cost::default()
        };
        for share in &shares {
            let part = share_cost(share);
            whole.bytes = whole.bytes.saturating_add(part.bytes);
            whole.units = whole.units.saturating_add(part.units);
        }
        // Refused here, before anything is decoded; held until each part of
        // the work it pays for has stopped.
        let mut ticket = self.admission.admit(whole)?;

        // Decode and preprocess on the blocking pool. A task stops between
        // images once this request is gone; the one it is decoding finishes,
        // its charge held until then.
        let cancelled = CancelOnDrop::default();
        let mut decoding = Vec::with_capacity(shares.len());
        for share in shares {
            let mut share_ticket = ticket.split(share_cost(&share));
            let indices: Vec<usize> = share.iter().map(|p| p.index).collect();
            let stop = Arc::clone(&cancelled.0);
            let metrics = Arc::clone(&self.metrics);
            let task = crate::spawn_blocking_serial(move || {
                let mut out = Vec::with_capacity(share.len());
                for image in share {
                    if stop.load(Ordering::SeqCst) {
                        let reason = if deadline.is_some_and(|d| d <= Instant::now()) {
                            Dropped::Deadline
                        } else {
                            Dropped::Cancelled
                        };
                        metrics.observe_dropped(reason, 1);
                        continue;
                    }
                    let prepared = {
                        let _decoding = metrics.decoding();
                        prepare_image(
                            &image.data,
                            &image.what,
                            &image.limits,
                            size,
                            resize,
                            normalization,
                        )
                    };
                    let decoded = prepared.map(|(input, resized)| {
                        let kept = share_ticket.split(Cost {
                            images: 1,
                            bytes: resident,
                            units: image_units,
                        });
                        (input, resized, kept)
                    });
                    out.push((image.index, image.target, decoded));
                }
                // `share_ticket` (the decoding scratch, the images that
                // failed or were skipped) is given back here.
                out
            });
            decoding.push((indices, task));
        }
        let mut decoded = Vec::with_capacity(n);
        for (indices, task) in decoding {
            match task.await {
                Ok(images) => {
                    for (index, target, image) in images {
                        match image {
                            Ok((input, resized, kept)) => {
                                decoded.push((index, target, input, resized, kept));
                            }
                            Err(e) => set_error(&mut results[index], e.kind, e.message),
                        }
                    }
                }
                Err(e) => {
                    for index in indices {
                        set_error(
                            &mut results[index],
                            ImageErrorKind::Internal,
                            format!("image #{index}: decoding failed: {e}"),
                        );
                    }
                }
            }
        }
        drop(cancelled);
        // The images that are not decoded (refused, failed) are answered:
        // their part of the ticket goes back.
        drop(ticket);
        decoded.sort_by_key(|d| d.0);
        let mut jobs = Vec::with_capacity(decoded.len());
        let mut placed = Vec::with_capacity(decoded.len());
        for (index, target, input, resized, kept) in decoded {
            jobs.push((
                ImageJob {
                    input,
                    target,
                    top_k: options.top_k,
                    faithfulness: options.faithfulness,
                    baseline: options.baseline,
                },
                kept,
            ));
            placed.push((index, resized));
        }
        let good_count = jobs.len();

        let answers = loaded.explain(recipe, jobs, deadline).await?;
        // The batcher drops images whose deadline passed, at the same
        // instant the request's own timeout fires: either way the request
        // failed by its deadline, not image by image.
        if answers
            .iter()
            .any(|(a, _)| matches!(a, Err(Error::DeadlineExceeded(_))))
        {
            return Err(Error::DeadlineExceeded(format!(
                "the request's deadline passed after {} ms, its images still queued",
                started.elapsed().as_millis()
            )));
        }
        let mut drawing = Vec::with_capacity(answers.len());
        for ((index, resized), (answer, kept)) in placed.into_iter().zip(answers) {
            match answer {
                Ok(raw) => {
                    let names = loaded.spec.class_names.clone();
                    drawing.push((
                        index,
                        crate::spawn_blocking_serial(move || {
                            // Held until drawn, whoever still waits.
                            let _kept = kept;
                            finish_image(raw, &resized, names, size, &options)
                        }),
                    ));
                }
                Err(e) => {
                    tracing::error!(model = %loaded.key, image = index, error = %e, "inference failed");
                    set_error(&mut results[index], ImageErrorKind::Internal, e.to_string());
                }
            }
        }
        for (index, task) in drawing {
            let drawn = task
                .await
                .map_err(|e| Error::Internal(format!("drawing task: {e}")))
                .and_then(|r| r);
            match drawn {
                Ok(explanation) => {
                    let id = std::mem::take(&mut results[index].id);
                    results[index] = ImageExplanation { id, ..explanation };
                }
                Err(e) => set_error(&mut results[index], ImageErrorKind::Internal, e.to_string()),
            }
        }
        let method = options.method.name();
        for r in &results {
            self.metrics.observe_image(options.method, r.error_kind);
        }
        tracing::info!(
            model = %loaded.key,
            images = n,
            explained = good_count,
            method,
            ms = started.elapsed().as_millis() as u64,
            "explained"
        );
        Ok(ExplainResponse {
            model_version: loaded.key.clone(),
            results,
            request_id: request.request_id,
            recipe: Some(ran),
        })
    }

    /// An image to decode, with what its decoding costs, or why it is
    /// refused without decoding. The decoder is held to the pixels its
    /// header declared (what is charged), so it cannot decode more.
    fn plan_image(
        &self,
        index: usize,
        data: bytes::Bytes,
        what: String,
        target: Option<i32>,
        input_size: u32,
    ) -> std::result::Result<PlannedImage, ImageError> {
        let mut limits = self.limits;
        let too_long = data.len() as u64 > self.limits.max_bytes;
        let acceptable = |pixels: u64| pixels > 0 && pixels <= self.limits.max_pixels && !too_long;
        let decode_bytes = match cost::decoded_form(&data) {
            Some(form) if acceptable(form.pixels()) => {
                limits.max_pixels = form.pixels();
                form.decode_bytes(input_size)
            }
            // Refused by the decoder from its header or its length, before
            // anything is allocated.
            Some(_) => IMAGE_OVERHEAD_BYTES,
            None if cost::looks_like_png_or_jpeg(&data) && !too_long => {
                let e = camshaft_data::Error::Decode {
                    what: what.clone(),
                    reason: "its png or jpeg header is truncated or malformed: the image's size cannot be read before decoding".into(),
                };
                return Err(ImageError {
                    kind: decode_error_kind(&e),
                    message: e.to_string(),
                });
            }
            // Empty, too long, or not a png or jpeg: the decoder refuses it
            // from its length or its first bytes.
            None => IMAGE_OVERHEAD_BYTES,
        };
        Ok(PlannedImage {
            index,
            target: target.map(i64::from),
            data,
            what,
            limits,
            decode_bytes,
        })
    }
}

/// Most blocking tasks one request's images are decoded on at once when
/// [`Config::decode_tasks_per_request`] is not set.
const MAX_DECODE_WORKERS: usize = 8;

/// An image of a request, checked and costed, waiting to be decoded.
struct PlannedImage {
    index: usize,
    target: Option<i64>,
    data: bytes::Bytes,
    what: String,
    /// The configured limits, `max_pixels` lowered to the header's.
    limits: DecodeLimits,
    /// Bytes its decoding takes at its peak (estimated from the header).
    decode_bytes: u64,
}

/// Tells the request's decoding tasks to stop (between images) once the
/// request is gone.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn set_error(result: &mut ImageExplanation, kind: ImageErrorKind, message: String) {
    result.error = message;
    result.error_kind = kind as i32;
}

/// The wire kind of a decoding failure.
pub fn decode_error_kind(err: &camshaft_data::Error) -> ImageErrorKind {
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
    let faithfulness = match FaithfulnessMetric::try_from(request.faithfulness) {
        Ok(FaithfulnessMetric::Unspecified) => None,
        Ok(FaithfulnessMetric::DeletionAuc) => Some(Faithfulness::DeletionAuc),
        Ok(FaithfulnessMetric::AverageDrop) => Some(Faithfulness::AverageDrop),
        Ok(FaithfulnessMetric::Road) => Some(Faithfulness::Road),
        Err(_) => {
            return Err(Error::InvalidRequest(format!(
                "unknown FaithfulnessMetric {}",
                request.faithfulness
            )));
        }
    };
    let baseline = match FaithfulnessBaseline::try_from(request.faithfulness_baseline) {
        Ok(FaithfulnessBaseline::Unspecified | FaithfulnessBaseline::Mean) => Baseline::Mean,
        Ok(FaithfulnessBaseline::Black) => Baseline::Black,
        Ok(FaithfulnessBaseline::Blur) => Baseline::Blur,
        Err(_) => {
            return Err(Error::InvalidField {
                field: "faithfulness_baseline",
                reason: format!(
                    "unknown FaithfulnessBaseline {}",
                    request.faithfulness_baseline
                ),
            });
        }
    };
    if request.target_layers.len() > MAX_TARGET_LAYERS {
        return Err(Error::InvalidField {
            field: "target_layers",
            reason: format!(
                "{} layers, over the limit of {MAX_TARGET_LAYERS}",
                request.target_layers.len()
            ),
        });
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
        faithfulness,
        baseline,
        aug_smooth: request.aug_smooth,
    };
    Ok((method, options))
}

/// The indices (into the model's layer names) of `names`, shallowest first;
/// the last layer when `names` is empty. Unknown names and repeats are
/// INVALID_ARGUMENT naming the valid ones.
fn resolve_layers(spec: &camshaft_vision::ModelSpec, names: &[String]) -> Result<Vec<usize>> {
    let valid = spec.layer_names();
    if names.is_empty() {
        return Ok(vec![valid.len() - 1]);
    }
    let mut layers = Vec::with_capacity(names.len());
    for name in names {
        let index = valid
            .iter()
            .position(|v| v == name)
            .ok_or_else(|| Error::InvalidField {
                field: "target_layers",
                reason: format!(
                    "unknown layer {:?} for a {} model (expected one of: {})",
                    camshaft_proto::short(name),
                    spec.arch,
                    valid.join(", ")
                ),
            })?;
        if layers.contains(&index) {
            return Err(Error::InvalidField {
                field: "target_layers",
                reason: format!("layer {name:?} is named twice"),
            });
        }
        layers.push(index);
    }
    layers.sort_unstable();
    Ok(layers)
}

/// The wire name of a method.
fn wire_method(method: CamMethod) -> ExplainMethod {
    match method {
        CamMethod::Cam => ExplainMethod::Cam,
        CamMethod::GradCam => ExplainMethod::GradCam,
        CamMethod::GradCamPlusPlus => ExplainMethod::GradCamPlusPlus,
        CamMethod::XGradCam => ExplainMethod::XgradCam,
        CamMethod::LayerCam => ExplainMethod::LayerCam,
        CamMethod::HiResCam => ExplainMethod::HiresCam,
        CamMethod::ScoreCam => ExplainMethod::ScoreCam,
    }
}

/// The wire name of a baseline.
fn wire_baseline(baseline: Baseline) -> FaithfulnessBaseline {
    match baseline {
        Baseline::Mean => FaithfulnessBaseline::Mean,
        Baseline::Black => FaithfulnessBaseline::Black,
        Baseline::Blur => FaithfulnessBaseline::Blur,
    }
}

/// Blocking: the wire form of one image's explanation, with the upsampled
/// maps and the overlay when asked.
fn finish_image(
    raw: RawExplanation,
    resized: &RgbImage,
    class_names: Vec<String>,
    size: u32,
    options: &Options,
) -> Result<ImageExplanation> {
    let predicted = raw
        .probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(k, _)| k);
    let maps: Vec<ClassMap> = raw
        .maps
        .into_iter()
        .map(|m| ClassMap {
            class_index: m.class as i32,
            height: m.height as i32,
            width: m.width as i32,
            values: m.values,
            faithfulness: m.faithfulness,
        })
        .collect();
    let mut upsampled_maps = Vec::new();
    if options.upsampled {
        for m in &maps {
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
    let overlay_png = match (&options.overlay, maps.first()) {
        (Some(opts), Some(first)) => camshaft_render::overlay(resized, &activation(first), opts)
            .and_then(|img| camshaft_render::encode_png(&img))
            .map_err(|e| Error::Internal(format!("overlay: {e}")))?
            .into(),
        _ => Default::default(),
    };
    Ok(ImageExplanation {
        class_names,
        probabilities: raw.probabilities,
        predicted_class: predicted as i32,
        maps,
        overlay_png,
        upsampled_maps,
        logits: raw.logits,
        ..Default::default()
    })
}

fn activation(m: &ClassMap) -> ActivationMap<'_> {
    ActivationMap {
        values: &m.values,
        height: m.height as u32,
        width: m.width as u32,
    }
}
