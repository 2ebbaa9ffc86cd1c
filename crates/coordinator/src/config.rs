//! The coordinator's configuration: serde with defaults, checked once by
//! [`Config::validate`] before the server starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use camshaft_http::server::ServerConfig;
use camshaft_proto::security::TlsConfig;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything the coordinator is configured with. Every field has a default,
/// so `{}` (or `Config::default()`) is a working configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the binary binds (`HOST:PORT`); [`serve`](crate::serve) serves
    /// the listener it is handed. Default `127.0.0.1:50051`.
    pub listen_addr: String,
    /// A worker whose stream is silent this long is lost (its attempt fails
    /// with `worker_lost`). Default 10 000 ms.
    pub lease_ttl_ms: u64,
    /// How often workers are told to send a heartbeat. Default 2 000 ms.
    pub heartbeat_interval_ms: u64,
    /// Ranks that have not all offered their rendezvous data within this
    /// time fail the attempt. Default 120 000 ms.
    pub rendezvous_timeout_ms: u64,
    /// `tls`, `auth_token_file`, `auth_tokens_file` (a tokens file's roles
    /// are `viewer`, `editor` or `worker`), `health_listen` and
    /// `metrics_listen`, as every server has them: top-level keys.
    #[serde(flatten)]
    pub server: ServerConfig,
    /// A file holding the workers' credential (a `worker` named `worker`).
    /// `WorkerLink` accepts only worker credentials (this one and the
    /// tokens file's workers); `camshaft up` and `camshaft coordinator`
    /// create `<data_dir>/worker-token` when neither names one.
    pub worker_token_file: Option<PathBuf>,
    /// Largest checkpoint a worker may upload, in bytes; a larger
    /// `size_bytes` is refused before any byte is read. Default 4 GiB.
    pub max_checkpoint_bytes: u64,
    /// Jobs one principal may have pending or running at once; one more is
    /// RESOURCE_EXHAUSTED. Default 64.
    pub max_active_jobs_per_principal: u32,
    /// Log lines kept per attempt of a job (`WatchJob` with logs); later
    /// lines are dropped and counted. Default 2 000.
    pub max_log_lines_per_attempt: u32,
    /// Longest log line kept, in bytes (longer ones are cut). Default 4 096.
    pub max_log_line_bytes: u32,
    /// How long a lost worker stays listed (`ListWorkers` with lost ones)
    /// and keeps its id bound to its principal. Default 3 600 000 ms (1 h).
    pub lost_worker_ttl_ms: u64,
    /// Most bytes of one page of `ListJobs` / `ListModels`: a page ends
    /// early rather than pass it (`next_page_token` continues). Default
    /// 4 MiB, well under the 64 MiB message limit.
    pub max_page_bytes: u64,
    /// What a model spec may declare (class names, input size), checked
    /// on import and registration.
    pub model_limits: camshaft_spec::SpecLimits,
    /// The explainer the HTTP API's `POST /v1/explain` and
    /// `GET /v1/explainer/status` forward to (`HOST:PORT` or a URL), so the
    /// web console reaches it through the coordinator's address with the
    /// caller's own credential; empty: those routes answer UNAVAILABLE.
    /// `camshaft up` sets it. Default empty.
    pub explainer_address: String,
    /// TLS of the connection to `explainer_address` (its `ca` and
    /// `server_name`; a client `cert`/`key` for mutual TLS). Default: none.
    pub explainer_tls: TlsConfig,
    /// Where each job's epoch rows are written as TensorBoard event files,
    /// one run directory per job (`<dir>/<job_id>/`), so `tensorboard
    /// --logdir <dir>` shows every job. Absent: the binaries use
    /// `<data_dir>/tensorboard`; empty: none written. Default: absent (the
    /// library alone writes none).
    pub tensorboard_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: "127.0.0.1:50051".into(),
            lease_ttl_ms: 10_000,
            heartbeat_interval_ms: 2_000,
            rendezvous_timeout_ms: 120_000,
            server: ServerConfig::default(),
            worker_token_file: None,
            max_checkpoint_bytes: 4 << 30,
            max_active_jobs_per_principal: 64,
            max_log_lines_per_attempt: 2_000,
            max_log_line_bytes: 4_096,
            lost_worker_ttl_ms: 3_600_000,
            max_page_bytes: 4 << 20,
            model_limits: camshaft_spec::SpecLimits::default(),
            explainer_address: String::new(),
            explainer_tls: TlsConfig::default(),
            tensorboard_dir: None,
        }
    }
}

