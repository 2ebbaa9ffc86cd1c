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

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::weights::write_safetensors_atomic;
use crate::{Error, Result};

/// Adam's hyper-parameters other than the scheduled lr and momentum.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// β₂.
    pub sqr_mom: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay (not applied to BatchNorm and bias parameters).
    pub wd: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            sqr_mom: 0.99,
            eps: 1e-5,
            wd: 0.01,
        }
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
    step: i64,
}

/// A saved copy of an [`Adam`]'s moments and step counts.
#[derive(Debug)]
pub struct AdamSnapshot(Vec<(Tensor, Tensor, i64)>);

/// fastai's Adam over named parameter groups.
pub struct Adam {
    config: AdamConfig,
    params: Vec<ParamState>,
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
        let params = groups
            .into_iter()
            .enumerate()
            .flat_map(|(group, ps)| ps.into_iter().map(move |p| (group, p)))
            .map(|(group, (name, param))| ParamState {
                decay: !no_decay(&name),
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                name,
                param,
                group,
                step: 0,
            })
            .collect();
        Adam { config, params }
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
                p.step += 1;
                if p.decay && cfg.wd != 0.0 {
                    let _ = p.param.f_mul_scalar_(1.0 - lr * cfg.wd)?;
                }
                let _ = p.exp_avg.f_lerp_(&g, 1.0 - mom)?;
                let _ = p.exp_avg_sq.f_lerp_(&g.f_square()?, 1.0 - cfg.sqr_mom)?;
                let debias1 = 1.0 - mom.powi(p.step as i32);
                let debias2 = 1.0 - cfg.sqr_mom.powi(p.step as i32);
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
    pub fn snapshot(&self) -> AdamSnapshot {
        AdamSnapshot(
            self.params
                .iter()
                .map(|p| (p.exp_avg.copy(), p.exp_avg_sq.copy(), p.step))
                .collect(),
        )
    }

    /// Put back a state taken by [`Adam::snapshot`] of this optimiser.
    pub fn restore(&mut self, snapshot: AdamSnapshot) {
        for (p, (m, v, step)) in self.params.iter_mut().zip(snapshot.0) {
            p.exp_avg = m;
            p.exp_avg_sq = v;
            p.step = step;
        }
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
            named.push((format!("step.{}", p.name), Tensor::from_slice(&[p.step])));
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
                p.step = s.f_int64_value(&[0])?;
            }
            Ok(())
        })
    }
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
