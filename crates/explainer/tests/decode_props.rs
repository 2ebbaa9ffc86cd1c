//! Property tests of what a client controls: the image bytes (arbitrary,
//! truncated, decompression bombs, empty) and the request's fields. Small
//! case counts keep them fast; every failure must be a clean per-image or
//! request-level error, never a panic.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use camshaft_data::{DecodeLimits, ResizeMethod};
use camshaft_explainer::{Config, prepare_image};
use camshaft_proto::v1::{ExplainRequest, ImageErrorKind};
use camshaft_vision::Normalization;
use common::{Cluster, input, png_claiming};
use proptest::prelude::*;
use prost::Message;
use tonic::Code;

const LIMITS: DecodeLimits = DecodeLimits {
    max_pixels: 4096,
    max_bytes: 1 << 20,
};

fn prepare(bytes: &[u8]) -> Result<(), ImageErrorKind> {
    prepare_image(
        bytes,
        "prop",
        &LIMITS,
        16,
        ResizeMethod::Crop,
        Normalization::Imagenet,
    )
    .map(|_| ())
    .map_err(|e| {
        assert!(e.message.contains("prop"), "{}", e.message);
        e.kind
    })
}

fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 13) as u8, (y * 7) as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Random bytes almost never form an image; whatever they form, the
        // answer is an image, or one of the client-side kinds.
        if let Err(kind) = prepare(&bytes) {
            prop_assert!(matches!(
                kind,
                ImageErrorKind::Undecodable | ImageErrorKind::Empty | ImageErrorKind::TooLarge
            ), "{kind:?}");
        }
    }

    #[test]
    fn images_with_a_magic_prefix_and_garbage_are_refused_cleanly(
        png in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = if png {
            vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]
        } else {
            vec![0xFF, 0xD8, 0xFF]
        };
        bytes.extend(tail);
        if let Err(kind) = prepare(&bytes) {
            prop_assert!(kind != ImageErrorKind::Internal && kind != ImageErrorKind::Unspecified);
        }
    }

    #[test]
    fn truncated_images_are_undecodable(cut in 0.0f64..1.0, png in any::<bool>()) {
        let format = if png { image::ImageFormat::Png } else { image::ImageFormat::Jpeg };
        let bytes = encoded(40, 30, format);
        prop_assert!(prepare(&bytes).is_ok());
        // Cut before the image data ends (a PNG's last 16 bytes are the
        // IDAT checksum and IEND, a JPEG's last 2 its end marker).
        let keep = ((bytes.len() - 16) as f64 * cut) as usize;
        prop_assert_eq!(prepare(&bytes[..keep]), Err(ImageErrorKind::Undecodable));
    }

    #[test]
    fn declared_sizes_are_checked_before_decoding(width in 0u32..200_000, height in 0u32..200_000) {
        let got = prepare(&png_claiming(width, height, 8, 2));
        let expected = if width == 0 || height == 0 {
            ImageErrorKind::Empty
        } else if u64::from(width) * u64::from(height) > LIMITS.max_pixels {
            ImageErrorKind::TooLarge
        } else {
            // A small honest header with an empty IDAT: no pixels to read.
            ImageErrorKind::Undecodable
        };
        prop_assert_eq!(got, Err(expected));
    }
}

#[test]
fn a_tiny_png_declaring_100000_squared_is_refused_from_its_header() {
    let bomb = png_claiming(100_000, 100_000, 8, 2);
    assert!(bomb.len() < 100);
    // Decoding would need 30 GB: the test would die, not fail, if it tried.
    let limits = DecodeLimits::default();
    let err = prepare_image(
        &bomb,
        "bomb",
        &limits,
        16,
        ResizeMethod::Crop,
        Normalization::None,
    )
    .unwrap_err();
    assert_eq!(err.kind, ImageErrorKind::TooLarge);
    assert!(err.message.contains("100000"), "{}", err.message);
}

/// The request fields a client controls, checked by a real server before it
/// looks the model up: a request is INVALID_ARGUMENT exactly when one of
/// them is out of range, else NOT_FOUND (the model does not exist).
#[test]
fn request_fields_are_validated_without_panicking() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        max_images_per_request: 3,
        ..Config::default()
    };
    let cluster = runtime.block_on(Cluster::start(config));
    let strategy = (
        -2i32..9,
        -2i32..7,
        prop_oneof![
            Just(None),
            Just(Some(f32::NAN)),
            (-1.0f32..2.0).prop_map(Some)
        ],
        -2i32..6,
        0usize..5,
        proptest::option::of(0u32..1000),
        -2i32..6,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &strategy,
            |(method, colormap, alpha, faithfulness, images, top_k, baseline)| {
                let request = ExplainRequest {
                    model: "nobody".into(),
                    images: (0..images)
                        .map(|i| input(&i.to_string(), vec![i as u8]))
                        .collect(),
                    method,
                    colormap,
                    alpha,
                    faithfulness,
                    top_k,
                    faithfulness_baseline: baseline,
                    ..Default::default()
                };
                // The wire form decodes back to the same request.
                let wire = request.encode_to_vec();
                let back = ExplainRequest::decode(wire.as_slice()).unwrap();
                prop_assert_eq!(back.method, method);
                let invalid = !(0..=7).contains(&method)
                    || !(0..=4).contains(&colormap)
                    || alpha.is_some_and(|a| !(0.0..=1.0).contains(&a))
                    || !(0..=3).contains(&faithfulness)
                    || !(0..=3).contains(&baseline)
                    || images > 3;
                let mut client = cluster.client();
                let status = runtime.block_on(client.explain(back)).unwrap_err();
                let expected = if invalid {
                    Code::InvalidArgument
                } else {
                    Code::NotFound
                };
                prop_assert_eq!(status.code(), expected, "{}", status.message());
                Ok(())
            },
        )
        .unwrap();
    runtime.block_on(cluster.stop());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_wire_bytes_never_panic_the_request_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // What tonic does with a message body before our code sees it.
        let _ = ExplainRequest::decode(bytes.as_slice());
    }
}
