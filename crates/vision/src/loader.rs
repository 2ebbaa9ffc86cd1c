//! Batches from a [`Dataset`]: exact per-epoch sharding, decoding on a thread
//! pool, augmentation, normalisation and prefetching.
//!
//! Determinism: the sample order depends only on `(seed, epoch)` and each
//! sample's augmentation only on `(seed, epoch, index)`, never on thread
//! timing, so a run (or a resumed run, or a group of ranks) sees the same
//! batches every time.
//!
//! Preprocessing, in order: decode to RGB8, [`resize`] to `size × size` with
//! the configured [`ResizeMethod`] (training crops at a random position,
//! evaluation at the centre; a no-op when the image already has that size),
//! horizontal flip with probability ½ when augmenting, scale to [0, 1], then
//! the model's [`Normalization`].

use std::sync::Arc;
use std::thread;

use camshaft_data::{Dataset, ResizeMethod, RgbImage, SplitMix64, resize};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::model::Normalization;
use crate::{Error, Result};

/// This rank's place in a data-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// 0-based rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            rank: 0,
            world_size: 1,
        }
    }
}

/// The training sample order of an epoch: a permutation of `0..n` that
/// depends only on `(seed, epoch)` ([`SplitMix64::permutation`]).
pub fn epoch_permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    SplitMix64::from_keys(seed, &[0x5045_524d, epoch as u64]).permutation(n)
}

impl Shard {
    /// Check `rank < world_size`.
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(Error::Config(format!(
                "rank {} is outside a group of {}",
                self.rank, self.world_size
            )));
        }
        Ok(())
    }

    /// This rank's training indices for an epoch, `batch_size` per step.
    ///
    /// Step `s` of the whole group takes positions `s·N·B .. (s+1)·N·B` of
    /// the epoch permutation and rank `r` the `r`-th block of `B` of them, so
    /// N ranks with batch B see exactly the batches one rank with batch N·B
    /// would, split N ways. The ragged tail (fewer than N·B samples) is
    /// dropped, as fastai and DDP drop the last incomplete training batch.
    pub fn train_indices(
        &self,
        n: usize,
        batch_size: usize,
        seed: u64,
        epoch: usize,
    ) -> Vec<usize> {
        let perm = epoch_permutation(n, seed, epoch);
        let global = batch_size * self.world_size;
        if global == 0 {
            return Vec::new();
        }
        let steps = n / global;
        let mut out = Vec::with_capacity(steps * batch_size);
        for s in 0..steps {
            let start = s * global + self.rank * batch_size;
            out.extend_from_slice(&perm[start..start + batch_size]);
        }
        out
    }

    /// This rank's evaluation indices: a contiguous, disjoint block of
    /// `0..n` (the first `n mod N` ranks take one more), so sums over ranks
    /// count every validation sample exactly once and none twice.
    pub fn eval_indices(&self, n: usize) -> Vec<usize> {
        let base = n / self.world_size;
        let extra = n % self.world_size;
        let start = self.rank * base + self.rank.min(extra);
        let len = base + usize::from(self.rank < extra);
        (start..start + len).collect()
    }
}

/// How batches are made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoaderConfig {
    /// Samples per batch (per rank).
    pub batch_size: usize,
    /// Square side after resizing.
    pub image_size: u32,
    /// How a non-square or differently sized image becomes `size × size`.
    pub resize: ResizeMethod,
    /// Random horizontal flips when augmenting (training).
    pub flip: bool,
    /// Normalisation after scaling to [0, 1].
    pub normalization: Normalization,
    /// Decoding threads (0: one per core).
    pub threads: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Seed of the sample order and augmentation.
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            image_size: 32,
            resize: ResizeMethod::Crop,
            flip: true,
            normalization: Normalization::None,
            threads: 0,
            prefetch: 2,
            seed: 42,
        }
    }
}

/// A batch ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// `(N, 3, S, S)` float images, normalised.
    pub images: Tensor,
    /// `(N,)` int64 class indices.
    pub labels: Tensor,
    /// Data-set indices of the samples, in batch order.
    pub indices: Vec<usize>,
}

/// Turns data-set indices into batches on a thread pool.
pub struct Loader {
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("config", &self.config)
            .finish()
    }
}

