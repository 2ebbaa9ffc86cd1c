//! Bilinear resizing of activation maps with PyTorch's `align_corners=False` rule.

use crate::{Error, Result, checked_pixels};

/// A class activation map at feature resolution, row-major, raw (not normalised).
///
/// `values[y * width + x]` is the activation at row `y`, column `x`. Build one with
/// [`ActivationMap::new`] to have the length checked up front; every function
/// that takes a map checks it again, so a literal with a wrong length is an
/// error, not a panic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationMap<'a> {
    /// Row-major activations, `height * width` of them.
    pub values: &'a [f32],
    /// Number of rows.
    pub height: u32,
    /// Number of columns.
    pub width: u32,
}

impl<'a> ActivationMap<'a> {
    /// Borrow `values` as a `height`×`width` map, checking that the sizes are
    /// non-zero and that there are exactly `height * width` values.
    pub fn new(values: &'a [f32], height: u32, width: u32) -> Result<Self> {
        let map = Self {
            values,
            height,
            width,
        };
        map.validate()?;
        Ok(map)
    }

    /// Check the invariants that [`ActivationMap::new`] checks.
    pub fn validate(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 {
            return Err(Error::ZeroSize {
                what: "activation map",
                width: self.width,
                height: self.height,
            });
        }
        let expected = u64::from(self.height) * u64::from(self.width);
        if self.values.len() as u64 != expected {
            return Err(Error::MapShape {
                len: self.values.len(),
                height: self.height,
                width: self.width,
                expected,
            });
        }
        Ok(())
    }

    /// The smallest and largest value, or [`Error::NonFinite`] for the first NaN
    /// or infinity.
    pub fn min_max(&self) -> Result<(f32, f32)> {
        self.validate()?;
        let mut low = f32::INFINITY;
        let mut high = f32::NEG_INFINITY;
        for (index, &value) in self.values.iter().enumerate() {
            if !value.is_finite() {
                return Err(Error::NonFinite { index, value });
            }
            low = low.min(value);
            high = high.max(value);
        }
        Ok((low, high))
    }
}

/// For one axis: the two source indices and their weights for every output index.
struct AxisTaps {
    near: Vec<(usize, usize)>,
    weights: Vec<(f32, f32)>,
}

/// PyTorch's `area_pixel_compute_source_index` with `align_corners=False` and
/// no explicit scale factor, followed by the neighbour/lambda computation of its
/// CPU bilinear kernel, all in `f32` as torch does for float tensors.
fn axis_taps(input: u32, output: u32) -> AxisTaps {
    let scale = input as f32 / output as f32;
    let last = input as usize - 1;
    let mut near = Vec::with_capacity(output as usize);
    let mut weights = Vec::with_capacity(output as usize);
    for dst in 0..output {
        let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
        // `src` is non-negative and below `input`, so truncation is floor and the
        // index is in range; `min` guards against rounding at the top edge.
        let low = (src as usize).min(last);
        let high = (low + 1).min(last);
        let lambda = src - low as f32;
        near.push((low, high));
        weights.push((1.0 - lambda, lambda));
    }
    AxisTaps { near, weights }
}

/// Bilinear upsampling with `align_corners=False` semantics, identical to
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` — the
/// lecture upsamples with that. Output `out_h * out_w` values, row-major.
///
/// Output pixel centres are mapped back onto the input grid
/// (`src = (dst + 0.5) * in / out - 0.5`, clamped at 0), so the map's cells keep
/// their area and border rows repeat the edge values rather than extrapolating.
/// Downsampling uses the same rule (no antialiasing), as torch does by default.
/// Same-size resizing returns the values unchanged.
///
/// # Errors
///
/// [`Error::MapShape`] or [`Error::ZeroSize`] for an inconsistent map,
/// [`Error::ZeroSize`] or [`Error::TooLarge`] for the output size.
pub fn upsample_bilinear(map: &ActivationMap, out_h: u32, out_w: u32) -> Result<Vec<f32>> {
    map.validate()?;
    let pixels = checked_pixels("upsampled map", out_w, out_h)?;
    let rows = axis_taps(map.height, out_h);
    let cols = axis_taps(map.width, out_w);
    let width = map.width as usize;
    let mut out = Vec::with_capacity(pixels);
    for (&(y0, y1), &(wy0, wy1)) in rows.near.iter().zip(&rows.weights) {
        let top = &map.values[y0 * width..(y0 + 1) * width];
        let bottom = &map.values[y1 * width..(y1 + 1) * width];
        for (&(x0, x1), &(wx0, wx1)) in cols.near.iter().zip(&cols.weights) {
            out.push(
                wy0 * (wx0 * top[x0] + wx1 * top[x1]) + wy1 * (wx0 * bottom[x0] + wx1 * bottom[x1]),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_match_the_torch_source_index_rule() {
        // 2 -> 4: src = -0.25 (clamped), 0.25, 0.75, 1.25.
        let taps = axis_taps(2, 4);
        assert_eq!(taps.near, vec![(0, 1), (0, 1), (0, 1), (1, 1)]);
        let lambdas: Vec<f32> = taps.weights.iter().map(|w| w.1).collect();
        assert_eq!(lambdas, vec![0.0, 0.25, 0.75, 0.25]);
    }
}
