//! Mixed precision as `torch.amp` does it: [`Precision`] picks the autocast
//! dtype, [`Autocast`] turns libtorch's autocast on for one region (the
//! forward pass and the loss), and [`LossScaler`] is `GradScaler`'s dynamic
//! loss scaling for float16.
//!
//! tch exposes only "autocast on CUDA with its default dtype (float16)", so
//! [`Autocast`] sets libtorch's own `at::autocast` state through
//! `camshaft-aten`: the device-typed setters that
//! `torch.autocast(device_type, dtype)` uses.
//!
//! ```no_run,standalone_crate
//! use camshaft_vision::precision::{Autocast, Precision};
//! # fn main() -> camshaft_vision::Result<()> {
//! let a = tch::Tensor::ones([4, 4], (tch::Kind::Float, tch::Device::Cpu));
//! let y = {
//!     let _region = Autocast::enter(Precision::Bf16, tch::Device::Cpu)?;
//!     a.matmul(&a)
//! };
//! assert_eq!(y.kind(), tch::Kind::BFloat16);
//! # Ok(()) }
//! ```
use std::marker::PhantomData;

use camshaft_aten::{AutocastDevice, AutocastDtype, autocast};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

pub use camshaft_spec::Precision;

/// The autocast dtype of `precision`; `None` for float32.
pub fn autocast_kind(precision: Precision) -> Option<Kind> {
    match precision {
        Precision::Fp32 => None,
        Precision::Bf16 => Some(Kind::BFloat16),
        Precision::Fp16 => Some(Kind::Half),
    }
}

/// An autocast region on one device type, like `with torch.autocast(...)`:
/// ops inside run in the precision's dtype where autocast's policy allows;
/// dropping it restores the previous state (and frees the cast weights'
/// cache when the outermost region ends, so no stale copy of a weight
/// outlives an optimiser step). The state is per thread, as in PyTorch,
/// so a region is not [`Send`]: it must end on the thread it began on.
///
/// ```compile_fail
/// use camshaft_vision::precision::Autocast;
/// fn needs_send<T: Send>() {}
/// needs_send::<Autocast>(); // error: `*const ()` cannot be sent between threads
/// ```
#[must_use = "autocast is on only while the region lives"]
pub struct Autocast {
    active: Option<(AutocastDevice, bool, AutocastDtype)>,
    /// Thread-local state is restored in `Drop`: keep the region on its thread.
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Autocast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autocast")
            .field("active", &self.active.is_some())
            .finish()
    }
}

impl Autocast {
    /// Enter a region for `precision` on `device`'s type; float32 enters
    /// nothing.
    pub fn enter(precision: Precision, device: Device) -> Result<Self> {
        let dtype = match autocast_kind(precision) {
            Some(Kind::Half) => AutocastDtype::Half,
            Some(_) => AutocastDtype::BFloat16,
            None => {
                return Ok(Autocast {
                    active: None,
                    _not_send: PhantomData,
                });
            }
        };
        let device = AutocastDevice::of(device);
        let was_enabled = autocast::is_enabled(device)?;
        let was_dtype = autocast::dtype(device)?;
        autocast::set_dtype(device, dtype)?;
        autocast::set_enabled(device, true)?;
        autocast::increment_nesting()?;
        Ok(Autocast {
            active: Some((device, was_enabled, was_dtype)),
            _not_send: PhantomData,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if let Some((device, was_enabled, was_dtype)) = self.active {
            // These cannot fail for the values `enter` read (libtorch's
            // setters only store them); a failure would leave autocast on,
            // which the next region's `enter` would see, so log it.
            let restored = (|| -> camshaft_aten::Result<()> {
                if autocast::decrement_nesting()? == 0 {
                    autocast::clear_cache()?;
                }
                autocast::set_enabled(device, was_enabled)?;
                autocast::set_dtype(device, was_dtype)
            })();
            if let Err(e) = restored {
                tracing::error!(error = %e, "cannot restore the autocast state");
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
        let found_inf = self.unscale_on_device(grads)?;
        Ok(found_inf.f_double_value(&[0])? == 0.0)
    }

    /// [`LossScaler::unscale`] without reading back to the host: `grads`
    /// divided by the scale in place (one multi-tensor kernel on CUDA),
    /// and a one-element float32 tensor on the scale's device, nonzero
    /// when some value is not finite (what the fused optimiser step takes
    /// to skip itself).
    pub fn unscale_on_device(&self, grads: &[Tensor]) -> Result<Tensor> {
        let found_inf = self.scale.f_zeros_like()?;
        let inv = self.scale.f_reciprocal()?;
        tch::no_grad(|| camshaft_aten::non_finite_check_and_unscale(grads, &found_inf, &inv))?;
        Ok(found_inf)
    }

    /// Adjust the scale after a step: back off when `finite` is false, grow
    /// after enough clean steps.
    pub fn update(&mut self, finite: bool) -> Result<()> {
        let found_inf = Tensor::f_from_slice(&[if finite { 0.0f32 } else { 1.0 }])?
            .f_to_device(self.scale.device())?;
        self.update_found_inf(&found_inf)
    }

    /// [`LossScaler::update`] from the device's verdict (a one-element
    /// float32 tensor on the scale's device, nonzero for an overflow), with
    /// no read back to the host.
    pub fn update_found_inf(&mut self, found_inf: &Tensor) -> Result<()> {
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            found_inf,
            self.config.growth_factor,
            self.config.backoff_factor,
            i64::from(self.config.growth_interval),
        )?;
        Ok(())
    }
}

/// Whether every element of `tensors` is finite: one call into libtorch
/// (a multi-tensor kernel on CUDA, one read of each value on a CPU) and
/// one read back.
pub fn all_finite(tensors: &[Tensor]) -> Result<bool> {
    let Some(first) = tensors.first() else {
        return Ok(true);
    };
    let found_inf = found_non_finite(tensors, first.device())?;
    Ok(found_inf.f_double_value(&[0])? == 0.0)
}

/// [`all_finite`] without the read back: a one-element float32 tensor on
/// `device`, nonzero when some value of `tensors` is NaN or infinite.
pub fn found_non_finite(tensors: &[Tensor], device: Device) -> Result<Tensor> {
    let found_inf = Tensor::f_zeros([1], (Kind::Float, device))?;
    tch::no_grad(|| camshaft_aten::found_non_finite(tensors, &found_inf))?;
    Ok(found_inf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ones() -> Tensor {
        Tensor::ones([8, 8], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn autocast_regions_compute_in_their_dtype_and_restore_the_state() {
        let a = ones();
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        {
            let _outer = Autocast::enter(Precision::Bf16, Device::Cpu).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            {
                let _inner = Autocast::enter(Precision::Fp16, Device::Cpu).unwrap();
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
        let _none = Autocast::enter(Precision::Fp32, Device::Cpu).unwrap();
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
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
