//! Tests of the public API of `camshaft-render`.
#![allow(clippy::unwrap_used)]

use camshaft_render::{
    ActivationMap, Colormap, Error, OverlayOptions, Panel, colorize, encode_png, format_title,
    grid, heatmap, overlay, save_png, upsample_bilinear,
};
use image::{Rgb, RgbImage};

fn map(values: &[f32], height: u32, width: u32) -> ActivationMap<'_> {
    ActivationMap::new(values, height, width).unwrap()
}

/// Compare with references kept as the `f64` that Python printed them as.
fn assert_close(actual: &[f32], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(a) - e).abs() <= tolerance,
            "value {i}: got {a}, expected {e}"
        );
    }
}

// ---------------------------------------------------------------- upsampling

#[test]
fn upsampling_a_constant_map_is_constant() {
    let values = [2.5f32; 12];
    let out = upsample_bilinear(&map(&values, 3, 4), 17, 9).unwrap();
    assert_eq!(out.len(), 17 * 9);
    assert!(out.iter().all(|&v| (v - 2.5).abs() < 1e-6), "{out:?}");
}

#[test]
fn upsampling_2x2_to_4x4_matches_hand_computed_values() {
    // align_corners=False: output centres map to src = (dst + 0.5) / 2 - 0.5,
    // i.e. -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last cell), so
    // each axis weighs the second cell by 0, 0.25, 0.75, 1.
    let out = upsample_bilinear(&map(&[0.0, 1.0, 2.0, 3.0], 2, 2), 4, 4).unwrap();
    #[rustfmt::skip]
    let expected = [
        0.0, 0.25, 0.75, 1.0,
        0.5, 0.75, 1.25, 1.5,
        1.5, 1.75, 2.25, 2.5,
        2.0, 2.25, 2.75, 3.0,
    ];
    assert_close(&out, &expected, 1e-6);
}

#[test]
fn upsampling_replicates_edges_and_keeps_corners() {
    // 1x2 -> 1x8: src = (dst + 0.5) / 4 - 0.5 = -0.375, -0.125, 0.125, ..., 1.375;
    // the two outermost outputs on each side sit beyond the cell centres.
    let out = upsample_bilinear(&map(&[0.0, 1.0], 1, 2), 1, 8).unwrap();
    assert_close(
        &out,
        &[0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0],
        1e-6,
    );

    // Corners of an upsampled map equal the corner cells exactly.
    let values: Vec<f32> = (0..12).map(|i| (i * i) as f32 - 7.0).collect();
    let out = upsample_bilinear(&map(&values, 3, 4), 12, 16).unwrap();
    assert_eq!(out[0], values[0]);
    assert_eq!(out[15], values[3]);
    assert_eq!(out[11 * 16], values[8]);
    assert_eq!(out[12 * 16 - 1], values[11]);
    // Every output lies within the input's range (convex combinations).
    assert!(out.iter().all(|&v| (-7.0..=114.0).contains(&v)));
}

#[test]
fn upsampling_to_the_same_size_is_the_identity() {
    let values: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
    let out = upsample_bilinear(&map(&values, 5, 7), 5, 7).unwrap();
    assert_eq!(out, values);
}

#[test]
fn upsampling_a_single_cell_fills_the_output() {
    let out = upsample_bilinear(&map(&[4.0], 1, 1), 3, 5).unwrap();
    assert_eq!(out, vec![4.0; 15]);
}

/// The input of the torch reference cases: `((k * 7) % 11 - 3.5) * 0.5`.
fn torch_reference_input(n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| (((k * 7) % 11) as f32 - 3.5) * 0.5)
        .collect()
}

