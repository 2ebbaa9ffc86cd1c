//! Durable file primitives: atomic replace, directory sync, the data-dir lock,
//! and the write-ahead log's record framing.
//!
//! # The write-ahead log
//!
//! ```text
//! "CSLOG\0\0\x02"                      format name and version, once
//! then per record, integers little-endian:
//!   marker       ff 'R' 'E' 'C'
//!   len          u32, payload bytes (at most 256 MiB)
//!   payload_crc  u32, crc32 of the payload
//!   header_crc   u32, crc32 of the 12 bytes before it
//!   payload      len bytes of json
//! ```
//!
//! A reader checks a record's header before it trusts the length in it, so a
//! damaged length cannot make a record seem to run past the end of the file.
//! Damage is a torn tail (a write that a crash cut short and that was never
//! acknowledged, dropped with a warning) only when nothing valid follows it:
//! a whole header whose length runs past the end of the file, a payload that
//! fails its crc32 and ends the file, or a bad header with no checked header
//! anywhere after it. Anything else is corruption of acknowledged writes and
//! opening fails with [`Error::Corrupt`] naming the file and the byte offset
//! of the record. A version 1 log (no marker, no header crc) is still read.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The first bytes of a log file: format name and version.
pub(crate) const LOG_MAGIC: &[u8; 8] = b"CSLOG\x00\x00\x02";

/// The first bytes of a version 1 log, whose records had no header checksum
/// (`len u32 LE | crc32(payload) u32 LE | payload`). Still read, once: the
/// store folds it into a snapshot and starts a version 2 log.
const LOG_MAGIC_V1: &[u8; 8] = b"CSLOG\x00\x00\x01";

/// Starts every record. `0xff` never occurs in UTF-8, so never inside a JSON
/// payload: a scan for record headers cannot match inside a record.
const RECORD_MARKER: [u8; 4] = [0xff, b'R', b'E', b'C'];

/// Marker, length, payload crc32 and header crc32.
const HEADER_LEN: usize = 16;

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

/// The append end of a version 2 write-ahead log (format in the module doc).
///
/// `append` returns only after `fdatasync`, so an acknowledged record is on
/// disk.
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
        let header = RecordHeader {
            len,
            payload_crc: crc32fast::hash(payload),
        };
        let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
        record.extend_from_slice(&header.encode());
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

/// A record header that checked out: marker, header crc32, length in range.
struct RecordHeader {
    len: u32,
    payload_crc: u32,
}

impl RecordHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        header[..4].copy_from_slice(&RECORD_MARKER);
        header[4..8].copy_from_slice(&self.len.to_le_bytes());
        header[8..12].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&header[..12]);
        header[12..].copy_from_slice(&crc.to_le_bytes());
        header
    }

    /// The header at the start of `bytes`, if it is whole and checks out.
    fn decode(bytes: &[u8]) -> Option<RecordHeader> {
        let header = bytes.get(..HEADER_LEN)?;
        let len = le_u32(&header[4..8]);
        let checks = header[..4] == RECORD_MARKER
            && crc32fast::hash(&header[..12]) == le_u32(&header[12..])
            && len <= MAX_RECORD;
        checks.then(|| RecordHeader {
            len,
            payload_crc: le_u32(&header[8..12]),
        })
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

/// What [`read_log`] found.
pub(crate) struct LogContents {
    /// The payload of every whole record, in order.
    pub(crate) records: Vec<Vec<u8>>,
    /// Length of the valid prefix; anything after it is a torn tail.
    pub(crate) valid_len: u64,
    /// The log is in the version 1 format: read it, but do not append to it.
    pub(crate) outdated: bool,
}

/// Reads every record of a log, dropping a torn tail (see the module doc for
/// what counts as one) and failing on any other damage.
pub(crate) fn read_log(path: &Path) -> Result<LogContents> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let (records, valid_len, outdated) = match bytes.get(..LOG_MAGIC.len()) {
        Some(magic) if magic == LOG_MAGIC => {
            let (records, at) = read_records(path, &bytes)?;
            (records, at, false)
        }
        Some(magic) if magic == LOG_MAGIC_V1 => {
            let (records, at) = read_records_v1(path, &bytes)?;
            (records, at, true)
        }
        _ => {
            return Err(Error::corrupt(format!(
                "write-ahead log {} does not start with a camshaft log header (version 1 or 2)",
                path.display()
            )));
        }
    };
    if valid_len != bytes.len() {
        tracing::warn!(
            path = %path.display(),
            at = valid_len,
            dropped_bytes = bytes.len() - valid_len,
            "dropping the torn tail of the write-ahead log (a write interrupted before it was acknowledged)"
        );
    }
    Ok(LogContents {
        records,
        valid_len: valid_len as u64,
        outdated,
    })
}

