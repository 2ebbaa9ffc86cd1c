//! The TCP ring for CPU tensors: set-up (listen, connect, handshake), the
//! bandwidth-optimal all-reduce (reduce-scatter then all-gather) and a
//! pipelined broadcast.
//!
//! Each rank has two connections: it writes only to its successor
//! (`next`, rank `r + 1`) and reads only from its predecessor (`prev`, rank
//! `r − 1`). Writes go through a sender thread fed by a channel that never
//! blocks, so the thread that reads never waits on a full socket buffer and
//! two ranks cannot deadlock writing to each other.
//!
//! Wire format, all little-endian: a 16-byte header per call (op, element
//! kind, root, element count) so a rank that disagrees with its predecessor
//! fails with [`Error::Mismatch`], then the raw elements of each slice.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

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
        let clones = [next.try_clone(), prev.try_clone()];
        let clones: Vec<TcpStream> = clones
            .into_iter()
            .collect::<io::Result<_>>()
            .map_err(|e| Error::Setup(format!("cannot clone ring socket: {e}")))?;
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

    /// Runs one collective on the links; any failure breaks the ring (both
    /// sockets shut down, so the neighbours fail at once too).
    fn run(
        &mut self,
        op: &'static str,
        body: impl FnOnce(&mut Pipe<'_>) -> Result<()>,
    ) -> Result<()> {
        self.usable()?;
        let Some(links) = self.links.as_ref() else {
            return Ok(());
        };
        let result = with_pipe(links, self.rank, op, self.config.timeout, body);
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
        self.run("all-reduce", |pipe| {
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
        self.run("broadcast", |pipe| {
            broadcast_ring(pipe, data, rank, n, root, slice)
        })
    }
}

impl Drop for RingCommunicator {
    fn drop(&mut self) {
        // The aborter keeps duplicated descriptors: shut the sockets down so
        // the neighbours see the connection end now, not when it is dropped.
        if let Some(links) = &self.links {
            links.shutdown();
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
        if !groups.single.is_empty() {
            let mut buf = gather::<f32>(&groups.single)?;
            self.all_reduce_flat(&mut buf, op)?;
            scatter(&groups.single, &buf)?;
        }
        if !groups.double.is_empty() {
            let mut buf = gather::<f64>(&groups.double)?;
            self.all_reduce_flat(&mut buf, op)?;
            scatter(&groups.double, &buf)?;
        }
        Ok(())
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
        self.usable()?;
        check_root(root, self.world_size)?;
        let groups = WireGroups::split(tensors, "broadcast")?;
        if self.world_size == 1 {
            return Ok(());
        }
        let is_root = self.rank == root;
        if !groups.single.is_empty() {
            let mut buf = if is_root {
                gather::<f32>(&groups.single)?
            } else {
                vec![0.0; numel(&groups.single)]
            };
            self.broadcast_flat(&mut buf, root)?;
            if !is_root {
                scatter(&groups.single, &buf)?;
            }
        }
        if !groups.double.is_empty() {
            let mut buf = if is_root {
                gather::<f64>(&groups.double)?
            } else {
                vec![0.0; numel(&groups.double)]
            };
            self.broadcast_flat(&mut buf, root)?;
            if !is_root {
                scatter(&groups.double, &buf)?;
            }
        }
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        // One element per rank, so every step of the ring carries data: the
        // all-gather cannot finish anywhere before every rank has sent.
        let mut buf = vec![0.0f32; self.world_size];
        let (rank, n) = (self.rank, self.world_size);
        self.run("barrier", |pipe| {
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

/// Copies `tensors` (converted to `E`) into one flat vector.
fn gather<E: WireElement>(tensors: &[&Tensor]) -> Result<Vec<E>> {
    let mut buf = vec![E::default(); numel(tensors)];
    let mut offset = 0;
    for t in tensors {
        let n = t.numel();
        if n == 0 {
            continue;
        }
        let src = if t.f_kind()? == E::KIND {
            t.shallow_clone()
        } else {
            t.f_to_kind(E::KIND)?
        };
        src.f_copy_data(&mut buf[offset..offset + n], n)?;
        offset += n;
    }
    Ok(buf)
}

/// Copies `buf` back into `tensors`, in place (and converted to their dtype).
fn scatter<E: WireElement>(tensors: &[&Tensor], buf: &[E]) -> Result<()> {
    // Parameters are leaves that require grad: an in-place copy into them is
    // only allowed with gradient tracking off.
    tch::no_grad(|| {
        let mut offset = 0;
        for t in tensors {
            let n = t.numel();
            if n == 0 {
                continue;
            }
            let src = Tensor::f_from_slice(&buf[offset..offset + n])?.f_reshape(t.size())?;
            t.shallow_clone().f_copy_(&src)?;
            offset += n;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Wire elements.

/// An element type the ring carries (little-endian on the wire).
trait WireElement: tch::kind::Element + Copy + Default + Send + Sync + 'static {
    const SIZE: usize;
    const CODE: u8;
    /// `out = src` as bytes (resized to fit).
    fn encode(src: &[Self], out: &mut Vec<u8>);
    /// `dst += bytes`.
    fn add_from(dst: &mut [Self], bytes: &[u8]);
    /// `dst = bytes`.
    fn copy_from(dst: &mut [Self], bytes: &[u8]);
    /// `data /= n`.
    fn divide(data: &mut [Self], n: usize);
}

macro_rules! wire_element {
    ($t:ty, $code:expr) => {
        impl WireElement for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const CODE: u8 = $code;

            fn encode(src: &[Self], out: &mut Vec<u8>) {
                out.clear();
                out.resize(src.len() * Self::SIZE, 0);
                for (chunk, x) in out.chunks_exact_mut(Self::SIZE).zip(src) {
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
            }

            fn add_from(dst: &mut [Self], bytes: &[u8]) {
                for (d, chunk) in dst.iter_mut().zip(bytes.chunks_exact(Self::SIZE)) {
                    let mut raw = [0u8; std::mem::size_of::<$t>()];
                    raw.copy_from_slice(chunk);
                    *d += <$t>::from_le_bytes(raw);
                }
            }

            fn copy_from(dst: &mut [Self], bytes: &[u8]) {
                for (d, chunk) in dst.iter_mut().zip(bytes.chunks_exact(Self::SIZE)) {
                    let mut raw = [0u8; std::mem::size_of::<$t>()];
                    raw.copy_from_slice(chunk);
                    *d = <$t>::from_le_bytes(raw);
                }
            }

            fn divide(data: &mut [Self], n: usize) {
                let n = n as $t;
                for x in data {
                    *x /= n;
                }
            }
        }
    };
}

wire_element!(f32, 1);
wire_element!(f64, 2);

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

/// One call's view of the links: sends go to the sender thread, receives are
/// read here.
struct Pipe<'a> {
    tx: mpsc::Sender<Vec<u8>>,
    recycled: mpsc::Receiver<Vec<u8>>,
    inbuf: Vec<u8>,
    links: &'a Links,
    op: &'static str,
    timeout: Duration,
    rank: usize,
}

impl Pipe<'_> {
    fn buffer(&mut self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut buf = self.buffer();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.push(buf)
    }

    fn send<E: WireElement>(&mut self, src: &[E]) -> Result<()> {
        let mut buf = self.buffer();
        E::encode(src, &mut buf);
        self.push(buf)
    }

    fn push(&mut self, buf: Vec<u8>) -> Result<()> {
        // Fails only when the sender thread stopped on an error, which
        // `with_pipe` reports.
        self.tx
            .send(buf)
            .map_err(|_| Error::Broken("ring sender stopped".into()))
    }

    fn recv(&mut self, nbytes: usize) -> Result<&[u8]> {
        self.inbuf.resize(nbytes, 0);
        let links = self.links;
        (&links.prev)
            .read_exact(&mut self.inbuf)
            .map_err(|e| peer_error(e, links.prev_rank, &links.prev_addr, self.op, self.timeout))?;
        Ok(&self.inbuf)
    }

    /// Reads the predecessor's header and checks it announces `mine`.
    fn expect_header(&mut self, mine: Header) -> Result<()> {
        let theirs = Header::decode(self.recv(16)?);
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

/// Runs `body` with a sender thread writing to the successor; returns the
/// error that happened first (sender or receiver).
fn with_pipe(
    links: &Links,
    rank: usize,
    op: &'static str,
    timeout: Duration,
    body: impl FnOnce(&mut Pipe<'_>) -> Result<()>,
) -> Result<()> {
    let failed = AtomicU8::new(FAILED_NONE);
    thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
        let failed = &failed;
        let sender = s.spawn(move || -> io::Result<()> {
            for buf in rx {
                if let Err(e) = (&links.next).write_all(&buf) {
                    if failed
                        .compare_exchange(
                            FAILED_NONE,
                            FAILED_SENDER,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .is_ok()
                    {
                        // Wake the receiving thread: this call is over.
                        let _ = links.prev.shutdown(Shutdown::Both);
                    }
                    return Err(e);
                }
                let _ = recycle.send(buf);
            }
            Ok(())
        });
        let mut pipe = Pipe {
            tx,
            recycled,
            inbuf: Vec::new(),
            links,
            op,
            timeout,
            rank,
        };
        let received = body(&mut pipe);
        drop(pipe);
        if received.is_err() {
            let _ = failed.compare_exchange(
                FAILED_NONE,
                FAILED_RECEIVER,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            // Unblock a sender stuck on a full socket.
            links.shutdown();
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("ring sender thread panicked")));
        match (received, sent) {
            (Ok(()), Ok(())) => Ok(()),
            (_, Err(e)) if failed.load(Ordering::SeqCst) == FAILED_SENDER => Err(peer_error(
                e,
                links.next_rank,
                &links.next_addr,
                op,
                timeout,
            )),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(peer_error(
                e,
                links.next_rank,
                &links.next_addr,
                op,
                timeout,
            )),
        }
    })
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
    pipe.send_bytes(&header.encode())?;
    for s in slices(chunk(rank, n, len), slice) {
        pipe.send(&data[s])?;
    }
    pipe.expect_header(header)?;
    let steps = 2 * (n - 1);
    for t in 0..steps {
        let c = (rank + 2 * n - t - 1) % n;
        for s in slices(chunk(c, n, len), slice) {
            let bytes = pipe.recv(s.len() * E::SIZE)?;
            if t < n - 1 {
                E::add_from(&mut data[s.clone()], bytes);
            } else {
                E::copy_from(&mut data[s.clone()], bytes);
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
        pipe.send_bytes(&header.encode())?;
        for s in slices(0..len, slice) {
            pipe.send(&data[s])?;
        }
        return Ok(());
    }
    let forward = (rank + 1) % n != root;
    pipe.expect_header(header)?;
    if forward {
        pipe.send_bytes(&header.encode())?;
    }
    for s in slices(0..len, slice) {
        let bytes = pipe.recv(s.len() * E::SIZE)?;
        E::copy_from(&mut data[s.clone()], bytes);
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
        let mut dst = [1.0f32; 3];
        f32::add_from(&mut dst, &bytes);
        assert_eq!(dst, [2.5, -1.0, 4.25]);
        f32::copy_from(&mut dst, &bytes);
        assert_eq!(dst, src);
    }
}
