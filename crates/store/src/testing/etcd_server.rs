//! A throwaway etcd for tests: a real `etcd` process on free loopback ports
//! with its data in a temp dir, stopped (killed and reaped) when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::EtcdConfig;

/// How long a starting etcd may take to answer `/health`.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// One etcd member serving on `127.0.0.1`, for tests.
///
/// ```ignore
/// let etcd = EtcdServer::start();
/// let store = EtcdStore::connect(etcd.config("/my-test/")).await?;
/// ```
///
/// Panics (as a test should) when the `etcd` binary is missing, with a
/// pointer to `scripts/setup`, or when it does not come up.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Serves `/health` over plain http even when clients speak TLS.
    metrics_port: u16,
    tls: bool,
    extra_args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}

impl EtcdServer {
    /// Starts etcd with the arguments from FACTS.md and waits until it
    /// answers.
    pub fn start() -> EtcdServer {
        EtcdServer::start_with(&[])
    }

    /// Starts etcd with extra flags (e.g. `--quota-backend-bytes=...`).
    pub fn start_with(extra_args: &[&str]) -> EtcdServer {
        EtcdServer::start_inner(false, extra_args)
    }

    /// Starts etcd serving clients over TLS (`https`): `extra_args` must
    /// name its certificate (`--cert-file`, `--key-file`, and for client
    /// certificates `--client-cert-auth --trusted-ca-file`).
    pub fn start_tls(extra_args: &[&str]) -> EtcdServer {
        EtcdServer::start_inner(true, extra_args)
    }

    fn start_inner(tls: bool, extra_args: &[&str]) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("camshaft-etcd-")
            .tempdir()
            .expect("creating a temp dir for etcd");
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            tls,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.spawn();
        server
    }

    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A store config for this etcd under `prefix`, with short timeouts so
    /// failure tests finish quickly.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            prefix: prefix.to_owned(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: 2_000,
            ..EtcdConfig::new([self.endpoint()])
        }
    }

    /// etcd's data dir (kept across [`restart`](Self::restart)).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything etcd printed so far (its log goes to a file in the temp
    /// dir), for assertions on what the server saw.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let scheme = if self.tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the etcd log file");
        let log_err = log.try_clone().expect("cloning the etcd log file handle");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--name", "default"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--listen-metrics-urls", &metrics])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the `etcd` binary is not on PATH; the etcd store tests need it: run scripts/setup (it installs Debian's etcd-server)"
            ),
            Err(e) => panic!("starting etcd failed: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "etcd exited with {status} while starting; its log:\n{}",
                    tail(&self.log_path())
                );
            }
            if healthy(self.metrics_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd did not answer /health within {READY_WITHIN:?}; its log:\n{}",
            tail(&self.log_path())
        );
    }

    /// Kills etcd (SIGKILL) and waits for it; the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"`.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
