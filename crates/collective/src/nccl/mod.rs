//! NCCL for CUDA tensors, loaded at run time (never linked).
//!
//! [`Nccl::load`] opens the library; rank 0 creates the group's id with
//! [`Nccl::unique_id`] and the coordinator hands the 128 bytes to every rank,
//! which then builds a [`NcclCommunicator`] for its GPU.
//!
//! Each communicator owns a worker thread bound to its GPU
//! (`cudaSetDevice`) that makes the NCCL calls on the legacy default stream
//! and waits for them (`tch::Cuda::synchronize`); the caller waits for the
//! worker with the configured timeout. On timeout, or through the
//! [`Aborter`], the communicator is aborted with `ncclCommAbort`, which stops
//! the kernels in flight, and the call fails instead of hanging. An abort
//! never frees the communicator under an NCCL call of the worker thread:
//! one that comes during an enqueue is carried out when the enqueue returns
//! (`ffi::Comm` explains how).

mod ffi;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use self::ffi::{Comm, CudaRuntime, NcclLib, Wire};
use crate::{Aborter, CollectiveConfig, Communicator, Error, ReduceOp, Result, check_root};

/// The 128 bytes of an `ncclUniqueId`, as the coordinator hands them out.
pub type NcclUniqueId = [u8; 128];

/// Environment variable naming the NCCL library to load (a full path); it
/// wins over the default names.
pub const NCCL_LIB_ENV: &str = "CAMSHAFT_NCCL_LIB";

/// First NCCL version with `ncclAvg` and `ncclBfloat16` (2.10.0).
const NCCL_2_10: i32 = 21000;

// ncclDataType_t and ncclRedOp_t values from nccl.h.
const NCCL_FLOAT16: i32 = 6;
const NCCL_FLOAT32: i32 = 7;
const NCCL_FLOAT64: i32 = 8;
const NCCL_BFLOAT16: i32 = 9;
const NCCL_SUM: i32 = 0;
const NCCL_AVG: i32 = 4;

/// How often a waiting caller checks its aborter.
const ABORT_POLL: Duration = Duration::from_millis(10);

/// A loaded NCCL library. Cheap to clone.
#[derive(Clone)]
pub struct Nccl {
    lib: Arc<NcclLib>,
    version: i32,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("path", &self.lib.path())
            .field("version", &self.version)
            .finish()
    }
}

impl Nccl {
    /// Loads NCCL: the path in `CAMSHAFT_NCCL_LIB` if set, else
    /// `libnccl.so.2`, then `libnccl.so` through the dynamic loader's search
    /// path (where libtorch's own NCCL is found once libtorch is loaded).
    /// A missing library is [`Error::LibraryMissing`] naming every path tried.
    pub fn load() -> Result<Nccl> {
        let mut candidates: Vec<String> = std::env::var(NCCL_LIB_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .into_iter()
            .collect();
        candidates.extend(["libnccl.so.2", "libnccl.so"].map(String::from));
        Self::load_from(&candidates)
    }

    /// Loads the first of `candidates` (file names or paths) that loads.
    pub fn load_from(candidates: &[String]) -> Result<Nccl> {
        let lib = NcclLib::open(candidates)?;
        let version = lib.version()?;
        Ok(Nccl {
            lib: Arc::new(lib),
            version,
        })
    }

    /// `ncclGetVersion`, e.g. 22809 for 2.28.9.
    pub fn version(&self) -> i32 {
        self.version
    }

    /// The version as "major.minor.patch".
    pub fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
    }

    /// The file the library was loaded from.
    pub fn path(&self) -> &str {
        self.lib.path()
    }

    /// A new group id (`ncclGetUniqueId`), made by rank 0. Rank 0's process
    /// must stay alive until every rank has initialised.
    pub fn unique_id(&self) -> Result<NcclUniqueId> {
        self.lib.unique_id()
    }

    /// The NCCL data type of a tensor kind.
    fn wire(&self, kind: Kind) -> Result<Wire> {
        let (dtype, size) = match kind {
            Kind::Float => (NCCL_FLOAT32, 4),
            Kind::Half => (NCCL_FLOAT16, 2),
            Kind::Double => (NCCL_FLOAT64, 8),
            Kind::BFloat16 if self.version >= NCCL_2_10 => (NCCL_BFLOAT16, 2),
            Kind::BFloat16 => {
                return Err(Error::Tensor(format!(
                    "nccl {} has no bf16 (needs 2.10 or newer)",
                    self.version_string()
                )));
            }
            kind => {
                return Err(Error::Tensor(format!(
                    "nccl collectives support f32, f16, bf16 and f64 tensors, not {kind:?}"
                )));
            }
        };
        Ok(Wire { dtype, size })
    }
}

