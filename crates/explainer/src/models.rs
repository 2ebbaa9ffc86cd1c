//! Loaded model versions: resolved per request through the store, loaded once
//! per `name:version`, kept in a small LRU cache. A version that fails to
//! load is remembered for a while and answered FAILED_PRECONDITION without
//! loading it again; its spec is checked against the configured limits
//! before its weights are fetched, and its weights against its spec (from
//! the safetensors header) before any network is built.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camshaft_data::ResizeMethod;
use camshaft_spec::{ModelSpec, VersionSpec};
use camshaft_store::{ModelVersion, Store};
use camshaft_vision::{HeadPolicy, Model};
use tokio::sync::OnceCell;

use crate::batcher::BatchSettings;
use crate::batcher::Batcher;
use crate::config::ModelSettings;
use crate::inference::{ImageJob, RawExplanation};
use crate::metrics::Metrics;
use crate::queue::Ticket;
use crate::{Config, Error, Result};

/// One model version ready to run: its inference threads (one per replica,
/// each with its own copy of the weights) batch the images of every request
/// for this version (see [`BatchSettings`]); they stop when it is dropped.
pub struct LoadedModel {
    /// `name:version`.
    pub key: String,
    /// How the network was built.
    pub spec: ModelSpec,
    /// How images are resized to its input size: what it was validated
    /// with (the stored spec's `resize`; crop for versions stored before
    /// it was recorded).
    pub resize: ResizeMethod,
    /// Whether the head is a pooled linear map (CAM possible).
    pub has_cam: bool,
    /// When it was loaded (ms since the Unix epoch).
    pub loaded_unix_ms: i64,
    /// How its batcher runs (its model's [`Config::models`] entry over the
    /// global settings).
    pub settings: BatchSettings,
    batcher: Batcher,
    /// Its `model`/`version`-labelled metrics, removed when it is dropped.
    series: crate::metrics::ModelSeries,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("key", &self.key)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Checks that `weights` (safetensors) fit `spec` (a stored
    /// [`VersionSpec`], JSON) from the file's header, then
    /// builds the network on `device` and loads the weights into it, once
    /// per replica of `settings`, and starts the inference threads.
    /// Blocking.
    pub fn load(
        key: String,
        spec: &serde_json::Value,
        weights: &[u8],
        device: tch::Device,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::ModelLoad {
            model: key.clone(),
            reason,
        };
        let VersionSpec {
            model: spec,
            resize,
        } = VersionSpec::from_value(spec).map_err(|e| bad(e.to_string()))?;
        // Before anything is allocated from the spec: the head's size comes
        // from it, and must be what the file really holds.
        // The same check (one table of names and shapes) the registry ran.
        spec.validate()
            .and_then(|()| spec.shape().check_weights(weights))
            .map_err(|e| bad(e.to_string()))?;
        let mut replicas = Vec::with_capacity(settings.replicas);
        for _ in 0..settings.replicas.max(1) {
            let mut model = Model::new(spec.clone(), device).map_err(|e| bad(e.to_string()))?;
            camshaft_vision::load_safetensors_bytes(&mut model, weights, HeadPolicy::Require, &key)
                .map_err(|e| bad(e.to_string()))?;
            // Serving only: BatchNorm folded into the convolutions (in
            // float32, before any layout or precision change), one pass
            // fewer per convolution; logits and maps as unfolded to 1e-4.
            model.fold_batch_norm().map_err(|e| bad(e.to_string()))?;
            crate::inference::for_inference(&mut model, settings.precision)
                .map_err(|e| bad(e.to_string()))?;
            replicas.push(model);
        }
        let has_cam = replicas
            .first()
            .is_some_and(|m| m.pooled_linear().is_some());
        let series = metrics.model_series(&key);
        let batcher = Batcher::start(&key, replicas, settings, metrics)?;
        Ok(LoadedModel {
            key,
            spec,
            resize,
            has_cam,
            loaded_unix_ms: camshaft_proto::now_unix_ms(),
            settings,
            batcher,
            series,
        })
    }

    /// Explains `jobs` with `recipe`, batched with the other requests'
    /// images; one answer per job, in order. Images still queued when
    /// `deadline` passes (or when this future is dropped) are dropped.
    pub(crate) async fn explain(
        &self,
        recipe: camshaft_vision::cam::MapRecipe,
        jobs: Vec<(ImageJob, Ticket)>,
        deadline: Option<Instant>,
    ) -> Result<Vec<(Result<RawExplanation>, Ticket)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let _inflight = self.series.inflight(jobs.len());
        let queued = Instant::now();
        let answers = self.batcher.explain(recipe, jobs, deadline).await?;
        let answered = answers.iter().filter(|(a, _)| a.is_ok()).count() as u64;
        self.series.observe(answered, queued.elapsed());
        Ok(answers)
    }
}

