//! The explainer's configuration: serde with defaults, checked once by
//! [`Config::validate`] before the server starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use camshaft_proto::security::TlsConfig;
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
    /// Inference threads per loaded model version, each with its own copy
    /// of the weights (on one GPU, or sharing the CPU's cores). Default 1.
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
    /// Address (`HOST:PORT`) of the Prometheus metrics endpoint
    /// (`GET /metrics`, text format); empty: none. Default empty.
    pub metrics_listen: String,
    /// Model versions kept loaded (least recently used evicted). Default 4.
    pub model_cache_size: usize,
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`. Default `cpu`.
    pub device: String,
    /// TLS for every call (`cert`, `key`; `client_ca` for mutual TLS).
    /// Default: plaintext.
    pub tls: TlsConfig,
    /// A file holding the bearer token every call but health must carry.
    /// Default: none needed.
    pub auth_token_file: Option<PathBuf>,
    /// Also serve the health service alone, in plaintext, on this
    /// `HOST:PORT`: for probes that cannot do (mutual) TLS. Default: off.
    pub health_listen: Option<String>,
}

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
            model_replicas: 1,
            batch_invariant: true,
            precision: Precision::Fp32,
            metrics_listen: String::new(),
            model_cache_size: 4,
            device: "cpu".into(),
            tls: TlsConfig::default(),
            auth_token_file: None,
            health_listen: None,
        }
    }
}

impl Config {
    /// Checks every field: a parseable listen address, limits ≥ 1 (an image
    /// may not be larger than [`camshaft_proto::MAX_MESSAGE_BYTES`], which the
    /// server could not receive anyway), a known device, fp16 only on a GPU.
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
        self.metrics_addr()?;
        let device = self.parse_device()?;
        if self.precision == Precision::Fp16 && device == tch::Device::Cpu {
            return Err(Error::Config(
                "precision fp16 is for GPUs: libtorch's float16 convolutions on a CPU are slower than float32; use bf16".into(),
            ));
        }
        Ok(())
    }

    /// [`Config::metrics_listen`] parsed; `None` when empty (no endpoint).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        camshaft_metrics::parse_listen(&self.metrics_listen)
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
            metrics_listen: "port 9".into(),
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
    }
}
