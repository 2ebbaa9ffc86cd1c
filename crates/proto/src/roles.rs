//! Who may call what: principals, their roles, and the role each RPC needs.
//!
//! Every call but health is made by a [`Principal`]: the owner of the bearer
//! token it carries (from a tokens file, the single `auth_token_file`, or a
//! worker credential), or `anonymous` when the server asks for no client
//! token. Its [`Role`] decides what it may call ([`required_role`]):
//!
//! | role | may call |
//! |---|---|
//! | `viewer` | `Coordinator` reads (`GetJob`, `ListJobs`, `WatchJob`, `ListWorkers`, `ListModels`, `GetModel`), `Explainer`, `ServerInfo`, reflection, metrics |
//! | `editor` | everything a viewer may, plus `SubmitJob`, `CancelJob`, `SetAlias`, `DeleteAlias`, `DeleteModel`, `ImportModel`, `UpdateModelVersion` |
//! | `worker` | `WorkerLink` only |
//!
//! A worker credential is refused on the client API and a client token on
//! `WorkerLink` (PERMISSION_DENIED): a stolen client token cannot pose as a
//! worker, nor a worker's credential change the registry.
//!
//! The tokens file has one principal per line, `token,name,role` (as
//! Kubernetes' static token file has `token,user,...`); `#` starts a
//! comment. Under mutual TLS a line `cert:<common name>,name,role` names
//! the principal of a client certificate with that subject CN instead
//! (as Kubernetes takes the user from a client certificate's CN); a bearer
//! token, when a call carries one, wins:
//!
//! ```text
//! # token,                            principal, role
//! 3f9c1e0b6a2d4f8e9b7c5a1d2e3f4a5b, alice,     editor
//! 8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b, dashboard, viewer
//! 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d, gpu-node-1, worker
//! cert:gpu-node-2,                    gpu-node-2, worker
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::Error;

/// What a principal may do; see the [module docs](self) for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads and explanations.
    Viewer,
    /// Reads, plus changes: jobs, imports, aliases, deletions.
    Editor,
    /// The workers' `WorkerLink` and nothing else.
    Worker,
}

impl Role {
    /// `viewer`, `editor` or `worker`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Worker => "worker",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }

