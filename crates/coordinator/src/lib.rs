//! `camshaft-coordinator`: the coordinator service as a library. It accepts
//! training jobs (`camshaft.v1.Coordinator`), keeps the workers' control
//! streams (`camshaft.v1.WorkerLink`, opened by the workers), assigns queued
//! jobs to idle workers, records their epoch rows and failures, restarts an
//! attempt from its last checkpoint while the job's failure budget lasts,
//! and registers the trained model in the store's registry. It holds no
//! tensors and does not link libtorch.
//!
//! # Main types
//!
//! - [`Config`]: listen address, worker lease TTL and heartbeat interval,
//!   the keys every server has ([`ServerConfig`], flattened: TLS,
//!   credentials, health and metrics ports); serde with defaults, checked
//!   by [`Config::validate`].
//! - [`Cluster`]: the one owner of the state behind every RPC — the worker
//!   table (each worker with a domain status, made wire only in the
//!   service), the running attempts' rendezvous groups, the per-job event
//!   logs that `WatchJob` follows — and the job transitions (each a
//!   compare-and-set on the job's store record, one at a time). The
//!   decisions it carries out are pure functions, tested without a server:
//!   where an attempt's ranks are placed and with which collective
//!   (`cluster::placement`), whether a failed attempt's job restarts or
//!   fails and the failure-policy defaults (`cluster::budget`), when the
//!   ranks have all met or finished (`cluster::rendezvous`), what a
//!   worker's message may refer to (`cluster::workers`).
//! - [`CoordinatorService`]: the tonic adapter for `Coordinator`,
//!   `WorkerLink` and `ServerInfo`.
//! - [`spec::complete`]: a job spec with every default applied, or the
//!   reason it is refused (INVALID_ARGUMENT).
//! - [`Error`]: one variant per kind of failure, one status code each.
//! - [`tensorboard`]: each job's epoch rows as TensorBoard event files
//!   under [`Config::tensorboard_dir`].
//!
//! # A job's life
//!
//! `SubmitJob` stores the job PENDING. A scheduling pass (after a submit, a
//! worker registering, an attempt ending) gives the oldest queued job a
//! group of idle workers — `workers` of them (on a restart, down to
//! `min_workers`), each hosting one rank per GPU it offers (or one CPU
//! rank) — and the job turns RUNNING with a new attempt. Every worker of the
//! group gets an `Assignment` (its ranks, the world size, the collective:
//! NCCL when every rank is on a GPU, else the TCP ring; the checkpoint to
//! resume from). A group larger than one rank meets first: every rank
//! offers its rendezvous data (rank 0 the NCCL unique id; each rank its
//! ring address, a `0.0.0.0` host replaced by the address its worker
//! connects from), and once all have, every worker gets the `Rendezvous`;
//! ranks missing after `rendezvous_timeout_ms` fail the attempt. Rank 0
//! reports each epoch (appended to the job's history) and stores
//! checkpoints through `WorkerLink.PutCheckpoint`; when every rank sent
//! `TaskDone`, the coordinator takes rank 0's final checkpoint, registers
//! its weights as `name:N` with `latest` (and the spec's aliases) and
//! lineage, and the job SUCCEEDS. An all-reduce sweep
//! (`JobSpec.collective_bench`, `ctl bench allreduce`) gets its group the
//! same way, but rank 0 reports `AllReduceReport` rows instead of epochs
//! (kept in the record's history, shown as `Job.allreduce_rows`, streamed
//! as `Allreduce` events), and it SUCCEEDS with nothing to register; its
//! largest message is refused on submit when no known worker's device could
//! hold it. A `TaskFailed` or a lost worker (its
//! stream ended or was silent past the lease TTL) fails the attempt: the
//! other workers are told to cancel, and the job goes back to the queue
//! (RESTARTING) while `max_failures` lasts and the failure is retryable,
//! else it FAILS. A coordinator that restarts requeues the jobs it finds
//! RUNNING.

