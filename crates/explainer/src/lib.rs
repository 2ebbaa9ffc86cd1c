//! `camshaft-explainer`: the explainer service as a library. It loads model
//! versions registered in the [`Store`], caches them,
//! and answers `camshaft.v1.Explainer` (`Explain`, `ExplainStream`) with
//! Class Activation Maps over gRPC, beside the standard health service and
//! server reflection (v1 and v1alpha) and `ServerInfo` (loaded models, device). A binary parses its flags into a
//! [`Config`], opens a store, binds a listener and calls [`serve`].
//!
//! # Main types
//!
//! - [`Config`]: limits (images per request, bytes and pixels per image,
//!   queued images), batching (images per forward pass, max wait, replicas),
//!   model cache size, device, precision, metrics address; serde with defaults,
//!   checked by [`Config::validate`].
//! - [`ExplainEngine`]: the explain logic without the network, shared by
//!   every call; [`ExplainerService`] is the tonic adapter over it.
//! - [`ModelCache`] / [`LoadedModel`]: versions loaded once per
//!   `name:version`, least recently used evicted; each loaded version owns
//!   its batcher and inference threads ([`BatchSettings`]).
//! - [`Metrics`]: the Prometheus metrics, served by [`serve`] on
//!   `metrics_listen` through [`camshaft_metrics`].
//! - [`Error`]: every request-level failure, with one status code each.
//!
//! # Preprocessing contract
//!
//! Clients comparing maps against their own must preprocess the same way.
//! Each image is decoded (PNG or JPEG, EXIF orientation ignored) to 8-bit
//! RGB; then, as validation does ([`camshaft_vision::cam::preprocess`] with
//! [`ResizeMethod::Crop`](camshaft_data::ResizeMethod::Crop), see [`RESIZE`]),
//! the largest centred square is cut out and scaled to the model's
//! `input_size` (a no-op when the image already is `input_size`²), pixels
//! are scaled to [0, 1] and normalised with the model's normalisation
//! (ImageNet mean/std, or none). Maps are at the feature-map resolution of
//! that resized image; overlays (`return_overlay`) draw `maps[0]`, min–max
//! normalised, over it (magma and alpha 0.5 unless the request says
//! otherwise).
//!
//! # Behaviour
//!
//! - `ExplainRequest.model` is resolved through the store on every request,
//!   so a moved alias takes effect on the next call; loaded models are
//!   cached by `name:version`. The explainer also watches the aliases: when
//!   an alias of a loaded model moves, its new version is loaded right away.
//! - Admission: a request's images count against
//!   [`Config::max_queued_images`] from when its model is resolved until it
//!   is answered; a request that would pass the bound fails at once with
//!   RESOURCE_EXHAUSTED and `retry-after-ms` metadata (the queue ahead at
//!   the recent compute time per image), before anything is decoded. Memory is
//!   bounded by that, never by the number of clients.
//! - A problem with one image (not a PNG/JPEG, truncated, 0×0, over the byte
//!   or pixel limit — sizes are read from the PNG/JPEG header before any
//!   decoder runs, so a decompression bomb allocates nothing — target class
//!   out of range) goes into that image's `error` and `error_kind`; the other
//!   images are answered ([`prepare_image`]).
//! - Dynamic batching: images are decoded and resized on tokio's blocking
//!   pool, then queued for their model version. Each version has
//!   [`Config::model_replicas`] inference threads (their own copy of the
//!   weights, on the configured device) that take the images of *every*
//!   request for that version into one forward pass: up to
//!   [`Config::max_batch`] images (on a CPU no more than
//!   [`CPU_PASS_PIXELS`] of input: 8 images at 224 px, 1 at
//!   512 px; convolution weights and inputs are kept channels-last there),
//!   or whatever arrived within
//!   [`Config::max_batch_wait_ms`] of the first (under load the queue fills
//!   passes without waiting). A pass computes one method; mixed methods are
//!   split. Overlays and upsampled maps are drawn on the blocking pool
//!   again, so the model never waits on image work.
//! - Results do not depend on batching: with [`Config::batch_invariant`]
//!   (the default) a lone image runs as a pass of two copies where libtorch
//!   would compute a batch of one with other kernels (each inference thread
//!   probes this once when the version loads: at small inputs it does; for
//!   ResNets at 224 or 512 px on a CPU a pass of one is already bit-for-bit
//!   a row of a pass of two, so lone images cost one image's compute);
//!   every other computation runs image by image. A request gets
//!   bit-for-bit the maps it gets alone.
//! - Threads: the inference threads are the only ones that run libtorch's
//!   operations in parallel; decoding, drawing and loading run them
//!   serially ([`camshaft_vision::threads`]: every extra OpenMP team makes
//!   libgomp stop spinning between operations, ~40% slower passes on 2
//!   cores). A program embedding [`serve`] should keep its own threads
//!   serial too (`tokio::runtime::Builder::on_thread_start(
//!   camshaft_vision::threads::run_serially_here)`, as the `camshaft`
//!   binary does).
//! - Precision: [`Config::precision`] `bf16` runs the models' bodies in
//!   bfloat16 ([`camshaft_vision::Model::body_in`]): about twice the
//!   images/s on a CPU with bfloat16 instructions, maps within ~1–2% of
//!   their largest value of float32's; the head and every method's maths
//!   stay float32. Off (`fp32`) by default.
//! - Deadlines: a `grpc-timeout` sets the request's deadline. A pass closes
//!   no later than the earliest deadline of its images; images whose
//!   deadline passed or whose caller went away (client gone, call
//!   cancelled) are dropped before compute (`images_dropped_total`), and
//!   the call fails DEADLINE_EXCEEDED.
//! - `ExplainStream`: up to 4 requests of a stream are explained at once
//!   (their images batch like any others); responses leave in request
//!   order, each as soon as it and those before it are done. A
//!   request-level error ends the stream after the responses before it and
//!   cancels the requests after it.
//! - Health (`grpc.health.v1`): `camshaft.v1.Explainer` is NOT_SERVING
//!   while a model version loads and from the moment the server drains;
//!   SERVING otherwise.
//! - Methods: `EXPLAIN_METHOD_UNSPECIFIED` picks CAM when the head is a
//!   pooled linear map and Grad-CAM otherwise; Grad-CAM++, XGrad-CAM,
//!   LayerCAM and HiResCAM compute what pytorch-grad-cam's classes of those
//!   names do before scaling ([`camshaft_vision::CamMethod`]). The body
//!   runs once per pass; `top_k` maps come from the same features. `top_k`,
//!   `colormap`, `alpha` and `return_upsampled_maps` are honoured.
//! - Faithfulness (`ExplainRequest.faithfulness`): each map gets its score
//!   ([`camshaft_vision::Faithfulness`]): deletion AUC (20 steps, pixels set
//!   to 0 in the normalised input in decreasing order of the upsampled map,
//!   trapezoidal area under the class probability) or average drop
//!   (`max(0, p − p_masked)/p` with the input times the min–max normalised
//!   upsampled map). They cost 21 and 2 extra images of compute per map.
//!
//! # Status codes (request-level)
//!
//! | failure | code |
//! |---|---|
//! | malformed model reference, unknown enum value, alpha outside [0, 1] | INVALID_ARGUMENT |
//! | more images than [`Config::max_images_per_request`] | INVALID_ARGUMENT (it stays wrong on retry) |
//! | a message over [`camshaft_proto::MAX_MESSAGE_BYTES`] (64 MiB) | OUT_OF_RANGE (tonic's own answer) |
//! | unknown model, alias or version | NOT_FOUND |
//! | CAM asked of a head without a pooled linear map | FAILED_PRECONDITION (the message suggests Grad-CAM) |
//! | more than [`Config::max_queued_images`] images admitted | RESOURCE_EXHAUSTED, metadata `retry-after-ms` |
//! | the request's `grpc-timeout` passed | DEADLINE_EXCEEDED (or CANCELLED from tonic's own timer) |
//! | the store cannot be reached | UNAVAILABLE |
//! | a version whose weights do not fit its spec; a libtorch failure | INTERNAL |
//!
//! # Metrics
//!
//! With `metrics_listen` set, `GET /metrics` on that address answers the
//! Prometheus text format: requests by RPC and code, request latency,
//! images by method and result, images dropped, queued images, batch size,
//! inference time per batch, batches by method (see [`Metrics`]).
//!
//! # Example
//!
//! (Compiled, not run: doctests cannot find libtorch.)
//!
//! ```no_run,standalone_crate
//! use std::sync::Arc;
//! use camshaft_explainer::{Config, serve};
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

