//! One forward pass over a batch of prepared images: maps of every asked
//! class, probabilities, faithfulness scores. Blocking: runs on an inference
//! thread, never on a tokio worker.

use camshaft_vision::cam::{self, Baseline, Faithfulness, MapRecipe};
use camshaft_vision::model::channels_last;
use camshaft_vision::{CamMethod, Model, Precision};
use tch::{Kind, Tensor};

/// One image to explain, decoded and preprocessed.
pub(crate) struct ImageJob {
    /// `(3, S, S)`, normalised, on the CPU.
    pub input: Tensor,
    /// The class to explain; `None`: the predicted one.
    pub target: Option<i64>,
    /// Maps wanted: the target, then the most probable other classes
    /// (already capped at the number of classes, at least 1).
    pub top_k: usize,
    /// Score each map with this metric.
    pub faithfulness: Option<Faithfulness>,
    /// What removed pixels become in the faithfulness scores.
    pub baseline: Baseline,
}

/// The model's answer for one image, on the CPU.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RawExplanation {
    /// Logits, one per class.
    pub logits: Vec<f32>,
    /// Softmax of the logits.
    pub probabilities: Vec<f32>,
    /// The target's map first, then the other classes asked.
    pub maps: Vec<RawMap>,
}

/// One class's map at feature resolution.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RawMap {
    /// The class explained.
    pub class: i64,
    /// Rows.
    pub height: i64,
    /// Columns.
    pub width: i64,
    /// Row-major, raw.
    pub values: Vec<f32>,
    /// The asked faithfulness score.
    pub faithfulness: Option<f32>,
}

/// Explains `jobs` with `recipe` in one body pass (the caller keeps a batch
/// at most `max_batch` images). With `duplicate_lone`, a batch of one image
/// is run as two copies of it: libtorch may pick another convolution
/// algorithm for a batch of one, whose results differ in the last digits,
/// and an image's maps must not depend on what it was batched with (see
/// [`lone_pass_is_batch_invariant`] for when that is not needed). Every
/// other computation runs image by image, so results are the same whatever
/// the batch.
pub(crate) fn run_batch(
    model: &Model,
    recipe: &MapRecipe,
    jobs: &[ImageJob],
    max_batch: usize,
    duplicate_lone: bool,
) -> Result<Vec<RawExplanation>, String> {
    let n = jobs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut inputs: Vec<&Tensor> = jobs.iter().map(|j| &j.input).collect();
    if duplicate_lone && n == 1 {
        inputs.push(&jobs[0].input);
    }
    let x = pass_input(model, &inputs)?;
    let feats =
        tch::no_grad(|| model.features_at(&x, &recipe.layers, false)).map_err(|e| e.to_string())?;
    explain_features(model, recipe, jobs, &x, &feats, max_batch)
}

/// The input of a pass: `inputs` stacked on the model's device; on a CPU
/// in channels-last order (NHWC strides), the order the weights are kept in
/// there (see [`for_inference`]).
fn pass_input(model: &Model, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let x = Tensor::f_stack(inputs, 0).map_err(|e| e.to_string())?;
    match model.device() {
        tch::Device::Cpu => channels_last(&x).map_err(|e| e.to_string()),
        device => Ok(x.to_device(device)),
    }
}

/// Readies a loaded (and folded) `model` for serving: on a CPU its
/// convolution weights laid out channels-last ([`Model::to_channels_last`]:
/// with channels-last inputs libtorch's oneDNN convolutions then run in
/// NHWC throughout, about 1.2× faster than NCHW for a ResNet34 at 224 and
/// 512 px on 2 cores; values unchanged, results move in the last digits as
/// with any other kernel choice), then its body in `precision`
/// ([`Model::body_in`]); a folded float32 body on a CPU then has its
/// convolution weights packed for oneDNN once ([`Model::pack_convolutions`],
/// about 1.17× faster again; where libtorch cannot, it is logged and the
/// model served unpacked).
pub(crate) fn for_inference(
    model: &mut Model,
    precision: Precision,
) -> camshaft_vision::Result<()> {
    let cpu = model.device() == tch::Device::Cpu;
    if cpu {
        model.to_channels_last()?;
    }
    model.body_in(precision)?;
    if cpu
        && precision == Precision::Fp32
        && model.is_folded()
        && let Err(e) = model.pack_convolutions()
    {
        tracing::warn!(error = %e, "serving with unpacked convolutions");
    }
    Ok(())
}

