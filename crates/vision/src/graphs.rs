//! CUDA graphs for training steps: the forward pass, the loss and the
//! backward pass captured once and replayed as one launch per step.
//!
//! A ResNet18 step launches several hundred small kernels; at 32×32 on a
//! fast GPU the host's launch overhead, not the GPU, sets the pace. A
//! [`StepGraph`] captures that work (`at::cuda::CUDAGraph` through
//! `camshaft-aten`) with its inputs in static tensors; a step copies its
//! batch into them and replays. What stays outside the graph runs eagerly
//! between replays, in the same order as an eager step:
//!
//! - the gradient all-reduce (the TCP ring reads the gradients on the host,
//!   and NCCL runs on its own stream);
//! - the finiteness check and the optimiser. libtorch's fused AdamW takes
//!   β₁ as a host number, and one-cycle training changes it every step, so
//!   a captured step would replay a stale β₁. The fused step is a handful
//!   of multi-tensor launches, not hundreds.
//!
//! The learner decides when to capture ([`Learner`](crate::Learner) with
//! [`LearnerConfig::cuda_graphs`](crate::LearnerConfig::cuda_graphs)):
//! after [`WARMUP_STEPS`] eager steps (cuDNN's algorithm choices, cuBLAS
//! handles and the gradients are made outside the capture, as PyTorch's
//! documentation does it), again when the set of trained parameters
//! changes (fine-tuning unfreezes the body), and not for a batch of
//! another shape (the epoch's last), which runs eagerly.

use camshaft_aten::{CudaGraph, autocast};
use tch::{Device, Tensor};

use crate::{Error, Result};

/// Eager steps before a capture.
pub const WARMUP_STEPS: u32 = 3;

