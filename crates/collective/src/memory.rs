//! Views of memory the ring reads and writes without copying: f32 and f64
//! slices as bytes (so sockets read straight into them), and a contiguous CPU
//! tensor's storage as a slice (so the ring reduces a tensor in place instead
//! of copying it out and back, and allocates nothing per call).
//!
//! Besides the NCCL bindings this is the crate's only module with `unsafe`
//! code. Everything it exports is safe to call except [`with_tensor_slice`],
//! whose soundness rests on its caller (the ring, which states why at each
//! call).
#![allow(unsafe_code)]

use tch::{Device, Tensor};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A number type whose every bit pattern is a value and that has no padding
/// (f32, f64), so it can be viewed as bytes and bytes can be viewed as it.
pub(crate) trait Plain: sealed::Sealed + tch::kind::Element + Copy + 'static {}

impl Plain for f32 {}
impl Plain for f64 {}

/// `values` as their bytes in memory (little-endian on every platform
/// libtorch runs on; the ring checks the target's endianness where it
/// matters).
pub(crate) fn as_bytes<E: Plain>(values: &[E]) -> &[u8] {
    // SAFETY: `E` is f32 or f64 (sealed): no padding, so all
    // `size_of_val(values)` bytes are initialised, and u8 has alignment 1.
    // The borrow of `values` covers the returned slice.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

/// `values` as their bytes in memory, writable.
pub(crate) fn as_bytes_mut<E: Plain>(values: &mut [E]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; also every bit pattern is a valid f32/f64,
    // so any bytes written through the view leave valid values.
    unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), std::mem::size_of_val(values))
    }
}

/// Whether [`with_tensor_slice`] can view `t` as a slice of `E`: a defined,
/// dense, contiguous CPU tensor of `E`'s kind that autograd does not track
/// (writing to a tracked tensor behind autograd's back would skip its version
/// counter).
pub(crate) fn viewable<E: Plain>(t: &Tensor) -> bool {
    t.defined()
        && t.device() == Device::Cpu
        && !t.is_sparse()
        && !t.is_mkldnn()
        && t.f_kind().is_ok_and(|k| k == E::KIND)
        && !t.requires_grad()
        && t.is_contiguous()
}

/// Runs `f` on the elements of `t` in place, or returns `None` when `t` is
/// not [`viewable`].
///
/// # Safety
///
/// `f` gets a `&mut` slice of `t`'s storage, which other `Tensor` handles
/// (shallow clones, views, the autograd graph) can reach without Rust
/// knowing. The caller must ensure that nothing reads or writes that storage
/// through another handle, on any thread, while `f` runs: otherwise the
/// slice aliases and the accesses race.
pub(crate) unsafe fn with_tensor_slice<E: Plain, R>(
    t: &Tensor,
    f: impl FnOnce(&mut [E]) -> R,
) -> Option<R> {
    if !viewable::<E>(t) {
        return None;
    }
    let len = t.numel();
    if len == 0 {
        return Some(f(&mut []));
    }
    let ptr = t.data_ptr().cast::<E>();
    if ptr.is_null() || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: `t` is a contiguous, dense CPU tensor of `E`'s dtype, so its
    // `numel` elements lie one after another from `data_ptr` (which already
    // includes the storage offset), initialised (libtorch storage is always
    // valid memory of its dtype) and aligned (checked). `t` is borrowed for
    // the whole call, so the storage outlives the slice; the slice does not
    // escape `f`. Other handles to the storage are not used while `f` runs
    // (the caller's obligation, see `# Safety`).
    let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    Some(f(data))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tch::Kind;

    #[test]
    fn bytes_views_round_trip() {
        let mut v = [1.5f32, -2.0];
        assert_eq!(as_bytes(&v).len(), 8);
        let bytes: Vec<u8> = as_bytes(&[3.0f32, 4.0]).to_vec();
        as_bytes_mut(&mut v).copy_from_slice(&bytes);
        assert_eq!(v, [3.0, 4.0]);
    }

    #[test]
    fn tensor_slice_writes_in_place() {
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        // SAFETY: `t` and its view are only used on this thread, after the call.
        let seen = unsafe {
            with_tensor_slice::<f32, _>(&t.narrow(0, 1, 2), |s| {
                s[0] += 10.0;
                s.to_vec()
            })
        };
        assert_eq!(seen, Some(vec![12.0, 3.0]));
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.0, 12.0, 3.0, 4.0]);
    }

    #[test]
    fn only_plain_contiguous_untracked_tensors_are_viewed() {
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        assert!(viewable::<f32>(&t));
        assert!(!viewable::<f64>(&t));
        assert!(!viewable::<f32>(&t.tr()));
        assert!(!viewable::<f32>(&t.to_kind(Kind::Half)));
        assert!(!viewable::<f32>(&t.copy().set_requires_grad(true)));
        let empty = Tensor::zeros([0], (Kind::Float, Device::Cpu));
        // SAFETY: the tensors are used on this thread only.
        unsafe {
            assert!(with_tensor_slice::<f32, _>(&t.tr(), |_| ()).is_none());
            assert_eq!(with_tensor_slice::<f32, _>(&empty, |s| s.len()), Some(0));
        }
    }
}
