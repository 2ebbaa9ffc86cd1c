//! The etcd key layout under the store's prefix (see the module doc of
//! [`crate::etcd`]), in one place: builders and the parsers of keys that
//! watches and scans get back.

use crate::records::JobId;

/// Builds and parses the store's keys under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

/// Numbers in keys are zero-padded to this many digits (u64::MAX has 20), so
/// key order is numeric order and a range over keys is a range over ids.
const DIGITS: usize = 20;

fn num(n: u64) -> String {
    format!("{n:0DIGITS$}")
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Everything of this store (for the "store is reachable" probe).
    pub(crate) fn root(&self) -> &str {
        &self.prefix
    }

    // ----- jobs -----

    pub(crate) fn jobs(&self) -> String {
        self.key("jobs/")
    }

    pub(crate) fn job(&self, id: JobId) -> String {
        self.key(&format!("jobs/{}", num(id.0)))
    }

    pub(crate) fn job_counter(&self) -> String {
        self.key("counters/job")
    }

    // ----- models -----

    /// Every version and alias of every model.
    pub(crate) fn models(&self) -> String {
        self.key("models/")
    }

    /// Every version and alias of one model.
    pub(crate) fn model(&self, name: &str) -> String {
        self.key(&format!("models/{name}/"))
    }

    pub(crate) fn version(&self, name: &str, version: u64) -> String {
        self.key(&format!("models/{name}/versions/{}", num(version)))
    }

    pub(crate) fn alias(&self, name: &str, alias: &str) -> String {
        self.key(&format!("models/{name}/aliases/{alias}"))
    }

    /// Where `name`'s alias changes are kept (outside `models/`, whose
    /// listing knows only versions and aliases).
    pub(crate) fn alias_history(&self, name: &str) -> String {
        self.key(&format!("alias-history/{name}/"))
    }

    /// One alias change: its time and the alias key's revision before it
    /// keep changes of the same alias apart.
    pub(crate) fn alias_change(
        &self,
        name: &str,
        unix_ms: u64,
        alias: &str,
        before: i64,
    ) -> String {
        format!(
            "{}{}/{alias}/{}",
            self.alias_history(name),
            num(unix_ms),
            num(before.max(0) as u64)
        )
    }

    pub(crate) fn model_counter(&self, name: &str) -> String {
        self.key(&format!("counters/model/{name}"))
    }

    /// `(name, alias)` of an alias key, `None` for any other key.
    pub(crate) fn parse_alias<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("models/")?;
        let (name, rest) = rest.split_once('/')?;
        let alias = rest.strip_prefix("aliases/")?;
        (!alias.is_empty() && !alias.contains('/')).then_some((name, alias))
    }

    /// Whether a key under [`models`](Self::models) is a version manifest.
    pub(crate) fn is_version(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix("models/"))
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("versions/"))
    }

    // ----- checkpoints -----

    /// Every checkpoint manifest of every job.
    pub(crate) fn all_checkpoints(&self) -> String {
        self.key("checkpoints/")
    }

    pub(crate) fn checkpoints(&self, job: JobId) -> String {
        self.key(&format!("checkpoints/{}/", num(job.0)))
    }

    pub(crate) fn checkpoint(&self, job: JobId, id: u64) -> String {
        self.key(&format!("checkpoints/{}/{}", num(job.0), num(id)))
    }

    pub(crate) fn checkpoint_counter(&self, job: JobId) -> String {
        self.key(&format!("counters/checkpoint/{}", num(job.0)))
    }

    // ----- blobs -----

    pub(crate) fn chunks(&self) -> String {
        self.key("chunks/")
    }

    pub(crate) fn chunk(&self, sha256: &str) -> String {
        self.key(&format!("chunks/{sha256}"))
    }

    /// Blob writes in flight: the chunks they wrote before their manifest.
    pub(crate) fn pending(&self) -> String {
        self.key("pending/")
    }

    pub(crate) fn pending_write(&self, lease: i64) -> String {
        self.key(&format!("pending/{lease:016x}"))
    }

    /// Held (on a lease) while unreferenced chunks are removed.
    pub(crate) fn gc_lock(&self) -> String {
        self.key("gc-lock")
    }

    // ----- workers -----

    pub(crate) fn workers(&self) -> String {
        self.key("workers/")
    }

    pub(crate) fn worker(&self, id: &str) -> String {
        self.key(&format!("workers/{id}"))
    }

    /// The worker id of a worker key.
    pub(crate) fn parse_worker<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("workers/")
            .filter(|id| !id.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_parse_back() {
        let keys = Keys::new("/camshaft/");
        assert_eq!(keys.job(JobId(17)), "/camshaft/jobs/00000000000000000017");
        assert!(keys.checkpoint(JobId(1), 9) < keys.checkpoint(JobId(1), 10));
        assert!(
            keys.checkpoint(JobId(1), 9)
                .starts_with(&keys.checkpoints(JobId(1)))
        );
        assert!(
            !keys
                .checkpoint(JobId(11), 1)
                .starts_with(&keys.checkpoints(JobId(1)))
        );
        let alias = keys.alias("pets", "prod");
        assert_eq!(keys.parse_alias(&alias), Some(("pets", "prod")));
        assert_eq!(keys.parse_alias(&keys.version("pets", 1)), None);
        assert!(keys.is_version(&keys.version("pets", 1)));
        assert!(!keys.is_version(&alias));
        assert_eq!(keys.parse_worker(&keys.worker("w/1")), Some("w/1"));
        assert_eq!(Keys::new("/other/").parse_worker(&keys.worker("w")), None);
    }
}
