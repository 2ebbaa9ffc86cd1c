//! Verified, resumable downloads of data set archives, and their extraction.
//!
//! The cache directory holds, per archive, the downloaded file (kept, so a
//! deleted extraction can be redone offline), a `<file>.partial` while a download
//! is in progress, and the extracted directory `<cache>/<name>`. Every step that
//! could leave a half-done result works on a temporary name and renames at the
//! end, so an existing final name always means "complete and verified".

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// An expected digest of a downloaded file, as lowercase hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum<'a> {
    /// MD5, the digest most data set pages publish.
    Md5(&'a str),
    /// SHA-256.
    Sha256(&'a str),
    /// The leading hex digits of the SHA-256: torchvision names its weight
    /// files `<arch>-<first 8 digits>.pth` and checks exactly that.
    Sha256Prefix(&'a str),
}

impl Checksum<'_> {
    /// "md5" or "sha256".
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) | Checksum::Sha256Prefix(_) => "sha256",
        }
    }

    /// The expected hex digest.
    pub fn expected(&self) -> &str {
        match self {
            Checksum::Md5(hex) | Checksum::Sha256(hex) | Checksum::Sha256Prefix(hex) => hex,
        }
    }

    /// Whether `actual` (a full hex digest of this algorithm) matches.
    pub fn matches(&self, actual: &str) -> bool {
        let expected = self.expected().to_ascii_lowercase();
        let actual = actual.to_ascii_lowercase();
        match self {
            Checksum::Sha256Prefix(_) => !expected.is_empty() && actual.starts_with(&expected),
            _ => actual == expected,
        }
    }

    /// The hex digest of the file at `path` with this checksum's algorithm.
    pub fn digest_file(&self, path: &Path) -> Result<String> {
        let mut file = File::open(path).map_err(|e| Error::io("read", path, e))?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut md5 = Md5::new();
        let mut sha256 = Sha256::new();
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|e| Error::io("read", path, e))?;
            if n == 0 {
                break;
            }
            match self {
                Checksum::Md5(_) => md5.update(&buffer[..n]),
                Checksum::Sha256(_) | Checksum::Sha256Prefix(_) => sha256.update(&buffer[..n]),
            }
        }
        Ok(match self {
            Checksum::Md5(_) => hex::encode(md5.finalize()),
            Checksum::Sha256(_) | Checksum::Sha256Prefix(_) => hex::encode(sha256.finalize()),
        })
    }
}

/// A data set archive on the web: where it is, how to check it, and what it
/// extracts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteArchive<'a> {
    /// The directory the data lands in: `<cache>/<name>`.
    pub name: &'a str,
    /// The canonical address. The file name is its last path segment.
    pub url: &'a str,
    /// The expected digest; `None` when no published value could be verified
    /// (the download is then accepted unchecked, with a warning).
    pub checksum: Option<Checksum<'a>>,
    /// The expected size in bytes, when known.
    pub size: Option<u64>,
    /// The directory inside the archive that becomes `<cache>/<name>`;
    /// "." when the archive's whole content does.
    pub extracted_dir: &'a str,
}

/// CIFAR-10, binary version, from its authors (162 MiB). Extracts to
/// `cifar-10-batches-bin/` for [`crate::cifar10_binary`].
pub const CIFAR10_BINARY: RemoteArchive<'static> = RemoteArchive {
    name: "cifar-10-batches-bin",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    checksum: Some(Checksum::Md5("c32a1d4ab5d03f1284b67883e8d87530")),
    size: Some(170_052_171),
    extracted_dir: "cifar-10-batches-bin",
};

