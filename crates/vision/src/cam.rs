//! Class Activation Maps and the gradient methods (Grad-CAM, Grad-CAM++,
//! XGrad-CAM, LayerCAM, HiResCAM), batched, and the faithfulness scores of a
//! map.
//!
//! CAM (for models whose head is a global average pool then a linear map, the
//! CAM head) is the lecture's `einsum('cb,abij->acij', W, body(x))`, plus the
//! bias at every position when the head has one, so the spatial mean of
//! class c's map *is* logit c. Grad-CAM works for every head: the feature map
//! weighted by the spatial mean of the target logit's gradient, summed over
//! channels, through a ReLU. The other gradient methods weigh the feature map
//! as pytorch-grad-cam's classes of the same names do (see [`CamMethod`]).
//! The body runs once without autograd; only the head is differentiated, so
//! [`maps_from_features`] can explain several classes from one body pass.
//!
//! [`faithfulness`] scores a map by perturbing the image along it (deletion
//! AUC, average drop in confidence).

use camshaft_data::{BoundingBox, Dataset, ResizeMethod, RgbImage, Synthetic, resize};
use camshaft_render::{ActivationMap, OverlayOptions, Panel, format_title, overlay};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::loader::to_chw;
use crate::model::{Model, ModelSpec};
use crate::{Error, Result};

/// Which explanation to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CamMethod {
    /// Zhou et al.'s CAM: CAM-head (pooled linear) models only.
    #[default]
    Cam,
    /// Selvaraju et al.'s Grad-CAM: any head.
    GradCam,
    /// Chattopadhay et al.'s Grad-CAM++, as pytorch-grad-cam computes it:
    /// with `g` the target logit's gradient and `A` the feature map,
    /// `α = g² / (2g² + Σᵢⱼ A · g³ + 1e-6)` (0 where `g = 0`),
    /// channel weights `w = Σᵢⱼ α · relu(g)`, map `relu(Σ_c w · A)`. Any head.
    GradCamPlusPlus,
    /// Fu et al.'s XGrad-CAM: channel weights `w = Σᵢⱼ g · A / (Σᵢⱼ A + 1e-7)`,
    /// map `relu(Σ_c w · A)`. Any head.
    #[serde(rename = "xgrad_cam")]
    XGradCam,
    /// Jiang et al.'s LayerCAM: each position weighted by its own positive
    /// gradient, `relu(Σ_c relu(g) · A)`. Any head.
    LayerCam,
    /// Draelos and Carin's HiResCAM: `relu(Σ_c g · A)`, the gradient not
    /// averaged, so the map shows where the logit really came from. Any head.
    #[serde(rename = "hires_cam")]
    HiResCam,
}

impl CamMethod {
    /// Every method.
    pub const ALL: [CamMethod; 6] = [
        CamMethod::Cam,
        CamMethod::GradCam,
        CamMethod::GradCamPlusPlus,
        CamMethod::XGradCam,
        CamMethod::LayerCam,
        CamMethod::HiResCam,
    ];

    /// Its snake_case name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            CamMethod::Cam => "cam",
            CamMethod::GradCam => "grad_cam",
            CamMethod::GradCamPlusPlus => "grad_cam_plus_plus",
            CamMethod::XGradCam => "xgrad_cam",
            CamMethod::LayerCam => "layer_cam",
            CamMethod::HiResCam => "hires_cam",
        }
    }
}

/// The CAM head's weight and bias, or why CAM does not apply.
fn pooled_linear(model: &Model) -> Result<(&Tensor, Option<&Tensor>)> {
    model.pooled_linear().ok_or_else(|| {
        Error::Input(format!(
            "CAM needs a pooled linear head; this {} model has a {} head: use Grad-CAM",
            model.spec().arch,
            model.spec().head
        ))
    })
}

/// Logits and the CAM of every class, `(N, classes)` and `(N, classes, h, w)`.
/// Fails for heads that are not a pooled linear map.
pub fn cam_all_classes(model: &Model, images: &Tensor) -> Result<(Tensor, Tensor)> {
    let (w, b) = pooled_linear(model)?;
    let _guard = tch::no_grad_guard();
    let feats = model.features(images, false);
    cam_from_features(model, &feats, w, b)
}

