//! The C ABI of `csrc/shim.cpp` and its safe wrappers: the crate's only
//! `unsafe` code.
//!
//! Every C function returns null or an error message it allocated, which
//! [`check`] copies into [`Error::Torch`] and frees; a C++ exception never
//! crosses into Rust (the C++ side catches everything). Tensors cross as
//! the `at::Tensor*` a tch [`Tensor`] wraps ([`Tensor::as_ptr`]); the C++
//! side only copies those handles (reference counts), never keeps them
//! past the call, and writes through them only where the ATen operation
//! named is in place, which tch allows through a shared `&Tensor` as well.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};
use std::marker::PhantomData;

use tch::Tensor;

use crate::{AutocastDevice, AutocastDtype, Error, Result};

/// An `at::Tensor*` as the C side takes it (tch's `C_tensor`).
type CTensor = *mut torch_sys::C_tensor;

unsafe extern "C" {
    fn cs_free_error(message: *mut c_char);
    fn cs_fused_adamw(
        params: *const CTensor,
        grads: *const CTensor,
        exp_avgs: *const CTensor,
        exp_avg_sqs: *const CTensor,
        steps: *const CTensor,
        n: usize,
        lr: f64,
        lr_tensor: CTensor,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        grad_scale: CTensor,
        found_inf: CTensor,
    ) -> *mut c_char;
    fn cs_non_finite_check_and_unscale(
        tensors: *const CTensor,
        n: usize,
        found_inf: CTensor,
        inv_scale: CTensor,
    ) -> *mut c_char;
    fn cs_found_non_finite(tensors: *const CTensor, n: usize, found_inf: CTensor) -> *mut c_char;
    fn cs_contiguous_channels_last(t: CTensor, out: *mut CTensor) -> *mut c_char;
    fn cs_is_channels_last(t: CTensor, out: *mut bool) -> *mut c_char;
    fn cs_mkldnn_reorder_conv_weight(
        weight: CTensor,
        padding: *const i64,
        stride: *const i64,
        dilation: *const i64,
        groups: i64,
        out: *mut CTensor,
    ) -> *mut c_char;
    fn cs_mkldnn_convolution(
        input: CTensor,
        weight: CTensor,
        bias: CTensor,
        padding: *const i64,
        stride: *const i64,
        dilation: *const i64,
        groups: i64,
        out: *mut CTensor,
    ) -> *mut c_char;
    fn cs_autocast_is_enabled(device: c_int, out: *mut bool) -> *mut c_char;
    fn cs_autocast_set_enabled(device: c_int, enabled: bool) -> *mut c_char;
    fn cs_autocast_get_dtype(device: c_int, out: *mut c_int) -> *mut c_char;
    fn cs_autocast_set_dtype(device: c_int, dtype: c_int) -> *mut c_char;
    fn cs_autocast_increment_nesting(out: *mut c_int) -> *mut c_char;
    fn cs_autocast_decrement_nesting(out: *mut c_int) -> *mut c_char;
    fn cs_autocast_clear_cache() -> *mut c_char;
    fn cs_autocast_is_cache_enabled(out: *mut bool) -> *mut c_char;
    fn cs_autocast_set_cache_enabled(enabled: bool) -> *mut c_char;
}

/// An error message from the C side as [`Error::Torch`] (and the message
/// freed), or `Ok` for null.
fn check(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string the C side
    // malloc'd for us (`error_copy`); it is read once, then freed once by
    // the function that matches its allocation.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above; nothing refers to `message` after this.
    unsafe { cs_free_error(message) };
    Err(Error::Torch(text))
}

fn ptr(t: &Tensor) -> CTensor {
    t.as_ptr() as CTensor
}

fn ptrs(ts: &[Tensor]) -> Vec<CTensor> {
    ts.iter().map(ptr).collect()
}

fn defined(what: &str, t: &Tensor) -> Result<()> {
    if t.defined() {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what} is an undefined tensor")))
    }
}

