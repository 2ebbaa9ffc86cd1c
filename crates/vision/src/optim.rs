//! Adam as fastai configures it, with state we own so checkpoints resume
//! exactly.
//!
//! fastai's `Adam(mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01, decouple_wd=True)`:
//! ```text
//! p      ← p · (1 − lr·wd)                     (not for BatchNorm or bias parameters)
//! m      ← mom·m + (1 − mom)·g
//! v      ← sqr_mom·v + (1 − sqr_mom)·g²
//! p      ← p − lr/(1 − mom^t) · m / (√(v/(1 − sqr_mom^t)) + eps)
//! ```
//! which is PyTorch's AdamW with `betas=(mom, sqr_mom)`. `mom` follows the
//! one-cycle momentum schedule; `t` counts each parameter's own steps.
//!
//! The update runs on libtorch's fused AdamW kernel ([`AdamKernel::Fused`],
//! the default: `torch.optim.AdamW(fused=True)`'s, one call per parameter
//! group and decay setting, through `camshaft-aten`), or tensor by tensor
//! with tch ops ([`AdamKernel::PerTensor`], the fallback, which also runs
//! where the fused kernel does not: parameters that are not float, or on
//! a device other than CPU and CUDA). Both compute the formula above and
//! agree to rounding; the state and its checkpoint format are the same.

use std::collections::BTreeMap;
use std::path::Path;

use camshaft_aten::{AdamWStep, AdamWTensors, LearningRate};
use tch::{Device, Kind, Tensor};

use crate::weights::write_safetensors_atomic;
use crate::{Error, Result};

/// Which code runs an [`Adam`] update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdamKernel {
    /// libtorch's fused AdamW kernel (`at::_fused_adamw_`), falling back
    /// to [`AdamKernel::PerTensor`] where it does not apply.
    #[default]
    Fused,
    /// A few tch ops per parameter tensor.
    PerTensor,
}

/// Adam's hyper-parameters other than the scheduled lr and momentum.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// β₂.
    pub sqr_mom: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay (not applied to BatchNorm and bias parameters).
    pub wd: f64,
    /// The update's code (checkpoints written before it existed: fused).
    #[serde(default)]
    pub kernel: AdamKernel,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            sqr_mom: 0.99,
            eps: 1e-5,
            wd: 0.01,
            kernel: AdamKernel::Fused,
        }
    }
}

/// A parameter's step count: on the host for the per-tensor update, or a
/// one-element float32 tensor on the parameter's device for the fused
/// kernel (which increments it itself, and leaves it when a step is
/// skipped on the device).
enum StepCount {
    Host(i64),
    Device(Tensor),
}

impl StepCount {
    fn get(&self) -> Result<i64> {
        Ok(match self {
            StepCount::Host(n) => *n,
            StepCount::Device(t) => t.f_double_value(&[0])? as i64,
        })
    }

    fn set(&mut self, n: i64) -> Result<()> {
        match self {
            StepCount::Host(h) => *h = n,
            StepCount::Device(t) => {
                let _ = t.f_fill_(n as f64)?;
            }
        }
        Ok(())
    }
}

/// One optimised parameter and its moments.
struct ParamState {
    name: String,
    param: Tensor,
    group: usize,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: StepCount,
}

/// A saved copy of an [`Adam`]'s moments and step counts.
#[derive(Debug)]
pub struct AdamSnapshot(Vec<(Tensor, Tensor, i64)>);

/// fastai's Adam over named parameter groups.
pub struct Adam {
    config: AdamConfig,
    params: Vec<ParamState>,
    /// Whether updates run on the fused kernel (the config asks for it and
    /// every parameter suits it).
    fused: bool,
}

impl std::fmt::Debug for Adam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adam")
            .field("config", &self.config)
            .field("params", &self.params.len())
            .finish()
    }
}

impl Adam {
    /// Optimise `groups` (as [`crate::Model::param_groups`] returns them);
    /// `no_decay(name)` tells the BatchNorm and bias parameters.
    pub fn new(
        config: AdamConfig,
        groups: Vec<Vec<(String, Tensor)>>,
        no_decay: impl Fn(&str) -> bool,
    ) -> Self {
        let named: Vec<(usize, String, Tensor)> = groups
            .into_iter()
            .enumerate()
            .flat_map(|(group, ps)| ps.into_iter().map(move |(n, p)| (group, n, p)))
            .collect();
        let fused = config.kernel == AdamKernel::Fused && fused_kernel_applies(&named);
        let params = named
            .into_iter()
            .map(|(group, name, param)| ParamState {
                decay: !no_decay(&name),
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                step: if fused {
                    StepCount::Device(Tensor::zeros([1], (Kind::Float, param.device())))
                } else {
                    StepCount::Host(0)
                },
                name,
                param,
                group,
            })
            .collect();
        Adam {
            config,
            params,
            fused,
        }
    }