type Slot = Arc<OnceCell<Arc<LoadedModel>>>;

/// What the cache refuses to load, how long it remembers a failure, and
/// each model's own batch settings (from the [`Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadLimits {
    /// [`Config::max_model_input_size`].
    pub max_input_size: u32,
    /// [`Config::max_model_classes`].
    pub max_classes: usize,
    /// [`Config::failed_load_retry_secs`].
    pub retry_after: Duration,
    /// [`Config::models`]: settings over the global ones, by model name.
    pub models: Arc<BTreeMap<String, ModelSettings>>,
    /// libtorch's thread count when the configuration was read, shared
    /// out between the replicas of a model on a CPU.
    pub cpu_threads: i32,
}

impl LoadLimits {
    /// The limits of `config`.
    pub fn from_config(config: &Config) -> Self {
        LoadLimits {
            max_input_size: config.max_model_input_size,
            max_classes: config.max_model_classes,
            retry_after: Duration::from_secs(config.failed_load_retry_secs),
            models: Arc::new(config.models.clone()),
            cpu_threads: tch::get_num_threads(),
        }
    }

    /// Refuses a spec over the limits (or not a spec), before its weights
    /// are fetched.
    fn check(&self, spec: &serde_json::Value) -> std::result::Result<(), String> {
        let spec = ModelSpec::from_value(spec).map_err(|e| e.to_string())?;
        if spec.input_size > self.max_input_size {
            return Err(format!(
                "input_size {} is over this explainer's max_model_input_size {}",
                spec.input_size, self.max_input_size
            ));
        }
        if spec.num_classes() > self.max_classes {
            return Err(format!(
                "{} classes are over this explainer's max_model_classes {}",
                spec.num_classes(),
                self.max_classes
            ));
        }
        spec.validate().map_err(|e| e.to_string())
    }
}

/// A load that failed: answered as it is until `until`.
#[derive(Clone, Debug)]
struct FailedLoad {
    reason: String,
    until: Instant,
}

/// `name:version` → loaded model, at most `capacity` entries, least recently
/// used evicted. Concurrent requests for a version not yet loaded wait on
/// one load. A failed load is remembered (at most `capacity` failures, the
/// oldest forgotten first) for [`LoadLimits::retry_after`]: requests for
/// that version fail with its reason until then, without loading it again.
pub struct ModelCache {
    store: Arc<dyn Store>,
    device: tch::Device,
    capacity: usize,
    settings: BatchSettings,
    limits: LoadLimits,
    metrics: Arc<Metrics>,
    slots: Mutex<Slots>,
    failed: Mutex<HashMap<String, FailedLoad>>,
    /// Loads in flight (the health service reports NOT_SERVING while > 0).
    loading: tokio::sync::watch::Sender<usize>,
    /// Keys never evicted (the preloaded versions).
    pinned: Mutex<HashSet<String>>,
    /// Counts the alias moves [`ModelCache::follow_aliases`] acted on.
    alias_moves: tokio::sync::watch::Sender<u64>,
}

/// Counts as a load in flight (health NOT_SERVING) while it lives.
pub(crate) struct Busy<'a>(#[expect(dead_code, reason = "held for its Drop")] Loading<'a>);

