//! `camshaft-explainer`: the explainer service as a library. It loads model
//! versions registered in the [`Store`], caches them,
//! and answers `camshaft.v1.Explainer` (`Explain`, `ExplainStream`) with
//! Class Activation Maps over gRPC, beside the standard health service and
//! server reflection (v1 and v1alpha) and `ServerInfo` (loaded models, device). A binary parses its flags into a
//! [`Config`], opens a store, binds a listener and calls [`serve`].
//!
//! # Main types
//!
//! - [`Config`]: limits (images per request, bytes and pixels per image),
//!   admission budgets (queued images, decoded bytes in flight, compute
//!   units queued and per request), what models are loaded (input size,
//!   classes, how long a failed load is remembered), batching (images per
//!   forward pass, max wait, replicas), model cache size, device, precision,
//!   metrics address; serde with defaults, checked by [`Config::validate`].
//! - [`ExplainEngine`]: the explain logic without the network, shared by
//!   every call; [`ExplainerService`] is the tonic adapter over it.
//! - [`ModelCache`] / [`LoadedModel`]: versions loaded once per
//!   `name:version`, least recently used evicted; each loaded version owns
//!   its batcher and inference threads ([`BatchSettings`]); what is refused
//!   and how long a failure is remembered ([`LoadLimits`]).
//! - [`Metrics`]: the Prometheus metrics, served by [`serve`] on
//!   `metrics_listen` through [`camshaft_metrics`].
//! - [`Error`]: every request-level failure, with one status code each.
//! - [`preload`]: [`Config::preload`]'s versions loaded and warmed up before
//!   health says SERVING, followed when their aliases move.
//!
//! # Preprocessing contract
//!
//! Clients comparing maps against their own must preprocess the same way.
//! Each image is decoded (PNG or JPEG, EXIF orientation ignored) to 8-bit
//! RGB; then it is resized to the model's `input_size` as the model's
//! validation did ([`camshaft_vision::cam::preprocess`] with the resize the
//! version records: for `crop`, the default and what versions stored before
//! it was recorded get, the largest centred square is cut out and scaled;
//! `squish` stretches the whole image; `pad` fits it and fills with black;
//! a no-op when the image already is `input_size`²), pixels
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
//! - Admission by cost: once its model is resolved, and before anything of
//!   it is decoded, a request is charged against three budgets ([`Budget`]):
//!   its images against [`Config::max_queued_images`]; the bytes its images
//!   decode to, estimated from their PNG/JPEG headers (width × height × the
//!   bytes per pixel of the decoded form and of the RGB copy, plus resizing
//!   scratch and the model input), against
//!   [`Config::max_decode_bytes_in_flight`] — the decoder is then held to
//!   the pixels its header declared; and its compute units (one forward
//!   pass per image, plus `top_k` × 21 for deletion AUC or × 2 for average
//!   drop, each ⌈input_size²/224²⌉ units) against
//!   [`Config::max_queued_compute_units`]. A request that would pass one
//!   fails at once with RESOURCE_EXHAUSTED and `retry-after-ms` metadata
//!   (the units queued ahead at the recent time per unit; the message names
//!   the budget's config key); one that could never fit (over
//!   [`Config::max_compute_units_per_request`] or the whole decoded-bytes
//!   budget) is INVALID_ARGUMENT, naming the key. Memory and queued work are
//!   bounded by these, never by the number of clients.
//! - The charge is held until the work it pays for has really stopped, not
//!   until the call ends: a request's images are decoded on at most
//!   [`Config::decode_tasks_per_request`] blocking tasks (by default one
//!   per core, 8 at most), each holding the decoding of one
//!   image at a time and checking between images whether the call is gone;
//!   each image's part then travels with it — its compute units into the
//!   batcher's queue until its pass is computed or it is dropped, its model
//!   input until its answer is drawn. A cancelled call's decoding or pass
//!   that already started runs to its end, charged.
//! - Fairness: passes are first come, first served, and an image's
//!   faithfulness runs inside its pass, so a request admitted before yours
//!   delays yours by at most its compute units, which
//!   [`Config::max_compute_units_per_request`] bounds (1024 by default: one
//!   Score-CAM image at `layer4`, or 46 at 224 px with deletion AUC); the queue ahead
//!   of any request is at most [`Config::max_queued_compute_units`].
//! - Model versions: a spec over [`Config::max_model_input_size`] or
//!   [`Config::max_model_classes`] is refused before its weights are
//!   fetched; the weights' tensor names, shapes and dtypes are checked
//!   against the spec from the safetensors header before any network is
//!   built (a head is never allocated from a spec the file does not back).
//!   A version that failed to load answers FAILED_PRECONDITION with the
//!   reason, without being loaded again, for
//!   [`Config::failed_load_retry_secs`]; another version (or an alias moved
//!   to one) is loaded at once.
//! - A problem with one image (not a PNG/JPEG, a PNG/JPEG whose header does
//!   not give its size, truncated, 0×0, over the byte or pixel limit — sizes
//!   are read from the PNG/JPEG header before any decoder runs, so a
//!   decompression bomb over the limit allocates nothing — target class out
//!   of range) goes into that image's `error` and `error_kind`; the other
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
//!   while a model version loads, until every [`Config::preload`] version
//!   is loaded and warmed up (and while a moved alias's new version warms
//!   up), and from the moment the server drains;
//!   SERVING otherwise.
//! - Methods: `EXPLAIN_METHOD_UNSPECIFIED` picks CAM when the head is a
//!   pooled linear map and the maps are at the last layer (not smoothed),
//!   Grad-CAM otherwise; Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM and
//!   Score-CAM compute what pytorch-grad-cam's classes of those names do
//!   before scaling ([`camshaft_vision::CamMethod`]). `target_layers` picks
//!   the layers (torchvision's names; several are fused as TorchCAM does,
//!   [`camshaft_vision::cam::MapRecipe`]); the body runs once per pass up to
//!   the deepest of them without autograd, the rest of the model with it for
//!   the gradient methods; `top_k` maps come from the same features. A pass
//!   computes one recipe (method, layers, `aug_smooth`): the batcher splits
//!   by it. `top_k`, `colormap`, `alpha` and `return_upsampled_maps` are
//!   honoured. Every response's `recipe` names the method that ran, the
//!   layers, the body's precision, the faithfulness baseline and
//!   `aug_smooth`.
//! - Faithfulness (`ExplainRequest.faithfulness`): each map gets its score
//!   ([`camshaft_vision::Faithfulness`]): deletion AUC (20 steps, pixels set
//!   to the request's [`camshaft_vision::cam::Baseline`] — ImageNet's mean
//!   colour by default, for every model — in decreasing order of the
//!   upsampled map, trapezoidal area under the class probability), average
//!   drop (`max(0, p − p_masked)/p` with the input blended towards the
//!   baseline by the min–max normalised upsampled map) or ROAD
//!   (most-relevant-first linear imputation). They cost 21, 2 and 3 extra
//!   images of compute per map; Score-CAM one per channel of each layer,
//!   `aug_smooth` six times the maps' passes (see `cost.rs`). Score-CAM's
//!   masked images, like the faithfulness scores' perturbed ones, go
//!   through the model in passes of at most `max_batch` images.
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
//! | more compute units than [`Config::max_compute_units_per_request`], or images decoding to more than [`Config::max_decode_bytes_in_flight`] | INVALID_ARGUMENT (the message names the config key) |
//! | admitting it would pass [`Config::max_queued_images`], [`Config::max_queued_compute_units`] or [`Config::max_decode_bytes_in_flight`] | RESOURCE_EXHAUSTED, metadata `retry-after-ms` |
//! | the request's `grpc-timeout` passed | DEADLINE_EXCEEDED (or CANCELLED from tonic's own timer) |
//! | the store cannot be reached | UNAVAILABLE |
//! | a version over [`Config::max_model_input_size`] or [`Config::max_model_classes`], whose weights do not fit its spec, or that failed to load (remembered for [`Config::failed_load_retry_secs`]) | FAILED_PRECONDITION |
//! | a libtorch failure on a batch | INTERNAL |
//!
//! # Metrics
//!
//! With `metrics_listen` set, `GET /metrics` on that address answers the
//! Prometheus text format: requests by RPC and code (a call dropped before
//! its answer counts as CANCELLED), request latency, images by method and
//! result, images dropped, what admission holds (images, decoded bytes,
//! compute units), images being decoded, model loads by result, batch size,
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
mod cost;
mod error;
mod explain;
mod http;
mod inference;
mod metrics;
mod models;
pub mod preload;
mod queue;
mod service;

