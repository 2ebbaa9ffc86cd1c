//! Hostile checkpoints, built byte by byte: a few hundred bytes of pickle
//! that describe billions of tensors or bytes must be refused at once with
//! the error naming the limit, and legitimate sharing must still read.
#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Write};

use camshaft_pth::{
    DType, Error, RawTensor, ReadLimits, read_state_dict_bytes, read_state_dict_bytes_with,
};
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// A protocol-2 pickle written opcode by opcode.
struct PickleWriter(Vec<u8>);

impl PickleWriter {
    /// Memo slot of `torch._utils._rebuild_tensor_v2`.
    const REBUILD: u32 = 0;
    /// Memo slot of the float storage `'0'`.
    const STORAGE: u32 = 1;
    /// First memo slot free for the test.
    const FREE: u32 = 2;

    /// Starts a pickle whose memo holds the tensor constructor and one
    /// float storage `'0'` of `numel` elements.
    fn new(numel: u32) -> Self {
        let mut p = Self(vec![0x80, 2]);
        p.global("torch._utils", "_rebuild_tensor_v2")
            .put(Self::REBUILD)
            .op(b"(")
            .str("storage")
            .global("torch", "FloatStorage")
            .str("0")
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .put(Self::STORAGE)
            .op(b"0");
        p
    }

    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn str(&mut self, text: &str) -> &mut Self {
        self.0.push(b'X');
        self.0
            .extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
        self.op(text.as_bytes())
    }

    fn int(&mut self, value: u32) -> &mut Self {
        self.0.push(b'J');
        self.op(&i32::try_from(value).unwrap().to_le_bytes())
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }

    fn ints(&mut self, values: &[u32]) -> &mut Self {
        self.op(b"(");
        for &v in values {
            self.int(v);
        }
        self.op(b"t")
    }

    /// `LONG_BINPUT`: memoizes the top of the stack.
    fn put(&mut self, slot: u32) -> &mut Self {
        self.0.push(b'r');
        self.op(&slot.to_le_bytes())
    }

    /// `LONG_BINGET`: pushes the memoized object itself.
    fn get(&mut self, slot: u32) -> &mut Self {
        self.0.push(b'j');
        self.op(&slot.to_le_bytes())
    }

    /// Pushes a view of storage `'0'`.
    fn tensor(&mut self, offset: u32, shape: &[u32], stride: &[u32]) -> &mut Self {
        self.get(Self::REBUILD)
            .op(b"(")
            .get(Self::STORAGE)
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(b"\x89N")
            .op(b"tR")
    }

