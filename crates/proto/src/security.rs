//! Transport security shared by every service and client: TLS (rustls),
//! optional mutual TLS, and bearer credentials checked on every call but
//! the health service's (probes carry no token): each names a
//! [`Principal`] whose [`Role`] must allow the call ([`crate::roles`]).
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
use crate::roles::{
    ANONYMOUS, Principal, Role, TOKEN_FILE_PRINCIPAL, TokenTable, WORKER_PRINCIPAL, required_role,
};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server};
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

pub(crate) fn check_token(token: &str) -> Result<AsciiMetadataValue, Error> {
    if token.is_empty() {
        return Err(Error::Security("the bearer token is empty".into()));
    }
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        Error::Security("the bearer token has characters an HTTP header cannot carry".into())
    })
}

/// The credential files a server reads: the single client token (an
/// editor named `token`), a tokens file of principals, and the workers'
/// credential (a worker named `worker`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CredentialFiles<'a> {
    /// `auth_token_file`: one bearer token, an editor.
    pub token: Option<&'a Path>,
    /// `auth_tokens_file`: `token,name,role` per line ([`crate::roles`]).
    pub tokens: Option<&'a Path>,
    /// `worker_token_file`: the credential workers present on `WorkerLink`.
    pub worker_token: Option<&'a Path>,
}

/// Who a call is from and whether it may be made: the tokens a server
/// knows, and whether client calls need one.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    tokens: TokenTable,
    /// Client (viewer/editor) calls need a token: some client token is
    /// configured. Otherwise they are made by [`Principal::anonymous`].
    client_tokens: bool,
}

impl Authenticator {
    /// The tokens of `files`.
    pub fn load(files: CredentialFiles<'_>) -> Result<Self, Error> {
        let mut tokens = TokenTable::default();
        if let Some(path) = files.token {
            tokens.insert(
                &read_token(path)?,
                Principal {
                    name: TOKEN_FILE_PRINCIPAL.into(),
                    role: Role::Editor,
                },
            )?;
        }
        if let Some(path) = files.tokens {
            tokens.add_file(path)?;
        }
        if let Some(path) = files.worker_token {
            tokens.insert(
                &read_token(path)?,
                Principal {
                    name: WORKER_PRINCIPAL.into(),
                    role: Role::Worker,
                },
            )?;
        }
        Ok(Authenticator {
            client_tokens: tokens.has_client_tokens(),
            tokens,
        })
    }

    /// Whether client calls need a bearer token.
    pub fn client_tokens_required(&self) -> bool {
        self.client_tokens
    }

    /// Whether some worker credential is configured (else `WorkerLink`
    /// refuses everyone).
    pub fn has_worker_credentials(&self) -> bool {
        self.tokens.has_worker_tokens()
    }

    /// The principal of a call: the owner of the `authorization` header's
    /// token; else the principal of the client certificate's subject CN
    /// (`certificate`, under mutual TLS); else `anonymous` where client
    /// calls need no credential; else UNAUTHENTICATED.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificate: Option<&str>,
    ) -> Result<Principal, tonic::Status> {
        let token = authorization
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if let Some(principal) = token.and_then(|t| self.tokens.get(t.trim())) {
            return Ok(principal.clone());
        }
        if authorization.is_none()
            && let Some(principal) = certificate.and_then(|cn| self.tokens.get_certificate(cn))
        {
            return Ok(principal.clone());
        }
        if !self.client_tokens {
            return Ok(Principal::anonymous());
        }
        Err(tonic::Status::unauthenticated(if authorization.is_some() {
            "the bearer token is wrong"
        } else {
            "this server needs a bearer token (`authorization: Bearer <token>`; ctl --token-file)"
        }))
    }

    /// The principal of a call of `path`, if it may make it: UNAUTHENTICATED
    /// without a credential it needs, PERMISSION_DENIED for the wrong role.
    /// `None` for calls that need no principal (health).
    pub fn authorize(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        certificate: Option<&str>,
    ) -> Result<Option<Principal>, tonic::Status> {
        let Some(needed) = required_role(path) else {
            return Ok(None);
        };
        let principal = self.authenticate(authorization, certificate)?;
        if principal.role.allows(needed) {
            return Ok(Some(principal));
        }
        if needed == Role::Worker && principal.name == ANONYMOUS {
            return Err(tonic::Status::unauthenticated(
                "WorkerLink needs a worker credential (the worker's `auth_token_file`; \
                 `camshaft up` writes one to <data_dir>/worker-token)",
            ));
        }
        Err(tonic::Status::permission_denied(format!(
            "{principal} may not call {}: it needs the {needed} role",
            crate::short(path)
        )))
    }
}

