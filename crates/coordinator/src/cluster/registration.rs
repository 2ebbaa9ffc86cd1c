//! The model registry's writes: registering a version (a trained job's or
//! an import's), moving aliases, editing tags and descriptions, each
//! reported on the change feed. The rules (names, aliases, tags, weights
//! that fit their spec) live in [`crate::registry`].

use camshaft_proto::now_unix_ms;
use camshaft_proto::v1::{self, model_event::Event as ModelEvent};
use camshaft_store::{JobId, JobRecord, bundle};

use super::{Cluster, patiently};
use crate::{Error, Result, jobs, registry, spec};

impl Cluster {
    /// Points `name@alias` at `version` as `by`, records it in the feed,
    /// and returns the version it pointed at before (`None`: new alias).
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        by: &str,
    ) -> Result<Option<u64>> {
        let before = self.set_alias_quietly(name, alias, version, by).await?;
        if before != Some(version) {
            self.model_events
                .push(ModelEvent::AliasChanged(v1::AliasChange {
                    name: name.into(),
                    alias: alias.into(),
                    from_version: before,
                    to_version: Some(version),
                    changed_by: by.into(),
                    unix_ms: now_unix_ms(),
                    revision: 0,
                }));
        }
        Ok(before)
    }

    /// Removes `name@alias` as `by` and records it in the feed; returns the
    /// version it pointed at.
    pub async fn remove_alias(&self, name: &str, alias: &str, by: &str) -> Result<u64> {
        let before = registry::aliases_of(&self.store.list_models().await?, name)
            .get(alias)
            .copied()
            .ok_or_else(|| Error::NotFound(format!("no alias {name}@{alias}")))?;
        self.store.remove_alias_by(name, alias, by).await?;
        self.model_events
            .push(ModelEvent::AliasChanged(v1::AliasChange {
                name: name.into(),
                alias: alias.into(),
                from_version: Some(before),
                to_version: None,
                changed_by: by.into(),
                unix_ms: now_unix_ms(),
                revision: 0,
            }));
        Ok(before)
    }

    pub(super) async fn register_trained(
        &self,
        record: &JobRecord,
        checkpoint_id: &str,
    ) -> Result<v1::ModelVersion> {
        let spec = jobs::spec_of(record)?;
        let checkpoint_id: u64 = checkpoint_id.parse().map_err(|_| {
            Error::Internal(format!(
                "the final checkpoint id {checkpoint_id:?} is not a number"
            ))
        })?;
        let checkpoint = patiently("reading the final checkpoint", || {
            self.store.get_checkpoint(record.id, checkpoint_id)
        })
        .await?;
        // Which epoch the worker says the job registers (`register: best`
        // ships that epoch's weights beside the checkpoint's own).
        let selection = checkpoint
            .manifest
            .meta
            .get(bundle::SELECTION)
            .cloned()
            .unwrap_or_default();
        let files = bundle::unpack(&checkpoint.blob)?;
        let weights = [bundle::BEST_WEIGHTS, bundle::WEIGHTS]
            .iter()
            .find_map(|name| files.iter().find(|(n, _)| n == name))
            .map(|(_, data)| data.clone())
            .ok_or_else(|| Error::Internal("the final checkpoint has no weights".into()))?;
        let model_spec = checkpoint
            .manifest
            .meta
            .get("spec")
            .cloned()
            .ok_or_else(|| Error::Internal("the checkpoint has no model spec".into()))?;
        // Explained with the pixels it was validated on.
        let model_spec = registry::with_resize(model_spec, spec.resize());
        let epoch = selection
            .get("epoch")
            .and_then(serde_json::Value::as_u64)
            .and_then(|e| u32::try_from(e).ok());
        let selected_by = selection
            .get("selected_by")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("last")
            .to_string();
        // The chosen epoch's row (of the latest attempt that ran it), else
        // the last row.
        let rows: Vec<v1::EpochMetrics> = record
            .history
            .iter()
            .filter_map(|row| serde_json::from_value(row.clone()).ok())
            .collect();
        let last = epoch
            .and_then(|e| rows.iter().rev().find(|row| row.epoch == e))
            .or(rows.last())
            .cloned()
            .unwrap_or_default();
        let lineage = v1::Lineage {
            job_id: record.id.to_string(),
            dataset: spec::dataset_label(&spec),
            metrics: [
                ("accuracy".to_string(), last.accuracy),
                ("valid_loss".to_string(), last.valid_loss),
                ("train_loss".to_string(), last.train_loss),
            ]
            .into(),
            created_unix_ms: now_unix_ms(),
            checkpoint_id: checkpoint_id.to_string(),
            created_by: jobs::created_by(record).to_string(),
            epoch: Some(epoch.unwrap_or(last.epoch)),
            selected_by,
            ..Default::default()
        };
        let annotations = (&spec.tags, spec.description.as_str());
        self.register(
            &spec.name,
            model_spec,
            lineage,
            weights,
            &spec.aliases,
            annotations,
        )
        .await
    }

    /// Why the final checkpoint of a job says training stopped early, if it
    /// does.
    pub(super) async fn early_stop_of(
        &self,
        id: JobId,
        checkpoint_id: &str,
    ) -> Option<v1::EarlyStop> {
        let checkpoint_id: u64 = checkpoint_id.parse().ok()?;
        let manifests = self.store.list_checkpoints(id).await.ok()?;
        let manifest = manifests.iter().find(|m| m.id == checkpoint_id)?;
        let stop = manifest.meta.get(bundle::SELECTION)?.get("early_stop")?;
        serde_json::from_value(stop.clone()).ok()
    }

    /// Changes the tags and description of `name:version` (read, change,
    /// write, one edit at a time) and returns the version.
    pub async fn update_version(
        &self,
        name: &str,
        version: u64,
        remove_tags: &[String],
        set_tags: &std::collections::HashMap<String, String>,
        description: Option<&str>,
    ) -> Result<v1::ModelVersion> {
        if let Some(description) = description {
            registry::check_description("description", description)?;
        }
        let _edit = self.registry_edits.lock().await;
        let stored = self
            .store
            .get_model(&camshaft_store::ModelRef::Version(
                name.to_string(),
                version,
            ))
            .await?;
        let (tags, old_description) = registry::annotations(&stored.lineage);
        let tags = registry::updated_tags(tags, remove_tags, set_tags)?;
        let description = description.unwrap_or(&old_description);
        let lineage = registry::with_annotations(stored.lineage, &tags, description);
        let updated = self
            .store
            .update_model_lineage(name, version, lineage)
            .await?;
        let models = self.store.list_models().await?;
        let wire = registry::to_wire(&updated, &registry::aliases_of(&models, name))?;
        self.model_events
            .push(ModelEvent::VersionUpdated(wire.clone()));
        Ok(wire)
    }

    /// Stores `weights` as the next version of `name` with its tags and
    /// description, points `latest` and `aliases` at it, and returns its
    /// wire form.
    pub async fn register(
        &self,
        name: &str,
        model_spec: serde_json::Value,
        lineage: v1::Lineage,
        weights: bytes::Bytes,
        aliases: &[String],
        (tags, description): (&std::collections::HashMap<String, String>, &str),
    ) -> Result<v1::ModelVersion> {
        // A version exists only once its weights fit its spec: an import
        // checked this already; a trained model's checkpoint is checked here.
        registry::check_registrable(&model_spec, &weights, &self.config.model_limits)?;
        let lineage = serde_json::to_value(&lineage)
            .map_err(|e| Error::Internal(format!("cannot encode lineage: {e}")))?;
        let lineage = registry::with_annotations(lineage, tags, description);
        // `latest` moves with the registration; the feed says from where.
        let latest_before = registry::aliases_of(&self.store.list_models().await?, name)
            .get(camshaft_store::LATEST)
            .copied();
        // A retry after an ambiguous failure may register a second,
        // identical version: better than losing a trained model.
        let version = patiently("registering a model", || {
            self.store
                .register_model(name, model_spec.clone(), lineage.clone(), weights.clone())
        })
        .await?;
        let by = version
            .lineage
            .get("created_by")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut moved = vec![(camshaft_store::LATEST.to_string(), latest_before)];
        for alias in aliases {
            let before = self
                .set_alias_quietly(name, alias, version.version, &by)
                .await?;
            moved.push((alias.clone(), before));
        }
        let models = patiently("listing models", || self.store.list_models()).await?;
        let wire = registry::to_wire(&version, &registry::aliases_of(&models, name))?;
        self.model_events
            .push(ModelEvent::VersionRegistered(wire.clone()));
        for (alias, before) in moved
            .into_iter()
            .filter(|(_, b)| *b != Some(version.version))
        {
            self.model_events
                .push(ModelEvent::AliasChanged(v1::AliasChange {
                    name: name.into(),
                    alias,
                    from_version: before,
                    to_version: Some(version.version),
                    changed_by: by.clone(),
                    unix_ms: now_unix_ms(),
                    revision: 0,
                }));
        }
        Ok(wire)
    }

    /// [`Cluster::set_alias`] without the feed event (a registration
    /// reports its aliases after its version).
    async fn set_alias_quietly(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        by: &str,
    ) -> Result<Option<u64>> {
        let before = registry::aliases_of(&self.store.list_models().await?, name)
            .get(alias)
            .copied();
        patiently("setting an alias", || {
            self.store.set_alias_by(name, alias, version, by)
        })
        .await?;
        Ok(before)
    }
}
