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
//!   images per forward pass), model cache size and device; serde with
//!   defaults, checked by [`Config::validate`].
//! - [`ExplainEngine`]: the explain logic without the network, shared by
//!   every call; [`ExplainerService`] is the tonic adapter over it.
//! - [`ModelCache`] / [`LoadedModel`]: versions loaded once per
//!   `name:version`, least recently used evicted.
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
//! - A problem with one image (not a PNG/JPEG, truncated, 0×0, over the byte
//!   or pixel limit, target class out of range) goes into that image's
//!   `error` and `error_kind`; the other images are answered. All good images
//!   of a request go through one forward pass (several if there are more
//!   than [`Config::max_batch`]). Decoding and libtorch run on tokio's
//!   blocking pool; one inference at a time per model version.
//! - Health (`grpc.health.v1`): `camshaft.v1.Explainer` is NOT_SERVING
//!   while a model version loads and from the moment the server drains;
//!   SERVING otherwise.
//! - Method: `EXPLAIN_METHOD_UNSPECIFIED` picks CAM when the head is a pooled
//!   linear map and Grad-CAM otherwise. `top_k`, `colormap`, `alpha` and
//!   `return_upsampled_maps` are honoured.
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
//! | the store cannot be reached | UNAVAILABLE |
//! | Grad-CAM++, faithfulness scores (not implemented yet) | UNIMPLEMENTED |
//! | a version whose weights do not fit its spec; a libtorch failure | INTERNAL |
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

mod config;
mod error;
mod explain;
mod models;
mod service;

use std::future::Future;
use std::sync::Arc;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::explainer_server::ExplainerServer;
use camshaft_proto::v1::server_info_server::ServerInfoServer;
use camshaft_store::Store;
use tonic_health::ServingStatus;

pub use config::Config;
pub use error::{Error, Result};
pub use explain::{ExplainEngine, RESIZE};
pub use models::{LoadedModel, ModelCache};
pub use service::ExplainerService;

/// Serves the explainer, health and reflection on `listener` until
/// `shutdown` completes; then health turns NOT_SERVING, no new connection is
/// accepted, and calls in flight finish before this returns.
pub async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let device = config.torch_device()?;
    let addr = listener.local_addr().ok();
    let engine = Arc::new(ExplainEngine::new(&config, Arc::clone(&store), device));
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

    tracing::info!(addr = ?addr, store = %store.describe(), device = ?device, "explainer serving");
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
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(explainer)
        .add_service(info)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            drain,
        )
        .await?;
    tracing::info!("explainer stopped");
    Ok(())
}
