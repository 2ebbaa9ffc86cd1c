//! `camshaft-worker`: the worker as a library. It opens its control stream
//! to the coordinator (`WorkerLink.Attach`; the worker needs no inbound
//! port), registers its devices, heartbeats, and trains what it is assigned
//! with `camshaft-vision` on a thread of its own per rank: it reports each
//! epoch's row, writes checkpoints to the store (`checkpoint.json` as the
//! manifest's metadata; weights and optimiser state as a
//! [`bundle`](camshaft_store::bundle)), and ends with `TaskDone` naming the
//! final checkpoint or `TaskFailed` saying why and whether a retry can help.
//!
//! # Main types
//!
//! - [`Config`]: the coordinator's address, the worker id, the data
//!   directory, the device choice; serde with defaults.
//! - [`run`]: the connection loop — connect, register, serve the stream,
//!   reconnect with backoff when it breaks — until shutdown or the
//!   coordinator's `Shutdown`.
//! - [`task::run`]: one assigned rank, blocking; usable without a network.
//!
//! # Failure behaviour
//!
//! A broken stream cancels the running ranks (the coordinator counts the
//! worker as lost and restarts the attempt from its last checkpoint), then
//! the worker reconnects under the same id. A `Cancel` stops the rank at
//! its next batch. Missing data, a bad pretrained path or a diverged loss
//! are reported as not retryable.
//!
//! # Example
//!
//! ```no_run,standalone_crate
//! use std::sync::Arc;
//! use camshaft_store::{EmbeddedConfig, EmbeddedStore, Store};
//! use camshaft_worker::{Config, run};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In one process with the coordinator (`camshaft up`), sharing its store.
//! let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new("data")).await?);
//! let config = Config::default();
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! run(config, store, async {
//!     let _ = stopped.await;
//! })
//! .await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
pub mod task;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::worker_link_client::WorkerLinkClient;
use camshaft_proto::v1::{
    self, DeviceKind, coordinator_message::Message as In, worker_message::Message as Out,
};
use camshaft_store::Store;
use tokio::sync::mpsc;

pub use config::{Config, DeviceChoice};
pub use error::{Error, Result};

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The devices this worker offers, per its config.
pub fn devices(config: &Config) -> Result<Vec<v1::Device>> {
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    let cuda = |i: usize| v1::Device {
        kind: DeviceKind::Cuda as i32,
        index: i as u32,
        name: format!("cuda:{i}"),
        ..Default::default()
    };
    let cpu = v1::Device {
        kind: DeviceKind::Cpu as i32,
        index: 0,
        name: "cpu".into(),
        cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        ..Default::default()
    };
    Ok(match config.device_choice()? {
        DeviceChoice::Cpu => vec![cpu],
        DeviceChoice::Auto if count == 0 => vec![cpu],
        DeviceChoice::Auto | DeviceChoice::AllCuda if count > 0 => (0..count).map(cuda).collect(),
        DeviceChoice::Cuda(i) if i < count => vec![cuda(i)],
        _ => {
            return Err(Error::Device(format!(
                "{:?} asked for, {count} CUDA devices found (is libtorch built with CUDA?)",
                config.device
            )));
        }
    })
}

/// How one connection ended.
enum Ended {
    /// The coordinator said to exit, or the local shutdown fired.
    Shutdown,
    /// The stream broke; reconnect.
    Broken(String),
}

/// Runs the worker until `shutdown` completes or the coordinator sends
/// `Shutdown`; reconnects with backoff whenever the stream breaks.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let devices = devices(&config)?;
    let url = config.coordinator_url()?;
    let mut worker_id = config.worker_id.clone();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = connect_and_serve(&config, &url, &devices, &mut worker_id, &store);
        let ended = tokio::select! {
            ended = session => ended?,
            () = &mut shutdown => Ended::Shutdown,
        };
        match ended {
            Ended::Shutdown => {
                tracing::info!(worker_id = %worker_id, "worker stopped");
                return Ok(());
            }
            Ended::Broken(reason) => {
                tracing::warn!(worker_id = %worker_id, %reason, retry_in_ms = backoff.as_millis() as u64, "coordinator stream lost");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Cancels its ranks when dropped, so no rank outlives its stream.
#[derive(Default)]
struct Ranks(HashMap<(String, u32), Arc<AtomicBool>>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for flag in self.0.values() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

async fn connect_and_serve(
    config: &Config,
    url: &str,
    devices: &[v1::Device],
    worker_id: &mut String,
    store: &Arc<dyn Store>,
) -> Result<Ended> {
    let endpoint = match tonic::transport::Endpoint::from_shared(url.to_string()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)),
        Err(e) => return Err(Error::Config(format!("coordinator {url:?}: {e}"))),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Ok(Ended::Broken(format!("cannot connect to {url}: {e}"))),
    };
    let mut client = WorkerLinkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (out, out_rx) = mpsc::unbounded_channel::<v1::WorkerMessage>();
    let send = {
        let out = out.clone();
        move |m: Out| {
            let _ = out.send(v1::WorkerMessage { message: Some(m) });
        }
    };
    send(Out::Register(v1::Register {
        worker_id: worker_id.clone(),
        hostname: hostname(),
        devices: devices.to_vec(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        labels: config.labels.clone().into_iter().collect(),
        running: Vec::new(),
        nccl_available: false,
    }));
    let mut inbound = match client
        .attach(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            return Err(Error::Refused(s.message().to_string()));
        }
        Err(s) => return Ok(Ended::Broken(format!("attach: {}", s.message()))),
    };
    let heartbeat_every = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage {
            message: Some(In::Registered(r)),
        })) => {
            worker_id.clone_from(&r.worker_id);
            tracing::info!(worker_id = %worker_id, coordinator = %url, "registered");
            Duration::from_millis(r.heartbeat_interval_ms.max(50))
        }
        Ok(_) => {
            return Ok(Ended::Broken(
                "the coordinator did not answer Registered".into(),
            ));
        }
        Err(s)
            if s.code() == tonic::Code::FailedPrecondition
                || s.code() == tonic::Code::InvalidArgument =>
        {
            return Err(Error::Refused(s.message().to_string()));
        }
        Err(s) => return Ok(Ended::Broken(format!("register: {}", s.message()))),
    };

    let mut ranks = Ranks::default();
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<(String, u32)>();
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => send(Out::Heartbeat(v1::Heartbeat {
                unix_ms: camshaft_proto::now_unix_ms(),
                ranks: Vec::new(),
            })),
            Some(key) = finished.recv() => { ranks.0.remove(&key); }
            message = inbound.message() => match message {
                Ok(Some(v1::CoordinatorMessage { message: Some(m) })) => match m {
                    In::Assignment(a) => {
                        let key = (a.job_id.clone(), a.attempt);
                        let cancel = Arc::new(AtomicBool::new(false));
                        ranks.0.insert(key.clone(), Arc::clone(&cancel));
                        start_rank(a, config, store, cancel, out.clone(), finished_tx.clone(), key);
                    }
                    In::Cancel(c) => {
                        if let Some(flag) = ranks.0.get(&(c.job_id.clone(), c.attempt)) {
                            tracing::info!(job_id = %c.job_id, attempt = c.attempt, reason = %c.reason, "cancelling");
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                    In::Shutdown(s) => {
                        tracing::info!(reason = %s.reason, "the coordinator asked this worker to exit");
                        return Ok(Ended::Shutdown);
                    }
                    In::Registered(_) | In::Rendezvous(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Ended::Broken("the coordinator closed the stream".into())),
                Err(s) => return Ok(Ended::Broken(s.message().to_string())),
            },
        }
    }
}

/// Starts one rank on its own thread; it reports `TaskDone` or `TaskFailed`
/// and then tells the loop it finished.
fn start_rank(
    assignment: v1::Assignment,
    config: &Config,
    store: &Arc<dyn Store>,
    cancel: Arc<AtomicBool>,
    out: mpsc::UnboundedSender<v1::WorkerMessage>,
    finished: mpsc::UnboundedSender<(String, u32)>,
    key: (String, u32),
) {
    let send = move |m: Out| {
        let _ = out.send(v1::WorkerMessage { message: Some(m) });
    };
    let ctx = task::TaskContext {
        store: Arc::clone(store),
        runtime: tokio::runtime::Handle::current(),
        data_dir: config.data_dir(),
        loader_threads: config.loader_threads,
        cancel: Arc::clone(&cancel),
        send: Box::new(send.clone()),
    };
    tracing::info!(job_id = %assignment.job_id, attempt = assignment.attempt, "rank starting");
    let spawned = std::thread::Builder::new()
        .name(format!("rank-{}-{}", assignment.job_id, assignment.attempt))
        .spawn(move || {
            let job_id = assignment.job_id.clone();
            let attempt = assignment.attempt;
            match task::run(&assignment, &ctx) {
                Ok(done) => send(Out::TaskDone(v1::TaskDone {
                    job_id: job_id.clone(),
                    attempt,
                    rank: 0,
                    final_checkpoint_id: done.checkpoint_id.to_string(),
                    final_metrics: done.final_metrics,
                })),
                Err(_) if cancel.load(Ordering::Relaxed) => {
                    tracing::info!(%job_id, attempt, "rank cancelled");
                }
                Err(e) => {
                    tracing::error!(%job_id, attempt, reason = %e.reason, "rank failed");
                    send(Out::TaskFailed(v1::TaskFailed {
                        job_id: job_id.clone(),
                        attempt,
                        rank: 0,
                        kind: v1::FailureKind::TaskError as i32,
                        reason: e.reason,
                        epoch: e.epoch,
                        retryable: e.retryable,
                    }));
                }
            }
            let _ = finished.send(key);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a rank thread");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
