//! Starting a Camshaft server: the one start-up every service uses, and the
//! configuration block every server's config flattens in
//! ([`ServerConfig`]: TLS, credentials, plaintext health, metrics).
//!
//! A service builds a [`Startup`] (the health reporter, the plaintext health
//! port when one is configured), adds its gRPC services to
//! [`Startup::grpc_routes`] (which already holds health and reflection v1
//! and v1alpha), serves its metrics with [`Startup::serve_metrics`], and
//! hands its [`Gateway`] to [`Startup::serve`].
//!
//! Draining, in this order, once `shutdown` completes: [`Startup::closing`]
//! turns true (the metrics port and whatever else follows it stop), the
//! service's gRPC health and the server's (`""`) turn NOT_SERVING, the
//! service's own drain runs, and no new connection is accepted. Calls in
//! flight then finish, or, with a grace, are cut off that long after the
//! drain.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camshaft_proto::security::{
    CredentialFiles, MetricsGuard, PlainHealth, ServerSecurity, TlsConfig, serve_plain_health,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::Gateway;

/// The keys every server's configuration has, flattened into it
/// (`#[serde(flatten)]`: the same top-level keys as before they were
/// shared). Every field has a default: plaintext, no credential, no health
/// port, no metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// TLS for every call (`cert`, `key`; `client_ca` for mutual TLS).
    /// Default: plaintext.
    pub tls: TlsConfig,
    /// A file holding one bearer token, an `editor` named `token`: every
    /// call but health must then carry a client token. Default: none.
    pub auth_token_file: Option<PathBuf>,
    /// A tokens file: `token,name,role` per line, roles `viewer`, `editor`
    /// or `worker` (README: roles). Default: none.
    pub auth_tokens_file: Option<PathBuf>,
    /// Also serve the health service alone, in plaintext, on this
    /// `HOST:PORT`: for probes that cannot do (mutual) TLS. Default: off.
    pub health_listen: Option<String>,
    /// Address (`HOST:PORT`) of the Prometheus metrics endpoint
    /// (`GET /metrics`, text format); empty: none. Default empty.
    pub metrics_listen: String,
}

impl ServerConfig {
    /// The credential files, with the workers' credential `worker_token`
    /// where the server has workers.
    pub fn credentials<'a>(&'a self, worker_token: Option<&'a Path>) -> CredentialFiles<'a> {
        CredentialFiles {
            token: self.auth_token_file.as_deref(),
            tokens: self.auth_tokens_file.as_deref(),
            worker_token,
        }
    }

    /// [`ServerConfig::metrics_listen`] parsed; `None` when empty (no
    /// endpoint). The error names the key.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, camshaft_metrics::Error> {
        camshaft_metrics::parse_listen(&self.metrics_listen)
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The credentials, TLS or the plaintext health port.
    #[error(transparent)]
    Security(#[from] camshaft_proto::Error),
    /// The server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A server being started: its health, its drain signal.
pub struct Startup {
    /// The service's gRPC name (`camshaft.v1.Coordinator`): its health
    /// entry, the gateway's service.
    service: &'static str,
    health: HealthReporter,
    health_service: HealthServer<HealthService>,
    closing: watch::Sender<bool>,
    _plain_health: Option<PlainHealth>,
}

impl std::fmt::Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Startup {
    /// The start of `service`'s server (its gRPC name), with the health
    /// service alone also served in plaintext on `health_listen` when set.
    pub async fn new(service: &'static str, health_listen: Option<&str>) -> Result<Self, Error> {
        let health = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        let plain_health = match health_listen {
            Some(addr) => Some(serve_plain_health(addr, health_service.clone()).await?),
            None => None,
        };
        Ok(Startup {
            service,
            health,
            health_service,
            closing: watch::channel(false).0,
            _plain_health: plain_health,
        })
    }

    /// The health reporter (SERVING and NOT_SERVING of the service).
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Sets the service's health.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status(self.service, status).await;
    }

    /// Turns true when the server starts draining.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// gRPC routes holding health and reflection (v1 and v1alpha); the
    /// service adds its own.
    pub fn grpc_routes(&self) -> Result<tonic::service::RoutesBuilder, Error> {
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(self.health_service.clone())
            .add_service(
                camshaft_proto::reflection_v1().map_err(|e| Error::Reflection(e.to_string()))?,
            )
            .add_service(
                camshaft_proto::reflection_v1alpha()
                    .map_err(|e| Error::Reflection(e.to_string()))?,
            );
        Ok(routes)
    }

    /// Serves `registry` (`GET /metrics`) on `listener` until the server
    /// drains.
    pub fn serve_metrics(
        &self,
        listener: tokio::net::TcpListener,
        registry: camshaft_metrics::prometheus::Registry,
        guard: Option<MetricsGuard>,
    ) {
        let mut closing = self.closing();
        tokio::spawn(camshaft_metrics::serve_guarded(
            listener,
            registry,
            guard,
            async move {
                let _ = closing.wait_for(|c| *c).await;
            },
        ));
    }

    /// Serves `gateway` (the gRPC routes and the HTTP ones) on `listener`
    /// with `security` until `shutdown` completes; then drains (see the
    /// module) and runs `on_drain`. With `grace`, calls still open that long
    /// after the drain are cut off (a warning says so).
    pub async fn serve(
        self,
        gateway: Gateway,
        security: &ServerSecurity,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
        on_drain: impl Future<Output = ()> + Send,
        grace: Option<Duration>,
    ) -> Result<(), Error> {
        let Startup {
            service,
            health,
            closing,
            _plain_health,
            ..
        } = self;
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = async move {
            shutdown.await;
            closing.send_replace(true);
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            on_drain.await;
            let _ = stopped_tx.send(());
        };
        let server = security
            .builder()?
            .add_routes(gateway.into_routes())
            .serve_with_incoming_shutdown(security.incoming(listener), drain);
        let Some(grace) = grace else {
            return Ok(server.await?);
        };
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            () = async {
                let _ = stopped.await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("calls still open after the drain grace; stopping anyway"),
        }
        Ok(())
    }
}
