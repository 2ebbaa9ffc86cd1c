//! Reading PyTorch checkpoints written by `torch.save(state_dict, path)`
//! without Python or libtorch.
//!
//! libtorch's own loader rejects the `collections.OrderedDict` that every
//! `nn.Module.state_dict()` is (torchvision's published `.pth` weights among
//! them), so Camshaft reads these files itself. A checkpoint in the zip
//! format (the default since PyTorch 1.6) is a zip archive holding
//! `<folder>/data.pkl`, a pickle of the saved object in which every tensor
//! storage is a *persistent id* naming the entry `<folder>/data/<key>` that
//! holds its raw little-endian bytes.
//!
//! [`read_state_dict`] runs that pickle on a restricted machine that knows
//! only the handful of globals a state dict uses (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the
//! `torch.*Storage` classes and `torch.float32`-style dtypes) and never calls
//! anything: any other global is an [`Error::ForbiddenGlobal`]. Each tensor
//! comes back as a [`RawTensor`]: a [`DType`], a shape, and its elements as
//! contiguous row-major bytes, with storage offsets and strides (transposes,
//! slices, expanded views, storage shared between tensors) already applied.
//!
//! Invariants:
//! - the result lists tensors in the order the file stores them; a nested
//!   dict (a checkpoint such as `{"epoch": 3, "model": state_dict}`) is
//!   flattened with dotted keys (`model.fc.weight`), and values that are not
//!   tensors or dicts are skipped;
//! - `data.len() == numel * dtype.size()` for every tensor;
//! - bad or truncated input is an [`Error`] naming the file, never a panic,
//!   and no buffer is sized from a number in the file before it has been
//!   checked against the bytes actually there;
//! - what a read materialises is bounded by the file's size (see below).
//!
//! # Bounds on hostile files
//!
//! A pickle can refer to one object from many places, and a tensor can
//! view its storage with stride 0, so a file of a kilobyte can describe
//! gigabytes. The reader keeps what it builds proportional to the file,
//! within a [`ReadLimits`] (the plain functions use its defaults;
//! [`read_state_dict_with`] and [`read_state_dict_bytes_with`] take one):
//! - **shared objects stay shared**: the pickle's memo hands out the one
//!   object it holds, never a copy, and strings are interned, so a dict
//!   stored once costs once however often it is referred to;
//! - **flattening is counted before it is built**: a dict referred to from
//!   N places does name its tensors N times (`a.w`, `b.w`), so the number
//!   of tensors and the bytes of their names are worked out first, visiting
//!   each dict once, and checked against [`ReadLimits::max_tensors`]
//!   (default 1,048,576) and [`ReadLimits::max_key_bytes`] (default
//!   64 MiB): 22 levels of dicts each holding the level below twice is
//!   refused as [`Error::TooManyTensors`] at once;
//! - **an expanded tensor is capped**: one with more elements than the
//!   storage it spans (stride 0 from `expand`, or overlapping strides) may
//!   take at most [`ReadLimits::max_expanded_tensor_bytes`] (default
//!   256 MiB), else [`Error::ExpandedTooLarge`];
//! - **the total is bounded by the file**: every archive entry read
//!   (decompressed), the objects the pickle builds, the tensor names, and
//!   every tensor copied out of a storage (many views of one storage each
//!   count) are charged before they are allocated, and together may not pass
//!   `max(file size * bytes_per_file_byte, min_total_bytes)` (defaults 8
//!   and 64 MiB), else [`Error::TooMuchData`];
//! - **work is linear**: each opcode, entry and tensor costs time in
//!   proportion to the bytes it is charged for, so a refused file is refused
//!   quickly, and a dict nests at most [`MAX_NESTING`] levels.
//!
//! # Example
//!
//! ```no_run
//! use camshaft_pth::{DType, read_state_dict};
//!
//! # fn main() -> camshaft_pth::Result<()> {
//! let tensors = read_state_dict("resnet18-f37072fd.pth".as_ref())?;
//! for (name, tensor) in &tensors {
//!     println!("{name}: {} {:?}", tensor.dtype, tensor.shape);
//! }
//! let (_, conv1) = tensors.iter().find(|(name, _)| name == "conv1.weight").expect("a resnet");
//! assert_eq!(conv1.dtype, DType::F32);
//! let weights: Vec<f32> = conv1
//!     .data
//!     .chunks_exact(4)
//!     .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
//!     .collect();
//! assert_eq!(weights.len(), 64 * 3 * 7 * 7);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

mod checkpoint;
mod flatten;
mod limits;
mod pickle;
mod strided;

