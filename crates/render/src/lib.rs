//! Drawing class activation maps, with no libtorch dependency.
//!
//! A class activation map (CAM) arrives at feature resolution (16×16 for a
//! ResNet34 body on 512×512 pets) as raw `f32` values. This crate turns it into the
//! pictures of the fastai lecture, so that the CLI can draw maps it received over
//! the wire:
//!
//! - [`ActivationMap`] borrows the raw values; [`upsample_bilinear`] resizes them
//!   exactly like `torch.nn.functional.interpolate(mode="bilinear",
//!   align_corners=False)`.
//! - [`Colormap`] and [`colorize`] map `t ∈ [0, 1]` to RGB with matplotlib's
//!   `magma`, `viridis`, `inferno` (its 256-entry tables) or `jet`.
//! - [`overlay`] upsamples a map to an image, normalises it (min–max by default, as
//!   `imshow` does), colourises it and alpha-blends it over the image;
//!   [`heatmap`] is the colour layer alone.
//! - [`grid`] lays titled [`Panel`]s out like fastai's `show_results`, with titles
//!   such as `cat(0.98)` from [`format_title`] drawn in an embedded bitmap font.
//! - [`encode_png`] and [`save_png`] write the result.
//!
//! Every function checks its input and returns [`Error`] instead of panicking: a map
//! whose length is not `height * width`, empty sizes, non-finite values, an alpha
//! outside `[0, 1]`, images too large to allocate.
//!
//! # Example
//!
//! ```
//! use camshaft_render::{ActivationMap, OverlayOptions, Panel, format_title, grid, overlay};
//! use image::{Rgb, RgbImage};
//!
//! # fn main() -> camshaft_render::Result<()> {
//! // A 2×2 map whose bottom-right cell is the hottest, over a grey 64×64 image.
//! let values = [0.0, 1.0, 1.0, 4.0];
//! let map = ActivationMap::new(&values, 2, 2)?;
//! let image = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
//! let drawn = overlay(&image, &map, &OverlayOptions::default())?;
//! assert_eq!(drawn.dimensions(), (64, 64));
//!
//! let panel = Panel { image: drawn, title: format_title("cat", 0.9812) };
//! assert_eq!(panel.title, "cat(0.98)");
//! let sheet = grid(&[panel], 5)?;
//! let png = camshaft_render::encode_png(&sheet)?;
//! assert!(png.starts_with(b"\x89PNG"));
//! # Ok(())
//! # }
//! ```

mod colormap;
mod colormap_data;
mod error;
mod font;
mod grid;
mod output;
mod overlay;
mod upsample;

pub use colormap::{Colormap, colorize};
pub use error::{Error, Result};
pub use grid::{MIN_PANEL_WIDTH, Panel, format_title, grid};
pub use output::{encode_png, save_png};
pub use overlay::{OverlayOptions, heatmap, overlay};
pub use upsample::{ActivationMap, upsample_bilinear};

/// The most pixels any image or upsampled map made by this crate may have
/// (2^28, about 268 million; 768 MiB as RGB). Larger requests are an
/// [`Error::TooLarge`] instead of an allocation failure.
pub const MAX_PIXELS: u64 = 1 << 28;

/// Check that a `width`×`height` image of `what` is non-empty and within
/// [`MAX_PIXELS`]; returns the pixel count.
pub(crate) fn checked_pixels(what: &'static str, width: u32, height: u32) -> Result<usize> {
    if width == 0 || height == 0 {
        return Err(Error::ZeroSize {
            what,
            width,
            height,
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(Error::TooLarge {
            what,
            width,
            height,
        });
    }
    usize::try_from(pixels).map_err(|_| Error::TooLarge {
        what,
        width,
        height,
    })
}
