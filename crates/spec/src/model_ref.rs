//! Model references (`name`, `name@alias`, `name:version`) and the one
//! rule for model names and aliases, which the wire, the registry and the
//! store all apply.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The alias a bare model name resolves through.
pub const LATEST_ALIAS: &str = "latest";

/// Longest model name or alias accepted, in bytes.
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

impl VersionSelector {
    /// The alias to resolve: `latest` for [`VersionSelector::Latest`], the
    /// alias for an alias, `None` for a pinned version.
    pub fn alias(&self) -> Option<&str> {
        match self {
            VersionSelector::Latest => Some(LATEST_ALIAS),
            VersionSelector::Alias(a) => Some(a),
            VersionSelector::Version(_) => None,
        }
    }

    /// The pinned version, for [`VersionSelector::Version`].
    pub fn pinned_version(&self) -> Option<u64> {
        match *self {
            VersionSelector::Version(v) => Some(v),
            _ => None,
        }
    }
}

/// A parsed model reference.
///
/// ```
/// use camshaft_spec::{ModelRef, VersionSelector};
///
/// let r = ModelRef::parse("pets@prod")?;
/// assert_eq!((r.name.as_str(), r.selector), ("pets", VersionSelector::Alias("prod".into())));
/// assert_eq!(ModelRef::parse("pets:3")?.pinned_version(), Some(3));
/// assert_eq!(ModelRef::parse("pets")?.alias(), Some("latest"));
/// // `name:3` is version 3, so no alias may be all digits.
/// assert!(ModelRef::parse("pets@3").is_err());
/// # Ok::<(), camshaft_spec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The model name (checked by [`validate_name`]).
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
        let (name, selector) = match (reference.find('@'), reference.find(':')) {
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
            (None, Some(i)) => (
                &reference[..i],
                VersionSelector::Version(parse_version(&reference[i + 1..]).map_err(invalid)?),
            ),
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
        self.selector.alias()
    }

    /// The pinned version, for `name:version`.
    pub fn pinned_version(&self) -> Option<u64> {
        self.selector.pinned_version()
    }
}

fn parse_version(s: &str) -> std::result::Result<u64, String> {
    if s.is_empty() {
        return Err("the version after `:` is empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the version {} is not a number (use `name@alias` for an alias)",
            crate::quote(s)
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

/// Checks a name of any kind (`what`: `model name`, `alias`, `worker id`):
/// 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit. Such a name never holds the `@` or `:`
/// of a reference nor the `/` of a store key, and is safe as a file name.
pub fn check_name(what: &'static str, value: &str) -> Result<()> {
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

/// Checks a model name: [`check_name`]'s rule.
pub fn validate_name(name: &str) -> Result<()> {
    check_name("model name", name)
}

/// Checks an alias: [`check_name`]'s rule, and not all digits (so
/// `name@3` cannot be confused with `name:3`, version 3).
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn references_and_names() {
        for (text, reason) in [
            ("pets@3", "an alias cannot be all digits"),
            ("pets@", "alias: it is empty"),
            ("pets:x", "is not a number"),
            ("pets:0", "versions start at 1"),
            ("a/b", "'/' is not allowed"),
            ("pets@a:1", "not both"),
        ] {
            let err = ModelRef::parse(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
        assert_eq!(
            ModelRef::parse("9lives:1").unwrap(),
            ModelRef::version("9lives", 1)
        );
        assert_eq!(ModelRef::parse("pets@v3").unwrap().to_string(), "pets@v3");
        // Names may be all digits; aliases may not.
        validate_name("2024").unwrap();
        assert!(validate_alias("2024").is_err());
        validate_alias("v2024").unwrap();
        assert!(check_name("worker id", &"w".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
