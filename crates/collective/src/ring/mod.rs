//! The TCP ring for CPU tensors: set-up (listen, connect, handshake), the
//! bandwidth-optimal all-reduce (reduce-scatter then all-gather) and a
//! pipelined broadcast.
//!
//! Each rank has two connections: it writes only to its successor
//! (`next`, rank `r + 1`) and reads only from its predecessor (`prev`, rank
//! `r − 1`). The modules, in the order a call meets them:
//!
//! - [`handshake`]: [`RingListener`] and the hello that links a rank to its
//!   neighbours (session token, rank and world size checked).
//! - [`staging`]: a call's tensors split by wire element type, and the flat
//!   staging tensor for those that cannot be reduced in place.
//! - [`wire`]: the per-call header and the element encoding.
//! - [`pipe`]: the links, the sender thread and one call's [`pipe::Pipe`].
//! - [`algorithm`]: the ring all-reduce and broadcast over a pipe.
//!
//! Nothing is allocated per call once the communicator has seen its largest
//! call: a single contiguous f32 (f64) tensor is reduced in place in its own
//! memory; other calls are staged through a flat tensor kept by the
//! communicator; send buffers come back from the sender thread for reuse and
//! receive buffers are kept too.

mod algorithm;
mod handshake;
mod pipe;
mod staging;
mod wire;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;

use tch::{Device, Tensor};

use crate::memory::with_tensor_slice;
use crate::{Aborter, CollectiveConfig, Communicator, Error, ReduceOp, Result, check_root};
use algorithm::{all_reduce_ring, broadcast_ring, slice_elems};
pub(crate) use handshake::MAX_SESSION_BYTES;
pub use handshake::RingListener;
use pipe::{
    DIRECT_SEND_BYTES, FAILED_NONE, FAILED_RECEIVER, FAILED_SENDER, Links, Pipe, Scratch,
    SenderThread, peer_error,
};
use staging::{Staging, WireGroups, gather, numel, scatter};
use wire::WireElement;

/// A ring all-reduce over TCP for CPU tensors (see the crate doc).
///
/// f32, f16 and bf16 tensors travel and are summed as f32, f64 tensors as
/// f64, so sums of integers are exact up to 2^24 (f32) and 2^53 (f64).
pub struct RingCommunicator {
    rank: usize,
    world_size: usize,
    config: CollectiveConfig,
    /// `None` for a group of one.
    links: Option<Links>,
    /// Writes to `links.next`; `None` for a group of one.
    sender: Option<SenderThread>,
    /// Receive buffers, kept across calls.
    scratch: Scratch,
    /// Flat tensors that calls which cannot be reduced in place are copied
    /// through, kept across calls.
    staging: Staging,
    aborter: Aborter,
    /// Why the communicator can no longer be used.
    broken: Option<String>,
}

impl std::fmt::Debug for RingCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingCommunicator")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("next", &self.links.as_ref().map(|l| &l.next_addr))
            .field("prev", &self.links.as_ref().map(|l| &l.prev_addr))
            .field("broken", &self.broken)
            .finish()
    }
}

impl RingCommunicator {
    /// Joins the ring as `rank` of `world_size`: connects to rank
    /// `(rank + 1) % world_size` at `peers[rank + 1]` (retrying until it
    /// listens) and accepts rank `rank − 1` on `listener`, refusing
    /// connections with another session token, rank or world size. Fails with
    /// [`Error::Timeout`] when the ring is not complete within
    /// `config.timeout`.
    pub fn connect(
        listener: RingListener,
        rank: usize,
        world_size: usize,
        peers: Vec<String>,
        config: CollectiveConfig,
    ) -> Result<Self> {
        config.validate()?;
        if rank >= world_size {
            return Err(Error::Config(format!(
                "rank {rank} is not a rank of a group of {world_size}"
            )));
        }
        if peers.len() != world_size {
            return Err(Error::Config(format!(
                "a ring of {world_size} ranks needs {world_size} peer addresses, got {}",
                peers.len()
            )));
        }
        if world_size == 1 {
            return Ok(RingCommunicator {
                rank,
                world_size,
                config,
                links: None,
                sender: None,
                scratch: Scratch::default(),
                staging: Staging::default(),
                aborter: Aborter::new(|| {}),
                broken: None,
            });
        }
        let next_rank = (rank + 1) % world_size;
        let prev_rank = (rank + world_size - 1) % world_size;
        let (next, prev) = handshake::link(&listener, rank, world_size, &peers, &config)?;
        let clone = |s: &TcpStream| {
            s.try_clone()
                .map_err(|e| Error::Setup(format!("cannot clone ring socket: {e}")))
        };
        let sender = SenderThread::start(clone(&next)?, clone(&prev)?, rank)
            .map_err(|e| Error::Setup(format!("cannot start the ring sender thread: {e}")))?;
        let clones = [clone(&next)?, clone(&prev)?];
        let aborter = Aborter::new(move || {
            for s in &clones {
                let _ = s.shutdown(Shutdown::Both);
            }
        });
        tracing::debug!(rank, world_size, next = %peers[next_rank], prev = %peers[prev_rank], "ring connected");
        Ok(RingCommunicator {
            rank,
            world_size,
            links: Some(Links {
                next,
                prev,
                next_rank,
                prev_rank,
                next_addr: peers[next_rank].clone(),
                prev_addr: peers[prev_rank].clone(),
            }),
            sender: Some(sender),
            scratch: Scratch::default(),
            staging: Staging::default(),
            config,
            aborter,
            broken: None,
        })
    }

