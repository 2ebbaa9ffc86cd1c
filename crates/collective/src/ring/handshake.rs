//! Joining the ring: the listener a rank binds before it knows its peers,
//! and the handshake that links it to its successor and predecessor.
//!
//! A rank connects to its successor (retrying while it does not listen
//! yet) and, at the same time, accepts its predecessor. Each connection
//! opens with a hello (magic, rank, world size, session token) that the
//! accepting side answers with a one-byte status: a connection from another
//! session, rank or group size is refused and never becomes a link.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::{CollectiveConfig, Error, Result};

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

/// Links `rank` of `world_size` into the ring: connects to its successor at
/// `peers[rank + 1]` and accepts its predecessor on `listener`, both before
/// `config.timeout` runs out. Returns `(next, prev)`, blocking with the
/// data-path timeouts set.
pub(super) fn link(
    listener: &RingListener,
    rank: usize,
    world_size: usize,
    peers: &[String],
    config: &CollectiveConfig,
) -> Result<(TcpStream, TcpStream)> {
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
                config,
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
            config,
            deadline,
            &stop,
        );
        if prev.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let next = connector
            .join()
            .unwrap_or_else(|_| Err(Some(Error::Setup("ring connector thread panicked".into()))));
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
    Ok((next, prev))
}

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
