//! Reads checkpoints that real `torch.save` writes, checking every tensor
//! byte for byte against what PyTorch itself says it holds.
//!
//! The fixtures are made at test time by the repo's Python (torch and
//! torchvision, from `scripts/setup`'s `.venv`, or `CAMSHAFT_PYTHON`); when
//! there is none the tests print why and pass without checking anything.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use camshaft_pth::{Error, RawTensor, read_state_dict, read_state_dict_bytes};

/// Writes `<name>.pth` and `<name>.expect/` (a `manifest.txt` of
/// `key<TAB>dtype<TAB>shape<TAB>file` lines in file order, and each tensor's
/// contiguous bytes) for every fixture into `sys.argv[1]`.
const MAKE_FIXTURES: &str = r#"
import collections, os, sys
import torch, torchvision

out = sys.argv[1]

def save(name, obj, **kwargs):
    torch.save(obj, os.path.join(out, name + '.pth'), **kwargs)

def expect(name, tensors):
    folder = os.path.join(out, name + '.expect')
    os.makedirs(folder)
    with open(os.path.join(folder, 'manifest.txt'), 'w') as manifest:
        for i, (key, t) in enumerate(tensors):
            u = t.detach().contiguous()
            if u.dtype == torch.bfloat16:
                u = u.view(torch.int16)
            with open(os.path.join(folder, f'{i}.bin'), 'wb') as f:
                f.write(u.numpy().tobytes())
            dtype = str(t.dtype).removeprefix('torch.')
            shape = ','.join(map(str, t.shape))
            manifest.write(f'{key}\t{dtype}\t{shape}\t{i}.bin\n')

torch.manual_seed(0)

resnet = torchvision.models.resnet18().state_dict()
assert type(resnet) is collections.OrderedDict and hasattr(resnet, '_metadata')
save('resnet18', resnet)
expect('resnet18', resnet.items())

x = torch.arange(12.).reshape(3, 4)
shared = torch.arange(10, dtype=torch.float64)
mixed = {
    'f16': torch.randn(2, 3).half(),
    'bf16': torch.randn(5).bfloat16(),
    'i64': torch.tensor([-1, 2**40, 3]),
    'i32': torch.tensor([[-7, 8]], dtype=torch.int32),
    'i16': torch.tensor([-300, 300], dtype=torch.int16),
    'i8': torch.tensor([-128, 127], dtype=torch.int8),
    'u8': torch.tensor([0, 255], dtype=torch.uint8),
    'bool': torch.tensor([True, False, True]),
    'shared': shared,
    'shared_view': shared[2:9:3],
    'transposed': x.t(),
    'sliced': x[1:],
    'transposed_sliced': x.t()[1:],
    'columns': x[:, 1:3],
    'expanded': torch.tensor([1., 2., 3.]).expand(4, 3),
    'scalar': torch.tensor(7),
    'empty': torch.zeros(0, 3),
    'parameter': torch.nn.Parameter(torch.randn(2, 2)),
}
assert mixed['shared_view'].storage_offset() == 2 and mixed['expanded'].stride() == (0, 1)
save('mixed', mixed)
expect('mixed', mixed.items())

w, b, e, m = torch.randn(3, 2), torch.randn(3), torch.randn(2), torch.randn(4)
nested = {
    'epoch': 3, 'arch': 'resnet18', 'best': None, 'lr': 0.1, 'milestones': [30, 60],
    'model': collections.OrderedDict([('fc.weight', w), ('fc.bias', b)]),
    'ema': {'inner': {'w': e}},
    'optimizer': {'state': {0: {'momentum_buffer': m}}, 'param_groups': [{'lr': 0.1}]},
}
save('nested', nested)
expect('nested', [('model.fc.weight', w), ('model.fc.bias', b), ('ema.inner.w', e),
                  ('optimizer.state.0.momentum_buffer', m)])

class RunsAShellCommand:
    def __reduce__(self):
        return (os.system, ('echo this must never run',))

save('evil', {'w': torch.ones(2), 'payload': RunsAShellCommand()})
save('legacy', {'w': torch.ones(2)}, _use_new_zipfile_serialization=False)
save('list', [torch.ones(2)])
"#;

/// The fixture folder, made once per test run; `None` (after printing why)
/// when there is no Python with torch.
fn fixtures() -> Option<&'static Path> {
    static FIXTURES: OnceLock<Option<PathBuf>> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            let python = std::env::var_os("CAMSHAFT_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
                });
            if !python.exists() {
                eprintln!(
                    "skipping: no Python at {} (run scripts/setup or set CAMSHAFT_PYTHON)",
                    python.display()
                );
                return None;
            }
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pth-fixtures");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let status = Command::new(&python)
                .arg("-c")
                .arg(MAKE_FIXTURES)
                .arg(&dir)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "making fixtures with {} failed",
                python.display()
            );
            Some(dir)
        })
        .as_deref()
}

