//! The TCP ring for CPU tensors: set-up (listen, connect, handshake), the
//! bandwidth-optimal all-reduce (reduce-scatter then all-gather) and a
//! pipelined broadcast.
//!
//! Each rank has two connections: it writes only to its successor
//! (`next`, rank `r + 1`) and reads only from its predecessor (`prev`, rank
//! `r − 1`). Writes go through a sender thread, started once per
//! communicator and fed by a channel that never blocks, so the thread that
//! reads never waits on a full socket buffer and two ranks cannot deadlock
//! writing to each other. Calls small enough that all their bytes fit in the
//! sockets' buffers at once ([`DIRECT_SEND_BYTES`]) write from the calling
//! thread instead: no hand-over, no thread to wake.
//!
//! Nothing is allocated per call once the communicator has seen its largest
//! call: a single contiguous f32 (f64) tensor is reduced in place in its own
//! memory; other calls are staged through a flat tensor kept by the
//! communicator; send buffers come back from the sender thread for reuse and
//! receive buffers are kept too.
//!
//! Wire format, all little-endian: a 16-byte header per call (op, element
//! kind, root, element count) so a rank that disagrees with its predecessor
//! fails with [`Error::Mismatch`], then the raw elements of each slice.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::memory::{Plain, as_bytes, as_bytes_mut, with_tensor_slice};
use crate::{Aborter, CollectiveConfig, Communicator, Error, ReduceOp, Result, check_root};

/// Longest session token the handshake carries.
pub(crate) const MAX_SESSION_BYTES: usize = 4096;

const HELLO_MAGIC: [u8; 4] = *b"CSR1";
const ACK_OK: u8 = 0;
const ACK_WRONG_SESSION: u8 = 1;
const ACK_WRONG_RANK: u8 = 2;
const ACK_WRONG_WORLD: u8 = 3;

/// How long an accepted connection may take to send its handshake.
const HANDSHAKE_READ_LIMIT: Duration = Duration::from_secs(5);

/// A call that sends at most this many bytes to its successor writes them
/// from the calling thread. Deadlock-free as long as twice this fits in what
/// a connection buffers (a rank starts a call only after reading all of the
/// previous one, so a link holds at most one call's bytes of each of two
/// calls): Linux buffers at least its default receive buffer (tcp_rmem,
/// 128 KiB, half of it payload) plus the send buffer's 16 KiB.
pub(crate) const DIRECT_SEND_BYTES: usize = 16 << 10;

