//! Collectives for data-parallel training: what ranks use to agree on
//! gradients, metrics and weights.
//!
//! - [`Communicator`]: the interface every backend implements — `all_reduce`
//!   (sum or average, in place), `broadcast` (in place, from a root rank) and
//!   `barrier`, over `tch` tensors.
//! - [`RingCommunicator`]: CPU tensors over TCP. Each rank binds a
//!   [`RingListener`] (so it can report its address before it knows its
//!   peers), then [`RingCommunicator::connect`] links rank `r` to rank
//!   `(r + 1) % N` and accepts rank `(r - 1) % N`, after a handshake that
//!   checks rank, world size and a session token. All-reduce is the
//!   bandwidth-optimal ring: a reduce-scatter then an all-gather over `N`
//!   chunks of the flat buffer, pipelined in slices of
//!   [`CollectiveConfig::slice_bytes`] with a sender thread (started once per
//!   communicator), so each rank sends and receives `2·(N−1)/N` of the
//!   buffer. A single contiguous f32 or f64 tensor is reduced in place in its
//!   own memory, other calls through a staging buffer the communicator
//!   keeps: after the first call of a size, calls allocate nothing.
//!   Broadcast passes the buffer once around the ring. Results are bitwise
//!   identical on every rank.
//! - [`NcclCommunicator`]: CUDA tensors through NCCL, which [`Nccl::load`]
//!   opens at run time (`CAMSHAFT_NCCL_LIB`, `libnccl.so.2`, `libnccl.so`):
//!   the crate never links it, builds without CUDA, and a missing library or
//!   GPU is an [`Error`], never a panic. NCCL runs on the legacy default stream,
//!   libtorch's current stream unless code changes it.
//! - [`sweep`]: an all-reduce bandwidth sweep over any communicator, with
//!   nccl-tests' `#wrong` check (what `ctl bench allreduce` runs on a
//!   cluster's ranks); its settings and `algbw`/`busbw` definitions live in
//!   `camshaft_spec::sweep`, which needs no libtorch.
//! - [`BucketedCollective`]: what data-parallel training needs per step —
//!   gradients flattened into buckets of about 25 MiB, averaged per bucket,
//!   metric sums in f64, weights broadcast from rank 0. The worker adapts it
//!   to the learner's `GradientSync`; this crate depends on nothing of
//!   Camshaft's that links images or models.
//!
//! # Invariants
//!
//! - Every rank makes the same calls in the same order with tensors of the same
//!   shapes and dtypes. The ring checks op, dtype, element count and root
//!   against its predecessor and fails with [`Error::Mismatch`] instead of
//!   mixing up data.
//! - No call blocks forever: a call that makes no progress for
//!   [`CollectiveConfig::timeout`] fails with [`Error::Timeout`], and a peer
//!   that dies makes its neighbours fail at once (the ring closes both its
//!   sockets on any failure, so the failure travels around the ring).
//! - An [`Aborter`] (from [`Communicator::aborter`]) can be used from any
//!   thread: the pending call and every later one fail fast with
//!   [`Error::Aborted`] (ring: both sockets shut down; NCCL: `ncclCommAbort`).
//! - After any failure the communicator is unusable ([`Error::Broken`]); a
//!   training group is re-formed, not repaired.
//!
//! # Example
//!
//! Two ranks as threads on loopback, each summing a tensor:
//!
//! ```no_run,standalone_crate
//! use camshaft_collective::{CollectiveConfig, Communicator, ReduceOp, RingCommunicator, RingListener};
//! use tch::Tensor;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listeners = [RingListener::bind("127.0.0.1:0")?, RingListener::bind("127.0.0.1:0")?];
//! let peers: Vec<String> = listeners.iter().map(|l| l.local_addr().to_string()).collect();
//! let handles: Vec<_> = listeners
//!     .into_iter()
//!     .enumerate()
//!     .map(|(rank, listener)| {
//!         let peers = peers.clone();
//!         std::thread::spawn(move || -> camshaft_collective::Result<f64> {
//!             let mut comm =
//!                 RingCommunicator::connect(listener, rank, 2, peers, CollectiveConfig::default())?;
//!             let t = Tensor::from_slice(&[rank as f32 + 1.0; 4]);
//!             comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)?;
//!             Ok(t.double_value(&[0]))
//!         })
//!     })
//!     .collect();
//! for h in handles {
//!     assert_eq!(h.join().expect("rank thread panicked")?, 3.0);
//! }
//! # Ok(())
//! # }
//! ```

