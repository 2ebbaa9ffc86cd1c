//! A group of ranks as threads of this process, joined by the TCP ring on
//! loopback or by NCCL (one GPU per rank): what `ddp`, `scaling` and
//! `allreduce` run their ranks in.

use std::time::Duration;

use anyhow::{Context, ensure};
use camshaft_collective::{
    CollectiveConfig, Communicator, Nccl, NcclCommunicator, RingCommunicator, RingListener,
};

/// Which communicator joins the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `RingCommunicator`: CPU tensors over TCP on loopback.
    Ring,
    /// `NcclCommunicator`: CUDA tensors, rank `r` on `cuda:r`.
    Nccl,
}

impl Backend {
    /// The flag's value: `ring` or `nccl`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ring => "ring",
            Backend::Nccl => "nccl",
        }
    }

    /// What `torch.distributed` calls the matching reference backend.
    pub fn torch_backend(self) -> &'static str {
        match self {
            Backend::Ring => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// The device rank `rank`'s tensors live on.
    pub fn device(self, rank: usize) -> tch::Device {
        match self {
            Backend::Ring => tch::Device::Cpu,
            Backend::Nccl => tch::Device::Cuda(rank),
        }
    }

    /// The default group size: 2 ranks on the ring, every visible GPU for
    /// NCCL.
    pub fn default_ranks(self) -> usize {
        match self {
            Backend::Ring => 2,
            Backend::Nccl => usize::try_from(tch::Cuda::device_count()).unwrap_or(0),
        }
    }
}

/// Runs `per_rank(rank, communicator)` on `ranks` threads joined by
/// `backend` and returns the results in rank order. The first failing rank's
/// error is returned (a failed rank breaks the ring, so the others fail
/// soon after instead of waiting for it).
pub fn run_group<T: Send>(
    backend: Backend,
    ranks: usize,
    per_rank: impl Fn(usize, Box<dyn Communicator>) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    ensure!(ranks >= 1, "a group needs at least 1 rank");
    let config = CollectiveConfig::with_timeout(Duration::from_secs(120));
    let per_rank = &per_rank;
    match backend {
        Backend::Ring => {
            // Every rank listens before any connects: each knows all peers.
            let (mut listeners, mut peers) = (Vec::new(), Vec::new());
            for _ in 0..ranks {
                let listener = RingListener::bind("127.0.0.1:0")?;
                peers.push(listener.local_addr().to_string());
                listeners.push(listener);
            }
            join_ranks(listeners.into_iter().enumerate().map(|(rank, listener)| {
                let (peers, config) = (peers.clone(), config.clone());
                move || {
                    let comm = RingCommunicator::connect(listener, rank, ranks, peers, config)?;
                    per_rank(rank, Box::new(comm))
                }
            }))
        }
        Backend::Nccl => {
            let nccl = Nccl::load().context(
                "--backend nccl needs NCCL (libnccl.so.2, or CAMSHAFT_NCCL_LIB) and CUDA GPUs",
            )?;
            let gpus = tch::Cuda::device_count();
            ensure!(
                i64::try_from(ranks).unwrap_or(i64::MAX) <= gpus,
                "--backend nccl with {ranks} ranks needs {ranks} CUDA devices, libtorch sees {gpus}"
            );
            let id = nccl.unique_id()?;
            join_ranks((0..ranks).map(|rank| {
                let (nccl, config) = (nccl.clone(), config.clone());
                move || {
                    let comm = NcclCommunicator::new(&nccl, id, rank, ranks, rank, config)?;
                    per_rank(rank, Box::new(comm))
                }
            }))
        }
    }
}

/// Runs each rank's closure on its own scoped thread; results in rank order.
fn join_ranks<T: Send, F>(ranks: impl Iterator<Item = F>) -> anyhow::Result<Vec<T>>
where
    F: FnOnce() -> anyhow::Result<T> + Send,
{
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranks.map(|rank| scope.spawn(rank)).collect();
        let mut results = Vec::with_capacity(handles.len());
        let mut first_error = None;
        for (rank, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(value)) => results.push(value),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.context(format!("rank {rank} failed")));
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!("rank {rank} panicked"));
                }
            }
        }
        first_error.map_or(Ok(results), Err)
    })
}
