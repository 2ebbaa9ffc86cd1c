//! The worker's configuration: serde with defaults, checked once by
//! [`Config::validate`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use camshaft_proto::security::{ClientSecurity, TlsConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything a worker is configured with. Every field has a default, so
/// `{}` (or `Config::default()`) is a working configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The coordinator's address (`http://host:port`, or `host:port`).
    /// Default `http://127.0.0.1:50051`.
    pub coordinator: String,
    /// A stable id; empty: the coordinator assigns one (kept across
    /// reconnects of this process).
    pub worker_id: String,
    /// Where data sets and downloaded weights live (a job's `data_dir`
    /// overrides it); empty: `$CAMSHAFT_DATA_DIR` or the user cache.
    pub data_dir: Option<PathBuf>,
    /// The only directories a job may name files in: a data set's
    /// `data_dir` and a `pretrained_path` must lie under one of them once
    /// `.`, `..` and symbolic links are resolved (a relative one is taken
    /// under the first). A path outside them is refused with one message,
    /// the same whether or not it exists. Each entry is absolute, or
    /// relative to the current directory and existing; a root need not
    /// exist yet. Default empty: the data directory alone
    /// ([`Config::data_dir`]).
    pub data_roots: Vec<PathBuf>,
    /// `auto` (every GPU, else the CPU), `cpu`, `cuda` (every GPU; an error
    /// without one) or `cuda:N`. Default `auto`.
    pub device: String,
    /// Image decoding threads per rank; 0: the number of cores.
    pub loader_threads: usize,
    /// libtorch (intra-op) threads of each CPU rank; 0: libtorch's default,
    /// every core. Where several CPU ranks train at once on one host
    /// (`camshaft up --workers N`, or N worker processes) cores / N avoids
    /// oversubscribing the cores, as torchrun's one thread per process
    /// does, at the price of single-rank jobs: on 2 cores with 2 workers and
    /// 1 thread each, a 2-rank ResNet18 job ran 628 images/s against 582
    /// with the default, a 1-rank job 408 against 544. Default 0.
    pub intra_op_threads: usize,
    /// Free-form labels sent at registration (e.g. `zone = "a"`).
    pub labels: BTreeMap<String, String>,
    /// Host the TCP ring listeners bind (port chosen by the system). The
    /// default `0.0.0.0` is offered as such and the coordinator replaces it
    /// with the address it sees this worker connect from.
    pub ring_host: String,
    /// TLS to the coordinator: `ca` (what to trust; unset: the system
    /// roots), `server_name`, and `cert`/`key` when it asks for client
    /// certificates. Any of them set (or an `https://` address): TLS.
    pub tls: TlsConfig,
    /// A file holding the worker credential the coordinator asks for on
    /// WorkerLink (its `worker_token_file`, or a `worker` of its tokens
    /// file); a client token is refused there.
    pub auth_token_file: Option<PathBuf>,
    /// Address (`HOST:PORT`) of the Prometheus metrics endpoint
    /// (`GET /metrics`, text format); empty: none. Default empty.
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coordinator: "http://127.0.0.1:50051".into(),
            worker_id: String::new(),
            data_dir: None,
            data_roots: Vec::new(),
            device: "auto".into(),
            loader_threads: 0,
            intra_op_threads: 0,
            labels: BTreeMap::new(),
            ring_host: "0.0.0.0".into(),
            tls: TlsConfig::default(),
            auth_token_file: None,
            metrics_listen: String::new(),
        }
    }
}

/// Which devices the worker offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Every GPU, or the CPU when there is none.
    Auto,
    /// The CPU only.
    Cpu,
    /// Every GPU.
    AllCuda,
    /// One GPU.
    Cuda(usize),
}

impl Config {
    /// Checks the coordinator address, the device choice, the TLS files
    /// and the data roots. The credential file is read at each connection
    /// ([`Config::security`]): it may appear, or change, later.
    pub fn validate(&self) -> Result<()> {
        self.coordinator_url()?;
        self.device_choice()?;
        for root in &self.data_roots {
            if !root.is_absolute() && root.canonicalize().is_err() {
                return Err(Error::Config(format!(
                    "data_roots entry {} is relative and does not exist; give an absolute path",
                    root.display()
                )));
            }
        }
        if !self.worker_id.is_empty() {
            camshaft_store::validate_name("worker_id", &self.worker_id)
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        Ok(())
    }

    /// The TLS and token settings for the coordinator connection, files read.
    pub fn security(&self) -> Result<ClientSecurity> {
        ClientSecurity::load(&self.tls, self.auth_token_file.as_deref())
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// The coordinator's URL with the scheme the TLS setting needs.
    pub fn coordinator_url(&self) -> Result<String> {
        let addr = self.coordinator.trim();
        if addr.is_empty() {
            return Err(Error::Config("coordinator address is empty".into()));
        }
        // TLS alone decides the scheme (and checks the TLS files).
        let url = ClientSecurity::load(&self.tls, None)
            .map_err(|e| Error::Config(e.to_string()))?
            .uri(addr);
        url.parse::<tonic::transport::Uri>()
            .map_err(|e| Error::Config(format!("coordinator {addr:?} is not an address: {e}")))?;
        Ok(url)
    }

    /// [`Config::device`] parsed.
    pub fn device_choice(&self) -> Result<DeviceChoice> {
        let d = self.device.trim().to_ascii_lowercase();
        match d.as_str() {
            "auto" | "" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::AllCuda),
            _ => d
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "device {:?} is not auto, cpu, cuda or cuda:N",
                        self.device
                    ))
                }),
        }
    }

    /// The data directory to use.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(camshaft_data::default_cache_dir)
    }

    /// The directories jobs may name files in: [`Config::data_roots`], or
    /// the data directory when none are configured.
    pub fn data_roots(&self) -> Vec<PathBuf> {
        if self.data_roots.is_empty() {
            vec![self.data_dir()]
        } else {
            self.data_roots.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_validate_and_addresses_get_a_scheme() {
        Config::default().validate().unwrap();
        let c = Config {
            coordinator: "10.0.0.5:50051".into(),
            device: "cuda:1".into(),
            ..Config::default()
        };
        assert_eq!(c.coordinator_url().unwrap(), "http://10.0.0.5:50051");
        assert_eq!(c.device_choice().unwrap(), DeviceChoice::Cuda(1));
        let bad = Config {
            device: "tpu".into(),
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("tpu"));
        let c: Config = serde_json::from_str(r#"{"intra_op_threads": 1}"#).unwrap();
        assert_eq!(c.intra_op_threads, 1);
        assert_eq!(Config::default().intra_op_threads, 0);
    }

    #[test]
    fn data_roots_default_to_the_data_dir_and_must_be_absolute_or_exist() {
        let c = Config {
            data_dir: Some("/srv/camshaft".into()),
            ..Config::default()
        };
        assert_eq!(c.data_roots(), [PathBuf::from("/srv/camshaft")]);
        let c: Config = serde_json::from_str(r#"{"data_roots": ["/data/a", "/data/b"]}"#).unwrap();
        c.validate().unwrap();
        assert_eq!(c.data_roots(), [PathBuf::from("/data/a"), "/data/b".into()]);
        let bad = Config {
            data_roots: vec!["no/such/camshaft/dir".into()],
            ..Config::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("data_roots") && err.contains("no/such"),
            "{err}"
        );
        let here = Config {
            data_roots: vec![".".into()],
            ..Config::default()
        };
        here.validate().unwrap();
    }
}