/// A bound ring listener: its address can be published (to the coordinator,
/// a file) before the peers are known.
#[derive(Debug)]
pub struct RingListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl RingListener {
    /// Binds `addr` (`"127.0.0.1:0"` picks a free port).
    pub fn bind(addr: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::Setup(format!("cannot bind ring listener on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Setup(format!("ring listener on {addr} has no address: {e}")))?;
        Ok(RingListener { listener, addr })
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The two connections of a rank in the ring.
struct Links {
    /// To rank `r + 1`; only written.
    next: TcpStream,
    /// From rank `r − 1`; only read.
    prev: TcpStream,
    next_rank: usize,
    prev_rank: usize,
    next_addr: String,
    prev_addr: String,
}

impl Links {
    fn shutdown(&self) {
        let _ = self.next.shutdown(Shutdown::Both);
        let _ = self.prev.shutdown(Shutdown::Both);
    }
}

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
        let deadline = Instant::now() + config.timeout;
        let hello = Hello {
            rank,
            world_size,
            session: &config.session,
        };
        // Whichever side fails first stops the other; its error is the one
        // reported (the other side only says "stopped").
        let stop = AtomicBool::new(false);
        let (next, prev) = thread::scope(|s| {
            let connector = s.spawn(|| {
                let next = connect_next(
                    &peers[next_rank],
                    next_rank,
                    &hello,
                    &config,
                    deadline,
                    &stop,
                );
                if next.is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
                next
            });
            let prev = accept_prev(
                &listener.listener,
                &hello,
                prev_rank,
                &peers[prev_rank],
                &config,
                deadline,
                &stop,
            );
            if prev.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            let next = connector.join().unwrap_or_else(|_| {
                Err(Some(Error::Setup("ring connector thread panicked".into())))
            });
            match (next, prev) {
                (Ok(next), Ok(prev)) => Ok((next, prev)),
                (Err(Some(e)), _) | (_, Err(Some(e))) => Err(e),
                (Err(None), _) | (_, Err(None)) => Err(Error::Setup("ring set-up stopped".into())),
            }
        })?;
        for stream in [&next, &prev] {
            configure_data_stream(stream, config.timeout)
                .map_err(|e| Error::Setup(format!("cannot configure ring socket: {e}")))?;
        }
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
    fn all_reduce_group<E: WireElement>(
        &mut self,
        tensors: &[&Tensor],
        op: ReduceOp,
    ) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        if let [t] = tensors
            && let Some(done) =
                with_tensor_slice(t, |data: &mut [E]| self.all_reduce_flat(data, op))
        {
            return done;
        }
        let stage = self.stage::<E>(numel(tensors))?;
        gather(tensors, &stage)?;
        with_tensor_slice(&stage, |data: &mut [E]| self.all_reduce_flat(data, op))
            .unwrap_or_else(|| Err(unviewable_stage()))?;
        scatter(tensors, &stage)
    }

    /// Broadcasts one wire group, in place or through the staging tensor.
    fn broadcast_group<E: WireElement>(&mut self, tensors: &[&Tensor], root: usize) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        if let [t] = tensors
            && let Some(done) =
                with_tensor_slice(t, |data: &mut [E]| self.broadcast_flat(data, root))
        {
            return done;
        }
        let is_root = self.rank == root;
        let stage = self.stage::<E>(numel(tensors))?;
        if is_root {
            gather(tensors, &stage)?;
        }
        with_tensor_slice(&stage, |data: &mut [E]| self.broadcast_flat(data, root))
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

// ---------------------------------------------------------------------------
// Set-up.

struct Hello<'a> {
    rank: usize,
    world_size: usize,
    session: &'a str,
}

impl Hello<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.session.len());
        out.extend_from_slice(&HELLO_MAGIC);
        out.extend_from_slice(&(self.rank as u32).to_le_bytes());
        out.extend_from_slice(&(self.world_size as u32).to_le_bytes());
        out.extend_from_slice(&(self.session.len() as u32).to_le_bytes());
        out.extend_from_slice(self.session.as_bytes());
        out
    }
}

/// A handshake as received: (rank, world size, session).
fn read_hello(stream: &mut TcpStream) -> io::Result<(usize, usize, Vec<u8>)> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head)?;
    if head[..4] != HELLO_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a camshaft ring handshake",
        ));
    }
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (rank, world, len) = (word(4) as usize, word(8) as usize, word(12) as usize);
    if len > MAX_SESSION_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("session token of {len} bytes is too long"),
        ));
    }
    let mut session = vec![0u8; len];
    stream.read_exact(&mut session)?;
    Ok((rank, world, session))
}

enum Attempt {
    /// Worth trying again (peer not listening yet, connection dropped).
    Retry(String),
    /// The peer refused this rank: retrying cannot help.
    Fatal(Error),
}

fn connect_next(
    addr: &str,
    next_rank: usize,
    hello: &Hello<'_>,
    config: &CollectiveConfig,
    deadline: Instant,
    stop: &AtomicBool,
) -> std::result::Result<TcpStream, Option<Error>> {
    let mut last = String::from("no attempt made");
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(None);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Some(Error::Timeout {
                op: "ring connect",
                waiting_for: format!("ring peer {next_rank} ({addr}) to accept (last: {last})"),
                timeout: config.timeout,
            }));
        }
        match try_connect(addr, next_rank, hello, deadline) {
            Ok(stream) => return Ok(stream),
            Err(Attempt::Fatal(e)) => return Err(Some(e)),
            Err(Attempt::Retry(why)) => {
                last = why;
                thread::sleep(
                    config
                        .connect_retry
                        .min(deadline.saturating_duration_since(now)),
                );
            }
        }
    }
}