fn cam_from_features(
    model: &Model,
    feats: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let mut why = Tensor::f_einsum("cb,abij->acij", &[w, feats], None::<&[i64]>)?;
    if let Some(b) = b {
        why = why.f_add(&b.view([1, -1, 1, 1]))?;
    }
    let logits = model.head(feats, false);
    Ok((logits, why))
}

/// Logits `(N, classes)`, the map of each image's target class `(N, h, w)`
/// and the targets (the predicted class where `targets[i]` is `None`).
pub fn explain_batch(
    model: &Model,
    images: &Tensor,
    method: CamMethod,
    targets: &[Option<i64>],
) -> Result<(Tensor, Tensor, Vec<i64>)> {
    let feats = tch::no_grad(|| model.features(images, false));
    maps_from_features(model, &feats, method, targets)
}

/// [`explain_batch`] from the body's feature map `(N, C, h, w)` (computed
/// without autograd): call it once per class rank to explain several
/// classes with one body pass.
pub fn maps_from_features(
    model: &Model,
    feats: &Tensor,
    method: CamMethod,
    targets: &[Option<i64>],
) -> Result<(Tensor, Tensor, Vec<i64>)> {
    let n = feats.size().first().copied().unwrap_or(0);
    if targets.len() as i64 != n {
        return Err(Error::Input(format!(
            "{} targets for {n} images",
            targets.len()
        )));
    }
    let classes = model.spec().num_classes() as i64;
    if let Some(t) = targets.iter().flatten().find(|&&t| t < 0 || t >= classes) {
        return Err(Error::Input(format!(
            "target class {t} is outside 0..{classes}"
        )));
    }
    match method {
        CamMethod::Cam => cam_maps(model, feats, targets),
        CamMethod::GradCam => gradient_maps(model, feats, targets, |g, a| {
            Ok(g.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?.f_mul(a)?)
        }),
        CamMethod::GradCamPlusPlus => gradient_maps(model, feats, targets, |g, a| {
            Ok(grad_cam_plus_plus_weights(g, a)?.f_mul(a)?)
        }),
        CamMethod::XGradCam => gradient_maps(model, feats, targets, |g, a| {
            let sum_a = a.f_sum_dim_intlist(&[2i64, 3][..], true, Kind::Float)?;
            let weights = g
                .f_mul(a)?
                .f_div(&sum_a.f_add_scalar(1e-7)?)?
                .f_sum_dim_intlist(&[2i64, 3][..], true, Kind::Float)?;
            Ok(weights.f_mul(a)?)
        }),
        CamMethod::LayerCam => {
            gradient_maps(model, feats, targets, |g, a| Ok(g.f_relu()?.f_mul(a)?))
        }
        CamMethod::HiResCam => gradient_maps(model, feats, targets, |g, a| Ok(g.f_mul(a)?)),
    }
}

/// CAM: each image's target-class map, gathered from every class's.
fn cam_maps(
    model: &Model,
    feats: &Tensor,
    targets: &[Option<i64>],
) -> Result<(Tensor, Tensor, Vec<i64>)> {
    let (w, b) = pooled_linear(model)?;
    let (logits, all) = cam_from_features(model, feats, w, b)?;
    let chosen = resolve_targets(&logits, targets)?;
    let idx = Tensor::from_slice(&chosen).to_device(all.device());
    let [n, _, h, w] = all.size()[..] else {
        return Err(Error::Input(format!("CAM maps of shape {:?}", all.size())));
    };
    let maps = all
        .f_gather(
            1,
            &idx.view([-1, 1, 1, 1]).expand([n, 1, h, w], false),
            false,
        )?
        .f_squeeze_dim(1)?;
    Ok((logits, maps, chosen))
}

