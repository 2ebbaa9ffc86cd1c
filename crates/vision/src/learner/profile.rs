//! Step profiling: the phases of a training step ([`StepPhase`]), the clock
//! that times them on one rank through an epoch, and the gathering of
//! every rank's [`RankStepProfile`] to every rank with one
//! [`GradientSync::sum`] (the `f64` layout that takes is [`Slot`]'s alone).
//!
//! On a GPU each phase ends with a device synchronisation, so the phases
//! add up to the step; profiling is off unless
//! [`LearnerConfig::profile_steps`](super::LearnerConfig::profile_steps)
//! is set.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::GradientSync;
use crate::Result;

pub use camshaft_spec::{PHASES, StepPhase};

/// One step of one rank, for a timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    /// Step within the epoch.
    pub step: usize,
    /// Seconds after the rank's epoch began that the step (its data phase)
    /// began.
    pub start: f64,
    /// Seconds of each phase, in [`StepPhase::ALL`] order.
    pub seconds: [f64; PHASES],
}

/// One rank's step phases over an epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankStepProfile {
    /// The rank.
    pub rank: usize,
    /// Steps timed.
    pub steps: u64,
    /// Seconds of each phase summed over the steps, [`StepPhase::ALL`] order.
    pub total_seconds: [f64; PHASES],
    /// The epoch's last [`TRACED_STEPS`] steps.
    pub last_steps: Vec<StepTrace>,
}

/// Steps of each epoch kept one by one for the timeline (the last ones: the
/// first steps of an epoch include its warm-up).
pub const TRACED_STEPS: usize = 8;

/// Times the phases of one rank's steps through an epoch.
pub(super) struct StepClock {
    device: tch::Device,
    epoch_start: Instant,
    last: Instant,
    pub(super) profile: RankStepProfile,
    current: StepTrace,
}

impl StepClock {
    pub(super) fn new(rank: usize, device: tch::Device) -> Self {
        let now = Instant::now();
        StepClock {
            device,
            epoch_start: now,
            last: now,
            profile: RankStepProfile {
                rank,
                ..RankStepProfile::default()
            },
            current: StepTrace::default(),
        }
    }

    /// End `phase` now (after the device has finished its work).
    pub(super) fn end(&mut self, phase: StepPhase, step: usize) {
        if let tch::Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        let now = Instant::now();
        if phase == StepPhase::Data {
            self.current = StepTrace {
                step,
                start: (self.last - self.epoch_start).as_secs_f64(),
                seconds: [0.0; PHASES],
            };
        }
        let secs = (now - self.last).as_secs_f64();
        let i = phase as usize;
        self.current.seconds[i] = secs;
        self.profile.total_seconds[i] += secs;
        self.last = now;
        if phase == StepPhase::Optimizer {
            self.profile.steps += 1;
            if self.profile.last_steps.len() == TRACED_STEPS {
                self.profile.last_steps.remove(0);
            }
            self.profile.last_steps.push(self.current.clone());
        }
    }
}

/// How a [`RankStepProfile`] travels through [`GradientSync::sum`]: every
/// rank owns one fixed-size slot of `f64`s in a zeroed vector and fills
/// only its own, so the sum hands every rank every slot. The layout of a
/// slot is here and nowhere else.
struct Slot;

impl Slot {
    /// [`RankStepProfile::steps`].
    const STEPS: usize = 0;
    /// [`RankStepProfile::total_seconds`], [`PHASES`] values.
    const TOTAL_SECONDS: usize = Self::STEPS + 1;
    /// How many of the traces below are filled.
    const TRACED: usize = Self::TOTAL_SECONDS + PHASES;
    /// [`RankStepProfile::last_steps`], [`TRACED_STEPS`] traces of
    /// [`Slot::TRACE_LEN`] values each.
    const TRACES: usize = Self::TRACED + 1;
    /// One [`StepTrace`]: its step, its start, then [`PHASES`] seconds.
    const TRACE_LEN: usize = 2 + PHASES;
    /// The whole slot.
    const LEN: usize = Self::TRACES + TRACED_STEPS * Self::TRACE_LEN;