mod batcher;
mod config;
mod error;
mod explain;
mod inference;
mod metrics;
mod models;
mod queue;
mod service;

use std::future::Future;
use std::sync::Arc;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::security::{ServerSecurity, serve_plain_health};
use camshaft_proto::v1::explainer_server::ExplainerServer;
use camshaft_proto::v1::server_info_server::ServerInfoServer;
use camshaft_store::Store;
use tonic_health::ServingStatus;

pub use batcher::{BatchSettings, CPU_PASS_PIXELS};
pub use config::Config;
pub use error::{Error, Result};
pub use explain::{ExplainEngine, ImageError, RESIZE, decode_error_kind, prepare_image};
pub use metrics::Metrics;
pub use models::{LoadedModel, ModelCache};
pub use service::{ExplainerService, grpc_deadline};

/// Runs `f` on tokio's blocking pool with libtorch serial on that thread
/// (see [`camshaft_vision::threads`]): decoding, drawing and loading must
/// not start OpenMP teams beside the inference threads'.
pub(crate) fn spawn_blocking_serial<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> tokio::task::JoinHandle<R> {
    tokio::task::spawn_blocking(move || {
        camshaft_vision::threads::run_serially_here();
        f()
    })
}

/// Serves the explainer, health and reflection on `listener` until
/// `shutdown` completes; then health turns NOT_SERVING, no new connection is
/// accepted, and calls in flight finish before this returns.
///
/// When [`Config::metrics_listen`] is set, the Prometheus endpoint is bound
/// there (see [`serve_with_metrics`]).
pub async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let metrics_listener = match config.metrics_addr()? {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Config(format!("metrics_listen {addr}: {e}")))?,
        ),
        None => None,
    };
    serve_with_metrics(config, store, listener, metrics_listener, shutdown).await
}

