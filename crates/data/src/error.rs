//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while finding, downloading, decoding or generating
/// image data. Messages are lowercase and name the file, record or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed; `what` says which one and on which path.
    #[error("{what}: {source}")]
    Io {
        /// The failed operation and its path, e.g. "cannot read /data/x.png".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Image bytes could not be decoded (corrupt, truncated or an unsupported format).
    #[error("cannot decode image {what}: {reason}")]
    Decode {
        /// The image: a path, a URL or a description such as "request 3 image 1".
        what: String,
        /// Why decoding failed.
        reason: String,
    },

    /// The image header announces more pixels than [`crate::DecodeLimits::max_pixels`].
    #[error(
        "image {what} is {width}x{height} = {pixels} pixels, over the limit of {max_pixels} pixels"
    )]
    ImageTooLarge {
        /// The image.
        what: String,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// `width * height`.
        pixels: u64,
        /// The limit it broke.
        max_pixels: u64,
    },

    /// The encoded file is bigger than [`crate::DecodeLimits::max_bytes`].
    #[error("image {what} is {bytes} bytes, over the limit of {max_bytes} bytes")]
    FileTooLarge {
        /// The image.
        what: String,
        /// Its encoded size.
        bytes: u64,
        /// The limit it broke.
        max_bytes: u64,
    },

    /// The image header announces a zero width or height.
    #[error("image {what} has no pixels ({width}x{height})")]
    EmptyImage {
        /// The image.
        what: String,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },

    /// An image could not be encoded or written.
    #[error("cannot write image {path}: {reason}")]
    Encode {
        /// The destination file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },

    /// A data set is not where it was expected.
    #[error("{what} not found: expected {expected}{hint}")]
    MissingData {
        /// The data set, e.g. "cifar-10 binary batches".
        what: String,
        /// The path that was looked for.
        expected: PathBuf,
        /// Extra advice, starting with "; " when not empty.
        hint: String,
    },

    /// A data file exists but its content is not what the format requires.
    #[error("invalid data in {what}: {reason}")]
    InvalidData {
        /// The file (and record) at fault.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A sample index past the end of a data set.
    #[error("sample index {index} is out of range for {dataset} with {len} samples")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of samples.
        len: usize,
        /// The data set, e.g. "image folder /data/pets/train".
        dataset: String,
    },

    /// A path named by a request lies outside every data root (see
    /// [`crate::DataRoots`]). The text is the same whether or not the path
    /// exists and does not repeat it.
    #[error("{what} must name a path under the worker's data_roots ({roots})")]
    OutsideDataRoots {
        /// The request field that named the path, e.g. "pretrained_path".
        what: String,
        /// The configured roots.
        roots: String,
    },

    /// A configuration value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A download failed (network, HTTP status, or a short body).
    #[error(
        "cannot download {url}: {reason}; to install it by hand, download it and place it at {path}"
    )]
    Download {
        /// The URL that was fetched.
        url: String,
        /// Where the downloaded file belongs.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A downloaded file does not have the expected checksum; it has been deleted.
    #[error(
        "{path} downloaded from {url} has {algorithm} {actual}, expected {expected}; the file was deleted"
    )]
    Checksum {
        /// The URL it came from.
        url: String,
        /// Where it was written (and deleted from).
        path: PathBuf,
        /// "md5" or "sha256".
        algorithm: &'static str,
        /// The checksum that was expected.
        expected: String,
        /// The checksum the bytes have.
        actual: String,
    },

    /// An archive could not be extracted.
    #[error("cannot extract {archive}: {reason}")]
    Extract {
        /// The archive file.
        archive: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `action` ("read", "create", ...) on `path`.
    pub(crate) fn io(action: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            what: format!("cannot {action} {}", path.display()),
            source,
        }
    }
}