fn try_connect(
    addr: &str,
    next_rank: usize,
    hello: &Hello<'_>,
    deadline: Instant,
) -> std::result::Result<TcpStream, Attempt> {
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Attempt::Retry(format!("cannot resolve {addr}: {e}")))?
        .collect();
    let mut last = format!("{addr} resolved to no address");
    for sa in addrs {
        let mut stream =
            match TcpStream::connect_timeout(&sa, remaining().min(HANDSHAKE_READ_LIMIT)) {
                Ok(s) => s,
                Err(e) => {
                    last = format!("connect to {sa}: {e}");
                    continue;
                }
            };
        let exchange = |stream: &mut TcpStream| -> io::Result<[u8; 5]> {
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(remaining()))?;
            stream.set_read_timeout(Some(remaining()))?;
            stream.write_all(&hello.encode())?;
            let mut ack = [0u8; 5];
            stream.read_exact(&mut ack)?;
            Ok(ack)
        };
        let ack = match exchange(&mut stream) {
            Ok(ack) => ack,
            Err(e) => {
                last = format!("handshake with {sa}: {e}");
                continue;
            }
        };
        if ack[..4] != HELLO_MAGIC {
            last = format!("{sa} answered the handshake with something else");
            continue;
        }
        let why = match ack[4] {
            ACK_OK => return Ok(stream),
            ACK_WRONG_SESSION => "another session token",
            ACK_WRONG_RANK => "it expected another rank as its predecessor",
            ACK_WRONG_WORLD => "it is in a group of another size",
            _ => "an unknown reason",
        };
        return Err(Attempt::Fatal(Error::Setup(format!(
            "ring peer {next_rank} ({addr}) refused rank {} (world size {}): {why}",
            hello.rank, hello.world_size
        ))));
    }
    Err(Attempt::Retry(last))
}

fn accept_prev(
    listener: &TcpListener,
    me: &Hello<'_>,
    prev_rank: usize,
    prev_addr: &str,
    config: &CollectiveConfig,
    deadline: Instant,
    stop: &AtomicBool,
) -> std::result::Result<TcpStream, Option<Error>> {
    let setup = |e: io::Error| {
        Some(Error::Setup(format!(
            "ring listener of rank {}: {e}",
            me.rank
        )))
    };
    listener.set_nonblocking(true).map_err(setup)?;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(None);
        }
        match listener.accept() {
            Ok((mut stream, from)) => {
                let checked = (|| -> io::Result<Option<TcpStream>> {
                    stream.set_nonblocking(false)?;
                    let limit = deadline
                        .saturating_duration_since(Instant::now())
                        .clamp(Duration::from_millis(1), HANDSHAKE_READ_LIMIT);
                    stream.set_read_timeout(Some(limit))?;
                    stream.set_write_timeout(Some(limit))?;
                    let (rank, world, session) = read_hello(&mut stream)?;
                    let status = if session != me.session.as_bytes() {
                        ACK_WRONG_SESSION
                    } else if world != me.world_size {
                        ACK_WRONG_WORLD
                    } else if rank != prev_rank {
                        ACK_WRONG_RANK
                    } else {
                        ACK_OK
                    };
                    let mut ack = HELLO_MAGIC.to_vec();
                    ack.push(status);
                    stream.write_all(&ack)?;
                    if status != ACK_OK {
                        tracing::warn!(rank = me.rank, %from, claimed_rank = rank, status, "refused a ring connection");
                        return Ok(None);
                    }
                    stream.set_nodelay(true)?;
                    Ok(Some(stream))
                })();
                match checked {
                    Ok(Some(stream)) => return Ok(stream),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(rank = me.rank, %from, error = %e, "dropped a connection without a valid ring handshake");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Some(Error::Timeout {
                        op: "ring connect",
                        waiting_for: format!("ring peer {prev_rank} ({prev_addr}) to connect"),
                        timeout: config.timeout,
                    }));
                }
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(setup(e)),
        }
    }
}

fn configure_data_stream(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))
}

// ---------------------------------------------------------------------------
// Tensors to flat buffers and back.

/// The tensors of one call, split by the element type they travel as.
struct WireGroups<'a> {
    /// f32, f16, bf16: carried and summed as f32.
    single: Vec<&'a Tensor>,
    /// f64.
    double: Vec<&'a Tensor>,
}

