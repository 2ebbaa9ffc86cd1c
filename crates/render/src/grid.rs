//! Titled panel grids like fastai's `show_results`.

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

use crate::font::{self, GLYPH_HEIGHT};
use crate::{Error, MAX_PIXELS, Result, checked_pixels};

/// Panels narrower than this are scaled up (nearest neighbour, by a whole factor)
/// so that a title such as `automobile(0.99)` fits above a 32×32 CIFAR image.
pub const MIN_PANEL_WIDTH: u32 = 128;

/// Panel width per unit of text scale, rounded: text about 1/16 of the panel
/// width high, so a 128-pixel panel gets scale 1 (7-pixel capitals), 200 pixels
/// scale 2 and a 512-pixel panel scale 5 (35-pixel capitals).
const PANEL_WIDTH_PER_TEXT_SCALE: u32 = 112;

/// One image of a [`grid`] with the title drawn above it.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The picture, typically an [`overlay`](crate::overlay).
    pub image: RgbImage,
    /// The text above the picture, e.g. `cat(0.98)` from [`format_title`]; may be
    /// empty. Printable ASCII is drawn as is, anything else as `?`.
    pub title: String,
}

/// Format a title like the lecture: `format_title("cat", 0.9812) == "cat(0.98)"`.
pub fn format_title(class: &str, prob: f32) -> String {
    format!("{class}({prob:.2})")
}

/// Sizes shared by every cell of a grid, in output pixels.
#[derive(Debug)]
struct Layout {
    panel_width: u32,
    panel_height: u32,
    text_scale: u32,
    padding: u32,
    title_height: u32,
    cols: u32,
    rows: u32,
}

impl Layout {
    fn plan(panels: &[Panel], cols: u32) -> Result<Self> {
        let first = panels.first().ok_or(Error::NoPanels)?;
        if cols == 0 {
            return Err(Error::ZeroColumns);
        }
        for panel in panels {
            let (w, h) = panel.image.dimensions();
            checked_pixels("grid panel", w, h)?;
        }
        let (w, h) = first.image.dimensions();
        let factor = MIN_PANEL_WIDTH.div_ceil(w).max(1);
        let (panel_width, panel_height) = (
            w.checked_mul(factor).ok_or(Error::TooLarge {
                what: "grid panel",
                width: w,
                height: h,
            })?,
            h.checked_mul(factor).ok_or(Error::TooLarge {
                what: "grid panel",
                width: w,
                height: h,
            })?,
        );
        checked_pixels("grid panel", panel_width, panel_height)?;

        // One text scale for the whole grid: the one the panel width suggests,
        // lowered until the longest title fits (longer ones are cut with "..").
        let longest = panels
            .iter()
            .map(|p| p.title.chars().count())
            .max()
            .unwrap_or(0);
        let mut text_scale =
            ((panel_width + PANEL_WIDTH_PER_TEXT_SCALE / 2) / PANEL_WIDTH_PER_TEXT_SCALE).max(1);
        while text_scale > 1 && font::text_width_of(longest, text_scale) > u64::from(panel_width) {
            text_scale -= 1;
        }

        let n = u32::try_from(panels.len()).unwrap_or(u32::MAX);
        let cols = cols.min(n);
        Ok(Self {
            panel_width,
            panel_height,
            text_scale,
            padding: 4 * text_scale,
            title_height: (GLYPH_HEIGHT + 4) * text_scale,
            cols,
            rows: n.div_ceil(cols),
        })
    }

    /// Whole-grid size, or [`Error::TooLarge`].
    fn canvas_size(&self) -> Result<(u32, u32)> {
        let cell_w = u64::from(self.panel_width);
        let cell_h = u64::from(self.title_height) + u64::from(self.panel_height);
        let pad = u64::from(self.padding);
        let width = u64::from(self.cols) * cell_w + (u64::from(self.cols) + 1) * pad;
        let height = u64::from(self.rows) * cell_h + (u64::from(self.rows) + 1) * pad;
        let too_large = || Error::TooLarge {
            what: "grid",
            width: u32::try_from(width).unwrap_or(u32::MAX),
            height: u32::try_from(height).unwrap_or(u32::MAX),
        };
        if width.saturating_mul(height) > MAX_PIXELS {
            return Err(too_large());
        }
        let width = u32::try_from(width).map_err(|_| too_large())?;
        let height = u32::try_from(height).map_err(|_| too_large())?;
        Ok((width, height))
    }

