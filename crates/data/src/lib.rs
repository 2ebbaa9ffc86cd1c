//! Image data sets for Camshaft, with no libtorch dependency.
//!
//! This crate owns everything between "a data set on disk (or on the web)" and
//! "an RGB image with a class label":
//!
//! - [`Dataset`]: the trait the training loader indexes from many threads —
//!   `len`, `label(i)` (cheap, no decoding), `image(i)` (decode or generate),
//!   `class_names`, `describe(i)` for error messages. [`Splits`] pairs a
//!   training and a validation set.
//! - Data sets: [`cifar10_binary`] ([`CifarBinary`], the binary batches),
//!   [`image_folder`] ([`ImageFiles`]: `root/train/<class>/*`, `root/valid|test/<class>/*`,
//!   also fastai's CIFAR-10 PNG layout), [`oxford_pets`] (cat/dog or 37 breeds,
//!   seeded [`RandomSplit`]), and [`Synthetic`] shapes-in-clutter with known
//!   object boxes for CAM localisation tests and offline demos.
//! - [`decode_image`] / [`open_image`]: PNG and JPEG to RGB8 with
//!   [`DecodeLimits`] against decompression bombs; [`resize`] with fastai's
//!   [`ResizeMethod`] semantics on SIMD convolution.
//! - [`fetch`]: resumable, checksum-verified downloads of the [`RemoteArchive`]
//!   constants, with atomic extraction into a cache directory.
//! - [`DataRoots`]: the directories a request may name data sets and
//!   weights under; a path outside them is refused with one error, whether
//!   or not it exists.
//! - [`SplitMix64`]: the one PRNG for splits, permutations and augmentation, so
//!   results do not change with a dependency's version.
//!
//! Invariants: no function panics on bad input (corrupt files, wrong sizes,
//! out-of-range indices in `image`); every error names the file, record or URL
//! at fault; a sample's image and label depend only on the data and the seeds.
//!
//! ```
//! use camshaft_data::{Dataset, ResizeMethod, SyntheticConfig, resize};
//!
//! let splits = SyntheticConfig { train_len: 8, valid_len: 4, ..Default::default() }.splits()?;
//! assert_eq!(splits.train.class_names(), ["circle", "square"]);
//! let image = splits.train.image(0)?;
//! let label = splits.train.label(0);
//! let input = resize(&image, 32, ResizeMethod::Crop, (0.5, 0.5));
//! assert_eq!(input.dimensions(), (32, 32));
//! assert!(label < 2);
//! # Ok::<(), camshaft_data::Error>(())
//! ```

mod cifar;
mod decode;
mod download;
mod error;
mod files;
mod pets;
mod resize;
mod rng;
mod roots;
mod synthetic;

use std::sync::Arc;

pub use image::RgbImage;

pub use cifar::{CIFAR_RECORD_BYTES, CIFAR10_CLASSES, CifarBinary, cifar10_binary};
pub use decode::{
    DecodeLimits, decode_image, header_dimensions, jpeg_frame_header, open_image, open_image_with,
};
pub use download::{
    CACHE_DIR_ENV, CIFAR10_BINARY, CIFAR10_PNG, Checksum, MIRROR_ENV, OXFORD_PETS,
    OXFORD_PETS_IMAGES, RemoteArchive, default_cache_dir, download_archive, extract_archive, fetch,
    fetch_from,
};
pub use error::{Error, Result};
pub use files::{ImageFiles, class_dirs, image_folder, image_folder_split, is_image_file};
pub use pets::{PetsLabels, RandomSplit, oxford_pets, pets_breed, pets_is_cat};
pub use resize::{ResizeMethod, resize};
pub use rng::{SplitMix64, mix64};
pub use roots::DataRoots;
pub use synthetic::{
    BoundingBox, Shape, Split, Synthetic, SyntheticConfig, SyntheticSample, write_folder,
};

/// A labelled image collection. Implementations must be cheap to index from many
/// threads: `label` never decodes, `image` decodes or generates one sample.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class index of sample `index` (an index into [`Dataset::class_names`]),
    /// without decoding the image.
    ///
    /// # Panics
    ///
    /// May panic when `index >= len()`, like slice indexing.
    fn label(&self, index: usize) -> usize;

    /// Decodes (or generates) sample `index` at its native size. Errors name the
    /// file; an out-of-range index is an [`Error::IndexOutOfRange`].
    fn image(&self, index: usize) -> Result<RgbImage>;

    /// The class names, in label order.
    fn class_names(&self) -> &[String];

    /// A human name of the sample for errors and logs (a file path, a record in
    /// a batch file, or "synthetic train #12").
    fn describe(&self, index: usize) -> String;
}

/// A train/validation pair with the same classes.
#[derive(Clone)]
pub struct Splits {
    /// The training samples.
    pub train: Arc<dyn Dataset>,
    /// The validation samples.
    pub valid: Arc<dyn Dataset>,
}

impl Splits {
    /// The class names (those of the training set).
    pub fn class_names(&self) -> &[String] {
        self.train.class_names()
    }
}

impl std::fmt::Debug for Splits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splits")
            .field("train_len", &self.train.len())
            .field("valid_len", &self.valid.len())
            .field("class_names", &self.train.class_names())
            .finish()
    }
}
