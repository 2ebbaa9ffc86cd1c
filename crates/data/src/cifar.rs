//! CIFAR-10 from the binary batches (`cifar-10-batches-bin`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use crate::{Dataset, Error, Result, Splits};

/// Bytes per record: one label byte, then 1024 red, 1024 green and 1024 blue
/// bytes of a 32×32 image in row-major order.
pub const CIFAR_RECORD_BYTES: usize = 1 + CIFAR_PIXELS * 3;
const CIFAR_PIXELS: usize = 32 * 32;

/// The standard CIFAR-10 class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-10 records held in memory (3 KiB per image; 150 MiB for the training
/// set). [`Dataset::image`] only re-interleaves the colour planes.
#[derive(Clone, Debug)]
pub struct CifarBinary {
    labels: Vec<u8>,
    /// Planar pixels, `CIFAR_PIXELS * 3` per record.
    planes: Vec<u8>,
    class_names: Vec<String>,
    /// (file, index of its first record), in order.
    sources: Vec<(PathBuf, usize)>,
}

impl CifarBinary {
    /// Reads the batch files in order. Each must be a whole number of 3073-byte
    /// records and every label must be below `class_names.len()`.
    pub fn from_files(files: &[PathBuf], class_names: Vec<String>) -> Result<Self> {
        let mut set = CifarBinary {
            labels: Vec::new(),
            planes: Vec::new(),
            class_names,
            sources: Vec::new(),
        };
        for path in files {
            let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
            set.append(&bytes, path)?;
        }
        Ok(set)
    }

    /// Parses one batch held in memory; `source` names it in errors and in
    /// [`Dataset::describe`].
    pub fn from_bytes(bytes: &[u8], source: &Path, class_names: Vec<String>) -> Result<Self> {
        let mut set = CifarBinary {
            labels: Vec::new(),
            planes: Vec::new(),
            class_names,
            sources: Vec::new(),
        };
        set.append(bytes, source)?;
        Ok(set)
    }

    fn append(&mut self, bytes: &[u8], source: &Path) -> Result<()> {
        let records = bytes.len() / CIFAR_RECORD_BYTES;
        if records * CIFAR_RECORD_BYTES != bytes.len() {
            return Err(Error::InvalidData {
                what: source.display().to_string(),
                reason: format!(
                    "{} bytes is not a whole number of {CIFAR_RECORD_BYTES}-byte cifar records \
                     (truncated download?)",
                    bytes.len()
                ),
            });
        }
        let first = self.labels.len();
        self.labels.reserve(records);
        self.planes.reserve(records * CIFAR_PIXELS * 3);
        for (i, record) in bytes.chunks_exact(CIFAR_RECORD_BYTES).enumerate() {
            let label = record[0];
            if usize::from(label) >= self.class_names.len() {
                return Err(Error::InvalidData {
                    what: format!("{} record {i}", source.display()),
                    reason: format!(
                        "label {label} but there are only {} classes",
                        self.class_names.len()
                    ),
                });
            }
            self.labels.push(label);
            self.planes.extend_from_slice(&record[1..]);
        }
        self.sources.push((source.to_path_buf(), first));
        Ok(())
    }
}

impl Dataset for CifarBinary {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, index: usize) -> usize {
        usize::from(self.labels[index])
    }

    fn image(&self, index: usize) -> Result<RgbImage> {
        if index >= self.labels.len() {
            return Err(Error::IndexOutOfRange {
                index,
                len: self.labels.len(),
                dataset: "cifar-10 binary".to_string(),
            });
        }
        let planes = &self.planes[index * CIFAR_PIXELS * 3..(index + 1) * CIFAR_PIXELS * 3];
        let (red, rest) = planes.split_at(CIFAR_PIXELS);
        let (green, blue) = rest.split_at(CIFAR_PIXELS);
        let mut rgb = Vec::with_capacity(CIFAR_PIXELS * 3);
        for ((&r, &g), &b) in red.iter().zip(green).zip(blue) {
            rgb.extend_from_slice(&[r, g, b]);
        }
        Ok(RgbImage::from_raw(32, 32, rgb).expect("32*32*3 bytes make a 32x32 rgb image"))
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn describe(&self, index: usize) -> String {
        let source = self.sources.iter().rev().find(|(_, first)| *first <= index);
        match source {
            Some((path, first)) if index < self.labels.len() => {
                format!("{} record {}", path.display(), index - first)
            }
            _ => format!("cifar-10 binary #{index} (out of range)"),
        }
    }
}