/// NCCL is usable here: the library loads and libtorch sees a CUDA device.
pub fn nccl_available() -> bool {
    Nccl::load().is_ok() && tch::Cuda::device_count() > 0
}

/// What the worker thread runs.
enum Job {
    AllReduce {
        tensors: Vec<(Tensor, Wire)>,
        op: i32,
    },
    Broadcast {
        tensors: Vec<(Tensor, Wire)>,
        root: usize,
    },
    Shutdown,
}

/// A rank of an NCCL group on one GPU (see the module doc).
pub struct NcclCommunicator {
    nccl: Nccl,
    rank: usize,
    world_size: usize,
    device_index: usize,
    timeout: Duration,
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Result<()>>,
    worker: Option<JoinHandle<()>>,
    comm: Arc<Comm>,
    aborter: Aborter,
    broken: Option<String>,
    barrier: Tensor,
}

impl std::fmt::Debug for NcclCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCommunicator")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("device_index", &self.device_index)
            .field("broken", &self.broken)
            .finish()
    }
}

impl NcclCommunicator {
    /// Joins the group `id` as `rank` of `world_size` on GPU `device_index`.
    /// Blocks until every rank has joined, at most `config.timeout`.
    pub fn new(
        nccl: &Nccl,
        id: NcclUniqueId,
        rank: usize,
        world_size: usize,
        device_index: usize,
        config: CollectiveConfig,
    ) -> Result<Self> {
        config.validate()?;
        if rank >= world_size {
            return Err(Error::Config(format!(
                "rank {rank} is not a rank of a group of {world_size}"
            )));
        }
        let devices = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
        if device_index >= devices {
            return Err(Error::Cuda(format!(
                "nccl rank {rank} wants cuda:{device_index}, but libtorch sees {devices} CUDA device(s) (a binary must keep libtorch_cuda.so linked: see build/torch_cuda.rs)"
            )));
        }
        let device = Device::Cuda(device_index);
        let barrier = Tensor::f_zeros([1], (Kind::Float, device))?;
        let cuda = CudaRuntime::open()?;
        let timeout = config.timeout;

        let (init_tx, init_rx) = mpsc::channel::<Result<Arc<Comm>>>();
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel::<Result<()>>();
        let gave_up = Arc::new(AtomicBool::new(false));
        let lib = nccl.lib.clone();
        let worker_gave_up = gave_up.clone();
        let worker = thread::Builder::new()
            .name(format!("nccl-rank-{rank}"))
            .spawn(move || {
                let comm = cuda
                    .set_device(device_index)
                    .and_then(|()| Comm::init(lib, &id, rank, world_size))
                    .map(Arc::new);
                let comm = match comm {
                    Ok(comm) => comm,
                    Err(e) => {
                        let _ = init_tx.send(Err(e));
                        return;
                    }
                };
                if worker_gave_up.load(Ordering::SeqCst) || init_tx.send(Ok(comm.clone())).is_err()
                {
                    // The caller timed out: nobody will use this communicator.
                    comm.abort();
                    return;
                }
                serve_jobs(&comm, device_index, &job_rx, &result_tx);
                comm.destroy();
            })
            .map_err(|e| Error::Cuda(format!("cannot start the nccl thread: {e}")))?;

        let comm = match init_rx.recv_timeout(timeout) {
            Ok(Ok(comm)) => comm,
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // ncclCommInitRank cannot be cancelled: the thread is left
                // to finish (and abort what it made) or to hang alone.
                gave_up.store(true, Ordering::SeqCst);
                return Err(Error::Timeout {
                    op: "nccl init",
                    waiting_for: format!("all {world_size} ranks to join the group"),
                    timeout,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Cuda("the nccl thread died during init".into()));
            }
        };
        let abort_comm = comm.clone();
        let aborter = Aborter::new(move || {
            abort_comm.abort();
        });
        tracing::debug!(rank, world_size, device_index, nccl = %nccl.version_string(), "nccl communicator ready");
        Ok(NcclCommunicator {
            nccl: nccl.clone(),
            rank,
            world_size,
            device_index,
            timeout,
            jobs,
            results,
            worker: Some(worker),
            comm,
            aborter,
            broken: None,
            barrier,
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

    fn prepare(&self, tensors: &[Tensor]) -> Result<Vec<(Tensor, Wire)>> {
        let device = Device::Cuda(self.device_index);
        tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if !t.defined() {
                    return Err(Error::Tensor(format!("nccl: tensor {i} is undefined")));
                }
                if t.device() != device {
                    return Err(Error::Tensor(format!(
                        "nccl rank {} needs tensors on {device:?}, tensor {i} is on {:?} (use RingCommunicator for CPU tensors)",
                        self.rank,
                        t.device()
                    )));
                }
                if !t.is_contiguous() {
                    return Err(Error::Tensor(format!(
                        "nccl needs contiguous tensors, tensor {i} is not"
                    )));
                }
                Ok((t.shallow_clone(), self.nccl.wire(t.f_kind()?)?))
            })
            .collect()
    }

    /// Hands `job` to the worker and waits for it, at most the timeout.
    fn execute(&mut self, op: &'static str, job: Job) -> Result<()> {
        self.usable()?;
        if self.jobs.send(job).is_err() {
            let e = Error::Broken("the nccl thread has stopped".into());
            self.broken = Some(e.to_string());
            return Err(e);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(ABORT_POLL);
            match self.results.recv_timeout(wait) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    let e = if self.aborter.is_aborted() {
                        Error::Aborted
                    } else {
                        e
                    };
                    self.comm.abort();
                    self.broken = Some(e.to_string());
                    return Err(e);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.aborter.is_aborted() {
                        self.broken = Some(Error::Aborted.to_string());
                        return Err(Error::Aborted);
                    }
                    if Instant::now() >= deadline {
                        self.comm.abort();
                        let e = Error::Timeout {
                            op,
                            waiting_for: format!(
                                "nccl rank {} of {} on cuda:{}",
                                self.rank, self.world_size, self.device_index
                            ),
                            timeout: self.timeout,
                        };
                        self.broken = Some(e.to_string());
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let e = Error::Broken("the nccl thread died".into());
                    self.broken = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }
}

/// The worker loop: one job at a time, each enqueued then waited for.
fn serve_jobs(
    comm: &Comm,
    device_index: usize,
    jobs: &mpsc::Receiver<Job>,
    results: &mpsc::Sender<Result<()>>,
) {
    let device = Device::Cuda(device_index);
    for job in jobs {
        let result = match job {
            Job::Shutdown => return,
            Job::AllReduce { tensors, op } => tensors
                .iter()
                .try_for_each(|(t, wire)| comm.all_reduce(t, *wire, op, device)),
            Job::Broadcast { tensors, root } => tensors
                .iter()
                .try_for_each(|(t, wire)| comm.broadcast(t, *wire, root, device)),
        };
        let result = result
            .and_then(|()| synchronize(device_index))
            .and_then(|()| comm.async_error());
        if results.send(result).is_err() {
            return;
        }
    }
}

/// Waits for the device's streams; libtorch reports CUDA failures as panics.
fn synchronize(device_index: usize) -> Result<()> {
    catch_unwind(AssertUnwindSafe(|| {
        tch::Cuda::synchronize(device_index as i64)
    }))
    .map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into());
        Error::Cuda(format!("synchronizing cuda:{device_index} failed: {why}"))
    })
}

