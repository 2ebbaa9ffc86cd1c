//! `loader`: decode + resize + normalise throughput per core.
//!
//! A fixed set of JPEGs around 500×375 (the size of Oxford-IIIT Pets photos)
//! with varied content is written to a temporary folder; both sides read the
//! same files. Ours, on one thread: [`open_image`] → [`resize`] to
//! `size`×`size` ([`ResizeMethod::Squish`], bilinear convolution) →
//! [`to_chw`] with ImageNet normalisation. PyTorch: `reference/loader.py`,
//! PIL `open` → `convert("RGB")` → `resize(BILINEAR)` → `to_tensor` →
//! `normalize`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use camshaft_data::{ResizeMethod, RgbImage, SplitMix64, open_image, resize};
use camshaft_vision::Normalization;
use camshaft_vision::loader::to_chw;
use clap::Parser;
use image::codecs::jpeg::JpegEncoder;

use crate::measure::rates;
use crate::reference::script_call;

/// Options of `loader`.
#[derive(Clone, Debug, Parser)]
pub struct LoaderArgs {
    /// JPEGs to generate (one timed repeat reads them all).
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Square output side.
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// JPEG quality of the generated images.
    #[arg(long, default_value_t = 90)]
    pub quality: u8,
    /// Untimed passes over all images first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed passes; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Also time each stage (decode, resize, to tensor) on both sides and
    /// print ms per image: where a missed goal loses its time.
    #[arg(long)]
    pub stages: bool,
}

impl LoaderArgs {
    /// The reference script's name and arguments (always one thread: the
    /// goal is per core).
    pub fn reference_args(&self, dir: &Path) -> (&'static str, Vec<String>) {
        script_call(
            "loader.py",
            [
                ("--images", dir.display().to_string()),
                ("--size", self.size.to_string()),
                ("--warmup", self.warmup.to_string()),
                ("--repeats", self.repeats.to_string()),
                ("--threads", "1".to_string()),
            ],
        )
    }

    /// The reference script's arguments for a per-stage breakdown.
    pub fn reference_stage_args(&self, dir: &Path) -> (&'static str, Vec<String>) {
        let (script, mut args) = self.reference_args(dir);
        args.push("--stages".to_string());
        (script, args)
    }
}

/// Photo-like sizes: landscape and portrait, around 500×375.
const SIZES: [(u32, u32); 6] = [
    (500, 375),
    (375, 500),
    (500, 333),
    (480, 360),
    (500, 400),
    (450, 338),
];

/// One synthetic photo: a two-colour gradient, a few filled discs and boxes,
/// and mild per-pixel noise so the JPEG carries texture, not flat blocks.
fn synthetic_photo(index: usize) -> RgbImage {
    let mut rng = SplitMix64::from_keys(0x4c4f_4144, &[index as u64]);
    let (w, h) = SIZES[index % SIZES.len()];
    let mut colour = || -> [f32; 3] { std::array::from_fn(|_| rng.range_f32(0.0, 255.0)) };
    let (top, bottom) = (colour(), colour());
    let mut img = RgbImage::from_fn(w, h, |_, y| {
        let t = y as f32 / h as f32;
        image::Rgb(std::array::from_fn(|c| {
            (top[c] * (1.0 - t) + bottom[c] * t) as u8
        }))
    });
    for _ in 0..(3 + rng.below(6)) {
        let fill = image::Rgb(std::array::from_fn(|_| rng.below(256) as u8));
        let (cx, cy) = (rng.range_f32(0.0, w as f32), rng.range_f32(0.0, h as f32));
        let r = rng.range_f32(15.0, 120.0);
        let disc = rng.chance(0.5);
        for (x, y, px) in img.enumerate_pixels_mut() {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let inside = if disc {
                dx * dx + dy * dy <= r * r
            } else {
                dx.abs() <= r && dy.abs() <= r * 0.7
            };
            if inside {
                *px = fill;
            }
        }
    }
    for px in img.pixels_mut() {
        for c in &mut px.0 {
            let noise = (rng.next_u64() % 25) as i16 - 12;
            *c = (i16::from(*c) + noise).clamp(0, 255) as u8;
        }
    }
    img
}

/// Write `args.images` synthetic JPEGs into `dir`; their paths, sorted.
pub fn write_images(dir: &Path, args: &LoaderArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(args.images);
    for i in 0..args.images {
        let path = dir.join(format!("photo_{i:03}.jpg"));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        JpegEncoder::new_with_quality(&mut out, args.quality)
            .encode_image(&synthetic_photo(i))
            .with_context(|| format!("cannot encode {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Our images per second over `paths`, on the calling thread only.
pub fn ours(paths: &[PathBuf], args: &LoaderArgs) -> anyhow::Result<Vec<f64>> {
    rates(args.warmup, args.repeats, || {
        for path in paths {
            let img = open_image(path)?;
            let square = resize(&img, args.size, ResizeMethod::Squish, (0.5, 0.5));
            drop(black_box(to_chw(&square, Normalization::Imagenet)));
        }
        Ok(paths.len())
    })
}

/// Milliseconds per image of each stage of our loader, summed over
/// `repeats` passes after one untimed pass: `[decode, resize, to_chw]`.
pub fn our_stages(paths: &[PathBuf], args: &LoaderArgs) -> anyhow::Result<[f64; 3]> {
    let mut totals = [Duration::ZERO; 3];
    for pass in 0..=args.repeats.max(1) {
        for path in paths {
            let t0 = Instant::now();
            let img = open_image(path)?;
            let t1 = Instant::now();
            let square = resize(&img, args.size, ResizeMethod::Squish, (0.5, 0.5));
            let t2 = Instant::now();
            drop(black_box(to_chw(&square, Normalization::Imagenet)));
            let t3 = Instant::now();
            if pass > 0 {
                totals[0] += t1 - t0;
                totals[1] += t2 - t1;
                totals[2] += t3 - t2;
            }
        }
    }
    let images = (paths.len() * args.repeats.max(1)) as f64;
    Ok(totals.map(|t| t.as_secs_f64() * 1e3 / images))
}
