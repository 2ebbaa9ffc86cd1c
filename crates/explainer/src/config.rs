//! The explainer's configuration: serde with defaults, checked once by
//! [`Config::validate`] before the server starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use camshaft_http::server::ServerConfig;
use camshaft_vision::Precision;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything the explainer service is configured with. Every field has a
/// default, so `{}` (or `Config::default()`) is a working configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the binary binds (`HOST:PORT`); [`serve`](crate::serve) itself
    /// serves the listener it is handed. Default `127.0.0.1:50052`.
    pub listen_addr: String,
    /// Most images one `ExplainRequest` may carry; more is INVALID_ARGUMENT.
    /// Default 64.
    pub max_images_per_request: usize,
    /// Most encoded bytes of one image; a larger image gets its own error
    /// (`IMAGE_ERROR_KIND_TOO_LARGE`). Default 16 MiB.
    pub max_image_bytes: u64,
    /// Most pixels (width × height, read from the header before decoding) of
    /// one image; a larger one gets its own error. Default 32 Mi pixels.
    pub max_image_pixels: u64,
    /// Most images in one forward pass: images of concurrent requests for
    /// the same model version share passes of at most this many. On a CPU a
    /// pass also holds no more than `8 × 224²` input pixels (8 images at
    /// 224 px, 1 at 512 px; at least one image): larger passes are slower
    /// per image there. Default 64.
    pub max_batch: usize,
    /// Longest wait, in ms, for more images after the first image of a pass
    /// arrived at an idle model: a lone request waits this long at most;
    /// under load passes fill from the queue without waiting. Default 2
    /// (about one image's decoding: enough for requests sent together to
    /// meet, a small price on a lone request, ~5% of a 224 px CAM on 2
    /// cores).
    pub max_batch_wait_ms: u64,
    /// Most images admitted and not answered (decoding, queued, computing)
    /// over all models; a request that would pass it fails with
    /// RESOURCE_EXHAUSTED and a `retry-after-ms` hint. At least
    /// `max_images_per_request`. Default 512.
    pub max_queued_images: usize,
    /// Most bytes of decoded images in flight over all requests, as
    /// estimated before anything is decoded: each image is charged from its
    /// PNG/JPEG header (width × height × the bytes per pixel of its decoded
    /// form and of the RGB copy, plus resizing scratch) while it is being
    /// decoded, and its model input (`input_size`² × 15 bytes) until it is
    /// answered. A request's decoding tasks (`decode_tasks_per_request`)
    /// each hold the largest image of their share at a time. A request
    /// that would pass it fails with RESOURCE_EXHAUSTED and `retry-after-ms`;
    /// one that could never fit is INVALID_ARGUMENT. The charge is held until
    /// the decoding really stopped, also for a call that was cancelled. At
    /// least what one image of `max_image_pixels` costs at
    /// `max_model_input_size`. Default 1 GiB (two 16-bit RGBA images of 32 Mi
    /// pixels, or ~100 12-megapixel JPEGs).
    pub max_decode_bytes_in_flight: u64,
    /// Blocking tasks one request's images are decoded on at once; each
    /// decodes one image at a time, so a request holds the decoding of this
    /// many images at once (its largest ones, for the charge against
    /// `max_decode_bytes_in_flight`). At least 1. Default: one per core, at
    /// most 8.
    pub decode_tasks_per_request: Option<usize>,
    /// Most compute units admitted and not computed yet, over all models. A
    /// compute unit is one forward pass of one image of up to 224² input
    /// pixels (a pass at `input_size` S counts ⌈S²/224²⌉: 6 at 512 px); an
    /// image costs `M + top_k × F` passes, where M is 1, plus one per
    /// channel of the target layers for Score-CAM (512 at `layer4`), times
    /// 6 with `aug_smooth`, and F is 0 without faithfulness, 21 for
    /// deletion AUC, 2 for average drop and 3 for ROAD. A request
    /// that would pass it fails with RESOURCE_EXHAUSTED and `retry-after-ms`
    /// (the units ahead at the recent time per unit). An image's units are
    /// held until its pass is computed or dropped, also for a call that was
    /// cancelled. At least `max_compute_units_per_request`. Default 2048.
    pub max_queued_compute_units: u64,
    /// Most compute units (see `max_queued_compute_units`) of one request;
    /// more is INVALID_ARGUMENT naming this key. This bounds how long one
    /// request can hold the inference threads while requests admitted after
    /// it wait (passes are first come, first served, and an image's
    /// faithfulness runs inside its pass). At least one image at
    /// `max_model_input_size` without faithfulness. Default 1024: one
    /// Score-CAM image at `layer4` and 224 px (513 units) but not two, 46
    /// images with deletion AUC at 224 px, or 170 passes at 512 px.
    pub max_compute_units_per_request: u64,
    /// Largest `input_size` of a model version that is loaded; a larger one
    /// fails with FAILED_PRECONDITION before its weights are fetched. Between
    /// 32 and 4096. Default 1024: twice the largest model served (ResNet34
    /// at 512 px); one image at 1024 px is 21 compute units and 15 MiB of
    /// model input.
    pub max_model_input_size: u32,
    /// Most classes of a model version that is loaded; more fails with
    /// FAILED_PRECONDITION before its weights are fetched. At least 2.
    /// Default 10000 (ImageNet-1k has 1000).
    pub max_model_classes: usize,
    /// Seconds a version that failed to load is remembered: requests for it
    /// fail with FAILED_PRECONDITION and the reason, without loading it
    /// again, until this passed (a new version, or an alias moved to another
    /// one, is loaded at once). At most `model_cache_size` failures are
    /// remembered, the oldest forgotten first. 0: every request tries
    /// again; at most a week. Default 60.
    pub failed_load_retry_secs: u64,
    /// Inference threads per loaded model version, each with its own copy
    /// of the weights (on one GPU, or sharing the CPU's cores; on a CPU in
    /// float32 each copy also keeps its convolution weights packed for
    /// oneDNN, a second copy of them). Default 1.
    pub model_replicas: usize,
    /// Keep an image's maps bit-for-bit the same whatever it is batched
    /// with: a pass of one image runs as two copies of it where libtorch
    /// would compute a batch of one with other kernels (~1e-6 apart). Each
    /// inference thread probes that once when a version loads (four images'
    /// compute); where a pass of one already matches (ResNets at 224 or
    /// 512 px on a CPU), lone images cost nothing extra, elsewhere a second
    /// image's compute. Default true.
    pub batch_invariant: bool,
    /// The dtype the models' bodies run in: `fp32`, or `bf16` (`fp16` on a
    /// GPU only) for about twice the images/s where the hardware has those
    /// instructions (CPUs with AVX512-BF16 or AMX, GPUs). The head and every
    /// method's maths stay float32; maps move by ~1% of their largest value,
    /// so a near tie between two classes may flip. Default `fp32`.
    pub precision: Precision,
    /// Model versions kept loaded (least recently used evicted). Default 4.
    pub model_cache_size: usize,
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`. Default `cpu`.
    pub device: String,
    /// `tls`, `auth_token_file`, `auth_tokens_file` (any viewer or editor
    /// may explain, workers may not), `health_listen` and `metrics_listen`,
    /// as every server has them: top-level keys.
    #[serde(flatten)]
    pub server: ServerConfig,
    /// Model references (`name:version`, `name@alias`, or `name` for
    /// `name@latest`) loaded and warmed up at start: health (gRPC and
    /// `/readyz`) says NOT_SERVING until every one is loaded and has run
    /// one pass per `warmup_batch_sizes` entry, so the first request does
    /// not wait for a load. An alias's moves are followed (the new version
    /// is loaded and warmed up). One that fails keeps health NOT_SERVING
    /// and is retried (every `failed_load_retry_secs`, at least every 2 s
    /// for one not in the store yet); `GetServerInfo.preload` says why.
    /// Kept loaded: other versions never evict them. At most
    /// `model_cache_size` entries. Default: none.
    pub preload: Vec<String>,
    /// Batch sizes of the warm-up passes of a preloaded version (each a
    /// pass of that many images at its input size, CAM with top-1): the
    /// shapes libtorch (and cuDNN's autotuner) then has ready. Each in
    /// `1..=max_batch` of the model; at most 8 entries. Default `[1]`.
    pub warmup_batch_sizes: Vec<usize>,
    /// Per-model settings, keyed by model name (every version of it), over
    /// the global `max_batch`, `max_batch_wait_ms`, `model_replicas` and
    /// `precision`: `[explainer.models.pets] max_batch = 8`. At most 256
    /// entries. Default: none.
    pub models: BTreeMap<String, ModelSettings>,
}

/// One model's settings ([`Config::models`]); an absent field takes the
/// global one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// [`Config::max_batch`] for this model.
    pub max_batch: Option<usize>,
    /// [`Config::max_batch_wait_ms`] for this model.
    pub max_batch_wait_ms: Option<u64>,
    /// [`Config::model_replicas`] for this model.
    pub replicas: Option<usize>,
    /// [`Config::precision`] for this model.
    pub precision: Option<Precision>,
}

/// Most entries of [`Config::models`].
pub const MAX_MODEL_SETTINGS: usize = 256;
/// Most entries of [`Config::warmup_batch_sizes`].
pub const MAX_WARMUP_BATCH_SIZES: usize = 8;

/// The longest [`Config::failed_load_retry_secs`]: a week.
const MAX_FAILED_LOAD_RETRY_SECS: u64 = 7 * 24 * 3600;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: "127.0.0.1:50052".into(),
            max_images_per_request: 64,
            max_image_bytes: 16 * 1024 * 1024,
            max_image_pixels: 32 * 1024 * 1024,
            max_batch: 64,
            max_batch_wait_ms: 2,
            max_queued_images: 512,
            max_decode_bytes_in_flight: 1 << 30,
            decode_tasks_per_request: None,
            max_queued_compute_units: 2048,
            max_compute_units_per_request: 1024,
            max_model_input_size: 1024,
            max_model_classes: 10_000,
            failed_load_retry_secs: 60,
            model_replicas: 1,
            batch_invariant: true,
            precision: Precision::Fp32,
            model_cache_size: 4,
            device: "cpu".into(),
            server: ServerConfig::default(),
            preload: Vec::new(),
            warmup_batch_sizes: vec![1],
            models: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Checks every field: a parseable listen address, limits ≥ 1 (an image
    /// may not be larger than [`camshaft_proto::MAX_MESSAGE_BYTES`], which the
    /// server could not receive anyway), budgets that admit at least one
    /// image or request of the largest kind allowed, a known device, fp16
    /// only on a GPU.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        let positive = [
            ("max_images_per_request", self.max_images_per_request as u64),
            ("max_image_bytes", self.max_image_bytes),
            ("max_image_pixels", self.max_image_pixels),
            ("max_batch", self.max_batch as u64),
            ("max_queued_images", self.max_queued_images as u64),
            ("model_replicas", self.model_replicas as u64),
            ("model_cache_size", self.model_cache_size as u64),
            (
                "max_decode_bytes_in_flight",
                self.max_decode_bytes_in_flight,
            ),
            ("max_queued_compute_units", self.max_queued_compute_units),
            (
                "max_compute_units_per_request",
                self.max_compute_units_per_request,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if self.max_image_bytes > camshaft_proto::MAX_MESSAGE_BYTES as u64 {
            return Err(Error::Config(format!(
                "max_image_bytes {} is over the gRPC message limit of {} bytes",
                self.max_image_bytes,
                camshaft_proto::MAX_MESSAGE_BYTES
            )));
        }
        if self.max_queued_images < self.max_images_per_request {
            return Err(Error::Config(format!(
                "max_queued_images {} is below max_images_per_request {}: a full request could never be admitted",
                self.max_queued_images, self.max_images_per_request
            )));
        }
        if self.decode_tasks_per_request == Some(0) {
            return Err(Error::Config(
                "decode_tasks_per_request must be at least 1 (or absent: one per core)".into(),
            ));
        }
        if !(32..=4096).contains(&self.max_model_input_size) {
            return Err(Error::Config(format!(
                "max_model_input_size {} is outside 32..=4096",
                self.max_model_input_size
            )));
        }
        if self.max_model_classes < 2 {
            return Err(Error::Config(format!(
                "max_model_classes {} is below 2: a classifier has at least 2 classes",
                self.max_model_classes
            )));
        }
        if self.failed_load_retry_secs > MAX_FAILED_LOAD_RETRY_SECS {
            return Err(Error::Config(format!(
                "failed_load_retry_secs {} is over a week ({MAX_FAILED_LOAD_RETRY_SECS})",
                self.failed_load_retry_secs
            )));
        }
        let largest_image =
            crate::cost::worst_image_bytes(self.max_image_pixels, self.max_model_input_size);
        if self.max_decode_bytes_in_flight < largest_image {
            return Err(Error::Config(format!(
                "max_decode_bytes_in_flight {} is below the {largest_image} bytes one image of max_image_pixels {} may take at max_model_input_size {}: such an image could never be admitted",
                self.max_decode_bytes_in_flight, self.max_image_pixels, self.max_model_input_size
            )));
        }
        let largest_pass = crate::cost::pass_units(self.max_model_input_size);
        if self.max_compute_units_per_request < largest_pass {
            return Err(Error::Config(format!(
                "max_compute_units_per_request {} is below the {largest_pass} units of one image at max_model_input_size {}",
                self.max_compute_units_per_request, self.max_model_input_size
            )));
        }
        if self.max_queued_compute_units < self.max_compute_units_per_request {
            return Err(Error::Config(format!(
                "max_queued_compute_units {} is below max_compute_units_per_request {}: a full request could never be admitted",
                self.max_queued_compute_units, self.max_compute_units_per_request
            )));
        }
        self.metrics_addr()?;
        let device = self.parse_device()?;
        if self.precision == Precision::Fp16 && device == tch::Device::Cpu {
            return Err(Error::Config(
                "precision fp16 is for GPUs: libtorch's float16 convolutions on a CPU are slower than float32; use bf16".into(),
            ));
        }
        self.validate_models(device)
    }

    /// `preload`, `warmup_batch_sizes` and `models`.
    fn validate_models(&self, device: tch::Device) -> Result<()> {
        if self.preload.len() > self.model_cache_size {
            return Err(Error::Config(format!(
                "preload names {} models, more than model_cache_size {} keeps loaded",
                self.preload.len(),
                self.model_cache_size
            )));
        }
        for (i, reference) in self.preload.iter().enumerate() {
            camshaft_proto::ModelRef::parse(reference).map_err(|e| {
                Error::Config(format!(
                    "preload[{i}] {reference:?} is not a model reference: {e}"
                ))
            })?;
        }
        if self.warmup_batch_sizes.len() > MAX_WARMUP_BATCH_SIZES {
            return Err(Error::Config(format!(
                "warmup_batch_sizes has {} entries, more than {MAX_WARMUP_BATCH_SIZES}",
                self.warmup_batch_sizes.len()
            )));
        }
        if self.models.len() > MAX_MODEL_SETTINGS {
            return Err(Error::Config(format!(
                "models has {} entries, more than {MAX_MODEL_SETTINGS}",
                self.models.len()
            )));
        }
        for (name, m) in &self.models {
            let key = format!("models.{name}");
            if name.is_empty() || name.len() > 128 || name.contains([':', '@', '/']) {
                return Err(Error::Config(format!(
                    "{key}: a model name is 1 to 128 characters without ':', '@' or '/'"
                )));
            }
            if m.max_batch == Some(0) {
                return Err(Error::Config(format!("{key}.max_batch must be at least 1")));
            }
            if m.replicas == Some(0) {
                return Err(Error::Config(format!("{key}.replicas must be at least 1")));
            }
            if m.precision == Some(Precision::Fp16) && device == tch::Device::Cpu {
                return Err(Error::Config(format!(
                    "{key}.precision fp16 is for GPUs; use bf16 on a CPU"
                )));
            }
        }
        // Every model's warm-up passes fit its batch.
        let smallest_batch = self
            .models
            .values()
            .filter_map(|m| m.max_batch)
            .chain([self.max_batch])
            .min()
            .unwrap_or(self.max_batch);
        for &size in &self.warmup_batch_sizes {
            if size == 0 || size > smallest_batch {
                return Err(Error::Config(format!(
                    "warmup_batch_sizes entry {size} is outside 1..={smallest_batch} (the smallest max_batch)"
                )));
            }
        }
        Ok(())
    }

    /// The settings model `name` runs with: its [`Config::models`] entry
    /// over the global ones.
    pub fn model_settings(&self, name: &str) -> ModelSettings {
        let own = self.models.get(name).cloned().unwrap_or_default();
        ModelSettings {
            max_batch: Some(own.max_batch.unwrap_or(self.max_batch)),
            max_batch_wait_ms: Some(own.max_batch_wait_ms.unwrap_or(self.max_batch_wait_ms)),
            replicas: Some(own.replicas.unwrap_or(self.model_replicas)),
            precision: Some(own.precision.unwrap_or(self.precision)),
        }
    }

    /// [`ServerConfig::metrics_listen`] parsed; `None` when empty (no
    /// endpoint).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        self.server
            .metrics_addr()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// [`Config::listen_addr`] parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen_addr.parse().map_err(|e| {
            Error::Config(format!(
                "listen_addr {:?} is not HOST:PORT: {e}",
                self.listen_addr
            ))
        })
    }

    /// The configured device as tch names it; `cuda` without a usable GPU
    /// is an error here rather than a failure on the first request.
    pub fn torch_device(&self) -> Result<tch::Device> {
        let device = self.parse_device()?;
        if let tch::Device::Cuda(i) = device {
            let count = tch::Cuda::device_count();
            if i64::try_from(i).unwrap_or(i64::MAX) >= count {
                return Err(Error::Config(format!(
                    "device {:?}: {count} CUDA devices available (is libtorch built with CUDA?)",
                    self.device
                )));
            }
        }
        Ok(device)
    }

    pub(crate) fn parse_device(&self) -> Result<tch::Device> {
        let d = self.device.trim().to_ascii_lowercase();
        match d.as_str() {
            "cpu" => Ok(tch::Device::Cpu),
            "cuda" => Ok(tch::Device::Cuda(0)),
            _ => d
                .strip_prefix("cuda:")
                .and_then(|i| i.parse::<usize>().ok())
                .map(tch::Device::Cuda)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "device {:?} is not cpu, cuda or cuda:N",
                        self.device
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_validate_and_empty_json_is_the_default() {
        Config::default().validate().unwrap();
        let parsed: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(parsed.max_images_per_request, 64);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_name() {
        let bad = |c: Config| c.validate().unwrap_err().to_string();
        let c = Config {
            max_batch: 0,
            ..Config::default()
        };
        assert!(bad(c).contains("max_batch"));
        let c = Config {
            listen_addr: "nowhere".into(),
            ..Config::default()
        };
        assert!(bad(c).contains("listen_addr"));
        let c = Config {
            device: "tpu".into(),
            ..Config::default()
        };
        assert!(bad(c).contains("tpu"));
        let c = Config {
            device: "cuda:1".into(),
            ..Config::default()
        };
        c.validate().unwrap();
        assert!(serde_json::from_str::<Config>(r#"{"max_batchh": 3}"#).is_err());
        let c = Config {
            max_queued_images: 10,
            ..Config::default()
        };
        assert!(bad(c).contains("max_queued_images"));
        let c = Config {
            max_queued_compute_units: 100,
            ..Config::default()
        };
        assert!(bad(c).contains("max_queued_compute_units"));
        let c = Config {
            max_compute_units_per_request: 0,
            ..Config::default()
        };
        assert!(bad(c).contains("max_compute_units_per_request"));
        let c = Config {
            max_compute_units_per_request: 20,
            ..Config::default()
        };
        // One image at 1024 px is 21 units.
        assert!(bad(c).contains("max_model_input_size"));
        let c = Config {
            max_decode_bytes_in_flight: 64 << 20,
            ..Config::default()
        };
        assert!(bad(c).contains("max_decode_bytes_in_flight"));
        let c = Config {
            max_model_input_size: 8192,
            ..Config::default()
        };
        assert!(bad(c).contains("max_model_input_size"));
        let c = Config {
            failed_load_retry_secs: u64::MAX,
            ..Config::default()
        };
        assert!(bad(c).contains("failed_load_retry_secs"));
        let c = Config {
            decode_tasks_per_request: Some(0),
            ..Config::default()
        };
        assert!(bad(c).contains("decode_tasks_per_request"));
        let c = Config {
            max_model_classes: 1,
            ..Config::default()
        };
        assert!(bad(c).contains("max_model_classes"));
        let c: Config = serde_json::from_str(
            r#"{"max_decode_bytes_in_flight": 536870912, "max_queued_compute_units": 64, "max_compute_units_per_request": 32, "max_model_input_size": 512, "max_model_classes": 100, "failed_load_retry_secs": 0}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let c = Config {
            server: ServerConfig {
                metrics_listen: "port 9".into(),
                ..ServerConfig::default()
            },
            ..Config::default()
        };
        assert!(bad(c).contains("metrics_listen"));
        let c = Config {
            precision: Precision::Fp16,
            ..Config::default()
        };
        assert!(bad(c).contains("fp16"));
        let c: Config = serde_json::from_str(r#"{"precision": "bf16"}"#).unwrap();
        c.validate().unwrap();
        assert!(serde_json::from_str::<Config>(r#"{"precision": "int8"}"#).is_err());
        // The shared server keys stay top-level keys.
        let c: Config = serde_json::from_str(
            r#"{"metrics_listen": "127.0.0.1:9", "health_listen": "127.0.0.1:8",
                "auth_token_file": "t", "tls": {"cert": "c"}, "max_batch": 8}"#,
        )
        .unwrap();
        assert_eq!(c.server.metrics_listen, "127.0.0.1:9");
        assert_eq!(c.server.health_listen.as_deref(), Some("127.0.0.1:8"));
        assert!(c.server.auth_token_file.is_some() && c.server.tls.cert.is_some());
        assert_eq!(c.max_batch, 8);
        assert!(serde_json::from_str::<Config>(r#"{"server": {}}"#).is_err());
    }

    #[test]
    fn preload_and_per_model_settings_are_checked_and_default_to_the_global_ones() {
        let bad = |json: &str| {
            serde_json::from_str::<Config>(json)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        let c: Config = serde_json::from_str(
            r#"{"preload": ["pets@prod", "cifar:3", "mnist"], "warmup_batch_sizes": [1, 4],
                "models": {"pets": {"max_batch": 8, "precision": "bf16"}}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let pets = c.model_settings("pets");
        assert_eq!(pets.max_batch, Some(8));
        assert_eq!(pets.precision, Some(Precision::Bf16));
        assert_eq!(pets.max_batch_wait_ms, Some(2), "the global one");
        assert_eq!(pets.replicas, Some(1));
        assert_eq!(c.model_settings("cifar").max_batch, Some(64));
        assert!(bad(r#"{"preload": ["pets:x"]}"#).contains("preload[0]"));
        assert!(bad(r#"{"preload": ["a", "b", "c", "d", "e"]}"#).contains("model_cache_size"));
        assert!(bad(r#"{"warmup_batch_sizes": [0]}"#).contains("warmup_batch_sizes"));
        assert!(
            bad(r#"{"warmup_batch_sizes": [16], "models": {"pets": {"max_batch": 8}}}"#)
                .contains("1..=8")
        );
        assert!(
            bad(r#"{"warmup_batch_sizes": [1,1,1,1,1,1,1,1,1]}"#).contains("warmup_batch_sizes")
        );
        assert!(bad(r#"{"models": {"pets": {"max_batch": 0}}}"#).contains("models.pets.max_batch"));
        assert!(bad(r#"{"models": {"pets": {"replicas": 0}}}"#).contains("models.pets.replicas"));
        assert!(
            bad(r#"{"models": {"pets": {"precision": "fp16"}}}"#).contains("models.pets.precision")
        );
        assert!(bad(r#"{"models": {"pets:1": {}}}"#).contains("models.pets:1"));
        assert!(
            serde_json::from_str::<Config>(r#"{"models": {"pets": {"max_batchh": 1}}}"#).is_err()
        );
        let many: BTreeMap<String, ModelSettings> = (0..=MAX_MODEL_SETTINGS)
            .map(|i| (format!("m{i}"), ModelSettings::default()))
            .collect();
        let c = Config {
            models: many,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("models has"));
    }
}
