//! What a request costs, estimated before anything is decoded or queued:
//! the memory its images take while they are decoded and until they are
//! answered (from their PNG/JPEG headers), and the compute units (forward
//! passes) its images, maps and faithfulness scores take. Admission
//! ([`crate::queue`]) charges these against the configured budgets.

use camshaft_vision::CamMethod;
use camshaft_vision::cam::{AUG_SMOOTH_TRANSFORMS, DELETION_STEPS, Faithfulness};

/// Input pixels of one compute unit: one forward pass of one image of at
/// most 224×224 pixels.
pub(crate) const UNIT_PIXELS: u64 = 224 * 224;

/// Charged per decoded image beside its pixels: decoder state, the zlib
/// window, row buffers, the resizer's coefficients.
pub(crate) const IMAGE_OVERHEAD_BYTES: u64 = 1 << 20;

/// Bytes per input pixel an image keeps from its decoding until it is
/// answered: the resized RGB image overlays are drawn on (3) and the float
/// model input (3 × 4).
pub(crate) const RESIDENT_BYTES_PER_PIXEL: u64 = 3 + 12;

/// The most bytes per pixel a decode may take ([`DecodedForm`]): a CMYK
/// JPEG (its coefficients, its planes and the RGB output).
pub(crate) const WORST_BYTES_PER_PIXEL: u64 = 15;

/// Compute units of one forward pass of one image at `input_size`²:
/// ⌈input_size² / 224²⌉, at least 1.
pub(crate) fn pass_units(input_size: u32) -> u64 {
    u64::from(input_size).pow(2).div_ceil(UNIT_PIXELS).max(1)
}

/// Forward passes per map that scoring with `metric` takes: the deletion
/// curve's 21 points, or the image and its masked copy.
pub(crate) fn faithfulness_passes(metric: Option<Faithfulness>) -> u64 {
    match metric {
        None => 0,
        Some(Faithfulness::DeletionAuc) => DELETION_STEPS.unsigned_abs() + 1,
        Some(Faithfulness::AverageDrop) => 2,
        // The image, its imputed copy, and the imputation (conjugate
        // gradients over the image) counted as a pass.
        Some(Faithfulness::Road) => 3,
    }
}

/// Forward passes the maps of one image take: the body's pass, plus
/// Score-CAM's one pass per channel of each layer in `channels` (the same
/// passes serve every class), all of it six times over with `aug_smooth`
/// (pytorch-grad-cam's six augmentations). The gradient methods' backward
/// passes through the head (and the rest of the body, at an earlier
/// layer) are not counted.
pub(crate) fn map_passes(method: CamMethod, channels: &[i64], aug_smooth: bool) -> u64 {
    let score_cam = match method {
        CamMethod::ScoreCam => channels.iter().map(|c| c.unsigned_abs()).sum(),
        _ => 0,
    };
    let once = score_cam.saturating_add(1);
    if aug_smooth {
        once.saturating_mul(AUG_SMOOTH_TRANSFORMS.len() as u64)
    } else {
        once
    }
}

/// Compute units of one image: its maps' `map_passes` ([`map_passes`]),
/// and the faithfulness passes of each of its `top_k` maps.
pub(crate) fn image_units(
    input_size: u32,
    top_k: usize,
    metric: Option<Faithfulness>,
    map_passes: u64,
) -> u64 {
    let per_map = faithfulness_passes(metric);
    let passes = (top_k as u64)
        .saturating_mul(per_map)
        .saturating_add(map_passes.max(1));
    passes.saturating_mul(pass_units(input_size))
}

/// Bytes one image keeps from its decoding until it is answered.
pub(crate) fn resident_bytes(input_size: u32) -> u64 {
    u64::from(input_size)
        .pow(2)
        .saturating_mul(RESIDENT_BYTES_PER_PIXEL)
}

/// What an image's header says about its decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodedForm {
    /// Columns, from the header.
    pub width: u32,
    /// Rows, from the header.
    pub height: u32,
    /// Bytes per pixel the decoding holds at its peak: the decoder's output
    /// (and a JPEG's coefficients and planes) plus the 8-bit RGB copy
    /// where the output is not 8-bit RGB already.
    pub bytes_per_pixel: u64,
}

impl DecodedForm {
    /// Pixels, width × height.
    pub(crate) fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Bytes the decoding of this image and its resizing to `input_size`
    /// take at their peak (the resizer's intermediate rows are the output
    /// width by the crop's side, at most 4 bytes a pixel).
    pub(crate) fn decode_bytes(&self, input_size: u32) -> u64 {
        let side = u64::from(self.width.min(self.height));
        self.pixels()
            .saturating_mul(self.bytes_per_pixel)
            .saturating_add(side.saturating_mul(u64::from(input_size)).saturating_mul(4))
            .saturating_add(IMAGE_OVERHEAD_BYTES)
    }
}

/// The most one image within `max_pixels` may take while decoded to
/// `input_size` and until answered: the budget must hold at least this.
pub(crate) fn worst_image_bytes(max_pixels: u64, input_size: u32) -> u64 {
    let side = max_pixels.isqrt();
    DecodedForm {
        width: u32::try_from(side).unwrap_or(u32::MAX),
        height: u32::try_from(side).unwrap_or(u32::MAX),
        bytes_per_pixel: WORST_BYTES_PER_PIXEL,
    }
    .decode_bytes(input_size)
    .max(
        max_pixels
            .saturating_mul(WORST_BYTES_PER_PIXEL)
            .saturating_add(IMAGE_OVERHEAD_BYTES),
    )
    .saturating_add(resident_bytes(input_size))
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Whether `bytes` start like a PNG or a JPEG (what the decoder would try).
pub(crate) fn looks_like_png_or_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&PNG_SIGNATURE) || bytes.starts_with(&[0xFF, 0xD8])
}