/// The payloads of a version 2 log and the length of its valid prefix.
fn read_records(path: &Path, bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize)> {
    let mut records = Vec::new();
    let mut at = LOG_MAGIC.len();
    while at < bytes.len() {
        let Some(header) = RecordHeader::decode(&bytes[at..]) else {
            // The length cannot be trusted, so where this record ends is
            // unknown; a checked header further on shows it was not the last.
            let next = bytes[at + 1..]
                .windows(HEADER_LEN)
                .position(|w| RecordHeader::decode(w).is_some());
            return match next {
                None => Ok((records, at)),
                Some(i) => Err(Error::corrupt(format!(
                    "write-ahead log {} record at byte {at} has a damaged header (marker, length or header crc32) and a record follows at byte {}",
                    path.display(),
                    at + 1 + i
                ))),
            };
        };
        let end = at + HEADER_LEN + header.len as usize;
        let Some(payload) = bytes.get(at + HEADER_LEN..end) else {
            return Ok((records, at)); // its checked length runs past the end
        };
        if crc32fast::hash(payload) != header.payload_crc {
            if end == bytes.len() {
                return Ok((records, at)); // the last record, partly written
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
    Ok((records, at))
}

/// [`read_records`] for a version 1 log: `len | crc32(payload) | payload`.
/// Its lengths are unchecked, so a damaged one reads as a torn tail; the
/// store replaces such a log as soon as it has read it.
fn read_records_v1(path: &Path, bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize)> {
    let mut records = Vec::new();
    let mut at = LOG_MAGIC_V1.len();
    while let Some(header) = bytes.get(at..at + 8) {
        let len = le_u32(&header[..4]);
        let end = at + 8 + len as usize;
        let Some(payload) = bytes.get(at + 8..end).filter(|_| len <= MAX_RECORD) else {
            break; // a torn record
        };
        if crc32fast::hash(payload) != le_u32(&header[4..]) {
            if end == bytes.len() {
                break; // the last record, partly written
            }
            return Err(Error::corrupt(format!(
                "write-ahead log {} (version 1) record at byte {at} failed its crc32 check with {} bytes of records after it",
                path.display(),
                bytes.len() - end
            )));
        }
        records.push(payload.to_vec());
        at = end;
    }
    Ok((records, at))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PAYLOADS: [&[u8]; 3] = [b"{\"one\":1}", b"{\"two\":2}", b"{\"three\":3}"];

    /// A log of [`PAYLOADS`] and the byte offset of each record.
    fn write_log(path: &Path) -> Vec<usize> {
        let mut log = LogWriter::create(path).unwrap();
        let mut offsets = Vec::new();
        for payload in PAYLOADS {
            offsets.push(log.len() as usize);
            log.append(payload).unwrap();
        }
        offsets
    }

    fn records(path: &Path) -> Vec<Vec<u8>> {
        read_log(path).unwrap().records
    }

    fn corrupt_error(path: &Path) -> String {
        match read_log(path) {
            Err(e @ Error::Corrupt { .. }) => e.to_string(),
            Err(e) => panic!("expected corrupt data, got {e}"),
            Ok(c) => panic!("read {} records from a damaged log", c.records.len()),
        }
    }

    #[test]
    fn a_log_written_by_this_code_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_log(&path);
        let contents = read_log(&path).unwrap();
        assert_eq!(contents.records, PAYLOADS.map(<[u8]>::to_vec));
        assert_eq!(contents.valid_len, fs::metadata(&path).unwrap().len());
        assert!(!contents.outdated);
    }

    #[test]
    fn a_torn_last_record_is_dropped_wherever_it_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let offsets = write_log(&path);
        let whole = fs::read(&path).unwrap();
        let last = offsets[2];
        let earlier = PAYLOADS[..2].iter().map(|p| p.to_vec()).collect::<Vec<_>>();
        for cut in last..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let contents = read_log(&path).unwrap();
            assert_eq!(contents.records, earlier, "cut at {cut}");
            assert_eq!(contents.valid_len, last as u64, "cut at {cut}");
        }
        // Whole length, but the end never reached the disk (zeros), in the
        // payload or in the header too.
        for from in [last + HEADER_LEN + 1, last + 10, last] {
            let mut bytes = whole.clone();
            bytes[from..].fill(0);
            fs::write(&path, &bytes).unwrap();
            assert_eq!(records(&path), earlier, "zeros from {from}");
        }

        // Reopening cuts the tail and appends after the good prefix.
        fs::write(&path, &whole[..whole.len() - 1]).unwrap();
        let mut log = LogWriter::open(&path, last as u64).unwrap();
        log.append(b"{}").unwrap();
        drop(log);
        assert_eq!(records(&path)[2], b"{}");
    }

    #[test]
    fn a_damaged_header_mid_log_is_an_error_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let offsets = write_log(&path);
        let whole = fs::read(&path).unwrap();
        let at = offsets[1];
        let expected = format!("{} record at byte {at} ", path.display());
        // Every header byte, the length ones first among them: a flipped high
        // byte of the length makes the record seem to run past the end.
        for byte in at..at + HEADER_LEN {
            for flip in [0x01, 0x80, 0xff] {
                let mut bytes = whole.clone();
                bytes[byte] ^= flip;
                fs::write(&path, &bytes).unwrap();
                let err = corrupt_error(&path);
                assert!(err.contains(&expected), "byte {byte}: {err}");
                assert!(err.contains("damaged header"), "byte {byte}: {err}");
            }
        }
        // A length rewritten to a huge value, as a torn write would never be.
        let mut bytes = whole.clone();
        bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert!(corrupt_error(&path).contains(&expected));
    }

    #[test]
    fn a_damaged_payload_mid_log_is_an_error_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let offsets = write_log(&path);
        let mut bytes = fs::read(&path).unwrap();
        bytes[offsets[1] + HEADER_LEN + 2] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = corrupt_error(&path);
        assert!(
            err.contains(&format!(
                "record at byte {} failed its crc32 check",
                offsets[1]
            )),
            "{err}"
        );
    }

    #[test]
    fn a_version_1_log_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = LOG_MAGIC_V1.to_vec();
        for payload in PAYLOADS {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]); // a torn tail
        fs::write(&path, &bytes).unwrap();
        let contents = read_log(&path).unwrap();
        assert_eq!(contents.records, PAYLOADS.map(<[u8]>::to_vec));
        assert_eq!(contents.valid_len, good);
        assert!(contents.outdated);

        fs::write(&path, b"CSLOG\x00\x00\x07").unwrap();
        assert!(corrupt_error(&path).contains("does not start with a camshaft log header"));
    }
}
