//! Server addresses as the user types them (`host:port`, `http://host:port`)
//! turned into the URIs tonic connects to.

use crate::error::InputError;

/// The coordinator's address when neither `--coordinator` nor
/// `CAMSHAFT_COORDINATOR` is given (`camshaft up`'s default).
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// The explainer's address when neither `--explainer` nor
/// `CAMSHAFT_EXPLAINER` is given (`camshaft up`'s default).
pub const DEFAULT_EXPLAINER: &str = "http://127.0.0.1:50052";

/// Normalises a server address: surrounding whitespace and trailing slashes
/// go, and an address without a scheme (`host:port`) gets `http://`.
///
/// (Compiled, not run, as a doctest: doctests run from a temporary folder
/// where libtorch, which this crate links through camshaft-vision, is not
/// found; the unit tests below check the same.)
///
/// ```no_run,standalone_crate
/// use camshaft_ctl::address::normalize_address;
/// assert_eq!(normalize_address("10.0.0.5:50051").unwrap(), "http://10.0.0.5:50051");
/// assert_eq!(normalize_address("https://c.example/").unwrap(), "https://c.example");
/// assert!(normalize_address(" ").is_err());
/// ```
pub fn normalize_address(address: &str) -> Result<String, InputError> {
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return Err(InputError::new("empty server address"));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(InputError::new(format!(
            "server address {address:?} contains whitespace"
        )));
    }
    let uri = match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(InputError::new(format!(
                    "server address {address:?} has scheme {scheme:?}; expected http or https"
                )));
            }
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() {
                return Err(InputError::new(format!(
                    "server address {address:?} has no host"
                )));
            }
            format!("{scheme}://{rest}")
        }
        None => format!("http://{}", trimmed.trim_end_matches('/')),
    };
    // Let the URI parser have the last word, so a bad address fails here
    // with the user's spelling rather than deep inside tonic.
    uri.parse::<tonic::transport::Uri>().map_err(|e| {
        InputError::new(format!(
            "server address {address:?} is not a valid URI: {e}"
        ))
    })?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_port_gets_http() {
        assert_eq!(
            normalize_address("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_address("coordinator:50051").unwrap(),
            "http://coordinator:50051"
        );
        assert_eq!(
            normalize_address("[::1]:50051").unwrap(),
            "http://[::1]:50051"
        );
    }

    #[test]
    fn schemes_are_kept_and_checked() {
        assert_eq!(
            normalize_address("http://127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_address(" HTTPS://c.example:443/ ").unwrap(),
            "https://c.example:443"
        );
        assert_eq!(
            normalize_address(DEFAULT_EXPLAINER).unwrap(),
            DEFAULT_EXPLAINER
        );
        assert!(normalize_address("ftp://x:1").is_err());
        assert!(normalize_address("http://").is_err());
        assert!(normalize_address("").is_err());
        assert!(normalize_address("a b:1").is_err());
    }
}