/// CIFAR-10 as PNG folders (`train/<class>/*.png`, `test/<class>/*.png`), as
/// fastai's `URLs.CIFAR`; read it with [`crate::image_folder`]. Size and MD5 are
/// the values in fastai's `fastai/data/checks.txt` for this URL.
/// (The copy at `s3.amazonaws.com/fast-ai-imageclas/cifar10.tgz` that many
/// tutorials use has no published checksum.)
pub const CIFAR10_PNG: RemoteArchive<'static> = RemoteArchive {
    name: "cifar10",
    url: "https://s3.amazonaws.com/fast-ai-sample/cifar10.tgz",
    checksum: Some(Checksum::Md5("a5f8c31371b63a406b23368042812d3c")),
    size: Some(168_168_549),
    extracted_dir: "cifar10",
};

/// Oxford-IIIT Pets as fastai's `URLs.PETS` (`images/` and `annotations/`);
/// size and MD5 from fastai's `checks.txt`. Read it with [`crate::oxford_pets`].
pub const OXFORD_PETS: RemoteArchive<'static> = RemoteArchive {
    name: "oxford-iiit-pet",
    url: "https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz",
    checksum: Some(Checksum::Md5("e4db5c768afd933bb91f5f594d7417a4")),
    size: Some(811_706_944),
    extracted_dir: "oxford-iiit-pet",
};

/// Oxford-IIIT Pets images only, from the authors' server (the file torchvision's
/// `OxfordIIITPet` downloads; MD5 as torchvision pins it). Extracts to
/// `<cache>/oxford-iiit-pet-images/images/*.jpg`.
pub const OXFORD_PETS_IMAGES: RemoteArchive<'static> = RemoteArchive {
    name: "oxford-iiit-pet-images",
    url: "https://thor.robots.ox.ac.uk/datasets/pets/images.tar.gz",
    checksum: Some(Checksum::Md5("5c4f3ee8e5d25df40f4fd59a7f44e54c")),
    size: None,
    extracted_dir: ".",
};

/// The environment variable naming a mirror that replaces every archive's base
/// URL (`$CAMSHAFT_DATA_MIRROR/<file name>`).
pub const MIRROR_ENV: &str = "CAMSHAFT_DATA_MIRROR";

/// The environment variable naming the cache directory for [`default_cache_dir`].
pub const CACHE_DIR_ENV: &str = "CAMSHAFT_DATA_DIR";

/// `$CAMSHAFT_DATA_DIR`, else `$XDG_CACHE_HOME/camshaft/data`, else
/// `$HOME/.cache/camshaft/data`, else `./camshaft-data`.
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("camshaft").join("data");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("camshaft")
            .join("data");
    }
    PathBuf::from("camshaft-data")
}

impl RemoteArchive<'_> {
    /// The archive's file name: the last path segment of its URL.
    pub fn file_name(&self) -> &str {
        let path = self.url.split(['?', '#']).next().unwrap_or(self.url);
        path.rsplit('/').next().unwrap_or(path)
    }

    /// The URL to fetch: the canonical one, or `<mirror>/<file name>`.
    pub fn url_with_mirror(&self, mirror: Option<&str>) -> String {
        match mirror {
            Some(base) if !base.is_empty() => {
                format!("{}/{}", base.trim_end_matches('/'), self.file_name())
            }
            _ => self.url.to_string(),
        }
    }
}

/// Downloads (if needed), verifies and extracts `archive` under `cache_dir`, and
/// returns `<cache_dir>/<name>`. Uses `$CAMSHAFT_DATA_MIRROR` as the base URL
/// when it is set. See [`fetch_from`].
pub fn fetch(archive: &RemoteArchive<'_>, cache_dir: &Path) -> Result<PathBuf> {
    let mirror = std::env::var(MIRROR_ENV).ok();
    fetch_from(archive, mirror.as_deref(), cache_dir)
}

/// [`fetch`] with an explicit mirror base URL (`None`: the canonical URL).
///
/// - `<cache_dir>/<name>` already there: returned at once, no network.
/// - Otherwise the archive file is obtained with [`download_archive`] and
///   extracted into a temporary directory that is renamed into place.
///
/// When offline, the error names the URL and the path where the archive can be
/// placed by hand; the next call then verifies and extracts it.
pub fn fetch_from(
    archive: &RemoteArchive<'_>,
    mirror: Option<&str>,
    cache_dir: &Path,
) -> Result<PathBuf> {
    let dest = cache_dir.join(archive.name);
    if dest.is_dir() {
        return Ok(dest);
    }
    let file = download_archive(archive, mirror, cache_dir)?;
    extract_archive(&file, archive.extracted_dir, &dest)?;
    Ok(dest)
}

