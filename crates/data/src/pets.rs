//! The Oxford-IIIT Pets data set (`images/*.jpg`), labelled cat/dog or by breed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::files::{ImageFiles, sorted_entries};
use crate::rng::SplitMix64;
use crate::{Error, Result, Splits};

/// How Pets images are labelled; both come from the file name alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PetsLabels {
    /// The lecture's rule: a file name starting with an upper-case letter is a cat
    /// (`Abyssinian_1.jpg`), otherwise a dog (`beagle_1.jpg`). Classes are
    /// `["cat", "dog"]`: **cat = 0, dog = 1**. fastai's `is_cat` labels give the
    /// vocabulary `[False, True]`, i.e. dog = 0, cat = 1; compare class *names*,
    /// not indices, with fastai output.
    CatDog,
    /// The 37 breeds: the file name before the last `_<number>`
    /// (`great_pyrenees_17.jpg` → `great_pyrenees`), sorted by name in byte order
    /// (as fastai's vocabulary: the 12 capitalised cat breeds come first).
    Breeds,
}

/// A seeded random train/validation split, the counterpart of fastai's
/// `RandomSplitter(valid_pct, seed)`.
///
/// The first `floor(valid_pct * n)` entries of a [`SplitMix64`] permutation of
/// the (name-sorted) files are the validation set. Proportions match fastai's;
/// the chosen files do not (fastai permutes with torch's generator), so
/// accuracies are comparable only statistically.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomSplit {
    /// Fraction of samples that go to validation, in [0, 1].
    pub valid_pct: f64,
    /// Seed of the permutation.
    pub seed: u64,
}

impl Default for RandomSplit {
    /// fastai's `valid_pct=0.2, seed=42`.
    fn default() -> Self {
        RandomSplit {
            valid_pct: 0.2,
            seed: 42,
        }
    }
}

impl RandomSplit {
    /// `(train, valid)` positions of `0..n`, each sorted ascending.
    pub fn split(&self, n: usize) -> Result<(Vec<usize>, Vec<usize>)> {
        if !(0.0..=1.0).contains(&self.valid_pct) {
            return Err(Error::InvalidConfig(format!(
                "valid_pct must be in [0, 1], got {}",
                self.valid_pct
            )));
        }
        let cut = ((self.valid_pct * n as f64).floor() as usize).min(n);
        let order = SplitMix64::new(self.seed).permutation(n);
        let mut valid = order[..cut].to_vec();
        let mut train = order[cut..].to_vec();
        valid.sort_unstable();
        train.sort_unstable();
        Ok((train, valid))
    }
}

/// The cat/dog rule on a file name: starts with an upper-case letter.
pub fn pets_is_cat(file_name: &str) -> bool {
    file_name.chars().next().is_some_and(char::is_uppercase)
}

/// The breed in a Pets file name: the stem before the last `_<digits>`
/// (`"english_cocker_spaniel_120.jpg"` → `"english_cocker_spaniel"`).
/// `None` when the name does not follow that pattern.
pub fn pets_breed(file_name: &str) -> Option<&str> {
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem);
    let (breed, number) = stem.rsplit_once('_')?;
    if breed.is_empty() || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(breed)
}

/// Oxford-IIIT Pets from `root/images/*.jpg` (or `root/*.jpg` when `root` is the
/// `images` directory itself), split with `split`.
///
/// Only `.jpg` files are used (the archive also holds a few `.mat` files).
/// With [`PetsLabels::Breeds`], a jpg whose name has no `_<number>` suffix is an
/// error naming it.
pub fn oxford_pets(root: &Path, labels: PetsLabels, split: RandomSplit) -> Result<Splits> {
    let images_dir = find_images_dir(root)?;
    let mut files: Vec<PathBuf> = Vec::new();
    for path in sorted_entries(&images_dir)? {
        let is_jpg = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
        if is_jpg && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::MissingData {
            what: "oxford-iiit pets images".to_string(),
            expected: images_dir.join("*.jpg"),
            hint: String::new(),
        });
    }
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let (class_names, label_of): (Vec<String>, Vec<usize>) = match labels {
        PetsLabels::CatDog => (
            vec!["cat".to_string(), "dog".to_string()],
            names
                .iter()
                .map(|n| if pets_is_cat(n) { 0 } else { 1 })
                .collect(),
        ),
        PetsLabels::Breeds => {
            let mut breeds = Vec::with_capacity(names.len());
            for (name, path) in names.iter().zip(&files) {
                let breed = pets_breed(name).ok_or_else(|| Error::InvalidData {
                    what: path.display().to_string(),
                    reason: "pets file name is not <breed>_<number>.jpg".to_string(),
                })?;
                breeds.push(breed.to_string());
            }
            let mut classes = breeds.clone();
            classes.sort();
            classes.dedup();
            let labels = breeds
                .iter()
                .map(|b| classes.binary_search(b).unwrap_or(0))
                .collect();
            (classes, labels)
        }
    };
    let all = ImageFiles::new(
        format!("oxford-iiit pets {}", images_dir.display()),
        files,
        label_of,
        class_names,
    )?;
    let (train, valid) = split.split(all.files().len())?;
    Ok(Splits {
        train: Arc::new(all.subset(
            format!("oxford-iiit pets train {}", images_dir.display()),
            &train,
        )?),
        valid: Arc::new(all.subset(
            format!("oxford-iiit pets valid {}", images_dir.display()),
            &valid,
        )?),
    })
}