//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use camshaft_coordinator::{Config, serve};
//! use camshaft_store::{EmbeddedConfig, EmbeddedStore, Store};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::default();
//! config.validate()?;
//! let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new("data")).await?);
//! let listener = tokio::net::TcpListener::bind(config.listen_addr()?).await?;
//! // A binary would wait for SIGTERM / Ctrl-C here.
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! serve(config, store, listener, async {
//!     let _ = stopped.await;
//! })
//! .await?;
//! # Ok(()) }
//! ```

mod cluster;
mod config;
mod console;
mod error;
mod http;
pub mod jobs;
mod metrics;
pub mod model_events;
pub mod registry;
mod service;
pub mod spec;
pub mod tensorboard;

use std::future::Future;
use std::sync::Arc;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::security::ServerSecurity;
use camshaft_proto::v1::coordinator_server::CoordinatorServer;
use camshaft_proto::v1::server_info_server::ServerInfoServer;
use camshaft_proto::v1::worker_link_server::WorkerLinkServer;
use camshaft_store::Store;
use tonic::server::NamedService;

pub use camshaft_http::server::ServerConfig;
pub use cluster::{
    AttemptFailure, Cluster, Task, Worker, WorkerSender, WorkerStatus, parse_job_id,
};
pub use config::Config;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use service::{CoordinatorService, DRAIN_GRACE};

/// Serves the coordinator, health and reflection on `listener` until
/// `shutdown` completes. Then health turns NOT_SERVING, workers are told to
/// shut down and their streams closed, open `WatchJob` streams end with
/// UNAVAILABLE, and calls in flight get [`DRAIN_GRACE`] to finish.
pub async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let security = ServerSecurity::load(&config.server.tls, config.credentials())?;
    if !security.authenticator().has_worker_credentials() {
        tracing::warn!(
            "no worker credential is configured (worker_token_file or a tokens file's workers): \
             WorkerLink refuses every worker"
        );
    }
    let addr = listener.local_addr().ok();
    let metrics_addr = config
        .server
        .metrics_addr()
        .map_err(|e| Error::Config(e.to_string()))?;
    let metrics = Metrics::new()?;
    let health_listen = config.server.health_listen.clone();
    let explainer = http::explainer_client(&config.explainer_address, &config.explainer_tls)?;
    let cluster = Cluster::new(config, Arc::clone(&store), metrics.clone());
    let request_metrics = metrics.attach(&cluster)?;
    cluster.recover().await?;
    let startup = camshaft_http::Startup::new(
        <CoordinatorServer<CoordinatorService> as NamedService>::NAME,
        health_listen.as_deref(),
    )
    .await
    .map_err(startup_error)?;
    let service = CoordinatorService::new(Arc::clone(&cluster), startup.closing());
    startup.set_serving(true).await;
    startup
        .health()
        .set_serving::<WorkerLinkServer<CoordinatorService>>()
        .await;
    tracing::info!(
        addr = ?addr,
        store = %store.describe(),
        tls = security.tls(),
        mutual_tls = security.mutual_tls(),
        token = security.token_required(),
        "coordinator serving"
    );
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("metrics_listen {addr}: {e}")))?;
        startup.serve_metrics(
            listener,
            metrics.registry().clone(),
            security.metrics_guard(),
        );
    }
    let mut grpc = startup.grpc_routes().map_err(startup_error)?;
    grpc.add_service(
        CoordinatorServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        WorkerLinkServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(ServerInfoServer::new(service));
    // Metrics count each gRPC method, called from the network or from an
    // HTTP route.
    let grpc = tower::Layer::layer(&request_metrics, grpc.routes());
    let gateway = camshaft_http::Gateway::new(
        "Camshaft coordinator",
        http::routes(explainer),
        camshaft_http::GrpcClient::new(grpc),
        security.authenticator(),
        "camshaft.v1.Coordinator",
    )
    .with_assets(console::asset);
    let on_drain = async move {
        tracing::info!("coordinator draining");
        cluster.shutdown_workers("the coordinator is shutting down");
    };
    startup
        .serve(
            gateway,
            &security,
            listener,
            shutdown,
            on_drain,
            Some(DRAIN_GRACE),
        )
        .await
        .map_err(startup_error)?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// The coordinator's error for a failed start-up or server.
fn startup_error(e: camshaft_http::server::Error) -> Error {
    match e {
        camshaft_http::server::Error::Security(e) => e.into(),
        camshaft_http::server::Error::Transport(e) => e.into(),
        camshaft_http::server::Error::Reflection(e) => Error::Internal(format!("reflection {e}")),
    }
}