/// Counts one load in flight for as long as it lives.
struct Loading<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> Loading<'a> {
    fn start(count: &'a tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Loading(count)
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[derive(Default)]
struct Slots {
    tick: u64,
    entries: HashMap<String, (u64, Slot)>,
}

impl ModelCache {
    /// An empty cache loading from `store` onto `device`, each version
    /// batching with `settings`, refusing what `limits` refuse.
    pub fn new(
        store: Arc<dyn Store>,
        device: tch::Device,
        capacity: usize,
        settings: BatchSettings,
        limits: LoadLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        ModelCache {
            store,
            device,
            capacity: capacity.max(1),
            settings,
            limits,
            metrics,
            slots: Mutex::new(Slots::default()),
            failed: Mutex::new(HashMap::new()),
            loading: tokio::sync::watch::Sender::new(0),
            pinned: Mutex::new(HashSet::new()),
            alias_moves: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The batch settings versions of model `name` load with.
    pub fn settings_for(&self, name: &str) -> BatchSettings {
        match self.limits.models.get(name) {
            Some(own) => self.settings.with_model(own, self.limits.cpu_threads),
            None => self.settings,
        }
    }

    /// Keeps exactly `keys` (`name:version`) from being evicted.
    pub(crate) fn pin(&self, keys: HashSet<String>) {
        *self.pinned.lock().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Whether `key` is pinned (preloaded).
    pub fn is_pinned(&self, key: &str) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Health says NOT_SERVING while the guard lives (a warm-up).
    pub(crate) fn busy(&self) -> Busy<'_> {
        Busy(Loading::start(&self.loading))
    }

    /// Ticks after each alias move [`ModelCache::follow_aliases`] acted on
    /// (its new version loaded, or failed to).
    pub fn alias_moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.alias_moves.subscribe()
    }

    /// The store the cache loads from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The loaded model of `version`, loading it on a blocking thread if it
    /// is not cached. A version that failed to load within the last
    /// [`LoadLimits::retry_after`] fails again at once with
    /// [`Error::ModelLoad`] and its reason.
    pub async fn get(&self, version: &ModelVersion) -> Result<Arc<LoadedModel>> {
        let key = format!("{}:{}", version.name, version.version);
        if let Some(remembered) = self.remembered_failure(&key) {
            return Err(remembered);
        }
        let slot = self.slot(&key);
        let loaded = slot
            .get_or_try_init(|| async {
                // Requests that waited on a load that failed see its
                // failure, not a load of their own.
                if let Some(remembered) = self.remembered_failure(&key) {
                    return Err(remembered);
                }
                let _loading = Loading::start(&self.loading);
                if let Err(reason) = self.limits.check(&version.spec) {
                    return Err(self.remember_failure(&key, reason));
                }
                let weights = self
                    .store
                    .model_weights(&version.name, version.version)
                    .await
                    .map_err(Error::from_store)?;
                let spec = version.spec.clone();
                let device = self.device;
                let load_key = key.clone();
                let settings = self.settings_for(&version.name);
                let metrics = Arc::clone(&self.metrics);
                let started = std::time::Instant::now();
                let loaded = crate::spawn_blocking_serial(move || {
                    LoadedModel::load(load_key, &spec, &weights, device, settings, metrics)
                })
                .await
                .map_err(|e| Error::Internal(format!("model load task: {e}")))
                .and_then(|loaded| loaded);
                let model = match loaded {
                    Ok(model) => model,
                    Err(Error::ModelLoad { reason, .. }) => {
                        return Err(self.remember_failure(&key, reason));
                    }
                    Err(other) => return Err(self.remember_failure(&key, other.to_string())),
                };
                self.metrics.observe_model_load(true);
                tracing::info!(
                    model = %model.key,
                    precision = %model.settings.precision,
                    max_batch = model.settings.max_batch,
                    replicas = model.settings.replicas,
                    ms = started.elapsed().as_millis() as u64,
                    "loaded model version"
                );
                Ok::<_, Error>(Arc::new(model))
            })
            .await;
        match loaded {
            Ok(model) => Ok(Arc::clone(model)),
            Err(e) => {
                // A failed version keeps no cache slot (it would push a
                // loaded version out); its failure is remembered apart.
                let mut slots = self.lock();
                if slots
                    .entries
                    .get(&key)
                    .is_some_and(|(_, s)| Arc::ptr_eq(s, &slot) && s.get().is_none())
                {
                    slots.entries.remove(&key);
                }
                Err(e)
            }
        }
    }

    /// The remembered failure of `key`, while it is remembered.
    fn remembered_failure(&self, key: &str) -> Option<Error> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let failure = failed.get(key)?;
        let now = Instant::now();
        if failure.until <= now {
            failed.remove(key);
            return None;
        }
        let left = failure.until - now;
        Some(Error::ModelLoad {
            model: key.to_string(),
            reason: format!(
                "{} (this failure is remembered: not loaded again for {} s)",
                failure.reason,
                left.as_secs().max(1)
            ),
        })
    }

    /// Records that `key` failed to load because of `reason`; the error to
    /// answer.
    fn remember_failure(&self, key: &str, reason: String) -> Error {
        self.metrics.observe_model_load(false);
        tracing::warn!(model = %key, %reason, retry_s = self.limits.retry_after.as_secs(), "model version failed to load");
        if !self.limits.retry_after.is_zero() {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            failed.retain(|_, f| f.until > now);
            while failed.len() >= self.capacity {
                let oldest = failed
                    .iter()
                    .min_by_key(|(_, f)| f.until)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => failed.remove(&k),
                    None => break,
                };
            }
            failed.insert(
                key.to_string(),
                FailedLoad {
                    reason: reason.clone(),
                    // A retry time past what an Instant holds: a year.
                    until: now
                        .checked_add(self.limits.retry_after)
                        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
                        .unwrap_or(now),
                },
            );
        }
        Error::ModelLoad {
            model: key.to_string(),
            reason,
        }
    }

    /// The versions loaded now (not those still loading), by key.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        let mut loaded: Vec<Arc<LoadedModel>> = self
            .lock()
            .entries
            .values()
            .filter_map(|(_, slot)| slot.get().cloned())
            .collect();
        loaded.sort_by(|a, b| a.key.cmp(&b.key));
        loaded
    }

    /// The number of loads in flight, watched.
    pub fn loading(&self) -> tokio::sync::watch::Receiver<usize> {
        self.loading.subscribe()
    }

    /// Whether a version of model `name` is loaded now.
    pub fn has_name(&self, name: &str) -> bool {
        let prefix = format!("{name}:");
        self.lock().entries.keys().any(|k| k.starts_with(&prefix))
    }

    /// Follows alias moves in the store: when an alias of a model that is
    /// loaded moves, the version it now points at is loaded at once, so
    /// the next request does not wait for the load (it still resolves the
    /// alias itself). Runs until `stop` turns true; a watch that ends (etcd
    /// compaction, an outage) is started again after a pause.
    pub async fn follow_aliases(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let pause = std::time::Duration::from_secs(1);
        loop {
            let watched = tokio::select! {
                w = self.store.watch_aliases() => w,
                _ = stop.wait_for(|s| *s) => return,
            };
            let mut events = match watched {
                Ok(w) => w.events,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch aliases; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            };
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let Some(event) = event else { break };
                let camshaft_store::AliasEvent::Set {
                    name,
                    alias,
                    version,
                } = event
                else {
                    continue;
                };
                if !self.has_name(&name) {
                    continue;
                }
                let reference = camshaft_store::ModelRef::Version(name.clone(), version);
                let loaded = match self.store.get_model(&reference).await {
                    Ok(v) => self.get(&v).await.map(|_| ()),
                    Err(e) => Err(Error::from_store(e)),
                };
                match loaded {
                    Ok(()) => {
                        tracing::info!(model = %name, %alias, version, "alias moved; version loaded")
                    }
                    Err(e) => {
                        tracing::warn!(model = %name, %alias, version, error = %e, "alias moved; loading failed")
                    }
                }
                self.alias_moves.send_modify(|n| *n += 1);
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The device models are loaded onto.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// Number of versions cached (loaded or loading).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = self.lock();
        slots.tick += 1;
        let tick = slots.tick;
        if let Some((used, slot)) = slots.entries.get_mut(key) {
            *used = tick;
            return Arc::clone(slot);
        }
        let pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        while slots.entries.len() >= self.capacity {
            // The least recently used version that is not preloaded (and
            // if every one is, the least recently used).
            let oldest = slots
                .entries
                .iter()
                .min_by_key(|(k, (used, _))| (pinned.contains(*k), *used))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    slots.entries.remove(&k);
                }
                None => break,
            }
        }
        let slot = Slot::default();
        slots
            .entries
            .insert(key.to_string(), (tick, Arc::clone(&slot)));
        slot
    }
}
