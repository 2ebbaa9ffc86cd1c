//! PNG encoding and atomic file writing.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image::codecs::png::PngEncoder;
use image::{ImageEncoder, RgbImage};

use crate::{Error, Result};

/// Encode `img` as an 8-bit RGB PNG.
///
/// # Errors
///
/// [`Error::Encode`] if the encoder fails (for example on an empty image).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(Error::Encode)?;
    Ok(bytes)
}

/// Write `img` as a PNG file at `path`.
///
/// The PNG goes to a temporary file next to `path` that is then renamed over it,
/// so a reader never sees a half-written picture and a failed write leaves any
/// previous file in place.
///
/// # Errors
///
/// [`Error::Encode`], or [`Error::Write`] naming `path` when the directory does
/// not exist or cannot be written.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let bytes = encode_png(img)?;
    let write_error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path does not name a file",
        ))
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    // Process id and a counter keep concurrent writers of the same path apart.
    static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    temp_name.push(format!(".{}-{serial}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);

    let written = std::fs::File::create(&temp).and_then(|mut file| {
        file.write_all(&bytes)?;
        file.sync_all()
    });
    let result = written.and_then(|()| std::fs::rename(&temp, path));
    if let Err(source) = result {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&temp);
        return Err(write_error(source));
    }
    Ok(())
}
