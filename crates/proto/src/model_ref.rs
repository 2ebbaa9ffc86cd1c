//! Model references (`name`, `name@alias`, `name:version`): the type, the
//! parser and the name rule are `camshaft-spec`'s ([`ModelRef`],
//! [`camshaft_spec::check_name`]), which the store applies too; the name
//! checks here return this crate's errors (INVALID_ARGUMENT on the wire).
//!
//! ```
//! use camshaft_proto::{ModelRef, VersionSelector};
//!
//! let r = ModelRef::parse("pets@prod")?;
//! assert_eq!(r.name, "pets");
//! assert_eq!(r.selector, VersionSelector::Alias("prod".into()));
//! assert_eq!(ModelRef::parse("pets:3")?.selector, VersionSelector::Version(3));
//! assert_eq!(ModelRef::parse("pets")?.alias(), Some("latest"));
//! assert!(ModelRef::parse("pets:latest").is_err());
//! assert!(ModelRef::parse("pets@3").is_err());
//! # Ok::<(), camshaft_spec::Error>(())
//! ```

pub use camshaft_spec::{LATEST_ALIAS, MAX_NAME_LEN, ModelRef, VersionSelector};

use crate::Result;

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

impl crate::v1::ModelVersion {
    /// `name:version` of this version.
    pub fn model_ref(&self) -> ModelRef {
        ModelRef::version(self.name.clone(), self.version)
    }
}
