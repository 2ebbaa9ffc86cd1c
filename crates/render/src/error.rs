//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while drawing or writing a picture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An activation map's value count does not match its declared size.
    #[error("activation map has {len} values but its size {height}x{width} needs {expected}")]
    MapShape {
        /// Number of values given.
        len: usize,
        /// Declared height.
        height: u32,
        /// Declared width.
        width: u32,
        /// `height * width`.
        expected: u64,
    },
    /// A size with no pixels (a zero width or height).
    #[error("{what} has no pixels: size {width}x{height}")]
    ZeroSize {
        /// What had the size ("activation map", "output", "panel 3", ...).
        what: &'static str,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A size too large to allocate (over [`crate::MAX_PIXELS`]).
    #[error(
        "{what} of {width}x{height} pixels is larger than the limit of {} pixels",
        crate::MAX_PIXELS
    )]
    TooLarge {
        /// What had the size.
        what: &'static str,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// An activation map holds NaN or an infinity, which cannot be normalised.
    #[error("activation map value {index} is {value}, not a finite number")]
    NonFinite {
        /// Row-major index of the first such value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An overlay alpha outside `[0, 1]` (or NaN).
    #[error("overlay alpha must lie in [0, 1], got {0}")]
    InvalidAlpha(f32),
    /// A normalisation range with `low > high` or a non-finite end.
    #[error("normalisation range ({low}, {high}) must be finite with low <= high")]
    InvalidRange {
        /// Lower end, mapped to the bottom of the colormap.
        low: f32,
        /// Upper end, mapped to the top of the colormap.
        high: f32,
    },
    /// [`crate::grid`] was given no panels.
    #[error("a grid needs at least one panel")]
    NoPanels,
    /// [`crate::grid`] was given zero columns.
    #[error("a grid needs at least one column")]
    ZeroColumns,
    /// A colormap name that [`crate::Colormap`] does not know.
    #[error("unknown colormap {0:?}; expected one of magma, viridis, inferno, jet")]
    UnknownColormap(String),
    /// The PNG encoder failed.
    #[error("png encoding failed")]
    Encode(#[source] image::ImageError),
    /// Writing a PNG file failed.
    #[error("could not write png {}", path.display())]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
