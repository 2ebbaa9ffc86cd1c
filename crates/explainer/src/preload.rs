//! Preloading ([`Config::preload`]): the configured model references are
//! resolved, loaded and warmed up — one explain pass per
//! [`Config::warmup_batch_sizes`] entry, through the same engine requests
//! use — before health says SERVING, and again when an alias of one moves
//! (the cache's alias follower loads the new version; the preloader then
//! warms it up and pins it in place of the old one).
//!
//! States, one per reference, shown by `GetServerInfo.preload`: loading
//! (not ready, no error), ready (`model_version` warmed up), failed (not
//! ready, the last error). Health is SERVING only while every one is
//! ready; a failed one is tried again every [`RETRY`] (a load that failed
//! is not repeated before `failed_load_retry_secs`: the cache remembers
//! it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camshaft_proto::v1::{ExplainMethod, ExplainRequest, ImageInput, PreloadState};
use tokio::sync::watch;

use crate::{Config, Error, ExplainEngine, Result};

/// How often references that are not ready are tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// The preloaded references' states, and whether all are ready.
pub(crate) struct Preloader {
    engine: Arc<ExplainEngine>,
    refs: Vec<String>,
    batch_sizes: Vec<usize>,
    states: Mutex<Vec<PreloadState>>,
    ready: watch::Sender<bool>,
}

impl Preloader {
    /// The preloader of `config`'s references; ready at once when there
    /// are none.
    pub(crate) fn new(config: &Config, engine: Arc<ExplainEngine>) -> Self {
        let states = config
            .preload
            .iter()
            .map(|r| PreloadState {
                model_ref: r.clone(),
                ..Default::default()
            })
            .collect();
        Preloader {
            engine,
            refs: config.preload.clone(),
            batch_sizes: config.warmup_batch_sizes.clone(),
            states: Mutex::new(states),
            ready: watch::Sender::new(config.preload.is_empty()),
        }
    }

    /// Whether every reference is ready, watched.
    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Each reference's state now.
    pub(crate) fn states(&self) -> Vec<PreloadState> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PreloadState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads and warms up every reference, then again after each alias
    /// move and every [`RETRY`] while one is not ready; until `stop`.
    pub(crate) async fn run(&self, mut stop: watch::Receiver<bool>) {
        if self.refs.is_empty() {
            return;
        }
        let mut moves = self.engine.cache().alias_moves();
        loop {
            self.pass().await;
            let all_ready = self.lock().iter().all(|s| s.ready);
            tokio::select! {
                () = tokio::time::sleep(RETRY), if !all_ready => {}
                changed = moves.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One look at every reference: a reference whose version changed (or
    /// that is not ready) is loaded and warmed up.
    async fn pass(&self) {
        for (i, reference) in self.refs.iter().enumerate() {
            let known = self.lock()[i].clone();
            let version = match self.engine.resolve(reference).await {
                Ok(v) => v,
                Err(e) => {
                    // A store outage does not unready a warmed version.
                    if !known.ready {
                        self.set(i, |s| s.error = e.to_string());
                    }
                    continue;
                }
            };
            let key = format!("{}:{}", version.name, version.version);
            if known.ready && known.model_version == key {
                continue;
            }
            // NOT_SERVING from here until it is warm.
            self.set(i, |s| {
                s.ready = false;
                s.error.clear();
            });
            let _busy = self.engine.cache().busy();
            let started = std::time::Instant::now();
            match self.load_and_warm(&version, &key).await {
                Ok(()) => {
                    tracing::info!(model_ref = %reference, model = %key, ms = started.elapsed().as_millis() as u64, "preloaded and warmed up");
                    self.set(i, |s| {
                        s.ready = true;
                        s.model_version = key.clone();
                        s.error.clear();
                    });
                }
                Err(e) => {
                    tracing::warn!(model_ref = %reference, model = %key, error = %e, "preload failed; retrying");
                    self.set(i, |s| s.error = e.to_string());
                }
            }
        }
    }

    async fn load_and_warm(&self, version: &camshaft_store::ModelVersion, key: &str) -> Result<()> {
        let model = self.engine.cache().get(version).await?;
        // Pinned before the warm-up: the old version stays pinned too until
        // this one is ready.
        let mut pinned: HashSet<String> = self
            .lock()
            .iter()
            .filter(|s| !s.model_version.is_empty())
            .map(|s| s.model_version.clone())
            .collect();
        pinned.insert(key.to_string());
        self.engine.cache().pin(pinned);
        let image = warmup_png(model.spec.input_size)?;
        for &n in &self.batch_sizes {
            let request = ExplainRequest {
                model: key.to_string(),
                images: (0..n)
                    .map(|i| ImageInput {
                        id: format!("warmup-{i}"),
                        data: image.clone().into(),
                        target_class: None,
                    })
                    .collect(),
                method: ExplainMethod::Unspecified as i32,
                request_id: format!("warmup-{n}"),
                ..Default::default()
            };
            let answer = self.engine.explain(request).await?;
            if let Some(bad) = answer.results.iter().find(|r| !r.error.is_empty()) {
                return Err(Error::Internal(format!(
                    "warm-up pass of {n} images: {}",
                    bad.error
                )));
            }
        }
        Ok(())
    }

    fn set(&self, i: usize, change: impl FnOnce(&mut PreloadState)) {
        let all_ready = {
            let mut states = self.lock();
            if let Some(state) = states.get_mut(i) {
                change(state);
            }
            let pinned: HashSet<String> = states
                .iter()
                .filter(|s| s.ready)
                .map(|s| s.model_version.clone())
                .collect();
            if states.iter().all(|s| s.ready) {
                self.engine.cache().pin(pinned);
            }
            states.iter().all(|s| s.ready)
        };
        self.ready.send_replace(all_ready);
    }
}

/// A mid-grey PNG of `size`² pixels (the warm-up passes' input).
fn warmup_png(size: u32) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_pixel(size, size, image::Rgb([128, 128, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Internal(format!("warm-up image: {e}")))?;
    Ok(out.into_inner())
}