mod abort;
mod bucketed;
mod error;
mod memory;
mod nccl;
mod ring;
pub mod sweep;

use std::time::Duration;

use tch::{Device, Tensor};

pub use abort::Aborter;
pub use bucketed::{BucketedCollective, DEFAULT_BUCKET_BYTES};
pub use error::{Error, Result};
pub use nccl::{Nccl, NcclCommunicator, NcclUniqueId, nccl_available};
pub use ring::{RingCommunicator, RingListener};

/// How values are combined by [`Communicator::all_reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum over ranks.
    Sum,
    /// Element-wise sum divided by the world size.
    Average,
}

/// Settings shared by the backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveConfig {
    /// How long a call (or the ring's set-up) may wait without progress from
    /// a peer before it fails with [`Error::Timeout`].
    pub timeout: Duration,
    /// Token every ring connection must present: connections from another
    /// job or session are refused.
    pub session: String,
    /// Ring pipeline slice: a chunk is sent in pieces of this many bytes, so
    /// receiving, reducing and forwarding overlap.
    pub slice_bytes: usize,
    /// Pause between ring connection attempts while a peer is not listening
    /// yet.
    pub connect_retry: Duration,
}

impl Default for CollectiveConfig {
    fn default() -> Self {
        CollectiveConfig {
            timeout: Duration::from_secs(300),
            session: "camshaft".to_string(),
            slice_bytes: 1 << 20,
            connect_retry: Duration::from_millis(50),
        }
    }
}

impl CollectiveConfig {
    /// The default configuration with another timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        CollectiveConfig {
            timeout,
            ..CollectiveConfig::default()
        }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() {
            return Err(Error::Config("timeout must be positive".into()));
        }
        if self.slice_bytes < 8 {
            return Err(Error::Config(format!(
                "slice_bytes must be at least 8, got {}",
                self.slice_bytes
            )));
        }
        if self.session.len() > ring::MAX_SESSION_BYTES {
            return Err(Error::Config(format!(
                "session token is {} bytes, at most {} allowed",
                self.session.len(),
                ring::MAX_SESSION_BYTES
            )));
        }
        Ok(())
    }
}

/// A group of ranks that reduce and broadcast tensors together.
///
/// Every rank calls the same methods in the same order with tensors of the
/// same shapes and dtypes; calls are in place.
pub trait Communicator: Send {
    /// This rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks in the group.
    fn world_size(&self) -> usize;
    /// Where this communicator's tensors live (CPU for the ring, a CUDA
    /// device for NCCL).
    fn device(&self) -> Device;
    /// Reduces `tensors` over all ranks, in place, with `op`.
    fn all_reduce(&mut self, tensors: &[Tensor], op: ReduceOp) -> Result<()>;
    /// Overwrites `tensors` with rank `root`'s values, in place.
    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()>;
    /// Returns once every rank has called `barrier`.
    fn barrier(&mut self) -> Result<()>;
    /// A handle that aborts this communicator from any thread.
    fn aborter(&self) -> Aborter;
}

impl<C: Communicator + ?Sized> Communicator for Box<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn device(&self) -> Device {
        (**self).device()
    }
    fn all_reduce(&mut self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        (**self).all_reduce(tensors, op)
    }
    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
        (**self).broadcast(tensors, root)
    }
    fn barrier(&mut self) -> Result<()> {
        (**self).barrier()
    }
    fn aborter(&self) -> Aborter {
        (**self).aborter()
    }
}

/// Checks `root` against the world size.
fn check_root(root: usize, world_size: usize) -> Result<()> {
    if root >= world_size {
        return Err(Error::Config(format!(
            "broadcast root {root} is not a rank of a group of {world_size}"
        )));
    }
    Ok(())
}