pub use limits::ReadLimits;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// `torch.float32` (`FloatStorage`).
    F32,
    /// `torch.float64` (`DoubleStorage`).
    F64,
    /// `torch.float16` (`HalfStorage`).
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`).
    BF16,
    /// `torch.int64` (`LongStorage`).
    I64,
    /// `torch.int32` (`IntStorage`).
    I32,
    /// `torch.int16` (`ShortStorage`).
    I16,
    /// `torch.int8` (`CharStorage`).
    I8,
    /// `torch.uint8` (`ByteStorage`).
    U8,
    /// `torch.bool` (`BoolStorage`), one byte per element, 0 or 1.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The torch name without the `torch.` prefix, e.g. `"float32"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    /// From a storage class name without its `Storage` suffix (`"Float"`
    /// for `torch.FloatStorage`).
    fn from_storage_class(class: &str) -> Option<DType> {
        Some(match class {
            "Float" => DType::F32,
            "Double" => DType::F64,
            "Half" => DType::F16,
            "BFloat16" => DType::BF16,
            "Long" => DType::I64,
            "Int" => DType::I32,
            "Short" => DType::I16,
            "Char" => DType::I8,
            "Byte" => DType::U8,
            "Bool" => DType::Bool,
            _ => return None,
        })
    }

    /// From a `torch.<name>` dtype attribute, aliases included.
    fn from_torch_name(name: &str) -> Option<DType> {
        Some(match name {
            "float32" | "float" => DType::F32,
            "float64" | "double" => DType::F64,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a checkpoint, with its elements copied out of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: DType,
    /// Size of each dimension; empty for a 0-dim (scalar) tensor.
    pub shape: Vec<usize>,
    /// The elements, contiguous, row-major and little-endian: exactly
    /// `numel() * dtype.size()` bytes.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// Number of elements: the product of `shape` (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Why a checkpoint could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("could not read checkpoint {path}: {source}")]
    Io {
        /// The checkpoint.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is a pickle from `torch.save` before PyTorch 1.6.
    #[error(
        "{what} is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; \
         re-save it with torch.save in a current PyTorch"
    )]
    LegacyFormat {
        /// The checkpoint.
        what: String,
    },
    /// The file is not a readable zip archive, or an entry could not be read.
    #[error("{what} is not a readable torch.save zip archive: {source}")]
    Zip {
        /// The checkpoint.
        what: String,
        /// What the zip reader said.
        source: zip::result::ZipError,
    },
    /// The archive has no `<folder>/data.pkl`, or more than one.
    #[error("{what} has {found} `<folder>/data.pkl` entries, expected exactly one")]
    DataPkl {
        /// The checkpoint.
        what: String,
        /// How many there are.
        found: usize,
    },
    /// An entry the pickle refers to is missing.
    #[error("{what} has no entry {entry}")]
    MissingEntry {
        /// The checkpoint.
        what: String,
        /// The archive path that is missing.
        entry: String,
    },
    /// An entry's bytes could not be read in full (truncated, bad checksum).
    #[error("could not read entry {entry} of {what}: {source}")]
    ReadEntry {
        /// The checkpoint.
        what: String,
        /// The archive path.
        entry: String,
        /// What the reader said.
        source: std::io::Error,
    },
    /// The checkpoint was written on a big-endian machine.
    #[error("{what} was saved with {byteorder:?} byte order; only little-endian is supported")]
    ByteOrder {
        /// The checkpoint.
        what: String,
        /// The contents of its `byteorder` entry.
        byteorder: String,
    },
    /// `data.pkl` is not a well-formed pickle of a state dict.
    #[error("{what}: data.pkl is malformed at byte {offset}: {message}")]
    Pickle {
        /// The checkpoint.
        what: String,
        /// Byte offset of the opcode in `data.pkl`.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// `data.pkl` uses a pickle opcode this reader does not implement.
    #[error(
        "{what}: data.pkl uses pickle opcode 0x{opcode:02x} at byte {offset}, which is not supported"
    )]
    UnsupportedOpcode {
        /// The checkpoint.
        what: String,
        /// The opcode byte.
        opcode: u8,
        /// Its byte offset in `data.pkl`.
        offset: usize,
    },
    /// `data.pkl` names a global outside the allowlist; nothing was run.
    #[error(
        "{what}: data.pkl refers to `{global}`, which a state dict never needs; refusing to load it"
    )]
    ForbiddenGlobal {
        /// The checkpoint.
        what: String,
        /// `module.name` of the global.
        global: String,
    },
    /// The saved object is not a dict.
    #[error("{what}: the saved object is a {found}, not a dict of tensors")]
    NotADict {
        /// The checkpoint.
        what: String,
        /// What it is instead.
        found: &'static str,
    },
    /// Dicts nest deeper than [`MAX_NESTING`] (or contain themselves).
    #[error("{what}: dicts nest more than {MAX_NESTING} levels deep at {key}")]
    TooDeep {
        /// The checkpoint.
        what: String,
        /// The dotted key where the limit was hit.
        key: String,
    },
    /// Two tensors flatten to the same dotted key.
    #[error("{what}: more than one tensor is named {key}")]
    DuplicateKey {
        /// The checkpoint.
        what: String,
        /// The key.
        key: String,
    },
    /// A storage entry's size disagrees with the size the pickle declares.
    #[error("{what}: storage {entry} holds {actual} bytes but data.pkl declares {expected}")]
    StorageSize {
        /// The checkpoint.
        what: String,
        /// The archive path of the storage.
        entry: String,
        /// Bytes declared (elements times element size).
        expected: u64,
        /// Bytes in the entry.
        actual: u64,
    },
    /// A tensor's offset, shape and strides do not fit its storage.
    #[error("{what}: tensor {key}: {message}")]
    BadTensor {
        /// The checkpoint.
        what: String,
        /// The tensor's dotted key.
        key: String,
        /// What does not fit.
        message: String,
    },
    /// Reading the file would materialise more bytes in all than
    /// [`ReadLimits::total_bytes`] allows for a file of its size.
    #[error(
        "{what}: {item} would bring the bytes materialised to {asked}, over the limit of \
         {allowed} for this file (ReadLimits::bytes_per_file_byte times the file size, at least \
         ReadLimits::min_total_bytes)"
    )]
    TooMuchData {
        /// The checkpoint.
        what: String,
        /// What was being read or built: `tensor fc.weight`,
        /// `entry archive/data/0`, `unpickling data.pkl (at byte 812)`.
        item: String,
        /// The total bytes with it.
        asked: u64,
        /// The most the file may materialise.
        allowed: u64,
    },
    /// An expanded tensor (stride 0, or other repeating strides) is larger
    /// than [`ReadLimits::max_expanded_tensor_bytes`].
    #[error(
        "{what}: tensor {key} expands {span} bytes of storage to {asked} bytes, over the limit \
         of {allowed} for an expanded tensor (ReadLimits::max_expanded_tensor_bytes)"
    )]
    ExpandedTooLarge {
        /// The checkpoint.
        what: String,
        /// The tensor's dotted key.
        key: String,
        /// Bytes of storage the view spans.
        span: u64,
        /// Bytes its contiguous copy would take.
        asked: u64,
        /// The most an expanded tensor may take.
        allowed: u64,
    },
    /// The saved dicts flatten to more tensors than
    /// [`ReadLimits::max_tensors`].
    #[error(
        "{what}: its dicts flatten to {asked} tensors, over the limit of {allowed} \
         (ReadLimits::max_tensors); a dict referred to from several places counts once per place"
    )]
    TooManyTensors {
        /// The checkpoint.
        what: String,
        /// Tensors the flattening would give (saturating at `u64::MAX`).
        asked: u64,
        /// The most allowed.
        allowed: u64,
    },
    /// The flattened tensor names take more bytes together than
    /// [`ReadLimits::max_key_bytes`].
    #[error(
        "{what}: its flattened tensor names take {asked} bytes, over the limit of {allowed} \
         (ReadLimits::max_key_bytes)"
    )]
    KeysTooLong {
        /// The checkpoint.
        what: String,
        /// Bytes the names would take (saturating at `u64::MAX`).
        asked: u64,
        /// The most allowed.
        allowed: u64,
    },
}