fn all_defined(what: &str, ts: &[Tensor]) -> Result<()> {
    match ts.iter().position(|t| !t.defined()) {
        Some(i) => Err(Error::Invalid(format!(
            "{what}[{i}] is an undefined tensor"
        ))),
        None => Ok(()),
    }
}

/// The tensors of one fused AdamW step, index by index the same parameter.
#[derive(Clone, Copy, Debug)]
pub struct AdamWTensors<'a> {
    /// The parameters, updated in place.
    pub params: &'a [Tensor],
    /// Their gradients.
    pub grads: &'a [Tensor],
    /// First moments, updated in place.
    pub exp_avgs: &'a [Tensor],
    /// Second moments, updated in place.
    pub exp_avg_sqs: &'a [Tensor],
    /// Step counts: one-element float32 tensors on the parameters' device,
    /// incremented before the update (as `torch.optim.AdamW` keeps them).
    pub steps: &'a [Tensor],
}

/// The learning rate of a step: a number, or a one-element tensor on the
/// parameters' device (which a captured CUDA graph reads at replay).
#[derive(Clone, Copy, Debug)]
pub enum LearningRate<'a> {
    /// A fixed number.
    Value(f64),
    /// A one-element tensor.
    Tensor(&'a Tensor),
}

/// The hyper-parameters of one fused AdamW step.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep<'a> {
    /// Learning rate.
    pub lr: LearningRate<'a>,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// Decoupled weight decay (`p ← p·(1 − lr·wd)` before the update).
    pub weight_decay: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Gradients are divided by this one-element tensor first (the loss
    /// scale), when given.
    pub grad_scale: Option<&'a Tensor>,
    /// When given and nonzero (one-element float32), the step leaves
    /// everything as it was (step counts included): a skipped step that
    /// needs no read back to the host.
    pub found_inf: Option<&'a Tensor>,
}

/// One AdamW step over many parameters with libtorch's fused kernel
/// (`at::_fused_adamw_`, what `torch.optim.AdamW(fused=True)` runs), CPU
/// or CUDA:
///
/// ```text
/// t ← t + 1
/// p ← p·(1 − lr·wd)
/// m ← β₁·m + (1 − β₁)·g;   v ← β₂·v + (1 − β₂)·g²
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + eps)
/// ```
///
/// All tensors of a call are on one device, parameters and moments of one
/// floating dtype.
pub fn fused_adamw(tensors: AdamWTensors<'_>, step: AdamWStep<'_>) -> Result<()> {
    let n = tensors.params.len();
    let lists = [
        ("grads", tensors.grads),
        ("exp_avgs", tensors.exp_avgs),
        ("exp_avg_sqs", tensors.exp_avg_sqs),
        ("steps", tensors.steps),
    ];
    for (what, list) in lists {
        if list.len() != n {
            return Err(Error::Invalid(format!(
                "fused AdamW got {n} parameters but {} {what}",
                list.len()
            )));
        }
        all_defined(what, list)?;
    }
    all_defined("params", tensors.params)?;
    let (lr, lr_tensor) = match step.lr {
        LearningRate::Value(lr) => (lr, std::ptr::null_mut()),
        LearningRate::Tensor(t) => {
            defined("lr", t)?;
            (0.0, ptr(t))
        }
    };
    let optional = |what, t: Option<&Tensor>| -> Result<CTensor> {
        match t {
            Some(t) => defined(what, t).map(|()| ptr(t)),
            None => Ok(std::ptr::null_mut()),
        }
    };
    let grad_scale = optional("grad_scale", step.grad_scale)?;
    let found_inf = optional("found_inf", step.found_inf)?;
    let (p, g, m, v, s) = (
        ptrs(tensors.params),
        ptrs(tensors.grads),
        ptrs(tensors.exp_avgs),
        ptrs(tensors.exp_avg_sqs),
        ptrs(tensors.steps),
    );
    // SAFETY: five arrays of `n` pointers to defined tensors (checked
    // above), alive for the call (borrowed from the slices); the optional
    // pointers are null or defined tensors borrowed for the call. The C
    // side checks every tensor's shape, device and dtype against its
    // parameter before the kernel (which does not) indexes them.
    check(unsafe {
        cs_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr,
            lr_tensor,
            step.beta1,
            step.beta2,
            step.weight_decay,
            step.eps,
            grad_scale,
            found_inf,
        )
    })
}

