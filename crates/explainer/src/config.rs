//! The explainer's configuration: serde with defaults, checked once by
//! [`Config::validate`] before the server starts.

use std::net::SocketAddr;

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
    /// Most images in one forward pass; a request with more good images is
    /// explained in several passes of at most this many. Default 64.
    pub max_batch: usize,
    /// Model versions kept loaded (least recently used evicted). Default 4.
    pub model_cache_size: usize,
    /// `cpu`, `cuda` (GPU 0) or `cuda:N`. Default `cpu`.
    pub device: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: "127.0.0.1:50052".into(),
            max_images_per_request: 64,
            max_image_bytes: 16 * 1024 * 1024,
            max_image_pixels: 32 * 1024 * 1024,
            max_batch: 64,
            model_cache_size: 4,
            device: "cpu".into(),
        }
    }
}

impl Config {
    /// Checks every field: a parseable listen address, limits ≥ 1 (an image
    /// may not be larger than [`camshaft_proto::MAX_MESSAGE_BYTES`], which the
    /// server could not receive anyway), a known device.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        let positive = [
            ("max_images_per_request", self.max_images_per_request as u64),
            ("max_image_bytes", self.max_image_bytes),
            ("max_image_pixels", self.max_image_pixels),
            ("max_batch", self.max_batch as u64),
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
        self.parse_device()?;
        Ok(())
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

    fn parse_device(&self) -> Result<tch::Device> {
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
    }
}
