//! Confining the paths a request names (a job's data directory, its
//! pretrained weights) to the directories the operator allowed.
//!
//! [`DataRoots::resolve`] answers in two steps. First, without touching the
//! file system, the path (a relative one taken under the first root) has its
//! `.` and `..` removed as text and must lie under a root; a path that does
//! not is refused before anything about it is looked up. Then every symbolic
//! link along it is resolved, as far as it exists, and the result must still
//! lie under a root (a link inside a root that points out of it is refused).
//! Both refusals are one [`Error::OutsideDataRoots`] that neither echoes the
//! path nor depends on whether it exists, so the error tells a caller
//! nothing about the file system outside the roots. The path returned holds
//! no links and no `..`: what is opened is what was checked.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// The directories a worker reads request-named data sets and weights
/// from, as configured and as the file system resolves them.
///
/// ```
/// use camshaft_data::DataRoots;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir(dir.path().join("pets"))?;
/// let roots = DataRoots::new([dir.path()])?;
/// let inside = roots.resolve("dataset.data_dir", "pets".as_ref())?;
/// assert_eq!(inside, dir.path().canonicalize()?.join("pets"));
/// let outside = roots.resolve("dataset.data_dir", "/etc/passwd".as_ref()).unwrap_err();
/// let missing = roots.resolve("dataset.data_dir", "/etc/nope".as_ref()).unwrap_err();
/// assert_eq!(outside.to_string(), missing.to_string());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRoots {
    roots: Vec<Root>,
    /// The configured roots as the refusal lists them.
    listed: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Root {
    /// Absolute, without `.` or `..`, links not resolved.
    absolute: PathBuf,
    /// `absolute` with its links resolved as far as it exists.
    real: PathBuf,
}