/// `GradScaler`'s unscale: every tensor multiplied by `inv_scale`
/// (one-element float32) in place, and `found_inf` (one-element float32,
/// same device) set to 1 where any value is not finite (left as it is
/// otherwise: zero it first). One multi-tensor kernel on CUDA.
pub fn non_finite_check_and_unscale(
    tensors: &[Tensor],
    found_inf: &Tensor,
    inv_scale: &Tensor,
) -> Result<()> {
    all_defined("tensors", tensors)?;
    defined("found_inf", found_inf)?;
    defined("inv_scale", inv_scale)?;
    let ts = ptrs(tensors);
    // SAFETY: `ts` holds `ts.len()` pointers to defined tensors borrowed
    // for the call; the two scalars are defined and borrowed too.
    check(unsafe {
        cs_non_finite_check_and_unscale(ts.as_ptr(), ts.len(), ptr(found_inf), ptr(inv_scale))
    })
}

/// Sets `found_inf` (one-element float32, on the tensors' device) to 1 when
/// any value of `tensors` is NaN or infinite, else to 0, without a read
/// back to the host (CUDA: one multi-tensor kernel; CPU: one read of each
/// value).
pub fn found_non_finite(tensors: &[Tensor], found_inf: &Tensor) -> Result<()> {
    all_defined("tensors", tensors)?;
    defined("found_inf", found_inf)?;
    let ts = ptrs(tensors);
    // SAFETY: as in `non_finite_check_and_unscale`.
    check(unsafe { cs_found_non_finite(ts.as_ptr(), ts.len(), ptr(found_inf)) })
}

/// `t.contiguous(memory_format=torch.channels_last)`: the same values with
/// NHWC strides (a 4-D tensor; `t` itself when it already has them).
pub fn contiguous_channels_last(t: &Tensor) -> Result<Tensor> {
    defined("tensor", t)?;
    let mut out: CTensor = std::ptr::null_mut();
    // SAFETY: `t` is defined and borrowed for the call; `out` is written
    // once, on success, with a tensor the C side allocated for us.
    check(unsafe { cs_contiguous_channels_last(ptr(t), &mut out) })?;
    // SAFETY: `out` is null or the fresh tensor the call made.
    unsafe { take(out, "channels-last conversion") }
}

/// Whether `t` is contiguous in the channels-last memory format.
pub fn is_channels_last(t: &Tensor) -> Result<bool> {
    defined("tensor", t)?;
    let mut out = false;
    // SAFETY: `t` is defined and borrowed for the call; `out` is a local.
    check(unsafe { cs_is_channels_last(ptr(t), &mut out) })?;
    Ok(out)
}

/// A tensor the C side allocated for us (`new at::Tensor`), or an error
/// naming `what` when it wrote nothing.
///
/// # Safety
/// `out` is null or a fresh `at::Tensor*` nobody else owns.
unsafe fn take(out: CTensor, what: &str) -> Result<Tensor> {
    if out.is_null() {
        return Err(Error::Torch(format!("{what} returned nothing")));
    }
    // SAFETY: per this function's contract; tch's `Tensor` takes it over
    // and deletes it on drop.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Padding, stride and dilation (per spatial dimension) and groups of a
/// 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Zero padding, rows and columns.
    pub padding: [i64; 2],
    /// Stride.
    pub stride: [i64; 2],
    /// Dilation.
    pub dilation: [i64; 2],
    /// Groups.
    pub groups: i64,
}

/// A float32 2-D convolution on the CPU whose weight was reordered once
/// into oneDNN's blocked layout (`mkldnn::_reorder_convolution_weight`,
/// what PyTorch Inductor's CPU freezing does), so that each call
/// (`mkldnn::_convolution_pointwise`) skips the reorder eager PyTorch
/// pays on every call. For inference: the result has no autograd
/// history. Outputs are ordinary float32 tensors in channels-last order.
pub struct PackedConv2d {
    /// An opaque MKLDNN tensor, only ever handed back to the C side.
    weight: Tensor,
    bias: Option<Tensor>,
    geometry: Conv2dGeometry,
    out_channels: i64,
}

