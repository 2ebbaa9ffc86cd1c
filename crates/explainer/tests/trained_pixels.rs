//! Explained with the pixels it was trained on: a model trained with
//! `resize: squish` on images that are not square is explained on the
//! tensor its validation saw.
//!
//! The path is the real one from the checkpoint on: the learner trains and
//! writes its checkpoint (the files a worker uploads), the version's stored
//! spec is the checkpoint's spec with the job's resize beside it (as the
//! coordinator's `registry::with_resize` records it; that it does is tested
//! there and in `tests/tests/cluster.rs`), the explainer loads the version
//! from that spec ([`LoadedModel::load`]) and prepares an image with the
//! resize it read ([`prepare_image`]); the validation loader
//! ([`Loader::batches`] without augmentation, as [`Learner::evaluate`]
//! calls it) gives the tensor to compare with.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use camshaft_data::{DecodeLimits, ResizeMethod};
use camshaft_explainer::{BatchSettings, Config, LoadedModel, Metrics, prepare_image};
use camshaft_vision::learner::CHECKPOINT_FILES;
use camshaft_vision::{Learner, LearnerConfig, Loader, Model, ModelSpec};
use serde_json::json;

/// Wide images (48 × 20): a squish and a centre crop see other pixels.
const WIDTH: u32 = 48;
const HEIGHT: u32 = 20;

/// Writes `root/{train,valid}/{dark,light}/<n>.png`; returns the validation
/// files in the loader's order (class by class, by name).
fn write_images(root: &Path) -> Vec<PathBuf> {
    let mut valid = Vec::new();
    for (split, count) in [("train", 6u32), ("valid", 3)] {
        for (class, base) in [("dark", 40u32), ("light", 180)] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for n in 0..count {
                let image = image::RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
                    // Columns differ across the whole width, so what a
                    // resize keeps of them shows in the tensor.
                    let v = |k: u32| ((base + k * x + 3 * y + 11 * n) % 256) as u8;
                    image::Rgb([v(1), v(2), v(5)])
                });
                let path = dir.join(format!("{n}.png"));
                image.save(&path).unwrap();
                if split == "valid" {
                    valid.push(path);
                }
            }
        }
    }
    valid
}

#[test]
fn a_squish_trained_model_is_explained_on_its_validation_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let valid_files = write_images(&dir.path().join("data"));
    let data = camshaft_data::image_folder(&dir.path().join("data")).unwrap();

    // Train one epoch with squish, as a job with `--resize squish` does.
    let spec: ModelSpec = serde_json::from_value(json!({
        "arch": "cnn",
        "head": "linear",
        "class_names": ["dark", "light"],
        "input_size": 32,
        "normalization": "imagenet",
    }))
    .unwrap();
    let mut config = LearnerConfig::default();
    config.loader.batch_size = 4;
    config.loader.image_size = spec.input_size;
    config.loader.resize = ResizeMethod::Squish;
    config.loader.normalization = spec.normalization;
    config.loader.threads = 1;
    config.progress = false;
    let model = Model::new(spec, tch::Device::Cpu).unwrap();
    let mut learner = Learner::new(model, data.clone(), config).unwrap();
    learner.fit(1, 1e-3).unwrap();
    let checkpoint = dir.path().join("checkpoint");
    learner.save_checkpoint(&checkpoint).unwrap();

    // The version as registered: the checkpoint's spec and weights, with
    // the job's resize recorded beside the spec.
    let meta = Learner::read_checkpoint_meta(&checkpoint).unwrap();
    let mut stored_spec = serde_json::to_value(&meta.spec).unwrap();
    stored_spec["resize"] = json!("squish");
    let weights = std::fs::read(checkpoint.join(CHECKPOINT_FILES[1])).unwrap();
    let loaded = LoadedModel::load(
        "squished:1".into(),
        &stored_spec,
        &weights,
        tch::Device::Cpu,
        // No batch-invariance probe: it would run a pass on the inference
        // thread while this test ends (and the process exits under it).
        BatchSettings {
            batch_invariant: false,
            ..BatchSettings::from_config(&Config::default())
        },
        Arc::new(Metrics::new().unwrap()),
    )
    .unwrap();
    assert_eq!(loaded.resize, ResizeMethod::Squish);

    // What validation saw, image by image.
    let loader_config = learner.config().loader.clone();
    let indices = learner.config().shard.eval_indices(data.valid.len());
    assert_eq!(indices.len(), valid_files.len());
    let loader = Loader::new(loader_config).unwrap();
    let mut validated = Vec::new();
    for batch in loader.batches(data.valid.clone(), indices, 0, false) {
        let batch = batch.unwrap();
        for (row, &index) in batch.indices.iter().enumerate() {
            validated.push((index, batch.images.get(row as i64)));
        }
    }
    assert_eq!(validated.len(), valid_files.len());

    let limits = DecodeLimits::default();
    let size = loaded.spec.input_size;
    let normalization = loaded.spec.normalization;
    for (index, validation_input) in validated {
        let file = &valid_files[index];
        assert!(
            data.valid
                .describe(index)
                .contains(&*file.to_string_lossy()),
            "{} is sample {index}",
            file.display()
        );
        let bytes = std::fs::read(file).unwrap();
        let (explained_input, resized) =
            prepare_image(&bytes, "valid", &limits, size, loaded.resize, normalization).unwrap();
        assert_eq!((resized.width(), resized.height()), (size, size));
        assert_eq!(explained_input.size(), validation_input.size());
        assert!(
            explained_input.equal(&validation_input),
            "{}: the explainer's input differs from validation's",
            file.display()
        );
        // The comparison can fail: a centre crop gives another tensor.
        let (cropped, _) = prepare_image(
            &bytes,
            "valid",
            &limits,
            size,
            ResizeMethod::Crop,
            normalization,
        )
        .unwrap();
        assert!(!cropped.equal(&validation_input));
    }
    // The inference thread owns the model and frees it once the version is
    // dropped; kept, it stays parked on its empty queue until the process
    // ends instead of freeing tensors while libtorch's statics are torn down.
    std::mem::forget(loaded);
}
