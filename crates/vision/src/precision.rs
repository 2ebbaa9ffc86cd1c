//! Mixed precision as `torch.amp` does it: [`Precision`] picks the autocast
//! dtype, [`Autocast`] turns libtorch's autocast on for one region (the
//! forward pass and the loss), and [`LossScaler`] is `GradScaler`'s dynamic
//! loss scaling for float16.
//!
//! tch exposes only "autocast on CUDA with its default dtype (float16)", so
//! [`Autocast`] calls libtorch's own `at::autocast` functions by their C++
//! names: the device-typed setters that `torch.autocast(device_type, dtype)`
//! uses. That is this module's only `unsafe`; the functions take and return
//! plain integers and booleans, and the symbols are checked by the tests
//! below (a missing one fails at link time, not at run time).
//!
//! ```no_run
//! use camshaft_vision::precision::{Autocast, Precision};
//! let a = tch::Tensor::ones([4, 4], (tch::Kind::Float, tch::Device::Cpu));
//! let y = {
//!     let _region = Autocast::enter(Precision::Bf16, tch::Device::Cpu);
//!     a.matmul(&a)
//! };
//! assert_eq!(y.kind(), tch::Kind::BFloat16);
//! ```
#![allow(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// The dtype the forward pass computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 everywhere.
    #[default]
    Fp32,
    /// Autocast to bfloat16 (float32's range: no loss scaling).
    Bf16,
    /// Autocast to float16, with dynamic loss scaling ([`LossScaler`]).
    Fp16,
}

impl Precision {
    /// The autocast dtype; `None` for float32.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// Whether gradients need loss scaling to stay representable.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }

    /// `fp32`, `bf16` or `fp16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            other => Err(Error::Config(format!(
                "unknown precision {other:?} (fp32, bf16 or fp16)"
            ))),
        }
    }
}

// libtorch's autocast state, by the C++ names of `at::autocast`'s functions
// (Itanium mangling, as on Linux and macOS). `c10::DeviceType` and
// `c10::ScalarType` are `enum class : int8_t`, passed like `int8_t`.
#[allow(improper_ctypes)]
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_clear_cache();
}

/// `c10::DeviceType` values.
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
/// `c10::ScalarType` values.
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

/// An autocast region on one device type, like `with torch.autocast(...)`:
/// ops inside run in the precision's dtype where autocast's policy allows;
/// dropping it restores the previous state (and frees the cast weights'
/// cache when the outermost region ends, so no stale copy of a weight
/// outlives an optimiser step). The state is per thread, as in PyTorch.
#[must_use = "autocast is on only while the region lives"]
pub struct Autocast {
    active: Option<(i8, bool, i8)>,
}

