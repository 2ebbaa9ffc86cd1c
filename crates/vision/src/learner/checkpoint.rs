//! Checkpoints that resume exactly: a directory of
//! [`CHECKPOINT_FILES`] — `checkpoint.json` ([`CheckpointMeta`]: the model
//! spec, the plan and how far it got, the epoch table, the learner
//! settings, the loss scaler's state), the weights and the optimiser state
//! as safetensors — written atomically (a temporary sibling renamed over
//! the directory) and read back by [`Learner::from_checkpoint`].
//!
//! `checkpoint.json` carries its own `format`; a checkpoint of another
//! format is refused ([`Error::Checkpoint`]), never half-read.

use std::path::{Path, PathBuf};

use camshaft_data::Splits;
use serde::{Deserialize, Serialize};

use super::{EpochStats, Learner, LearnerConfig};
use crate::model::{Model, ModelSpec};
use crate::precision::{LossScaleState, LossScaler};
use crate::schedule::Plan;
use crate::weights::{HeadPolicy, import_weights, save_weights};
use crate::{Error, Result};

/// What a checkpoint's `checkpoint.json` holds beside the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version of this file.
    pub format: u32,
    /// How to rebuild the model.
    pub spec: ModelSpec,
    /// The run's plan.
    pub plan: Option<Plan>,
    /// Epochs of the plan completed.
    pub epochs_done: usize,
    /// The epoch table so far.
    pub history: Vec<EpochStats>,
    /// The learner settings of the run.
    pub config: LearnerConfig,
    /// The loss scaler's state (float16 runs).
    #[serde(default)]
    pub loss_scale: Option<LossScaleState>,
}

const CHECKPOINT_FORMAT: u32 = 1;
/// File names inside a checkpoint directory.
pub const CHECKPOINT_FILES: [&str; 3] = [
    "checkpoint.json",
    "weights.safetensors",
    "optimizer.safetensors",
];

impl Learner {
    /// Write a checkpoint directory (weights, optimiser state, plan, history)
    /// atomically: into a temporary sibling, then renamed over `dir`.
    pub fn save_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.sync_buffers()?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = tmp_sibling(dir);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        save_weights(&self.model, &tmp.join(CHECKPOINT_FILES[1]))?;
        self.opt.save(&tmp.join(CHECKPOINT_FILES[2]))?;
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT,
            spec: self.model.spec().clone(),
            plan: self.plan.clone(),
            epochs_done: self.epochs_done,
            history: self.history.clone(),
            config: self.config.clone(),
            loss_scale: self.loss_scale()?,
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Config(format!("cannot encode checkpoint metadata: {e}")))?;
        let meta_path = tmp.join(CHECKPOINT_FILES[0]);
        std::fs::write(&meta_path, json).map_err(|e| Error::io(&meta_path, e))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
    }

    /// Read a checkpoint's metadata.
    pub fn read_checkpoint_meta(dir: &Path) -> Result<CheckpointMeta> {
        let path = dir.join(CHECKPOINT_FILES[0]);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let meta: CheckpointMeta =
            serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!("bad checkpoint.json: {e}"),
            })?;
        if meta.format != CHECKPOINT_FORMAT {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "format {} is not the supported {CHECKPOINT_FORMAT}",
                    meta.format
                ),
            });
        }
        Ok(meta)
    }

    /// Rebuild a learner from a checkpoint to continue its plan where it
    /// stopped. The checkpoint's loader settings (seed, batch size) are kept
    /// so the continuation is exact; `threads`/`prefetch`/`progress` and the
    /// shard come from `overrides`.
    pub fn from_checkpoint(
        dir: &Path,
        data: Splits,
        device: tch::Device,
        overrides: &LearnerConfig,
    ) -> Result<Self> {
        let meta = Self::read_checkpoint_meta(dir)?;
        let mut model = Model::new(meta.spec.clone(), device)?;
        import_weights(
            &mut model,
            &dir.join(CHECKPOINT_FILES[1]),
            HeadPolicy::Require,
        )?;
        let mut config = meta.config.clone();
        config.loader.threads = overrides.loader.threads;
        config.loader.prefetch = overrides.loader.prefetch;
        config.progress = overrides.progress;
        config.shard = overrides.shard;
        let mut learner = Learner::new(model, data, config)?;
        learner.opt.load(&dir.join(CHECKPOINT_FILES[2]))?;
        learner.plan = meta.plan;
        learner.epochs_done = meta.epochs_done;
        learner.history = meta.history;
        if let (Some(scaler), Some(state)) = (&mut learner.scaler, meta.loss_scale) {
            *scaler = LossScaler::with_state(learner.config.loss_scale, state, device)?;
        }
        Ok(learner)
    }
}

fn tmp_sibling(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
