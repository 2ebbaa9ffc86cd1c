//! [`EtcdConfig`]: where the etcd cluster is, how to reach it, and how the
//! store lays itself out in it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of an [`EtcdStore`](crate::EtcdStore).
///
/// Build one with [`EtcdConfig::new`] or [`EtcdConfig::from_url`] (what the
/// binaries' `--store etcd://...` flag holds), or deserialize it from a
/// config file; missing fields take their defaults.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// The cluster members' client addresses, `host:port` each (no scheme:
    /// the scheme follows [`tls`](Self::tls)).
    pub endpoints: Vec<String>,
    /// Every key of the store starts with this; it begins and ends with `/`.
    /// Several stores (clusters, tests) share one etcd under different
    /// prefixes without seeing each other. Default `/camshaft/`.
    pub prefix: String,
    /// etcd user name, when etcd has authentication on.
    pub username: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// TLS to the endpoints (`https`), when set.
    pub tls: Option<EtcdTls>,
    /// How long connecting to an endpoint may take. Default 5 s.
    pub connect_timeout_ms: u64,
    /// How long one etcd request may take before the operation fails with
    /// [`Error::Unavailable`]; a blob write or read is several requests,
    /// each with this limit. Default 5 s.
    pub request_timeout_ms: u64,
    /// Checkpoints kept per job; older ones are pruned after each put (at
    /// least 1). Default 2.
    pub keep_checkpoints: usize,
    /// Where blob chunks go instead of etcd: a directory on a volume every
    /// process of the cluster mounts (`<blob_dir>/<ab>/<sha256>`). Manifests,
    /// and so the all-or-nothing guarantee, stay in etcd. For models whose
    /// weights would crowd etcd's 2 GiB quota.
    pub blob_dir: Option<PathBuf>,
}

/// Shows everything but the password, so a logged config leaks nothing.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("keep_checkpoints", &self.keep_checkpoints)
            .field("blob_dir", &self.blob_dir)
            .finish()
    }
}

/// TLS settings for the etcd connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM file of the CA that signed the etcd server certificates; without
    /// one the system's roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `key_file`), when etcd asks for one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// The prefix every store key starts with unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/camshaft/";

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            prefix: DEFAULT_PREFIX.to_owned(),
            username: None,
            password: None,
            tls: None,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            keep_checkpoints: 2,
            blob_dir: None,
        }
    }
}

impl EtcdConfig {
    /// Defaults for these endpoints (`host:port` each).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }

    /// Parses `etcd://host:port[,host:port...][/prefix/]`, or `etcds://...`
    /// for TLS trusting the system's roots (set [`tls`](Self::tls) for a
    /// private CA or a client certificate). A path, when present, is the key
    /// prefix (`etcd://10.0.0.5:2379/team-a/` keeps everything under
    /// `/team-a/`). The result is validated.
    pub fn from_url(url: &str) -> Result<EtcdConfig> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "etcd url {url:?} {why}; expected etcd://host:port[,host:port...][/prefix/] (etcds:// for tls)"
            ))
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            (None, rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            (Some(EtcdTls::default()), rest)
        } else {
            return Err(bad("has an unknown scheme"));
        };
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, "")) => (hosts, DEFAULT_PREFIX.to_owned()),
            Some((hosts, path)) => {
                let path = path.trim_end_matches('/');
                (hosts, format!("/{path}/"))
            }
            None => (rest, DEFAULT_PREFIX.to_owned()),
        };
        if hosts.contains('@') {
            return Err(bad(
                "carries credentials; set username and password in the config instead",
            ));
        }
        let endpoints: Vec<String> = hosts.split(',').map(|h| h.trim().to_owned()).collect();
        if endpoints.iter().any(String::is_empty) {
            return Err(bad("has an empty host"));
        }
        let config = EtcdConfig {
            endpoints,
            prefix,
            tls,
            ..EtcdConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid("etcd endpoints must not be empty"));
        }
        for endpoint in &self.endpoints {
            let valid = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(Error::invalid(format!(
                    "etcd endpoint {endpoint:?} is not host:port (no scheme: tls decides http or https)"
                )));
            }
        }
        let prefix_ok = self.prefix.len() >= 2
            && self.prefix.starts_with('/')
            && self.prefix.ends_with('/')
            && !self.prefix.contains("//");
        if !prefix_ok {
            return Err(Error::invalid(format!(
                "etcd key prefix {:?} must start and end with '/' and not be just '/'",
                self.prefix
            )));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::invalid(
                "etcd username and password go together: set both or neither",
            ));
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(Error::invalid(
                "etcd tls cert_file and key_file go together: set both or neither",
            ));
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(Error::invalid(
                "etcd connect_timeout_ms and request_timeout_ms must be more than zero",
            ));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::invalid(
                "keep_checkpoints must be at least 1 (a job needs its last checkpoint to resume)",
            ));
        }
        Ok(())
    }

    /// The endpoints as `host:port,host:port`, for messages (never
    /// credentials).
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The endpoint URLs etcd-client connects to.
    pub(crate) fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_parse() {
        let c = EtcdConfig::from_url("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(c.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(c.prefix, "/camshaft/");
        assert!(c.tls.is_none());
        assert_eq!(c.urls()[1], "http://10.0.0.2:2379");

        let c = EtcdConfig::from_url("etcds://etcd.svc:2379/team-a").unwrap();
        assert_eq!(c.prefix, "/team-a/");
        assert_eq!(c.tls, Some(EtcdTls::default()));
        assert_eq!(c.urls(), ["https://etcd.svc:2379"]);
        let c = EtcdConfig::from_url("etcd://h:1/a/b/").unwrap();
        assert_eq!(c.prefix, "/a/b/");
        assert_eq!(
            EtcdConfig::from_url("etcd://h:1/").unwrap().prefix,
            "/camshaft/"
        );

        for bad in [
            "http://h:1",
            "etcd://",
            "etcd://h",
            "etcd://h:0",
            "etcd://h:1,,h:2",
            "etcd://user:pw@h:1",
            "etcd://h:1/a//b",
        ] {
            assert!(
                matches!(
                    EtcdConfig::from_url(bad),
                    Err(Error::InvalidArgument { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_and_serde_defaults() {
        let c: EtcdConfig = serde_json::from_str(r#"{"endpoints": ["e:2379"]}"#).unwrap();
        assert_eq!(c, EtcdConfig::new(["e:2379"]));
        c.validate().unwrap();
        assert_eq!(c.keep_checkpoints, 2);
        let mut bad = c.clone();
        bad.prefix = "camshaft".into();
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.username = Some("root".into());
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.keep_checkpoints = 0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.endpoints = vec!["http://e:2379".into()];
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<EtcdConfig>(r#"{"endpoint": []}"#).is_err());
        let secret = EtcdConfig {
            username: Some("root".into()),
            password: Some("hunter2".into()),
            ..EtcdConfig::default()
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