impl std::fmt::Debug for PackedConv2d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv2d")
            .field("geometry", &self.geometry)
            .field("out_channels", &self.out_channels)
            .finish_non_exhaustive()
    }
}

fn cpu_float(what: &str, t: &Tensor, dims: usize) -> Result<()> {
    defined(what, t)?;
    if t.device() != tch::Device::Cpu || t.kind() != tch::Kind::Float || t.dim() != dims {
        return Err(Error::Invalid(format!(
            "{what} must be a {dims}-D float32 CPU tensor, not {:?} {:?} on {:?}",
            t.size(),
            t.kind(),
            t.device()
        )));
    }
    Ok(())
}

impl PackedConv2d {
    /// `weight` (`(out, in/groups, kh, kw)`, float32 on the CPU) packed
    /// for `geometry`, with `bias` (`(out,)`) kept as it is. An error where
    /// libtorch was built without oneDNN.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, geometry: Conv2dGeometry) -> Result<Self> {
        cpu_float("weight", weight, 4)?;
        let out_channels = weight.size()[0];
        if let Some(b) = bias {
            cpu_float("bias", b, 1)?;
            if b.size() != [out_channels] {
                return Err(Error::Invalid(format!(
                    "bias of shape {:?} for {out_channels} output channels",
                    b.size()
                )));
            }
        }
        let g = &geometry;
        let mut out: CTensor = std::ptr::null_mut();
        // SAFETY: `weight` is defined and borrowed for the call; the arrays
        // are two elements each, as the C side reads them; `out` is
        // written once, on success.
        check(unsafe {
            cs_mkldnn_reorder_conv_weight(
                ptr(weight),
                g.padding.as_ptr(),
                g.stride.as_ptr(),
                g.dilation.as_ptr(),
                g.groups,
                &mut out,
            )
        })?;
        Ok(PackedConv2d {
            // SAFETY: `out` is null or the fresh tensor the call made.
            weight: unsafe { take(out, "the weight reorder") }?,
            bias: bias.map(|b| b.detach().contiguous()),
            geometry,
            out_channels,
        })
    }

    /// The convolution of `input` (`(N, C, H, W)`, float32 on the CPU, any
    /// memory format).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        cpu_float("input", input, 4)?;
        let g = &self.geometry;
        let mut out: CTensor = std::ptr::null_mut();
        let bias = self.bias.as_ref().map_or(std::ptr::null_mut(), ptr);
        // SAFETY: the tensors are defined and borrowed for the call (`bias`
        // may be null, which the C side reads as none); the arrays are two
        // elements each; `out` is written once, on success.
        check(unsafe {
            cs_mkldnn_convolution(
                ptr(input),
                ptr(&self.weight),
                bias,
                g.padding.as_ptr(),
                g.stride.as_ptr(),
                g.dilation.as_ptr(),
                g.groups,
                &mut out,
            )
        })?;
        // SAFETY: `out` is null or the fresh tensor the call made.
        unsafe { take(out, "the packed convolution") }
    }
}

/// libtorch's autocast state: per thread, as in PyTorch. The functions
/// `torch.autocast` calls.
pub mod autocast {
    use super::*;

    /// Whether autocast is on for `device` on this thread.
    pub fn is_enabled(device: AutocastDevice) -> Result<bool> {
        let mut out = false;
        // SAFETY: plain values in and out.
        check(unsafe { cs_autocast_is_enabled(device as c_int, &mut out) })?;
        Ok(out)
    }

    /// Turn autocast on or off for `device` on this thread.
    pub fn set_enabled(device: AutocastDevice, enabled: bool) -> Result<()> {
        // SAFETY: plain values.
        check(unsafe { cs_autocast_set_enabled(device as c_int, enabled) })
    }