impl Config {
    /// Checks every field: a parseable listen address, a heartbeat interval
    /// well under the lease TTL.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        self.server
            .metrics_addr()
            .map_err(|e| Error::Config(e.to_string()))?;
        if self.lease_ttl_ms < 100 {
            return Err(Error::Config("lease_ttl_ms must be at least 100".into()));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms * 2 > self.lease_ttl_ms {
            return Err(Error::Config(format!(
                "heartbeat_interval_ms {} must be ≥ 1 and at most half of lease_ttl_ms {}",
                self.heartbeat_interval_ms, self.lease_ttl_ms
            )));
        }
        let at_least_one = [
            ("max_checkpoint_bytes", self.max_checkpoint_bytes),
            (
                "max_active_jobs_per_principal",
                u64::from(self.max_active_jobs_per_principal),
            ),
            ("max_log_line_bytes", u64::from(self.max_log_line_bytes)),
            ("max_page_bytes", self.max_page_bytes),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(Error::Config(format!("{key} must be at least 1")));
            }
        }
        self.model_limits
            .validate()
            .map_err(|e| Error::Config(format!("model_limits: {e}")))?;
        if self.max_page_bytes > camshaft_proto::MAX_MESSAGE_BYTES as u64 / 2 {
            return Err(Error::Config(format!(
                "max_page_bytes {} must be at most half the message limit ({} bytes)",
                self.max_page_bytes,
                camshaft_proto::MAX_MESSAGE_BYTES / 2
            )));
        }
        Ok(())
    }

    /// The credential files, for [`camshaft_proto::security::ServerSecurity::load`].
    pub fn credentials(&self) -> camshaft_proto::security::CredentialFiles<'_> {
        self.server.credentials(self.worker_token_file.as_deref())
    }

    /// [`Config::listen_addr`] parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen_addr.parse().map_err(|e| {
            Error::Config(format!(
                "listen_addr {:?} is not HOST:PORT: {e}",
                self.listen_addr
            ))
        })
    }

    /// [`Config::tensorboard_dir`] when it names a directory.
    pub fn tensorboard_dir(&self) -> Option<&std::path::Path> {
        self.tensorboard_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
    }

    pub(crate) fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_field() {
        Config::default().validate().unwrap();
        assert_eq!(
            serde_json::from_str::<Config>("{}").unwrap(),
            Config::default()
        );
        let c = Config {
            heartbeat_interval_ms: 9_000,
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("heartbeat_interval_ms")
        );
        let c = Config {
            listen_addr: "here".into(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("listen_addr")
        );
    }

    #[test]
    fn the_shared_server_keys_read_at_the_top_level_as_before() {
        let c: Config = serde_json::from_str(
            r#"{"listen_addr": "0.0.0.0:1", "tls": {"cert": "c.pem", "key": "k.pem"},
                "auth_token_file": "t", "auth_tokens_file": "ts", "worker_token_file": "w",
                "health_listen": "0.0.0.0:2", "metrics_listen": "0.0.0.0:3", "lease_ttl_ms": 500}"#,
        )
        .unwrap();
        assert_eq!(c.listen_addr, "0.0.0.0:1");
        assert_eq!(
            c.server.tls.cert.as_deref(),
            Some(std::path::Path::new("c.pem"))
        );
        assert_eq!(
            c.server.auth_token_file.as_deref(),
            Some(std::path::Path::new("t"))
        );
        assert_eq!(
            c.server.auth_tokens_file.as_deref(),
            Some(std::path::Path::new("ts"))
        );
        assert_eq!(c.server.health_listen.as_deref(), Some("0.0.0.0:2"));
        assert_eq!(c.server.metrics_listen, "0.0.0.0:3");
        assert_eq!(c.lease_ttl_ms, 500);
        assert_eq!(
            c.credentials().worker_token,
            Some(std::path::Path::new("w"))
        );
        let back: Config = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        for unknown in [
            r#"{"tlss": {}}"#,
            r#"{"tls": {"certt": "c"}}"#,
            r#"{"server": {}}"#,
        ] {
            assert!(
                serde_json::from_str::<Config>(unknown).is_err(),
                "{unknown}"
            );
        }
        let c = Config {
            server: ServerConfig {
                metrics_listen: "port 9".into(),
                ..ServerConfig::default()
            },
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("metrics_listen")
        );
    }
}
