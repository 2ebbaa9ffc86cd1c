//! Decoding PNG and JPEG bytes into RGB images, safely.

use std::io::Cursor;
use std::path::Path;

use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, Limits, RgbImage};

use crate::{Error, Result};

/// Bounds on what [`decode_image`] accepts, so a hostile or broken file cannot make
/// the process allocate gigabytes (a "decompression bomb": a tiny PNG whose header
/// claims 100000×100000 pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodeLimits {
    /// The most pixels (width × height) an image may have. Checked against the
    /// header before any pixel buffer is allocated. Default 64 Mi pixels.
    pub max_pixels: u64,
    /// The most encoded bytes accepted. Default 256 MiB.
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 64 * 1024 * 1024,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Decodes a PNG or JPEG (recognised by its magic bytes, not by a file name) of
/// any colour type into 8-bit RGB: grey is replicated, an alpha channel is
/// dropped (as PIL's `convert("RGB")` does), 16-bit samples are scaled down.
/// EXIF orientation is not applied (PIL does not apply it either).
///
/// `what` names the image in errors (a path, or "request 3 image 1"). Rejects
/// empty input, files over `limits.max_bytes`, headers announcing a zero-sized
/// image or more than `limits.max_pixels` pixels (before allocating), and
/// truncated or corrupt data.
pub fn decode_image(bytes: &[u8], what: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(decode_error(what, "the data is empty"));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::FileTooLarge {
            what: what.to_string(),
            bytes: bytes.len() as u64,
            max_bytes: limits.max_bytes,
        });
    }
    // Sizes from the header first, before any decoder state exists: a
    // decoder may refuse a zero dimension with a generic error, or allocate
    // per row before it checks the total.
    if let Some((width, height)) = header_dimensions(bytes) {
        check_dimensions(width, height, what, limits)?;
    }
    let format = image::guess_format(bytes).map_err(|_| {
        decode_error(
            what,
            &format!(
                "not a png or jpeg file (starts with {})",
                hex::encode(&bytes[..bytes.len().min(8)])
            ),
        )
    })?;
    let image = match format {
        ImageFormat::Png => {
            let decoder = PngDecoder::new(Cursor::new(bytes))
                .map_err(|e| decode_error(what, &e.to_string()))?;
            decode_checked(decoder, what, limits)?
        }
        ImageFormat::Jpeg => {
            check_jpeg_complete(bytes, what)?;
            let decoder = JpegDecoder::new(Cursor::new(bytes))
                .map_err(|e| decode_error(what, &e.to_string()))?;
            decode_checked(decoder, what, limits)?
        }
        other => {
            return Err(decode_error(
                what,
                &format!("{other:?} images are not supported, only png and jpeg"),
            ));
        }
    };
    Ok(image.into_rgb8())
}

/// Reads and decodes the PNG or JPEG file at `path` with the default
/// [`DecodeLimits`]; errors name the path.
pub fn open_image(path: &Path) -> Result<RgbImage> {
    open_image_with(path, &DecodeLimits::default())
}