/// [`serve`], with the Prometheus endpoint (`GET /metrics`) on
/// `metrics_listener` when given (and [`Config::metrics_listen`] ignored):
/// tests bind `127.0.0.1:0` and hand both listeners over.
pub async fn serve_with_metrics(
    config: Config,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let security = ServerSecurity::load(&config.tls, config.auth_token_file.as_deref())
        .map_err(|e| Error::Config(e.to_string()))?;
    let device = config.torch_device()?;
    let addr = listener.local_addr().ok();
    let metrics = Arc::new(Metrics::new()?);
    let engine = Arc::new(ExplainEngine::new(
        &config,
        Arc::clone(&store),
        device,
        Arc::clone(&metrics),
    ));
    let mut loading = engine.cache().loading();
    let follower = Arc::clone(&engine);
    let service = ExplainerService::new(engine);
    let info = ServerInfoServer::new(service.clone());
    let explainer = ExplainerServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExplainerServer<ExplainerService>>()
        .await;
    let reflection_v1 = camshaft_proto::reflection_v1()
        .map_err(|e| Error::Internal(format!("reflection v1: {e}")))?;
    let reflection_v1alpha = camshaft_proto::reflection_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection v1alpha: {e}")))?;

    let _plain_health = match &config.health_listen {
        Some(addr) => Some(
            serve_plain_health(addr, health_service.clone())
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
        ),
        None => None,
    };
    tracing::info!(
        addr = ?addr,
        store = %store.describe(),
        device = ?device,
        tls = security.tls(),
        mutual_tls = security.mutual_tls(),
        token = security.token_required(),
        "explainer serving"
    );
    // NOT_SERVING while a model version loads: a balancer sends the next
    // requests elsewhere instead of queueing them behind the load.
    let (draining_tx, mut draining) = tokio::sync::watch::channel(false);
    let stop_following = draining_tx.subscribe();
    tokio::spawn(async move { follower.cache().follow_aliases(stop_following).await });
    let loads_health = health.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = loading.changed() => if changed.is_err() { return },
                _ = draining.wait_for(|d| *d) => return,
            }
            let busy = *loading.borrow_and_update() > 0;
            if *draining.borrow() {
                return;
            }
            if busy {
                loads_health
                    .set_not_serving::<ExplainerServer<ExplainerService>>()
                    .await;
            } else {
                loads_health
                    .set_serving::<ExplainerServer<ExplainerService>>()
                    .await;
            }
        }
    });
    if let Some(metrics_listener) = metrics_listener {
        let registry = metrics.registry().clone();
        let mut stop_metrics = draining_tx.subscribe();
        tokio::spawn(camshaft_metrics::serve(
            metrics_listener,
            registry,
            async move {
                let _ = stop_metrics.wait_for(|d| *d).await;
            },
        ));
    }
    let drain = async move {
        shutdown.await;
        draining_tx.send_replace(true);
        health
            .set_not_serving::<ExplainerServer<ExplainerService>>()
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tracing::info!("explainer draining");
    };
    security
        .builder()
        .map_err(|e| Error::Config(e.to_string()))?
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(explainer)
        .add_service(info)
        .serve_with_incoming_shutdown(camshaft_proto::security::incoming(listener), drain)
        .await?;
    tracing::info!("explainer stopped");
    Ok(())
}