impl<'a> WireGroups<'a> {
    fn split(tensors: &'a [Tensor], op: &str) -> Result<Self> {
        let mut groups = WireGroups {
            single: Vec::new(),
            double: Vec::new(),
        };
        for (i, t) in tensors.iter().enumerate() {
            if !t.defined() {
                return Err(Error::Tensor(format!("{op}: tensor {i} is undefined")));
            }
            let device = t.device();
            if device != Device::Cpu {
                return Err(Error::Tensor(format!(
                    "the TCP ring {op} needs CPU tensors, tensor {i} is on {device:?} (use NcclCommunicator for CUDA tensors)"
                )));
            }
            match t.f_kind()? {
                Kind::Float | Kind::Half | Kind::BFloat16 => groups.single.push(t),
                Kind::Double => groups.double.push(t),
                kind => {
                    return Err(Error::Tensor(format!(
                        "the TCP ring {op} supports f32, f16, bf16 and f64 tensors, tensor {i} is {kind:?}"
                    )));
                }
            }
        }
        Ok(groups)
    }
}

fn numel(tensors: &[&Tensor]) -> usize {
    tensors.iter().map(|t| t.numel()).sum()
}

/// Copies `tensors` (converted to the staging dtype) one after another into
/// the flat `stage`.
fn gather(tensors: &[&Tensor], stage: &Tensor) -> Result<()> {
    tch::no_grad(|| {
        let mut offset = 0;
        for t in tensors {
            let n = t.numel() as i64;
            if n == 0 {
                continue;
            }
            stage
                .f_narrow(0, offset, n)?
                .f_view(t.size().as_slice())?
                .f_copy_(t)?;
            offset += n;
        }
        Ok(())
    })
}

/// Copies the flat `stage` back into `tensors`, in place (and converted to
/// their dtype).
fn scatter(tensors: &[&Tensor], stage: &Tensor) -> Result<()> {
    // Parameters are leaves that require grad: an in-place copy into them is
    // only allowed with gradient tracking off.
    tch::no_grad(|| {
        let mut offset = 0;
        for t in tensors {
            let n = t.numel() as i64;
            if n == 0 {
                continue;
            }
            let src = stage.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?;
            t.shallow_clone().f_copy_(&src)?;
            offset += n;
        }
        Ok(())
    })
}

/// The staging tensors of a communicator, one per wire element type.
#[derive(Default)]
struct Staging {
    single: Option<Tensor>,
    double: Option<Tensor>,
}

/// Receive buffers of a communicator, kept across calls.
#[derive(Default)]
struct Scratch {
    /// Received values to add (reduce-scatter).
    single: Vec<f32>,
    double: Vec<f64>,
    /// Bytes of a call that writes from the calling thread.
    out: Vec<u8>,
}

// ---------------------------------------------------------------------------
// Wire elements.

