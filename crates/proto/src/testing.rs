//! Certificates for tests (feature `testing`): a throwaway CA, a server
//! certificate for `127.0.0.1`/`localhost` and a client certificate, made
//! with rcgen and written as PEM files, plus a bearer token file.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::security::TlsConfig;

/// The token [`Pki::new`] writes to `token`.
pub const TOKEN: &str = "s3cret-token";

/// `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key` and
/// `token` in a directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes a fresh CA and certificates in `dir` (panics on failure, as
    /// tests do).
    pub fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["worker".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            // The subject CN is the file's name: `client` names the
            // client certificate's principal under mutual TLS.
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        write("token", format!("{TOKEN}\n"));
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A server's settings: TLS, and mutual TLS when `mutual`.
    pub fn server(&self, mutual: bool) -> TlsConfig {
        TlsConfig {
            cert: Some(self.path("server.pem")),
            key: Some(self.path("server.key")),
            client_ca: mutual.then(|| self.path("ca.pem")),
            ..TlsConfig::default()
        }
    }

    /// A client's settings: trusting the CA, with the client certificate
    /// when `identity`.
    pub fn client(&self, identity: bool) -> TlsConfig {
        TlsConfig {
            ca: Some(self.path("ca.pem")),
            cert: identity.then(|| self.path("client.pem")),
            key: identity.then(|| self.path("client.key")),
            ..TlsConfig::default()
        }
    }
}