/// The size and decoded form a PNG's IHDR or a JPEG's first frame header
/// declare, read without a decoder (the sizes are those of
/// [`camshaft_data::header_dimensions`]); `None` when the bytes are neither
/// or end before the header.
pub(crate) fn decoded_form(bytes: &[u8]) -> Option<DecodedForm> {
    let (width, height) = camshaft_data::header_dimensions(bytes)?;
    let bytes_per_pixel = if bytes.starts_with(&PNG_SIGNATURE) {
        png_bytes_per_pixel(*bytes.get(24)?, *bytes.get(25)?)
    } else {
        jpeg_bytes_per_pixel(jpeg_components(bytes)?)
    };
    Some(DecodedForm {
        width,
        height,
        bytes_per_pixel,
    })
}

/// A PNG of `bit_depth` and `color_type` decodes to 8 or 16 bits per sample
/// (sub-byte depths are expanded, a palette to RGBA at most), then to RGB8.
fn png_bytes_per_pixel(bit_depth: u8, color_type: u8) -> u64 {
    let sample = if bit_depth == 16 { 2 } else { 1 };
    let channels = match color_type {
        0 => 1,
        2 => 3,
        4 => 2,
        3 | 6 => 4,
        // Not a valid PNG: the decoder refuses it; charge the widest form.
        _ => return 8 + 3,
    };
    let rgb_copy = if (color_type, sample) == (2, 1) { 0 } else { 3 };
    channels * sample + rgb_copy
}

/// A JPEG with `components` keeps up to 2 bytes of coefficients and 1 of
/// plane per component and pixel (progressive), and decodes to RGB8 (grey
/// to one byte, then copied to RGB8).
fn jpeg_bytes_per_pixel(components: u8) -> u64 {
    let c = u64::from(components.clamp(1, 4));
    let output = if c >= 3 { 3 } else { c + 3 };
    3 * c + output
}

/// The number of components of a JPEG's first frame header.
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    camshaft_data::jpeg_frame_header(bytes)?.get(9).copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn units_count_passes_and_faithfulness() {
        assert_eq!(pass_units(64), 1);
        assert_eq!(pass_units(224), 1);
        assert_eq!(pass_units(225), 2);
        assert_eq!(pass_units(512), 6);
        assert_eq!(pass_units(1024), 21);
        assert_eq!(image_units(224, 5, None, 1), 1);
        assert_eq!(image_units(224, 2, Some(Faithfulness::DeletionAuc), 1), 43);
        assert_eq!(image_units(224, 3, Some(Faithfulness::AverageDrop), 1), 7);
        assert_eq!(image_units(224, 1, Some(Faithfulness::Road), 1), 4);
        assert_eq!(
            image_units(512, 1, Some(Faithfulness::DeletionAuc), 1),
            22 * 6
        );
        // Score-CAM: a pass per channel, once for every class.
        let score_cam = map_passes(CamMethod::ScoreCam, &[512], false);
        assert_eq!(score_cam, 513);
        assert_eq!(image_units(224, 3, None, score_cam), 513);
        assert_eq!(map_passes(CamMethod::ScoreCam, &[256, 512], true), 769 * 6);
        assert_eq!(map_passes(CamMethod::GradCam, &[256, 512], false), 1);
        assert_eq!(map_passes(CamMethod::LayerCam, &[256], true), 6);
    }

    #[test]
    fn headers_give_the_decoded_form() {
        let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::new(33, 17));
        let png = encoded(rgb.clone(), image::ImageFormat::Png);
        let form = decoded_form(&png).unwrap();
        assert_eq!((form.width, form.height, form.bytes_per_pixel), (33, 17, 3));
        let jpeg = encoded(rgb, image::ImageFormat::Jpeg);
        let form = decoded_form(&jpeg).unwrap();
        assert_eq!(
            (form.width, form.height, form.bytes_per_pixel),
            (33, 17, 12)
        );
        let rgba16 = image::DynamicImage::ImageRgba16(image::ImageBuffer::new(5, 4));
        let form = decoded_form(&encoded(rgba16, image::ImageFormat::Png)).unwrap();
        assert_eq!(form.bytes_per_pixel, 8 + 3);
        let grey = image::DynamicImage::ImageLuma8(image::GrayImage::new(5, 4));
        let form = decoded_form(&encoded(grey.clone(), image::ImageFormat::Png)).unwrap();
        assert_eq!(form.bytes_per_pixel, 1 + 3);
        let form = decoded_form(&encoded(grey, image::ImageFormat::Jpeg)).unwrap();
        assert_eq!(form.bytes_per_pixel, 3 + 4);
        assert_eq!(decoded_form(b"GIF89a...."), None);
        assert_eq!(decoded_form(&png[..20]), None);
        assert!(looks_like_png_or_jpeg(&png[..20]));
        assert!(!looks_like_png_or_jpeg(b"GIF89a"));
    }

    #[test]
    fn a_bomb_costs_what_it_decodes_to() {
        let form = DecodedForm {
            width: 5657,
            height: 5657,
            bytes_per_pixel: 11,
        };
        // 256 MB of 16-bit RGBA and 96 MB of RGB8.
        let bytes = form.decode_bytes(512);
        assert!(bytes > 352_000_000 && bytes < 370_000_000, "{bytes}");
        let worst = worst_image_bytes(32 << 20, 1024);
        assert!(worst > (32u64 << 20) * 15 && worst < 600 << 20, "{worst}");
    }
}