/// Whether, for `model` on this thread (its device, thread count and input
/// size decide libtorch's kernels), a pass of one image gives bit-for-bit
/// what the same image gets in a pass of two, for the body and every method
/// the model has: then a lone image need not be run as two copies. Probed
/// with two fixed pseudo-random images (four images' compute); kernels are
/// chosen by shape, not by values, so a difference shows on any input. Any
/// failure answers `false` (the safe way).
pub(crate) fn lone_pass_is_batch_invariant(model: &Model) -> bool {
    let size = i64::from(model.spec().input_size);
    let image = |seed: u64| {
        // A small LCG: values in [-2, 2), like normalised pixels.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let values: Vec<f32> = (0..3 * size * size)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        Tensor::from_slice(&values).view([3, size, size])
    };
    let classes = model.spec().num_classes();
    let jobs: Vec<ImageJob> = [1u64, 2]
        .into_iter()
        .map(|seed| ImageJob {
            input: image(seed),
            target: None,
            top_k: classes.clamp(1, 2),
            faithfulness: None,
            baseline: Baseline::default(),
        })
        .collect();
    let last = vec![model.last_layer()];
    let probe = || -> Result<bool, String> {
        let pass = |jobs: &[ImageJob]| -> Result<(Tensor, Vec<Tensor>), String> {
            let inputs: Vec<&Tensor> = jobs.iter().map(|j| &j.input).collect();
            let x = pass_input(model, &inputs)?;
            let feats =
                tch::no_grad(|| model.features_at(&x, &last, false)).map_err(|e| e.to_string())?;
            Ok((x, feats))
        };
        let (x2, f2) = pass(&jobs)?;
        let has_cam = model.pooled_linear().is_some();
        // Score-CAM's passes are of channels, whatever the images: not probed.
        let methods: Vec<MapRecipe> = CamMethod::ALL
            .into_iter()
            .filter(|&m| (m != CamMethod::Cam || has_cam) && m != CamMethod::ScoreCam)
            .map(|m| MapRecipe::last_layer(model, m))
            .collect();
        let mut together = Vec::new();
        for recipe in &methods {
            together.push(explain_features(model, recipe, &jobs, &x2, &f2, 1)?);
        }
        for (i, job) in jobs.iter().enumerate() {
            let lone = std::slice::from_ref(job);
            let (x1, f1) = pass(lone)?;
            if !f1[0].get(0).equal(&f2[0].get(i as i64)) {
                return Ok(false);
            }
            for (recipe, both) in methods.iter().zip(&together) {
                let alone = explain_features(model, recipe, lone, &x1, &f1, 1)?;
                if alone.first() != both.get(i) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe))
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
}

/// The explanations of `jobs` from their stacked inputs `x` and the body's
/// feature maps `feats` at the recipe's layers (rows past `jobs.len()` are
/// copies, ignored). The rest of the model runs image by image: its
/// products (CAM's einsum, the linear map) would otherwise run as matrix
/// products whose shape, and so whose rounding, depends on how many images
/// share the pass.
fn explain_features(
    model: &Model,
    recipe: &MapRecipe,
    jobs: &[ImageJob],
    x: &Tensor,
    feats: &[Tensor],
    max_batch: usize,
) -> Result<Vec<RawExplanation>, String> {
    let tch_err = |e: tch::TchError| e.to_string();
    let vision_err = |e: camshaft_vision::Error| e.to_string();
    let to_cpu = |t: Tensor| {
        t.detach()
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
    };
    let mut out = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let rows: Vec<Tensor> = feats.iter().map(|f| f.narrow(0, i as i64, 1)).collect();
        let image = x.narrow(0, i as i64, 1);
        let logits = to_cpu(cam::recipe_logits(model, &rows, recipe).map_err(vision_err)?);
        let probs = logits.f_softmax(-1, Kind::Float).map_err(tch_err)?;
        let logits = Vec::<f32>::try_from(&logits.flatten(0, -1)).map_err(tch_err)?;
        let probabilities = Vec::<f32>::try_from(&probs.flatten(0, -1)).map_err(tch_err)?;
        // The target, then the most probable other classes.
        let predicted = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k as i64);
        let target = job.target.unwrap_or(predicted);
        let mut order: Vec<i64> = (0..probabilities.len() as i64).collect();
        order.sort_by(|&a, &b| probabilities[b as usize].total_cmp(&probabilities[a as usize]));
        let mut wanted = vec![target];
        wanted.extend(
            order
                .into_iter()
                .filter(|&c| c != target)
                .take(job.top_k.max(1) - 1),
        );
        let stacked = to_cpu(
            cam::recipe_maps(model, &image, &rows, recipe, &wanted, max_batch)
                .map_err(vision_err)?,
        );
        let scores = match job.faithfulness {
            Some(metric) => {
                let k = wanted.len() as i64;
                let images = image.expand([k, -1, -1, -1], false);
                cam::faithfulness(
                    model,
                    &images,
                    &stacked,
                    &wanted,
                    metric,
                    job.baseline,
                    max_batch,
                )
                .map_err(vision_err)?
                .into_iter()
                .map(Some)
                .collect()
            }
            None => vec![None; wanted.len()],
        };
        let mut raw_maps = Vec::with_capacity(wanted.len());
        for (k, (&class, faithfulness)) in wanted.iter().zip(scores).enumerate() {
            let map = stacked.get(k as i64);
            let size = map.size();
            raw_maps.push(RawMap {
                class,
                height: size[0],
                width: size[1],
                values: Vec::<f32>::try_from(&map.flatten(0, -1)).map_err(tch_err)?,
                faithfulness,
            });
        }
        out.push(RawExplanation {
            logits,
            probabilities,
            maps: raw_maps,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_vision::{Arch, Head, ModelSpec, Normalization};

    fn model(input_size: u32) -> Model {
        tch::manual_seed(3);
        let spec = ModelSpec {
            arch: Arch::Resnet18,
            head: Head::Cam,
            class_names: vec!["cat".into(), "dog".into()],
            input_size,
            normalization: Normalization::Imagenet,
        };
        let mut model = Model::new(spec, tch::Device::Cpu).unwrap();
        // As the server keeps it on a CPU.
        for_inference(&mut model, Precision::Fp32).unwrap();
        model
    }

    fn job(size: i64, seed: i64) -> ImageJob {
        tch::manual_seed(seed);
        ImageJob {
            input: Tensor::randn([3, size, size], (Kind::Float, tch::Device::Cpu)),
            target: None,
            top_k: 2,
            faithfulness: None,
            baseline: Baseline::default(),
        }
    }

    /// At 64 px libtorch runs a pass of one image through other kernels
    /// (its native convolution for small inputs, oneDNN for batches), so
    /// the probe must say no; at 224 px, whatever it says must hold for
    /// other images and larger passes: a lone image run as the probe
    /// decides gives bit-for-bit its row of a pass of three.
    #[test]
    fn the_lone_pass_probe_keeps_results_batch_invariant() {
        assert!(!lone_pass_is_batch_invariant(&model(64)));
        let m = model(224);
        let duplicate_lone = !lone_pass_is_batch_invariant(&m);
        let jobs: Vec<ImageJob> = (10..13).map(|seed| job(224, seed)).collect();
        // Score-CAM's passes are per image (and slow here): its maps depend
        // on the batch only through the features, which the others check.
        for method in CamMethod::ALL
            .into_iter()
            .filter(|&m| m != CamMethod::ScoreCam)
        {
            let recipe = MapRecipe::last_layer(&m, method);
            let together = run_batch(&m, &recipe, &jobs, 8, duplicate_lone).unwrap();
            for (i, job) in jobs.iter().enumerate() {
                let alone =
                    run_batch(&m, &recipe, std::slice::from_ref(job), 8, duplicate_lone).unwrap();
                assert_eq!(alone[0], together[i], "{method:?} image {i}");
            }
        }
    }
}