    /// Whether updates run on libtorch's fused kernel.
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.params.iter().map(|p| p.group + 1).max().unwrap_or(0)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> AdamConfig {
        self.config
    }

    /// Zero every gradient (PyTorch's `zero_grad(set_to_none=False)`).
    pub fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.param.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// The gradients that exist (parameters that took part in the backward
    /// pass and are not frozen), in a fixed order: what data-parallel
    /// training all-reduces.
    pub fn gradients(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .filter(|p| p.param.requires_grad())
            .map(|p| p.param.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// One update with learning rate `lrs[group]` and β₁ = `mom`. Frozen
    /// parameters (no gradient) are left alone, as is their state.
    pub fn step(&mut self, lrs: &[f64], mom: f64) -> Result<()> {
        if self.fused {
            self.fused_step(lrs, mom, None)
        } else {
            self.per_tensor_step(lrs, mom)
        }
    }

    /// [`Adam::step`], skipped when `found_inf` (a one-element float32
    /// tensor on the parameters' device, from
    /// [`crate::precision::found_non_finite`] or
    /// [`crate::precision::LossScaler::unscale_on_device`]) is nonzero.
    /// The fused kernel decides that on the device, with no read back to
    /// the host; the per-tensor update reads it first.
    pub fn step_unless(&mut self, lrs: &[f64], mom: f64, found_inf: &Tensor) -> Result<()> {
        if self.fused {
            self.fused_step(lrs, mom, Some(found_inf))
        } else if found_inf.f_double_value(&[0])? == 0.0 {
            self.per_tensor_step(lrs, mom)
        } else {
            Ok(())
        }
    }

    /// One fused kernel call per (group, decay) set of the parameters that
    /// have gradients.
    fn fused_step(&mut self, lrs: &[f64], mom: f64, found_inf: Option<&Tensor>) -> Result<()> {
        let cfg = self.config;
        let groups = self.num_groups();
        if lrs.len() < groups {
            return Err(Error::Config(format!(
                "no learning rate for parameter group {}",
                lrs.len()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            for (group, &lr) in lrs.iter().enumerate().take(groups) {
                for decay in [true, false] {
                    let mut lists: [Vec<Tensor>; 5] = Default::default();
                    for p in self
                        .params
                        .iter()
                        .filter(|p| p.group == group && p.decay == decay)
                    {
                        if !p.param.requires_grad() {
                            continue;
                        }
                        let g = p.param.grad();
                        let StepCount::Device(step) = &p.step else {
                            return Err(Error::Config(
                                "fused Adam step on host step counts".into(),
                            ));
                        };
                        if !g.defined() {
                            continue;
                        }
                        lists[0].push(p.param.shallow_clone());
                        lists[1].push(g);
                        lists[2].push(p.exp_avg.shallow_clone());
                        lists[3].push(p.exp_avg_sq.shallow_clone());
                        lists[4].push(step.shallow_clone());
                    }
                    if lists[0].is_empty() {
                        continue;
                    }
                    let [params, grads, exp_avgs, exp_avg_sqs, steps] = &lists;
                    camshaft_aten::fused_adamw(
                        AdamWTensors {
                            params,
                            grads,
                            exp_avgs,
                            exp_avg_sqs,
                            steps,
                        },
                        AdamWStep {
                            lr: LearningRate::Value(lr),
                            beta1: mom,
                            beta2: cfg.sqr_mom,
                            weight_decay: if decay { cfg.wd } else { 0.0 },
                            eps: cfg.eps,
                            grad_scale: None,
                            found_inf,
                        },
                    )?;
                }
            }
            Ok(())
        })
    }

    fn per_tensor_step(&mut self, lrs: &[f64], mom: f64) -> Result<()> {
        let cfg = self.config;
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                if !p.param.requires_grad() {
                    continue;
                }
                let g = p.param.grad();
                if !g.defined() {
                    continue;
                }
                let lr = *lrs.get(p.group).ok_or_else(|| {
                    Error::Config(format!("no learning rate for parameter group {}", p.group))
                })?;
                let StepCount::Host(step) = &mut p.step else {
                    return Err(Error::Config(
                        "per-tensor Adam step on device step counts".into(),
                    ));
                };
                *step += 1;
                let step = *step;
                if p.decay && cfg.wd != 0.0 {
                    let _ = p.param.f_mul_scalar_(1.0 - lr * cfg.wd)?;
                }
                let _ = p.exp_avg.f_lerp_(&g, 1.0 - mom)?;
                let _ = p.exp_avg_sq.f_lerp_(&g.f_square()?, 1.0 - cfg.sqr_mom)?;
                let debias1 = 1.0 - mom.powi(step as i32);
                let debias2 = 1.0 - cfg.sqr_mom.powi(step as i32);
                // denom = (√v / √debias2 + eps) · (−debias1/lr), so that
                // p + m/denom = p − lr/debias1 · m / (√(v/debias2) + eps).
                if lr == 0.0 {
                    continue;
                }
                let mut denom = p.exp_avg_sq.f_sqrt()?;
                let _ = denom.f_mul_scalar_(1.0 / debias2.sqrt())?;
                let _ = denom.f_add_scalar_(cfg.eps)?;
                let _ = denom.f_mul_scalar_(-debias1 / lr)?;
                let _ = p.param.f_addcdiv_(&p.exp_avg, &denom)?;
            }
            Ok(())
        })
    }

    /// A copy of the optimiser state, for [`Adam::restore`].
    pub fn snapshot(&self) -> Result<AdamSnapshot> {
        Ok(AdamSnapshot(
            self.params
                .iter()
                .map(|p| Ok((p.exp_avg.copy(), p.exp_avg_sq.copy(), p.step.get()?)))
                .collect::<Result<_>>()?,
        ))
    }

    /// Put back a state taken by [`Adam::snapshot`] of this optimiser.
    pub fn restore(&mut self, snapshot: AdamSnapshot) -> Result<()> {
        for (p, (m, v, step)) in self.params.iter_mut().zip(snapshot.0) {
            p.exp_avg = m;
            p.exp_avg_sq = v;
            p.step.set(step)?;
        }
        Ok(())
    }

    /// Write the moments and step counts as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named = Vec::with_capacity(self.params.len() * 3);
        for p in &self.params {
            named.push((
                format!("exp_avg.{}", p.name),
                p.exp_avg.to_device(tch::Device::Cpu),
            ));
            named.push((
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.to_device(tch::Device::Cpu),
            ));
            named.push((
                format!("step.{}", p.name),
                Tensor::f_from_slice(&[p.step.get()?])?,
            ));
        }
        write_safetensors_atomic(&named, path)
    }

