//! Model references (`name`, `name@alias`, `name:version`) with this
//! crate's errors: the parser and the name rule are `camshaft-spec`'s
//! ([`camshaft_spec::ModelRef`], [`camshaft_spec::check_name`]), which the
//! store applies too.

use std::fmt;
use std::str::FromStr;

pub use camshaft_spec::{LATEST_ALIAS, MAX_NAME_LEN, VersionSelector};

use crate::{Error, Result};

/// A parsed model reference, as `ExplainRequest.model` and
/// `GetModelRequest.model` carry it: [`camshaft_spec::ModelRef`]'s fields,
/// parsed by it, with this crate's [`Error`] (INVALID_ARGUMENT on the wire).
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
    /// The model name (checked by [`validate_name`]).
    pub name: String,
    /// The version it selects.
    pub selector: VersionSelector,
}

impl From<camshaft_spec::ModelRef> for ModelRef {
    fn from(r: camshaft_spec::ModelRef) -> Self {
        ModelRef {
            name: r.name,
            selector: r.selector,
        }
    }
}

impl ModelRef {
    /// Parses `name`, `name@alias` or `name:version`
    /// ([`camshaft_spec::ModelRef::parse`]).
    pub fn parse(reference: &str) -> Result<ModelRef> {
        Ok(camshaft_spec::ModelRef::parse(reference)?.into())
    }

    /// `name:version`.
    pub fn version(name: impl Into<String>, version: u64) -> ModelRef {
        camshaft_spec::ModelRef::version(name, version).into()
    }

    /// `name@alias`.
    pub fn alias_of(name: impl Into<String>, alias: impl Into<String>) -> ModelRef {
        camshaft_spec::ModelRef::alias_of(name, alias).into()
    }

    /// The alias to resolve: `latest` for a bare name, the alias for
    /// `name@alias`, `None` for a pinned version.
    pub fn alias(&self) -> Option<&str> {
        self.selector.alias()
    }

    /// The pinned version, for `name:version`.
    pub fn pinned_version(&self) -> Option<u64> {
        self.selector.pinned_version()
    }
}

/// Checks a model name ([`camshaft_spec::validate_name`]): 1 to
/// [`MAX_NAME_LEN`] ASCII letters, digits, `.`, `_` or `-`, starting with a
/// letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    Ok(camshaft_spec::validate_name(name)?)
}

/// Checks an alias ([`camshaft_spec::validate_alias`]): the name rule, and
/// not all digits (so `name@3` cannot be confused with `name:3`).
pub fn validate_alias(alias: &str) -> Result<()> {
    Ok(camshaft_spec::validate_alias(alias)?)
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
