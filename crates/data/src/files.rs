//! Data sets made of image files on disk: ImageFolder layouts and labelled file lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use crate::decode::{DecodeLimits, open_image_with};
use crate::{Dataset, Error, Result, Splits};

/// Labelled image files: the storage behind [`image_folder`] and
/// [`crate::oxford_pets`]. Images are decoded on every [`Dataset::image`] call;
/// nothing is cached, so memory stays flat and indexing from many threads is free.
#[derive(Clone, Debug)]
pub struct ImageFiles {
    name: String,
    files: Vec<PathBuf>,
    labels: Vec<usize>,
    class_names: Vec<String>,
    limits: DecodeLimits,
}

impl ImageFiles {
    /// A data set of `files` with `labels` (indices into `class_names`). `name`
    /// appears in errors ("image folder /data/pets/train").
    ///
    /// Errors when the lengths differ or a label has no class name.
    pub fn new(
        name: impl Into<String>,
        files: Vec<PathBuf>,
        labels: Vec<usize>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let name = name.into();
        if files.len() != labels.len() {
            return Err(Error::InvalidConfig(format!(
                "{name}: {} files but {} labels",
                files.len(),
                labels.len()
            )));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l >= class_names.len())
        {
            return Err(Error::InvalidConfig(format!(
                "{name}: {} has label {label} but there are only {} classes",
                files[i].display(),
                class_names.len()
            )));
        }
        Ok(ImageFiles {
            name,
            files,
            labels,
            class_names,
            limits: DecodeLimits::default(),
        })
    }

    /// Replaces the decode limits (default [`DecodeLimits::default`]).
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The labels, in sample order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The samples whose positions are in `indices`, in that order.
    pub fn subset(&self, name: impl Into<String>, indices: &[usize]) -> Result<Self> {
        let mut files = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.files.len() {
                return Err(Error::IndexOutOfRange {
                    index: i,
                    len: self.files.len(),
                    dataset: self.name.clone(),
                });
            }
            files.push(self.files[i].clone());
            labels.push(self.labels[i]);
        }
        Ok(ImageFiles {
            name: name.into(),
            files,
            labels,
            class_names: self.class_names.clone(),
            limits: self.limits,
        })
    }
}

impl Dataset for ImageFiles {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    fn image(&self, index: usize) -> Result<RgbImage> {
        let path = self
            .files
            .get(index)
            .ok_or_else(|| Error::IndexOutOfRange {
                index,
                len: self.files.len(),
                dataset: self.name.clone(),
            })?;
        open_image_with(path, &self.limits)
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn describe(&self, index: usize) -> String {
        match self.files.get(index) {
            Some(path) => path.display().to_string(),
            None => format!("{} #{index} (out of range)", self.name),
        }
    }
}

/// True for the file extensions image data sets use: png, jpg, jpeg, in any case.
pub fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        e.eq_ignore_ascii_case("png")
            || e.eq_ignore_ascii_case("jpg")
            || e.eq_ignore_ascii_case("jpeg")
    })
}

/// The entries of `dir`, sorted by file name (byte order) for determinism.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        entries.push(entry.path());
    }
    entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(entries)
}

