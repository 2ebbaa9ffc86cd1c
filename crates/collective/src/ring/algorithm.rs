//! The ring algorithms over a [`Pipe`]: the bandwidth-optimal all-reduce
//! (reduce-scatter then all-gather over `n` chunks) and the pipelined
//! broadcast, each cut into slices so receiving, reducing and forwarding
//! overlap.

use std::ops::Range;

use super::pipe::Pipe;
use super::wire::{Header, OP_ALL_REDUCE, OP_BROADCAST, WireElement};
use crate::Result;

pub(super) fn slice_elems<E: WireElement>(slice_bytes: usize) -> usize {
    (slice_bytes / E::SIZE).max(1)
}

/// `range` cut into pieces of at most `step` elements.
fn slices(range: Range<usize>, step: usize) -> impl Iterator<Item = Range<usize>> {
    let end = range.end;
    range
        .clone()
        .step_by(step)
        .map(move |s| s..(s + step).min(end))
}

/// Chunk `c` of `n` of a buffer of `len` elements (sizes differ by at most 1).
fn chunk(c: usize, n: usize, len: usize) -> Range<usize> {
    (c * len / n)..((c + 1) * len / n)
}

/// Ring all-reduce (sum) of `data` in place: `n − 1` reduce-scatter steps,
/// then `n − 1` all-gather steps. At step `t` this rank sends chunk
/// `r − t` and receives chunk `r − t − 1`, which it sends at step `t + 1`;
/// after the reduce-scatter it holds the full sum of chunk `r + 1`.
pub(super) fn all_reduce_ring<E: WireElement>(
    pipe: &mut Pipe<'_>,
    data: &mut [E],
    rank: usize,
    n: usize,
    slice: usize,
) -> Result<()> {
    let len = data.len();
    let header = Header::new::<E>(OP_ALL_REDUCE, len, 0);
    pipe.send_bytes(&header.encode());
    for s in slices(chunk(rank, n, len), slice) {
        pipe.send(&data[s])?;
    }
    pipe.expect_header(header)?;
    let steps = 2 * (n - 1);
    for t in 0..steps {
        let c = (rank + 2 * n - t - 1) % n;
        for s in slices(chunk(c, n, len), slice) {
            if t < n - 1 {
                pipe.recv_add(&mut data[s.clone()])?;
            } else {
                pipe.recv_into(&mut data[s.clone()])?;
            }
            if t + 1 < steps {
                pipe.send(&data[s])?;
            }
        }
    }
    Ok(())
}

/// Ring broadcast: the root sends, every other rank receives and forwards
/// to its successor unless that is the root; slices are forwarded as soon
/// as they arrive.
pub(super) fn broadcast_ring<E: WireElement>(
    pipe: &mut Pipe<'_>,
    data: &mut [E],
    rank: usize,
    n: usize,
    root: usize,
    slice: usize,
) -> Result<()> {
    let len = data.len();
    let header = Header::new::<E>(OP_BROADCAST, len, root);
    if rank == root {
        pipe.send_bytes(&header.encode());
        for s in slices(0..len, slice) {
            pipe.send(&data[s])?;
        }
        return Ok(());
    }
    let forward = (rank + 1) % n != root;
    pipe.expect_header(header)?;
    if forward {
        pipe.send_bytes(&header.encode());
    }
    for s in slices(0..len, slice) {
        pipe.recv_into(&mut data[s.clone()])?;
        if forward {
            pipe.send(&data[s])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_buffer_without_overlap() {
        for n in 1..6 {
            for len in [0, 1, n - 1, n, 7, 1000003] {
                let mut next = 0;
                for c in 0..n {
                    let r = chunk(c, n, len);
                    assert_eq!(r.start, next);
                    assert!(r.len() <= len / n + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn slices_cut_a_range() {
        let cut: Vec<_> = slices(3..10, 3).collect();
        assert_eq!(cut, vec![3..6, 6..9, 9..10]);
        assert_eq!(slices(4..4, 3).count(), 0);
    }
}
