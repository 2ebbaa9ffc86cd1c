//! Transport security shared by every service and client: TLS (rustls),
//! optional mutual TLS, and a bearer token checked on every call but the
//! health service's (probes carry no token).
//!
//! Servers build their `tonic` server with [`ServerSecurity::builder`];
//! clients open channels from [`ClientSecurity::endpoint`] and wrap them
//! with [`ClientSecurity::channel`] so every call carries the token.
//!
//! ```toml
//! # The config file's [tls] table (and a service's own, e.g. [coordinator.tls]).
//! [tls]
//! cert = "/etc/camshaft/tls/tls.crt"       # the services' certificate chain (PEM)
//! key = "/etc/camshaft/tls/tls.key"        # its private key (PEM)
//! client_ca = "/etc/camshaft/tls/ca.crt"   # set: clients must present a certificate it signed (mTLS)
//! ca = "/etc/camshaft/tls/ca.crt"          # what clients (workers) trust; unset: the system roots
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

use crate::Error;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic_health::pb::health_server::{Health, HealthServer};

/// The gRPC path prefix of the standard health service, open without a token.
pub const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// TLS settings (all PEM files). Servers use `cert`/`key` (TLS on when both
/// are set) and `client_ca` (mutual TLS); clients use `ca`, `server_name`
/// and, for mutual TLS, `cert`/`key` as their own identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain presented to peers.
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
    /// Servers: CA bundle client certificates must chain to (mutual TLS on).
    pub client_ca: Option<PathBuf>,
    /// Clients: CA bundle the server's certificate must chain to (unset:
    /// the system's roots).
    pub ca: Option<PathBuf>,
    /// Clients: the name to verify in the server's certificate when it is
    /// not the host of the address dialled.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Whether anything is set.
    pub fn is_empty(&self) -> bool {
        *self == TlsConfig::default()
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Security(format!("reading the {what} {}: {e}", path.display())))
}

/// Reads a bearer token from `path`: its contents, surrounding whitespace
/// trimmed; empty or not valid in an HTTP header is an error.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let bytes = read("token file", path)?;
    let token = String::from_utf8(bytes)
        .map_err(|_| Error::Security(format!("the token file {} is not UTF-8", path.display())))?
        .trim()
        .to_string();
    check_token(&token).map_err(|e| Error::Security(format!("{}: {e}", path.display())))?;
    Ok(token)
}

fn check_token(token: &str) -> Result<AsciiMetadataValue, Error> {
    if token.is_empty() {
        return Err(Error::Security("the bearer token is empty".into()));
    }
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        Error::Security("the bearer token has characters an HTTP header cannot carry".into())
    })
}

/// A server's TLS and token settings, loaded once at start.
#[derive(Clone, Debug, Default)]
pub struct ServerSecurity {
    tls: Option<ServerTlsConfig>,
    mutual: bool,
    token: Option<Arc<[u8]>>,
}

impl ServerSecurity {
    /// Reads the files `tls` and `token_file` name. TLS needs both `cert`
    /// and `key`; `client_ca` without them is an error (mutual TLS needs TLS).
    pub fn load(tls: &TlsConfig, token_file: Option<&Path>) -> Result<Self, Error> {
        let tls_config = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let identity =
                    Identity::from_pem(read("TLS certificate", cert)?, read("TLS key", key)?);
                let mut config = ServerTlsConfig::new().identity(identity);
                if let Some(ca) = &tls.client_ca {
                    config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
                }
                Some(config)
            }
            (None, None) if tls.client_ca.is_some() => {
                return Err(Error::Security(
                    "tls.client_ca (mutual TLS) needs tls.cert and tls.key".into(),
                ));
            }
            (None, None) => None,
            _ => {
                return Err(Error::Security(
                    "TLS needs both tls.cert and tls.key".into(),
                ));
            }
        };
        let token = token_file
            .map(read_token)
            .transpose()?
            .map(|t| Arc::from(format!("Bearer {t}").into_bytes()));
        Ok(ServerSecurity {
            mutual: tls_config.is_some() && tls.client_ca.is_some(),
            tls: tls_config,
            token,
        })
    }

    /// Whether clients must present a certificate: then health probes,
    /// which cannot, need a plaintext port of their own.
    pub fn mutual_tls(&self) -> bool {
        self.mutual
    }

    /// Whether TLS is on.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether calls need a bearer token.
    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// A server builder with TLS (when configured) and the token check
    /// (when configured) on every service but health.
    pub fn builder(
        &self,
    ) -> Result<Server<tower_layer::Stack<AuthLayer, tower_layer::Identity>>, Error> {
        let mut server = Server::builder();
        if let Some(tls) = &self.tls {
            server = server
                .tls_config(tls.clone())
                .map_err(|e| Error::Security(format!("TLS settings: {e}")))?;
        }
        Ok(server.layer(AuthLayer {
            token: self.token.clone(),
        }))
    }
}

