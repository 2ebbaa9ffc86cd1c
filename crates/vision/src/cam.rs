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
//! [`MapRecipe`] and [`recipe_maps`] generalise this to any layer of the
//! body ([`Model::layer_names`]: the body runs without autograd up to the
//! layer, the rest of the model with it, [`Model::forward_from`]), to several
//! layers fused as TorchCAM fuses them, to Score-CAM (gradient free: a
//! masked forward pass per channel) and to pytorch-grad-cam's `aug_smooth`.
//!
//! [`faithfulness`] scores a map by perturbing the image along it (deletion
//! AUC, average drop in confidence, ROAD), removed pixels becoming an
//! explicit [`Baseline`] that is the same for every model.

use camshaft_data::{BoundingBox, Dataset, ResizeMethod, RgbImage, Synthetic, resize};
use camshaft_render::{ActivationMap, OverlayOptions, Panel, format_title, overlay};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::loader::to_chw;
use crate::model::{IMAGENET_MEAN, Model, ModelSpec, Normalization};
use crate::{Error, Result};

/// Which explanation to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Wang et al.'s Score-CAM, as pytorch-grad-cam's `ScoreCAM`: each
    /// channel of the feature map, bilinearly upsampled to the input
    /// (`align_corners=True`, torch's `UpsamplingBilinear2d`) and min–max
    /// normalised (`(a - min) / (max - min + 1e-8)`), masks the input; the
    /// masked images go through the whole model in passes of a bounded
    /// size, and the channel weights are the softmax over channels of the
    /// target logit of each masked image; map `relu(Σ_c w · A)`. Gradient
    /// free; one forward pass per channel (all classes from the same
    /// passes). Any head.
    #[serde(rename = "score_cam")]
    ScoreCam,
}

impl CamMethod {
    /// Every method.
    pub const ALL: [CamMethod; 7] = [
        CamMethod::Cam,
        CamMethod::GradCam,
        CamMethod::GradCamPlusPlus,
        CamMethod::XGradCam,
        CamMethod::LayerCam,
        CamMethod::HiResCam,
        CamMethod::ScoreCam,
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
            CamMethod::ScoreCam => "score_cam",
        }
    }

    /// Whether the method differentiates the model (every method but CAM
    /// and Score-CAM).
    pub fn is_gradient(self) -> bool {
        !matches!(self, CamMethod::Cam | CamMethod::ScoreCam)
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
        CamMethod::ScoreCam => Err(Error::Input(
            "Score-CAM needs the input images: use recipe_maps".into(),
        )),
        gradient => gradient_maps(model, feats, targets, |g, a| weigh(gradient, g, a)),
    }
}

/// The `(N, C, h, w)` feature map `a` weighted by gradient method `method`
/// from the target logit's gradient `g` (summed over channels and ReLU'd
/// by the caller).
fn weigh(method: CamMethod, g: &Tensor, a: &Tensor) -> Result<Tensor> {
    Ok(match method {
        CamMethod::GradCam => g.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?.f_mul(a)?,
        CamMethod::GradCamPlusPlus => grad_cam_plus_plus_weights(g, a)?.f_mul(a)?,
        CamMethod::XGradCam => {
            let sum_a = a.f_sum_dim_intlist(&[2i64, 3][..], true, Kind::Float)?;
            let weights = g
                .f_mul(a)?
                .f_div(&sum_a.f_add_scalar(1e-7)?)?
                .f_sum_dim_intlist(&[2i64, 3][..], true, Kind::Float)?;
            weights.f_mul(a)?
        }
        CamMethod::LayerCam => g.f_relu()?.f_mul(a)?,
        CamMethod::HiResCam => g.f_mul(a)?,
        CamMethod::Cam | CamMethod::ScoreCam => {
            return Err(Error::Input(format!(
                "{} is not a gradient method",
                method.name()
            )));
        }
    })
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

/// How the maps of one request are computed: the method, the layers
/// (indices into [`Model::layer_names`]) and whether they are smoothed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapRecipe {
    /// The method.
    pub method: CamMethod,
    /// The layers, shallowest first, without repeats, at least one. Several
    /// layers are fused as TorchCAM's `fuse_cams` does: each layer's map is
    /// min–max normalised (`(m - min) / (max - min + 1e-8)`, TorchCAM's
    /// `normalized=True`), LayerCAM's then scaled by `tanh(2·m)` (TorchCAM's
    /// `LayerCAM._scale_cams`, the paper's equation 9), each bilinearly
    /// upsampled (`align_corners=False`) to the finest layer's size, and
    /// the fused map is their elementwise maximum.
    pub layers: Vec<usize>,
    /// pytorch-grad-cam's `aug_smooth`: the map is the mean over ttach's
    /// `HorizontalFlip() × Multiply([0.9, 1, 1.1])` (six augmented copies
    /// of the input) of each copy's map, flipped back and min–max
    /// normalised as `scale_cam_image` does (`(m - min) / (max - min +
    /// 1e-7)`), so in [0, 1]. Every copy explains the class chosen on the
    /// unaugmented image.
    pub aug_smooth: bool,
}