/// Skips the test (returning early) when there are no fixtures.
macro_rules! fixtures_or_skip {
    () => {
        match fixtures() {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// Reads `<name>.pth` and checks it against `<name>.expect/`: same keys in
/// the same order, same dtypes, shapes and bytes.
fn check_against_torch(dir: &Path, name: &str) -> Vec<(String, RawTensor)> {
    let tensors = read_state_dict(&dir.join(format!("{name}.pth"))).unwrap();
    let expect = dir.join(format!("{name}.expect"));
    let manifest = std::fs::read_to_string(expect.join("manifest.txt")).unwrap();
    let expected: Vec<_> = manifest.lines().collect();
    assert_eq!(tensors.len(), expected.len(), "{name}: tensor count");
    for ((key, tensor), line) in tensors.iter().zip(expected) {
        let fields: Vec<_> = line.split('\t').collect();
        let [want_key, dtype, shape, file] = fields[..] else {
            panic!("bad manifest line {line:?}")
        };
        assert_eq!(key, want_key, "{name}: key order");
        assert_eq!(tensor.dtype.name(), dtype, "{name}: dtype of {key}");
        let want_shape: Vec<usize> = shape
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(tensor.shape, want_shape, "{name}: shape of {key}");
        assert_eq!(tensor.data.len(), tensor.numel() * tensor.dtype.size());
        let want = std::fs::read(expect.join(file)).unwrap();
        assert!(tensor.data == want, "{name}: bytes of {key} differ");
    }
    tensors
}

#[test]
fn torchvision_resnet18_ordered_dict() {
    let dir = fixtures_or_skip!();
    let tensors = check_against_torch(dir, "resnet18");
    assert_eq!(tensors.len(), 122);
    assert_eq!(tensors[0].0, "conv1.weight");
    assert_eq!(tensors[0].1.shape, [64, 3, 7, 7]);
}

#[test]
fn dtypes_views_and_shared_storage() {
    let dir = fixtures_or_skip!();
    let tensors = check_against_torch(dir, "mixed");
    let get = |key: &str| &tensors.iter().find(|(k, _)| k == key).unwrap().1;
    // A spot check independent of the manifest: x.t() of arange(12).reshape(3, 4).
    let transposed: Vec<f32> = get("transposed")
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        transposed,
        [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
    assert_eq!(get("bool").data, [1, 0, 1]);
    assert!(get("scalar").shape.is_empty());
    assert!(get("empty").data.is_empty());
}

#[test]
fn nested_checkpoints_flatten_to_dotted_keys() {
    let dir = fixtures_or_skip!();
    check_against_torch(dir, "nested");
}

#[test]
fn a_forbidden_global_is_refused_and_named() {
    let dir = fixtures_or_skip!();
    let path = dir.join("evil.pth");
    let err = read_state_dict(&path).unwrap_err();
    assert!(
        matches!(&err, Error::ForbiddenGlobal { global, .. } if global == "posix.system"),
        "{err}"
    );
    assert!(err.to_string().contains("evil.pth"), "{err}");
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let dir = fixtures_or_skip!();
    let bytes = std::fs::read(dir.join("mixed.pth")).unwrap();
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        let err = read_state_dict_bytes(&bytes[..cut], "cut.pth").unwrap_err();
        assert!(err.to_string().contains("cut.pth"), "{err}");
    }
    // Damage every byte of the archive in turn: never a panic, and each
    // result is either an error or (where the byte did not matter, such as
    // a zip comment or padding) the right tensors.
    let good = read_state_dict_bytes(&bytes, "mixed.pth").unwrap();
    let mut damaged = bytes.clone();
    for at in 0..bytes.len() {
        damaged[at] ^= 0x5a;
        if let Ok(tensors) = read_state_dict_bytes(&damaged, "damaged.pth") {
            assert_eq!(
                tensors, good,
                "flipping byte {at} changed the tensors silently"
            );
        }
        damaged[at] = bytes[at];
    }
}

#[test]
fn legacy_files_and_non_dicts_are_explained() {
    let dir = fixtures_or_skip!();
    let err = read_state_dict(&dir.join("legacy.pth")).unwrap_err();
    assert!(matches!(err, Error::LegacyFormat { .. }), "{err}");
    let err = read_state_dict(&dir.join("list.pth")).unwrap_err();
    assert!(
        matches!(err, Error::NotADict { found: "list", .. }),
        "{err}"
    );
    let err = read_state_dict(&dir.join("missing.pth")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}