/// A gradient method: the head is differentiated at the feature map `A` for
/// each image's target logit, `weigh(g, A)` gives the `(N, C, h, w)` weighted
/// feature map, and the map is its channel sum through a ReLU.
fn gradient_maps(
    model: &Model,
    feats: &Tensor,
    targets: &[Option<i64>],
    weigh: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor, Vec<i64>)> {
    let feats = feats.detach().set_requires_grad(true);
    let logits = model.head(&feats, false);
    let chosen = resolve_targets(&logits, targets)?;
    let idx = Tensor::from_slice(&chosen).to_device(logits.device());
    let selected = logits
        .f_gather(1, &idx.view([-1, 1]), false)?
        .f_sum(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[selected], &[&feats], false, false)?;
    let grad = grads
        .into_iter()
        .next()
        .ok_or_else(|| Error::Input("no gradient reached the feature map".into()))?;
    let maps = weigh(&grad, &feats.detach())?
        .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?
        .f_relu()?;
    Ok((logits.detach(), maps, chosen))
}

/// pytorch-grad-cam's `GradCAMPlusPlus.get_cam_weights`: `(N, C, 1, 1)`.
fn grad_cam_plus_plus_weights(grad: &Tensor, feats: &Tensor) -> Result<Tensor> {
    let g2 = grad.f_mul(grad)?;
    let g3 = g2.f_mul(grad)?;
    let sum_a = feats.f_sum_dim_intlist(&[2i64, 3][..], true, Kind::Float)?;
    let denominator = g2
        .f_mul_scalar(2.0)?
        .f_add(&sum_a.f_mul(&g3)?)?
        .f_add_scalar(1e-6)?;
    let aij = g2.f_div(&denominator)?;
    let aij = aij.f_where_self(&grad.f_ne(0.0)?, &aij.f_zeros_like()?)?;
    Ok(grad
        .f_relu()?
        .f_mul(&aij)?
        .f_sum_dim_intlist(&[2i64, 3][..], true, Kind::Float)?)
}

fn resolve_targets(logits: &Tensor, targets: &[Option<i64>]) -> Result<Vec<i64>> {
    let pred: Vec<i64> =
        Vec::<i64>::try_from(&logits.f_argmax(-1, false)?.to_device(tch::Device::Cpu))?;
    Ok(targets
        .iter()
        .zip(pred)
        .map(|(t, p)| t.unwrap_or(p))
        .collect())
}

/// A faithfulness score of a map: does the model's confidence depend on the
/// region the map highlights? Lower is more faithful for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Faithfulness {
    /// Deletion AUC: the pixels are removed (set to 0 in the normalised
    /// input: the normalisation's mean colour) in decreasing order of the
    /// bilinearly upsampled map (`align_corners=False`; ties in pixel order),
    /// `⌊k·P/20⌋` of the `P` pixels after step `k` of [`DELETION_STEPS`];
    /// the score is the trapezoidal area under the class-probability curve
    /// over `x = k/20 ∈ [0, 1]`.
    DeletionAuc,
    /// Average drop in confidence: `max(0, p - p_masked) / p`, where
    /// `p_masked` is the class probability of the normalised input
    /// multiplied by the upsampled map min–max normalised as
    /// pytorch-grad-cam's `scale_cam_image` does (`(m - min) / (max - min +
    /// 1e-7)`).
    AverageDrop,
}

/// Steps of the deletion curve ([`Faithfulness::DeletionAuc`]).
pub const DELETION_STEPS: i64 = 20;