/// The connections `listener` accepts, with `TCP_NODELAY` set, for
/// `serve_with_incoming`: a gRPC answer is several small writes (headers,
/// data, trailers), and with Nagle's algorithm the later ones wait for the
/// client's delayed ACK (40 ms on Linux), which made one explainer request
/// at 512 px take 132 ms instead of 95. (`Server::serve` sets it; serving
/// an already-bound listener does not.)
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `health` alone, in plaintext, on `addr` (for probes that cannot
/// do mutual TLS, like the kubelet's gRPC probes) until the returned guard
/// is dropped.
pub async fn serve_plain_health<H: Health>(
    addr: &str,
    health: HealthServer<H>,
) -> Result<PlainHealth, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Security(format!("cannot listen on {addr} for health: {e}")))?;
    let bound = listener.local_addr().ok();
    let task = tokio::spawn(async move {
        let served = Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming(listener))
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the plaintext health server stopped");
        }
    });
    tracing::info!(addr = ?bound, "plaintext health serving");
    Ok(PlainHealth(task))
}

/// Stops the plaintext health server of [`serve_plain_health`] when dropped.
#[derive(Debug)]
pub struct PlainHealth(tokio::task::JoinHandle<()>);

impl Drop for PlainHealth {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server side of the bearer token: a tower layer refusing calls whose
/// `authorization` header is not `Bearer <token>` with UNAUTHENTICATED;
/// the health service and servers without a token let everything through.
#[derive(Clone, Debug, Default)]
pub struct AuthLayer {
    token: Option<Arc<[u8]>>,
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    token: Option<Arc<[u8]>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && !request.uri().path().starts_with(HEALTH_PATH)
        {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            if !given.is_some_and(|g| same(g, token)) {
                let status = tonic::Status::unauthenticated(if given.is_some() {
                    "the bearer token is wrong"
                } else {
                    "this server needs a bearer token (`authorization: Bearer <token>`; ctl --token-file)"
                });
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(request))
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client's TLS and token settings.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    tls: Option<ClientTlsConfig>,
    auth: ClientAuth,
}

impl ClientSecurity {
    /// Reads the files `tls` and `token_file` name. TLS is on when any of
    /// `ca`, `cert`/`key` or `server_name` is set (or the address is `https://`).
    pub fn load(tls: &TlsConfig, token_file: Option<&Path>) -> Result<Self, Error> {
        let token = token_file.map(read_token).transpose()?;
        Self::with_token(tls, token.as_deref())
    }

    /// As [`load`](Self::load), the token given as a string.
    pub fn with_token(tls: &TlsConfig, token: Option<&str>) -> Result<Self, Error> {
        let uses_tls = tls.ca.is_some()
            || tls.cert.is_some()
            || tls.key.is_some()
            || tls.server_name.is_some();
        let tls_config = if uses_tls {
            let mut config = ClientTlsConfig::new();
            match &tls.ca {
                Some(ca) => {
                    config = config.ca_certificate(Certificate::from_pem(read("CA", ca)?));
                }
                None => config = config.with_enabled_roots(),
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(
                        read("client certificate", cert)?,
                        read("client key", key)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Security(
                        "a client certificate needs both tls.cert and tls.key".into(),
                    ));
                }
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            Some(config)
        } else {
            None
        };
        let token = token.map(check_token).transpose()?;
        Ok(ClientSecurity {
            tls: tls_config,
            auth: ClientAuth(token),
        })
    }

    /// Whether TLS is on.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The address as a URI with the scheme these settings need: `https://`
    /// with TLS, `http://` without (a bare `host:port` gets one).
    pub fn uri(&self, address: &str) -> String {
        let rest = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .unwrap_or(address);
        let tls = self.tls.is_some() || address.starts_with("https://");
        format!("{}://{rest}", if tls { "https" } else { "http" })
    }

    /// An endpoint for `address` with these TLS settings.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, Error> {
        let uri = self.uri(address);
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| Error::Security(format!("bad address {address:?}: {e}")))?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::Security(format!("TLS settings for {uri}: {e}"))),
            None => Ok(endpoint),
        }
    }

    /// `channel` with the token added to every call.
    pub fn channel(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.auth.clone())
    }
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Debug, Default)]
pub struct ClientAuth(Option<AsciiMetadataValue>);

impl Interceptor for ClientAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry the client's token.
pub type AuthChannel = InterceptedService<Channel, ClientAuth>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_compare_by_content() {
        assert!(same(b"Bearer abc", b"Bearer abc"));
        assert!(!same(b"Bearer abc", b"Bearer abd"));
        assert!(!same(b"Bearer abc", b"Bearer abcd"));
    }

    #[test]
    fn half_a_tls_setting_is_refused_with_what_is_missing() {
        let cert_only = TlsConfig {
            cert: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        let e = ServerSecurity::load(&cert_only, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key"), "{e}");
        let ca_only = TlsConfig {
            client_ca: Some("ca.pem".into()),
            ..TlsConfig::default()
        };
        let e = ServerSecurity::load(&ca_only, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mutual TLS"), "{e}");
        let e = ClientSecurity::with_token(&TlsConfig::default(), Some("a\nb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP header"), "{e}");
    }

    #[test]
    fn the_scheme_follows_the_tls_setting() {
        let plain = ClientSecurity::default();
        assert_eq!(plain.uri("h:1"), "http://h:1");
        assert_eq!(plain.uri("https://h:1"), "https://h:1");
        let tls = ClientSecurity::with_token(
            &TlsConfig {
                server_name: Some("camshaft".into()),
                ..TlsConfig::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(tls.uri("http://h:1"), "https://h:1");
        assert_eq!(tls.uri("h:1"), "https://h:1");
    }
}
