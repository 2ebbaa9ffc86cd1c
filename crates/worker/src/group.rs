//! One assignment on this worker: a thread per rank, their rendezvous, and
//! their cancellation.
//!
//! A rank of a group larger than one first offers its rendezvous data (its
//! ring listener's address; rank 0 of an NCCL group also a fresh unique
//! id), waits for the coordinator's `Rendezvous`, forms its communicator,
//! and only then trains. A `Cancel` sets the learner's flag (it stops at the
//! next batch) and aborts the communicator, so a rank blocked in a
//! collective returns at once instead of waiting for its timeout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use camshaft_collective::{
    Aborter, CollectiveConfig, Communicator, Nccl, NcclCommunicator, NcclUniqueId,
    RingCommunicator, RingListener,
};
use camshaft_proto::v1::{self, CollectiveBackend, DeviceKind, worker_message::Message as Out};
use camshaft_vision::learner::{GradientSync, SingleProcess};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::sync::GroupSync;
use crate::task::{self, TaskContext, TaskError};
use crate::{Checkpoints, Config};

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// What every rank thread of a worker shares.
#[derive(Clone)]
pub struct Context {
    /// The worker's configuration.
    pub config: Config,
    /// Checkpoints through the coordinator.
    pub checkpoints: Checkpoints,
    /// Messages to the coordinator.
    pub out: mpsc::UnboundedSender<v1::WorkerMessage>,
    /// Told `(job, attempt)` when the last rank of an attempt ends.
    pub finished: mpsc::UnboundedSender<(String, u32)>,
    /// The worker's metrics.
    pub metrics: Metrics,
}

impl Context {
    fn send(&self, message: Out) {
        let _ = self.out.send(v1::WorkerMessage {
            message: Some(message),
        });
    }
}

/// The control handle of a running attempt.
pub struct Attempt {
    cancel: Arc<AtomicBool>,
    aborters: Arc<Mutex<Vec<Aborter>>>,
    rendezvous: Vec<std_mpsc::Sender<v1::Rendezvous>>,
}

impl Attempt {
    /// Hands the coordinator's rendezvous data to every rank.
    pub fn rendezvous(&self, rendezvous: &v1::Rendezvous) {
        for rank in &self.rendezvous {
            let _ = rank.send(rendezvous.clone());
        }
    }

    /// Stops every rank: the learners at their next batch, the
    /// communicators at once.
    pub fn cancel(&self, reason: &str) {
        if !self.cancel.swap(true, Ordering::Relaxed) {
            tracing::info!(%reason, "stopping the attempt's ranks");
        }
        for aborter in self
            .aborters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            aborter.abort();
        }
    }
}

/// Starts every rank of `assignment` on its own thread.
pub fn start(assignment: v1::Assignment, context: Context) -> Attempt {
    let cancel = Arc::new(AtomicBool::new(false));
    let aborters = Arc::new(Mutex::new(Vec::new()));
    let assignment = Arc::new(assignment);
    let remaining = Arc::new(AtomicUsize::new(assignment.ranks.len()));
    let mut rendezvous = Vec::new();
    for local in 0..assignment.ranks.len() {
        let (tx, rx) = std_mpsc::channel();
        rendezvous.push(tx);
        let rank = RankThread {
            assignment: Arc::clone(&assignment),
            local,
            rendezvous: rx,
            context: context.clone(),
            cancel: Arc::clone(&cancel),
            aborters: Arc::clone(&aborters),
        };
        let remaining = Arc::clone(&remaining);
        let name = format!(
            "rank-{}-{}-{}",
            assignment.job_id, assignment.attempt, assignment.ranks[local].rank
        );
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            rank.run();
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let key = (rank.assignment.job_id.clone(), rank.assignment.attempt);
                let _ = rank.context.finished.send(key);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a rank thread");
        }
    }
    Attempt {
        cancel,
        aborters,
        rendezvous,
    }
}

struct RankThread {
    assignment: Arc<v1::Assignment>,
    local: usize,
    rendezvous: std_mpsc::Receiver<v1::Rendezvous>,
    context: Context,
    cancel: Arc<AtomicBool>,
    aborters: Arc<Mutex<Vec<Aborter>>>,
}

impl RankThread {
    fn rank(&self) -> u32 {
        self.assignment.ranks[self.local].rank
    }

    /// Trains, then reports `TaskDone` or `TaskFailed` (nothing when cancelled).
    fn run(&self) {
        let (job_id, attempt, rank) = (
            self.assignment.job_id.clone(),
            self.assignment.attempt,
            self.rank(),
        );
        tracing::info!(%job_id, attempt, rank, "rank starting");
        match self.train() {
            Ok(done) => self.context.send(Out::TaskDone(v1::TaskDone {
                job_id,
                attempt,
                rank,
                final_checkpoint_id: done.checkpoint_id,
                final_metrics: done.final_metrics,
            })),
            Err(_) if self.cancel.load(Ordering::Relaxed) => {
                tracing::info!(%job_id, attempt, rank, "rank cancelled");
            }
            Err(e) => {
                tracing::error!(%job_id, attempt, rank, reason = %e.reason, "rank failed");
                self.context.send(Out::TaskFailed(v1::TaskFailed {
                    job_id,
                    attempt,
                    rank,
                    kind: e.kind as i32,
                    reason: e.reason,
                    epoch: e.epoch,
                    retryable: e.retryable,
                }));
            }
        }
    }