/// The `metric` score of each map: `maps[i]` `(h, w)` explains class
/// `classes[i]` of the normalised image `images[i]` `(3, S, S)`. The
/// perturbed images of one map go through the model in passes of at most
/// `max_batch` (at least 2: a pass of one image would take libtorch's other
/// convolution path, and a score would depend on `max_batch` in the last
/// digits), never mixed with another map's, so a score does not depend on
/// what else is explained beside it.
pub fn faithfulness(
    model: &Model,
    images: &Tensor,
    maps: &Tensor,
    classes: &[i64],
    metric: Faithfulness,
    max_batch: usize,
) -> Result<Vec<f32>> {
    let n = images.size().first().copied().unwrap_or(0);
    if maps.size().first().copied() != Some(n) || classes.len() as i64 != n {
        return Err(Error::Input(format!(
            "{n} images, {:?} maps and {} classes",
            maps.size(),
            classes.len()
        )));
    }
    let size = images.size();
    let (height, width) = (size[2], size[3]);
    let _guard = tch::no_grad_guard();
    let mut scores = Vec::with_capacity(classes.len());
    for (i, &class) in classes.iter().enumerate() {
        let x = images.get(i as i64);
        let up = maps
            .get(i as i64)
            .to_device(x.device())
            .to_kind(Kind::Float)
            .view([1, 1, maps.size()[1], maps.size()[2]])
            .f_upsample_bilinear2d([height, width], false, None, None)?
            .view([height, width]);
        let score = match metric {
            Faithfulness::DeletionAuc => {
                let pixels = height * width;
                let order = up.view([pixels]).f_argsort_stable(true, 0, true)?;
                let positions = Tensor::f_arange(pixels, (Kind::Int64, x.device()))?;
                let ranks = positions
                    .f_zeros_like()?
                    .f_scatter(0, &order, &positions)?
                    .view([1, 1, height, width]);
                let steps: Vec<i64> = (0..=DELETION_STEPS)
                    .map(|k| k * pixels / DELETION_STEPS)
                    .collect();
                let mut probs = Vec::with_capacity(steps.len());
                for chunk in steps.chunks(max_batch.max(2)) {
                    let removed = Tensor::from_slice(chunk)
                        .to_device(x.device())
                        .view([-1, 1, 1, 1]);
                    let keep = ranks.f_ge_tensor(&removed)?.to_kind(Kind::Float);
                    let batch = x.unsqueeze(0).f_mul(&keep)?;
                    probs.extend(class_probabilities(model, &batch, class)?);
                }
                let sum: f64 = probs.iter().map(|&p| f64::from(p)).sum();
                let ends = f64::from(probs[0]) + f64::from(probs[probs.len() - 1]);
                ((sum - ends / 2.0) / DELETION_STEPS as f64) as f32
            }
            Faithfulness::AverageDrop => {
                let low = up.f_min()?;
                let shifted = up.f_sub(&low)?;
                let scaled = shifted.f_div(&shifted.f_max()?.f_add_scalar(1e-7)?)?;
                let masked = x.f_mul(&scaled.unsqueeze(0))?;
                let batch = Tensor::f_stack(&[x.shallow_clone(), masked], 0)?;
                let p = class_probabilities(model, &batch, class)?;
                let (p, p_masked) = (p[0], p[1]);
                if p > 0.0 {
                    (p - p_masked).max(0.0) / p
                } else {
                    0.0
                }
            }
        };
        scores.push(score);
    }
    Ok(scores)
}

/// Softmax probability of `class` for each image of `batch`, through passes
/// of at least two images (see [`faithfulness`]).
fn class_probabilities(model: &Model, batch: &Tensor, class: i64) -> Result<Vec<f32>> {
    let n = batch.size()[0];
    let input = if n == 1 {
        Tensor::f_cat(&[batch, batch], 0)?
    } else {
        batch.shallow_clone()
    };
    let probs = model
        .forward_t(&input, false)
        .f_softmax(-1, Kind::Float)?
        .f_select(1, class)?
        .f_narrow(0, 0, n)?
        .to_device(tch::Device::Cpu);
    Ok(Vec::<f32>::try_from(&probs)?)
}

/// One image's explanation, on the CPU, ready to serialise or draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Softmax probabilities per class.
    pub probabilities: Vec<f32>,
    /// Arg-max class.
    pub predicted_class: usize,
    /// The class the map explains.
    pub target_class: usize,
    /// Feature-map height.
    pub height: u32,
    /// Feature-map width.
    pub width: u32,
    /// The map, row-major, raw (not normalised).
    pub values: Vec<f32>,
}

