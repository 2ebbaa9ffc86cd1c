//! `camshaft-metrics`: Prometheus metrics for the Camshaft services.
//!
//! A service keeps its metrics in its own [`prometheus::Registry`] (not the
//! process-global one, so several services, or several test servers, live in
//! one process) and hands the registry to [`serve`], which answers
//! `GET /metrics` with the text exposition format (version 0.0.4) on a
//! listener of its own, separate from the gRPC port. Any other path is 404.
//! The server is deliberately tiny: one request per connection
//! (`Connection: close`), a request head of at most 8 KiB read within 5 s;
//! Prometheus scrapes it like any exporter.
//!
//! [`parse_listen`] reads the config value services share: an address, or
//! empty for "no metrics endpoint" (the default).
//!
//! [`stats`] holds the benchmarks' statistics (median, quantiles, scaling
//! efficiency), shared by `ctl bench` and `camshaft-bench`.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), camshaft_metrics::Error> {
//! let registry = prometheus::Registry::new();
//! let requests = prometheus::IntCounter::new("requests_total", "Requests served.")?;
//! registry.register(Box::new(requests.clone()))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9100").await?;
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! camshaft_metrics::serve(listener, registry, async {
//!     let _ = stopped.await;
//! })
//! .await;
//! # Ok(()) }
//! ```

mod grpc;
pub mod stats;

pub use grpc::{GrpcMetrics, GrpcMetricsLayer};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use prometheus;

/// Most bytes of a request head.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong setting metrics up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metric could not be created or registered (a duplicate name).
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    /// The listen address is not `HOST:PORT`.
    #[error("metrics_listen {value:?} is not HOST:PORT: {reason}")]
    BadAddress {
        /// The configured value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen for metrics: {0}")]
    Io(#[from] std::io::Error),
}

/// The metrics endpoint's address as configured: empty means off.
pub fn parse_listen(value: &str) -> Result<Option<SocketAddr>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e: std::net::AddrParseError| Error::BadAddress {
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// `registry` in the Prometheus text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec only fails on a metric family with no metrics,
    // which `gather` never returns.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decides whether a scrape may read the metrics from its `Authorization`
/// header (absent: `None`). The services pass their credentials check, so
/// the endpoint asks for the same tokens as their gRPC port.
pub type Guard = Arc<dyn Fn(Option<&[u8]>) -> bool + Send + Sync>;

/// Serves `GET /metrics` of `registry` on `listener` until `shutdown`
/// completes, to anyone who can connect. Connections are answered on their
/// own tasks; a client that misbehaves only loses its own connection.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_guarded(listener, registry, None, shutdown).await;
}

/// [`serve`], answering 401 to a scrape `guard` refuses (none: open).
pub async fn serve_guarded(
    listener: TcpListener,
    registry: Registry,
    guard: Option<Guard>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics serving");
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let registry = registry.clone();
                let guard = guard.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &registry, guard.as_deref()).await {
                        tracing::debug!(error = %e, "metrics connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::info!("metrics stopped");
}

/// The value of the `Authorization` header of a request head.
fn authorization(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        name.eq_ignore_ascii_case(b"authorization")
            .then(|| value[1..].trim_ascii())
    })
}

type GuardFn = dyn Fn(Option<&[u8]>) -> bool + Send + Sync;

async fn answer(
    mut stream: TcpStream,
    registry: &Registry,
    guard: Option<&GuardFn>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let read = stream.read(&mut buf).await?;
            if read == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..read]);
        }
        Ok(head.len() < MAX_HEAD || head.windows(4).any(|w| w == b"\r\n\r\n"))
    })
    .await;
    let (status, content_type, body) = match complete {
        Ok(Ok(true)) => {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("GET"), Some(path))
                    if (path == "/metrics" || path.starts_with("/metrics?"))
                        && guard.is_some_and(|allowed| !allowed(authorization(&head))) =>
                {
                    (
                        "401 Unauthorized\r\nWWW-Authenticate: Bearer",
                        "text/plain".into(),
                        "this endpoint needs a bearer token (Authorization: Bearer <token>)\n"
                            .into(),
                    )
                }
                (Some("GET"), Some(path))
                    if path == "/metrics" || path.starts_with("/metrics?") =>
                {
                    (
                        "200 OK",
                        TextEncoder::new().format_type().to_string(),
                        render(registry),
                    )
                }
                (Some("GET"), Some(_)) => (
                    "404 Not Found",
                    "text/plain".into(),
                    "not found: try /metrics\n".into(),
                ),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain".into(),
                    "only GET /metrics\n".into(),
                ),
            }
        }
        Ok(Ok(false)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => ("408 Request Timeout", "text/plain".into(), String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `http://addr/metrics` over plain HTTP/1.1 and returns the body;
/// for tests and `ctl`-style checks, not a general HTTP client.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    scrape_as(addr, None).await
}

/// [`scrape`] with `Authorization: Bearer <token>`.
pub async fn scrape_as(addr: SocketAddr, token: Option<&str>) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: camshaft\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer: {}",
            response.lines().next().unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_scrape_sees_the_registry_and_other_paths_are_404() {
        let registry = Registry::new();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("things_total", "Things."),
            &["kind"],
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.with_label_values(&["a"]).inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, async {
            let _ = stopped.await;
        }));
        let body = scrape(addr).await.unwrap();
        assert!(body.contains("# TYPE things_total counter"), "{body}");
        assert!(body.contains("things_total{kind=\"a\"} 3"), "{body}");

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /other HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        // A client sending garbage and hanging up does not stop the server.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0xFF; 100]).await.unwrap();
        drop(s);
        assert!(scrape(addr).await.unwrap().contains("things_total"));
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_guarded_endpoint_answers_401_without_the_token() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let guard: Guard = Arc::new(|auth| auth == Some(b"Bearer s3cret".as_slice()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_guarded(
            listener,
            Registry::new(),
            Some(guard),
            async {
                let _ = stopped.await;
            },
        ));
        let e = scrape(addr).await.unwrap_err().to_string();
        assert!(e.contains("401"), "{e}");
        let e = scrape_as(addr, Some("wrong"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("401"), "{e}");
        scrape_as(addr, Some("s3cret")).await.unwrap();
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn empty_listen_is_off() {
        assert_eq!(parse_listen(" ").unwrap(), None);
        assert!(parse_listen("127.0.0.1:9").unwrap().is_some());
        assert!(parse_listen("nowhere").is_err());
    }
}