impl MapRecipe {
    /// `method` at the body's last layer, unsmoothed: the maps of
    /// [`maps_from_features`].
    pub fn last_layer(model: &Model, method: CamMethod) -> Self {
        MapRecipe {
            method,
            layers: vec![model.last_layer()],
            aug_smooth: false,
        }
    }

    /// Checks the recipe against `model`: layers in range, CAM only at the
    /// last layer of a pooled linear head, no smoothing of CAM.
    pub fn check(&self, model: &Model) -> Result<()> {
        let last = model.last_layer();
        if self.layers.is_empty() || self.layers.iter().any(|&l| l > last) {
            return Err(Error::Input(format!(
                "layers {:?} are not a non-empty subset of 0..={last}",
                self.layers
            )));
        }
        if self.method == CamMethod::Cam {
            pooled_linear(model)?;
            if self.layers != [last] {
                return Err(Error::Input(format!(
                    "CAM applies the head's linear map to the last layer ({}) only: use a gradient method or Score-CAM at other layers",
                    model.layer_names()[last]
                )));
            }
            if self.aug_smooth {
                return Err(Error::Input(
                    "aug_smooth applies to the gradient methods and Score-CAM, not CAM".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The ttach augmentations pytorch-grad-cam's `aug_smooth` runs:
/// `HorizontalFlip() × Multiply([0.9, 1, 1.1])`, as (flip, factor).
pub const AUG_SMOOTH_TRANSFORMS: [(bool, f64); 6] = [
    (false, 0.9),
    (false, 1.0),
    (false, 1.1),
    (true, 0.9),
    (true, 1.0),
    (true, 1.1),
];

/// The logits `(1, classes)` of one image from its feature maps at the
/// recipe's layers (as [`Model::features_at`] gives them, in the recipe's
/// order): the rest of the model from the deepest of them.
pub fn recipe_logits(model: &Model, feats: &[Tensor], recipe: &MapRecipe) -> Result<Tensor> {
    let (deepest, layer) = feats
        .iter()
        .zip(&recipe.layers)
        .max_by_key(|(_, l)| **l)
        .ok_or_else(|| Error::Input("no layer to explain at".into()))?;
    let _guard = tch::no_grad_guard();
    Ok(model.forward_from(deepest, *layer, false))
}

/// The maps `(k, h, w)` of `classes` for one image: `x` is its normalised
/// input `(1, 3, S, S)`, `feats` its feature maps at the recipe's layers
/// (computed without autograd, in the recipe's order). Score-CAM's masked
/// images go through the model in passes of at most `max_batch` (at least
/// 2, see [`faithfulness`]).
pub fn recipe_maps(
    model: &Model,
    x: &Tensor,
    feats: &[Tensor],
    recipe: &MapRecipe,
    classes: &[i64],
    max_batch: usize,
) -> Result<Tensor> {
    recipe.check(model)?;
    let n_classes = model.spec().num_classes() as i64;
    if let Some(t) = classes.iter().find(|&&t| t < 0 || t >= n_classes) {
        return Err(Error::Input(format!(
            "target class {t} is outside 0..{n_classes}"
        )));
    }
    if classes.is_empty() {
        return Err(Error::Input("no class to explain".into()));
    }
    if !recipe.aug_smooth {
        return fused_maps(model, x, feats, recipe, classes, max_batch);
    }
    let mut sum: Option<Tensor> = None;
    for (flip, factor) in AUG_SMOOTH_TRANSFORMS {
        let maps = if !flip && factor == 1.0 {
            fused_maps(model, x, feats, recipe, classes, max_batch)?
        } else {
            let mut xa = x.f_mul_scalar(factor)?;
            if flip {
                xa = xa.f_flip([3])?;
            }
            let fa = tch::no_grad(|| model.features_at(&xa, &recipe.layers, false))?;
            let m = fused_maps(model, &xa, &fa, recipe, classes, max_batch)?;
            if flip { m.f_flip([2])? } else { m }
        };
        let scaled = min_max(&maps, 1e-7)?;
        sum = Some(match sum {
            Some(s) => s.f_add(&scaled)?,
            None => scaled,
        });
    }
    let sum = sum.ok_or_else(|| Error::Input("no augmentation".into()))?;
    Ok(sum.f_div_scalar(AUG_SMOOTH_TRANSFORMS.len() as f64)?)
}

/// Each `(h, w)` map of `maps` `(k, h, w)` as `(m - min) / (max - min + eps)`.
fn min_max(maps: &Tensor, eps: f64) -> Result<Tensor> {
    let k = maps.size()[0];
    let flat = maps.f_view([k, -1])?;
    let low = flat.f_amin(&[1i64][..], true)?;
    let shifted = flat.f_sub(&low)?;
    let high = shifted.f_amax(&[1i64][..], true)?;
    Ok(shifted.f_div(&high.f_add_scalar(eps)?)?.f_view_as(maps)?)
}

/// The recipe's layers' maps of `classes`, fused when there are several
/// (see [`MapRecipe::layers`]).
fn fused_maps(
    model: &Model,
    x: &Tensor,
    feats: &[Tensor],
    recipe: &MapRecipe,
    classes: &[i64],
    max_batch: usize,
) -> Result<Tensor> {
    if feats.len() != recipe.layers.len() {
        return Err(Error::Input(format!(
            "{} feature maps for {} layers",
            feats.len(),
            recipe.layers.len()
        )));
    }
    let mut maps = Vec::with_capacity(feats.len());
    for (f, &layer) in feats.iter().zip(&recipe.layers) {
        maps.push(layer_maps(
            model,
            x,
            f,
            layer,
            recipe.method,
            classes,
            max_batch,
        )?);
    }
    if maps.len() == 1 {
        return Ok(maps.swap_remove(0));
    }
    let h = maps.iter().map(|m| m.size()[1]).max().unwrap_or(1);
    let w = maps.iter().map(|m| m.size()[2]).max().unwrap_or(1);
    let mut fused: Option<Tensor> = None;
    for m in maps {
        let mut m = min_max(&m, 1e-8)?;
        if recipe.method == CamMethod::LayerCam {
            m = m.f_mul_scalar(2.0)?.f_tanh()?;
        }
        let up = m
            .f_unsqueeze(1)?
            .f_upsample_bilinear2d([h, w], false, None, None)?
            .f_squeeze_dim(1)?;
        fused = Some(match fused {
            Some(f) => f.f_maximum(&up)?,
            None => up,
        });
    }
    fused.ok_or_else(|| Error::Input("no layer to fuse".into()))
}

/// One layer's maps `(k, h, w)` of `classes` for one image.
fn layer_maps(
    model: &Model,
    x: &Tensor,
    feats: &Tensor,
    layer: usize,
    method: CamMethod,
    classes: &[i64],
    max_batch: usize,
) -> Result<Tensor> {
    let idx = Tensor::from_slice(classes).to_device(feats.device());
    match method {
        CamMethod::Cam => {
            let (w, b) = pooled_linear(model)?;
            let _guard = tch::no_grad_guard();
            let w = w.f_index_select(0, &idx)?;
            let mut maps = Tensor::f_einsum("cb,abij->acij", &[&w, feats], None::<&[i64]>)?;
            if let Some(b) = b {
                maps = maps.f_add(&b.f_index_select(0, &idx)?.view([1, -1, 1, 1]))?;
            }
            Ok(maps.f_squeeze_dim(0)?)
        }
        CamMethod::ScoreCam => score_cam_maps(model, x, feats, classes, max_batch),
        gradient => {
            let mut out = Vec::with_capacity(classes.len());
            for &class in classes {
                let leaf = feats.detach().set_requires_grad(true);
                let logits = model.forward_from(&leaf, layer, false);
                let selected = logits.f_select(1, class)?.f_sum(Kind::Float)?;
                let grads = Tensor::f_run_backward(&[selected], &[&leaf], false, false)?;
                let grad = grads
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Input("no gradient reached the feature map".into()))?;
                let map = weigh(gradient, &grad, &leaf.detach())?
                    .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?
                    .f_relu()?;
                out.push(map.f_squeeze_dim(0)?);
            }
            Ok(Tensor::f_stack(&out, 0)?)
        }
    }
}

/// pytorch-grad-cam's `ScoreCAM` (see [`CamMethod::ScoreCam`]) for one
/// image `x` `(1, 3, S, S)` and its feature map `(1, C, h, w)`: the masked
/// images are built and run `max_batch` channels at a time, so memory is
/// bounded by the pass, not by the channel count.
fn score_cam_maps(
    model: &Model,
    x: &Tensor,
    feats: &Tensor,
    classes: &[i64],
    max_batch: usize,
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let size = x.size();
    let (height, width) = (size[2], size[3]);
    let channels = feats.size()[1];
    let step = max_batch.max(2) as i64;
    let mut scores = Vec::new();
    let mut start = 0;
    while start < channels {
        let len = step.min(channels - start);
        let chunk = feats.f_narrow(1, start, len)?.f_transpose(0, 1)?;
        let up = chunk.f_upsample_bilinear2d([height, width], true, None, None)?;
        let masks = min_max(&up.f_view([len, height, width])?, 1e-8)?;
        let masked = x.f_mul(&masks.f_unsqueeze(1)?)?;
        // A pass of one image takes another convolution path (see
        // `faithfulness`): a lone last channel runs beside a copy.
        let logits = if len == 1 {
            model
                .forward_t(&Tensor::f_cat(&[&masked, &masked], 0)?, false)
                .f_narrow(0, 0, 1)?
        } else {
            model.forward_t(&masked, false)
        };
        scores.push(logits.to_kind(Kind::Float));
        start += len;
    }
    let scores = Tensor::f_cat(&scores, 0)?; // (C, classes)
    let idx = Tensor::from_slice(classes).to_device(scores.device());
    let weights = scores
        .f_index_select(1, &idx)?
        .f_softmax(0, Kind::Float)?
        .f_transpose(0, 1)?; // (k, C)
    let a = feats.f_squeeze_dim(0)?; // (C, h, w)
    let maps = Tensor::f_einsum("kc,cij->kij", &[&weights, &a], None::<&[i64]>)?;
    Ok(maps.f_relu()?)
}

/// A faithfulness score of a map: does the model's confidence depend on the
/// region the map highlights? Lower is more faithful for all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Faithfulness {
    /// Deletion AUC: the pixels are replaced by the [`Baseline`]'s in
    /// decreasing order of the bilinearly upsampled map
    /// (`align_corners=False`; ties in pixel order), `⌊k·P/20⌋` of the `P`
    /// pixels after step `k` of [`DELETION_STEPS`]; the score is the
    /// trapezoidal area under the class-probability curve over
    /// `x = k/20 ∈ [0, 1]`.
    DeletionAuc,
    /// Average drop in confidence: `max(0, p - p_masked) / p`, where
    /// `p_masked` is the class probability of `b + (x - b) · m`: the image
    /// `x` blended towards the [`Baseline`] `b` by the upsampled map `m`
    /// min–max normalised as pytorch-grad-cam's `scale_cam_image` does
    /// (`(m - min) / (max - min + 1e-7)`). With the `mean` baseline on an
    /// ImageNet-normalised model (`b = 0`) this is pytorch-grad-cam's
    /// `x · m` exactly.
    AverageDrop,
    /// ROAD, pytorch-grad-cam's `ROADMostRelevantFirst(percentile=80)`:
    /// the pixels whose upsampled map value is at least the map's 80th
    /// percentile (numpy's linear interpolation) are removed and imputed
    /// by its `NoisyLinearImputer` — each removed pixel the weighted mean
    /// of its 8 neighbours (1/6 edge, 1/12 diagonal, in-bounds only), the
    /// linear system solved by conjugate gradients to a relative residual
    /// of 1e-6 (at most [`ROAD_MAX_ITERATIONS`]) — and the score is
    /// `p_imputed - p` (pytorch-grad-cam's `return_diff` with softmax
    /// targets), in [-1, 1]. Deviation, for determinism: no noise is added
    /// to the imputed pixels (pytorch-grad-cam adds N(0, 0.01²)). The
    /// baseline does not apply (the imputation replaces it).
    Road,
}

/// What a removed pixel becomes in [`Faithfulness::DeletionAuc`] and
/// [`Faithfulness::AverageDrop`]: the same choice, in pixel space, for every
/// model, whatever its normalisation, so scores compare across models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// ImageNet's mean colour (0.485, 0.456, 0.406): the default.
    #[default]
    Mean,
    /// Black (0, 0, 0).
    Black,
    /// The image itself blurred by an 11×11 Gaussian of σ = 5 pixels
    /// (RISE's deletion baseline), reflect-padded at the borders.
    Blur,
}

impl Baseline {
    /// Its snake_case name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Mean => "mean",
            Baseline::Black => "black",
            Baseline::Blur => "blur",
        }
    }

    /// The baseline image `(3, S, S)` of the normalised image `x`
    /// `(3, S, S)` in `normalization`'s input space.
    pub fn image(self, x: &Tensor, normalization: Normalization) -> Result<Tensor> {
        let colour = |rgb: [f32; 3]| -> Result<Tensor> {
            let mut v = rgb;
            if let Some((mean, std)) = normalization.mean_std() {
                for c in 0..3 {
                    v[c] = (rgb[c] - mean[c]) / std[c];
                }
            }
            Ok(Tensor::from_slice(&v)
                .to_device(x.device())
                .f_view([3, 1, 1])?
                .f_expand_as(x)?
                .f_contiguous()?)
        };
        match self {
            Baseline::Mean => colour(IMAGENET_MEAN),
            Baseline::Black => colour([0.0; 3]),
            Baseline::Blur => {
                let sigma = 5.0f64;
                let taps: Vec<f32> = (-5..=5)
                    .map(|i| (-(f64::from(i).powi(2)) / (2.0 * sigma * sigma)).exp() as f32)
                    .collect();
                let total: f32 = taps.iter().sum();
                let k = Tensor::from_slice(&taps)
                    .f_div_scalar(f64::from(total))?
                    .to_device(x.device());
                let kernel = k.f_view([11, 1])?.f_mul(&k.f_view([1, 11])?)?;
                let weight = kernel.f_view([1, 1, 11, 11])?.f_repeat([3, 1, 1, 1])?;
                let padded = x
                    .to_kind(Kind::Float)
                    .f_unsqueeze(0)?
                    .f_reflection_pad2d([5, 5, 5, 5])?;
                Ok(padded
                    .f_conv2d(&weight, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 3)?
                    .f_squeeze_dim(0)?)
            }
        }
    }
}

/// Steps of the deletion curve ([`Faithfulness::DeletionAuc`]).
pub const DELETION_STEPS: i64 = 20;

/// Most conjugate-gradient iterations of ROAD's imputation
/// ([`Faithfulness::Road`]): enough for holes 256 pixels across.
pub const ROAD_MAX_ITERATIONS: i64 = 1000;

/// ROAD's share of pixels kept: those below this percentile of the map.
pub const ROAD_PERCENTILE: f64 = 80.0;

/// The `metric` score of each map: `maps[i]` `(h, w)` explains class
/// `classes[i]` of the normalised image `images[i]` `(3, S, S)`; removed
/// pixels become `baseline`'s (in the model's input space). The
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
    baseline: Baseline,
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
    let normalization = model.spec().normalization;
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
        let base = match metric {
            Faithfulness::Road => None,
            _ => Some(baseline.image(&x, normalization)?),
        };
        let score = match (metric, base) {
            (Faithfulness::DeletionAuc, Some(base)) => {
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
                let delta = x.f_sub(&base)?.f_unsqueeze(0)?;
                for chunk in steps.chunks(max_batch.max(2)) {
                    let removed = Tensor::from_slice(chunk)
                        .to_device(x.device())
                        .view([-1, 1, 1, 1]);
                    let keep = ranks.f_ge_tensor(&removed)?.to_kind(Kind::Float);
                    let batch = delta.f_mul(&keep)?.f_add(&base.f_unsqueeze(0)?)?;
                    probs.extend(class_probabilities(model, &batch, class)?);
                }
                let sum: f64 = probs.iter().map(|&p| f64::from(p)).sum();
                let ends = f64::from(probs[0]) + f64::from(probs[probs.len() - 1]);
                ((sum - ends / 2.0) / DELETION_STEPS as f64) as f32
            }
            (Faithfulness::AverageDrop, Some(base)) => {
                let low = up.f_min()?;
                let shifted = up.f_sub(&low)?;
                let scaled = shifted.f_div(&shifted.f_max()?.f_add_scalar(1e-7)?)?;
                let masked = x.f_sub(&base)?.f_mul(&scaled.unsqueeze(0))?.f_add(&base)?;
                let batch = Tensor::f_stack(&[x.shallow_clone(), masked], 0)?;
                let p = class_probabilities(model, &batch, class)?;
                let (p, p_masked) = (p[0], p[1]);
                if p > 0.0 {
                    (p - p_masked).max(0.0) / p
                } else {
                    0.0
                }
            }
            _ => {
                let imputed = road_impute(&x, &up)?;
                let batch = Tensor::f_stack(&[x.shallow_clone(), imputed], 0)?;
                let p = class_probabilities(model, &batch, class)?;
                p[1] - p[0]
            }
        };
        scores.push(score);
    }
    Ok(scores)
}

