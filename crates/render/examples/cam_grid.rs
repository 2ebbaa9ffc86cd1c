//! Draw a demo sheet of synthetic class activation maps, the way the lecture
//! shows its 5×5 grid, and write it as a PNG.
//!
//! ```text
//! cargo run -p camshaft-render --example cam_grid -- /tmp/cam_grid.png [size] [colormap]
//! ```

use camshaft_render::{
    ActivationMap, Colormap, OverlayOptions, Panel, format_title, grid, overlay, save_png,
};
use image::{Rgb, RgbImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "cam_grid.png".to_owned());
    let size: u32 = args.next().map_or(Ok(128), |s| s.parse())?;
    let colormap: Colormap = args.next().map_or(Ok(Colormap::Magma), |s| s.parse())?;

    let classes = ["cat", "dog", "automobile", "Abyssinian_cat", "caf\u{e9}"];
    let mut panels = Vec::new();
    for (i, class) in (0u32..).zip(classes) {
        // A striped "photo" and a 16×16 map with one blob whose centre moves.
        let image = RgbImage::from_fn(size, size, |x, y| {
            let v = if (x / 8 + y / 8) % 2 == 0 { 170 } else { 120 };
            Rgb([v, v - 20, v - 40])
        });
        let (cx, cy) = (3.0 + 2.5 * i as f32, 12.0 - 2.0 * i as f32);
        let values: Vec<f32> = (0..256)
            .map(|k| {
                let (x, y) = ((k % 16) as f32, (k / 16) as f32);
                (-((x - cx).powi(2) + (y - cy).powi(2)) / 8.0).exp() * 4.0 - 1.0
            })
            .collect();
        let map = ActivationMap::new(&values, 16, 16)?;
        let opts = OverlayOptions {
            colormap,
            ..OverlayOptions::default()
        };
        panels.push(Panel {
            image: overlay(&image, &map, &opts)?,
            title: format_title(class, 0.99 - 0.1 * i as f32),
        });
    }
    let sheet = grid(&panels, 3)?;
    save_png(&sheet, std::path::Path::new(&path))?;
    println!("wrote {path} ({}x{})", sheet.width(), sheet.height());
    Ok(())
}