    /// The dtype autocast casts to on `device`.
    pub fn dtype(device: AutocastDevice) -> Result<AutocastDtype> {
        let mut out: c_int = -1;
        // SAFETY: plain values in and out.
        check(unsafe { cs_autocast_get_dtype(device as c_int, &mut out) })?;
        AutocastDtype::from_code(out)
    }

    /// Set the dtype autocast casts to on `device`.
    pub fn set_dtype(device: AutocastDevice, dtype: AutocastDtype) -> Result<()> {
        // SAFETY: plain values.
        check(unsafe { cs_autocast_set_dtype(device as c_int, dtype as c_int) })
    }

    /// Enter a region; the nesting depth after.
    pub fn increment_nesting() -> Result<i32> {
        let mut out: c_int = 0;
        // SAFETY: a plain value out.
        check(unsafe { cs_autocast_increment_nesting(&mut out) })?;
        Ok(out)
    }

    /// Leave a region; the nesting depth after (0: the outermost ended).
    pub fn decrement_nesting() -> Result<i32> {
        let mut out: c_int = 0;
        // SAFETY: a plain value out.
        check(unsafe { cs_autocast_decrement_nesting(&mut out) })?;
        Ok(out)
    }

    /// Free the cast copies of weights autocast keeps within a region.
    pub fn clear_cache() -> Result<()> {
        // SAFETY: no arguments.
        check(unsafe { cs_autocast_clear_cache() })
    }

    /// Whether autocast caches cast weights.
    pub fn is_cache_enabled() -> Result<bool> {
        let mut out = false;
        // SAFETY: a plain value out.
        check(unsafe { cs_autocast_is_cache_enabled(&mut out) })?;
        Ok(out)
    }

    /// Turn autocast's weight cache on or off (off while capturing a CUDA
    /// graph, as PyTorch requires).
    pub fn set_cache_enabled(enabled: bool) -> Result<()> {
        // SAFETY: a plain value.
        check(unsafe { cs_autocast_set_cache_enabled(enabled) })
    }
}

/// CUDA devices visible to libtorch (0 without CUDA, compiled or present).
pub fn cuda_device_count() -> usize {
    cuda::device_count()
}

/// Wait for every stream of CUDA device `device`.
pub fn cuda_synchronize(device: usize) -> Result<()> {
    cuda::synchronize(device)
}

/// A CUDA graph (`at::cuda::CUDAGraph`): kernels captured once and replayed
/// with one launch. Inputs and outputs are the tensors the captured code
/// used: copy new data into the inputs before [`CudaGraph::replay`], read
/// the outputs after. The memory the capture allocated stays the graph's
/// until it is dropped.
pub struct CudaGraph {
    inner: cuda::Graph,
    /// Capture makes a stream current on the calling thread until it ends;
    /// `capture` holds `&mut self` for that whole time, on one thread.
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for CudaGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGraph").finish_non_exhaustive()
    }
}

impl CudaGraph {
    /// An empty graph on CUDA device `device`; an error without CUDA
    /// ([`Error::CudaNotCompiled`], or libtorch's when the device is
    /// missing).
    pub fn new(device: usize) -> Result<Self> {
        Ok(CudaGraph {
            inner: cuda::Graph::new(device)?,
            _not_sync: PhantomData,
        })
    }

    /// Capture the CUDA work `f` enqueues (as `with torch.cuda.graph(g)`:
    /// on a side stream, after waiting for the device). Nothing captured
    /// runs until [`CudaGraph::replay`]. `f` must not read values back to
    /// the host or synchronise. Capture ends even when `f` panics.
    pub fn capture<R>(&mut self, f: impl FnOnce() -> R) -> Result<R> {
        self.inner.capture_begin()?;
        struct End<'a>(&'a mut cuda::Graph, bool);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let _ = self.0.capture_end();
                }
            }
        }
        let mut end = End(&mut self.inner, false);
        let out = f();
        end.1 = true;
        end.0.capture_end()?;
        Ok(out)
    }

    /// Run the captured work again, on the device's current stream.
    pub fn replay(&self) -> Result<()> {
        self.inner.replay()
    }
}

#[cfg(aten_cuda)]
mod cuda {
    use super::*;