    /// Writes `profile` into `slot` ([`Slot::LEN`] values).
    fn pack(profile: &RankStepProfile, slot: &mut [f64]) {
        slot[Self::STEPS] = profile.steps as f64;
        slot[Self::TOTAL_SECONDS..Self::TRACED].copy_from_slice(&profile.total_seconds);
        let traces = &profile.last_steps[profile.last_steps.len().saturating_sub(TRACED_STEPS)..];
        slot[Self::TRACED] = traces.len() as f64;
        for (trace, out) in traces
            .iter()
            .zip(slot[Self::TRACES..].chunks_exact_mut(Self::TRACE_LEN))
        {
            out[0] = trace.step as f64;
            out[1] = trace.start;
            out[2..].copy_from_slice(&trace.seconds);
        }
    }

    /// Reads rank `rank`'s profile back from its `slot`.
    fn unpack(rank: usize, slot: &[f64]) -> RankStepProfile {
        let traced = (slot[Self::TRACED] as usize).min(TRACED_STEPS);
        RankStepProfile {
            rank,
            steps: slot[Self::STEPS] as u64,
            total_seconds: std::array::from_fn(|i| slot[Self::TOTAL_SECONDS + i]),
            last_steps: slot[Self::TRACES..]
                .chunks_exact(Self::TRACE_LEN)
                .take(traced)
                .map(|t| StepTrace {
                    step: t[0] as usize,
                    start: t[1],
                    seconds: std::array::from_fn(|i| t[2 + i]),
                })
                .collect(),
        }
    }
}

/// Every rank's [`RankStepProfile`], gathered with one sum (a collective:
/// every rank calls it).
pub(super) fn gather_profiles(
    sync: &mut dyn GradientSync,
    mine: &RankStepProfile,
    world_size: usize,
) -> Result<Vec<RankStepProfile>> {
    let mut all = vec![0.0f64; Slot::LEN * world_size];
    Slot::pack(
        mine,
        &mut all[mine.rank * Slot::LEN..(mine.rank + 1) * Slot::LEN],
    );
    sync.sum(&mut all)?;
    Ok(all
        .chunks_exact(Slot::LEN)
        .enumerate()
        .map(|(rank, slot)| Slot::unpack(rank, slot))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tch::Tensor;

    use super::*;
    use crate::learner::SingleProcess;

    #[test]
    fn step_profiles_of_every_rank_reach_every_rank() {
        /// Rank 1's side of the sum: what it contributes.
        struct Contribution(Vec<f64>);
        impl GradientSync for Contribution {
            fn average(&mut self, _: &[Tensor]) -> Result<()> {
                Ok(())
            }
            fn sum(&mut self, values: &mut [f64]) -> Result<()> {
                self.0 = values.to_vec();
                Ok(())
            }
            fn broadcast(&mut self, _: &[Tensor]) -> Result<()> {
                Ok(())
            }
        }
        /// Rank 0's side: its values plus rank 1's.
        struct PlusOther(Vec<f64>);
        impl GradientSync for PlusOther {
            fn average(&mut self, _: &[Tensor]) -> Result<()> {
                Ok(())
            }
            fn sum(&mut self, values: &mut [f64]) -> Result<()> {
                values.iter_mut().zip(&self.0).for_each(|(v, o)| *v += o);
                Ok(())
            }
            fn broadcast(&mut self, _: &[Tensor]) -> Result<()> {
                Ok(())
            }
        }
        let profile = |rank: usize, steps: usize| {
            let mut clock = StepClock::new(rank, tch::Device::Cpu);
            for step in 0..steps {
                for &phase in StepPhase::ALL {
                    clock.end(phase, step);
                }
            }
            clock.profile
        };
        let (p0, p1) = (profile(0, 3), profile(1, TRACED_STEPS + 2));
        assert_eq!(p1.last_steps.len(), TRACED_STEPS);
        assert_eq!(p1.last_steps[0].step, 2, "the last steps are kept");
        let mut one = Contribution(Vec::new());
        gather_profiles(&mut one, &p1, 2).unwrap();
        let all = gather_profiles(&mut PlusOther(one.0), &p0, 2).unwrap();
        assert_eq!(all, vec![p0.clone(), p1]);
        let trace = &all[0].last_steps[2];
        assert_eq!(trace.step, 2);
        assert!(
            trace.start
                >= all[0].last_steps[1].start + all[0].last_steps[1].seconds.iter().sum::<f64>()
                    - 1e-9
        );
        assert_eq!(
            gather_profiles(&mut SingleProcess, &p0, 1).unwrap(),
            vec![p0]
        );
    }
}