impl Explanation {
    /// The (row, column) of the map's largest cell.
    pub fn peak_cell(&self) -> (u32, u32) {
        let k = self
            .values
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k) as u32;
        let w = self.width.max(1);
        (k / w, k % w)
    }

    /// Whether the map's peak — its largest cell's receptive-field centre
    /// ([`ModelSpec::feature_center`]), scaled from the model's input to an
    /// image of `width × height` — falls inside `b` grown by `tolerance`
    /// pixels on every side: one round of the pointing game.
    pub fn peak_in_box(
        &self,
        spec: &ModelSpec,
        width: u32,
        height: u32,
        b: &BoundingBox,
        tolerance: u32,
    ) -> bool {
        let (row, col) = self.peak_cell();
        let size = f64::from(spec.input_size);
        let to_image = |c: f64, side: u32| (c * f64::from(side) / size).max(0.0) as u32;
        let x = to_image(spec.feature_center(col), width);
        let y = to_image(spec.feature_center(row), height);
        x + tolerance >= b.x0
            && x < b.x1 + tolerance
            && y + tolerance >= b.y0
            && y < b.y1 + tolerance
    }

    /// The map as [`camshaft_render`] takes it.
    pub fn map(&self) -> ActivationMap<'_> {
        ActivationMap {
            values: &self.values,
            height: self.height,
            width: self.width,
        }
    }
}

/// Preprocess decoded images as validation does (resize to the model's input
/// size with `resize_method` at the centre — a no-op for images that already
/// have that size — scale to [0, 1], the model's normalisation) into a batch.
pub fn preprocess(
    model: &Model,
    images: &[RgbImage],
    resize_method: ResizeMethod,
) -> Result<Tensor> {
    if images.is_empty() {
        return Err(Error::Input("no images".into()));
    }
    let spec = model.spec();
    let tensors: Vec<Tensor> = images
        .iter()
        .map(|img| {
            to_chw(
                &resize(img, spec.input_size, resize_method, (0.5, 0.5)),
                spec.normalization,
            )
        })
        .collect();
    Ok(Tensor::f_stack(&tensors, 0)?.to_device(model.device()))
}

/// Explain decoded images: preprocess, forward once, map per image.
pub fn explain(
    model: &Model,
    images: &[RgbImage],
    method: CamMethod,
    targets: &[Option<i64>],
    resize_method: ResizeMethod,
) -> Result<Vec<Explanation>> {
    let x = preprocess(model, images, resize_method)?;
    let (logits, maps, chosen) = explain_batch(model, &x, method, targets)?;
    let probs = logits
        .f_softmax(-1, Kind::Float)?
        .to_device(tch::Device::Cpu);
    let maps = maps
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let (h, w) = (maps.size()[1], maps.size()[2]);
    let mut out = Vec::with_capacity(images.len());
    for (i, target) in chosen.into_iter().enumerate() {
        let p: Vec<f32> = Vec::try_from(&probs.get(i as i64))?;
        let values: Vec<f32> = Vec::try_from(&maps.get(i as i64).flatten(0, -1))?;
        let predicted = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k);
        out.push(Explanation {
            probabilities: p,
            predicted_class: predicted,
            target_class: target as usize,
            height: h as u32,
            width: w as u32,
            values,
        });
    }
    Ok(out)
}

/// Tolerance of the pointing game in pixels, as Zhang et al. define it
/// ("Top-down Neural Attention by Excitation Backprop", ECCV 2016).
pub const POINTING_TOLERANCE: u32 = 15;

