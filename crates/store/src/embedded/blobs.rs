//! Content-addressed chunk files: `blobs/<first two hex digits>/<sha256>`.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::files::{sync_dir, write_atomic_via};
use crate::error::{Error, Result};
use crate::records::{BlobManifest, CHUNK_SIZE};

/// The chunk files of every blob in the data dir. Chunks are shared between
/// blobs with equal content and removed only by [`ChunkStore::collect_garbage`].
#[derive(Debug)]
pub(crate) struct ChunkStore {
    dir: PathBuf,
}

/// Makes chunk temp file names unique within the process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ChunkStore {
    pub(crate) fn open(dir: PathBuf) -> Result<ChunkStore> {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(ChunkStore { dir })
    }

    fn chunk_path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash.get(..2).unwrap_or("xx")).join(hash)
    }

    /// Writes every chunk of `blob` that is not already there, durably, and
    /// returns the manifest to commit afterwards.
    pub(crate) fn write_blob(&self, blob: &[u8]) -> Result<BlobManifest> {
        let mut chunks = Vec::with_capacity(blob.len().div_ceil(CHUNK_SIZE));
        // Directories of chunks another write put there: their rename may not
        // be on disk yet, so sync them before the manifest can name them.
        let mut shared_dirs = BTreeSet::new();
        for chunk in blob.chunks(CHUNK_SIZE) {
            let hash = sha256_hex(chunk);
            let path = self.chunk_path(&hash);
            let parent = path.parent().unwrap_or(&self.dir).to_owned();
            let present = fs::metadata(&path).is_ok_and(|m| m.len() == chunk.len() as u64);
            if present {
                shared_dirs.insert(parent);
            } else {
                if !parent.exists() {
                    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
                    sync_dir(&self.dir)?;
                }
                // Temp file, fsync, rename, fsync the directory. The temp name
                // is unique: two writes of equal content may race here.
                let unique = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
                let tmp = parent.join(format!("{hash}.{}-{unique}.tmp", std::process::id()));
                write_atomic_via(&path, &tmp, chunk)?;
            }
            chunks.push(hash);
        }
        for dir in shared_dirs {
            sync_dir(&dir)?;
        }
        Ok(BlobManifest {
            sha256: sha256_hex(blob),
            size: blob.len() as u64,
            chunks,
        })
    }

    /// Reads a blob and checks every chunk and the whole against the
    /// manifest; `what` names the owner in errors ("checkpoint 3 of job j-1").
    pub(crate) fn read_blob(&self, manifest: &BlobManifest, what: &str) -> Result<Bytes> {
        let size = usize::try_from(manifest.size)
            .map_err(|_| Error::corrupt(format!("{what}: size {} is too large", manifest.size)))?;
        let mut blob = BytesMut::with_capacity(size);
        let count = manifest.chunks.len();
        for (i, hash) in manifest.chunks.iter().enumerate() {
            let path = self.chunk_path(hash);
            let chunk = match fs::read(&path) {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Error::corrupt(format!(
                        "{what}: chunk {} of {count} (sha256 {hash}) is missing at {}",
                        i + 1,
                        path.display()
                    )));
                }
                Err(e) => return Err(Error::io(&path, e)),
            };
            let actual = sha256_hex(&chunk);
            if &actual != hash {
                return Err(Error::corrupt(format!(
                    "{what}: chunk {} of {count} at {} failed its sha256 check (expected {hash}, found {actual})",
                    i + 1,
                    path.display()
                )));
            }
            blob.extend_from_slice(&chunk);
        }
        let actual = sha256_hex(&blob);
        if blob.len() as u64 != manifest.size || actual != manifest.sha256 {
            return Err(Error::corrupt(format!(
                "{what}: the blob of {} bytes failed its sha256 check (expected {} bytes with sha256 {}, found sha256 {actual})",
                blob.len(),
                manifest.size,
                manifest.sha256
            )));
        }
        Ok(blob.freeze())
    }

    /// Removes every chunk file not in `live` (and temp files of interrupted
    /// writes); returns how many files went. The caller guarantees no blob
    /// write or read is in flight.
    pub(crate) fn collect_garbage(&self, live: &BTreeSet<String>) -> Result<usize> {
        let mut removed = 0;
        for dir in read_dir(&self.dir)? {
            if !dir.is_dir() {
                continue;
            }
            let mut touched = false;
            for file in read_dir(&dir)? {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !live.contains(name) {
                    fs::remove_file(&file).map_err(|e| Error::io(&file, e))?;
                    removed += 1;
                    touched = true;
                }
            }
            if touched {
                sync_dir(&dir)?;
            }
        }
        Ok(removed)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| Error::io(dir, e))
}
