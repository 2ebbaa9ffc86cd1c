//! The data path of one rank: its two links, the sender thread that writes
//! to the successor, and the [`Pipe`] through which one call sends and
//! receives.
//!
//! Writes go through a sender thread, started once per communicator and fed
//! by a channel that never blocks, so the thread that reads never waits on
//! a full socket buffer and two ranks cannot deadlock writing to each
//! other. Calls small enough that all their bytes fit in the sockets'
//! buffers at once ([`DIRECT_SEND_BYTES`]) write from the calling thread
//! instead: no hand-over, no thread to wake. Send buffers come back from the
//! sender thread for reuse and receive buffers ([`Scratch`]) are kept too.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::wire::{Header, WireElement};
use crate::memory::as_bytes_mut;
use crate::{Error, Result};

/// A call that sends at most this many bytes to its successor writes them
/// from the calling thread. Deadlock-free as long as twice this fits in what
/// a connection buffers (a rank starts a call only after reading all of the
/// previous one, so a link holds at most one call's bytes of each of two
/// calls): Linux buffers at least its default receive buffer (tcp_rmem,
/// 128 KiB, half of it payload) plus the send buffer's 16 KiB.
pub(super) const DIRECT_SEND_BYTES: usize = 16 << 10;

/// The two connections of a rank in the ring.
pub(super) struct Links {
    /// To rank `r + 1`; only written.
    pub(super) next: TcpStream,
    /// From rank `r − 1`; only read.
    pub(super) prev: TcpStream,
    pub(super) next_rank: usize,
    pub(super) prev_rank: usize,
    pub(super) next_addr: String,
    pub(super) prev_addr: String,
}

impl Links {
    /// Shuts both connections down: the neighbours see the ring end.
    pub(super) fn shutdown(&self) {
        let _ = self.next.shutdown(Shutdown::Both);
        let _ = self.prev.shutdown(Shutdown::Both);
    }
}

/// Receive buffers of a communicator, kept across calls.
#[derive(Default)]
pub(super) struct Scratch {
    /// Received values to add (reduce-scatter).
    pub(super) single: Vec<f32>,
    pub(super) double: Vec<f64>,
    /// Bytes of a call that writes from the calling thread.
    pub(super) out: Vec<u8>,
}

pub(super) const FAILED_NONE: u8 = 0;
pub(super) const FAILED_SENDER: u8 = 1;
pub(super) const FAILED_RECEIVER: u8 = 2;

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
pub(super) struct SenderThread {
    /// Dropped to stop the thread.
    jobs: Option<mpsc::Sender<SendJob>>,
    flushed: mpsc::Receiver<io::Result<()>>,
    /// Buffers the thread has written, for reuse.
    recycled: mpsc::Receiver<Vec<u8>>,
    /// Buffers handed back without being sent.
    spare: Vec<Vec<u8>>,
    /// Which side of the current call failed first (`FAILED_*`).
    pub(super) failed: Arc<AtomicU8>,
    handle: Option<thread::JoinHandle<()>>,
}

impl SenderThread {
    /// Starts the thread writing to `next`; on a failed write it shuts
    /// `prev` down to wake the reading thread.
    pub(super) fn start(next: TcpStream, prev: TcpStream, rank: usize) -> io::Result<Self> {
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
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.push(SendJob::Flush)?;
        self.flushed
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("ring sender thread stopped")))
    }

    /// Stops the thread once its queue is written (or its socket is shut
    /// down) and waits for it.
    pub(super) fn stop(mut self) {
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
pub(super) struct Pipe<'a> {
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
    pub(super) fn new(
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

    pub(super) fn send_bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub(super) fn send<E: WireElement>(&mut self, src: &[E]) -> Result<()> {
        E::encode(src, &mut self.out);
        if self.out.len() >= self.flush_at {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands over (or writes) what `send` collected.
    pub(super) fn flush(&mut self) -> Result<()> {
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
    pub(super) fn recv_into<E: WireElement>(&mut self, dst: &mut [E]) -> Result<()> {
        self.flush()?;
        self.read(as_bytes_mut(dst))?;
        E::from_wire(dst);
        Ok(())
    }

    /// Reads `dst.len()` values from the predecessor and adds them to `dst`.
    pub(super) fn recv_add<E: WireElement>(&mut self, dst: &mut [E]) -> Result<()> {
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
    pub(super) fn expect_header(&mut self, mine: Header) -> Result<()> {
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
pub(super) fn peer_error(
    e: io::Error,
    rank: usize,
    addr: &str,
    op: &'static str,
    timeout: Duration,
) -> Error {
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