/// Result of reading a checkpoint.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Deepest dict nesting [`read_state_dict`] flattens.
pub const MAX_NESTING: usize = 32;

/// Reads every tensor of the `torch.save` checkpoint at `path`, in file
/// order, nested dicts flattened to dotted keys, within the default
/// [`ReadLimits`].
///
/// # Errors
///
/// When the file cannot be read, is not a zip-format `torch.save` file, its
/// pickle names anything but the allowlisted globals, a tensor does not
/// fit its storage, or reading it would pass a [`ReadLimits`] bound; see
/// [`Error`].
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, RawTensor)>> {
    read_state_dict_with(path, &ReadLimits::default())
}

/// Like [`read_state_dict`], within `limits`.
///
/// # Errors
///
/// As [`read_state_dict`].
pub fn read_state_dict_with(path: &Path, limits: &ReadLimits) -> Result<Vec<(String, RawTensor)>> {
    let io_error = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let what = path.display().to_string();
    checkpoint::read(std::io::BufReader::new(file), len, &what, limits)
}

/// Like [`read_state_dict`], from the bytes of a checkpoint; `what` names it
/// in errors (a file name or URL).
///
/// # Errors
///
/// As [`read_state_dict`], less the I/O errors.
pub fn read_state_dict_bytes(bytes: &[u8], what: &str) -> Result<Vec<(String, RawTensor)>> {
    read_state_dict_bytes_with(bytes, what, &ReadLimits::default())
}

/// Like [`read_state_dict_bytes`], within `limits`.
///
/// # Errors
///
/// As [`read_state_dict_bytes`].
pub fn read_state_dict_bytes_with(
    bytes: &[u8],
    what: &str,
    limits: &ReadLimits,
) -> Result<Vec<(String, RawTensor)>> {
    checkpoint::read(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        what,
        limits,
    )
}
