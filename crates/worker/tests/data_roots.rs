//! A job's paths (its data set's `data_dir`, its `pretrained_path`) are
//! read only under the worker's data roots: outside them the error is one
//! text, the same whether the path exists or not, and not retryable; `..`
//! and links out of a root are refused; inside a root the files load. A
//! `.ot` pretrained file is refused wherever it is.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use camshaft_data::{DataRoots, SyntheticConfig, write_folder};
use camshaft_proto::v1::{self, DatasetKind, PretrainedSource};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization, save_weights};
use camshaft_worker::task::{TaskError, import_pretrained, load_data};
use tch::{Device, Tensor};

/// A root with a small image folder in `pets/`, next to a directory
/// outside it holding another folder and weight files.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    roots: DataRoots,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    let tiny = SyntheticConfig {
        train_len: 4,
        valid_len: 2,
        image_size: 16,
        ..SyntheticConfig::default()
    };
    write_folder(&tiny, &root.join("pets")).unwrap();
    write_folder(&tiny, &outside.join("pets")).unwrap();
    let roots = DataRoots::new([&root]).unwrap();
    Fixture {
        _dir: dir,
        root,
        outside,
        roots,
    }
}

fn folder_spec(data_dir: &str) -> v1::JobSpec {
    v1::JobSpec {
        dataset: Some(v1::DatasetSpec {
            kind: DatasetKind::Folder as i32,
            data_dir: data_dir.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pretrained_spec(path: &str) -> v1::JobSpec {
    v1::JobSpec {
        pretrained: PretrainedSource::Path as i32,
        pretrained_path: path.into(),
        ..Default::default()
    }
}

fn cnn() -> Model {
    let spec = ModelSpec {
        arch: Arch::Cnn,
        head: Head::Linear,
        class_names: vec!["a".into(), "b".into()],
        input_size: 16,
        normalization: Normalization::None,
    };
    Model::new(spec, Device::Cpu).unwrap()
}

fn data_error(f: &Fixture, data_dir: &str) -> TaskError {
    load_data(&folder_spec(data_dir), 0, &f.root, &f.roots).unwrap_err()
}

fn weights_error(f: &Fixture, path: &str) -> TaskError {
    import_pretrained(&mut cnn(), &pretrained_spec(path), &f.roots).unwrap_err()
}

/// Every error is the first one, byte for byte, and none can be retried.
fn all_the_same(errors: &[(&str, TaskError)]) -> String {
    let (_, first) = &errors[0];
    for (path, e) in errors {
        assert_eq!(e.reason, first.reason, "{path}");
        assert!(!e.retryable, "{path}: {}", e.reason);
    }
    first.reason.clone()
}

#[test]
fn a_path_outside_the_roots_is_one_error_whether_or_not_it_exists() {
    let f = fixture();
    let outside_pets = f.outside.join("pets").display().to_string();
    let paths = [
        "/etc/passwd",
        "/etc/nope",
        "/etc/nope/deeper",
        outside_pets.as_str(),
        "../outside/pets",
        "pets/../../outside/pets",
    ];
    let reason = all_the_same(&paths.map(|p| (p, data_error(&f, p))));
    assert!(reason.contains("dataset.data_dir"), "{reason}");
    assert!(reason.contains("data_roots"), "{reason}");
    assert!(reason.contains(&f.root.display().to_string()), "{reason}");
    assert!(
        !reason.contains("etc") && !reason.contains("outside"),
        "{reason}"
    );

    let outside_file = f.outside.join("w.safetensors");
    save_weights(&cnn(), &outside_file).unwrap();
    let outside_file = outside_file.display().to_string();
    let paths = [
        "/etc/passwd",
        "/etc/nope",
        outside_file.as_str(),
        "../outside/w.safetensors",
        "../outside/missing.safetensors",
    ];
    let reason = all_the_same(&paths.map(|p| (p, weights_error(&f, p))));
    assert!(reason.contains("pretrained_path"), "{reason}");
    assert!(
        !reason.contains("etc") && !reason.contains("outside"),
        "{reason}"
    );
}

#[cfg(unix)]
#[test]
fn a_link_inside_a_root_to_outside_is_refused() {
    let f = fixture();
    std::os::unix::fs::symlink(&f.outside, f.root.join("escape")).unwrap();
    save_weights(&cnn(), &f.outside.join("w.safetensors")).unwrap();
    let refused = data_error(&f, "/etc/nope").reason;
    let absolute = f.root.join("escape/pets").display().to_string();
    for path in ["escape/pets", absolute.as_str(), "escape/missing"] {
        assert_eq!(data_error(&f, path).reason, refused, "{path}");
    }
    let refused = weights_error(&f, "/etc/nope").reason;
    for path in ["escape/w.safetensors", "escape/missing.pth"] {
        assert_eq!(weights_error(&f, path).reason, refused, "{path}");
    }
}

#[test]
fn paths_inside_a_root_load() {
    let f = fixture();
    let absolute = f.root.join("pets").display().to_string();
    for path in ["pets", "./pets/../pets", absolute.as_str()] {
        let splits = load_data(&folder_spec(path), 0, &f.root, &f.roots).unwrap();
        assert_eq!(splits.train.len(), 4, "{path}");
    }
    // Missing inside a root: the reader's own error, naming the path.
    let missing = data_error(&f, "nothing-here");
    assert!(
        missing.reason.contains("nothing-here"),
        "{}",
        missing.reason
    );

    let saved = cnn();
    save_weights(&saved, &f.root.join("w.safetensors")).unwrap();
    // The format is the bytes', not the name's.
    std::fs::copy(f.root.join("w.safetensors"), f.root.join("w.pth")).unwrap();
    for path in ["w.safetensors", "w.pth"] {
        let mut model = cnn();
        let (resolved, report) =
            import_pretrained(&mut model, &pretrained_spec(path), &f.roots).unwrap();
        assert!(resolved.starts_with(f.root.canonicalize().unwrap()));
        assert_eq!(report.loaded, saved.named_variables().len(), "{path}");
    }
    let missing = weights_error(&f, "missing.pth");
    assert!(
        missing.reason.contains("no such file"),
        "{}",
        missing.reason
    );
}

#[test]
fn an_ot_pretrained_file_is_refused() {
    let f = fixture();
    let named: Vec<(String, Tensor)> = cnn().named_variables().into_iter().collect();
    let ot = f.root.join("w.ot");
    Tensor::save_multi(&named, &ot).unwrap();
    let err = weights_error(&f, "w.ot");
    assert!(!err.retryable);
    assert!(err.reason.contains(".ot"), "{}", err.reason);
    assert!(
        err.reason.contains("safetensors") && err.reason.contains(".pth"),
        "{}",
        err.reason
    );
    // Renamed, it is still never handed to libtorch's deserializer: the
    // bytes are a zip, read by camshaft-pth, which refuses what it holds.
    std::fs::copy(&ot, f.root.join("renamed.pth")).unwrap();
    let err = weights_error(&f, "renamed.pth");
    assert!(!err.retryable, "{}", err.reason);
}