impl Drop for NcclCommunicator {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Shutdown);
        if self.broken.is_some() {
            // The worker may be stuck in a kernel that never ends: abort and
            // leave it.
            self.comm.abort();
            return;
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn device(&self) -> Device {
        Device::Cuda(self.device_index)
    }

    fn all_reduce(&mut self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        self.usable()?;
        let prepared = self.prepare(tensors)?;
        let native_avg = self.nccl.version >= NCCL_2_10;
        let nccl_op = match op {
            ReduceOp::Average if native_avg => NCCL_AVG,
            _ => NCCL_SUM,
        };
        self.execute(
            "all-reduce",
            Job::AllReduce {
                tensors: prepared,
                op: nccl_op,
            },
        )?;
        if op == ReduceOp::Average && !native_avg {
            let n = self.world_size as f64;
            tch::no_grad(|| -> Result<()> {
                for t in tensors {
                    let _ = t.shallow_clone().f_div_scalar_(n)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
        self.usable()?;
        check_root(root, self.world_size)?;
        let prepared = self.prepare(tensors)?;
        self.execute(
            "broadcast",
            Job::Broadcast {
                tensors: prepared,
                root,
            },
        )
    }

    fn barrier(&mut self) -> Result<()> {
        let barrier = self.barrier.shallow_clone();
        self.all_reduce(&[barrier], ReduceOp::Sum)
    }

    fn aborter(&self) -> Aborter {
        self.aborter.clone()
    }
}