    /// Restore what [`Adam::save`] wrote; every parameter must be there.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let mut file: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| bad(format!("cannot read optimiser state: {e}")))?
            .into_iter()
            .collect();
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                let mut take = |kind: &str| {
                    file.remove(&format!("{kind}.{}", p.name))
                        .ok_or_else(|| bad(format!("optimiser state has no {kind} for {}", p.name)))
                };
                let (m, v, s) = (take("exp_avg")?, take("exp_avg_sq")?, take("step")?);
                if m.size() != p.param.size() || v.size() != p.param.size() {
                    return Err(bad(format!(
                        "optimiser state for {} has the wrong shape",
                        p.name
                    )));
                }
                p.exp_avg.f_copy_(&m.to_kind(Kind::Float))?;
                p.exp_avg_sq.f_copy_(&v.to_kind(Kind::Float))?;
                p.step.set(s.f_int64_value(&[0])?)?;
            }
            Ok(())
        })
    }
}

/// Whether libtorch's fused AdamW kernel takes these parameters: floating
/// point, on the CPU or a CUDA device.
fn fused_kernel_applies(params: &[(usize, String, Tensor)]) -> bool {
    params.iter().all(|(_, _, p)| {
        matches!(p.device(), Device::Cpu | Device::Cuda(_))
            && matches!(
                p.kind(),
                Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
            )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One step by hand against the formula in the module docs.
    #[test]
    fn step_matches_fastai_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let mut opt = Adam::new(
            AdamConfig::default(),
            vec![vec![
                ("w".into(), p.shallow_clone()),
                ("fc.bias".into(), b.shallow_clone()),
            ]],
            |n| n.ends_with("bias"),
        );
        let loss = (&p * &p).sum(Kind::Float) + &b * 3.0;
        loss.sum(Kind::Float).backward();
        opt.step(&[0.1], 0.9).unwrap();
        // grad = 2p; m = 0.1 g; v = 0.01 g²; m̂ = g; v̂ = g²  → p ← p(1−lr·wd) − lr·g/(|g|+eps)
        let expect = |p0: f64| {
            let g = 2.0 * p0;
            p0 * (1.0 - 0.1 * 0.01) - 0.1 * g / (g.abs() + 1e-5)
        };
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        assert!((f64::from(got[0]) - expect(1.0)).abs() < 1e-6);
        assert!((f64::from(got[1]) - expect(-2.0)).abs() < 1e-6);
        // No weight decay on the bias: 0.5 − 0.1·3/(3+eps).
        let got = b.double_value(&[0]);
        assert!((got - (0.5 - 0.1 * 3.0 / (3.0 + 1e-5))).abs() < 1e-6);
    }
}
