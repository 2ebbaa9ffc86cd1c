//! A generated data set of shapes in clutter whose object positions are known.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use image::{GrayImage, Luma, Rgb, RgbImage};

use crate::rng::SplitMix64;
use crate::{Dataset, Error, Result, Splits};

/// The object shapes; the shape *is* the class. Class `i` is `Shape::ALL[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// A filled axis-aligned square (a little smaller than its box).
    Square,
    /// A filled triangle pointing up.
    Triangle,
    /// A plus sign.
    Cross,
    /// An annulus (a disc with a hole of 55% of its radius).
    Ring,
    /// A square standing on a corner.
    Diamond,
}

impl Shape {
    /// All shapes in class order.
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Cross,
        Shape::Ring,
        Shape::Diamond,
    ];

    /// The class name: "circle", "square", ...
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
            Shape::Diamond => "diamond",
        }
    }

    /// Whether the point (x, y) in [-1, 1]² (the object's box, y down) is inside.
    fn contains(self, x: f32, y: f32) -> bool {
        match self {
            Shape::Circle => x * x + y * y <= 1.0,
            Shape::Square => x.abs() <= 0.8 && y.abs() <= 0.8,
            Shape::Triangle => y <= 0.85 && x.abs() <= 0.95 * (y + 0.95) / 1.8,
            Shape::Cross => {
                (x.abs() <= 0.3 && y.abs() <= 0.95) || (y.abs() <= 0.3 && x.abs() <= 0.95)
            }
            Shape::Ring => {
                let r2 = x * x + y * y;
                (0.3025..=1.0).contains(&r2)
            }
            Shape::Diamond => x.abs() + y.abs() <= 1.0,
        }
    }
}

/// Which half of a synthetic data set; part of every sample's random seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training samples.
    Train,
    /// The validation samples.
    Valid,
}

impl Split {
    /// "train" or "valid" (also the ImageFolder directory name).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
        }
    }

    fn key(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Valid => 2,
        }
    }
}

/// A pixel rectangle `[x0, x1) × [y0, y1)` (exclusive maximum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BoundingBox {
    /// Left column (inclusive).
    pub x0: u32,
    /// Top row (inclusive).
    pub y0: u32,
    /// Right column (exclusive).
    pub x1: u32,
    /// Bottom row (exclusive).
    pub y1: u32,
}

impl BoundingBox {
    /// `x1 - x0`.
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    /// `y1 - y0`.
    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    /// Whether pixel (x, y) is inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }

    /// Intersection over union with `other` (0 when either is empty).
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let ix = self.x1.min(other.x1).saturating_sub(self.x0.max(other.x0));
        let iy = self.y1.min(other.y1).saturating_sub(self.y0.max(other.y0));
        let inter = u64::from(ix) * u64::from(iy);
        let area = |b: &BoundingBox| u64::from(b.width()) * u64::from(b.height());
        let union = area(self) + area(other) - inter;
        if union == 0 {
            0.0
        } else {
            inter as f32 / union as f32
        }
    }
}

/// Parameters of a synthetic data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SyntheticConfig {
    /// Seed of everything; the same seed gives the same pixels on every machine.
    pub seed: u64,
    /// Number of training samples.
    pub train_len: usize,
    /// Number of validation samples.
    pub valid_len: usize,
    /// Side of the square images, 16..=2048. Default 64.
    pub image_size: u32,
    /// Number of classes (shapes), 2..=6: the first `num_classes` of [`Shape::ALL`].
    pub num_classes: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            train_len: 2000,
            valid_len: 500,
            image_size: 64,
            num_classes: 2,
        }
    }
}

impl SyntheticConfig {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<()> {
        if !(2..=Shape::ALL.len()).contains(&self.num_classes) {
            return Err(Error::InvalidConfig(format!(
                "synthetic num_classes must be 2..=6, got {}",
                self.num_classes
            )));
        }
        if !(16..=2048).contains(&self.image_size) {
            return Err(Error::InvalidConfig(format!(
                "synthetic image_size must be 16..=2048, got {}",
                self.image_size
            )));
        }
        Ok(())
    }

    /// The class names: "circle", "square", ... (`num_classes` of them).
    pub fn class_names(&self) -> Vec<String> {
        Shape::ALL
            .iter()
            .take(self.num_classes)
            .map(|s| s.name().to_string())
            .collect()
    }

    /// The training and validation data sets.
    pub fn splits(&self) -> Result<Splits> {
        Ok(Splits {
            train: Arc::new(Synthetic::new(*self, Split::Train)?),
            valid: Arc::new(Synthetic::new(*self, Split::Valid)?),
        })
    }
}

