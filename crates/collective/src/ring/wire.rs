//! The wire format, all little-endian: a 16-byte [`Header`] per call (op,
//! element kind, root, element count), so a rank that disagrees with its
//! predecessor fails with [`Error::Mismatch`](crate::Error::Mismatch)
//! instead of mixing up data, then the raw elements of each slice
//! ([`WireElement`]: f32 or f64).

use tch::Tensor;

use super::pipe::Scratch;
use super::staging::Staging;
use crate::memory::{Plain, as_bytes};

/// An element type the ring carries (little-endian on the wire).
pub(super) trait WireElement: Plain + Default + Send + Sync {
    /// Bytes per element.
    const SIZE: usize;
    /// The header's element kind.
    const CODE: u8;
    /// Appends `src` to `out` as wire bytes.
    fn encode(src: &[Self], out: &mut Vec<u8>);
    /// Turns values read from the wire (as bytes, in place) into native ones.
    fn from_wire(data: &mut [Self]);
    /// `dst += src`.
    fn add(dst: &mut [Self], src: &[Self]);
    /// `data /= n`.
    fn divide(data: &mut [Self], n: usize);
    /// This type's receive buffer.
    fn scratch(s: &mut Scratch) -> &mut Vec<Self>;
    /// This type's staging tensor.
    fn staging(s: &mut Staging) -> &mut Option<Tensor>;
}

macro_rules! wire_element {
    ($t:ty, $code:expr, $field:ident) => {
        impl WireElement for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const CODE: u8 = $code;

            fn encode(src: &[Self], out: &mut Vec<u8>) {
                if cfg!(target_endian = "little") {
                    out.extend_from_slice(as_bytes(src));
                } else {
                    for x in src {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }

            fn from_wire(data: &mut [Self]) {
                if cfg!(target_endian = "big") {
                    for x in data {
                        *x = <$t>::from_le_bytes(x.to_ne_bytes());
                    }
                }
            }

            fn add(dst: &mut [Self], src: &[Self]) {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += *s;
                }
            }

            fn divide(data: &mut [Self], n: usize) {
                let n = n as $t;
                for x in data {
                    *x /= n;
                }
            }

            fn scratch(s: &mut Scratch) -> &mut Vec<Self> {
                &mut s.$field
            }

            fn staging(s: &mut Staging) -> &mut Option<Tensor> {
                &mut s.$field
            }
        }
    };
}

wire_element!(f32, 1, single);
wire_element!(f64, 2, double);

/// The header's op of an all-reduce (and a barrier).
pub(super) const OP_ALL_REDUCE: u8 = 1;
/// The header's op of a broadcast.
pub(super) const OP_BROADCAST: u8 = 2;

/// What every call announces to its successor, so disagreements surface as
/// errors instead of scrambled data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    op: u8,
    kind: u8,
    root: u32,
    count: u64,
}

impl Header {
    pub(super) fn new<E: WireElement>(op: u8, count: usize, root: usize) -> Self {
        Header {
            op,
            kind: E::CODE,
            root: root as u32,
            count: count as u64,
        }
    }

    pub(super) fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0] = self.op;
        out[1] = self.kind;
        out[4..8].copy_from_slice(&self.root.to_le_bytes());
        out[8..16].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    pub(super) fn decode(b: &[u8]) -> Self {
        let mut root = [0u8; 4];
        root.copy_from_slice(&b[4..8]);
        let mut count = [0u8; 8];
        count.copy_from_slice(&b[8..16]);
        Header {
            op: b[0],
            kind: b[1],
            root: u32::from_le_bytes(root),
            count: u64::from_le_bytes(count),
        }
    }

    pub(super) fn describe(&self) -> String {
        let kind = match self.kind {
            1 => "f32",
            2 => "f64",
            _ => "unknown",
        };
        match self.op {
            OP_ALL_REDUCE => format!("all-reduce of {} {kind} values", self.count),
            OP_BROADCAST => format!(
                "broadcast of {} {kind} values from root {}",
                self.count, self.root
            ),
            op => format!("unknown collective {op}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::as_bytes_mut;

    #[test]
    fn header_round_trips() {
        let h = Header::new::<f64>(OP_BROADCAST, 1 << 40, 3);
        assert!(Header::decode(&h.encode()) == h);
        assert_eq!(
            h.describe(),
            "broadcast of 1099511627776 f64 values from root 3"
        );
    }

    #[test]
    fn wire_elements_round_trip_and_add() {
        let src = [1.5f32, -2.0, 3.25];
        let mut bytes = Vec::new();
        f32::encode(&src, &mut bytes);
        assert_eq!(&bytes[..4], &1.5f32.to_le_bytes());
        let mut back = [0.0f32; 3];
        as_bytes_mut(&mut back).copy_from_slice(&bytes);
        f32::from_wire(&mut back);
        assert_eq!(back, src);
        let mut dst = [1.0f32; 3];
        f32::add(&mut dst, &back);
        assert_eq!(dst, [2.5, -1.0, 4.25]);
    }
}
