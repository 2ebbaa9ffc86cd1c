//! fastai's training plans: `fit`, `fit_one_cycle` and `fine_tune` as a list
//! of stages with their learning-rate and momentum schedules.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Learning rates over the model's parameter groups, like fastai's `lr_max`
/// argument: one number, or a `slice(lo, hi)` spread geometrically.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrRange {
    /// Every group at the same rate.
    Single(f64),
    /// `slice(hi)`: the last group at `hi`, the others at `hi/10`.
    Slice(f64),
    /// `slice(lo, hi)`: geometric from `lo` (first group) to `hi` (last).
    Range(f64, f64),
}

impl LrRange {
    /// The rate of each of `n` groups (fastai's `even_mults` for ranges).
    pub fn per_group(self, n: usize) -> Vec<f64> {
        match self {
            LrRange::Single(lr) => vec![lr; n],
            LrRange::Slice(hi) => (0..n)
                .map(|i| if i + 1 == n { hi } else { hi / 10.0 })
                .collect(),
            LrRange::Range(lo, hi) if n > 1 => {
                let step = (hi / lo).powf(1.0 / (n - 1) as f64);
                (0..n).map(|i| lo * step.powi(i as i32)).collect()
            }
            LrRange::Range(_, hi) => vec![hi; n],
        }
    }

    fn max(self) -> f64 {
        match self {
            LrRange::Single(x) | LrRange::Slice(x) | LrRange::Range(_, x) => x,
        }
    }
}

/// How lr and momentum move within a stage.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// fastai's `fit`: constant lr, momentum 0.9.
    Constant,
    /// fastai's `fit_one_cycle`: cosine warm-up from `lr/div` to `lr` over
    /// `pct_start` of the steps, cosine down to `lr/div_final`; momentum
    /// cosine from `moms.0` to `moms.1` and back to `moms.2`.
    OneCycle {
        /// Share of the steps spent warming up.
        pct_start: f64,
        /// Start lr = max / div.
        div: f64,
        /// End lr = max / div_final.
        div_final: f64,
        /// Momentum at start, at the peak lr, at the end.
        moms: (f64, f64, f64),
    },
}

impl Schedule {
    /// fastai's `fit_one_cycle` defaults.
    pub fn one_cycle() -> Self {
        Schedule::OneCycle {
            pct_start: 0.25,
            div: 25.0,
            div_final: 1e5,
            moms: (0.95, 0.85, 0.95),
        }
    }

    /// (lr multiplier of the stage's maximum, momentum) at `pos` ∈ [0, 1].
    pub fn at(&self, pos: f64) -> (f64, f64) {
        match *self {
            Schedule::Constant => (1.0, 0.9),
            Schedule::OneCycle {
                pct_start,
                div,
                div_final,
                moms,
            } => (
                combined_cos(pct_start, 1.0 / div, 1.0, 1.0 / div_final, pos),
                combined_cos(pct_start, moms.0, moms.1, moms.2, pos),
            ),
        }
    }
}

/// fastai's `SchedCos`: `start + (1 + cos(π(1 − pos)))·(end − start)/2`.
pub fn sched_cos(start: f64, end: f64, pos: f64) -> f64 {
    start + (1.0 + (std::f64::consts::PI * (1.0 - pos)).cos()) * (end - start) / 2.0
}

/// fastai's `combined_cos(pct, start, middle, end)`.
pub fn combined_cos(pct: f64, start: f64, middle: f64, end: f64, pos: f64) -> f64 {
    if pos < pct {
        sched_cos(start, middle, pos / pct)
    } else {
        sched_cos(middle, end, (pos - pct) / (1.0 - pct))
    }
}

/// One call of `fit`/`fit_one_cycle` within a plan.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Epochs in this stage.
    pub epochs: usize,
    /// Maximum learning rates.
    pub lr: LrRange,
    /// The schedule within the stage.
    pub schedule: Schedule,
    /// Whether the body is frozen (BatchNorm stays trainable).
    pub frozen: bool,
}

/// A whole training run: the stages in order. Saved in checkpoints so a
/// resumed run continues the same schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The stages.
    pub stages: Vec<Stage>,
}

impl Plan {
    /// fastai's `fit(epochs, lr)`.
    pub fn fit(epochs: usize, lr: f64) -> Self {
        Plan {
            stages: vec![Stage {
                epochs,
                lr: LrRange::Single(lr),
                schedule: Schedule::Constant,
                frozen: false,
            }],
        }
    }