/// How many times one [`download_archive`] call tries, resuming each time.
const ATTEMPTS: u32 = 4;

/// Makes sure `<cache_dir>/<file name>` holds the verified archive and returns
/// its path.
///
/// An existing file is verified and kept (or deleted and downloaded again when it
/// fails). A download goes to `<file>.partial`; an interrupted one is resumed
/// with an HTTP `Range` request (if the server ignores it, the download restarts
/// from zero), up to 4 attempts per call and across calls. Only a file that
/// passes the size and checksum checks is renamed to its final name; one that
/// fails is deleted.
pub fn download_archive(
    archive: &RemoteArchive<'_>,
    mirror: Option<&str>,
    cache_dir: &Path,
) -> Result<PathBuf> {
    let url = archive.url_with_mirror(mirror);
    let final_path = cache_dir.join(archive.file_name());
    if final_path.is_file() {
        match verify(archive, &url, &final_path) {
            Ok(()) => return Ok(final_path),
            Err(e) => tracing::warn!(path = %final_path.display(), error = %e, "downloading again"),
        }
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io("create", cache_dir, e))?;
    let partial = cache_dir.join(format!("{}.partial", archive.file_name()));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build(),
    );
    tracing::info!(url = %url, path = %final_path.display(), "downloading");
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download_once(&agent, &url, &partial, &final_path) {
            Ok(()) => break,
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) if attempt >= ATTEMPTS => return Err(e),
            Err(Attempt::Retry(e)) => {
                tracing::warn!(url = %url, attempt, error = %e, "download interrupted, resuming");
                std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
            }
        }
    }
    verify(archive, &url, &partial)?;
    std::fs::rename(&partial, &final_path)
        .map_err(|e| Error::io(&format!("rename {} to", partial.display()), &final_path, e))?;
    Ok(final_path)
}

enum Attempt {
    /// Worth another try (network trouble); the partial file is kept.
    Retry(Error),
    /// Not worth retrying (an HTTP error status, a local file problem).
    Fatal(Error),
}

fn download_once(
    agent: &ureq::Agent,
    url: &str,
    partial: &Path,
    final_path: &Path,
) -> Result<(), Attempt> {
    let failed = |reason: String| Error::Download {
        url: url.to_string(),
        path: final_path.to_path_buf(),
        reason,
    };
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    // Ranges refer to the bytes on the wire: ask for them uncompressed.
    let mut request = agent.get(url).header("Accept-Encoding", "identity");
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request
        .call()
        .map_err(|e| Attempt::Retry(failed(e.to_string())))?;
    let status = response.status().as_u16();
    let append = match status {
        200 => {
            if have > 0 {
                tracing::info!(
                    url,
                    "server ignored the range request; restarting the download"
                );
            }
            false
        }
        206 => {
            let start = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(content_range_start);
            if start != Some(have) {
                // Not the range we asked for: start over rather than splice.
                let _ = std::fs::remove_file(partial);
                return Err(Attempt::Retry(failed(format!(
                    "server answered a range request for byte {have} with {start:?}"
                ))));
            }
            true
        }
        // The partial file already has every byte; verification decides.
        416 if have > 0 => return Ok(()),
        _ => {
            return Err(Attempt::Fatal(failed(format!(
                "server answered http {status}"
            ))));
        }
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .map_err(|e| Attempt::Fatal(Error::io("create", partial, e)))?;
    let mut body = response.into_body().into_reader();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(Attempt::Retry(failed(format!("connection lost: {e}"))));
            }
        };
        file.write_all(&buffer[..n])
            .map_err(|e| Attempt::Fatal(Error::io("write", partial, e)))?;
    }
    file.sync_all()
        .map_err(|e| Attempt::Fatal(Error::io("write", partial, e)))?;
    Ok(())
}

