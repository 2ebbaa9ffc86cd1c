//! Gathering a strided view of a storage into contiguous row-major bytes.

/// A view (`offset`, `shape`, `stride`, all in elements of `elem` bytes)
/// of a storage of `storage_len` bytes, checked: every element it names
/// lies inside the storage, and the size of its contiguous copy is known
/// (and fits in `usize`) before anything is allocated for it.
#[derive(Debug)]
pub(crate) struct View<'s> {
    elem: usize,
    offset: usize,
    shape: &'s [usize],
    stride: &'s [usize],
    storage_len: usize,
    /// Bytes of the contiguous copy.
    len: usize,
    /// Elements from `offset` through the last one the view touches; 0 for
    /// an empty view.
    span: usize,
}

impl<'s> View<'s> {
    /// Checks the view against a storage of `storage_len` bytes; the error
    /// says what does not fit.
    pub(crate) fn new(
        storage_len: usize,
        elem: usize,
        offset: usize,
        shape: &'s [usize],
        stride: &'s [usize],
    ) -> Result<Self, String> {
        debug_assert_eq!(shape.len(), stride.len());
        let len = shape
            .iter()
            .try_fold(elem, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?} overflows"))?;
        let mut view = Self {
            elem,
            offset,
            shape,
            stride,
            storage_len,
            len,
            span: 0,
        };
        if len == 0 {
            return Ok(view);
        }
        let storage_elems = storage_len / elem;
        // Highest element index the view touches.
        let last = shape
            .iter()
            .zip(stride)
            .try_fold(offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .filter(|&last| last < storage_elems)
            .ok_or_else(|| {
                format!(
                    "view (offset {offset}, shape {shape:?}, stride {stride:?}) reaches past its \
                     storage of {storage_elems} elements"
                )
            })?;
        view.span = last - offset + 1;
        Ok(view)
    }

    /// Bytes of the contiguous copy.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of storage from the view's first element through its last.
    pub(crate) fn span_bytes(&self) -> usize {
        // Cannot overflow: the span lies inside the storage.
        self.span * self.elem
    }

    /// Whether the copy is larger than the storage the view spans, so some
    /// elements repeat: a stride-0 (`expand`ed) dimension, or other
    /// overlapping strides. Only such a view can be larger than its
    /// storage.
    pub(crate) fn is_expanded(&self) -> bool {
        self.len > self.span_bytes()
    }

    /// Whether the view is its whole storage in order, so the storage's
    /// buffer can serve as the copy.
    pub(crate) fn is_whole(&self) -> bool {
        self.offset == 0 && self.len == self.storage_len && is_contiguous(self.shape, self.stride)
    }

    /// Copies the view's elements out of `storage` (the one it was checked
    /// against) into a new contiguous buffer of [`len`](Self::len) bytes.
    /// Work is linear in that length.
    pub(crate) fn gather(&self, storage: &[u8]) -> Vec<u8> {
        debug_assert_eq!(storage.len(), self.storage_len);
        let elem = self.elem;
        if self.len == 0 {
            return Vec::new();
        }
        if is_contiguous(self.shape, self.stride) {
            let start = self.offset * elem;
            return storage[start..start + self.len].to_vec();
        }
        // Size-1 dimensions do not move through the storage; dropping them
        // leaves every dimension at least 2 long, so the odometer below
        // does O(1) amortised work per row however many dimensions the
        // file declares.
        let (shape, stride): (Vec<usize>, Vec<usize>) = self
            .shape
            .iter()
            .zip(self.stride)
            .filter(|&(&d, _)| d != 1)
            .unzip();

        let mut out = Vec::with_capacity(self.len);
        let ndim = shape.len();
        // `ndim >= 1` here: a view with no dimension longer than 1 is
        // contiguous.
        let (inner_size, inner_stride) = (shape[ndim - 1], stride[ndim - 1]);
        let outer = &shape[..ndim - 1];
        let mut index = vec![0usize; outer.len()];
        let mut base = self.offset;
        loop {
            if inner_stride == 1 {
                // Rows are contiguous: copy each row whole.
                let start = base * elem;
                out.extend_from_slice(&storage[start..start + inner_size * elem]);
            } else {
                for i in 0..inner_size {
                    let start = (base + i * inner_stride) * elem;
                    out.extend_from_slice(&storage[start..start + elem]);
                }
            }
            // Advance the odometer over the outer dimensions, last fastest.
            let mut dim = outer.len();
            loop {
                if dim == 0 {
                    debug_assert_eq!(out.len(), self.len);
                    return out;
                }
                dim -= 1;
                index[dim] += 1;
                base += stride[dim];
                if index[dim] < outer[dim] {
                    break;
                }
                base -= stride[dim] * index[dim];
                index[dim] = 0;
            }
        }
    }

    /// Like [`gather`](Self::gather), taking the storage: when the view is
    /// the whole storage in order, the buffer itself is returned, uncopied.
    pub(crate) fn gather_owned(&self, storage: Vec<u8>) -> Vec<u8> {
        if self.is_whole() {
            storage
        } else {
            self.gather(&storage)
        }
    }
}

/// Whether row-major order over `shape` visits consecutive elements; sizes
/// of 1 make their stride irrelevant.
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bytes(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Checks the view of `storage` (elements of 2 bytes) and copies it.
    fn gather(
        storage: &[u8],
        offset: usize,
        shape: &[usize],
        stride: &[usize],
    ) -> Result<Vec<u8>, String> {
        let view = View::new(storage.len(), 2, offset, shape, stride)?;
        let out = view.gather(storage);
        assert_eq!(out.len(), view.len());
        Ok(out)
    }

    #[test]
    fn contiguous_with_offset() {
        let storage = bytes(&[0, 1, 2, 3, 4, 5]);
        let out = gather(&storage, 2, &[2, 2], &[2, 1]).unwrap();
        assert_eq!(out, bytes(&[2, 3, 4, 5]));
    }

    #[test]
    fn transposed() {
        // arange(12).reshape(3, 4).t()
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let out = gather(&storage, 0, &[4, 3], &[1, 4]).unwrap();
        assert_eq!(out, bytes(&[0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]));
    }

    #[test]
    fn sliced_rows_of_a_transpose() {
        // arange(12).reshape(3, 4).t()[1:] : offset 1
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let out = gather(&storage, 1, &[3, 3], &[1, 4]).unwrap();
        assert_eq!(out, bytes(&[1, 5, 9, 2, 6, 10, 3, 7, 11]));
    }

    #[test]
    fn column_slice_copies_rows() {
        // arange(12).reshape(3, 4)[:, 1:3]
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let out = gather(&storage, 1, &[3, 2], &[4, 1]).unwrap();
        assert_eq!(out, bytes(&[1, 2, 5, 6, 9, 10]));
    }

    #[test]
    fn expanded_and_scalar_and_empty() {
        let storage = bytes(&[7, 8]);
        assert_eq!(
            gather(&storage, 0, &[3, 2], &[0, 1]).unwrap(),
            bytes(&[7, 8, 7, 8, 7, 8])
        );
        assert_eq!(gather(&storage, 1, &[], &[]).unwrap(), bytes(&[8]));
        assert!(gather(&storage, 5, &[0, 3], &[3, 1]).unwrap().is_empty());
    }

    #[test]
    fn only_repeating_views_are_expanded() {
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let view = |offset, shape, stride| View::new(storage.len(), 2, offset, shape, stride);
        let expanded = view(0, &[4, 3], &[0, 1]).unwrap();
        assert!(expanded.is_expanded());
        assert_eq!((expanded.len(), expanded.span_bytes()), (24, 6));
        // Overlapping rows repeat elements without a stride of 0.
        assert!(view(0, &[3, 3], &[1, 1]).unwrap().is_expanded());
        for (offset, shape, stride) in [
            (0, &[3, 4][..], &[4, 1][..]),
            (1, &[3, 3], &[1, 4]),
            (1, &[3, 2], &[4, 1]),
            (0, &[0, 5], &[0, 0]),
        ] {
            assert!(!view(offset, shape, stride).unwrap().is_expanded());
        }
    }

    #[test]
    fn out_of_bounds_views_are_errors() {
        let storage = bytes(&[0, 1, 2, 3]);
        assert!(gather(&storage, 1, &[4], &[1]).is_err());
        assert!(gather(&storage, 0, &[2, 2], &[3, 1]).is_err());
        assert!(gather(&storage, 0, &[usize::MAX, 2], &[0, 1]).is_err());
        assert!(View::new(8, 2, 0, &[1 << 40], &[0]).is_ok());
        assert!(View::new(8, 2, 0, &[1 << 62, 4], &[0, 0]).is_err());
    }

    #[test]
    fn owned_whole_views_reuse_the_buffer() {
        let storage = bytes(&[0, 1, 2, 3]);
        let ptr = storage.as_ptr();
        let view = View::new(8, 2, 0, &[2, 2], &[2, 1]).unwrap();
        assert!(view.is_whole());
        let out = view.gather_owned(storage);
        assert_eq!(out.as_ptr(), ptr);
        let view = View::new(8, 2, 0, &[2, 2], &[1, 2]).unwrap();
        assert!(!view.is_whole());
        assert_eq!(view.gather_owned(out), bytes(&[0, 2, 1, 3]));
    }

    #[test]
    fn size_one_dims_may_have_any_stride() {
        let storage = bytes(&[0, 1, 2, 3]);
        let out = gather(&storage, 0, &[1, 2], &[usize::MAX, 2]).unwrap();
        assert_eq!(out, bytes(&[0, 2]));
        // Many size-1 dimensions around a strided one.
        let mut shape = vec![1; 64];
        let mut stride = vec![usize::MAX; 64];
        (shape[20], stride[20]) = (2, 2);
        (shape[40], stride[40]) = (2, 0);
        let out = gather(&storage, 1, &shape, &stride).unwrap();
        assert_eq!(out, bytes(&[1, 1, 3, 3]));
    }
}
