//! Colormaps: matplotlib's `magma`, `viridis`, `inferno` and `jet`.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::colormap_data::{INFERNO, MAGMA, VIRIDIS};

/// A colormap from `t ∈ [0, 1]` to RGB, matching matplotlib's of the same name.
///
/// The names parse and print in lower case (`"magma"`), as matplotlib spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Colormap {
    /// Black through purple and orange to pale yellow; the lecture's choice.
    #[default]
    Magma,
    /// Dark purple through blue and green to yellow; matplotlib's default.
    Viridis,
    /// Black through purple and red to bright yellow.
    Inferno,
    /// The classic rainbow, dark blue to dark red (not perceptually uniform).
    Jet,
}

impl Colormap {
    /// Every colormap, in declaration order.
    pub const ALL: [Colormap; 4] = [
        Colormap::Magma,
        Colormap::Viridis,
        Colormap::Inferno,
        Colormap::Jet,
    ];

    /// The lower-case name used by matplotlib and by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Magma => "magma",
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
            Colormap::Jet => "jet",
        }
    }
}

impl fmt::Display for Colormap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Colormap {
    type Err = Error;

    /// Parse a colormap name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Colormap::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownColormap(s.to_owned()))
    }
}

/// Number of entries in a matplotlib colormap lookup table.
const LUT_SIZE: usize = 256;

/// The lookup-table index matplotlib's `Colormap.__call__` uses for `t`:
/// `floor(t * 256)`, with `t = 1` in the last entry and values outside `[0, 1]`
/// clipped to the ends (matplotlib's default under/over colours). NaN maps to the
/// first entry.
fn lut_index(t: f32) -> usize {
    if t.is_nan() || t <= 0.0 {
        return 0;
    }
    // `t > 0` here, so the cast truncates towards zero, i.e. floors; large values
    // saturate.
    ((t * LUT_SIZE as f32) as usize).min(LUT_SIZE - 1)
}

/// Map `t ∈ [0, 1]` to RGB with `cmap`.
///
/// Like matplotlib, this picks one of 256 table entries (`floor(t * 256)`, the last
/// for `t = 1`) rather than interpolating, so `colorize(t, Colormap::Magma)`
/// equals `matplotlib.colormaps["magma"](t)` with each channel rounded to 8 bits.
/// (matplotlib's `bytes=True` truncates instead of rounding, so a PNG saved by
/// matplotlib may be one lower in a channel.) Values below 0 get the first colour,
/// above 1 the last, and NaN the first.
///
/// ```
/// use camshaft_render::{Colormap, colorize};
/// assert_eq!(colorize(0.0, Colormap::Magma), [0, 0, 4]);
/// assert_eq!(colorize(1.0, Colormap::Viridis), [253, 231, 37]);
/// ```
pub fn colorize(t: f32, cmap: Colormap) -> [u8; 3] {
    let index = lut_index(t);
    match cmap {
        Colormap::Magma => MAGMA[index],
        Colormap::Viridis => VIRIDIS[index],
        Colormap::Inferno => INFERNO[index],
        Colormap::Jet => jet_entry(index),
    }
}

/// Entry `index` of matplotlib's 256-entry `jet` table: its segment data
/// (`_jet_data` in `matplotlib/_cm.py`) evaluated at `index / 255`.
fn jet_entry(index: usize) -> [u8; 3] {
    const RED: &[(f32, f32)] = &[
        (0.0, 0.0),
        (0.35, 0.0),
        (0.66, 1.0),
        (0.89, 1.0),
        (1.0, 0.5),
    ];
    const GREEN: &[(f32, f32)] = &[
        (0.0, 0.0),
        (0.125, 0.0),
        (0.375, 1.0),
        (0.64, 1.0),
        (0.91, 0.0),
        (1.0, 0.0),
    ];
    const BLUE: &[(f32, f32)] = &[
        (0.0, 0.5),
        (0.11, 1.0),
        (0.34, 1.0),
        (0.65, 0.0),
        (1.0, 0.0),
    ];
    let x = index as f32 / (LUT_SIZE - 1) as f32;
    [RED, GREEN, BLUE].map(|segments| to_byte(piecewise_linear(segments, x)))
}

/// Linear interpolation through `points` (sorted by x, spanning [0, 1]).
fn piecewise_linear(points: &[(f32, f32)], x: f32) -> f32 {
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x <= x1 {
            let t = if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.0 };
            return y0 + t.clamp(0.0, 1.0) * (y1 - y0);
        }
    }
    points.last().map_or(0.0, |p| p.1)
}

/// `v ∈ [0, 1]` as a rounded 8-bit channel.
fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_index_follows_matplotlib() {
        assert_eq!(lut_index(0.0), 0);
        assert_eq!(lut_index(1.0 / 256.0), 1);
        assert_eq!(lut_index(0.5), 128);
        assert_eq!(lut_index(0.999), 255);
        assert_eq!(lut_index(1.0), 255);
        assert_eq!(lut_index(7.0), 255);
        assert_eq!(lut_index(-3.0), 0);
        assert_eq!(lut_index(f32::NAN), 0);
        assert_eq!(lut_index(f32::INFINITY), 255);
    }

    #[test]
    fn jet_ends_and_middle() {
        // matplotlib: jet(0) = (0, 0, 0.5), jet(1.0) = (0.5, 0, 0),
        // jet(0.5) = (0.4901961, 1, 0.4775641) (entry 128 at x = 128/255).
        assert_eq!(jet_entry(0), [0, 0, 128]);
        assert_eq!(jet_entry(255), [128, 0, 0]);
        assert_eq!(jet_entry(128), [125, 255, 122]);
    }
}