/// One generated sample with its ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSample {
    /// The image, `image_size`×`image_size`.
    pub image: RgbImage,
    /// The class: an index into [`Shape::ALL`].
    pub label: usize,
    /// The tight box around the object's pixels.
    pub object_box: BoundingBox,
    /// 255 where the object was drawn, 0 elsewhere; same size as the image.
    pub object_mask: GrayImage,
}

/// A synthetic data set: each image is low-contrast clutter (noise, blobs and
/// lines in colours near the background) plus one high-contrast object whose
/// *shape* is the class. Size (25–45% of the side), position and colour are
/// random and independent of the class, so only the shape can be learnt — and a
/// CAM of a model that learnt it should light up inside [`Synthetic::object_box`].
///
/// Samples are generated on the fly from `(seed, split, index)`: `image(i)` is a
/// pure function, cheap (~0.1 ms at 64×64) and safe from any thread. Labels are
/// balanced: every block of `num_classes` consecutive indices holds each class
/// once, in a seeded order.
#[derive(Clone, Debug)]
pub struct Synthetic {
    config: SyntheticConfig,
    split: Split,
    class_names: Vec<String>,
}

/// Everything random about a sample except the per-pixel noise.
struct Plan {
    label: usize,
    background: [u8; 3],
    object_colour: [u8; 3],
    /// Object square: left, top, side.
    object: (u32, u32, u32),
}

const CLUTTER_CONTRAST: i32 = 28;
const NOISE: i32 = 8;
const MIN_OBJECT_CONTRAST: f32 = 90.0;

fn luma(c: [u8; 3]) -> f32 {
    0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
}

fn near(rng: &mut SplitMix64, base: [u8; 3], spread: i32) -> [u8; 3] {
    base.map(|c| {
        let delta = rng.below((2 * spread + 1) as usize) as i32 - spread;
        (i32::from(c) + delta).clamp(0, 255) as u8
    })
}

