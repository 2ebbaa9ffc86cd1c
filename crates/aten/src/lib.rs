//! `camshaft-aten`: the libtorch (ATen) functions `tch` 0.24 leaves out,
//! reached through one small C++ file (`csrc/shim.cpp`) compiled against
//! the same libtorch headers and flags `torch-sys` uses, behind a plain C
//! ABI and the safe functions of this crate:
//!
//! - [`fused_adamw`]: `at::_fused_adamw_`, the one-kernel AdamW step of
//!   `torch.optim.AdamW(fused=True)`, CPU and CUDA.
//! - [`non_finite_check_and_unscale`] and [`found_non_finite`]: the
//!   multi-tensor finiteness check (`_amp_foreach_non_finite_check_and_unscale_`)
//!   that leaves its answer on the device.
//! - [`contiguous_channels_last`] / [`is_channels_last`]: the
//!   channels-last memory format.
//! - [`PackedConv2d`]: a CPU convolution on a weight reordered once into
//!   oneDNN's layout (`mkldnn::_reorder_convolution_weight` and
//!   `mkldnn::_convolution_pointwise`, Inductor's CPU freezing), for
//!   inference.
//! - [`autocast`]: libtorch's autocast state, per device type.
//! - [`CudaGraph`]: `at::cuda::CUDAGraph` capture and replay, compiled when
//!   the libtorch has CUDA (and its runtime headers are found at build
//!   time; `cfg(aten_cuda)`); elsewhere the same API returns
//!   [`Error::CudaNotCompiled`].
//!
//! Invariants: no C++ exception crosses the boundary (each becomes
//! [`Error::Torch`] with libtorch's message); the `unsafe` code is all in
//! one private module; tensors are passed as the handles tch already owns,
//! so nothing here outlives a call but what it returns.
//!
//! (Compiled, not run, as a doctest: see `camshaft-vision`'s crate doc.)
//!
//! ```no_run,standalone_crate
//! use tch::{Device, Kind, Tensor};
//! use camshaft_aten::{AdamWStep, AdamWTensors, LearningRate, fused_adamw};
//!
//! # fn main() -> camshaft_aten::Result<()> {
//! let opts = (Kind::Float, Device::Cpu);
//! let params = [Tensor::ones([3], opts)];
//! let grads = [Tensor::ones([3], opts)];
//! let (m, v) = ([Tensor::zeros([3], opts)], [Tensor::zeros([3], opts)]);
//! let steps = [Tensor::zeros([1], opts)];
//! let tensors = AdamWTensors {
//!     params: &params, grads: &grads, exp_avgs: &m, exp_avg_sqs: &v, steps: &steps,
//! };
//! let step = AdamWStep {
//!     lr: LearningRate::Value(1e-3), beta1: 0.9, beta2: 0.99,
//!     weight_decay: 0.01, eps: 1e-5, grad_scale: None, found_inf: None,
//! };
//! fused_adamw(tensors, step)?;
//! assert!(params[0].double_value(&[0]) < 1.0);
//! # Ok(()) }
//! ```

mod shim;

pub use shim::{
    AdamWStep, AdamWTensors, Conv2dGeometry, CudaGraph, LearningRate, PackedConv2d, autocast,
    contiguous_channels_last, cuda_device_count, cuda_synchronize, found_non_finite, fused_adamw,
    is_channels_last, non_finite_check_and_unscale,
};

/// Whether this build has the CUDA parts (CUDA graphs): libtorch with CUDA
/// and its runtime headers at build time. Whether a GPU is present is
/// [`cuda_device_count`].
pub const CUDA_COMPILED: bool = cfg!(aten_cuda);

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch threw; its message (without the C++ backtrace).
    #[error("libtorch: {0}")]
    Torch(String),
    /// An argument this crate checks before calling libtorch.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A CUDA function of a build without CUDA.
    #[error(
        "camshaft-aten was built without CUDA (the libtorch it was built against has no CUDA, or no CUDA runtime headers were found)"
    )]
    CudaNotCompiled,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A device type whose autocast state [`autocast`] reads and sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum AutocastDevice {
    /// `torch.autocast("cpu")`.
    Cpu = 0,
    /// `torch.autocast("cuda")`.
    Cuda = 1,
}

impl AutocastDevice {
    /// The autocast device type of a tch device (every device but CUDA's
    /// autocasts as the CPU does here).
    pub fn of(device: tch::Device) -> Self {
        match device {
            tch::Device::Cuda(_) => AutocastDevice::Cuda,
            _ => AutocastDevice::Cpu,
        }
    }
}

/// A dtype autocast can cast to (its codes are the C side's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum AutocastDtype {
    /// bfloat16.
    BFloat16 = 0,
    /// float16.
    Half = 1,
    /// float32 (a region that casts nothing down).
    Float = 2,
}

impl AutocastDtype {
    fn from_code(code: i32) -> Result<Self> {
        match code {
            0 => Ok(AutocastDtype::BFloat16),
            1 => Ok(AutocastDtype::Half),
            2 => Ok(AutocastDtype::Float),
            other => Err(Error::Torch(format!("unknown autocast dtype code {other}"))),
        }
    }

    /// The tch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            AutocastDtype::BFloat16 => tch::Kind::BFloat16,
            AutocastDtype::Half => tch::Kind::Half,
            AutocastDtype::Float => tch::Kind::Float,
        }
    }
}