    /// Whether this role may call what `needed` may: an editor may do what
    /// a viewer may; the worker role stands apart.
    pub fn allows(self, needed: Role) -> bool {
        self == needed || (self == Role::Editor && needed == Role::Viewer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The caller of an RPC. The auth layer puts it in the request's
/// extensions (`request.extensions().get::<Principal>()`), so a handler can
/// record who made a job, an import or an alias move.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The name from the tokens file (`anonymous` without a token).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Principal {
    /// The caller of a server that asks for no client token.
    pub fn anonymous() -> Principal {
        Principal {
            name: ANONYMOUS.to_string(),
            role: Role::Editor,
        }
    }

    /// The principal of a request the auth layer let through (`anonymous`
    /// for one that bypassed it, e.g. in a test calling a service directly).
    pub fn of<T>(request: &tonic::Request<T>) -> Principal {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::anonymous)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// The name of the principal of calls without a token on a server that
/// asks for none.
pub const ANONYMOUS: &str = "anonymous";

/// The principal name of the single `auth_token_file`'s token.
pub const TOKEN_FILE_PRINCIPAL: &str = "token";

/// The principal name of the single `worker_token_file`'s credential.
pub const WORKER_PRINCIPAL: &str = "worker";

/// Bearer tokens and their principals. Tokens are kept as sha256 digests,
/// so a lookup takes the same time wherever a wrong token differs.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    by_digest: HashMap<[u8; 32], Principal>,
    /// Principals of client certificates, by subject common name.
    by_certificate: HashMap<String, Principal>,
}

/// The prefix of a tokens file line naming a client certificate's CN.
const CERT_PREFIX: &str = "cert:";

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenTable {
    /// Adds `token` for `principal`; a token given twice is an error.
    pub fn insert(&mut self, token: &str, principal: Principal) -> Result<(), Error> {
        if token.is_empty() {
            return Err(Error::Security(format!(
                "the token of {} is empty",
                principal.name
            )));
        }
        match self.by_digest.insert(digest(token), principal.clone()) {
            Some(other) => Err(Error::Security(format!(
                "one token is given to both {other} and {principal}"
            ))),
            None => Ok(()),
        }
    }

    /// Reads a tokens file (`token,name,role` per line; see the
    /// [module docs](self)) into the table. Errors name the line, never
    /// the token.
    pub fn add_file(&mut self, path: &Path) -> Result<(), Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Security(format!("reading the tokens file {}: {e}", path.display()))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at =
                |why: String| Error::Security(format!("{} line {}: {why}", path.display(), n + 1));
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [token, name, role] = fields[..] else {
                return Err(at(format!(
                    "expected `token,name,role`, found {} fields",
                    fields.len()
                )));
            };
            if let Some(common_name) = token.strip_prefix(CERT_PREFIX) {
                let principal = Principal {
                    name: name.to_string(),
                    role: Role::parse(role).ok_or_else(|| {
                        at(format!(
                            "unknown role {}; expected viewer, editor or worker",
                            crate::short(role)
                        ))
                    })?,
                };
                if common_name.is_empty()
                    || self
                        .by_certificate
                        .insert(common_name.to_string(), principal)
                        .is_some()
                {
                    return Err(at(format!(
                        "the certificate name {} is empty or given twice",
                        crate::short(common_name)
                    )));
                }
                continue;
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(at(format!(
                    "the token is {} characters; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 16`)",
                    token.len()
                )));
            }
            super::security::check_token(token).map_err(|e| at(e.to_string()))?;
            if name.is_empty() || name.len() > 64 {
                return Err(at("the principal name must be 1 to 64 characters".into()));
            }
            let role = Role::parse(role).ok_or_else(|| {
                at(format!(
                    "unknown role {}; expected viewer, editor or worker",
                    crate::short(role)
                ))
            })?;
            self.insert(
                token,
                Principal {
                    name: name.to_string(),
                    role,
                },
            )
            .map_err(|e| at(e.to_string()))?;
        }
        Ok(())
    }

    /// The principal owning `token`.
    pub fn get(&self, token: &str) -> Option<&Principal> {
        self.by_digest.get(&digest(token))
    }

    /// The principal of a client certificate whose subject CN is `name`.
    pub fn get_certificate(&self, name: &str) -> Option<&Principal> {
        self.by_certificate.get(name)
    }

    fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.by_digest.values().chain(self.by_certificate.values())
    }

    /// Whether some credential is a client's (viewer or editor): then every
    /// client call needs one.
    pub fn has_client_tokens(&self) -> bool {
        self.principals().any(|p| p.role != Role::Worker)
    }

    /// Whether some credential is a worker's.
    pub fn has_worker_tokens(&self) -> bool {
        self.principals().any(|p| p.role == Role::Worker)
    }
}

/// Shortest token a tokens file accepts (128 bits as hex is 32).
pub const MIN_TOKEN_LEN: usize = 16;

/// gRPC methods that change state: an editor's.
const EDITOR_METHODS: [&str; 7] = [
    "/camshaft.v1.Coordinator/SubmitJob",
    "/camshaft.v1.Coordinator/CancelJob",
    "/camshaft.v1.Coordinator/SetAlias",
    "/camshaft.v1.Coordinator/DeleteAlias",
    "/camshaft.v1.Coordinator/DeleteModel",
    "/camshaft.v1.Coordinator/ImportModel",
    "/camshaft.v1.Coordinator/UpdateModelVersion",
];

/// The role a call of `path` (`/package.Service/Method`) needs: `None` for
/// the health service (probes carry no token), `worker` for `WorkerLink`,
/// `editor` for the changing methods, `viewer` for everything else
/// (unknown paths included: they are answered UNIMPLEMENTED after the check).
pub fn required_role(path: &str) -> Option<Role> {
    if path.starts_with(crate::security::HEALTH_PATH) {
        None
    } else if path.starts_with("/camshaft.v1.WorkerLink/") {
        Some(Role::Worker)
    } else if EDITOR_METHODS.contains(&path) {
        Some(Role::Editor)
    } else {
        Some(Role::Viewer)
    }
}