    /// Top-left corner of the title bar of cell `index`.
    fn cell_origin(&self, index: u32) -> (u32, u32) {
        let (row, col) = (index / self.cols, index % self.cols);
        let x = self.padding + col * (self.panel_width + self.padding);
        let y = self.padding + row * (self.title_height + self.panel_height + self.padding);
        (x, y)
    }

    /// `image` at the grid's panel size: resized (bilinear) to the first panel's
    /// size if it differs, then scaled up by the whole factor.
    fn fit_panel(&self, image: &RgbImage, first: (u32, u32)) -> RgbImage {
        let resized;
        let source = if image.dimensions() == first {
            image
        } else {
            resized = imageops::resize(image, first.0, first.1, FilterType::Triangle);
            &resized
        };
        if source.dimensions() == (self.panel_width, self.panel_height) {
            source.clone()
        } else {
            imageops::resize(
                source,
                self.panel_width,
                self.panel_height,
                FilterType::Nearest,
            )
        }
    }
}

/// A titled panel grid like fastai's `show_results` / the lecture's 5×5 grid.
///
/// All panels are drawn at the first panel's size (others are resized to it);
/// panels narrower than [`MIN_PANEL_WIDTH`] are first scaled up by a whole
/// factor, nearest neighbour, so a title fits above a 32×32 image. Panels fill
/// `cols` columns row by row (`rows = ceil(n / cols)`; fewer columns when there
/// are fewer panels than `cols`), on a white background with padding around
/// every panel. Each title is drawn centred above its panel in black, in an
/// embedded 5×7 bitmap font at a whole scale chosen from the panel width
/// (scale 1 at 128 pixels, 5 at 512), smaller if needed for the longest title to
/// fit; a title wider than its panel even so is cut and ends in `..`.
///
/// # Errors
///
/// [`Error::NoPanels`], [`Error::ZeroColumns`], [`Error::ZeroSize`] for an empty
/// panel image, [`Error::TooLarge`] when the grid would exceed
/// [`MAX_PIXELS`](crate::MAX_PIXELS).
pub fn grid(panels: &[Panel], cols: u32) -> Result<RgbImage> {
    let layout = Layout::plan(panels, cols)?;
    let (width, height) = layout.canvas_size()?;
    let first = panels.first().ok_or(Error::NoPanels)?.image.dimensions();
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let scale = layout.text_scale;
    for (index, panel) in (0u32..).zip(panels) {
        let (x, y) = layout.cell_origin(index);
        let title = font::fit_text(&panel.title, scale, layout.panel_width);
        // `fit_text` keeps the title within the panel width, so this fits in u32.
        let slack = u64::from(layout.panel_width).saturating_sub(font::text_width(&title, scale));
        let text_x = x + (slack / 2) as u32;
        font::draw_text(
            &mut canvas,
            &title,
            text_x,
            y + 2 * scale,
            scale,
            Rgb([0, 0, 0]),
        );
        let image = layout.fit_panel(&panel.image, first);
        imageops::replace(
            &mut canvas,
            &image,
            i64::from(x),
            i64::from(y + layout.title_height),
        );
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(w: u32, h: u32, title: &str) -> Panel {
        Panel {
            image: RgbImage::from_pixel(w, h, Rgb([200, 30, 30])),
            title: title.to_owned(),
        }
    }

    #[test]
    fn text_scale_follows_panel_width() {
        let scale = |w| {
            Layout::plan(&[panel(w, w, "cat(0.98)")], 1)
                .map(|l| l.text_scale)
                .ok()
        };
        assert_eq!(scale(32), Some(1));
        assert_eq!(scale(128), Some(1));
        assert_eq!(scale(200), Some(2));
        assert_eq!(scale(224), Some(2));
        assert_eq!(scale(512), Some(5));
    }

    #[test]
    fn text_scale_shrinks_for_long_titles() {
        let long = "a".repeat(30); // 179 px at scale 1
        let layout = Layout::plan(&[panel(512, 512, &long)], 1).ok();
        assert_eq!(layout.map(|l| l.text_scale), Some(2));
    }

    #[test]
    fn small_panels_are_scaled_by_a_whole_factor() {
        let layout = Layout::plan(&[panel(32, 20, "x")], 1).ok();
        assert_eq!(
            layout.map(|l| (l.panel_width, l.panel_height)),
            Some((128, 80))
        );
        let layout = Layout::plan(&[panel(100, 50, "x")], 1).ok();
        assert_eq!(
            layout.map(|l| (l.panel_width, l.panel_height)),
            Some((200, 100))
        );
    }
}
