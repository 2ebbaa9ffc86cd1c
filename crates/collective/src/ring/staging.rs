//! Tensors to flat buffers and back: a call's tensors are split by the
//! element type they travel as, and those that cannot be viewed in place are
//! copied through a flat staging tensor the communicator keeps.

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// The tensors of one call, split by the element type they travel as.
pub(super) struct WireGroups<'a> {
    /// f32, f16, bf16: carried and summed as f32.
    pub(super) single: Vec<&'a Tensor>,
    /// f64.
    pub(super) double: Vec<&'a Tensor>,
}

impl<'a> WireGroups<'a> {
    pub(super) fn split(tensors: &'a [Tensor], op: &str) -> Result<Self> {
        let mut groups = WireGroups {
            single: Vec::new(),
            double: Vec::new(),
        };
        for (i, t) in tensors.iter().enumerate() {
            if !t.defined() {
                return Err(Error::Tensor(format!("{op}: tensor {i} is undefined")));
            }
            let device = t.device();
            if device != Device::Cpu {
                return Err(Error::Tensor(format!(
                    "the TCP ring {op} needs CPU tensors, tensor {i} is on {device:?} (use NcclCommunicator for CUDA tensors)"
                )));
            }
            match t.f_kind()? {
                Kind::Float | Kind::Half | Kind::BFloat16 => groups.single.push(t),
                Kind::Double => groups.double.push(t),
                kind => {
                    return Err(Error::Tensor(format!(
                        "the TCP ring {op} supports f32, f16, bf16 and f64 tensors, tensor {i} is {kind:?}"
                    )));
                }
            }
        }
        Ok(groups)
    }
}

pub(super) fn numel(tensors: &[&Tensor]) -> usize {
    tensors.iter().map(|t| t.numel()).sum()
}

/// Copies `tensors` (converted to the staging dtype) one after another into
/// the flat `stage`.
pub(super) fn gather(tensors: &[&Tensor], stage: &Tensor) -> Result<()> {
    tch::no_grad(|| {
        let mut offset = 0;
        for t in tensors {
            let n = t.numel() as i64;
            if n == 0 {
                continue;
            }
            stage
                .f_narrow(0, offset, n)?
                .f_view(t.size().as_slice())?
                .f_copy_(t)?;
            offset += n;
        }
        Ok(())
    })
}

/// Copies the flat `stage` back into `tensors`, in place (and converted to
/// their dtype).
pub(super) fn scatter(tensors: &[&Tensor], stage: &Tensor) -> Result<()> {
    // Parameters are leaves that require grad: an in-place copy into them is
    // only allowed with gradient tracking off.
    tch::no_grad(|| {
        let mut offset = 0;
        for t in tensors {
            let n = t.numel() as i64;
            if n == 0 {
                continue;
            }
            let src = stage.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?;
            t.shallow_clone().f_copy_(&src)?;
            offset += n;
        }
        Ok(())
    })
}

/// The staging tensors of a communicator, one per wire element type.
#[derive(Default)]
pub(super) struct Staging {
    pub(super) single: Option<Tensor>,
    pub(super) double: Option<Tensor>,
}