impl Autocast {
    /// Enter a region for `precision` on `device`'s type; float32 enters
    /// nothing.
    pub fn enter(precision: Precision, device: Device) -> Self {
        let dtype = match precision.autocast_kind() {
            Some(Kind::Half) => SCALAR_HALF,
            Some(_) => SCALAR_BFLOAT16,
            None => return Autocast { active: None },
        };
        let device = match device {
            Device::Cuda(_) => DEVICE_CUDA,
            _ => DEVICE_CPU,
        };
        // SAFETY: plain-value calls into libtorch's thread-local autocast
        // state; the values are valid `DeviceType` / `ScalarType` members.
        unsafe {
            let was_enabled = at_is_autocast_enabled(device);
            let was_dtype = at_get_autocast_dtype(device);
            at_set_autocast_dtype(device, dtype);
            at_set_autocast_enabled(device, true);
            at_increment_nesting();
            Autocast {
                active: Some((device, was_enabled, was_dtype)),
            }
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if let Some((device, was_enabled, was_dtype)) = self.active {
            // SAFETY: as in `enter`; restores the values read there.
            unsafe {
                if at_decrement_nesting() == 0 {
                    at_clear_cache();
                }
                at_set_autocast_enabled(device, was_enabled);
                at_set_autocast_dtype(device, was_dtype);
            }
        }
    }
}

/// `torch.amp.GradScaler`'s settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossScaleConfig {
    /// The first scale. Default 2¹⁶.
    pub init_scale: f64,
    /// Factor after `growth_interval` steps without overflow. Default 2.
    pub growth_factor: f64,
    /// Factor after an overflow. Default 0.5.
    pub backoff_factor: f64,
    /// Steps without overflow before the scale grows. Default 2000.
    pub growth_interval: u32,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScaleConfig {
    /// Refuse settings that could not converge.
    pub fn validate(&self) -> Result<()> {
        if !(self.init_scale.is_finite() && self.init_scale > 0.0)
            || self.growth_factor <= 1.0
            || !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0)
            || self.growth_interval == 0
        {
            return Err(Error::Config(format!(
                "loss scaling needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and growth_interval ≥ 1, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// A scaler's state, kept in checkpoints so a resumed run scales the same.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    /// The current scale.
    pub scale: f64,
    /// Steps without overflow since the scale last changed.
    pub growth_tracker: i32,
}

/// Dynamic loss scaling, `GradScaler`'s algorithm with libtorch's own
/// update kernel: multiply the loss by the scale before backward, divide
/// the (all-reduced) gradients by it, skip the step when any is not finite
/// and halve the scale; double it after `growth_interval` clean steps.
/// Run after the all-reduce, the check sees the same gradients on every
/// rank, so the group skips a step together.
#[derive(Debug)]
pub struct LossScaler {
    config: LossScaleConfig,
    scale: Tensor,
    growth_tracker: Tensor,
}

impl LossScaler {
    /// A scaler at `config.init_scale`, its state on `device`.
    pub fn new(config: LossScaleConfig, device: Device) -> Result<Self> {
        config.validate()?;
        Self::with_state(
            config,
            LossScaleState {
                scale: config.init_scale,
                growth_tracker: 0,
            },
            device,
        )
    }

    /// A scaler resuming from `state`.
    pub fn with_state(
        config: LossScaleConfig,
        state: LossScaleState,
        device: Device,
    ) -> Result<Self> {
        config.validate()?;
        Ok(LossScaler {
            config,
            scale: Tensor::f_from_slice(&[state.scale as f32])?.f_to_device(device)?,
            growth_tracker: Tensor::f_from_slice(&[state.growth_tracker])?.f_to_device(device)?,
        })
    }

    /// The current scale and growth count.
    pub fn state(&self) -> Result<LossScaleState> {
        Ok(LossScaleState {
            scale: self.scale.f_double_value(&[0])?,
            growth_tracker: self.growth_tracker.f_int64_value(&[0])? as i32,
        })
    }

    /// `loss` × scale, to call backward on.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_mul(&self.scale.f_to_kind(loss.kind())?)?)
    }

    /// Divide `grads` by the scale in place; whether all are finite.
    pub fn unscale(&self, grads: &[Tensor]) -> Result<bool> {
        let inv = self.scale.f_reciprocal()?;
        tch::no_grad(|| -> Result<()> {
            for g in grads {
                let _ = g.shallow_clone().f_mul_(&inv.f_to_kind(g.kind())?)?;
            }
            Ok(())
        })?;
        all_finite(grads)
    }

    /// Adjust the scale after a step: back off when `finite` is false, grow
    /// after enough clean steps.
    pub fn update(&mut self, finite: bool) -> Result<()> {
        let found_inf = Tensor::f_from_slice(&[if finite { 0.0f32 } else { 1.0 }])?
            .f_to_device(self.scale.device())?;
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &found_inf,
            self.config.growth_factor,
            self.config.backoff_factor,
            i64::from(self.config.growth_interval),
        )?;
        Ok(())
    }
}

/// Whether every element of `tensors` is finite: one reduction per tensor
/// and one read back (a sum is finite exactly when its terms are, short of
/// an overflow of the sum itself, which is as bad for an update).
pub fn all_finite(tensors: &[Tensor]) -> Result<bool> {
    if tensors.is_empty() {
        return Ok(true);
    }
    let sums = tch::no_grad(|| -> Result<Vec<Tensor>> {
        tensors.iter().map(|t| Ok(t.f_sum(Kind::Float)?)).collect()
    })?;
    let total = Tensor::f_stack(&sums, 0)?.f_sum(Kind::Float)?;
    Ok(total.f_double_value(&[])?.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ones() -> Tensor {
        Tensor::ones([8, 8], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn autocast_regions_compute_in_their_dtype_and_restore_the_state() {
        let a = ones();
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        {
            let _outer = Autocast::enter(Precision::Bf16, Device::Cpu);
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            {
                let _inner = Autocast::enter(Precision::Fp16, Device::Cpu);
                assert_eq!(a.matmul(&a).kind(), Kind::Half);
            }
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16, "inner region restored");
            // Autocast's policy keeps reductions like the loss in float32.
            let logits = a.matmul(&a);
            let labels = Tensor::zeros([8], (Kind::Int64, Device::Cpu));
            let loss = logits.cross_entropy_for_logits(&labels);
            assert_eq!(loss.kind(), Kind::Float);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Float, "outer region restored");
        let _none = Autocast::enter(Precision::Fp32, Device::Cpu);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn precisions_parse_by_short_name() {
        for p in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
            assert_eq!(p.name().parse::<Precision>().ok(), Some(p));
        }
        assert!("fp8".parse::<Precision>().is_err());
    }

    #[test]
    fn the_scaler_backs_off_on_overflow_and_grows_after_clean_steps() -> Result<()> {
        let config = LossScaleConfig {
            init_scale: 1024.0,
            growth_interval: 3,
            ..LossScaleConfig::default()
        };
        let mut scaler = LossScaler::new(config, Device::Cpu)?;
        let loss = Tensor::from_slice(&[0.5f32]);
        assert_eq!(scaler.scale(&loss)?.double_value(&[0]), 512.0);

        let grads = [ones() * 1024.0, ones() * 2048.0];
        assert!(scaler.unscale(&grads)?);
        assert_eq!(grads[0].double_value(&[0, 0]), 1.0);
        assert_eq!(grads[1].double_value(&[7, 7]), 2.0);

        let bad = [ones(), ones() * f64::INFINITY];
        assert!(!scaler.unscale(&bad)?);
        scaler.update(false)?;
        assert_eq!(scaler.state()?.scale, 512.0);
        for _ in 0..2 {
            scaler.update(true)?;
        }
        assert_eq!(
            scaler.state()?,
            LossScaleState {
                scale: 512.0,
                growth_tracker: 2
            }
        );
        scaler.update(true)?;
        assert_eq!(
            scaler.state()?,
            LossScaleState {
                scale: 1024.0,
                growth_tracker: 0
            }
        );
        Ok(())
    }

    #[test]
    fn non_finite_values_are_found_and_bad_settings_refused() -> Result<()> {
        assert!(all_finite(&[ones(), ones() * -3.0])?);
        assert!(!all_finite(&[ones(), ones() * f64::NAN])?);
        assert!(all_finite(&[])?);
        for bad in [
            LossScaleConfig {
                init_scale: 0.0,
                ..LossScaleConfig::default()
            },
            LossScaleConfig {
                backoff_factor: 1.0,
                ..LossScaleConfig::default()
            },
            LossScaleConfig {
                growth_interval: 0,
                ..LossScaleConfig::default()
            },
        ] {
            assert!(LossScaler::new(bad, Device::Cpu).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