    fn usable(&self) -> Result<()> {
        if self.aborter.is_aborted() {
            return Err(Error::Aborted);
        }
        match &self.broken {
            Some(reason) => Err(Error::Broken(reason.clone())),
            None => Ok(()),
        }
    }

    /// Runs one collective on the links, sending `wire_bytes` bytes in all
    /// to the successor; any failure breaks the ring (both sockets shut
    /// down, so the neighbours fail at once too).
    fn run(
        &mut self,
        op: &'static str,
        wire_bytes: usize,
        body: impl FnOnce(&mut Pipe<'_>) -> Result<()>,
    ) -> Result<()> {
        self.usable()?;
        let (Some(links), Some(sender)) = (self.links.as_ref(), self.sender.as_mut()) else {
            return Ok(());
        };
        let direct = wire_bytes <= DIRECT_SEND_BYTES;
        let timeout = self.config.timeout;
        sender.failed.store(FAILED_NONE, Ordering::SeqCst);
        let received = {
            let mut pipe = Pipe::new(
                links,
                sender,
                &mut self.scratch,
                direct,
                self.config.slice_bytes,
                op,
                timeout,
                self.rank,
            );
            body(&mut pipe).and_then(|()| pipe.flush())
        };
        if received.is_err() {
            let _ = sender.failed.compare_exchange(
                FAILED_NONE,
                FAILED_RECEIVER,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            // Unblock a sender stuck on a full socket.
            links.shutdown();
        }
        let sent = if direct { Ok(()) } else { sender.flush() };
        let result = match (received, sent) {
            (Ok(()), Ok(())) => Ok(()),
            (_, Err(e)) if sender.failed.load(Ordering::SeqCst) == FAILED_SENDER => Err(
                peer_error(e, links.next_rank, &links.next_addr, op, timeout),
            ),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(peer_error(
                e,
                links.next_rank,
                &links.next_addr,
                op,
                timeout,
            )),
        };
        if let Err(e) = result {
            links.shutdown();
            let e = if self.aborter.is_aborted() {
                Error::Aborted
            } else {
                e
            };
            self.broken = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    fn all_reduce_flat<E: WireElement>(&mut self, data: &mut [E], op: ReduceOp) -> Result<()> {
        let (rank, n) = (self.rank, self.world_size);
        let slice = slice_elems::<E>(self.config.slice_bytes);
        let wire_bytes = 16 + 2 * (n - 1) * data.len().div_ceil(n) * E::SIZE;
        self.run("all-reduce", wire_bytes, |pipe| {
            all_reduce_ring(pipe, data, rank, n, slice)
        })?;
        if op == ReduceOp::Average {
            E::divide(data, n);
        }
        Ok(())
    }

    fn broadcast_flat<E: WireElement>(&mut self, data: &mut [E], root: usize) -> Result<()> {
        let (rank, n) = (self.rank, self.world_size);
        let slice = slice_elems::<E>(self.config.slice_bytes);
        let wire_bytes = 16 + data.len() * E::SIZE;
        self.run("broadcast", wire_bytes, |pipe| {
            broadcast_ring(pipe, data, rank, n, root, slice)
        })
    }

    /// A flat staging tensor of `numel` elements of `E` (contents
    /// unspecified), grown as needed and kept for later calls.
    fn stage<E: WireElement>(&mut self, numel: usize) -> Result<Tensor> {
        let slot = E::staging(&mut self.staging);
        let stage = match slot {
            Some(stage) if stage.numel() >= numel => stage,
            _ => slot.insert(tch::no_grad(|| {
                Tensor::f_empty([numel as i64], (E::KIND, Device::Cpu))
            })?),
        };
        Ok(stage.f_narrow(0, 0, numel as i64)?)
    }

    /// All-reduces one wire group: in place when it is a single tensor
    /// the ring can view, else through the staging tensor.
    #[allow(unsafe_code)]
    fn all_reduce_group<E: WireElement>(
        &mut self,
        tensors: &[&Tensor],
        op: ReduceOp,
    ) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        // SAFETY: a caller's tensor: `Communicator` calls are in place, and
        // like every in-place libtorch operation (which tch exposes as safe
        // functions) they require that no other handle to the tensor's
        // storage is used while the call runs; this call's own code uses
        // none (the ring writes only through the slice).
        if let [t] = tensors
            && let Some(done) =
                unsafe { with_tensor_slice(t, |data: &mut [E]| self.all_reduce_flat(data, op)) }
        {
            return done;
        }
        let stage = self.stage::<E>(numel(tensors))?;
        gather(tensors, &stage)?;
        // SAFETY: the staging tensor belongs to this communicator, which
        // `&mut self` holds: its only other handle, the one kept in
        // `self.staging`, is not used until the next call.
        unsafe { with_tensor_slice(&stage, |data: &mut [E]| self.all_reduce_flat(data, op)) }
            .unwrap_or_else(|| Err(unviewable_stage()))?;
        scatter(tensors, &stage)
    }

    /// Broadcasts one wire group, in place or through the staging tensor.
    #[allow(unsafe_code)]
    fn broadcast_group<E: WireElement>(&mut self, tensors: &[&Tensor], root: usize) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        // SAFETY: as in `all_reduce_group`.
        if let [t] = tensors
            && let Some(done) =
                unsafe { with_tensor_slice(t, |data: &mut [E]| self.broadcast_flat(data, root)) }
        {
            return done;
        }
        let is_root = self.rank == root;
        let stage = self.stage::<E>(numel(tensors))?;
        if is_root {
            gather(tensors, &stage)?;
        }
        // SAFETY: as in `all_reduce_group`: the communicator's own staging.
        unsafe { with_tensor_slice(&stage, |data: &mut [E]| self.broadcast_flat(data, root)) }
            .unwrap_or_else(|| Err(unviewable_stage()))?;
        if !is_root {
            scatter(tensors, &stage)?;
        }
        Ok(())
    }
}

fn unviewable_stage() -> Error {
    Error::Tensor("the ring's staging tensor cannot be viewed in place".into())
}

impl Drop for RingCommunicator {
    fn drop(&mut self) {
        // The aborter keeps duplicated descriptors: shut the sockets down so
        // the neighbours see the connection end now, not when it is dropped
        // (and a sender thread stuck in a write returns).
        if let Some(links) = &self.links {
            links.shutdown();
        }
        if let Some(sender) = self.sender.take() {
            sender.stop();
        }
    }
}

impl Communicator for RingCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn all_reduce(&mut self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        self.usable()?;
        let groups = WireGroups::split(tensors, "all-reduce")?;
        if self.world_size == 1 {
            return Ok(());
        }
        self.all_reduce_group::<f32>(&groups.single, op)?;
        self.all_reduce_group::<f64>(&groups.double, op)
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
        self.usable()?;
        check_root(root, self.world_size)?;
        let groups = WireGroups::split(tensors, "broadcast")?;
        if self.world_size == 1 {
            return Ok(());
        }
        self.broadcast_group::<f32>(&groups.single, root)?;
        self.broadcast_group::<f64>(&groups.double, root)
    }

    fn barrier(&mut self) -> Result<()> {
        // One element per rank, so every step of the ring carries data: the
        // all-gather cannot finish anywhere before every rank has sent.
        let mut buf = vec![0.0f32; self.world_size];
        let (rank, n) = (self.rank, self.world_size);
        self.run("barrier", 16 + 2 * 4 * n, |pipe| {
            all_reduce_ring(pipe, &mut buf, rank, n, 1)
        })
    }

    fn aborter(&self) -> Aborter {
        self.aborter.clone()
    }
}
