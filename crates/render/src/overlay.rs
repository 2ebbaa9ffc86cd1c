//! Colouring an activation map and blending it over the image it explains.

use image::{Rgb, RgbImage};

use crate::{ActivationMap, Colormap, Error, Result, checked_pixels, colorize, upsample_bilinear};

/// How [`overlay`] and [`heatmap`] colour a map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayOptions {
    /// The colormap; the lecture uses [`Colormap::Magma`].
    pub colormap: Colormap,
    /// Opacity of the colour layer in `[0, 1]`: 0 leaves the image unchanged, 1
    /// shows only the colours. The lecture uses 0.5 (fastbook uses 0.6).
    pub alpha: f32,
    /// Values mapped to the bottom and top of the colormap; values outside are
    /// clipped. `None` uses the map's own minimum and maximum, which is what
    /// matplotlib's `imshow` does without `vmin`/`vmax`. A fixed range makes maps
    /// of different images comparable.
    pub range: Option<(f32, f32)>,
}

impl Default for OverlayOptions {
    /// Magma at alpha 0.5 with min–max normalisation, as in the lecture.
    fn default() -> Self {
        Self {
            colormap: Colormap::Magma,
            alpha: 0.5,
            range: None,
        }
    }
}

impl OverlayOptions {
    /// Check that alpha lies in `[0, 1]` and the range, if any, is finite and
    /// ordered.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::InvalidAlpha(self.alpha));
        }
        match self.range {
            Some((low, high)) if !low.is_finite() || !high.is_finite() || low > high => {
                Err(Error::InvalidRange { low, high })
            }
            _ => Ok(()),
        }
    }
}

/// Upsample `map` to `width`×`height`, normalise it to `[0, 1]` and colour it: the
/// colour layer of [`overlay`] on its own (what `overlay` gives at alpha 1).
///
/// The normalisation range is taken from the raw map, before upsampling, as
/// matplotlib's `imshow(cam, interpolation="bilinear")` does; bilinear values lie
/// between the raw extremes, so the result is the same whichever size is drawn.
/// A constant map (min = max) takes the bottom colour everywhere, as with
/// matplotlib's `Normalize`.
///
/// # Errors
///
/// An inconsistent or non-finite map, invalid options, or an empty or too large
/// output size.
pub fn heatmap(
    map: &ActivationMap,
    width: u32,
    height: u32,
    opts: &OverlayOptions,
) -> Result<RgbImage> {
    opts.validate()?;
    let (low, high) = match opts.range {
        Some(range) => {
            map.validate()?;
            range
        }
        None => map.min_max()?,
    };
    let values = upsample_bilinear(map, height, width)?;
    let span = high - low;
    let mut img = RgbImage::new(width, height);
    for (pixel, &v) in img.pixels_mut().zip(&values) {
        // NaN in the upsampled values is impossible for a finite map, but an
        // explicit range skips the finiteness scan: `colorize` maps NaN to the
        // bottom colour rather than failing.
        let t = if span > 0.0 { (v - low) / span } else { 0.0 };
        *pixel = Rgb(colorize(t, opts.colormap));
    }
    Ok(img)
}

/// Upsample the map to the image size, normalise (min–max or the given range),
/// colourise and alpha-blend over the image: `out = (1 - alpha) * image + alpha *
/// colour`, rounded per channel, like matplotlib's `imshow(alpha=0.5)` on top of
/// `show_image`.
///
/// See [`heatmap`] for the normalisation.
///
/// # Errors
///
/// [`Error::InvalidAlpha`], [`Error::InvalidRange`], an inconsistent map
/// ([`Error::MapShape`], [`Error::ZeroSize`]), a NaN or infinite activation with
/// min–max normalisation ([`Error::NonFinite`]), or an empty image.
pub fn overlay(image: &RgbImage, map: &ActivationMap, opts: &OverlayOptions) -> Result<RgbImage> {
    let (width, height) = image.dimensions();
    checked_pixels("overlay image", width, height)?;
    let mut out = heatmap(map, width, height, opts)?;
    let alpha = opts.alpha;
    for (colour, base) in out.pixels_mut().zip(image.pixels()) {
        for (c, &b) in colour.0.iter_mut().zip(&base.0) {
            let blended = (1.0 - alpha) * f32::from(b) + alpha * f32::from(*c);
            *c = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(out)
}
