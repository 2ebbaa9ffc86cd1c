//! The coordinator's configuration: serde with defaults, checked once by
//! [`Config::validate`] before the server starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// TLS for every call (`cert`, `key`; `client_ca` for mutual TLS).
    /// Default: plaintext.
    pub tls: TlsConfig,
    /// A file holding the bearer token every call but health must carry.
    /// Default: none needed.
    pub auth_token_file: Option<PathBuf>,
    /// Also serve the health service alone, in plaintext, on this
    /// `HOST:PORT`: for probes that cannot do (mutual) TLS. Default: off.
    pub health_listen: Option<String>,
    /// Address (`HOST:PORT`) of the Prometheus metrics endpoint
    /// (`GET /metrics`, text format); empty: none. Default empty.
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: "127.0.0.1:50051".into(),
            lease_ttl_ms: 10_000,
            heartbeat_interval_ms: 2_000,
            rendezvous_timeout_ms: 120_000,
            tls: TlsConfig::default(),
            auth_token_file: None,
            health_listen: None,
            metrics_listen: String::new(),
        }
    }
}

impl Config {
    /// Checks every field: a parseable listen address, a heartbeat interval
    /// well under the lease TTL.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        camshaft_metrics::parse_listen(&self.metrics_listen)
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
        Ok(())
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
}
