//! Gathering a strided view of a storage into contiguous row-major bytes.

/// Largest contiguous copy (bytes) of a tensor that is bigger than its own
/// storage. Only stride-0 (expanded) tensors can be; a file that claims a
/// huge expansion of a tiny storage must not make us allocate without bound.
pub(crate) const MAX_EXPANDED_BYTES: usize = 1 << 30;

/// Copies the elements of the view (`offset`, `shape`, `stride`, all in
/// elements of `elem` bytes) of `storage` into a new contiguous buffer.
///
/// Every size is checked against `storage` before anything is allocated;
/// the error says what does not fit.
pub(crate) fn gather(
    storage: &[u8],
    elem: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Result<Vec<u8>, String> {
    debug_assert_eq!(shape.len(), stride.len());
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let storage_elems = storage.len() / elem;
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
    let out_len = numel
        .checked_mul(elem)
        .filter(|&n| n <= storage.len().max(MAX_EXPANDED_BYTES))
        .ok_or_else(|| {
            format!(
                "shape {shape:?} expands a storage of {storage_elems} elements beyond \
                 {MAX_EXPANDED_BYTES} bytes"
            )
        })?;
    debug_assert!(last < storage_elems);

    if is_contiguous(shape, stride) {
        let start = offset * elem;
        return Ok(storage[start..start + out_len].to_vec());
    }

    let mut out = Vec::with_capacity(out_len);
    let ndim = shape.len();
    // `ndim >= 1` here: a 0-dim view is always contiguous.
    let (inner_size, inner_stride) = (shape[ndim - 1], stride[ndim - 1]);
    let outer = &shape[..ndim - 1];
    let mut index = vec![0usize; outer.len()];
    let mut base = offset;
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
                debug_assert_eq!(out.len(), out_len);
                return Ok(out);
            }
            dim -= 1;
            index[dim] += 1;
            // Wrapping: a size-1 dimension may carry any stride, and `base`
            // can step past the view before it is wound back; only indices
            // inside the view (checked above) are ever read.
            base = base.wrapping_add(stride[dim]);
            if index[dim] < outer[dim] {
                break;
            }
            base = base.wrapping_sub(stride[dim].wrapping_mul(index[dim]));
            index[dim] = 0;
        }
    }
}

/// Like [`gather`], for the last view of `storage`: when the view is the
/// whole storage in order, the buffer itself is returned, uncopied.
pub(crate) fn gather_owned(
    storage: Vec<u8>,
    elem: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Result<Vec<u8>, String> {
    let whole = offset == 0
        && is_contiguous(shape, stride)
        && shape
            .iter()
            .try_fold(elem, |n, &d| n.checked_mul(d))
            .is_some_and(|len| len == storage.len());
    if whole {
        Ok(storage)
    } else {
        gather(&storage, elem, offset, shape, stride)
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
        expected *= d;
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

    #[test]
    fn contiguous_with_offset() {
        let storage = bytes(&[0, 1, 2, 3, 4, 5]);
        let out = gather(&storage, 2, 2, &[2, 2], &[2, 1]).unwrap();
        assert_eq!(out, bytes(&[2, 3, 4, 5]));
    }

    #[test]
    fn transposed() {
        // arange(12).reshape(3, 4).t()
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let out = gather(&storage, 2, 0, &[4, 3], &[1, 4]).unwrap();
        assert_eq!(out, bytes(&[0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]));
    }

    #[test]
    fn sliced_rows_of_a_transpose() {
        // arange(12).reshape(3, 4).t()[1:] : offset 1
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let out = gather(&storage, 2, 1, &[3, 3], &[1, 4]).unwrap();
        assert_eq!(out, bytes(&[1, 5, 9, 2, 6, 10, 3, 7, 11]));
    }

    #[test]
    fn column_slice_copies_rows() {
        // arange(12).reshape(3, 4)[:, 1:3]
        let storage = bytes(&(0..12).collect::<Vec<_>>());
        let out = gather(&storage, 2, 1, &[3, 2], &[4, 1]).unwrap();
        assert_eq!(out, bytes(&[1, 2, 5, 6, 9, 10]));
    }

    #[test]
    fn expanded_and_scalar_and_empty() {
        let storage = bytes(&[7, 8]);
        assert_eq!(
            gather(&storage, 2, 0, &[3, 2], &[0, 1]).unwrap(),
            bytes(&[7, 8, 7, 8, 7, 8])
        );
        assert_eq!(gather(&storage, 2, 1, &[], &[]).unwrap(), bytes(&[8]));
        assert!(gather(&storage, 2, 5, &[0, 3], &[3, 1]).unwrap().is_empty());
    }

    #[test]
    fn out_of_bounds_views_are_errors() {
        let storage = bytes(&[0, 1, 2, 3]);
        assert!(gather(&storage, 2, 1, &[4], &[1]).is_err());
        assert!(gather(&storage, 2, 0, &[2, 2], &[3, 1]).is_err());
        assert!(gather(&storage, 2, 0, &[usize::MAX, 2], &[0, 1]).is_err());
        assert!(gather(&storage, 2, 0, &[1 << 40], &[0]).is_err());
    }

    #[test]
    fn owned_whole_views_reuse_the_buffer() {
        let storage = bytes(&[0, 1, 2, 3]);
        let ptr = storage.as_ptr();
        let out = gather_owned(storage, 2, 0, &[2, 2], &[2, 1]).unwrap();
        assert_eq!(out.as_ptr(), ptr);
        let out = gather_owned(out, 2, 0, &[2, 2], &[1, 2]).unwrap();
        assert_eq!(out, bytes(&[0, 2, 1, 3]));
    }

    #[test]
    fn size_one_dims_may_have_any_stride() {
        let storage = bytes(&[0, 1, 2, 3]);
        let out = gather(&storage, 2, 0, &[1, 2], &[usize::MAX, 2]).unwrap();
        assert_eq!(out, bytes(&[0, 2]));
    }
}