use std::future::Future;
use std::sync::Arc;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::security::ServerSecurity;
use camshaft_proto::v1::explainer_server::ExplainerServer;
use camshaft_proto::v1::server_info_server::ServerInfoServer;
use camshaft_store::Store;
use tonic::server::NamedService;

pub use batcher::{BatchSettings, CPU_PASS_PIXELS};
pub use camshaft_http::server::ServerConfig;
pub use config::{Config, ModelSettings};
pub use error::{Error, Result};
pub use explain::{ExplainEngine, ImageError, decode_error_kind, prepare_image};
pub use metrics::Metrics;
pub use models::{LoadLimits, LoadedModel, ModelCache};
pub use queue::Budget;
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
/// When [`ServerConfig::metrics_listen`] is set, the Prometheus endpoint is bound
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
/// `metrics_listener` when given (and [`ServerConfig::metrics_listen`] ignored):
/// tests bind `127.0.0.1:0` and hand both listeners over.
pub async fn serve_with_metrics(
    config: Config,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let security = ServerSecurity::load(&config.server.tls, config.server.credentials(None))
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
    let preloader = Arc::new(preload::Preloader::new(&config, Arc::clone(&engine)));
    let mut preloaded = preloader.ready();
    let routes = http::routes(Arc::clone(&engine));
    let service = ExplainerService::new(engine).with_preloader(Arc::clone(&preloader));
    let info = ServerInfoServer::new(service.clone());
    let explainer = ExplainerServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let startup = camshaft_http::Startup::new(
        <ExplainerServer<ExplainerService> as NamedService>::NAME,
        config.server.health_listen.as_deref(),
    )
    .await
    .map_err(startup_error)?;
    // NOT_SERVING until the preloaded versions are warm.
    let ready = *preloaded.borrow_and_update();
    startup.set_serving(ready).await;
    tracing::info!(
        addr = ?addr,
        store = %store.describe(),
        device = ?device,
        tls = security.tls(),
        mutual_tls = security.mutual_tls(),
        token = security.token_required(),
        "explainer serving"
    );
    // NOT_SERVING while a model version loads or a preloaded one is not
    // warm yet: a balancer sends the next requests elsewhere instead of
    // queueing them behind the load.
    let stop_following = startup.closing();
    tokio::spawn(async move { follower.cache().follow_aliases(stop_following).await });
    let stop_preloading = startup.closing();
    tokio::spawn(async move { preloader.run(stop_preloading).await });
    let loads_health = startup.health().clone();
    let mut draining = startup.closing();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = loading.changed() => if changed.is_err() { return },
                changed = preloaded.changed() => if changed.is_err() { return },
                _ = draining.wait_for(|d| *d) => return,
            }
            let busy = *loading.borrow_and_update() > 0 || !*preloaded.borrow_and_update();
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
        startup.serve_metrics(
            metrics_listener,
            metrics.registry().clone(),
            security.metrics_guard(),
        );
    }
    let mut grpc = startup.grpc_routes().map_err(startup_error)?;
    grpc.add_service(explainer).add_service(info);
    let gateway = camshaft_http::Gateway::new(
        "Camshaft explainer",
        routes,
        camshaft_http::GrpcClient::new(grpc.routes()),
        security.authenticator(),
        "camshaft.v1.Explainer",
    );
    let on_drain = async {
        tracing::info!("explainer draining");
    };
    startup
        .serve(gateway, &security, listener, shutdown, on_drain, None)
        .await
        .map_err(startup_error)?;
    tracing::info!("explainer stopped");
    Ok(())
}

/// The explainer's error for a failed start-up or server.
fn startup_error(e: camshaft_http::server::Error) -> Error {
    match e {
        camshaft_http::server::Error::Transport(e) => e.into(),
        camshaft_http::server::Error::Security(e) => Error::Config(e.to_string()),
        camshaft_http::server::Error::Reflection(e) => Error::Internal(format!("reflection {e}")),
    }
}