#[test]
fn upsampling_matches_torch_interpolate_3x5_to_7x11() {
    // torch 2.11: F.interpolate(x.reshape(1, 1, 3, 5), size=(7, 11),
    // mode="bilinear", align_corners=False).flatten()
    let values = torch_reference_input(15);
    #[rustfmt::skip]
    let expected: [f64; 77] = [
        -1.75, -1.1136363744735718, 0.4772729277610779, 1.5681817531585693, 0.6590907573699951,
        -0.25, 1.3409092426300049, 2.9318184852600098, 2.5227270126342773, 1.6136360168457031, 1.25,
        -1.6071428060531616, -0.9707792401313782, 0.6201301217079163, 1.7110388278961182,
        0.8019478917121887, -0.1071428507566452, 1.1266233921051025, 2.3603899478912354,
        2.1655845642089844, 1.6136360168457031, 1.3928571939468384,
        -1.178571343421936, -0.5422077178955078, 1.048701524734497, 2.139610528945923,
        1.230519413948059, 0.3214285969734192, 0.4837661385536194, 0.6461038589477539,
        1.0941559076309204, 1.6136364936828613, 1.8214285373687744,
        -0.75, -0.11363629996776581, 1.477272868156433, 2.5681817531585693, 1.6590907573699951,
        0.75, -0.15909099578857422, -1.0681819915771484, 0.02272772789001465, 1.6136369705200195,
        2.25,
        -0.3214285373687744, -0.1136363297700882, 0.40584415197372437, 0.853895902633667,
        1.0162338018417358, 1.1785714626312256, 0.26948046684265137, -0.6396105289459229,
        0.4512992203235626, 2.042208433151245, 2.6785714626312256,
        0.10714292526245117, -0.11363638192415237, -0.6655845642089844, -0.8603898286819458,
        0.373376727104187, 1.6071429252624512, 0.6980518698692322, -0.21103906631469727,
        0.8798706531524658, 2.4707798957824707, 3.107142925262451,
        0.25, -0.11363641917705536, -1.022727370262146, -1.4318180084228516, 0.15909114480018616,
        1.75, 0.8409090042114258, -0.06818200647830963, 1.0227277278900146, 2.6136369705200195,
        3.25,
    ];
    let out = upsample_bilinear(&map(&values, 3, 5), 7, 11).unwrap();
    assert_close(&out, &expected, 1e-5);
}

#[test]
fn downsampling_matches_torch_interpolate_5x4_to_3x2() {
    let values = torch_reference_input(20);
    let expected: [f64; 6] = [
        0.08333335071802139,
        1.5833332538604736,
        0.5,
        -0.75,
        0.9166666269302368,
        0.5833336710929871,
    ];
    let out = upsample_bilinear(&map(&values, 5, 4), 3, 2).unwrap();
    assert_close(&out, &expected, 1e-5);
}