    /// fastai's `fit_one_cycle(epochs, lr_max)` with its defaults.
    pub fn one_cycle(epochs: usize, lr: LrRange) -> Self {
        Plan {
            stages: vec![Stage {
                epochs,
                lr,
                schedule: Schedule::one_cycle(),
                frozen: false,
            }],
        }
    }

    /// fastai's `fine_tune(epochs, base_lr, freeze_epochs)`: frozen one-cycle
    /// with `slice(base_lr)` and `pct_start` 0.99; then unfrozen one-cycle
    /// over `slice(base_lr/2/100, base_lr/2)` with `pct_start` 0.3, `div` 5.
    pub fn fine_tune(epochs: usize, base_lr: f64, freeze_epochs: usize) -> Self {
        let mut stages = Vec::new();
        if freeze_epochs > 0 {
            stages.push(Stage {
                epochs: freeze_epochs,
                lr: LrRange::Slice(base_lr),
                schedule: Schedule::OneCycle {
                    pct_start: 0.99,
                    div: 25.0,
                    div_final: 1e5,
                    moms: (0.95, 0.85, 0.95),
                },
                frozen: true,
            });
        }
        let half = base_lr / 2.0;
        stages.push(Stage {
            epochs,
            lr: LrRange::Range(half / 100.0, half),
            schedule: Schedule::OneCycle {
                pct_start: 0.3,
                div: 5.0,
                div_final: 1e5,
                moms: (0.95, 0.85, 0.95),
            },
            frozen: false,
        });
        Plan { stages }
    }

    /// Epochs over all stages.
    pub fn total_epochs(&self) -> usize {
        self.stages.iter().map(|s| s.epochs).sum()
    }

    /// (stage index, epoch within the stage) of the plan's `epoch`-th epoch.
    pub fn locate(&self, epoch: usize) -> Option<(usize, usize)> {
        let mut e = epoch;
        for (i, s) in self.stages.iter().enumerate() {
            if e < s.epochs {
                return Some((i, e));
            }
            e -= s.epochs;
        }
        None
    }

    /// Check every stage trains at a positive, finite rate.
    pub fn validate(&self) -> Result<()> {
        if self.total_epochs() == 0 {
            return Err(Error::Config(
                "a training plan needs at least one epoch".into(),
            ));
        }
        for s in &self.stages {
            let lr = s.lr.max();
            if !(lr.is_finite() && lr > 0.0 && lr < 100.0) {
                return Err(Error::Config(format!(
                    "learning rate {lr} is not in (0, 100)"
                )));
            }
            if let LrRange::Range(lo, hi) = s.lr
                && !(lo > 0.0 && lo <= hi)
            {
                return Err(Error::Config(format!(
                    "learning-rate range {lo}..{hi} is empty"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_has_fastai_shape() {
        let s = Schedule::one_cycle();
        let (lr0, m0) = s.at(0.0);
        assert!((lr0 - 1.0 / 25.0).abs() < 1e-12);
        assert!((m0 - 0.95).abs() < 1e-12);
        let (lr_peak, m_peak) = s.at(0.25);
        assert!((lr_peak - 1.0).abs() < 1e-12);
        assert!((m_peak - 0.85).abs() < 1e-12);
        let (lr_end, m_end) = s.at(1.0);
        assert!((lr_end - 1e-5).abs() < 1e-12);
        assert!((m_end - 0.95).abs() < 1e-12);
        // Half-way through warm-up: the cosine mid-point.
        let (lr_mid, _) = s.at(0.125);
        assert!((lr_mid - (0.04 + 0.96 / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn discriminative_rates_are_geometric() {
        let lrs = LrRange::Range(1e-5, 1e-3).per_group(3);
        assert!(
            (lrs[0] - 1e-5).abs() < 1e-15
                && (lrs[1] - 1e-4).abs() < 1e-14
                && (lrs[2] - 1e-3).abs() < 1e-14
        );
        assert_eq!(LrRange::Slice(1e-3).per_group(3), vec![1e-4, 1e-4, 1e-3]);
    }

    #[test]
    fn fine_tune_is_frozen_then_unfrozen_at_half_rate() {
        let p = Plan::fine_tune(5, 2e-3, 1);
        assert_eq!(p.total_epochs(), 6);
        assert!(p.stages[0].frozen && !p.stages[1].frozen);
        assert_eq!(p.stages[1].lr, LrRange::Range(1e-5, 1e-3));
        assert_eq!(p.locate(0), Some((0, 0)));
        assert_eq!(p.locate(3), Some((1, 2)));
        assert_eq!(p.locate(6), None);
        assert!(Plan::fit(0, 1e-3).validate().is_err());
        assert!(Plan::fit(1, f64::NAN).validate().is_err());
    }
}
