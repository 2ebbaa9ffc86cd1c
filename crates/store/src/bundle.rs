//! A checkpoint blob holds several files (weights, optimiser state); a
//! bundle is their one-blob form: `CSBUNDLE` then `[u32 count]`, then per
//! file `[u32 name length][name][u64 length][bytes]`, integers little-endian.
//! Services that write checkpoints pack one; the coordinator unpacks one to
//! register a model's weights without knowing anything else about them.

use bytes::Bytes;

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CSBUNDLE";

/// The file of a checkpoint bundle holding the model's weights
/// (safetensors), which the coordinator registers when a job ends.
pub const WEIGHTS: &str = "weights.safetensors";

/// The file of a checkpoint bundle holding the weights of the job's best
/// epoch so far when that is not the checkpoint's own epoch (a job that
/// registers its best epoch); the coordinator registers it instead of
/// [`WEIGHTS`] when present.
pub const BEST_WEIGHTS: &str = "best_weights.safetensors";

/// The key of a checkpoint's metadata object under which the writer
/// records which epoch the job would register if it ended there:
/// `{"epoch": 3, "selected_by": "best valid_loss", "early_stop": {..}}`
/// (`early_stop` as `camshaft.v1.EarlyStop`'s JSON, only once training
/// stopped early).
pub const SELECTION: &str = "selection";

/// Packs named files into one blob, in the given order.
pub fn pack<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Bytes {
    let files: Vec<(&str, &[u8])> = files.into_iter().collect();
    let size: usize = files.iter().map(|(n, b)| 12 + n.len() + b.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (name, data) in files {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
    }
    Bytes::from(out)
}

/// The files of a bundle, in order; each shares `blob`'s buffer. A blob that
/// is not a whole bundle is [`Error::Corrupt`].
pub fn unpack(blob: &Bytes) -> Result<Vec<(String, Bytes)>> {
    let corrupt = |what: &str| Error::Corrupt {
        what: format!("checkpoint bundle: {what}"),
    };
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<Bytes> {
        let end = at
            .checked_add(n)
            .filter(|&end| end <= blob.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let part = blob.slice(at..end);
        at = end;
        Ok(part)
    };
    if take(MAGIC.len())?.as_ref() != MAGIC {
        return Err(corrupt("not a bundle (bad magic)"));
    }
    let u32_of = |b: Bytes| u32::from_le_bytes(b.as_ref().try_into().unwrap_or([0; 4]));
    let count = u32_of(take(4)?);
    let mut files = Vec::new();
    for _ in 0..count {
        let name_len = u32_of(take(4)?) as usize;
        let name = String::from_utf8(take(name_len)?.to_vec())
            .map_err(|_| corrupt("a file name is not UTF-8"))?;
        let len = u64::from_le_bytes(take(8)?.as_ref().try_into().unwrap_or([0; 8]));
        let len = usize::try_from(len).map_err(|_| corrupt("a file is too large"))?;
        files.push((name, take(len)?));
    }
    if at != blob.len() {
        return Err(corrupt("trailing bytes after the last file"));
    }
    Ok(files)
}

/// The file called `name` in a bundle.
pub fn file(blob: &Bytes, name: &str) -> Result<Bytes> {
    unpack(blob)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, data)| data)
        .ok_or_else(|| Error::Corrupt {
            what: format!("checkpoint bundle has no file {name:?}"),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let blob = pack([("a.json", &b"{}"[..]), ("w.bin", &[1u8, 2, 3][..])]);
        let files = unpack(&blob).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].0, "w.bin");
        assert_eq!(files[1].1.as_ref(), &[1, 2, 3]);
        assert_eq!(file(&blob, "a.json").unwrap().as_ref(), b"{}");
        assert!(file(&blob, "missing").is_err());
        let truncated = blob.slice(..blob.len() - 1);
        assert!(
            unpack(&truncated)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let mut longer = blob.to_vec();
        longer.push(0);
        assert!(unpack(&Bytes::from(longer)).is_err());
        assert!(unpack(&Bytes::from_static(b"PK\x03\x04....")).is_err());
    }
}