#[test]
fn upsampling_rejects_bad_shapes() {
    let values = [1.0f32; 6];
    let wrong_len = ActivationMap {
        values: &values,
        height: 2,
        width: 2,
    };
    assert!(matches!(
        upsample_bilinear(&wrong_len, 4, 4),
        Err(Error::MapShape {
            len: 6,
            height: 2,
            width: 2,
            expected: 4
        })
    ));
    assert!(matches!(
        ActivationMap::new(&values, 2, 2),
        Err(Error::MapShape { .. })
    ));
    assert!(matches!(
        ActivationMap::new(&[], 0, 3),
        Err(Error::ZeroSize { .. })
    ));
    let empty = ActivationMap {
        values: &[],
        height: 0,
        width: 0,
    };
    assert!(matches!(
        upsample_bilinear(&empty, 4, 4),
        Err(Error::ZeroSize { .. })
    ));
    let ok = map(&values, 2, 3);
    assert!(matches!(
        upsample_bilinear(&ok, 0, 4),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        upsample_bilinear(&ok, 4, 0),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        upsample_bilinear(&ok, u32::MAX, u32::MAX),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn errors_explain_themselves() {
    let values = [1.0f32; 6];
    let err = ActivationMap::new(&values, 2, 2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "activation map has 6 values but its size 2x2 needs 4"
    );
}

// ---------------------------------------------------------------- colormaps

#[test]
fn colormaps_match_matplotlib_anchor_values() {
    // matplotlib.colormaps[name](t), each channel * 255 rounded.
    let cases = [
        (Colormap::Magma, 0.0, [0, 0, 4]),
        (Colormap::Magma, 0.5, [183, 55, 121]),   // #b73779
        (Colormap::Magma, 1.0, [252, 253, 191]),  // #fcfdbf
        (Colormap::Viridis, 0.0, [68, 1, 84]),    // #440154
        (Colormap::Viridis, 0.5, [33, 145, 140]), // #21918c
        (Colormap::Viridis, 1.0, [253, 231, 37]), // #fde725
        (Colormap::Inferno, 0.0, [0, 0, 4]),
        (Colormap::Inferno, 1.0, [252, 255, 164]), // #fcffa4
        (Colormap::Jet, 0.0, [0, 0, 128]),
        (Colormap::Jet, 1.0, [128, 0, 0]),
    ];
    for (cmap, t, rgb) in cases {
        assert_eq!(colorize(t, cmap), rgb, "{cmap}({t})");
    }
}

#[test]
fn colormaps_clip_out_of_range_values() {
    for cmap in Colormap::ALL {
        assert_eq!(colorize(-0.5, cmap), colorize(0.0, cmap));
        assert_eq!(colorize(3.0, cmap), colorize(1.0, cmap));
        assert_eq!(colorize(f32::NAN, cmap), colorize(0.0, cmap));
    }
}

#[test]
fn perceptual_colormaps_get_lighter_along_the_table() {
    // A transcription slip in the embedded tables would break this ordering.
    let luma =
        |[r, g, b]: [u8; 3]| 0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b);
    for cmap in [Colormap::Magma, Colormap::Viridis, Colormap::Inferno] {
        for i in 0..248 {
            let (a, b) = (i as f32 / 256.0, (i + 8) as f32 / 256.0);
            assert!(
                luma(colorize(b, cmap)) > luma(colorize(a, cmap)),
                "{cmap} at entry {i}"
            );
        }
    }
}

#[test]
fn colormap_names_round_trip() {
    for cmap in Colormap::ALL {
        assert_eq!(cmap.to_string().parse::<Colormap>().unwrap(), cmap);
    }
    assert_eq!("Magma".parse::<Colormap>().unwrap(), Colormap::Magma);
    assert_eq!(Colormap::Viridis.to_string(), "viridis");
    assert_eq!(Colormap::default(), Colormap::Magma);
    assert!(
        matches!("hot".parse::<Colormap>(), Err(Error::UnknownColormap(name)) if name == "hot")
    );
}

// ---------------------------------------------------------------- overlays

fn grey(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, Rgb([100, 100, 100]))
}

#[test]
fn overlay_with_alpha_zero_returns_the_image() {
    let mut image = grey(40, 30);
    image.put_pixel(3, 4, Rgb([1, 2, 3]));
    let values = [0.0, 5.0, 2.0, 9.0];
    let opts = OverlayOptions {
        alpha: 0.0,
        ..OverlayOptions::default()
    };
    assert_eq!(overlay(&image, &map(&values, 2, 2), &opts).unwrap(), image);
}

#[test]
fn overlay_with_alpha_one_is_the_pure_colormap() {
    let image = grey(32, 32);
    // A 2x2 map upsampled x16: corners keep the cell values exactly.
    let values = [0.0, 5.0, 2.0, 10.0];
    for cmap in Colormap::ALL {
        let opts = OverlayOptions {
            colormap: cmap,
            alpha: 1.0,
            range: None,
        };
        let out = overlay(&image, &map(&values, 2, 2), &opts).unwrap();
        assert_eq!(out, heatmap(&map(&values, 2, 2), 32, 32, &opts).unwrap());
        assert_eq!(out.get_pixel(0, 0).0, colorize(0.0, cmap), "{cmap} min");
        assert_eq!(out.get_pixel(31, 31).0, colorize(1.0, cmap), "{cmap} max");
        assert_eq!(out.get_pixel(31, 0).0, colorize(0.5, cmap), "{cmap} middle");
    }
}

#[test]
fn overlay_blends_with_the_given_alpha() {
    // A constant map normalises to 0: magma's bottom colour (0, 0, 4).
    let out = overlay(
        &grey(8, 8),
        &map(&[3.0; 4], 2, 2),
        &OverlayOptions::default(),
    )
    .unwrap();
    assert!(out.pixels().all(|p| p.0 == [50, 50, 52]));
    let opts = OverlayOptions {
        alpha: 0.25,
        ..OverlayOptions::default()
    };
    let out = overlay(&grey(8, 8), &map(&[3.0; 4], 2, 2), &opts).unwrap();
    assert!(out.pixels().all(|p| p.0 == [75, 75, 76]));
}

#[test]
fn the_hottest_cell_gives_the_brightest_region() {
    let mut values = [0.0f32; 16];
    values[2 * 4 + 1] = 8.0; // row 2, column 1
    values[5] = 1.0;
    let out = overlay(
        &grey(64, 64),
        &map(&values, 4, 4),
        &OverlayOptions::default(),
    )
    .unwrap();
    let brightness = |x: u32, y: u32| {
        out.get_pixel(x, y)
            .0
            .iter()
            .map(|&c| u32::from(c))
            .sum::<u32>()
    };
    let (mut best, mut at) = (0, (0, 0));
    for y in 0..64 {
        for x in 0..64 {
            if brightness(x, y) > best {
                best = brightness(x, y);
                at = (x, y);
            }
        }
    }
    // The cell covers x in 16..32, y in 32..48.
    assert!(
        (16..32).contains(&at.0) && (32..48).contains(&at.1),
        "brightest at {at:?}"
    );
    assert!(brightness(24, 40) > brightness(56, 8));
}

#[test]
fn overlay_uses_a_fixed_range_when_given() {
    let image = grey(16, 16);
    let values = [0.0, 1.0, 2.0, 3.0];
    let opts = OverlayOptions {
        alpha: 1.0,
        range: Some((0.0, 10.0)),
        ..OverlayOptions::default()
    };
    let out = overlay(&image, &map(&values, 2, 2), &opts).unwrap();
    assert_eq!(out.get_pixel(15, 15).0, colorize(0.3, Colormap::Magma));
    // Values beyond the range clip to the ends.
    let opts = OverlayOptions {
        alpha: 1.0,
        range: Some((1.0, 2.0)),
        ..OverlayOptions::default()
    };
    let out = overlay(&image, &map(&values, 2, 2), &opts).unwrap();
    assert_eq!(out.get_pixel(0, 0).0, colorize(0.0, Colormap::Magma));
    assert_eq!(out.get_pixel(15, 15).0, colorize(1.0, Colormap::Magma));
}

#[test]
fn overlay_rejects_bad_input() {
    let image = grey(8, 8);
    let values = [0.0, 1.0, 2.0, 3.0];
    let good = map(&values, 2, 2);
    let with = |alpha, range| OverlayOptions {
        alpha,
        range,
        ..OverlayOptions::default()
    };
    assert!(matches!(
        overlay(&image, &good, &with(1.5, None)),
        Err(Error::InvalidAlpha(_))
    ));
    assert!(matches!(
        overlay(&image, &good, &with(-0.1, None)),
        Err(Error::InvalidAlpha(_))
    ));
    assert!(matches!(
        overlay(&image, &good, &with(f32::NAN, None)),
        Err(Error::InvalidAlpha(_))
    ));
    assert!(matches!(
        overlay(&image, &good, &with(0.5, Some((2.0, 1.0)))),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        overlay(&image, &good, &with(0.5, Some((0.0, f32::INFINITY)))),
        Err(Error::InvalidRange { .. })
    ));
    let nan = [0.0, f32::NAN, 2.0, 3.0];
    assert!(matches!(
        overlay(&image, &map(&nan, 2, 2), &OverlayOptions::default()),
        Err(Error::NonFinite { index: 1, .. })
    ));
    let short = ActivationMap {
        values: &values[..3],
        height: 2,
        width: 2,
    };
    assert!(matches!(
        overlay(&image, &short, &OverlayOptions::default()),
        Err(Error::MapShape { .. })
    ));
    let opts = with(0.5, Some((0.0, 1.0)));
    assert!(matches!(
        overlay(&image, &short, &opts),
        Err(Error::MapShape { .. })
    ));
    assert!(matches!(
        overlay(&RgbImage::new(0, 5), &good, &OverlayOptions::default()),
        Err(Error::ZeroSize { .. })
    ));
}

// ---------------------------------------------------------------- grids

fn panel(width: u32, height: u32, title: &str) -> Panel {
    Panel {
        image: RgbImage::from_pixel(width, height, Rgb([40, 160, 220])),
        title: title.to_owned(),
    }
}

fn black_pixels(img: &RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
    y.flat_map(|y| x.clone().map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 == [0, 0, 0])
        .count()
}

#[test]
fn format_title_rounds_to_two_decimals() {
    assert_eq!(format_title("cat", 0.9812), "cat(0.98)");
    assert_eq!(format_title("dog", 0.5), "dog(0.50)");
    assert_eq!(format_title("airplane", 1.0), "airplane(1.00)");
}

#[test]
fn grid_of_seven_in_three_columns_has_three_rows() {
    // 64x48 panels are doubled to 128x96 (at least 128 wide); text scale 1 gives
    // 4 px padding and an 11 px title bar.
    let panels: Vec<Panel> = (0..7)
        .map(|i| panel(64, 48, &format_title("cat", i as f32 / 7.0)))
        .collect();
    let img = grid(&panels, 3).unwrap();
    assert_eq!(img.dimensions(), (3 * 128 + 4 * 4, 3 * (11 + 96) + 4 * 4));
    // The first panel sits below its title bar, the empty eighth and ninth cells
    // stay white.
    assert_eq!(img.get_pixel(4, 4 + 11).0, [40, 160, 220]);
    assert_eq!(
        img.get_pixel(4 + 128 - 1, 4 + 11 + 96 - 1).0,
        [40, 160, 220]
    );
    let (last_row_y, eighth_x) = (4 + 2 * (11 + 96 + 4), 4 + 128 + 4);
    assert_eq!(
        img.get_pixel(eighth_x + 10, last_row_y + 11 + 10).0,
        [255, 255, 255]
    );
}

#[test]
fn grid_uses_no_more_columns_than_panels() {
    let img = grid(&[panel(200, 100, "a"), panel(200, 100, "b")], 5).unwrap();
    // 200 px panels: text scale 2, padding 8, title bar 22.
    assert_eq!(img.dimensions(), (2 * 200 + 3 * 8, 22 + 100 + 2 * 8));
}

#[test]
fn titles_are_drawn_in_the_title_bar() {
    let img = grid(&[panel(128, 128, "cat(0.98)"), panel(128, 128, "")], 2).unwrap();
    let bar_y = 4..4 + 11;
    let first = black_pixels(&img, 4..4 + 128, bar_y.clone());
    let second = black_pixels(&img, 4 + 128 + 4..4 + 2 * 128 + 4, bar_y);
    assert!(first > 30, "only {first} black pixels in the first title");
    assert_eq!(second, 0);
    // Nothing black anywhere else: padding, panels.
    assert_eq!(black_pixels(&img, 0..img.width(), 0..img.height()), first);
}

#[test]
fn titles_scale_with_large_panels() {
    // 512 px panels get text scale 5: '(' spans all 7 font rows, 35 px; the
    // padding is 4 * 5 and the title bar 11 * 5.
    let img = grid(&[panel(512, 512, "cat(0.98)")], 1).unwrap();
    let scale = 5;
    let bar = (scale * 4)..(scale * 4 + 11 * scale);
    let rows_with_ink: Vec<u32> = bar
        .filter(|&y| black_pixels(&img, 0..img.width(), y..y + 1) > 0)
        .collect();
    assert_eq!(rows_with_ink.len(), 35);
    assert_eq!(img.dimensions(), (512 + 2 * 20, 55 + 512 + 2 * 20));
    // A title too long for scale 5 (20 chars = 595 px) drops the whole grid to 4.
    let img = grid(&[panel(512, 512, "Abyssinian_cat(0.69)")], 1).unwrap();
    assert_eq!(img.dimensions(), (512 + 2 * 16, 44 + 512 + 2 * 16));
}

#[test]
fn small_panels_are_scaled_up_nearest_neighbour() {
    let mut small = RgbImage::from_pixel(32, 32, Rgb([0, 200, 0]));
    small.put_pixel(0, 0, Rgb([200, 0, 0]));
    let img = grid(
        &[Panel {
            image: small,
            title: "frog(0.71)".into(),
        }],
        1,
    )
    .unwrap();
    assert_eq!(img.dimensions(), (128 + 8, 11 + 128 + 8));
    let top = 4 + 11;
    assert_eq!(img.get_pixel(4 + 3, top + 3).0, [200, 0, 0]);
    assert_eq!(img.get_pixel(4 + 4, top + 4).0, [0, 200, 0]);
}

#[test]
fn long_titles_are_cut_to_the_panel_width() {
    let long = "a very long title that cannot possibly fit above the panel";
    let img = grid(&[panel(128, 128, long), panel(128, 128, long)], 2).unwrap();
    // Ink stays inside each panel's column; the padding columns stay white.
    for x in [0..4, 132..136, 264..268] {
        assert_eq!(black_pixels(&img, x, 0..img.height()), 0);
    }
    // At scale 1 a character advances 6 px, so 21 characters (125 px) fit in
    // 128: the first 19 and "..".
    let cut = format!("{}..", &long[..19]);
    let expected = grid(&[panel(128, 128, &cut), panel(128, 128, &cut)], 2).unwrap();
    assert_eq!(img, expected);
    // A huge title is cut just as quickly.
    let huge = "x".repeat(1_000_000);
    assert!(grid(&[panel(128, 128, &huge)], 1).is_ok());
}

#[test]
fn non_ascii_titles_render_as_question_marks() {
    let accented = grid(&[panel(128, 128, "caf\u{e9}")], 1).unwrap();
    let question = grid(&[panel(128, 128, "caf?")], 1).unwrap();
    assert_eq!(accented, question);
}

#[test]
fn panels_of_other_sizes_are_resized_to_the_first() {
    let img = grid(
        &[
            panel(160, 120, "a"),
            panel(40, 90, "b"),
            panel(800, 600, "c"),
        ],
        3,
    )
    .unwrap();
    assert_eq!(img.dimensions(), (3 * 160 + 4 * 4, 11 + 120 + 2 * 4));
    let second_x = 4 + 160 + 4;
    assert_eq!(
        img.get_pixel(second_x + 159, 4 + 11 + 119).0,
        [40, 160, 220]
    );
}

#[test]
fn grid_rejects_bad_input() {
    assert!(matches!(grid(&[], 3), Err(Error::NoPanels)));
    assert!(matches!(
        grid(&[panel(8, 8, "x")], 0),
        Err(Error::ZeroColumns)
    ));
    assert!(matches!(
        grid(&[panel(8, 8, "x"), panel(0, 8, "y")], 2),
        Err(Error::ZeroSize { .. })
    ));
    // 200 panels of 4096x1 side by side: over 800k px wide with padding and
    // title bars over 600 px high, beyond MAX_PIXELS, refused before allocating.
    let wide = Panel {
        image: RgbImage::new(4096, 1),
        title: String::new(),
    };
    assert!(matches!(
        grid(&vec![wide; 200], 200),
        Err(Error::TooLarge { .. })
    ));
}

// ---------------------------------------------------------------- png

fn sample_image() -> RgbImage {
    RgbImage::from_fn(37, 23, |x, y| {
        Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8])
    })
}

#[test]
fn encode_png_round_trips() {
    let img = sample_image();
    let bytes = encode_png(&img).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(decoded, img);
}

#[test]
fn save_png_round_trips_through_image_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam.png");
    let img = sample_image();
    save_png(&img, &path).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8(), img);
    // Overwriting works and leaves no temporary file behind.
    save_png(&grey(3, 3), &path).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8(), grey(3, 3));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cam.png")]);
}

#[test]
fn save_png_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("cam.png");
    let err = save_png(&sample_image(), &path).unwrap_err();
    assert!(matches!(err, Error::Write { .. }));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}