    #[repr(C)]
    struct CsCudaGraph {
        _opaque: [u8; 0],
    }

    unsafe extern "C" {
        fn cs_cuda_device_count(out: *mut c_int) -> *mut c_char;
        fn cs_cuda_synchronize(device: c_int) -> *mut c_char;
        fn cs_cuda_graph_new(device: c_int, out: *mut *mut CsCudaGraph) -> *mut c_char;
        fn cs_cuda_graph_free(g: *mut CsCudaGraph);
        fn cs_cuda_graph_capture_begin(g: *mut CsCudaGraph) -> *mut c_char;
        fn cs_cuda_graph_capture_end(g: *mut CsCudaGraph) -> *mut c_char;
        fn cs_cuda_graph_replay(g: *mut CsCudaGraph) -> *mut c_char;
    }

    pub(super) fn device_count() -> usize {
        let mut out: c_int = 0;
        // SAFETY: a plain value out.
        match check(unsafe { cs_cuda_device_count(&mut out) }) {
            Ok(()) => usize::try_from(out).unwrap_or(0),
            // No driver or no device: libtorch throws; that is zero devices.
            Err(_) => 0,
        }
    }

    fn index(device: usize) -> Result<c_int> {
        c_int::try_from(device).map_err(|_| Error::Invalid(format!("no CUDA device {device}")))
    }

    pub(super) fn synchronize(device: usize) -> Result<()> {
        // SAFETY: a plain value.
        check(unsafe { cs_cuda_synchronize(index(device)?) })
    }

    /// Owns a `cs_cuda_graph` of the C side.
    pub(super) struct Graph(*mut CsCudaGraph);

    // SAFETY: an `at::cuda::CUDAGraph` has no thread affinity (PyTorch
    // replays graphs from any thread); the stream a capture makes current
    // is thread-local state set and reset within one `CudaGraph::capture`
    // call, which holds `&mut` on one thread throughout.
    unsafe impl Send for Graph {}

    impl Graph {
        pub(super) fn new(device: usize) -> Result<Self> {
            let mut out: *mut CsCudaGraph = std::ptr::null_mut();
            // SAFETY: `out` is written once, on success, with an object
            // this `Graph` then owns.
            check(unsafe { cs_cuda_graph_new(index(device)?, &mut out) })?;
            if out.is_null() {
                return Err(Error::Torch("CUDA graph creation returned nothing".into()));
            }
            Ok(Graph(out))
        }

        pub(super) fn capture_begin(&mut self) -> Result<()> {
            // SAFETY: `self.0` is a live object owned by `self`.
            check(unsafe { cs_cuda_graph_capture_begin(self.0) })
        }

        pub(super) fn capture_end(&mut self) -> Result<()> {
            // SAFETY: as in `capture_begin`.
            check(unsafe { cs_cuda_graph_capture_end(self.0) })
        }

        pub(super) fn replay(&self) -> Result<()> {
            // SAFETY: as in `capture_begin`; replay only reads the graph.
            check(unsafe { cs_cuda_graph_replay(self.0) })
        }
    }

    impl Drop for Graph {
        fn drop(&mut self) {
            // SAFETY: `self.0` came from `cs_cuda_graph_new` and is freed
            // once, here.
            unsafe { cs_cuda_graph_free(self.0) }
        }
    }
}

#[cfg(not(aten_cuda))]
mod cuda {
    use super::*;

    pub(super) fn device_count() -> usize {
        0
    }

    pub(super) fn synchronize(_device: usize) -> Result<()> {
        Err(Error::CudaNotCompiled)
    }

    /// Stands in for the CUDA build's graph: cannot be made.
    pub(super) struct Graph(std::convert::Infallible);

    impl Graph {
        pub(super) fn new(_device: usize) -> Result<Self> {
            Err(Error::CudaNotCompiled)
        }
        pub(super) fn capture_begin(&mut self) -> Result<()> {
            match self.0 {}
        }
        pub(super) fn capture_end(&mut self) -> Result<()> {
            match self.0 {}
        }
        pub(super) fn replay(&self) -> Result<()> {
            match self.0 {}
        }
    }
}
