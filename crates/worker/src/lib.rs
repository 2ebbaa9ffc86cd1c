//! `camshaft-worker`: the worker as a library. It opens its control stream
//! to the coordinator (`WorkerLink.Attach`; the worker needs no inbound
//! port for control), registers its devices, heartbeats, and runs what it
//! is assigned: one thread per rank, each training with `camshaft-vision`.
//! A group larger than one rank forms its communicator first (TCP ring on
//! CPU, NCCL on CUDA, from `camshaft-collective`) with the rendezvous data
//! the coordinator hands out, and all-reduces gradients in buckets. Rank 0
//! reports each epoch's row (the whole group's) and stores checkpoints
//! through the coordinator (`WorkerLink.PutCheckpoint`: `checkpoint.json` as
//! the metadata, weights and optimiser state as a
//! [`bundle`](camshaft_store::bundle)) — a worker needs no store of its own.
//! Every rank ends with `TaskDone` or `TaskFailed` (saying why and whether a
//! retry can help). An all-reduce sweep (`JobSpec.collective_bench`,
//! [`task::run_sweep`]) forms the same communicator, even for one rank, and
//! runs `camshaft_collective::sweep` on it instead of training; rank 0
//! reports one `AllReduceReport` per message size.
//!
//! # Main types
//!
//! - [`Config`]: the coordinator's address, the worker id, the data
//!   directory and the data roots (the only directories a job may name a
//!   data set or pretrained weights in), the device choice, the ring's bind
//!   host; serde with defaults.
//! - [`run`]: the connection loop — connect, register, serve the stream,
//!   reconnect with backoff when it breaks — until shutdown or the
//!   coordinator's `Shutdown`.
//! - [`task::run`]: one rank's training, blocking; [`Checkpoints`]: the
//!   coordinator's checkpoint calls.
//! - [`GroupSync`]: the learner's gradient sync over the group's
//!   communicator (gradients averaged in buckets).
//!
//! # Failure behaviour
//!
//! A broken stream cancels the running ranks (the coordinator counts the
//! worker as lost and restarts the attempt from its last checkpoint), then
//! the worker reconnects under the same id. A `Cancel` stops the ranks at
//! their next batch and aborts their communicator. A collective that fails
//! (a peer died), times out or is aborted is reported as
//! `collective_timeout`; ranks that disagree on a collective, missing data,
//! a bad pretrained path or a diverged loss as not retryable. The kind is
//! read from the collective's typed error, which crosses the learner boxed
//! (see [`GroupSync`]), never guessed from a message.
//!
//! # Example
//!
//! ```no_run,standalone_crate
//! use camshaft_worker::{Config, run};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config {
//!     coordinator: "http://10.0.0.5:50051".into(),
//!     ..Config::default()
//! };
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! run(config, async {
//!     let _ = stopped.await;
//! })
//! .await?;
//! # Ok(()) }
//! ```

mod checkpoints;
mod config;
mod error;
mod group;
mod metrics;
pub mod selection;
mod sync;
pub mod task;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::worker_link_client::WorkerLinkClient;
use camshaft_proto::v1::{
    self, DeviceKind, coordinator_message::Message as In, worker_message::Message as Out,
};
use tokio::sync::mpsc;

use crate::group::Attempt;

pub use checkpoints::{Checkpoints, StoredCheckpoint};
pub use config::{Config, DeviceChoice};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use sync::GroupSync;

/// Resolves once the stop flag is raised (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How long a stopping worker gives its `Drain` to reach the coordinator.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The devices this worker offers, per its config.
pub fn devices(config: &Config) -> Result<Vec<v1::Device>> {
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    // libtorch does not tell a GPU's model name; `cuda:N` says which it is.
    let cuda = |i: usize| v1::Device {
        kind: DeviceKind::Cuda as i32,
        index: i as u32,
        ..Default::default()
    };
    let cpu = v1::Device {
        kind: DeviceKind::Cpu as i32,
        index: 0,
        name: cpu_model(),
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
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    config.validate()?;
    let devices = devices(&config)?;
    let url = config.coordinator_url()?;
    let metrics = Metrics::new()?;
    let _metrics_server = match camshaft_metrics::parse_listen(&config.metrics_listen)
        .map_err(|e| Error::Config(e.to_string()))?
    {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Config(format!("metrics_listen {addr}: {e}")))?;
            let registry = metrics.registry().clone();
            Some(AbortOnDrop(tokio::spawn(camshaft_metrics::serve(
                listener,
                registry,
                std::future::pending(),
            ))))
        }
        None => None,
    };
    // `shutdown` only raises this flag; the session sees it, tells the
    // coordinator it drains and ends, so the Drain is sent before the
    // connection goes.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let work = async {
        let mut worker_id = config.worker_id.clone();
        let mut stop = stop.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = connect_and_serve(
                &config,
                &metrics,
                &url,
                &devices,
                &mut worker_id,
                stop.clone(),
            );
            match session.await? {
                Ended::Shutdown => {
                    tracing::info!(worker_id = %worker_id, "worker stopped");
                    return Ok(());
                }
                Ended::Broken(reason) => {
                    tracing::warn!(worker_id = %worker_id, %reason, retry_in_ms = backoff.as_millis() as u64, "coordinator stream lost");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stopped(&mut stop) => return Ok(()),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    };
    tokio::pin!(work);
    tokio::select! {
        ended = &mut work => return ended,
        () = shutdown => stop_tx.send_replace(true),
    };
    // Give the session a moment to send its Drain and end.
    tokio::time::timeout(DRAIN_GRACE * 5, work)
        .await
        .unwrap_or(Ok(()))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The attempts this worker runs; dropping it cancels them all, so no rank
/// outlives its stream.
#[derive(Default)]
struct Attempts(HashMap<(String, u32), Attempt>);

impl Drop for Attempts {
    fn drop(&mut self) {
        for attempt in self.0.values() {
            attempt.cancel("the coordinator stream ended");
        }
    }
}

async fn connect_and_serve(
    config: &Config,
    metrics: &Metrics,
    url: &str,
    devices: &[v1::Device],
    worker_id: &mut String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Ended> {
    // Read at every (re)connection: a credential written after the worker
    // started (its coordinator starting beside it) or rotated is used.
    let security = match config.security() {
        Ok(s) => s,
        Err(e) => return Ok(Ended::Broken(format!("reading the credentials: {e}"))),
    };
    let endpoint = match security.endpoint(url) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)),
        Err(e) => return Err(Error::Config(format!("coordinator {url:?}: {e}"))),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => security.channel(c),
        Err(e) => return Ok(Ended::Broken(format!("cannot connect to {url}: {e:?}"))),
    };
    let checkpoints = Checkpoints::new(channel.clone(), tokio::runtime::Handle::current());
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
        nccl_available: devices.iter().any(|d| d.kind() == DeviceKind::Cuda)
            && camshaft_collective::nccl_available(),
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

    let mut attempts = Attempts::default();
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<(String, u32)>();
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => send(Out::Heartbeat(v1::Heartbeat {
                unix_ms: camshaft_proto::now_unix_ms(),
                ranks: Vec::new(),
            })),
            Some(key) = finished.recv() => { attempts.0.remove(&key); }
            () = stopped(&mut stop) => {
                // Leaving cleanly: the coordinator re-forms the group as a
                // membership change, not a failure. The stream stays open
                // a moment so the Drain goes out before the connection.
                send(Out::Drain(v1::Drain { reason: "the worker is shutting down".into() }));
                tokio::time::sleep(DRAIN_GRACE).await;
                return Ok(Ended::Shutdown);
            }
            message = inbound.message() => match message {
                Ok(Some(v1::CoordinatorMessage { message: Some(m) })) => match m {
                    In::Assignment(a) => {
                        let key = (a.job_id.clone(), a.attempt);
                        tracing::info!(job_id = %a.job_id, attempt = a.attempt, ranks = a.ranks.len(), world_size = a.world_size, "assignment");
                        let context = group::Context {
                            config: config.clone(),
                            checkpoints: checkpoints.clone(),
                            out: out.clone(),
                            finished: finished_tx.clone(),
                            metrics: metrics.clone(),
                        };
                        attempts.0.insert(key, group::start(a, context));
                    }
                    In::Rendezvous(r) => match attempts.0.get(&(r.job_id.clone(), r.attempt)) {
                        Some(attempt) => attempt.rendezvous(&r),
                        None => tracing::warn!(job_id = %r.job_id, attempt = r.attempt, "rendezvous for an attempt this worker does not run"),
                    },
                    In::Cancel(c) => {
                        if let Some(attempt) = attempts.0.get(&(c.job_id.clone(), c.attempt)) {
                            tracing::info!(job_id = %c.job_id, attempt = c.attempt, reason = %c.reason, "cancelling");
                            attempt.cancel(&c.reason);
                        }
                    }
                    In::Shutdown(s) => {
                        tracing::info!(reason = %s.reason, "the coordinator asked this worker to exit");
                        return Ok(Ended::Shutdown);
                    }
                    In::Registered(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Ended::Broken("the coordinator closed the stream".into())),
                Err(s) => return Ok(Ended::Broken(s.message().to_string())),
            },
        }
    }
}

/// The CPU's model name from `/proc/cpuinfo`, or `cpu`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "cpu".into())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
