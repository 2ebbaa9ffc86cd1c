//! What reading one checkpoint may cost: the public [`ReadLimits`], and the
//! running [`Budget`] every allocation of a read is charged to before it is
//! made.

use crate::{Error, Result};

/// Bounds on what reading one checkpoint may materialise, so that a small
/// hostile file cannot make the reader allocate gigabytes or run for long.
///
/// [`read_state_dict`](crate::read_state_dict) and
/// [`read_state_dict_bytes`](crate::read_state_dict_bytes) use
/// [`ReadLimits::default()`]; the `_with` variants take these explicitly.
/// The defaults read every real `torch.save` state dict, whose tensors
/// together are about the size of the file.
///
/// # Example
///
/// ```no_run
/// use camshaft_pth::{ReadLimits, read_state_dict_with};
///
/// # fn main() -> camshaft_pth::Result<()> {
/// let limits = ReadLimits {
///     min_total_bytes: 1 << 20,
///     ..ReadLimits::default()
/// };
/// let tensors = read_state_dict_with("tiny.pth".as_ref(), &limits)?;
/// # let _ = tensors;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes a read may materialise per byte of the file. Counted are the
    /// archive entries read (`data.pkl`, every storage, decompressed), the
    /// objects the pickle builds, the flattened tensor names, and every
    /// tensor copied out of a storage (a tensor that takes its storage's
    /// buffer over costs nothing more). The total may not exceed
    /// `max(file size * bytes_per_file_byte, min_total_bytes)`: see
    /// [`total_bytes`](Self::total_bytes). Default 8: real state dicts
    /// materialise about 1x their file, 2x where tensors view one storage,
    /// and about 5x for a file of nothing but scalar tensors, where the
    /// pickle's objects outweigh the tensors.
    pub bytes_per_file_byte: u64,
    /// The least total a read may materialise however small the file, so
    /// that small files with a few expanded tensors still read. Default
    /// 64 MiB.
    pub min_total_bytes: u64,
    /// Largest copy of one *expanded* tensor: one with more elements than
    /// the span of storage it views (stride 0, as `expand` makes, or other
    /// overlapping strides). Such a tensor counts toward the total too.
    /// Default 256 MiB.
    pub max_expanded_tensor_bytes: u64,
    /// Most tensors the saved dicts may flatten to. A dict stored once but
    /// referred to from several places counts once per place, as each
    /// place names its own tensors. Default 1,048,576.
    pub max_tensors: u64,
    /// Most bytes the flattened dotted tensor names may take together.
    /// Default 64 MiB.
    pub max_key_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            bytes_per_file_byte: 8,
            min_total_bytes: 64 << 20,
            max_expanded_tensor_bytes: 256 << 20,
            max_tensors: 1 << 20,
            max_key_bytes: 64 << 20,
        }
    }
}

impl ReadLimits {
    /// The most bytes a read of a `file_len`-byte file may materialise:
    /// `max(file_len * bytes_per_file_byte, min_total_bytes)`.
    pub fn total_bytes(&self, file_len: u64) -> u64 {
        file_len
            .saturating_mul(self.bytes_per_file_byte)
            .max(self.min_total_bytes)
    }
}

/// The running total of bytes one read has materialised, against the most
/// [`ReadLimits::total_bytes`] allows. Charged before each allocation, so
/// an over-large request fails before any memory is taken for it.
pub(crate) struct Budget<'a> {
    what: &'a str,
    allowed: u64,
    used: u64,
}

impl<'a> Budget<'a> {
    pub(crate) fn new(what: &'a str, allowed: u64) -> Self {
        Self {
            what,
            allowed,
            used: 0,
        }
    }

    /// Counts `bytes` more, or fails with [`Error::TooMuchData`] naming
    /// `item` (what the bytes are for) when that would pass the limit;
    /// `item` is only formatted on failure.
    pub(crate) fn charge(&mut self, bytes: u64, item: impl FnOnce() -> String) -> Result<()> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.allowed => {
                self.used = total;
                Ok(())
            }
            total => Err(Error::TooMuchData {
                what: self.what.to_owned(),
                item: item(),
                asked: total.unwrap_or(u64::MAX),
                allowed: self.allowed,
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_total_scales_with_the_file_above_a_floor() {
        let limits = ReadLimits::default();
        assert_eq!(limits.total_bytes(1000), 64 << 20);
        assert_eq!(limits.total_bytes(1 << 30), 8 << 30);
        assert_eq!(limits.total_bytes(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_charge_past_the_limit_fails_and_names_what_asked() {
        let mut budget = Budget::new("f.pth", 100);
        budget.charge(60, || unreachable!()).unwrap();
        let err = budget.charge(41, || "tensor w".into()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooMuchData {
                    asked: 101,
                    allowed: 100,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("tensor w") && message.contains("101"),
            "{message}"
        );
        // The failed charge was not counted.
        budget.charge(40, || unreachable!()).unwrap();
        assert!(budget.charge(u64::MAX, String::new).is_err());
        assert_eq!(budget.used(), 100);
    }
}