/// Every gRPC path a Camshaft server serves: the `camshaft.v1` methods (from
/// [`FILE_DESCRIPTOR_SET`](crate::FILE_DESCRIPTOR_SET)), health and
/// reflection. Metric labels use it, so a caller inventing paths cannot grow
/// them without bound.
pub fn known_methods() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message;
        let mut known: HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // The descriptor set is compiled into this crate: it always decodes.
        if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET) {
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_allow_their_own_part_only() {
        assert!(Role::Editor.allows(Role::Viewer));
        assert!(Role::Editor.allows(Role::Editor));
        assert!(!Role::Viewer.allows(Role::Editor));
        assert!(!Role::Worker.allows(Role::Viewer));
        assert!(!Role::Editor.allows(Role::Worker));
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            required_role("/camshaft.v1.WorkerLink/Attach"),
            Some(Role::Worker)
        );
        assert_eq!(
            required_role("/camshaft.v1.Coordinator/SetAlias"),
            Some(Role::Editor)
        );
        assert_eq!(
            required_role("/camshaft.v1.Coordinator/ListJobs"),
            Some(Role::Viewer)
        );
        assert_eq!(
            required_role("/camshaft.v1.Explainer/Explain"),
            Some(Role::Viewer)
        );
        assert_eq!(
            required_role("/camshaft.v1.Coordinator/UpdateModelVersion"),
            Some(Role::Editor)
        );
        for read in ["GetAliasHistory", "WatchModels"] {
            assert_eq!(
                required_role(&format!("/camshaft.v1.Coordinator/{read}")),
                Some(Role::Viewer)
            );
        }
    }

    #[test]
    fn every_editor_method_exists_and_the_known_set_has_every_service() {
        let known = known_methods();
        for m in EDITOR_METHODS {
            assert!(known.contains(m), "{m}");
        }
        for m in [
            "/camshaft.v1.WorkerLink/Attach",
            "/camshaft.v1.Explainer/ExplainStream",
            "/camshaft.v1.ServerInfo/GetServerInfo",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(known.contains(m), "{m}");
        }
        assert!(!known.contains("/camshaft.v1.Coordinator/Nope"));
    }

    #[test]
    fn a_tokens_file_names_principals_and_refuses_bad_lines_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(
            &path,
            "# comment\n\
             aaaaaaaaaaaaaaaaaaaa, alice, editor\n\
             \n\
             bbbbbbbbbbbbbbbbbbbb,dash,viewer # trailing comment\n\
             cccccccccccccccccccc,node-1,worker\n",
        )
        .unwrap();
        let mut table = TokenTable::default();
        table.add_file(&path).unwrap();
        assert_eq!(table.get("aaaaaaaaaaaaaaaaaaaa").unwrap().name, "alice");
        assert_eq!(
            table.get("bbbbbbbbbbbbbbbbbbbb").unwrap().role,
            Role::Viewer
        );
        assert_eq!(
            table.get("cccccccccccccccccccc").unwrap().role,
            Role::Worker
        );
        assert!(table.get("aaaaaaaaaaaaaaaaaaab").is_none());
        assert!(table.has_client_tokens() && table.has_worker_tokens());

        for (text, expect) in [
            ("short,a,editor\n", "line 1: the token is 5 characters"),
            ("dddddddddddddddddddd,a,admin\n", "unknown role \"admin\""),
            ("dddddddddddddddddddd,a\n", "found 2 fields"),
            (
                "dddddddddddddddddddd,a,editor\ndddddddddddddddddddd,b,viewer\n",
                "line 2: one token is given to both",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = TokenTable::default()
                .add_file(&path)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e}");
            assert!(
                !e.contains("dddddddddddddddddddd"),
                "errors never show a token: {e}"
            );
        }
    }
}