impl DataRoots {
    /// The roots, in order (a relative request path is taken under the
    /// first). A relative root is taken under the current directory; a root
    /// need not exist yet (a cache directory made by the first download).
    /// No roots is an [`Error::InvalidConfig`].
    pub fn new<I>(roots: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<Path>,
    {
        let mut resolved = Vec::new();
        let mut listed = Vec::new();
        for root in roots {
            let root = root.as_ref();
            let absolute = if root.is_absolute() {
                lexical(root)
            } else {
                let cwd = std::env::current_dir()
                    .map_err(|e| Error::io("find the current directory for", root, e))?;
                lexical(&cwd.join(root))
            };
            let real = resolve_links(&absolute);
            listed.push(root.display().to_string());
            resolved.push(Root { absolute, real });
        }
        if resolved.is_empty() {
            return Err(Error::InvalidConfig("data_roots is empty".into()));
        }
        Ok(DataRoots {
            roots: resolved,
            listed: listed.join(", "),
        })
    }

    /// `path` (named by a request's `what`, e.g. `"pretrained_path"`)
    /// resolved: absolute, links resolved, no `..`, under a root. A relative
    /// path is taken under the first root. A path outside every root,
    /// existing or not, is the same [`Error::OutsideDataRoots`]; one inside
    /// a root need not exist (its reader says so).
    pub fn resolve(&self, what: &str, path: &Path) -> Result<PathBuf> {
        let refused = || Error::OutsideDataRoots {
            what: what.to_string(),
            roots: self.listed.clone(),
        };
        let joined = if path.is_absolute() {
            lexical(path)
        } else {
            lexical(&self.roots[0].real.join(path))
        };
        // Nothing outside the roots is looked up: no answer can depend on it.
        let named_inside = self
            .roots
            .iter()
            .any(|r| joined.starts_with(&r.absolute) || joined.starts_with(&r.real));
        if !named_inside {
            return Err(refused());
        }
        let real = resolve_links(&joined);
        if !self.roots.iter().any(|r| real.starts_with(&r.real)) {
            return Err(refused());
        }
        Ok(real)
    }

    /// The roots as configured, for messages.
    pub fn listed(&self) -> &str {
        &self.listed
    }
}

/// `path` without `.` and with each `..` taking away the component before
/// it, as text (`/` stays `/`).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// An absolute path without `.` or `..` with the links of its longest
/// existing ancestor resolved and the rest (which does not exist, so holds
/// no links) appended.
fn resolve_links(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut missing = Vec::new();
    loop {
        if let Ok(mut real) = existing.canonicalize() {
            real.extend(missing.iter().rev());
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lexical_drops_dots_and_stops_at_the_root() {
        assert_eq!(lexical("/a/./b/../c".as_ref()), Path::new("/a/c"));
        assert_eq!(lexical("/a/../../../etc".as_ref()), Path::new("/etc"));
        assert_eq!(lexical("/".as_ref()), Path::new("/"));
    }

    #[test]
    fn missing_components_are_appended_to_the_real_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(
            resolve_links(&dir.path().join("a/b")),
            real.join("a").join("b")
        );
    }

    #[test]
    fn no_roots_is_a_config_error() {
        let err = DataRoots::new(Vec::<PathBuf>::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }

    /// Outside the roots the error is one text, whatever the path is and
    /// whether it exists; it names the roots and not the path.
    #[test]
    fn outside_is_one_error_whether_or_not_the_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let roots = DataRoots::new([dir.path()]).unwrap();
        let errors: Vec<String> = [
            "/etc/passwd",
            "/etc/nope",
            "/etc/passwd/x",
            "/",
            "../../../../etc/passwd",
            "nope/../../..",
        ]
        .iter()
        .map(|p| {
            roots
                .resolve("pretrained_path", p.as_ref())
                .unwrap_err()
                .to_string()
        })
        .collect();
        for e in &errors {
            assert_eq!(e, &errors[0]);
        }
        assert!(errors[0].contains("pretrained_path"), "{}", errors[0]);
        assert!(errors[0].contains(&dir.path().display().to_string()));
        assert!(!errors[0].contains("etc"), "{}", errors[0]);
    }

    #[cfg(unix)]
    #[test]
    fn links_out_of_a_root_are_refused_and_links_within_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let other = dir.path().join("other");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("w.pth"), b"x").unwrap();
        std::fs::write(root.join("sub/w.pth"), b"x").unwrap();
        std::os::unix::fs::symlink(&other, root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("in")).unwrap();
        let roots = DataRoots::new([&root]).unwrap();
        let outside = roots
            .resolve("pretrained_path", &other.join("w.pth"))
            .unwrap_err()
            .to_string();
        for path in ["out/w.pth", "out/missing.pth", "out"] {
            let err = roots.resolve("pretrained_path", path.as_ref()).unwrap_err();
            assert_eq!(err.to_string(), outside, "{path}");
        }
        let real = root.canonicalize().unwrap();
        assert_eq!(
            roots
                .resolve("pretrained_path", "in/w.pth".as_ref())
                .unwrap(),
            real.join("sub/w.pth")
        );
        assert_eq!(
            roots
                .resolve("pretrained_path", &root.join("sub/../sub/./w.pth"))
                .unwrap(),
            real.join("sub/w.pth")
        );
        // Inside but missing: resolved, for the reader to report.
        assert_eq!(
            roots
                .resolve("dataset.data_dir", "new/pets".as_ref())
                .unwrap(),
            real.join("new/pets")
        );
    }

    /// A root that is itself a link may be named through the link or
    /// through its target; a second root is allowed too.
    #[cfg(unix)]
    #[test]
    fn a_linked_root_matches_both_names() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk/data");
        std::fs::create_dir_all(&target).unwrap();
        let link = dir.path().join("data");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let second = tempfile::tempdir().unwrap();
        let roots = DataRoots::new([link.as_path(), second.path()]).unwrap();
        let real = target.canonicalize().unwrap();
        assert_eq!(roots.resolve("x", &link.join("a")).unwrap(), real.join("a"));
        assert_eq!(
            roots.resolve("x", &target.join("a")).unwrap(),
            real.join("a")
        );
        let in_second = second.path().join("b");
        assert_eq!(
            roots.resolve("x", &in_second).unwrap(),
            second.path().canonicalize().unwrap().join("b")
        );
    }
}
