//! One forward pass over a batch of prepared images: maps of every asked
//! class, probabilities, faithfulness scores. Blocking: runs on an inference
//! thread, never on a tokio worker.

use camshaft_vision::cam::{self, Faithfulness};
use camshaft_vision::{CamMethod, Model};
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

/// Explains `jobs` with `method` in one body pass (the caller keeps a batch
/// at most `max_batch` images). With `batch_invariant`, a batch of one image
/// is run as two copies of it: libtorch picks another convolution algorithm
/// for a batch of one, whose results differ in the last digits, and an
/// image's maps must not depend on what it was batched with. Every other
/// computation is per image (or per row in a pass of ≥ 2), so results are
/// the same whatever the batch.
pub(crate) fn run_batch(
    model: &Model,
    method: CamMethod,
    jobs: &[ImageJob],
    max_batch: usize,
    batch_invariant: bool,
) -> Result<Vec<RawExplanation>, String> {
    let n = jobs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let tch_err = |e: tch::TchError| e.to_string();
    let vision_err = |e: camshaft_vision::Error| e.to_string();
    let mut inputs: Vec<&Tensor> = jobs.iter().map(|j| &j.input).collect();
    let mut targets: Vec<Option<i64>> = jobs.iter().map(|j| j.target).collect();
    if batch_invariant && n == 1 {
        inputs.push(&jobs[0].input);
        targets.push(jobs[0].target);
    }
    let x = Tensor::f_stack(&inputs, 0)
        .map_err(tch_err)?
        .to_device(model.device());
    let feats = tch::no_grad(|| model.features(&x, false));
    let (logits, first_maps, chosen) =
        cam::maps_from_features(model, &feats, method, &targets).map_err(vision_err)?;
    let logits = logits.to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let probs = logits.f_softmax(-1, Kind::Float).map_err(tch_err)?;
    let logit_rows = rows(&logits).map_err(tch_err)?;
    let prob_rows = rows(&probs).map_err(tch_err)?;

    // Per image: the target, then the most probable other classes.
    let classes: Vec<Vec<i64>> = chosen
        .iter()
        .zip(&prob_rows)
        .enumerate()
        .map(|(i, (&target, p))| {
            let k = jobs.get(i).map_or(1, |j| j.top_k.max(1));
            let mut order: Vec<i64> = (0..p.len() as i64).collect();
            order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]));
            let mut wanted = vec![target];
            wanted.extend(order.into_iter().filter(|&c| c != target).take(k - 1));
            wanted
        })
        .collect();
    let max_k = classes.iter().map(Vec::len).max().unwrap_or(1);
    let mut map_sets = vec![first_maps];
    for rank in 1..max_k {
        // Rows that want fewer maps repeat their target (and drop the result).
        let rank_targets: Vec<Option<i64>> = classes
            .iter()
            .map(|c| Some(c.get(rank).copied().unwrap_or(c[0])))
            .collect();
        let (_, maps, _) =
            cam::maps_from_features(model, &feats, method, &rank_targets).map_err(vision_err)?;
        map_sets.push(maps);
    }
    let map_sets: Vec<Tensor> = map_sets
        .into_iter()
        .map(|m| {
            m.detach()
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu)
                .contiguous()
        })
        .collect();

    let mut out = Vec::with_capacity(n);
    for (i, job) in jobs.iter().enumerate() {
        let wanted = &classes[i];
        let scores = match job.faithfulness {
            Some(metric) => {
                let k = wanted.len() as i64;
                let image = x.get(i as i64).unsqueeze(0);
                let images = image.expand([k, -1, -1, -1], false);
                let maps: Vec<Tensor> = map_sets[..wanted.len()]
                    .iter()
                    .map(|set| set.get(i as i64))
                    .collect();
                let maps = Tensor::f_stack(&maps, 0).map_err(tch_err)?;
                cam::faithfulness(model, &images, &maps, wanted, metric, max_batch)
                    .map_err(vision_err)?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            None => vec![None; wanted.len()],
        };
        let mut maps = Vec::with_capacity(wanted.len());
        for ((set, &class), faithfulness) in map_sets.iter().zip(wanted).zip(scores) {
            let map = set.get(i as i64);
            let size = map.size();
            maps.push(RawMap {
                class,
                height: size[0],
                width: size[1],
                values: Vec::<f32>::try_from(&map.flatten(0, -1)).map_err(tch_err)?,
                faithfulness,
            });
        }
        out.push(RawExplanation {
            logits: logit_rows[i].clone(),
            probabilities: prob_rows[i].clone(),
            maps,
        });
    }
    Ok(out)
}

/// Rows of a `(N, C)` CPU tensor.
fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, tch::TchError> {
    let t = t.contiguous();
    (0..t.size()[0])
        .map(|i| Vec::<f32>::try_from(&t.get(i)))
        .collect()
}