/// An element type the ring carries (little-endian on the wire).
trait WireElement: Plain + Default + Send + Sync {
    const SIZE: usize;
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

fn slice_elems<E: WireElement>(slice_bytes: usize) -> usize {
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

// ---------------------------------------------------------------------------
// The data path.

const OP_ALL_REDUCE: u8 = 1;
const OP_BROADCAST: u8 = 2;

/// What every call announces to its successor, so disagreements surface as
/// errors instead of scrambled data.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Header {
    op: u8,
    kind: u8,
    root: u32,
    count: u64,
}

impl Header {
    fn new<E: WireElement>(op: u8, count: usize, root: usize) -> Self {
        Header {
            op,
            kind: E::CODE,
            root: root as u32,
            count: count as u64,
        }
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0] = self.op;
        out[1] = self.kind;
        out[4..8].copy_from_slice(&self.root.to_le_bytes());
        out[8..16].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Self {
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

    fn describe(&self) -> String {
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

const FAILED_NONE: u8 = 0;
const FAILED_SENDER: u8 = 1;
const FAILED_RECEIVER: u8 = 2;

/// What a rank's sender thread is asked to do.
enum SendJob {
    /// Write these bytes to the successor; the buffer comes back for reuse.
    Bytes(Vec<u8>),
    /// Report whether every write since the last flush succeeded.
    Flush,
}

/// A rank's sender thread, started once per communicator: it writes queued
/// buffers to the successor, so the thread that reads never waits on a full
/// socket buffer.
struct SenderThread {
    /// Dropped to stop the thread.
    jobs: Option<mpsc::Sender<SendJob>>,
    flushed: mpsc::Receiver<io::Result<()>>,
    /// Buffers the thread has written, for reuse.
    recycled: mpsc::Receiver<Vec<u8>>,
    /// Buffers handed back without being sent.
    spare: Vec<Vec<u8>>,
    /// Which side of the current call failed first (`FAILED_*`).
    failed: Arc<AtomicU8>,
    handle: Option<thread::JoinHandle<()>>,
}

impl SenderThread {
    /// Starts the thread writing to `next`; on a failed write it shuts
    /// `prev` down to wake the reading thread.
    fn start(next: TcpStream, prev: TcpStream, rank: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<SendJob>();
        let (report, flushed) = mpsc::channel::<io::Result<()>>();
        let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
        let failed = Arc::new(AtomicU8::new(FAILED_NONE));
        let flag = Arc::clone(&failed);
        let handle = thread::Builder::new()
            .name(format!("ring-send-{rank}"))
            .spawn(move || {
                // Once a write fails the ring is broken: later writes are
                // skipped and every flush reports the failure.
                let mut error: Option<io::Error> = None;
                for job in queue {
                    match job {
                        SendJob::Bytes(buf) => {
                            if error.is_none()
                                && let Err(e) = (&next).write_all(&buf)
                            {
                                if flag
                                    .compare_exchange(
                                        FAILED_NONE,
                                        FAILED_SENDER,
                                        Ordering::SeqCst,
                                        Ordering::SeqCst,
                                    )
                                    .is_ok()
                                {
                                    // Wake the receiving thread: this call is over.
                                    let _ = prev.shutdown(Shutdown::Both);
                                }
                                error = Some(e);
                            }
                            let _ = recycle.send(buf);
                        }
                        SendJob::Flush => {
                            let status = match &error {
                                None => Ok(()),
                                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                            };
                            let _ = report.send(status);
                        }
                    }
                }
            })?;
        Ok(SenderThread {
            jobs: Some(jobs),
            flushed,
            recycled,
            spare: Vec::new(),
            failed,
            handle: Some(handle),
        })
    }

    /// An empty buffer, reused when one is free.
    fn buffer(&mut self) -> Vec<u8> {
        let mut buf = self
            .recycled
            .try_recv()
            .ok()
            .or_else(|| self.spare.pop())
            .unwrap_or_default();
        buf.clear();
        buf
    }

    fn push(&mut self, job: SendJob) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| io::Error::other("ring sender thread stopped"))
    }

    /// Waits until everything queued so far is written; the first write
    /// error, if any.
    fn flush(&mut self) -> io::Result<()> {
        self.push(SendJob::Flush)?;
        self.flushed
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("ring sender thread stopped")))
    }

    /// Stops the thread once its queue is written (or its socket is shut
    /// down) and waits for it.
    fn stop(mut self) {
        self.jobs = None;
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::warn!("ring sender thread panicked");
        }
    }
}

/// One call's view of the links: bytes to send are collected in `out` and
/// handed to the sender thread a slice at a time (or, for a direct call,
/// written before each read); receives are read here.
struct Pipe<'a> {
    links: &'a Links,
    sender: &'a mut SenderThread,
    scratch: &'a mut Scratch,
    /// Bytes not yet handed over.
    out: Vec<u8>,
    /// Write from this thread instead of the sender thread.
    direct: bool,
    /// Hand `out` over once it holds this many bytes.
    flush_at: usize,
    op: &'static str,
    timeout: Duration,
    rank: usize,
}