/// ROAD's most-relevant-first imputation of `x` `(3, H, W)` along the
/// upsampled map `up` `(H, W)` (see [`Faithfulness::Road`]).
fn road_impute(x: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (height, width) = (up.size()[0], up.size()[1]);
    let device = x.device();
    // numpy's percentile, linear interpolation.
    let sorted = up.view([-1]).to_kind(Kind::Double).f_sort(0, false)?.0;
    let rank = ROAD_PERCENTILE / 100.0 * ((height * width - 1) as f64);
    let lo = rank.floor() as i64;
    let hi = (lo + 1).min(height * width - 1);
    let (a, b) = (sorted.double_value(&[lo]), sorted.double_value(&[hi]));
    let threshold = a + (rank - lo as f64) * (b - a);
    let known = up
        .to_kind(Kind::Double)
        .f_lt(threshold)?
        .to_kind(Kind::Double);
    let unknown = known.f_neg()?.f_add_scalar(1.0)?;
    let (e, d) = (1.0 / 6.0, 1.0 / 12.0);
    let kernel = Tensor::from_slice(&[d, e, d, e, 0.0, e, d, e, d])
        .to_device(device)
        .f_view([1, 1, 3, 3])?;
    // Neighbour sums with zero padding: out-of-bounds neighbours count
    // neither in the sum nor in the weights (`sum_neighbors`).
    let conv = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_unsqueeze(1)?
            .f_conv2d(&kernel, None::<&Tensor>, [1, 1], [1, 1], [1, 1], 1)?
            .f_squeeze_dim(1)?)
    };
    let weights = conv(&Tensor::f_ones([1, height, width], (Kind::Double, device))?)?;
    let img = x.to_kind(Kind::Double);
    // Solve, on the unknown pixels u, (diag(s) - W_uu) u = W_uk v: the
    // matrix is symmetric positive definite, so conjugate gradients apply.
    let apply = |u: &Tensor| -> Result<Tensor> {
        Ok(u.f_mul(&weights)?.f_sub(&conv(u)?)?.f_mul(&unknown)?)
    };
    let rhs = conv(&img.f_mul(&known)?)?.f_mul(&unknown)?;
    let dot = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        Ok(a.f_mul(b)?
            .f_sum_dim_intlist(&[1i64, 2][..], true, Kind::Double)?)
    };
    let mut u = rhs.f_zeros_like()?;
    let mut r = rhs.shallow_clone();
    let mut p = r.shallow_clone();
    let mut rr = dot(&r, &r)?;
    let stop = rr.f_max()?.double_value(&[]) * 1e-12;
    for _ in 0..ROAD_MAX_ITERATIONS {
        if rr.f_max()?.double_value(&[]) <= stop {
            break;
        }
        let ap = apply(&p)?;
        let alpha = rr.f_div(&dot(&p, &ap)?.f_clamp_min(1e-300)?)?;
        u = u.f_add(&p.f_mul(&alpha)?)?;
        r = r.f_sub(&ap.f_mul(&alpha)?)?;
        let next = dot(&r, &r)?;
        let beta = next.f_div(&rr.f_clamp_min(1e-300)?)?;
        p = r.f_add(&p.f_mul(&beta)?)?;
        rr = next;
    }
    Ok(img
        .f_mul(&known)?
        .f_add(&u.f_mul(&unknown)?)?
        .to_kind(x.kind()))
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
    use crate::model::{Arch, Head, ModelSpec};

    fn model(head: Head) -> Model {
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
        for head in [Head::Cam, Head::Linear] {
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
        let m = model(Head::Cam);
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
        let m = model(Head::Cam);
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
        let m = model(Head::Cam);
        let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let (_, maps, chosen) = explain_batch(&m, &x, CamMethod::Cam, &[None, None]).unwrap();
        for metric in [
            Faithfulness::DeletionAuc,
            Faithfulness::AverageDrop,
            Faithfulness::Road,
        ] {
            let a = faithfulness(&m, &x, &maps, &chosen, metric, Baseline::Mean, 64).unwrap();
            let b = faithfulness(&m, &x, &maps, &chosen, metric, Baseline::Mean, 3).unwrap();
            // Up to rounding: libtorch's CPU kernels may sum in another
            // order for another batch size (seen under a loaded CI machine).
            assert!(
                a.iter().zip(&b).all(|(a, b)| (a - b).abs() <= 1e-5),
                "{metric:?}: the pass size changes nothing: {a:?} vs {b:?}"
            );
            assert!(
                a.iter().all(|s| (-1.0..=1.0).contains(s)),
                "{metric:?} {a:?}"
            );
        }
        // Deleting everything leaves the all-zero input: a map's AUC and the
        // AUC of the opposite map share both ends of the curve but differ
        // in between, so the order of deletion is used.
        let auc = faithfulness(
            &m,
            &x,
            &maps,
            &chosen,
            Faithfulness::DeletionAuc,
            Baseline::Black,
            8,
        )
        .unwrap();
        let flipped = faithfulness(
            &m,
            &x,
            &(-&maps),
            &chosen,
            Faithfulness::DeletionAuc,
            Baseline::Black,
            8,
        )
        .unwrap();
        assert_ne!(auc, flipped);
        assert!(
            faithfulness(
                &m,
                &x,
                &maps,
                &chosen[..1],
                Faithfulness::AverageDrop,
                Baseline::Mean,
                8
            )
            .is_err()
        );
    }

    #[test]
    fn fastai_head_refuses_cam_but_gives_grad_cam() {
        let m = model(Head::Fastai);
        let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(cam_all_classes(&m, &x), Err(Error::Input(_))));
        let (_, maps, _) = explain_batch(&m, &x, CamMethod::GradCam, &[None, Some(1)]).unwrap();
        assert_eq!(maps.size(), [2, 3, 3]);
        assert!(explain_batch(&m, &x, CamMethod::GradCam, &[None, Some(3)]).is_err());
        assert!(explain_batch(&m, &x, CamMethod::GradCam, &[None]).is_err());
    }

    #[test]
    fn layers_name_torchvision_modules_and_split_the_model() {
        tch::manual_seed(5);
        let m = model(Head::Fastai);
        assert_eq!(m.layer_names(), ["layer1", "layer2", "layer3", "layer4"]);
        let err = m.layer_index("layer5").unwrap_err().to_string();
        assert!(err.contains("layer1, layer2, layer3, layer4"), "{err}");
        let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let whole = m.forward_t(&x, false);
        let feats = m.features_at(&x, &[2, 0], false).unwrap();
        assert_eq!(feats[0].size(), [2, 256, 6, 6]);
        assert_eq!(feats[1].size(), [2, 64, 24, 24]);
        for (f, layer) in feats.iter().zip([2, 0]) {
            let rest = m.forward_from(f, layer, false);
            let diff = (&rest - &whole).abs().max().double_value(&[]);
            assert!(diff <= 1e-4, "layer {layer}: {diff}");
        }
        let cnn = Model::new(
            ModelSpec {
                arch: Arch::Cnn,
                head: Head::Linear,
                class_names: vec!["a".into(), "b".into()],
                input_size: 16,
                normalization: Normalization::None,
            },
            tch::Device::Cpu,
        )
        .unwrap();
        assert_eq!(cnn.layer_names(), ["0", "1", "2"]);
        let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let f = cnn.features_at(&x, &[0], false).unwrap();
        assert_eq!(f[0].size(), [2, 128, 12, 12]);
        assert!(f[0].min().double_value(&[]) < 0.0, "before the ReLU");
        let diff = (cnn.forward_from(&f[0], 0, false) - cnn.forward_t(&x, false))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff <= 1e-4, "{diff}");
    }

    #[test]
    fn recipes_at_the_last_layer_match_the_batch_maps_and_check_cam() {
        tch::manual_seed(6);
        let m = model(Head::Cam);
        let x = Tensor::randn([1, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        for method in CamMethod::ALL
            .into_iter()
            .filter(|&m| m != CamMethod::ScoreCam)
        {
            let recipe = MapRecipe::last_layer(&m, method);
            let feats = m.features_at(&x, &recipe.layers, false).unwrap();
            let ours = recipe_maps(&m, &x, &feats, &recipe, &[2, 0], 8).unwrap();
            for (k, class) in [2i64, 0].into_iter().enumerate() {
                let (_, theirs, _) = explain_batch(&m, &x, method, &[Some(class)]).unwrap();
                let diff = (ours.get(k as i64) - theirs.get(0))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(diff <= 1e-5, "{method:?} class {class}: {diff}");
            }
        }
        let layer3 = MapRecipe {
            method: CamMethod::Cam,
            layers: vec![2],
            aug_smooth: false,
        };
        let err = layer3.check(&m).unwrap_err().to_string();
        assert!(err.contains("last layer (layer4)"), "{err}");
        let smooth = MapRecipe {
            aug_smooth: true,
            ..MapRecipe::last_layer(&m, CamMethod::Cam)
        };
        assert!(smooth.check(&m).is_err());
    }

    #[test]
    fn fusion_is_at_the_finest_layer_and_smoothing_in_unit_range() {
        tch::manual_seed(7);
        let m = model(Head::Fastai);
        let x = Tensor::randn([1, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let recipe = MapRecipe {
            method: CamMethod::LayerCam,
            layers: vec![1, 3],
            aug_smooth: false,
        };
        let feats = m.features_at(&x, &recipe.layers, false).unwrap();
        let fused = recipe_maps(&m, &x, &feats, &recipe, &[1], 8).unwrap();
        assert_eq!(fused.size(), [1, 12, 12]);
        // tanh(2·m) of maps in [0, 1]: in [0, tanh 2], reaching it.
        let top = fused.max().double_value(&[]);
        assert!((top - 2f64.tanh()).abs() <= 1e-5, "{top}");
        let smooth = MapRecipe {
            method: CamMethod::GradCam,
            layers: vec![2],
            aug_smooth: true,
        };
        let feats = m.features_at(&x, &smooth.layers, false).unwrap();
        let maps = recipe_maps(&m, &x, &feats, &smooth, &[0, 1], 8).unwrap();
        assert_eq!(maps.size(), [2, 6, 6]);
        assert!(maps.min().double_value(&[]) >= 0.0 && maps.max().double_value(&[]) <= 1.0);
        let plain = recipe_maps(
            &m,
            &x,
            &feats,
            &MapRecipe {
                aug_smooth: false,
                ..smooth.clone()
            },
            &[0, 1],
            8,
        )
        .unwrap();
        assert!(
            (maps - min_max(&plain, 1e-7).unwrap())
                .abs()
                .max()
                .double_value(&[])
                > 1e-4
        );
    }

    #[test]
    fn score_cam_does_not_depend_on_the_pass_size() {
        tch::manual_seed(8);
        let m = model(Head::Linear);
        let x = Tensor::randn([1, 3, 96, 96], (Kind::Float, tch::Device::Cpu));
        let recipe = MapRecipe::last_layer(&m, CamMethod::ScoreCam);
        let feats = m.features_at(&x, &recipe.layers, false).unwrap();
        let a = recipe_maps(&m, &x, &feats, &recipe, &[0, 1, 2], 64).unwrap();
        let b = recipe_maps(&m, &x, &feats, &recipe, &[0, 1, 2], 5).unwrap();
        assert_eq!(a.size(), [3, 3, 3]);
        assert!((&a - &b).abs().max().double_value(&[]) <= 1e-5);
        assert!(a.min().double_value(&[]) >= 0.0);
        assert!(a.max().double_value(&[]) > 0.0);
    }

    #[test]
    fn baselines_are_pixel_colours_in_each_input_space() {
        let x = Tensor::zeros([3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let mean = Baseline::Mean.image(&x, Normalization::Imagenet).unwrap();
        assert_eq!(mean.abs().max().double_value(&[]), 0.0);
        let mean = Baseline::Mean.image(&x, Normalization::None).unwrap();
        assert!((mean.double_value(&[1, 2, 3]) - 0.456).abs() < 1e-6);
        let black = Baseline::Black.image(&x, Normalization::Imagenet).unwrap();
        assert!((black.double_value(&[0, 0, 0]) + 0.485 / 0.229).abs() < 1e-5);
        // Blurring a constant image leaves it as it is (reflect padding).
        let flat = Tensor::full([3, 16, 16], 0.3, (Kind::Float, tch::Device::Cpu));
        let blur = Baseline::Blur.image(&flat, Normalization::None).unwrap();
        assert!((blur - 0.3).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn road_imputes_a_ramp_exactly_inside_and_keeps_the_rest() {
        let (h, w) = (32i64, 32i64);
        let ramp = Tensor::arange(w, (Kind::Float, tch::Device::Cpu))
            .view([1, 1, w])
            .expand([3, h, w], false)
            .contiguous()
            .f_div_scalar(10.0)
            .unwrap();
        // A bump in the middle: its top 20% is far from the borders.
        let ys = Tensor::arange(h, (Kind::Float, tch::Device::Cpu)).view([h, 1]) - 15.5;
        let xs = Tensor::arange(w, (Kind::Float, tch::Device::Cpu)).view([1, w]) - 15.5;
        let up = (-(&ys * &ys + &xs * &xs) / 50.0).exp();
        let imputed = road_impute(&ramp, &up).unwrap();
        let diff = (&imputed - &ramp).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4,
            "a linear ramp is its own linear imputation: {diff}"
        );
        // A bright square removed is filled from its surroundings.
        let img = ramp.copy();
        let _ = img.narrow(1, 12, 8).narrow(2, 12, 8).fill_(5.0);
        let filled = road_impute(&img, &up).unwrap();
        assert!(filled.double_value(&[0, 16, 16]) < 4.0);
        assert_eq!(
            filled.double_value(&[0, 0, 0]),
            img.double_value(&[0, 0, 0])
        );
    }
}