/// Captured work with static inputs and one static output.
pub struct StepGraph {
    graph: CudaGraph,
    inputs: Vec<Tensor>,
    output: Tensor,
}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGraph")
            .field(
                "inputs",
                &self.inputs.iter().map(Tensor::size).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl StepGraph {
    /// Capture `work(inputs)` on `device`: `inputs` become the graph's
    /// static inputs (their shapes, dtypes and layouts fixed), what `work`
    /// returns its output. Autocast's weight cache is off while capturing
    /// (a cast cached during capture would be freed with the region and
    /// replayed from freed memory). Nothing runs until
    /// [`StepGraph::replay`]: call it for the batch in `inputs`.
    pub fn capture(
        device: Device,
        inputs: Vec<Tensor>,
        work: impl FnOnce(&[Tensor]) -> Result<Tensor>,
    ) -> Result<Self> {
        let Device::Cuda(index) = device else {
            return Err(Error::Config(format!(
                "CUDA graphs need a CUDA device, not {device:?}"
            )));
        };
        let mut graph = CudaGraph::new(index)?;
        let cache = autocast::is_cache_enabled()?;
        autocast::set_cache_enabled(false)?;
        let output = graph.capture(|| work(&inputs));
        autocast::set_cache_enabled(cache)?;
        Ok(StepGraph {
            graph,
            output: output??,
            inputs,
        })
    }

    /// Whether `values` fit the static inputs (same count and shapes).
    pub fn fits(&self, values: &[&Tensor]) -> bool {
        values.len() == self.inputs.len()
            && self
                .inputs
                .iter()
                .zip(values)
                .all(|(input, value)| input.size() == value.size())
    }

    /// Copy `values` into the static inputs (from any device, casting to
    /// their dtype and layout) and replay; the output, overwritten by the
    /// replay (valid until the next one).
    pub fn replay(&self, values: &[&Tensor]) -> Result<&Tensor> {
        if !self.fits(values) {
            return Err(Error::Input(format!(
                "a CUDA graph captured for inputs of shapes {:?} cannot replay {:?}",
                self.inputs.iter().map(Tensor::size).collect::<Vec<_>>(),
                values.iter().map(|v| v.size()).collect::<Vec<_>>()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            for (input, value) in self.inputs.iter().zip(values) {
                input.shallow_clone().f_copy_(value)?;
            }
            Ok(())
        })?;
        self.replay_as_is()
    }

    /// Replay on the static inputs as they are.
    pub fn replay_as_is(&self) -> Result<&Tensor> {
        self.graph.replay()?;
        Ok(&self.output)
    }
}

/// Why training steps on `device` would run eagerly with `enabled` CUDA
/// graphs and per-phase profiles `profile`, or `None` when they can replay
/// graphs.
pub fn unavailable(enabled: bool, device: Device, profile: bool) -> Option<&'static str> {
    if !enabled {
        Some("turned off")
    } else if !device.is_cuda() {
        Some("not on a CUDA device")
    } else if !camshaft_aten::CUDA_COMPILED {
        Some("this build's camshaft-aten has no CUDA parts")
    } else if profile {
        Some("per-phase step profiles time the forward and backward passes apart")
    } else {
        None
    }
}

/// The learner's CUDA graph for the current set of trained parameters.
#[derive(Debug, Default)]
pub(crate) struct GraphSlot {
    state: SlotState,
    /// Steps replayed from a graph so far.
    replays: u64,
}

#[derive(Debug, Default)]
enum SlotState {
    /// Eager steps taken since the trained parameters last changed.
    #[default]
    Empty,
    Warming {
        frozen: bool,
        steps: u32,
    },
    Ready {
        frozen: bool,
        graph: StepGraph,
    },
    /// A capture failed: eager steps from now on.
    Failed,
}

/// What the learner does with one step's batch.
pub(crate) enum Next<'a> {
    /// An eager step.
    Eager,
    /// Capture a graph on this batch (then keep it with
    /// [`GraphSlot::captured`] or give up with [`GraphSlot::failed`]).
    Capture,
    /// Replay this graph on this batch.
    Replay(&'a StepGraph),
}

impl GraphSlot {
    /// The step for a batch of `inputs` with the body `frozen` or not.
    pub(crate) fn next(&mut self, frozen: bool, inputs: &[&Tensor]) -> Next<'_> {
        match &mut self.state {
            SlotState::Failed => return Next::Eager,
            SlotState::Warming { frozen: f, steps } if *f == frozen => {
                if *steps >= WARMUP_STEPS {
                    return Next::Capture;
                }
                *steps += 1;
                return Next::Eager;
            }
            SlotState::Ready { frozen: f, .. } if *f == frozen => {}
            _ => {
                self.state = SlotState::Warming { frozen, steps: 1 };
                return Next::Eager;
            }
        }
        match &self.state {
            SlotState::Ready { graph, .. } if graph.fits(inputs) => {
                self.replays += 1;
                Next::Replay(graph)
            }
            _ => Next::Eager,
        }
    }

    /// Keep `graph`, captured for the body `frozen` or not.
    pub(crate) fn captured(&mut self, frozen: bool, graph: StepGraph) {
        self.state = SlotState::Ready { frozen, graph };
        self.replays += 1;
    }

    /// Steps replayed from a graph so far (the capturing step included).
    pub(crate) fn replays(&self) -> u64 {
        self.replays
    }

    /// A capture failed: every later step runs eagerly.
    pub(crate) fn failed(&mut self) {
        self.state = SlotState::Failed;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn steps_warm_up_then_capture_and_start_again_when_the_body_thaws() {
        let mut slot = GraphSlot::default();
        let x = Tensor::zeros([4, 3], (tch::Kind::Float, Device::Cpu));
        for _ in 0..WARMUP_STEPS {
            assert!(matches!(slot.next(true, &[&x]), Next::Eager));
        }
        assert!(matches!(slot.next(true, &[&x]), Next::Capture));
        // Not captured (the caller has not reported back): asked again.
        assert!(matches!(slot.next(true, &[&x]), Next::Capture));
        // The body thaws: the warm-up starts over for the new parameters.
        assert!(matches!(slot.next(false, &[&x]), Next::Eager));
        for _ in 1..WARMUP_STEPS {
            assert!(matches!(slot.next(false, &[&x]), Next::Eager));
        }
        assert!(matches!(slot.next(false, &[&x]), Next::Capture));
        slot.failed();
        for frozen in [false, true] {
            assert!(matches!(slot.next(frozen, &[&x]), Next::Eager));
        }
        assert!(matches!(slot.state, SlotState::Failed));
    }

    #[test]
    fn graphs_apply_only_to_cuda_steps_without_phase_profiles() {
        assert_eq!(
            unavailable(false, Device::Cuda(0), false),
            Some("turned off")
        );
        assert_eq!(
            unavailable(true, Device::Cpu, false),
            Some("not on a CUDA device")
        );
        if camshaft_aten::CUDA_COMPILED {
            assert!(unavailable(true, Device::Cuda(0), true).is_some());
            assert_eq!(unavailable(true, Device::Cuda(0), false), None);
        }
    }

    #[test]
    fn capture_needs_a_cuda_device() {
        let x = Tensor::zeros([2], (tch::Kind::Float, Device::Cpu));
        let err = StepGraph::capture(Device::Cpu, vec![x], |i| Ok(i[0].shallow_clone()));
        assert!(err.unwrap_err().to_string().contains("CUDA"));
    }
}
