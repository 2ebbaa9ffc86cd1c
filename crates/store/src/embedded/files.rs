//! Durable file primitives: atomic replace, directory sync, the data-dir lock,
//! and the write-ahead log's record framing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The first bytes of a log file: format name and version.
pub(crate) const LOG_MAGIC: &[u8; 8] = b"CSLOG\x00\x00\x01";

/// A log record larger than this is not believed (it is a torn or corrupt
/// length); the largest real record is a job or manifest of a few MiB.
const MAX_RECORD: u32 = 256 << 20;

/// Flushes a directory's entries (a rename or a new file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` so that after a crash the path holds either its
/// old contents or all of `bytes`: temp file, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_via(path, &tmp_path(path), bytes)
}

/// [`write_atomic`] through a temp file of the caller's choosing (one no
/// other writer uses at the same time).
pub(crate) fn write_atomic_via(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|e| Error::io(tmp, e))?;
    fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// `path` with `.tmp` appended: what [`write_atomic`] writes first. Leftovers
/// of a crash are removed when the store opens.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// The exclusive lock on a data dir, held for the store's life (an `flock` on
/// `LOCK`, which the kernel drops when the process dies, so a `kill -9` leaves
/// no stale lock behind).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let holder = file
                    .read_to_string(&mut pid)
                    .ok()
                    .and_then(|_| pid.trim().parse().ok());
                return Err(Error::DataDirLocked {
                    path: dir.to_owned(),
                    holder,
                });
            }
            Err(e) => return Err(Error::io(&path, e.into())),
        }
        let record_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        };
        record_pid(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(DirLock { _file: file })
    }
}

/// The append end of the write-ahead log.
///
/// A record is `len: u32 LE | crc32(payload): u32 LE | payload`. `append`
/// returns only after `fdatasync`, so an acknowledged record is on disk.
#[derive(Debug)]
pub(crate) struct LogWriter {
    path: PathBuf,
    file: File,
    len: u64,
    /// Set when a failed append could not be rolled back: the file may end in
    /// a partial record, and appending after it would bury it mid-log.
    broken: bool,
}

impl LogWriter {
    /// Creates an empty log at `path` atomically (replacing any old one).
    pub(crate) fn create(path: &Path) -> Result<LogWriter> {
        write_atomic(path, LOG_MAGIC)?;
        Self::open(path, LOG_MAGIC.len() as u64)
    }

    /// Opens an existing log whose valid prefix is `len` bytes, cutting off
    /// anything after it (a torn tail from a crash).
    pub(crate) fn open(path: &Path, len: u64) -> Result<LogWriter> {
        let open = || -> std::io::Result<File> {
            let file = OpenOptions::new().write(true).open(path)?;
            if file.metadata()?.len() != len {
                file.set_len(len)?;
                file.sync_all()?;
            }
            Ok(file)
        };
        let file = open().map_err(|e| Error::io(path, e))?;
        Ok(LogWriter {
            path: path.to_owned(),
            file,
            len,
            broken: false,
        })
    }

    /// Bytes in the log, magic included.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one record and waits until it is on disk.
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<()> {
        if self.broken {
            return Err(Error::Unavailable {
                reason: format!(
                    "write-ahead log {} is unusable after an earlier write error; reopen the store",
                    self.path.display()
                ),
            });
        }
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_RECORD)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a store transaction of {} bytes is over the {MAX_RECORD}-byte limit",
                    payload.len()
                ))
            })?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        let write = |file: &mut File| -> std::io::Result<()> {
            file.seek(SeekFrom::Start(self.len))?;
            file.write_all(&record)?;
            file.sync_data()
        };
        if let Err(e) = write(&mut self.file) {
            // Roll back so the next record does not follow a partial one.
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_all())
                .is_err()
            {
                self.broken = true;
            }
            return Err(Error::io(&self.path, e));
        }
        self.len += record.len() as u64;
        Ok(())
    }
}

/// What [`read_log`] found.
pub(crate) struct LogContents {
    /// The payload of every whole record, in order.
    pub(crate) records: Vec<Vec<u8>>,
    /// Length of the valid prefix; anything after it is a torn tail.
    pub(crate) valid_len: u64,
}

/// Reads every record of a log. A record cut short or failing its checksum at
/// the very end is a write that was never acknowledged (the process died
/// before `fdatasync` returned) and is dropped; a bad record with more data
/// after it is corruption and an error.
pub(crate) fn read_log(path: &Path) -> Result<LogContents> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < LOG_MAGIC.len() || &bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
        return Err(Error::corrupt(format!(
            "write-ahead log {} does not start with the camshaft log header",
            path.display()
        )));
    }
    let mut records = Vec::new();
    let mut at = LOG_MAGIC.len();
    // Stops at the clean end or a torn header.
    while let Some(header) = bytes.get(at..at + 8) {
        let mut len = [0; 4];
        let mut crc = [0; 4];
        len.copy_from_slice(&header[..4]);
        crc.copy_from_slice(&header[4..]);
        let len = u32::from_le_bytes(len);
        let end = at + 8 + len as usize;
        let Some(payload) = bytes.get(at + 8..end).filter(|_| len <= MAX_RECORD) else {
            break; // a torn record
        };
        if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
            if end == bytes.len() {
                break; // the last record, partly written
            }
            return Err(Error::corrupt(format!(
                "write-ahead log {} record at byte {at} failed its crc32 check with {} bytes of records after it",
                path.display(),
                bytes.len() - end
            )));
        }
        records.push(payload.to_vec());
        at = end;
    }
    if at != bytes.len() {
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = bytes.len() - at,
            "dropping the torn tail of the write-ahead log (a write interrupted before it was acknowledged)"
        );
    }
    Ok(LogContents {
        records,
        valid_len: at as u64,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn torn_tail_is_dropped_and_middle_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogWriter::create(&path).unwrap();
        log.append(b"one").unwrap();
        log.append(b"two").unwrap();
        let good = log.len();
        drop(log);

        // A torn tail: half a record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        let contents = read_log(&path).unwrap();
        assert_eq!(contents.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(contents.valid_len, good);

        // Reopening cuts the tail and appends after the good prefix.
        let mut log = LogWriter::open(&path, contents.valid_len).unwrap();
        log.append(b"three").unwrap();
        drop(log);
        assert_eq!(read_log(&path).unwrap().records.len(), 3);

        // A flipped byte in the first record, with records after it.
        let mut bytes = fs::read(&path).unwrap();
        bytes[LOG_MAGIC.len() + 8] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let err = read_log(&path).err().unwrap().to_string();
        assert!(err.contains("failed its crc32 check"), "{err}");
    }
}
