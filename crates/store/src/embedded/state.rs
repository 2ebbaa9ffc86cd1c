//! The embedded store's durable state and the operations that change it.
//!
//! Every write is a [`Commit`]: a revision and a list of [`Op`]s, validated
//! before it is logged and applied after, so replaying the log over a snapshot
//! rebuilds exactly the acknowledged state. `apply` cannot fail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::records::{
    Alias, AliasChange, AliasEvent, CheckpointManifest, JobId, JobRecord, MAX_ALIAS_HISTORY,
    ModelVersion, RegisteredModel,
};

/// One transaction: what the write-ahead log holds per record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Commit {
    /// The store revision after this commit.
    pub(crate) revision: u64,
    /// Applied in order.
    pub(crate) ops: Vec<Op>,
}

/// One change of durable state.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    PutJob(JobRecord),
    PutModelVersion(ModelVersion),
    SetAlias {
        name: String,
        alias: String,
        version: u64,
    },
    RemoveAlias {
        name: String,
        alias: String,
    },
    DeleteModelVersion {
        name: String,
        version: u64,
    },
    PutCheckpoint(CheckpointManifest),
    /// Appends to a model's alias history (dropping the oldest past
    /// [`MAX_ALIAS_HISTORY`]).
    RecordAliasChange(AliasChange),
    DeleteCheckpoint {
        job_id: JobId,
        id: u64,
    },
}

/// Everything durable, as the snapshot file holds it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DurableState {
    /// The revision of the last commit applied.
    pub(crate) revision: u64,
    /// The next job number (ids are never reused).
    pub(crate) next_job: u64,
    pub(crate) jobs: BTreeMap<u64, JobRecord>,
    pub(crate) models: BTreeMap<String, ModelEntry>,
    pub(crate) checkpoints: BTreeMap<u64, JobCheckpoints>,
}

/// One model name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ModelEntry {
    /// The next version number (never reused after a delete).
    pub(crate) next_version: u64,
    pub(crate) versions: BTreeMap<u64, ModelVersion>,
    pub(crate) aliases: BTreeMap<String, u64>,
    /// Recorded alias changes, oldest first (absent in older snapshots).
    #[serde(default)]
    pub(crate) alias_history: VecDeque<AliasChange>,
}

/// One job's retained checkpoints.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct JobCheckpoints {
    /// The next checkpoint id (never reused after pruning).
    pub(crate) next_id: u64,
    pub(crate) manifests: BTreeMap<u64, CheckpointManifest>,
}

impl DurableState {
    /// Applies one op; returns the alias change it made, if any, for watchers.
    pub(crate) fn apply(&mut self, op: Op) -> Option<AliasEvent> {
        match op {
            Op::PutJob(job) => {
                self.next_job = self.next_job.max(job.id.0 + 1);
                self.jobs.insert(job.id.0, job);
                None
            }
            Op::PutModelVersion(model) => {
                let entry = self.models.entry(model.name.clone()).or_default();
                entry.next_version = entry.next_version.max(model.version + 1);
                entry.versions.insert(model.version, model);
                None
            }
            Op::SetAlias {
                name,
                alias,
                version,
            } => {
                self.models
                    .entry(name.clone())
                    .or_default()
                    .aliases
                    .insert(alias.clone(), version);
                Some(AliasEvent::Set {
                    name,
                    alias,
                    version,
                })
            }
            Op::RemoveAlias { name, alias } => {
                let entry = self.models.get_mut(&name)?;
                entry.aliases.remove(&alias)?;
                Some(AliasEvent::Removed { name, alias })
            }
            Op::DeleteModelVersion { name, version } => {
                // The entry stays even when empty: its counter keeps versions
                // from being reused.
                if let Some(entry) = self.models.get_mut(&name) {
                    entry.versions.remove(&version);
                }
                None
            }
            Op::RecordAliasChange(change) => {
                let history = &mut self
                    .models
                    .entry(change.name.clone())
                    .or_default()
                    .alias_history;
                history.push_back(change);
                while history.len() > MAX_ALIAS_HISTORY {
                    history.pop_front();
                }
                None
            }
            Op::PutCheckpoint(manifest) => {
                let entry = self.checkpoints.entry(manifest.job_id.0).or_default();
                entry.next_id = entry.next_id.max(manifest.id + 1);
                entry.manifests.insert(manifest.id, manifest);
                None
            }
            Op::DeleteCheckpoint { job_id, id } => {
                if let Some(entry) = self.checkpoints.get_mut(&job_id.0) {
                    entry.manifests.remove(&id);
                }
                None
            }
        }
    }

    /// Every chunk hash a live manifest refers to.
    pub(crate) fn live_chunks(&self) -> BTreeSet<String> {
        let models = self
            .models
            .values()
            .flat_map(|m| m.versions.values())
            .flat_map(|v| v.weights.chunks.iter());
        let checkpoints = self
            .checkpoints
            .values()
            .flat_map(|c| c.manifests.values())
            .flat_map(|m| m.blob.chunks.iter());
        models.chain(checkpoints).cloned().collect()
    }

    /// Every alias, by model name then alias.
    pub(crate) fn aliases(&self) -> Vec<Alias> {
        self.models
            .iter()
            .flat_map(|(name, entry)| {
                entry.aliases.iter().map(|(alias, version)| Alias {
                    name: name.clone(),
                    alias: alias.clone(),
                    version: *version,
                })
            })
            .collect()
    }

    /// Every model name that has a version or an alias.
    pub(crate) fn registered_models(&self) -> Vec<RegisteredModel> {
        self.models
            .iter()
            .filter(|(_, e)| !e.versions.is_empty() || !e.aliases.is_empty())
            .map(|(name, entry)| RegisteredModel {
                name: name.clone(),
                versions: entry.versions.values().cloned().collect(),
                aliases: entry.aliases.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn alias_history_keeps_the_newest_changes() {
        let mut state = DurableState::default();
        for i in 0..=MAX_ALIAS_HISTORY as u64 {
            state.apply(Op::RecordAliasChange(AliasChange {
                name: "m".into(),
                alias: "prod".into(),
                from: Some(i),
                to: Some(i + 1),
                by: "alice".into(),
                unix_ms: 1,
                revision: i + 1,
            }));
        }
        let history = &state.models["m"].alias_history;
        assert_eq!(history.len(), MAX_ALIAS_HISTORY);
        assert_eq!(
            history.front().unwrap().revision,
            2,
            "the oldest went first"
        );
        assert_eq!(
            history.back().unwrap().revision,
            MAX_ALIAS_HISTORY as u64 + 1
        );
        // History alone does not make a model listed.
        assert!(state.registered_models().is_empty());
    }
}