/// [`open_image`] with explicit limits. The file size is checked before reading.
pub fn open_image_with(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let what = path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io("read", path, e))?
        .len();
    if len > limits.max_bytes {
        return Err(Error::FileTooLarge {
            what,
            bytes: len,
            max_bytes: limits.max_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    decode_image(&bytes, &what, limits)
}

fn decode_error(what: &str, reason: &str) -> Error {
    Error::Decode {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks the header's dimensions, then decodes with an allocation limit as a
/// second line of defence.
fn decode_checked(
    mut decoder: impl ImageDecoder,
    what: &str,
    limits: &DecodeLimits,
) -> Result<DynamicImage> {
    let (width, height) = decoder.dimensions();
    let pixels = check_dimensions(width, height, what, limits)?;
    let mut alloc = Limits::default();
    // 16-bit RGBA is the widest colour type PNG and JPEG decode to; allow that plus
    // the RGB8 conversion and some decoder scratch space.
    alloc.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    decoder
        .set_limits(alloc)
        .map_err(|e| decode_error(what, &e.to_string()))?;
    DynamicImage::from_decoder(decoder).map_err(|e| decode_error(what, &e.to_string()))
}

/// Refuses a zero side or more than `limits.max_pixels` pixels; returns the
/// pixel count.
fn check_dimensions(width: u32, height: u32, what: &str, limits: &DecodeLimits) -> Result<u64> {
    if width == 0 || height == 0 {
        return Err(Error::EmptyImage {
            what: what.to_string(),
            width,
            height,
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::ImageTooLarge {
            what: what.to_string(),
            width,
            height,
            pixels,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(pixels)
}

/// `(width, height)` as a PNG's IHDR or a JPEG's first frame header (SOFn)
/// declares them, read without a decoder; `None` when the bytes are neither
/// or end before the sizes.
pub fn header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        if bytes.get(12..16)? != b"IHDR" {
            return None;
        }
        let be32 = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        return Some((be32(16)?, be32(20)?));
    }
    let frame = jpeg_frame_header(bytes)?;
    let be16 = |at: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *frame.get(at)?,
            *frame.get(at + 1)?,
        ])))
    };
    Some((be16(7)?, be16(5)?))
}

/// A JPEG's first frame header (its SOFn segment, from the `0xFF` of its
/// marker to the end of the bytes): height at offset 5, width at 7, the
/// number of components at 9. `None` when the bytes are not a JPEG or end
/// before one.
pub fn jpeg_frame_header(bytes: &[u8]) -> Option<&[u8]> {
    let be16 = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *bytes.get(at)?,
            *bytes.get(at + 1)?,
        ])))
    };
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // Walk the marker segments up to the first frame header.
    let mut at = 2;
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        match marker {
            // Fill bytes, and markers without a length.
            0xFF => at += 1,
            0x01 | 0xD0..=0xD7 => at += 2,
            // SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => return bytes.get(at..),
            // Start of scan or end of image before any frame header.
            0xDA | 0xD9 => return None,
            _ => at += 2 + be16(at + 2)?,
        }
    }
}