/// The pointing game on the synthetic set: the share of the first `n`
/// samples of `data` whose map for the *true* class peaks inside the
/// object's box grown by `tolerance` pixels on every side. The peak is the
/// largest cell's receptive-field centre
/// ([`ModelSpec::feature_center`](crate::ModelSpec::feature_center)), in the
/// data set's pixels. Images are explained in batches of 32.
pub fn pointing_game(
    model: &Model,
    data: &Synthetic,
    n: usize,
    method: CamMethod,
    tolerance: u32,
) -> Result<f64> {
    let n = n.min(data.len());
    if n == 0 {
        return Err(Error::Input(
            "the pointing game needs at least one image".into(),
        ));
    }
    let mut hits = 0usize;
    for start in (0..n).step_by(32) {
        let idx: Vec<usize> = (start..(start + 32).min(n)).collect();
        let images = idx
            .iter()
            .map(|&i| data.image(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let targets: Vec<Option<i64>> = idx.iter().map(|&i| Some(data.label(i) as i64)).collect();
        let exps = explain(model, &images, method, &targets, ResizeMethod::Squish)?;
        for ((&i, e), img) in idx.iter().zip(&exps).zip(&images) {
            let inside = e.peak_in_box(
                model.spec(),
                img.width(),
                img.height(),
                &data.object_box(i),
                tolerance,
            );
            hits += usize::from(inside);
        }
    }
    Ok(hits as f64 / n as f64)
}

/// The lecture's panel for one image: the image at the model's input size
/// with its map on top, titled `class(probability)` of the explained class.
pub fn panel(
    model: &Model,
    image: &RgbImage,
    explanation: &Explanation,
    resize_method: ResizeMethod,
    options: &OverlayOptions,
) -> Result<Panel> {
    let spec = model.spec();
    let shown = resize(image, spec.input_size, resize_method, (0.5, 0.5));
    let drawn = overlay(&shown, &explanation.map(), options)?;
    let t = explanation.target_class;
    let name = spec.class_names.get(t).map_or("?", String::as_str);
    let p = explanation
        .probabilities
        .get(t)
        .copied()
        .unwrap_or(f32::NAN);
    Ok(Panel {
        image: drawn,
        title: format_title(name, p),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{Arch, HeadKind, ModelSpec, Normalization};

    fn model(head: HeadKind) -> Model {
        let spec = ModelSpec {
            arch: Arch::Resnet18,
            head,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            input_size: 96,
            normalization: Normalization::None,
        };
        Model::new(spec, tch::Device::Cpu).unwrap()
    }

    #[test]
    fn spatial_mean_of_cam_is_the_logit() {
        tch::manual_seed(1);
        for head in [HeadKind::Cam, HeadKind::Linear] {
            let m = model(head);
            let x = Tensor::randn([4, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
            let (logits, maps) = cam_all_classes(&m, &x).unwrap();
            assert_eq!(maps.size(), [4, 3, 3, 3]);
            let mean = maps.mean_dim(&[2i64, 3][..], false, Kind::Float);
            let diff = (mean - &logits).abs().max().double_value(&[]);
            assert!(diff <= 1e-4, "{head}: max |mean(cam) - logit| = {diff}");
            assert!(logits.abs().max().double_value(&[]) > 1e-3);
        }
    }

    #[test]
    fn gradient_methods_of_a_cam_head_follow_from_its_cam() {
        let m = model(HeadKind::Cam);
        // Body features are ReLU outputs (≥ 0), so class 0 (weights ≥ 0) has a
        // non-negative CAM, class 1 (weights ≤ 0) a non-positive one and
        // class 2 both signs, whatever the random initialisation drew.
        tch::no_grad(|| {
            let (w, _) = m.pooled_linear().unwrap();
            let w0 = w.get(0).abs();
            w.get(0).copy_(&w0);
            w.get(1).copy_(&(-w0));
        });
        let x = Tensor::randn([4, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let targets = [Some(0), Some(2), Some(1), None];
        let (_, cam, t1) = explain_batch(&m, &x, CamMethod::Cam, &targets).unwrap();
        assert_eq!(&t1[..3], &[0, 2, 1]);
        // d logit / dA = W_c / (h·w) at every position, so Grad-CAM's mean,
        // XGrad-CAM's activation-weighted mean and HiResCAM's elementwise
        // gradient all give relu(CAM) / (h·w).
        let expect = cam.relu() / 9.0;
        let max = |t: &Tensor| t.max().double_value(&[]);
        for method in [CamMethod::GradCam, CamMethod::XGradCam, CamMethod::HiResCam] {
            let (_, maps, t2) = explain_batch(&m, &x, method, &targets).unwrap();
            assert_eq!(t1, t2);
            let diff = max(&(&maps - &expect).abs());
            assert!(diff <= 1e-5, "{method:?}: max diff {diff}");
            assert_eq!(max(&maps.get(2).abs()), 0.0, "ReLU drops a negative map");
        }
        assert!(max(&expect.get(0)) > 1e-4);
        assert!(max(&cam.get(2)) <= 0.0);
        // LayerCAM keeps only the positive weights: the same map for class 0
        // (all ≥ 0), none for class 1 (all ≤ 0), and more than Grad-CAM's
        // where class 2's negative weights would have cancelled.
        let (_, layer, _) = explain_batch(&m, &x, CamMethod::LayerCam, &targets).unwrap();
        assert!(max(&(layer.get(0) - expect.get(0)).abs()) <= 1e-5);
        assert_eq!(max(&layer.get(2)), 0.0);
        let gain = layer.get(1) - expect.get(1);
        assert!(gain.min().double_value(&[]) >= -1e-6);
        assert!(max(&gain) > 1e-4, "class 2 has negative weights to drop");
    }

    #[test]
    fn grad_cam_plus_plus_keeps_only_positive_gradients() {
        let m = model(HeadKind::Cam);
        // As above: class 0 has weights ≥ 0, class 1 weights ≤ 0, so the
        // gradient of logit 1 is ≤ 0 everywhere and relu(g) zeroes its map.
        tch::no_grad(|| {
            let (w, _) = m.pooled_linear().unwrap();
            let w0 = w.get(0).abs();
            w.get(0).copy_(&w0);
            w.get(1).copy_(&(-w0));
        });
        let x = Tensor::randn([3, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let targets = [Some(0), Some(1), Some(2)];
        let (_, maps, _) = explain_batch(&m, &x, CamMethod::GradCamPlusPlus, &targets).unwrap();
        assert_eq!(maps.size(), [3, 3, 3]);
        assert!(maps.min().double_value(&[]) >= 0.0);
        assert!(maps.get(0).max().double_value(&[]) > 0.0);
        assert_eq!(maps.get(1).abs().max().double_value(&[]), 0.0);
        // One body pass explains every class the same as a pass per class.
        let feats = tch::no_grad(|| m.features(&x, false));
        let (_, again, _) =
            maps_from_features(&m, &feats, CamMethod::GradCamPlusPlus, &targets).unwrap();
        assert_eq!((&again - &maps).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn faithfulness_scores_are_in_range_and_see_the_map() {
        tch::manual_seed(3);
        let m = model(HeadKind::Cam);
        let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let (_, maps, chosen) = explain_batch(&m, &x, CamMethod::Cam, &[None, None]).unwrap();
        for metric in [Faithfulness::DeletionAuc, Faithfulness::AverageDrop] {
            let a = faithfulness(&m, &x, &maps, &chosen, metric, 64).unwrap();
            let b = faithfulness(&m, &x, &maps, &chosen, metric, 3).unwrap();
            // Up to rounding: libtorch's CPU kernels may sum in another
            // order for another batch size (seen under a loaded CI machine).
            assert!(
                a.iter().zip(&b).all(|(a, b)| (a - b).abs() <= 1e-5),
                "{metric:?}: the pass size changes nothing: {a:?} vs {b:?}"
            );
            assert!(
                a.iter().all(|s| (0.0..=1.0).contains(s)),
                "{metric:?} {a:?}"
            );
        }
        // Deleting everything leaves the all-zero input: a map's AUC and the
        // AUC of the opposite map share both ends of the curve but differ
        // in between, so the order of deletion is used.
        let auc = faithfulness(&m, &x, &maps, &chosen, Faithfulness::DeletionAuc, 8).unwrap();
        let flipped =
            faithfulness(&m, &x, &(-&maps), &chosen, Faithfulness::DeletionAuc, 8).unwrap();
        assert_ne!(auc, flipped);
        assert!(faithfulness(&m, &x, &maps, &chosen[..1], Faithfulness::AverageDrop, 8).is_err());
    }

    #[test]
    fn fastai_head_refuses_cam_but_gives_grad_cam() {
        let m = model(HeadKind::Fastai);
        let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(cam_all_classes(&m, &x), Err(Error::Input(_))));
        let (_, maps, _) = explain_batch(&m, &x, CamMethod::GradCam, &[None, Some(1)]).unwrap();
        assert_eq!(maps.size(), [2, 3, 3]);
        assert!(explain_batch(&m, &x, CamMethod::GradCam, &[None, Some(3)]).is_err());
        assert!(explain_batch(&m, &x, CamMethod::GradCam, &[None]).is_err());
    }
}