    fn finish(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

/// A `torch.save` zip archive of `pickle` and storage `'0'`.
fn checkpoint(pickle: &[u8], storage: &[u8], compression: CompressionMethod) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(compression);
    for (name, bytes) in [
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
        ("archive/data/0", storage),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn stored(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    checkpoint(pickle, storage, CompressionMethod::Stored)
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `levels` dicts, each holding the one below twice (under `a` and `b`,
/// or the given names), over a bottom dict `{'w': leaf}`: 2^levels paths
/// to the leaf, in a pickle linear in `levels`.
fn doubling_dicts(levels: u32, names: [&str; 2], leaf: impl Fn(&mut PickleWriter)) -> Vec<u8> {
    let mut p = PickleWriter::new(1);
    let slot = |level| PickleWriter::FREE + level;
    p.op(b"}").str("w");
    leaf(&mut p);
    p.op(b"s").put(slot(0));
    for level in 1..=levels {
        p.op(b"}(")
            .str(names[0])
            .get(slot(level - 1))
            .str(names[1])
            .get(slot(level - 1))
            .op(b"u")
            .put(slot(level));
    }
    p.finish()
}

#[test]
fn shared_dicts_doubling_22_levels_deep_are_refused_at_once() {
    let pickle = doubling_dicts(22, ["a", "b"], |p| {
        p.tensor(0, &[1], &[1]);
    });
    let file = stored(&pickle, &floats(&[1.0]));
    assert!(
        file.len() < 1200,
        "the hostile file is {} bytes",
        file.len()
    );

    let err = read_state_dict_bytes(&file, "shared.pth").unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyTensors {
                asked: 4_194_304,
                allowed: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("shared.pth"), "{message}");
    assert!(message.contains("4194304 tensors"), "{message}");
    assert!(message.contains("ReadLimits::max_tensors"), "{message}");

    // Without the count limit, the names alone are over the byte budget,
    // which is charged before they are built.
    let limits = ReadLimits {
        max_tensors: u64::MAX,
        max_key_bytes: u64::MAX,
        ..ReadLimits::default()
    };
    let err = read_state_dict_bytes_with(&file, "shared.pth", &limits).unwrap_err();
    assert!(
        matches!(&err, Error::TooMuchData { item, allowed, .. }
            if item == "the names of its 4194304 tensors" && *allowed == 64 << 20),
        "{err}"
    );
}

#[test]
fn shared_dicts_without_tensors_cost_nothing_to_walk() {
    // 2^31 paths, each ending at an int: nothing to return, and counting
    // visits each dict once.
    let pickle = doubling_dicts(30, ["a", "b"], |p| {
        p.int(7);
    });
    let tensors = read_state_dict_bytes(&stored(&pickle, &floats(&[1.0])), "ints.pth").unwrap();
    assert!(tensors.is_empty());
}

#[test]
fn long_shared_names_are_refused_by_their_total() {
    // 2^16 tensors, within max_tensors, each named by 16 segments of 100
    // bytes: about 100 MiB of names from two strings stored once.
    let (a, b) = ("a".repeat(100), "b".repeat(100));
    let pickle = doubling_dicts(16, [&a, &b], |p| {
        p.tensor(0, &[1], &[1]);
    });
    let err = read_state_dict_bytes(&stored(&pickle, &floats(&[1.0])), "names.pth").unwrap_err();
    let want = (1u64 << 16) * (16 * 101 + 1);
    assert!(
        matches!(err, Error::KeysTooLong { asked, allowed, .. }
            if asked == want && allowed == 64 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("ReadLimits::max_key_bytes"),
        "{err}"
    );
}

#[test]
fn a_dict_holding_itself_is_too_deep() {
    let mut p = PickleWriter::new(1);
    p.op(b"}")
        .put(PickleWriter::FREE)
        .op(b"(")
        .str("w")
        .tensor(0, &[1], &[1])
        .str("self")
        .get(PickleWriter::FREE)
        .op(b"u");
    let err =
        read_state_dict_bytes(&stored(&p.finish(), &floats(&[1.0])), "cycle.pth").unwrap_err();
    assert!(matches!(err, Error::TooDeep { .. }), "{err}");
}

#[test]
fn a_huge_stride_0_expansion_is_refused() {
    let mut p = PickleWriter::new(1);
    p.op(b"}")
        .str("w")
        .tensor(0, &[1 << 20, 1 << 10], &[0, 0])
        .op(b"s");
    let err =
        read_state_dict_bytes(&stored(&p.finish(), &floats(&[1.0])), "expand.pth").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::ExpandedTooLarge { key, span: 4, asked, allowed, .. }
                if key == "w" && *asked == 4 << 30 && *allowed == 256 << 20
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("ReadLimits::max_expanded_tensor_bytes"),
        "{message}"
    );
    assert!(message.contains("4294967296 bytes"), "{message}");
}

#[test]
fn many_moderate_expansions_are_refused_by_their_total() {
    // 100 tensors, each 1 MiB expanded from one float: each is under the
    // per-tensor cap, together they pass the 64 MiB floor.
    let mut p = PickleWriter::new(1);
    p.op(b"}(");
    for i in 0..100 {
        p.str(&format!("t{i}")).tensor(0, &[1 << 18], &[0]);
    }
    p.op(b"u");
    let file = stored(&p.finish(), &floats(&[1.0]));
    let err = read_state_dict_bytes(&file, "many.pth").unwrap_err();
    assert!(
        matches!(&err, Error::TooMuchData { item, asked, allowed, .. }
            if item.starts_with("tensor t") && *asked > *allowed && *allowed == 64 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("ReadLimits::bytes_per_file_byte"),
        "{err}"
    );
}

#[test]
fn many_views_of_one_storage_are_refused_by_their_total() {
    // 1100 views of the whole of one 64 KiB storage: 70 MB of copies from
    // a file of about 80 KB.
    let numel = 1 << 14;
    let mut p = PickleWriter::new(numel);
    p.op(b"}(");
    for i in 0..1100 {
        p.str(&format!("v{i}")).tensor(0, &[numel], &[1]);
    }
    p.op(b"u");
    let file = stored(&p.finish(), &vec![0; 4 << 14]);
    let err = read_state_dict_bytes(&file, "views.pth").unwrap_err();
    assert!(
        matches!(&err, Error::TooMuchData { item, asked, allowed, .. }
            if item.starts_with("tensor v") && *asked > *allowed),
        "{err}"
    );
}

#[test]
fn a_compressed_storage_is_charged_before_it_is_inflated() {
    let mut p = PickleWriter::new(1 << 20);
    p.op(b"}").str("w").tensor(0, &[1], &[1]).op(b"s");
    let file = checkpoint(&p.finish(), &vec![0; 4 << 20], CompressionMethod::Deflated);
    assert!(file.len() < 64 << 10, "{}", file.len());
    let limits = ReadLimits {
        min_total_bytes: 1 << 20,
        ..ReadLimits::default()
    };
    let err = read_state_dict_bytes_with(&file, "bomb.pth", &limits).unwrap_err();
    assert!(
        matches!(&err, Error::TooMuchData { item, asked, .. }
            if item == "entry archive/data/0" && *asked > 4 << 20),
        "{err}"
    );
}

#[test]
fn a_memoized_list_feeding_many_ordered_dicts_is_charged_per_copy() {
    // OrderedDict(pairs) with one list of 1000 pairs, called 10,000 times
    // for 10 bytes each: ten million dict entries.
    let mut p = PickleWriter::new(1);
    let (pairs, ordered_dict) = (PickleWriter::FREE, PickleWriter::FREE + 1);
    p.op(b"(");
    for i in 0..1000 {
        p.int(i).op(b"N\x86");
    }
    p.op(b"l").put(pairs).op(b"0");
    p.global("collections", "OrderedDict")
        .put(ordered_dict)
        .op(b"0");
    for _ in 0..10_000 {
        p.get(ordered_dict).get(pairs).op(b"\x85R0");
    }
    p.op(b"}");
    let file = stored(&p.finish(), &floats(&[1.0]));
    let err = read_state_dict_bytes(&file, "dicts.pth").unwrap_err();
    assert!(
        matches!(&err, Error::TooMuchData { item, .. } if item.starts_with("unpickling data.pkl")),
        "{err}"
    );
}

#[test]
fn legitimate_sharing_and_expansion_still_read() {
    // {'x': {'w': t, 'e': t expanded}, 'y': <the same dict>, 'z': t[1:]}
    let mut p = PickleWriter::new(3);
    p.op(b"}(")
        .str("x")
        .op(b"}(")
        .str("w")
        .tensor(0, &[3], &[1])
        .str("e")
        .tensor(0, &[2, 3], &[0, 1])
        .op(b"u")
        .put(PickleWriter::FREE)
        .str("y")
        .get(PickleWriter::FREE)
        .str("z")
        .tensor(1, &[2], &[1])
        .op(b"u");
    let file = stored(&p.finish(), &floats(&[1.0, 2.0, 3.0]));
    let tensors = read_state_dict_bytes(&file, "fine.pth").unwrap();
    let tensor = |shape: &[usize], values: &[f32]| RawTensor {
        dtype: DType::F32,
        shape: shape.to_vec(),
        data: floats(values),
    };
    let w = tensor(&[3], &[1.0, 2.0, 3.0]);
    let e = tensor(&[2, 3], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    assert_eq!(
        tensors,
        [
            ("x.w".to_owned(), w.clone()),
            ("x.e".to_owned(), e.clone()),
            ("y.w".to_owned(), w),
            ("y.e".to_owned(), e),
            ("z".to_owned(), tensor(&[2], &[2.0, 3.0])),
        ]
    );

    // The same file under limits just big enough, and just too small, for
    // its one expanded tensor.
    let limits = |max_expanded_tensor_bytes| ReadLimits {
        max_expanded_tensor_bytes,
        ..ReadLimits::default()
    };
    assert!(read_state_dict_bytes_with(&file, "fine.pth", &limits(24)).is_ok());
    let err = read_state_dict_bytes_with(&file, "fine.pth", &limits(23)).unwrap_err();
    assert!(
        matches!(&err, Error::ExpandedTooLarge { key, span: 12, asked: 24, .. } if key == "x.e"),
        "{err}"
    );
}