impl<'a> Pipe<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        links: &'a Links,
        sender: &'a mut SenderThread,
        scratch: &'a mut Scratch,
        direct: bool,
        slice_bytes: usize,
        op: &'static str,
        timeout: Duration,
        rank: usize,
    ) -> Self {
        let mut out = if direct {
            std::mem::take(&mut scratch.out)
        } else {
            sender.buffer()
        };
        out.clear();
        Pipe {
            links,
            sender,
            scratch,
            out,
            direct,
            flush_at: if direct { usize::MAX } else { slice_bytes },
            op,
            timeout,
            rank,
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn send<E: WireElement>(&mut self, src: &[E]) -> Result<()> {
        E::encode(src, &mut self.out);
        if self.out.len() >= self.flush_at {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands over (or writes) what `send` collected.
    fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.direct {
            let links = self.links;
            (&links.next).write_all(&self.out).map_err(|e| {
                peer_error(e, links.next_rank, &links.next_addr, self.op, self.timeout)
            })?;
            self.out.clear();
            return Ok(());
        }
        let fresh = self.sender.buffer();
        let buf = std::mem::replace(&mut self.out, fresh);
        // Fails only when the sender thread is gone, which `flush` reports.
        self.sender
            .push(SendJob::Bytes(buf))
            .map_err(|_| Error::Broken("ring sender stopped".into()))
    }

    /// Reads `dst.len()` values from the predecessor into `dst`.
    fn recv_into<E: WireElement>(&mut self, dst: &mut [E]) -> Result<()> {
        self.flush()?;
        self.read(as_bytes_mut(dst))?;
        E::from_wire(dst);
        Ok(())
    }

    /// Reads `dst.len()` values from the predecessor and adds them to `dst`.
    fn recv_add<E: WireElement>(&mut self, dst: &mut [E]) -> Result<()> {
        self.flush()?;
        let mut buf = std::mem::take(E::scratch(self.scratch));
        buf.resize(dst.len(), E::default());
        let read = self.read(as_bytes_mut(&mut buf));
        if read.is_ok() {
            E::from_wire(&mut buf);
            E::add(dst, &buf);
        }
        *E::scratch(self.scratch) = buf;
        read
    }

    fn read(&mut self, bytes: &mut [u8]) -> Result<()> {
        let links = self.links;
        (&links.prev)
            .read_exact(bytes)
            .map_err(|e| peer_error(e, links.prev_rank, &links.prev_addr, self.op, self.timeout))
    }

    /// Reads the predecessor's header and checks it announces `mine`.
    fn expect_header(&mut self, mine: Header) -> Result<()> {
        self.flush()?;
        let mut head = [0u8; 16];
        self.read(&mut head)?;
        let theirs = Header::decode(&head);
        if theirs != mine {
            return Err(Error::Mismatch(format!(
                "ring peer {} ({}) called {} while rank {} called {}",
                self.links.prev_rank,
                self.links.prev_addr,
                theirs.describe(),
                self.rank,
                mine.describe()
            )));
        }
        Ok(())
    }
}

impl Drop for Pipe<'_> {
    fn drop(&mut self) {
        // Keep the buffer for the next call.
        let out = std::mem::take(&mut self.out);
        if self.direct {
            self.scratch.out = out;
        } else {
            self.sender.spare.push(out);
        }
    }
}

/// Turns an I/O error on a link into the error the caller sees.
fn peer_error(e: io::Error, rank: usize, addr: &str, op: &'static str, timeout: Duration) -> Error {
    let what = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            return Error::Timeout {
                op,
                waiting_for: format!("ring peer {rank} ({addr})"),
                timeout,
            };
        }
        io::ErrorKind::UnexpectedEof => "closed the connection".to_string(),
        io::ErrorKind::ConnectionReset => "reset the connection".to_string(),
        io::ErrorKind::BrokenPipe => "closed the connection (broken pipe)".to_string(),
        _ => format!("failed: {e}"),
    };
    Error::PeerLost {
        rank,
        addr: addr.to_string(),
        op,
        what,
    }
}

/// Ring all-reduce (sum) of `data` in place: `n − 1` reduce-scatter steps,
/// then `n − 1` all-gather steps. At step `t` this rank sends chunk
/// `r − t` and receives chunk `r − t − 1`, which it sends at step `t + 1`;
/// after the reduce-scatter it holds the full sum of chunk `r + 1`.
fn all_reduce_ring<E: WireElement>(
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
fn broadcast_ring<E: WireElement>(
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