/// CIFAR-10 from the binary distribution: `data_batch_1.bin` … `data_batch_5.bin`
/// for training (50 000 images) and `test_batch.bin` for validation (10 000).
///
/// `root` is the `cifar-10-batches-bin` directory or its parent. Class names come
/// from `batches.meta.txt` when it is there, else [`CIFAR10_CLASSES`].
pub fn cifar10_binary(root: &Path) -> Result<Splits> {
    let dir = if root.join("cifar-10-batches-bin").is_dir() {
        root.join("cifar-10-batches-bin")
    } else {
        root.to_path_buf()
    };
    let train_files: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let test_file = dir.join("test_batch.bin");
    for path in train_files.iter().chain(std::iter::once(&test_file)) {
        if !path.is_file() {
            return Err(Error::MissingData {
                what: "cifar-10 binary batches".to_string(),
                expected: path.clone(),
                hint: format!(
                    "; download {} and extract it there, or call camshaft_data::fetch",
                    crate::download::CIFAR10_BINARY.url
                ),
            });
        }
    }
    let class_names = read_meta(&dir.join("batches.meta.txt"))?;
    let train = CifarBinary::from_files(&train_files, class_names.clone())?;
    let valid = CifarBinary::from_files(&[test_file], class_names)?;
    Ok(Splits {
        train: Arc::new(train),
        valid: Arc::new(valid),
    })
}

/// Class names from `batches.meta.txt` (one per line, blank lines ignored), or
/// the standard names when the file does not exist.
fn read_meta(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if names.is_empty() {
                return Err(Error::InvalidData {
                    what: path.display().to_string(),
                    reason: "no class names".to_string(),
                });
            }
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect())
        }
        Err(e) => Err(Error::io("read", path, e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A record whose pixel (x, y) is (r, g, b) = (x + label, y, x ^ y).
    fn record(label: u8) -> Vec<u8> {
        let mut out = vec![label];
        for plane in 0..3 {
            for y in 0..32u8 {
                for x in 0..32u8 {
                    out.push(match plane {
                        0 => x.wrapping_add(label),
                        1 => y,
                        _ => x ^ y,
                    });
                }
            }
        }
        out
    }

    fn write_batches(dir: &Path, labels_per_file: &[&[u8]]) {
        std::fs::create_dir_all(dir).unwrap();
        let names = [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ];
        for (name, labels) in names.iter().zip(labels_per_file) {
            let bytes: Vec<u8> = labels.iter().flat_map(|&l| record(l)).collect();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn parses_labels_and_maps_planes_to_rgb() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cifar-10-batches-bin");
        write_batches(&dir, &[&[3, 1], &[0], &[9, 9, 2], &[4], &[5], &[7, 8]]);
        let splits = cifar10_binary(tmp.path()).unwrap();
        assert_eq!(splits.train.len(), 8);
        assert_eq!(splits.valid.len(), 2);
        let labels: Vec<_> = (0..8).map(|i| splits.train.label(i)).collect();
        assert_eq!(labels, [3, 1, 0, 9, 9, 2, 4, 5]);
        assert_eq!(splits.valid.label(1), 8);
        assert_eq!(splits.train.class_names()[3], "cat");

        let img = splits.train.image(5).unwrap(); // label 2
        assert_eq!(img.dimensions(), (32, 32));
        assert_eq!(img.get_pixel(5, 7).0, [5 + 2, 7, 5 ^ 7]);
        assert_eq!(img.get_pixel(31, 0).0, [31 + 2, 0, 31]);
        assert!(
            splits
                .train
                .describe(5)
                .ends_with("data_batch_3.bin record 2")
        );
        assert!(
            splits
                .valid
                .describe(0)
                .ends_with("test_batch.bin record 0")
        );
        assert!(splits.train.image(8).is_err());
    }

    #[test]
    fn meta_file_names_classes_and_bad_labels_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_batches(dir, &[&[0], &[1], &[2], &[0], &[1], &[2]]);
        std::fs::write(dir.join("batches.meta.txt"), "a\nb\nc\n\n").unwrap();
        let splits = cifar10_binary(dir).unwrap();
        assert_eq!(splits.valid.class_names(), ["a", "b", "c"]);

        std::fs::write(dir.join("batches.meta.txt"), "a\nb\n").unwrap();
        let err = cifar10_binary(dir).unwrap_err().to_string();
        assert!(err.contains("data_batch_3.bin record 0"), "{err}");
    }

    #[test]
    fn truncated_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_batches(dir, &[&[0, 1], &[1], &[2], &[0], &[1], &[2]]);
        let path = dir.join("data_batch_1.bin");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = cifar10_binary(dir).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }));
        let msg = err.to_string();
        assert!(msg.contains("data_batch_1.bin"), "{msg}");
        assert!(msg.contains("3073"), "{msg}");
    }

    #[test]
    fn missing_batches_name_the_expected_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = cifar10_binary(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("data_batch_1.bin"), "{err}");
        assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
    }
}
