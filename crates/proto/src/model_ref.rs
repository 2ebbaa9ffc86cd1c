//! Model references: `name`, `name@alias`, `name:version`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The alias a bare model name resolves through.
pub const LATEST_ALIAS: &str = "latest";

/// Longest model name or alias accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Which version of a model a [`ModelRef`] points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VersionSelector {
    /// A bare name: whatever the [`LATEST_ALIAS`] alias points at.
    Latest,
    /// `name@alias`: whatever the alias points at when it is resolved.
    Alias(String),
    /// `name:version`: one immutable version (≥ 1).
    Version(u64),
}

/// A parsed model reference, as `ExplainRequest.model` and
/// `GetModelRequest.model` carry it.
///
/// ```
/// use camshaft_proto::{ModelRef, VersionSelector};
///
/// let r = ModelRef::parse("pets@prod")?;
/// assert_eq!(r.name, "pets");
/// assert_eq!(r.selector, VersionSelector::Alias("prod".into()));
/// assert_eq!(ModelRef::parse("pets:3")?.selector, VersionSelector::Version(3));
/// assert_eq!(ModelRef::parse("pets")?.alias(), Some("latest"));
/// assert!(ModelRef::parse("pets:latest").is_err());
/// # Ok::<(), camshaft_proto::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The model name (validated by [`validate_name`]).
    pub name: String,
    /// The version it selects.
    pub selector: VersionSelector,
}

impl ModelRef {
    /// Parses `name`, `name@alias` or `name:version`; names and aliases must
    /// pass [`validate_name`] / [`validate_alias`], versions are decimal ≥ 1.
    pub fn parse(reference: &str) -> Result<ModelRef> {
        let invalid = |reason: String| Error::InvalidModelRef {
            reference: reference.to_string(),
            reason,
        };
        let at = reference.find('@');
        let colon = reference.find(':');
        let (name, selector) = match (at, colon) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "use either `name@alias` or `name:version`, not both".into(),
                ));
            }
            (None, None) => (reference, VersionSelector::Latest),
            (Some(i), None) => {
                let alias = &reference[i + 1..];
                validate_alias(alias).map_err(|e| invalid(inner_reason(e)))?;
                (&reference[..i], VersionSelector::Alias(alias.to_string()))
            }
            (None, Some(i)) => {
                let version = &reference[i + 1..];
                (
                    &reference[..i],
                    VersionSelector::Version(parse_version(version).map_err(invalid)?),
                )
            }
        };
        validate_name(name).map_err(|e| invalid(inner_reason(e)))?;
        Ok(ModelRef {
            name: name.to_string(),
            selector,
        })
    }

    /// `name:version`.
    pub fn version(name: impl Into<String>, version: u64) -> ModelRef {
        ModelRef {
            name: name.into(),
            selector: VersionSelector::Version(version),
        }
    }

    /// `name@alias`.
    pub fn alias_of(name: impl Into<String>, alias: impl Into<String>) -> ModelRef {
        ModelRef {
            name: name.into(),
            selector: VersionSelector::Alias(alias.into()),
        }
    }

    /// The alias to resolve: `latest` for a bare name, the alias for
    /// `name@alias`, `None` for a pinned version.
    pub fn alias(&self) -> Option<&str> {
        match &self.selector {
            VersionSelector::Latest => Some(LATEST_ALIAS),
            VersionSelector::Alias(a) => Some(a),
            VersionSelector::Version(_) => None,
        }
    }

    /// The pinned version, for `name:version`.
    pub fn pinned_version(&self) -> Option<u64> {
        match self.selector {
            VersionSelector::Version(v) => Some(v),
            _ => None,
        }
    }
}

fn parse_version(s: &str) -> std::result::Result<u64, String> {
    if s.is_empty() {
        return Err("the version after `:` is empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the version {} is not a number (use `name@alias` for an alias)",
            crate::short(s)
        ));
    }
    match s.parse::<u64>() {
        Ok(0) => Err("versions start at 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("the version {s} is too large")),
    }
}

fn inner_reason(e: Error) -> String {
    match e {
        Error::InvalidName { what, reason, .. } => format!("{what}: {reason}"),
        other => other.to_string(),
    }
}

fn check_name(what: &'static str, value: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidName {
        what,
        value: value.to_string(),
        reason,
    };
    let Some(first) = value.chars().next() else {
        return Err(invalid("it is empty".into()));
    };
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "it is {} bytes long; at most {MAX_NAME_LEN} allowed",
            value.len()
        )));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(invalid(format!(
            "it must start with a letter or digit, not {first:?}"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed (letters, digits, `.`, `_`, `-` only)"
        )));
    }
    Ok(())
}

/// Checks a model name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `.`, `_`
/// or `-`, starting with a letter or digit. (So a name never contains the
/// `@` or `:` of a reference, nor a `/` of a store key.)
pub fn validate_name(name: &str) -> Result<()> {
    check_name("model name", name)
}

/// Checks an alias: the same rule as [`validate_name`], and not all digits
/// (so `name@3` cannot be confused with `name:3`).
pub fn validate_alias(alias: &str) -> Result<()> {
    check_name("alias", alias)?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidName {
            what: "alias",
            value: alias.to_string(),
            reason: "an alias cannot be all digits (did you mean `name:version`?)".into(),
        });
    }
    Ok(())
}

impl fmt::Display for ModelRef {
    /// The canonical string form, which [`ModelRef::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            VersionSelector::Latest => write!(f, "{}", self.name),
            VersionSelector::Alias(a) => write!(f, "{}@{a}", self.name),
            VersionSelector::Version(v) => write!(f, "{}:{v}", self.name),
        }
    }
}

impl FromStr for ModelRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ModelRef::parse(s)
    }
}

impl crate::v1::ModelVersion {
    /// `name:version` of this version.
    pub fn model_ref(&self) -> ModelRef {
        ModelRef::version(self.name.clone(), self.version)
    }
}
