//! [`BucketedCollective`]: data-parallel gradient averaging over few large
//! messages instead of one per tensor.

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use crate::{Communicator, Error, ReduceOp, Result};

/// Default bucket size: what PyTorch DDP uses.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Averages, sums and broadcasts many tensors over any [`Communicator`]
/// in few large messages: what data-parallel training needs per step (the
/// worker adapts it to the learner's `GradientSync`).
///
/// Gradients are packed, in order, into buckets of about `bucket_bytes`
/// (tensors of one device and dtype; a tensor larger than a bucket is a bucket
/// of its own), each bucket is one flat tensor all-reduced with
/// [`ReduceOp::Average`] and copied back. `sum` reduces metric sums as f64, so
/// integer counts stay exact up to 2^53. `broadcast` sends rank 0's values.
///
/// The flat tensors are kept from one call to the next (gradients have the
/// same shapes every step), so a step allocates nothing; with a group of one
/// nothing is copied at all.
#[derive(Debug)]
pub struct BucketedCollective<C> {
    comm: C,
    bucket_bytes: usize,
    /// The flat tensor of each bucket, from the last call.
    flats: Vec<Tensor>,
}

impl<C: Communicator> BucketedCollective<C> {
    /// Wraps `comm` with buckets of [`DEFAULT_BUCKET_BYTES`].
    pub fn new(comm: C) -> Self {
        BucketedCollective {
            comm,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            flats: Vec::new(),
        }
    }

    /// Sets the bucket size in bytes (at least one tensor per bucket).
    pub fn with_bucket_bytes(mut self, bucket_bytes: usize) -> Self {
        self.bucket_bytes = bucket_bytes.max(1);
        self
    }

    /// The bucket size in bytes.
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    /// The wrapped communicator.
    pub fn communicator(&self) -> &C {
        &self.comm
    }

    /// The wrapped communicator, mutably.
    pub fn communicator_mut(&mut self) -> &mut C {
        &mut self.comm
    }

    /// Unwraps the communicator.
    pub fn into_inner(self) -> C {
        self.comm
    }

    /// Splits `tensors` into consecutive buckets (index ranges).
    fn buckets(&self, tensors: &[Tensor]) -> Result<Vec<Range<usize>>> {
        let mut buckets = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        let mut key: Option<(Device, Kind)> = None;
        for (i, t) in tensors.iter().enumerate() {
            if !t.defined() {
                return Err(Error::Tensor(format!(
                    "gradient sync: tensor {i} is undefined"
                )));
            }
            let kind = t.f_kind()?;
            let size = t.numel() * kind.elt_size_in_bytes();
            let this = (t.device(), kind);
            let fits = key == Some(this) && bytes + size <= self.bucket_bytes;
            if i > start && !fits {
                buckets.push(start..i);
                start = i;
                bytes = 0;
            }
            key = Some(this);
            bytes += size;
        }
        if start < tensors.len() {
            buckets.push(start..tensors.len());
        }
        Ok(buckets)
    }

    /// Runs `collective` on each bucket as one flat tensor, then copies the
    /// result back into the bucket's tensors. With a group of one there is
    /// nothing to exchange: the tensors are only checked.
    fn per_bucket(
        &mut self,
        tensors: &[Tensor],
        mut collective: impl FnMut(&mut C, &[Tensor]) -> Result<()>,
    ) -> Result<()> {
        let buckets = self.buckets(tensors)?;
        if self.comm.world_size() == 1 {
            return Ok(());
        }
        // A bucket on another device than the communicator's (CUDA
        // gradients over the CPU ring) is staged through a copy.
        let target = self.comm.device();
        for (index, range) in buckets.into_iter().enumerate() {
            let bucket = &tensors[range];
            if let [single] = bucket
                && single.is_contiguous()
                && single.device() == target
            {
                collective(&mut self.comm, std::slice::from_ref(single))?;
                continue;
            }
            let flat = self.flat(index, bucket, target)?;
            tch::no_grad(|| -> Result<()> {
                let mut offset = 0i64;
                for t in bucket {
                    let n = t.numel() as i64;
                    flat.f_narrow(0, offset, n)?
                        .f_view(t.size().as_slice())?
                        .f_copy_(t)?;
                    offset += n;
                }
                Ok(())
            })?;
            collective(&mut self.comm, std::slice::from_ref(&flat))?;
            tch::no_grad(|| -> Result<()> {
                let mut offset = 0i64;
                for t in bucket {
                    let n = t.numel() as i64;
                    let part = flat.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?;
                    t.shallow_clone().f_copy_(&part)?;
                    offset += n;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The flat tensor for bucket `index` (contents unspecified): the one of
    /// the last call when it still fits, else a new one.
    fn flat(&mut self, index: usize, bucket: &[Tensor], device: Device) -> Result<Tensor> {
        let kind = bucket[0].f_kind()?;
        let numel: i64 = bucket.iter().map(|t| t.numel() as i64).sum();
        if let Some(flat) = self.flats.get(index)
            && flat.numel() as i64 == numel
            && flat.f_kind()? == kind
            && flat.device() == device
        {
            return Ok(flat.shallow_clone());
        }
        let flat = Tensor::f_empty([numel], (kind, device))?;
        if index < self.flats.len() {
            self.flats[index] = flat.shallow_clone();
        } else {
            self.flats.resize_with(index, Tensor::new);
            self.flats.push(flat.shallow_clone());
        }
        Ok(flat)
    }

    /// Averages `tensors` (gradients) over all ranks, in place.
    pub fn average(&mut self, tensors: &[Tensor]) -> Result<()> {
        self.per_bucket(tensors, |comm, bucket| {
            comm.all_reduce(bucket, ReduceOp::Average)
        })
    }

    /// Sums `values` over all ranks, in place, as f64 (exact for integer
    /// counts up to 2^53).
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let t = Tensor::f_from_slice(values)?.f_to_device(self.comm.device())?;
        self.comm
            .all_reduce(std::slice::from_ref(&t), ReduceOp::Sum)?;
        t.f_to_device(Device::Cpu)?
            .f_copy_data(values, values.len())?;
        Ok(())
    }

    /// Overwrites `tensors` with rank 0's values on every rank.
    pub fn broadcast(&mut self, tensors: &[Tensor]) -> Result<()> {
        self.per_bucket(tensors, |comm, bucket| comm.broadcast(bucket, 0))
    }
}
