//! The loader is deterministic per (seed, epoch), shards exactly, and names
//! the file it cannot decode.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use camshaft_data::{Dataset, ImageFiles, SyntheticConfig};
use camshaft_vision::{Loader, LoaderConfig, Normalization, Shard};
use tch::Tensor;

fn synthetic() -> Arc<dyn Dataset> {
    let cfg = SyntheticConfig {
        seed: 5,
        train_len: 96,
        valid_len: 8,
        image_size: 40,
        num_classes: 3,
    };
    cfg.splits().unwrap().train
}

fn loader(threads: usize) -> Loader {
    Loader::new(LoaderConfig {
        batch_size: 16,
        image_size: 32,
        threads,
        normalization: Normalization::Imagenet,
        ..LoaderConfig::default()
    })
    .unwrap()
}

fn epoch(l: &Loader, data: &Arc<dyn Dataset>, e: usize) -> Vec<(Tensor, Vec<usize>)> {
    let idx = Shard::default().train_indices(data.len(), 16, 1, e);
    l.batches(data.clone(), idx, e, true)
        .map(|b| {
            let b = b.unwrap();
            assert_eq!(b.images.size(), [b.indices.len() as i64, 3, 32, 32]);
            let labels: Vec<i64> = Vec::try_from(&b.labels).unwrap();
            let expect: Vec<i64> = b.indices.iter().map(|&i| data.label(i) as i64).collect();
            assert_eq!(labels, expect);
            (b.images, b.indices)
        })
        .collect()
}

#[test]
fn batches_depend_only_on_seed_and_epoch() {
    let data = synthetic();
    let a = epoch(&loader(1), &data, 3);
    let b = epoch(&loader(4), &data, 3);
    assert_eq!(a.len(), 6);
    for ((ta, ia), (tb, ib)) in a.iter().zip(&b) {
        assert_eq!(ia, ib);
        assert!(
            ta.equal(tb),
            "same (seed, epoch) must give the same pixels on any thread count"
        );
    }
    let c = epoch(&loader(2), &data, 4);
    assert_ne!(a[0].1, c[0].1, "another epoch, another order");
}

#[test]
fn a_corrupt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
        .save(&good)
        .unwrap();
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let files = ImageFiles::new(
        "test",
        vec![good, bad.clone()],
        vec![0, 1],
        vec!["a".into(), "b".into()],
    )
    .unwrap();
    let data: Arc<dyn Dataset> = Arc::new(files);
    let mut batches = loader(2).batches(data, vec![0, 1], 0, false);
    let err = batches.next().unwrap().unwrap_err().to_string();
    assert!(err.contains("bad.png"), "{err}");
    assert!(batches.next().is_none(), "the stream ends after an error");
}
