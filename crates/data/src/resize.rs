//! Square resizing with fastai's `Resize` semantics, on SIMD convolution.

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

pub use camshaft_spec::ResizeMethod;

thread_local! {
    // Reused per thread: a Resizer keeps its convolution buffers between calls.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes `img` to `size`×`size` with `method`.
///
/// `crop_anchor` = (x, y) in [0, 1]² positions the crop window (for
/// [`ResizeMethod::Crop`]) or the image inside the padded square (for
/// [`ResizeMethod::Pad`]): (0, 0) is top-left, (0.5, 0.5) the centre, (1, 1)
/// bottom-right; values outside are clamped, NaN means centre. Window offsets are
/// whole pixels, truncated like fastai's `int(pct * (w - crop_w))`.
///
/// Filtering is bilinear *convolution* (`fast_image_resize`'s
/// `Convolution(Bilinear)`): the kernel widens when shrinking, so it antialiases
/// like PIL's `Image.BILINEAR`, which fastai uses. AVX2/SSE4.1/NEON are picked at
/// run time. An image that is already `size`×`size` is returned as a clone.
/// A 0×0 input gives a black square; `size` 0 gives a 0×0 image.
pub fn resize(
    img: &RgbImage,
    size: u32,
    method: ResizeMethod,
    crop_anchor: (f32, f32),
) -> RgbImage {
    let (width, height) = img.dimensions();
    if size == 0 {
        return RgbImage::new(0, 0);
    }
    if width == 0 || height == 0 {
        return RgbImage::new(size, size);
    }
    if (width, height) == (size, size) {
        return img.clone();
    }
    let ax = anchor(crop_anchor.0);
    let ay = anchor(crop_anchor.1);
    match method {
        ResizeMethod::Squish => resize_window(img, (0, 0, width, height), (size, size)),
        ResizeMethod::Crop => {
            let side = width.min(height);
            let left = (ax * (width - side) as f32) as u32;
            let top = (ay * (height - side) as f32) as u32;
            resize_window(img, (left, top, side, side), (size, size))
        }
        ResizeMethod::Pad => {
            let longer = u64::from(width.max(height));
            let scaled = |side: u32| -> u32 {
                let s = (u64::from(side) * u64::from(size) + longer / 2) / longer;
                s.clamp(1, u64::from(size)) as u32
            };
            let (inner_w, inner_h) = (scaled(width), scaled(height));
            let inner = resize_window(img, (0, 0, width, height), (inner_w, inner_h));
            let mut out = RgbImage::new(size, size);
            let left = (ax * (size - inner_w) as f32) as u32;
            let top = (ay * (size - inner_h) as f32) as u32;
            image::imageops::replace(&mut out, &inner, i64::from(left), i64::from(top));
            out
        }
    }
}

fn anchor(v: f32) -> f32 {
    if v.is_nan() { 0.5 } else { v.clamp(0.0, 1.0) }
}

/// Scales the window (left, top, width, height) of `img` to `out` = (w, h).
/// The window lies inside the image and every size is at least 1.
fn resize_window(img: &RgbImage, window: (u32, u32, u32, u32), out: (u32, u32)) -> RgbImage {
    let (left, top, win_w, win_h) = window;
    if (left, top, win_w, win_h) == (0, 0, img.width(), img.height()) && out == img.dimensions() {
        return img.clone();
    }
    let fast = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .ok()
        .and_then(|src| {
            let mut dst = Image::new(out.0, out.1, PixelType::U8x3);
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
                .crop(
                    f64::from(left),
                    f64::from(top),
                    f64::from(win_w),
                    f64::from(win_h),
                );
            RESIZER
                .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
                .ok()?;
            RgbImage::from_raw(out.0, out.1, dst.into_vec())
        });
    // The fast path only fails on inconsistent buffer sizes, which an RgbImage
    // cannot have; fall back to the (slower, equivalent) image crate rather than panic.
    fast.unwrap_or_else(|| {
        let view = image::imageops::crop_imm(img, left, top, win_w, win_h).to_image();
        image::imageops::resize(&view, out.0, out.1, image::imageops::FilterType::Triangle)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Left half red, right half blue, with a green top row: 200×100.
    fn halves() -> RgbImage {
        RgbImage::from_fn(200, 100, |x, y| {
            if y == 0 {
                Rgb([0, 255, 0])
            } else if x < 100 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        })
    }

    #[test]
    fn every_method_gives_a_square_of_the_requested_size() {
        let img = halves();
        for method in [ResizeMethod::Crop, ResizeMethod::Squish, ResizeMethod::Pad] {
            for size in [1, 7, 64, 512] {
                let out = resize(&img, size, method, (0.5, 0.5));
                assert_eq!(out.dimensions(), (size, size), "{method:?} {size}");
            }
        }
        let tall = RgbImage::from_pixel(3, 50, Rgb([9, 9, 9]));
        for method in [ResizeMethod::Crop, ResizeMethod::Squish, ResizeMethod::Pad] {
            assert_eq!(resize(&tall, 32, method, (0.5, 0.5)).dimensions(), (32, 32));
        }
    }

    #[test]
    fn same_size_is_an_exact_copy() {
        let img = RgbImage::from_fn(16, 16, |x, y| Rgb([x as u8, y as u8, 7]));
        assert_eq!(resize(&img, 16, ResizeMethod::Crop, (0.0, 1.0)), img);
    }

    #[test]
    fn crop_anchor_picks_the_window() {
        let img = halves();
        let left = resize(&img, 50, ResizeMethod::Crop, (0.0, 0.0));
        let right = resize(&img, 50, ResizeMethod::Crop, (1.0, 1.0));
        assert_ne!(left, right);
        // The left window is the red half, the right window the blue half.
        assert_eq!(left.get_pixel(25, 25), &Rgb([255, 0, 0]));
        assert_eq!(right.get_pixel(25, 25), &Rgb([0, 0, 255]));
        let centre = resize(&img, 50, ResizeMethod::Crop, (0.5, 0.5));
        assert_eq!(centre.get_pixel(5, 25), &Rgb([255, 0, 0]));
        assert_eq!(centre.get_pixel(45, 25), &Rgb([0, 0, 255]));
    }

    #[test]
    fn squish_keeps_both_halves_and_pad_adds_black_bars() {
        let img = halves();
        let squished = resize(&img, 40, ResizeMethod::Squish, (0.5, 0.5));
        assert_eq!(squished.get_pixel(5, 20), &Rgb([255, 0, 0]));
        assert_eq!(squished.get_pixel(35, 20), &Rgb([0, 0, 255]));

        let padded = resize(&img, 40, ResizeMethod::Pad, (0.5, 0.5));
        // 200×100 → 40×20 placed at rows 10..30.
        assert_eq!(padded.get_pixel(20, 2), &Rgb([0, 0, 0]));
        assert_eq!(padded.get_pixel(20, 37), &Rgb([0, 0, 0]));
        assert_eq!(padded.get_pixel(5, 20), &Rgb([255, 0, 0]));
        assert_eq!(padded.get_pixel(35, 20), &Rgb([0, 0, 255]));
        let top = resize(&img, 40, ResizeMethod::Pad, (0.5, 0.0));
        assert_eq!(top.get_pixel(5, 25), &Rgb([0, 0, 0]));
        assert_ne!(top, padded);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let empty = RgbImage::new(0, 0);
        assert_eq!(
            resize(&empty, 8, ResizeMethod::Crop, (0.5, 0.5)).dimensions(),
            (8, 8)
        );
        assert_eq!(
            resize(&halves(), 0, ResizeMethod::Pad, (0.5, 0.5)).dimensions(),
            (0, 0)
        );
        let out = resize(&halves(), 10, ResizeMethod::Crop, (f32::NAN, 7.0));
        assert_eq!(out.dimensions(), (10, 10));
    }
}