/// Whether a metrics scrape with this `Authorization` header (if any) may
/// read the metrics; the shape of `camshaft_metrics::Guard`.
pub type MetricsGuard = Arc<dyn Fn(Option<&[u8]>) -> bool + Send + Sync>;

/// A server's TLS and credential settings, loaded once at start.
#[derive(Clone, Debug, Default)]
pub struct ServerSecurity {
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    mutual: bool,
    auth: Arc<Authenticator>,
}

impl ServerSecurity {
    /// Reads the files `tls` and `credentials` name. TLS needs both `cert`
    /// and `key`; `client_ca` without them is an error (mutual TLS needs TLS).
    pub fn load(tls: &TlsConfig, credentials: CredentialFiles<'_>) -> Result<Self, Error> {
        let tls_config = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let client_ca = tls
                    .client_ca
                    .as_ref()
                    .map(|ca| read("client CA", ca))
                    .transpose()?;
                Some(crate::tls::server_config(
                    &read("TLS certificate", cert)?,
                    &read("TLS key", key)?,
                    client_ca.as_deref(),
                )?)
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
        Ok(ServerSecurity {
            mutual: tls_config.is_some() && tls.client_ca.is_some(),
            tls: tls_config,
            auth: Arc::new(Authenticator::load(credentials)?),
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

    /// Whether client calls need a bearer token.
    pub fn token_required(&self) -> bool {
        self.auth.client_tokens_required()
    }

    /// The credentials check.
    pub fn authenticator(&self) -> Arc<Authenticator> {
        Arc::clone(&self.auth)
    }

    /// The connections `listener` accepts, after their TLS handshake when
    /// TLS is configured (offering both `h2` and `http/1.1`), for
    /// `serve_with_incoming` of [`builder`](Self::builder)'s server.
    pub fn incoming(
        &self,
        listener: tokio::net::TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::tls::Conn>> {
        crate::tls::incoming(listener, self.tls.clone())
    }

    /// The check of a metrics scrape's `Authorization` header: where client
    /// calls need a token, a viewer's or editor's (`camshaft_metrics::Guard`);
    /// `None` (open) where they do not.
    pub fn metrics_guard(&self) -> Option<MetricsGuard> {
        if !self.auth.client_tokens_required() {
            return None;
        }
        let auth = Arc::clone(&self.auth);
        Some(Arc::new(move |header: Option<&[u8]>| {
            auth.authenticate(header, None)
                .is_ok_and(|p| p.role.allows(Role::Viewer))
        }))
    }

    /// A server builder with the credentials check on every service but
    /// health; TLS (when configured) is in the connections of
    /// [`incoming`](Self::incoming).
    ///
    /// The server also accepts HTTP/1.1, for the HTTP and gRPC-Web routes
    /// a service serves beside its gRPC ones (`camshaft-http`): a gRPC-Web
    /// call is checked as the gRPC call it is.
    pub fn builder(
        &self,
    ) -> Result<Server<tower_layer::Stack<AuthLayer, tower_layer::Identity>>, Error> {
        let server = Server::builder().accept_http1(true);
        Ok(server.layer(AuthLayer {
            auth: Arc::clone(&self.auth),
        }))
    }
}

/// Whether `path` is a gRPC method's (`/package.Service/Method` of a Camshaft
/// service, health or reflection): [`AuthLayer`] checks those; every other
/// path belongs to a service's HTTP routes, which check the credentials of
/// the gRPC method they call themselves ([`Authenticator::authorize`]).
pub fn is_grpc_path(path: &str) -> bool {
    path.starts_with("/camshaft.") || path.starts_with("/grpc.")
}

/// `N` random bytes from the kernel (`/dev/urandom`): credentials and
/// per-attempt secrets.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    use std::io::Read;
    let mut random = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(|e| Error::Security(format!("reading /dev/urandom: {e}")))?;
    Ok(random)
}

/// Writes a fresh random credential (256 bits, hex) to `path`, readable by
/// its owner only (0600), unless the file exists already. `camshaft up` and
/// a coordinator with a data dir use it for their workers' credential, so a
/// one-machine cluster needs no set-up.
pub fn ensure_token_file(path: &Path) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token: String = random_bytes::<32>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => file
            .write_all(format!("{token}\n").as_bytes())
            .map_err(|e| Error::Security(format!("writing {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Security(format!("creating {}: {e}", path.display()))),
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

/// The server side of the credentials: a tower layer that answers calls
/// their principal may not make with UNAUTHENTICATED or PERMISSION_DENIED
/// ([`Authenticator::authorize`]) and puts the [`Principal`] of the others
/// in the request's extensions. Health needs no credential.
#[derive(Clone, Debug, Default)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The subject common name of the client certificate a (mutual TLS)
/// connection presented, if any, from a request's extensions (tonic puts
/// the connection's TLS details there).
pub fn client_common_name(extensions: &http::Extensions) -> Option<String> {
    let certs = extensions
        .get::<crate::tls::ConnInfo>()?
        .peer_certs
        .clone()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(name.to_string())
}

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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !is_grpc_path(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        let certificate = client_common_name(request.extensions());
        match self
            .auth
            .authorize(request.uri().path(), given, certificate.as_deref())
        {
            Ok(Some(principal)) => {
                request.extensions_mut().insert(principal);
            }
            Ok(None) => {}
            Err(status) => {
                tracing::warn!(
                    path = %crate::short(request.uri().path()),
                    code = ?status.code(),
                    reason = %status.message(),
                    "call refused"
                );
                let mut response: http::Response<R> = status.into_http();
                // A gRPC-Web caller reads the status from these headers
                // only when the answer has its content type.
                if let Some(web) = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .filter(|v| v.as_bytes().starts_with(b"application/grpc-web"))
                {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, web.clone());
                }
                return Box::pin(std::future::ready(Ok(response)));
            }
        }
        Box::pin(self.inner.call(request))
    }
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
    fn half_a_tls_setting_is_refused_with_what_is_missing() {
        let cert_only = TlsConfig {
            cert: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        let e = ServerSecurity::load(&cert_only, CredentialFiles::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key"), "{e}");
        let ca_only = TlsConfig {
            client_ca: Some("ca.pem".into()),
            ..TlsConfig::default()
        };
        let e = ServerSecurity::load(&ca_only, CredentialFiles::default())
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

    fn authenticator(dir: &Path, client_token: bool) -> Authenticator {
        let worker = dir.join("worker-token");
        ensure_token_file(&worker).unwrap();
        let client = dir.join("token");
        std::fs::write(&client, "client-secret-0123456789\n").unwrap();
        Authenticator::load(CredentialFiles {
            token: client_token.then_some(client.as_path()),
            tokens: None,
            worker_token: Some(&worker),
        })
        .unwrap()
    }

    #[test]
    fn worker_and_client_credentials_do_not_stand_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), true);
        let worker = format!(
            "Bearer {}",
            std::fs::read_to_string(dir.path().join("worker-token"))
                .unwrap()
                .trim()
        );
        let client = b"Bearer client-secret-0123456789".as_slice();
        let attach = "/camshaft.v1.WorkerLink/Attach";
        let submit = "/camshaft.v1.Coordinator/SubmitJob";
        let p = auth
            .authorize(attach, Some(worker.as_bytes()), None)
            .unwrap()
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), (WORKER_PRINCIPAL, Role::Worker));
        let e = auth.authorize(attach, Some(client), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let e = auth
            .authorize(submit, Some(worker.as_bytes()), None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("worker (worker)"), "{e:?}");
        let p = auth.authorize(submit, Some(client), None).unwrap().unwrap();
        assert_eq!(p.role, Role::Editor);
        let e = auth.authorize(submit, None, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = auth
            .authorize(submit, Some(b"Bearer nope"), None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            auth.authorize("/grpc.health.v1.Health/Check", None, None)
                .unwrap(),
            None
        );
    }

    #[test]
    fn without_client_tokens_clients_are_anonymous_editors_but_workers_still_need_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), false);
        let p = auth
            .authorize("/camshaft.v1.Coordinator/SetAlias", None, None)
            .unwrap()
            .unwrap();
        assert_eq!(p, Principal::anonymous());
        let e = auth
            .authorize("/camshaft.v1.WorkerLink/Attach", None, None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let e = auth
            .authorize(
                "/camshaft.v1.WorkerLink/PutCheckpoint",
                Some(b"Bearer guess"),
                None,
            )
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }

    #[test]
    fn a_generated_token_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker-token");
        ensure_token_file(&path).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.trim().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        ensure_token_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    }
}