/// The class sub-directories of `dir`: sorted names of its directories.
/// Hidden directories (starting with '.') are skipped.
pub fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for path in sorted_entries(dir)? {
        if !path.is_dir() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(Error::InvalidData {
                what: path.display().to_string(),
                reason: "class directory name is not valid utf-8".to_string(),
            });
        };
        if !name.starts_with('.') {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// One split of an ImageFolder: `dir/<class>/<image>` for every name in
/// `class_names` (label = position in `class_names`). A class directory that is
/// missing contributes no samples; a directory not in `class_names` is an error
/// (a validation class the model was not trained on). Files are sorted by name
/// within each class; non-image files are skipped.
pub fn image_folder_split(dir: &Path, class_names: &[String]) -> Result<ImageFiles> {
    if !dir.is_dir() {
        return Err(Error::MissingData {
            what: "image folder split".to_string(),
            expected: dir.to_path_buf(),
            hint: "; expected one sub-directory of images per class".to_string(),
        });
    }
    for found in class_dirs(dir)? {
        if !class_names.contains(&found) {
            return Err(Error::InvalidData {
                what: dir.join(&found).display().to_string(),
                reason: format!(
                    "class {found:?} is not among the training classes {class_names:?}"
                ),
            });
        }
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        for path in sorted_entries(&class_dir)? {
            if path.is_file() && is_image_file(&path) {
                files.push(path);
                labels.push(label);
            }
        }
    }
    ImageFiles::new(
        format!("image folder {}", dir.display()),
        files,
        labels,
        class_names.to_vec(),
    )
}

/// A generic ImageFolder data set (also fastai's CIFAR-10 PNG layout):
/// `root/train/<class>/*.{png,jpg,jpeg}` for training and `root/valid/<class>/*`
/// (or, when there is no `valid`, `root/test/<class>/*`) for validation.
///
/// Classes are the training sub-directories sorted by name (byte order, as
/// Python's `sorted`), so label `i` is the `i`-th name alphabetically.
pub fn image_folder(root: &Path) -> Result<Splits> {
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return Err(Error::MissingData {
            what: "image folder training split".to_string(),
            expected: train_dir,
            hint: "; the layout is root/train/<class>/*.png and root/valid/<class>/* \
                   (or root/test/<class>/*)"
                .to_string(),
        });
    }
    let valid_dir = ["valid", "test"]
        .iter()
        .map(|name| root.join(name))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| Error::MissingData {
            what: "image folder validation split".to_string(),
            expected: root.join("valid"),
            hint: format!("; or {}", root.join("test").display()),
        })?;
    let class_names = class_dirs(&train_dir)?;
    if class_names.is_empty() {
        return Err(Error::InvalidData {
            what: train_dir.display().to_string(),
            reason: "no class sub-directories".to_string(),
        });
    }
    let train = image_folder_split(&train_dir, &class_names)?;
    if train.is_empty() {
        return Err(Error::InvalidData {
            what: train_dir.display().to_string(),
            reason: "no png or jpeg files in any class directory".to_string(),
        });
    }
    let valid = image_folder_split(&valid_dir, &class_names)?;
    Ok(Splits {
        train: Arc::new(train),
        valid: Arc::new(valid),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn touch_png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(3, 2, image::Rgb([shade, 0, 0]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn classes_are_sorted_and_files_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch_png(&root.join("train/truck/b.png"), 1);
        touch_png(&root.join("train/truck/a.PNG"), 2);
        touch_png(&root.join("train/airplane/z.png"), 3);
        touch_png(&root.join("train/cat/m.png"), 4);
        std::fs::write(root.join("train/cat/notes.txt"), "x").unwrap();
        touch_png(&root.join("test/cat/q.png"), 5);
        touch_png(&root.join("test/truck/r.png"), 6);

        let splits = image_folder(root).unwrap();
        assert_eq!(splits.train.class_names(), ["airplane", "cat", "truck"]);
        assert_eq!(splits.train.len(), 4);
        let names: Vec<_> = (0..4).map(|i| splits.train.describe(i)).collect();
        assert!(names[0].ends_with("airplane/z.png"));
        assert!(names[1].ends_with("cat/m.png"));
        assert!(names[2].ends_with("truck/a.PNG"));
        assert!(names[3].ends_with("truck/b.png"));
        let labels: Vec<_> = (0..4).map(|i| splits.train.label(i)).collect();
        assert_eq!(labels, [0, 1, 2, 2]);
        assert_eq!(splits.train.image(2).unwrap().get_pixel(0, 0)[0], 2);

        // test/ is used when there is no valid/; labels follow the train classes.
        assert_eq!(splits.valid.len(), 2);
        assert_eq!(splits.valid.label(0), 1);
        assert_eq!(splits.valid.label(1), 2);
        assert_eq!(splits.valid.class_names(), splits.train.class_names());
    }

    #[test]
    fn valid_is_preferred_and_unknown_classes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch_png(&root.join("train/a/1.png"), 1);
        touch_png(&root.join("train/b/1.png"), 1);
        touch_png(&root.join("valid/b/1.png"), 1);
        touch_png(&root.join("test/a/1.png"), 1);
        touch_png(&root.join("test/a/2.png"), 1);
        let splits = image_folder(root).unwrap();
        assert_eq!(splits.valid.len(), 1);
        assert_eq!(splits.valid.label(0), 1);

        touch_png(&root.join("valid/zebra/1.png"), 1);
        let err = image_folder(root).unwrap_err();
        assert!(err.to_string().contains("zebra"), "{err}");
    }

    #[test]
    fn missing_folders_name_the_expected_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = image_folder(dir.path()).unwrap_err();
        let expected = dir.path().join("train");
        assert!(
            err.to_string().contains(&expected.display().to_string()),
            "{err}"
        );
        touch_png(&dir.path().join("train/a/1.png"), 1);
        let err = image_folder(dir.path()).unwrap_err();
        assert!(err.to_string().contains("valid"), "{err}");
    }

    #[test]
    fn bad_image_errors_name_the_file_and_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train/a/broken.jpg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not a jpeg").unwrap();
        touch_png(&dir.path().join("valid/a/1.png"), 1);
        let splits = image_folder(dir.path()).unwrap();
        let err = splits.train.image(0).unwrap_err();
        assert!(err.to_string().contains("broken.jpg"), "{err}");
        assert!(matches!(
            splits.train.image(5),
            Err(Error::IndexOutOfRange { index: 5, .. })
        ));
    }
}