impl Synthetic {
    /// One split of the data set described by `config` (validated).
    pub fn new(config: SyntheticConfig, split: Split) -> Result<Self> {
        config.validate()?;
        Ok(Synthetic {
            class_names: config.class_names(),
            config,
            split,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    fn label_of(&self, index: usize) -> usize {
        let k = self.config.num_classes;
        let block = (index / k) as u64;
        let order =
            SplitMix64::from_keys(self.config.seed, &[self.split.key(), 0, block]).permutation(k);
        order[index % k]
    }

    fn plan(&self, index: usize, rng: &mut SplitMix64) -> Plan {
        let size = self.config.image_size;
        let label = self.label_of(index);
        let side = ((size as f32 * rng.range_f32(0.25, 0.45)).round() as u32).clamp(3, size);
        let left = rng.below((size - side + 1) as usize) as u32;
        let top = rng.below((size - side + 1) as usize) as u32;
        let background = [0; 3].map(|_: u8| 30 + rng.below(196) as u8);
        let mut object_colour = [0; 3].map(|_: u8| rng.below(256) as u8);
        let mut tries = 0;
        while (luma(object_colour) - luma(background)).abs() < MIN_OBJECT_CONTRAST {
            tries += 1;
            object_colour = if tries < 32 {
                [0; 3].map(|_: u8| rng.below(256) as u8)
            } else if luma(background) > 127.0 {
                [0, 0, 0]
            } else {
                [255, 255, 255]
            };
        }
        Plan {
            label,
            background,
            object_colour,
            object: (left, top, side),
        }
    }

    /// The object's pixels as (x, y) in image coordinates.
    fn object_pixels(plan: &Plan) -> impl Iterator<Item = (u32, u32)> {
        let (left, top, side) = plan.object;
        let shape = Shape::ALL[plan.label];
        let scale = 2.0 / side as f32;
        (0..side).flat_map(move |v| {
            (0..side).filter_map(move |u| {
                let x = (u as f32 + 0.5) * scale - 1.0;
                let y = (v as f32 + 0.5) * scale - 1.0;
                shape.contains(x, y).then_some((left + u, top + v))
            })
        })
    }

    fn rng_for(&self, index: usize) -> SplitMix64 {
        SplitMix64::from_keys(self.config.seed, &[self.split.key(), 1, index as u64])
    }

    fn box_of(plan: &Plan) -> BoundingBox {
        let mut b = BoundingBox {
            x0: u32::MAX,
            y0: u32::MAX,
            x1: 0,
            y1: 0,
        };
        for (x, y) in Self::object_pixels(plan) {
            b.x0 = b.x0.min(x);
            b.y0 = b.y0.min(y);
            b.x1 = b.x1.max(x + 1);
            b.y1 = b.y1.max(y + 1);
        }
        if b.x0 == u32::MAX {
            // Cannot happen for side >= 3 (every shape contains the centre).
            let (left, top, side) = plan.object;
            b = BoundingBox {
                x0: left,
                y0: top,
                x1: left + side,
                y1: top + side,
            };
        }
        b
    }

    /// The tight box around the object of sample `index`, without drawing the
    /// image. Defined for every index (only `0..len()` belong to the data set).
    pub fn object_box(&self, index: usize) -> BoundingBox {
        let mut rng = self.rng_for(index);
        Self::box_of(&self.plan(index, &mut rng))
    }

    /// Generates sample `index` with its ground truth. Defined for every index.
    pub fn sample(&self, index: usize) -> SyntheticSample {
        let size = self.config.image_size;
        let mut rng = self.rng_for(index);
        let plan = self.plan(index, &mut rng);
        let mut image = RgbImage::from_pixel(size, size, Rgb(plan.background));

        // Clutter: soft blobs and thin lines, all within CLUTTER_CONTRAST of the
        // background in every channel.
        let blobs = 3 + rng.below(6);
        for _ in 0..blobs {
            let colour = near(&mut rng, plan.background, CLUTTER_CONTRAST);
            let cx = rng.range_f32(0.0, size as f32);
            let cy = rng.range_f32(0.0, size as f32);
            let radius = rng.range_f32(1.5, (size as f32 * 0.12).max(2.0));
            fill_disc(&mut image, cx, cy, radius, colour);
        }
        let lines = 2 + rng.below(4);
        for _ in 0..lines {
            let colour = near(&mut rng, plan.background, CLUTTER_CONTRAST);
            let from = (
                rng.range_f32(0.0, size as f32),
                rng.range_f32(0.0, size as f32),
            );
            let to = (
                rng.range_f32(0.0, size as f32),
                rng.range_f32(0.0, size as f32),
            );
            draw_line(&mut image, from, to, colour);
        }

        let mut object_mask = GrayImage::new(size, size);
        for (x, y) in Self::object_pixels(&plan) {
            image.put_pixel(x, y, Rgb(plan.object_colour));
            object_mask.put_pixel(x, y, Luma([255]));
        }

        // Sensor-like noise over everything, object included.
        for pixel in image.pixels_mut() {
            for c in &mut pixel.0 {
                let delta = rng.below((2 * NOISE + 1) as usize) as i32 - NOISE;
                *c = (i32::from(*c) + delta).clamp(0, 255) as u8;
            }
        }

        SyntheticSample {
            image,
            label: plan.label,
            object_box: Self::box_of(&plan),
            object_mask,
        }
    }

    /// Writes this split as `dir/<class name>/<index:06>.png`, plus
    /// `dir/boxes.csv` (`file,label,class,x0,y0,x1,y1`, file relative to `dir`).
    ///
    /// Note that reading it back with [`crate::image_folder`] sorts the classes
    /// by name, so indices change (circle, cross, diamond, ring, square,
    /// triangle); class *names* are the stable contract.
    pub fn write_split(&self, dir: &Path) -> Result<()> {
        for name in &self.class_names {
            let class_dir = dir.join(name);
            std::fs::create_dir_all(&class_dir).map_err(|e| Error::io("create", &class_dir, e))?;
        }
        let csv_path = dir.join("boxes.csv");
        let mut csv = String::from("file,label,class,x0,y0,x1,y1\n");
        for index in 0..self.len() {
            let sample = self.sample(index);
            let class = &self.class_names[sample.label];
            let relative = format!("{class}/{index:06}.png");
            let path = dir.join(&relative);
            sample.image.save(&path).map_err(|e| Error::Encode {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let b = sample.object_box;
            csv.push_str(&format!(
                "{relative},{},{class},{},{},{},{}\n",
                sample.label, b.x0, b.y0, b.x1, b.y1
            ));
        }
        let mut file =
            std::fs::File::create(&csv_path).map_err(|e| Error::io("create", &csv_path, e))?;
        file.write_all(csv.as_bytes())
            .map_err(|e| Error::io("write", &csv_path, e))?;
        Ok(())
    }
}

/// Writes the data set described by `config` in ImageFolder layout under `root`
/// (`root/train/<class>/*.png`, `root/valid/<class>/*.png`, and a `boxes.csv`
/// per split), so it can be looked at, and read back with [`crate::image_folder`].
pub fn write_folder(config: &SyntheticConfig, root: &Path) -> Result<()> {
    for split in [Split::Train, Split::Valid] {
        Synthetic::new(*config, split)?.write_split(&root.join(split.name()))?;
    }
    Ok(())
}

fn fill_disc(image: &mut RgbImage, cx: f32, cy: f32, radius: f32, colour: [u8; 3]) {
    let (w, h) = image.dimensions();
    let x_lo = (cx - radius).floor().max(0.0) as u32;
    let y_lo = (cy - radius).floor().max(0.0) as u32;
    let x_hi = ((cx + radius).ceil().max(0.0) as u32).min(w);
    let y_hi = ((cy + radius).ceil().max(0.0) as u32).min(h);
    for y in y_lo..y_hi {
        for x in x_lo..x_hi {
            let dx = x as f32 + 0.5 - cx;
            let dy = y as f32 + 0.5 - cy;
            if dx * dx + dy * dy <= radius * radius {
                image.put_pixel(x, y, Rgb(colour));
            }
        }
    }
}

fn draw_line(image: &mut RgbImage, from: (f32, f32), to: (f32, f32), colour: [u8; 3]) {
    let (w, h) = image.dimensions();
    let steps = ((to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil() as u32).max(1);
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        let x = from.0 + (to.0 - from.0) * t;
        let y = from.1 + (to.1 - from.1) * t;
        if x >= 0.0 && y >= 0.0 && (x as u32) < w && (y as u32) < h {
            image.put_pixel(x as u32, y as u32, Rgb(colour));
        }
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        match self.split {
            Split::Train => self.config.train_len,
            Split::Valid => self.config.valid_len,
        }
    }

    fn label(&self, index: usize) -> usize {
        self.label_of(index)
    }

    fn image(&self, index: usize) -> Result<RgbImage> {
        if index >= self.len() {
            return Err(Error::IndexOutOfRange {
                index,
                len: self.len(),
                dataset: format!("synthetic {}", self.split.name()),
            });
        }
        Ok(self.sample(index).image)
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn describe(&self, index: usize) -> String {
        format!("synthetic {} #{index}", self.split.name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(num_classes: usize) -> SyntheticConfig {
        SyntheticConfig {
            seed: 7,
            train_len: 60,
            valid_len: 12,
            image_size: 64,
            num_classes,
        }
    }

    #[test]
    fn same_seed_same_pixels_and_indices_differ() {
        let a = Synthetic::new(config(4), Split::Train).unwrap();
        let b = Synthetic::new(config(4), Split::Train).unwrap();
        assert_eq!(a.image(3).unwrap(), b.image(3).unwrap());
        assert_eq!(a.sample(3), b.sample(3));
        assert_ne!(a.image(3).unwrap(), a.image(4).unwrap());
        let valid = Synthetic::new(config(4), Split::Valid).unwrap();
        assert_ne!(a.image(3).unwrap(), valid.image(3).unwrap());
        let other_seed = Synthetic::new(
            SyntheticConfig {
                seed: 8,
                ..config(4)
            },
            Split::Train,
        )
        .unwrap();
        assert_ne!(a.image(3).unwrap(), other_seed.image(3).unwrap());
        assert_eq!(a.image(3).unwrap().dimensions(), (64, 64));
    }

    #[test]
    fn labels_are_balanced_and_match_samples() {
        let set = Synthetic::new(config(6), Split::Train).unwrap();
        let mut counts = [0; 6];
        for i in 0..60 {
            let label = set.label(i);
            assert_eq!(set.sample(i).label, label);
            counts[label] += 1;
        }
        assert_eq!(counts, [10; 6]);
        assert_eq!(
            set.class_names(),
            ["circle", "square", "triangle", "cross", "ring", "diamond"]
        );
        // Not simply index % k.
        assert!((0..60).any(|i| set.label(i) != i % 6));
    }

    #[test]
    fn box_is_inside_and_tight_and_the_object_contrasts_with_its_surroundings() {
        let set = Synthetic::new(config(6), Split::Train).unwrap();
        for i in 0..60 {
            let sample = set.sample(i);
            let b = sample.object_box;
            assert_eq!(set.object_box(i), b);
            assert!(
                b.x0 < b.x1 && b.y0 < b.y1 && b.x1 <= 64 && b.y1 <= 64,
                "{b:?}"
            );
            let side = b.width().max(b.height());
            assert!((12..=30).contains(&side), "sample {i}: side {side}");
            let mut object = ([0f64; 3], 0f64);
            let mut rest = ([0f64; 3], 0f64);
            let (mut min_x, mut min_y, mut max_x, mut max_y) = (64, 64, 0, 0);
            for (x, y, m) in sample.object_mask.enumerate_pixels() {
                if m[0] == 255 {
                    assert!(b.contains(x, y));
                    min_x = min_x.min(x);
                    min_y = min_y.min(y);
                    max_x = max_x.max(x + 1);
                    max_y = max_y.max(y + 1);
                }
                // The box grown by 3 pixels: a square fills its tight box.
                let around = BoundingBox {
                    x0: b.x0.saturating_sub(3),
                    y0: b.y0.saturating_sub(3),
                    x1: b.x1 + 3,
                    y1: b.y1 + 3,
                };
                if !around.contains(x, y) {
                    continue;
                }
                let acc = if m[0] == 255 { &mut object } else { &mut rest };
                let p = sample.image.get_pixel(x, y);
                for c in 0..3 {
                    acc.0[c] += f64::from(p[c]);
                }
                acc.1 += 1.0;
            }
            assert_eq!((min_x, min_y, max_x, max_y), (b.x0, b.y0, b.x1, b.y1));
            assert!(object.1 > 0.0 && rest.1 > 0.0, "sample {i}");
            let mean = |a: ([f64; 3], f64)| a.0.map(|v| v / a.1);
            let (o, r) = (mean(object), mean(rest));
            let luma = |c: [f64; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
            assert!(
                (luma(o) - luma(r)).abs() > 50.0,
                "sample {i}: object {o:?} vs clutter {r:?}"
            );
        }
    }

    #[test]
    fn colour_does_not_give_the_class_away() {
        // The object's mean colour must not separate the classes: check that each
        // class appears with both dark and bright objects.
        let set = Synthetic::new(
            SyntheticConfig {
                train_len: 400,
                ..config(3)
            },
            Split::Train,
        )
        .unwrap();
        let mut seen = [[false; 2]; 3];
        for i in 0..400 {
            let mut rng = set.rng_for(i);
            let plan = set.plan(i, &mut rng);
            seen[plan.label][usize::from(luma(plan.object_colour) > 127.0)] = true;
        }
        assert_eq!(seen, [[true; 2]; 3]);
    }

    #[test]
    fn config_is_validated() {
        assert!(
            SyntheticConfig {
                num_classes: 1,
                ..config(2)
            }
            .validate()
            .is_err()
        );
        assert!(
            SyntheticConfig {
                num_classes: 7,
                ..config(2)
            }
            .validate()
            .is_err()
        );
        assert!(
            SyntheticConfig {
                image_size: 8,
                ..config(2)
            }
            .validate()
            .is_err()
        );
        assert!(config(6).splits().is_ok());
        let set = Synthetic::new(config(2), Split::Valid).unwrap();
        assert!(set.image(12).is_err());
        assert_eq!(set.describe(3), "synthetic valid #3");
    }

    #[test]
    fn write_folder_round_trips_through_image_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SyntheticConfig {
            train_len: 9,
            valid_len: 4,
            num_classes: 3,
            image_size: 32,
            seed: 1,
        };
        write_folder(&cfg, dir.path()).unwrap();
        let splits = crate::image_folder(dir.path()).unwrap();
        assert_eq!(splits.train.len(), 9);
        assert_eq!(splits.valid.len(), 4);
        assert_eq!(splits.train.class_names(), ["circle", "square", "triangle"]);
        let generated = Synthetic::new(cfg, Split::Train).unwrap();
        for i in 0..9 {
            let path = splits.train.describe(i);
            let index: usize = Path::new(&path)
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                splits.train.image(i).unwrap(),
                generated.image(index).unwrap()
            );
            assert_eq!(
                splits.train.class_names()[splits.train.label(i)],
                generated.class_names()[generated.label(index)]
            );
        }
        let csv = std::fs::read_to_string(dir.path().join("train/boxes.csv")).unwrap();
        assert_eq!(csv.lines().count(), 10);
        let b = generated.object_box(0);
        let first = format!(",{},{},{},{}", b.x0, b.y0, b.x1, b.y1);
        assert!(csv.lines().nth(1).unwrap().ends_with(&first), "{csv}");
    }

    #[test]
    fn iou_of_boxes() {
        let a = BoundingBox {
            x0: 0,
            y0: 0,
            x1: 10,
            y1: 10,
        };
        let b = BoundingBox {
            x0: 5,
            y0: 0,
            x1: 15,
            y1: 10,
        };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&a), 1.0);
        let empty = BoundingBox {
            x0: 3,
            y0: 3,
            x1: 3,
            y1: 3,
        };
        assert_eq!(empty.iou(&empty), 0.0);
    }
}