/// The first byte of a `Content-Range: bytes <start>-<end>/<total>` header.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// Checks size and checksum of `path`; deletes it when either is wrong.
fn verify(archive: &RemoteArchive<'_>, url: &str, path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io("read", path, e))?
        .len();
    if let Some(size) = archive.size.filter(|&size| size != len) {
        let _ = std::fs::remove_file(path);
        return Err(Error::Download {
            url: url.to_string(),
            path: path.to_path_buf(),
            reason: format!("got {len} bytes, expected {size}; the file was deleted"),
        });
    }
    match &archive.checksum {
        Some(checksum) => {
            let actual = checksum.digest_file(path)?;
            if !checksum.matches(&actual) {
                let _ = std::fs::remove_file(path);
                return Err(Error::Checksum {
                    url: url.to_string(),
                    path: path.to_path_buf(),
                    algorithm: checksum.algorithm(),
                    expected: checksum.expected().to_string(),
                    actual,
                });
            }
        }
        None => {
            tracing::warn!(url, path = %path.display(), "no published checksum; accepting unverified")
        }
    }
    Ok(())
}

/// Extracts the gzip-compressed tar `archive` and moves its `inner` directory
/// ("." for all of it) to `dest`, through a temporary directory next to `dest`,
/// so `dest` never exists half-filled. Entries that would land outside the
/// temporary directory (`..`, absolute paths) are skipped by the tar reader.
pub fn extract_archive(archive: &Path, inner: &str, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let stem = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = parent.join(format!(".{stem}.extracting-{}-{nanos}", std::process::id()));
    let failed = |reason: String| Error::Extract {
        archive: archive.to_path_buf(),
        reason,
    };
    let result = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let file = File::open(archive).map_err(|e| Error::io("read", archive, e))?;
        let decoder = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
        tar::Archive::new(decoder)
            .unpack(&tmp)
            .map_err(|e| failed(e.to_string()))?;
        let source = if inner == "." || inner.is_empty() {
            tmp.clone()
        } else {
            tmp.join(inner)
        };
        if !source.is_dir() {
            return Err(failed(format!("it has no directory {inner:?}")));
        }
        match std::fs::rename(&source, dest) {
            Ok(()) => Ok(()),
            // Another process finished the same extraction first.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(Error::io(
                &format!("rename {} to", source.display()),
                dest,
                e,
            )),
        }
    })();
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_prefixes_match_like_torchvision() {
        let full = "f37072fd47e89c7ba7da0f21a7e8c8d4c6a5e3b1a9d8e7f6c5b4a3928170615f";
        assert!(Checksum::Sha256Prefix("f37072fd").matches(full));
        assert!(Checksum::Sha256Prefix("F37072FD").matches(full));
        assert!(!Checksum::Sha256Prefix("f37072fe").matches(full));
        assert!(!Checksum::Sha256Prefix("").matches(full));
        assert!(!Checksum::Sha256("f37072fd").matches(full));
        assert!(Checksum::Sha256(full).matches(full));
    }

    #[test]
    fn file_names_and_mirrors() {
        assert_eq!(CIFAR10_BINARY.file_name(), "cifar-10-binary.tar.gz");
        assert_eq!(OXFORD_PETS_IMAGES.file_name(), "images.tar.gz");
        assert_eq!(
            OXFORD_PETS.url_with_mirror(Some("http://127.0.0.1:9/m/")),
            "http://127.0.0.1:9/m/oxford-iiit-pet.tgz"
        );
        assert_eq!(CIFAR10_PNG.url_with_mirror(None), CIFAR10_PNG.url);
        assert_eq!(CIFAR10_PNG.url_with_mirror(Some("")), CIFAR10_PNG.url);
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes  0-0/1"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(content_range_start("bytes */200"), None);
    }
}