/// The JPEG decoder fills a truncated scan with grey instead of failing (PIL
/// only does that with `LOAD_TRUNCATED_IMAGES`); a training set with half-grey
/// images is worse than an error, so require an end-of-image marker after the
/// last start-of-scan marker. Neither marker can occur inside entropy-coded data
/// (0xFF is byte-stuffed there), and an EXIF thumbnail comes before the main
/// image's scans, so its end marker does not count.
fn check_jpeg_complete(bytes: &[u8], what: &str) -> Result<()> {
    let last_scan = bytes
        .windows(2)
        .rposition(|w| w == [0xFF, 0xDA])
        .unwrap_or(0);
    if bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(decode_error(
            what,
            "jpeg data is truncated (no end-of-image marker after the last scan)",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        })
    }

    pub(crate) fn png_bytes(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A syntactically valid PNG header (signature + IHDR with a correct CRC)
    /// announcing `width`×`height` RGB8, followed by a tiny IDAT and IEND.
    fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut chunk = |kind: &[u8; 4], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn png_round_trips_exactly() {
        let img = gradient(33, 17);
        let decoded = decode_image(&png_bytes(&img), "g.png", &DecodeLimits::default()).unwrap();
        assert_eq!(decoded, img);
    }

    #[test]
    fn grey_and_alpha_pngs_become_rgb() {
        let grey = image::GrayImage::from_fn(4, 3, |x, _| image::Luma([x as u8 * 60]));
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(grey)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        let rgb = decode_image(&bytes, "grey.png", &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.get_pixel(2, 1), &Rgb([120, 120, 120]));

        let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 0]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba8(rgba)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        let rgb = decode_image(&bytes, "alpha.png", &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.get_pixel(1, 1), &Rgb([10, 20, 30]));
    }

    #[test]
    fn jpeg_decodes_close_to_the_original() {
        let img = gradient(40, 30);
        let decoded = decode_image(&jpeg_bytes(&img), "g.jpg", &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.dimensions(), (40, 30));
        let err: u64 = img
            .as_raw()
            .iter()
            .zip(decoded.as_raw())
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        assert!(err / (40 * 30 * 3) < 8, "mean error {}", err / 3600);
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_file() {
        let err = decode_image(b"hello world", "/x/y.png", &DecodeLimits::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot decode image /x/y.png: "), "{msg}");
        let err = decode_image(&[], "/x/empty.png", &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("/x/empty.png"), "{err}");
    }

    #[test]
    fn corrupt_png_body_is_an_error() {
        let mut bytes = png_bytes(&gradient(32, 32));
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0x5A;
        }
        assert!(matches!(
            decode_image(&bytes, "c.png", &DecodeLimits::default()),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn truncated_files_are_errors() {
        let png = png_bytes(&gradient(64, 64));
        let err = decode_image(&png[..png.len() / 2], "t.png", &DecodeLimits::default());
        assert!(matches!(err, Err(Error::Decode { .. })), "{err:?}");

        let jpg = jpeg_bytes(&gradient(64, 64));
        let err =
            decode_image(&jpg[..jpg.len() * 2 / 3], "t.jpg", &DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("t.jpg"), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn zero_sized_image_is_rejected() {
        let bytes = png_header_claiming(0, 10);
        let err = decode_image(&bytes, "z.png", &DecodeLimits::default()).unwrap_err();
        // Read from the header, before the png crate (which would refuse it
        // with a generic error).
        assert!(matches!(err, Error::EmptyImage { .. }), "{err:?}");
        assert!(err.to_string().contains("z.png"));
        let err = decode_image(
            &png_header_claiming(0, 0),
            "z.png",
            &DecodeLimits::default(),
        );
        assert!(matches!(err, Err(Error::EmptyImage { .. })), "{err:?}");
    }

    #[test]
    fn decompression_bomb_is_rejected_from_the_header() {
        let bytes = png_header_claiming(100_000, 100_000);
        assert!(bytes.len() < 100);
        let err = decode_image(&bytes, "bomb.png", &DecodeLimits::default()).unwrap_err();
        match err {
            Error::ImageTooLarge {
                width,
                height,
                pixels,
                ..
            } => {
                assert_eq!((width, height), (100_000, 100_000));
                assert_eq!(pixels, 10_000_000_000);
            }
            other => panic!("expected ImageTooLarge, got {other:?}"),
        }
        // A small limit also rejects an honest image.
        let limits = DecodeLimits {
            max_pixels: 100,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_image(&png_bytes(&gradient(11, 10)), "big.png", &limits),
            Err(Error::ImageTooLarge { .. })
        ));
        let limits = DecodeLimits {
            max_bytes: 10,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_image(&png_bytes(&gradient(11, 10)), "big.png", &limits),
            Err(Error::FileTooLarge { .. })
        ));
    }

    #[test]
    fn header_dimensions_of_png_and_jpeg() {
        let img = gradient(33, 17);
        assert_eq!(header_dimensions(&png_bytes(&img)), Some((33, 17)));
        assert_eq!(header_dimensions(&jpeg_bytes(&img)), Some((33, 17)));
        assert_eq!(header_dimensions(b"GIF89a...."), None);
        assert_eq!(header_dimensions(&[0xFF, 0xD8, 0xFF]), None);
        // A JPEG frame header claiming 0 rows is refused as empty.
        let mut jpg = jpeg_bytes(&img);
        let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpg[sof + 5] = 0;
        jpg[sof + 6] = 0;
        assert!(matches!(
            decode_image(&jpg, "z.jpg", &DecodeLimits::default()),
            Err(Error::EmptyImage { height: 0, .. })
        ));
    }

    #[test]
    fn open_image_names_a_missing_path() {
        let err = open_image(Path::new("/nonexistent/dir/cat.jpg")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/dir/cat.jpg"),
            "{err}"
        );
    }
}