fn find_images_dir(root: &Path) -> Result<PathBuf> {
    let nested = root.join("images");
    if nested.is_dir() {
        return Ok(nested);
    }
    if root.is_dir() && root.file_name().is_some_and(|n| n == "images") {
        return Ok(root.to_path_buf());
    }
    Err(Error::MissingData {
        what: "oxford-iiit pets images".to_string(),
        expected: nested,
        hint: format!(
            "; download {} (or {}) and extract it, or call camshaft_data::fetch",
            crate::download::OXFORD_PETS.url,
            crate::download::OXFORD_PETS_IMAGES.url
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_rules_on_file_names() {
        assert!(pets_is_cat("Abyssinian_1.jpg"));
        assert!(pets_is_cat("Russian_Blue_200.jpg"));
        assert!(!pets_is_cat("american_bulldog_12.jpg"));
        assert!(!pets_is_cat(""));
        assert_eq!(pets_breed("great_pyrenees_17.jpg"), Some("great_pyrenees"));
        assert_eq!(pets_breed("Bengal_3.jpg"), Some("Bengal"));
        assert_eq!(
            pets_breed("english_cocker_spaniel_120.jpg"),
            Some("english_cocker_spaniel")
        );
        assert_eq!(pets_breed("Egyptian_Mau_x.jpg"), None);
        assert_eq!(pets_breed("noseparator.jpg"), None);
        assert_eq!(pets_breed("_12.jpg"), None);
    }

    #[test]
    fn random_split_is_deterministic_and_sized() {
        let split = RandomSplit::default();
        let (train, valid) = split.split(100).unwrap();
        assert_eq!(valid.len(), 20);
        assert_eq!(train.len(), 80);
        let mut all: Vec<_> = train.iter().chain(&valid).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split.split(100).unwrap(), (train, valid.clone()));
        let other = RandomSplit { seed: 43, ..split };
        assert_ne!(other.split(100).unwrap().1, valid);
        assert!(
            RandomSplit {
                valid_pct: 1.5,
                seed: 0
            }
            .split(3)
            .is_err()
        );
    }

    fn write_pets(dir: &Path) {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        let names = [
            "Abyssinian_1.jpg",
            "Abyssinian_2.jpg",
            "Bengal_10.jpg",
            "beagle_1.jpg",
            "beagle_7.jpg",
            "great_pyrenees_3.jpg",
            "great_pyrenees_4.jpg",
            "samoyed_1.jpg",
            "Sphynx_5.jpg",
            "yorkshire_terrier_9.jpg",
        ];
        let pixel = image::RgbImage::from_pixel(4, 4, image::Rgb([100, 50, 25]));
        for name in names {
            pixel.save(images.join(name)).unwrap();
        }
        std::fs::write(images.join("Abyssinian_100.mat"), b"matlab").unwrap();
    }

    #[test]
    fn cat_dog_labels_from_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        write_pets(dir.path());
        let splits = oxford_pets(dir.path(), PetsLabels::CatDog, RandomSplit::default()).unwrap();
        assert_eq!(splits.train.class_names(), ["cat", "dog"]);
        assert_eq!(splits.train.len() + splits.valid.len(), 10);
        assert_eq!(splits.valid.len(), 2);
        let mut cats = 0;
        for set in [&splits.train, &splits.valid] {
            for i in 0..set.len() {
                let path = set.describe(i);
                assert!(path.ends_with(".jpg"), "{path}");
                let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
                let expected = if pets_is_cat(name) { 0 } else { 1 };
                assert_eq!(set.label(i), expected, "{name}");
                cats += usize::from(expected == 0);
            }
        }
        assert_eq!(cats, 4);
        assert_eq!(splits.valid.image(0).unwrap().dimensions(), (4, 4));
    }

    #[test]
    fn breed_labels_are_sorted_names() {
        let dir = tempfile::tempdir().unwrap();
        write_pets(dir.path());
        // Pointing at images/ directly works too.
        let split = RandomSplit {
            valid_pct: 0.0,
            seed: 1,
        };
        let splits = oxford_pets(&dir.path().join("images"), PetsLabels::Breeds, split).unwrap();
        assert_eq!(
            splits.train.class_names(),
            [
                "Abyssinian",
                "Bengal",
                "Sphynx",
                "beagle",
                "great_pyrenees",
                "samoyed",
                "yorkshire_terrier"
            ]
        );
        assert_eq!(splits.valid.len(), 0);
        // Files are in name order: Abyssinian_1, Abyssinian_2, Bengal_10, Sphynx_5, beagle_1, ...
        let labels: Vec<_> = (0..splits.train.len())
            .map(|i| splits.train.label(i))
            .collect();
        assert_eq!(labels, [0, 0, 1, 2, 3, 3, 4, 4, 5, 6]);
    }

    #[test]
    fn missing_pets_names_the_expected_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = oxford_pets(dir.path(), PetsLabels::CatDog, RandomSplit::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&dir.path().join("images").display().to_string()),
            "{msg}"
        );
    }
}