    fn train(&self) -> Result<task::TaskDone, TaskError> {
        let context = &self.context;
        let spec = self.assignment.spec.clone().unwrap_or_default();
        if let Some(bench) = &spec.collective_bench {
            // Even a group of one forms the real communicator: it is what
            // the sweep measures.
            let comm = self.communicator()?;
            context.metrics.ranks_running.inc();
            let _running = scopeguard(|| context.metrics.ranks_running.dec());
            return task::run_sweep(&self.assignment, bench, comm, &|m| context.send(m));
        }
        let sync: Box<dyn GradientSync> = if self.assignment.world_size <= 1 {
            Box::new(SingleProcess)
        } else {
            let bucket_bytes = spec.bucket_mib.max(1) as usize * 1024 * 1024;
            let sync = GroupSync::new(self.communicator()?, bucket_bytes);
            context.metrics.timed(Box::new(sync))
        };
        context.metrics.ranks_running.inc();
        let _running = scopeguard(|| context.metrics.ranks_running.dec());
        let out = context.out.clone();
        task::run(
            &self.assignment,
            TaskContext {
                local_rank: self.local,
                sync,
                checkpoints: context.checkpoints.clone(),
                data_dir: context.config.data_dir(),
                data_roots: context.config.data_roots(),
                loader_threads: context.config.loader_threads,
                intra_op_threads: context.config.intra_op_threads,
                cancel: Arc::clone(&self.cancel),
                send: Box::new(move |m| {
                    let _ = out.send(v1::WorkerMessage { message: Some(m) });
                }),
            },
        )
    }

    /// Offers this rank's rendezvous data, waits for the group's, and forms
    /// the communicator, which a cancel aborts.
    fn communicator(&self) -> Result<Box<dyn Communicator>, TaskError> {
        let a = &*self.assignment;
        let spec = a.spec.clone().unwrap_or_default();
        let rank = self.rank() as usize;
        let world = a.world_size as usize;
        let config = CollectiveConfig {
            timeout: Duration::from_millis(spec.collective_timeout_ms.max(1)),
            // The attempt's secret, which only the group's workers received
            // over their own streams: a peer without it is refused.
            session: format!(
                "{}/{}/{}",
                a.job_id,
                a.attempt,
                a.attempt_secret
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            ..CollectiveConfig::default()
        };
        let offer = |nccl_unique_id: Vec<u8>, ring_address: String| {
            self.context.send(Out::RendezvousOffer(v1::RendezvousOffer {
                job_id: a.job_id.clone(),
                attempt: a.attempt,
                rank: rank as u32,
                nccl_unique_id: nccl_unique_id.into(),
                ring_address,
            }));
        };
        match a.backend() {
            CollectiveBackend::Nccl => {
                let device = a.ranks[self.local].device.clone().unwrap_or_default();
                if device.kind() != DeviceKind::Cuda {
                    return Err(TaskError::fatal("an NCCL rank needs a CUDA device"));
                }
                let nccl = Nccl::load().map_err(|e| TaskError::fatal(e.to_string()))?;
                let id = if rank == 0 {
                    nccl.unique_id().map_err(TaskError::from)?.to_vec()
                } else {
                    Vec::new()
                };
                offer(id, String::new());
                let rendezvous = self.wait_for_rendezvous()?;
                let id: NcclUniqueId =
                    rendezvous.nccl_unique_id.as_ref().try_into().map_err(|_| {
                        TaskError::fatal(format!(
                            "the NCCL unique id has {} bytes, not 128",
                            rendezvous.nccl_unique_id.len()
                        ))
                    })?;
                let comm =
                    NcclCommunicator::new(&nccl, id, rank, world, device.index as usize, config)
                        .map_err(TaskError::from)?;
                Ok(self.abortable(comm))
            }
            _ => {
                let host = &self.context.config.ring_host;
                let listener = RingListener::bind(&format!("{host}:0")).map_err(TaskError::from)?;
                offer(Vec::new(), listener.local_addr().to_string());
                let rendezvous = self.wait_for_rendezvous()?;
                let comm =
                    RingCommunicator::connect(listener, rank, world, rendezvous.ring_peers, config)
                        .map_err(TaskError::from)?;
                Ok(self.abortable(comm))
            }
        }
    }

    fn abortable<C: Communicator + 'static>(&self, comm: C) -> Box<dyn Communicator> {
        self.aborters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(comm.aborter());
        if self.cancel.load(Ordering::Relaxed) {
            comm.aborter().abort();
        }
        Box::new(comm)
    }

    /// The coordinator's `Rendezvous`, or an error after the assignment's
    /// rendezvous timeout or a cancel.
    fn wait_for_rendezvous(&self) -> Result<v1::Rendezvous, TaskError> {
        let timeout = Duration::from_millis(self.assignment.rendezvous_timeout_ms.max(1));
        let deadline = Instant::now() + timeout;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::fatal("cancelled during the rendezvous"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TaskError::collective(format!(
                    "no rendezvous within {} ms",
                    timeout.as_millis()
                )));
            }
            match self
                .rendezvous
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(r) => return Ok(r),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TaskError::fatal("the worker stopped during the rendezvous"));
                }
            }
        }
    }
}