impl Loader {
    /// A loader with its own decoding pool.
    pub fn new(config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        if config.image_size == 0 {
            return Err(Error::Config("image size must be at least 1".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("camshaft-decode-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start decoding threads: {e}")))?;
        Ok(Loader {
            config,
            pool: Arc::new(pool),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches of `indices` in order (the last one may be short), prepared
    /// `prefetch` ahead on the pool while the caller trains. `augment` turns on
    /// random crops and flips for `epoch`. A sample that cannot be decoded
    /// ends the stream with an error naming it.
    pub fn batches(
        &self,
        dataset: Arc<dyn Dataset>,
        indices: Vec<usize>,
        epoch: usize,
        augment: bool,
    ) -> BatchStream {
        let (tx, rx) = crossbeam_channel::bounded(self.config.prefetch.max(1));
        let config = self.config.clone();
        let pool = Arc::clone(&self.pool);
        let len = indices.len().div_ceil(config.batch_size);
        let producer = thread::Builder::new()
            .name("camshaft-loader".into())
            .spawn(move || {
                for chunk in indices.chunks(config.batch_size) {
                    let batch =
                        pool.install(|| make_batch(&*dataset, chunk, &config, epoch, augment));
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
        match producer {
            Ok(_) => BatchStream {
                rx: Some(rx),
                len,
                spawn_error: None,
            },
            Err(e) => BatchStream {
                rx: None,
                len,
                spawn_error: Some(Error::Config(format!(
                    "cannot start the loader thread: {e}"
                ))),
            },
        }
    }
}

/// Batches in order; see [`Loader::batches`]. Dropping it stops the producer.
pub struct BatchStream {
    rx: Option<crossbeam_channel::Receiver<Result<Batch>>>,
    len: usize,
    spawn_error: Option<Error>,
}

impl BatchStream {
    /// Number of batches the stream yields when nothing fails.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the stream yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(e));
        }
        self.rx.as_ref()?.recv().ok()
    }
}

fn sample_rng(seed: u64, epoch: usize, index: usize) -> SplitMix64 {
    SplitMix64::from_keys(seed, &[0x4155_474d, epoch as u64, index as u64])
}

fn make_batch(
    dataset: &dyn Dataset,
    indices: &[usize],
    config: &LoaderConfig,
    epoch: usize,
    augment: bool,
) -> Result<Batch> {
    let s = config.image_size as usize;
    let plane = s * s;
    let mut pixels = vec![0f32; indices.len() * 3 * plane];
    pixels
        .par_chunks_mut(3 * plane)
        .zip(indices.par_iter())
        .try_for_each(|(out, &index)| -> Result<()> {
            let img = dataset.image(index)?;
            let (anchor, flip) = if augment {
                let mut rng = sample_rng(config.seed, epoch, index);
                let anchor = (rng.next_f32(), rng.next_f32());
                (anchor, config.flip && rng.next_f32() < 0.5)
            } else {
                ((0.5, 0.5), false)
            };
            let img = resize(&img, config.image_size, config.resize, anchor);
            write_chw(&img, flip, config.normalization, out);
            Ok(())
        })?;
    let labels: Vec<i64> = indices.iter().map(|&i| dataset.label(i) as i64).collect();
    let images = Tensor::from_slice(&pixels).view([indices.len() as i64, 3, s as i64, s as i64]);
    Ok(Batch {
        images,
        labels: Tensor::from_slice(&labels),
        indices: indices.to_vec(),
    })
}

/// Write an RGB8 image as planar float CHW in [0, 1], normalised.
fn write_chw(img: &RgbImage, flip: bool, norm: Normalization, out: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let (mean, std) = norm.mean_std().unwrap_or(([0.0; 3], [1.0; 3]));
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| mean[c] / std[c]);
    let raw = img.as_raw();
    for y in 0..h {
        let row = &raw[y * w * 3..(y + 1) * w * 3];
        for x in 0..w {
            let src = if flip { w - 1 - x } else { x };
            let px = &row[src * 3..src * 3 + 3];
            for c in 0..3 {
                out[c * plane + y * w + x] = f32::from(px[c]) * scale[c] - shift[c];
            }
        }
    }
}

/// An RGB8 image as a normalised `(3, H, W)` float tensor.
pub fn to_chw(img: &RgbImage, norm: Normalization) -> Tensor {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let mut out = vec![0f32; (3 * w * h) as usize];
    write_chw(img, false, norm, &mut out);
    Tensor::from_slice(&out).view([3, h, w])
}

/// A batch's images (as float) and labels on `device`.
pub fn to_device(batch: &Batch, device: Device) -> (Tensor, Tensor) {
    (
        batch.images.to_device(device).to_kind(Kind::Float),
        batch.labels.to_device(device),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_sample_is_in_exactly_one_shard() {
        for world in 1..=4 {
            let (n, b) = (103, 5);
            let mut seen = vec![0; n];
            for rank in 0..world {
                let shard = Shard {
                    rank,
                    world_size: world,
                };
                let idx = shard.train_indices(n, b, 7, 3);
                assert_eq!(idx.len(), (n / (b * world)) * b);
                for i in idx {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c <= 1));
            assert_eq!(seen.iter().sum::<usize>(), (n / (b * world)) * b * world);
            let mut eval = vec![0; n];
            for rank in 0..world {
                for i in (Shard {
                    rank,
                    world_size: world,
                })
                .eval_indices(n)
                {
                    eval[i] += 1;
                }
            }
            assert!(eval.iter().all(|&c| c == 1), "world {world}");
        }
    }

    #[test]
    fn n_ranks_split_the_one_rank_batches() {
        let (n, b) = (64, 4);
        let single = Shard::default().train_indices(n, 2 * b, 1, 0);
        let r0 = Shard {
            rank: 0,
            world_size: 2,
        }
        .train_indices(n, b, 1, 0);
        let r1 = Shard {
            rank: 1,
            world_size: 2,
        }
        .train_indices(n, b, 1, 0);
        for s in 0..n / (2 * b) {
            let mut both = [&r0[s * b..(s + 1) * b], &r1[s * b..(s + 1) * b]].concat();
            let mut one = single[s * 2 * b..(s + 1) * 2 * b].to_vec();
            both.sort();
            one.sort();
            assert_eq!(both, one);
        }
        assert_ne!(epoch_permutation(n, 1, 0), epoch_permutation(n, 1, 1));
        assert_eq!(epoch_permutation(n, 1, 5), epoch_permutation(n, 1, 5));
    }

    #[test]
    fn normalisation_and_flip_are_exact() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            image::Rgb([if x == 0 { 255 } else { 0 }, 128, 0])
        });
        let mut out = vec![0f32; 6];
        write_chw(&img, true, Normalization::None, &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1], 1.0);
        write_chw(&img, false, Normalization::Imagenet, &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((out[4] - (0.0 - 0.406) / 0.225).abs() < 1e-5);
    }
}
