//! Decode + resize throughput on one core (ignored by default; a measurement,
//! not a check). `CAMSHAFT_BENCH_JPEG=photo.jpg cargo test --release -p
//! camshaft-data --test throughput -- --ignored --nocapture`; without the
//! variable it times a generated 500×375 JPEG.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use camshaft_data::{
    DecodeLimits, ResizeMethod, SplitMix64, SyntheticConfig, decode_image, resize,
};
use image::ImageEncoder;

fn generated_jpeg() -> Vec<u8> {
    let splits = SyntheticConfig {
        image_size: 512,
        ..Default::default()
    }
    .splits()
    .unwrap();
    let square = splits.train.image(0).unwrap();
    let mut photo =
        image::imageops::resize(&square, 500, 375, image::imageops::FilterType::Triangle);
    let mut rng = SplitMix64::new(1);
    for p in photo.pixels_mut() {
        for c in &mut p.0 {
            *c = c.saturating_add((rng.below(24)) as u8);
        }
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .write_image(photo.as_raw(), 500, 375, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

#[test]
#[ignore = "a throughput measurement; run with --ignored --nocapture"]
fn decode_and_resize_to_512() {
    let bytes = match std::env::var("CAMSHAFT_BENCH_JPEG") {
        Ok(path) => std::fs::read(path).unwrap(),
        Err(_) => generated_jpeg(),
    };
    let limits = DecodeLimits::default();
    let run = |n: usize, resize_too: bool| {
        let start = Instant::now();
        for _ in 0..n {
            let img = decode_image(&bytes, "bench.jpg", &limits).unwrap();
            if resize_too {
                let out = resize(&img, 512, ResizeMethod::Crop, (0.5, 0.5));
                assert_eq!(out.width(), 512);
            }
        }
        start.elapsed().as_secs_f64() / n as f64 * 1e3
    };
    run(20, true);
    let decode = run(300, false);
    let both = run(300, true);
    println!(
        "{} bytes: decode {decode:.3} ms/img, decode+crop-resize-512 {both:.3} ms/img",
        bytes.len()
    );
}
