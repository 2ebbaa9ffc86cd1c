// camshaft-aten's C++ side: the libtorch (ATen) functions tch leaves out,
// behind a plain C ABI.
//
// Conventions, relied on by src/ffi.rs:
// - Tensors pass as `at::Tensor*`, the pointer tch's `Tensor` wraps.
// - Every function returns NULL on success, or a message (malloc'd; the
//   caller frees it with cs_free_error) when libtorch threw: no C++
//   exception ever crosses into Rust.
// - Devices and dtypes pass as this file's own small codes (CS_DEVICE_*,
//   CS_DTYPE_*), never as c10's enum values.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#ifdef CAMSHAFT_ATEN_CUDA
// Only the generic guards (c10/core): c10/cuda/CUDAGuard.h instantiates
// CUDAGuardImpl's inline methods, which call the CUDA runtime directly and
// would make us link libcudart ourselves.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <optional>
#endif

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {
// Whether `a` and `b` lie in memory alike: both dense with no overlap, and
// the same stride on every dimension longer than 1.
bool same_layout(const at::Tensor &a, const at::Tensor &b) {
  if (!a.is_non_overlapping_and_dense() || !b.is_non_overlapping_and_dense() ||
      a.dim() != b.dim()) {
    return false;
  }
  for (int64_t d = 0; d < a.dim(); d++) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) {
      return false;
    }
  }
  return true;
}
}  // namespace

namespace {

char *error_copy(const char *what) {
  size_t n = std::strlen(what);
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, what, n + 1);
  }
  return out;
}

// Runs `f`, turning any exception into a message.
template <typename F> char *guarded(F f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error &e) {
    return error_copy(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return error_copy(e.what());
  } catch (...) {
    return error_copy("unknown C++ exception");
  }
}

std::vector<at::Tensor> tensor_list(at::Tensor *const *ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; i++) {
    out.push_back(*ts[i]);
  }
  return out;
}

const int CS_DEVICE_CPU = 0;
const int CS_DEVICE_CUDA = 1;
const int CS_DTYPE_BFLOAT16 = 0;
const int CS_DTYPE_HALF = 1;
const int CS_DTYPE_FLOAT = 2;

at::DeviceType device_type(int code) {
  switch (code) {
  case CS_DEVICE_CPU:
    return at::DeviceType::CPU;
  case CS_DEVICE_CUDA:
    return at::DeviceType::CUDA;
  default:
    throw std::invalid_argument("unknown device type code " +
                                std::to_string(code));
  }
}

at::ScalarType scalar_type(int code) {
  switch (code) {
  case CS_DTYPE_BFLOAT16:
    return at::kBFloat16;
  case CS_DTYPE_HALF:
    return at::kHalf;
  case CS_DTYPE_FLOAT:
    return at::kFloat;
  default:
    throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  }
}

int dtype_code(at::ScalarType t) {
  switch (t) {
  case at::kBFloat16:
    return CS_DTYPE_BFLOAT16;
  case at::kHalf:
    return CS_DTYPE_HALF;
  case at::kFloat:
    return CS_DTYPE_FLOAT;
  default:
    throw std::invalid_argument(std::string("autocast dtype ") +
                                c10::toString(t) + " has no code");
  }
}

} // namespace

extern "C" {

void cs_free_error(char *message) { std::free(message); }

// ---- optimiser ----------------------------------------------------------

// One AdamW step over `n` parameters with libtorch's fused kernel, as
// torch.optim.AdamW(fused=True) takes it: the step counts are incremented
// first (float tensors, one per parameter); with `found_inf` (a one-element
// float tensor, nonzero = skip) the kernel leaves everything unchanged and
// the counts are put back. `lr_tensor` (nullable) replaces `lr` with a
// one-element tensor on the parameters' device (for CUDA graph capture).
char *cs_fused_adamw(at::Tensor *const *params, at::Tensor *const *grads,
                     at::Tensor *const *exp_avgs,
                     at::Tensor *const *exp_avg_sqs,
                     at::Tensor *const *steps, size_t n, double lr,
                     const at::Tensor *lr_tensor, double beta1, double beta2,
                     double weight_decay, double eps,
                     const at::Tensor *grad_scale,
                     const at::Tensor *found_inf) {
  return guarded([&] {
    if (n == 0) {
      return;
    }
    auto p = tensor_list(params, n);
    auto g = tensor_list(grads, n);
    auto m = tensor_list(exp_avgs, n);
    auto v = tensor_list(exp_avg_sqs, n);
    auto s = tensor_list(steps, n);
    std::optional<at::Tensor> scale;
    if (grad_scale != nullptr) {
      scale = *grad_scale;
    }
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) {
      inf = *found_inf;
    }
    // The CPU kernel indexes the lists by the parameter's size without
    // checking the others: check here, so that a wrong tensor is an error
    // and never a read or write out of bounds.
    for (size_t i = 0; i < n; i++) {
      const at::Tensor &param = p[i];
      for (const at::Tensor *other : {&g[i], &m[i], &v[i]}) {
        TORCH_CHECK(other->sizes() == param.sizes(), "fused AdamW: tensor ",
                    i, " has shape ", other->sizes(), " but its parameter ",
                    param.sizes());
        // The kernels walk each tensor's memory in order: dense tensors
        // with the same strides (on every dimension longer than 1, where a
        // stride means anything: a 1×1 kernel's gradient is channels-last
        // while its parameter is not) make element k of one the element k
        // of the others.
        TORCH_CHECK(same_layout(*other, param), "fused AdamW: tensor ", i,
                    " has strides ", other->strides(), " but its parameter ",
                    param.strides());
        TORCH_CHECK(other->device() == param.device() &&
                        other->scalar_type() == param.scalar_type(),
                    "fused AdamW: tensor ", i,
                    " is not on its parameter's device and dtype");
      }
      TORCH_CHECK(s[i].numel() == 1 && s[i].device() == param.device() &&
                      s[i].scalar_type() == at::kFloat,
                  "fused AdamW: step count ", i,
                  " must be one float32 value on its parameter's device");
      TORCH_CHECK(param.device() == p[0].device(),
                  "fused AdamW: parameters on several devices");
    }
    at::_foreach_add_(s, 1.0);
    if (lr_tensor != nullptr) {
      at::_fused_adamw_(p, g, m, v, {}, s, *lr_tensor, beta1, beta2,
                        weight_decay, eps, /*amsgrad=*/false,
                        /*maximize=*/false, scale, inf);
    } else {
      at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay,
                        eps, /*amsgrad=*/false, /*maximize=*/false, scale,
                        inf);
    }
    if (found_inf != nullptr) {
      std::vector<at::Tensor> infs(n, *found_inf);
      at::_foreach_sub_(s, infs);
    }
  });
}

// `tensors` divided by `inv_scale`'s reciprocal in place (multiplied by
// `inv_scale`), and `found_inf` (one-element float) set to 1 when any
// element is not finite: GradScaler's unscale, one multi-tensor kernel on
// CUDA.
char *cs_non_finite_check_and_unscale(at::Tensor *const *tensors, size_t n,
                                      const at::Tensor *found_inf,
                                      const at::Tensor *inv_scale) {
  return guarded([&] {
    if (n == 0) {
      return;
    }
    auto ts = tensor_list(tensors, n);
    at::Tensor inf = *found_inf;
    at::_amp_foreach_non_finite_check_and_unscale_(ts, inf, *inv_scale);
  });
}

// `found_inf` (one-element float, on the tensors' device) set to 1 when any
// element of `tensors` is not finite, else 0, without reading anything
// back to the host. CUDA: the multi-tensor check kernel (with a scale of
// one, which leaves the values as they are). CPU: one sum per tensor (a
// sum is finite exactly when its terms are, short of overflowing) and one
// over those, which reads each value once and writes nothing.
char *cs_found_non_finite(at::Tensor *const *tensors, size_t n,
                          const at::Tensor *found_inf) {
  return guarded([&] {
    at::Tensor out = *found_inf;
    if (n == 0) {
      out.zero_();
      return;
    }
    auto ts = tensor_list(tensors, n);
    bool all_cuda = true;
    for (const auto &t : ts) {
      all_cuda = all_cuda && t.is_cuda();
    }
    if (all_cuda) {
      out.zero_();
      auto one = at::ones({1}, out.options());
      at::_amp_foreach_non_finite_check_and_unscale_(ts, out, one);
      return;
    }
    auto sums = at::empty({static_cast<int64_t>(n)},
                          ts[0].options().dtype(at::kFloat));
    for (size_t i = 0; i < n; i++) {
      at::Tensor slot = sums[static_cast<int64_t>(i)];
      at::sum_out(slot, ts[i], at::OptionalIntArrayRef(), /*keepdim=*/false,
                  at::kFloat);
    }
    out.copy_(at::isfinite(sums.sum()).logical_not().reshape(out.sizes()));
  });
}

// ---- memory format ------------------------------------------------------

// `t.contiguous(at::MemoryFormat::ChannelsLast)` (4-D tensors), as a new
// tensor in `*out`.
char *cs_contiguous_channels_last(const at::Tensor *t, at::Tensor **out) {
  return guarded([&] {
    *out = new at::Tensor(t->contiguous(at::MemoryFormat::ChannelsLast));
  });
}

// Whether `t` is contiguous in the channels-last memory format.
char *cs_is_channels_last(const at::Tensor *t, bool *out) {
  return guarded(
      [&] { *out = t->is_contiguous(at::MemoryFormat::ChannelsLast); });
}

// ---- oneDNN convolutions with prepacked weights (CPU inference) ----------
//
// The operators PyTorch Inductor's CPU freezing calls: a convolution
// weight reordered once into oneDNN's blocked format, then convolutions
// that take it as it is (no reorder per call). Reached through the
// dispatcher by name (boxed), as they have no C++ API of their own; a
// libtorch built without oneDNN has no such operator and says so.

namespace {
c10::IValue int_list(const int64_t *values, size_t n) {
  return c10::IValue(std::vector<int64_t>(values, values + n));
}

at::Tensor call_boxed(const char *name, const char *overload,
                      std::vector<c10::IValue> args) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
  torch::jit::Stack stack(std::make_move_iterator(args.begin()),
                          std::make_move_iterator(args.end()));
  op.callBoxed(&stack);
  if (stack.size() != 1 || !stack[0].isTensor()) {
    throw std::logic_error(std::string(name) + " did not return one tensor");
  }
  return std::move(stack[0]).toTensor();
}
} // namespace

// mkldnn::_reorder_convolution_weight(weight, padding, stride, dilation,
// groups, input_size=None): the weight in oneDNN's own layout (an opaque
// MKLDNN tensor, only for cs_mkldnn_convolution).
char *cs_mkldnn_reorder_conv_weight(const at::Tensor *weight,
                                    const int64_t *padding,
                                    const int64_t *stride,
                                    const int64_t *dilation, int64_t groups,
                                    at::Tensor **out) {
  return guarded([&] {
    *out = new at::Tensor(call_boxed(
        "mkldnn::_reorder_convolution_weight", "",
        {c10::IValue(*weight), int_list(padding, 2), int_list(stride, 2),
         int_list(dilation, 2), c10::IValue(groups), c10::IValue()}));
  });
}

// mkldnn::_convolution_pointwise(input, weight, bias, padding, stride,
// dilation, groups, "none", [], None): a 2-D convolution with a weight
// from cs_mkldnn_reorder_conv_weight; `bias` may be null. No autograd.
char *cs_mkldnn_convolution(const at::Tensor *input, const at::Tensor *weight,
                            const at::Tensor *bias, const int64_t *padding,
                            const int64_t *stride, const int64_t *dilation,
                            int64_t groups, at::Tensor **out) {
  return guarded([&] {
    *out = new at::Tensor(call_boxed(
        "mkldnn::_convolution_pointwise", "",
        {c10::IValue(*input), c10::IValue(*weight),
         bias ? c10::IValue(*bias) : c10::IValue(), int_list(padding, 2),
         int_list(stride, 2), int_list(dilation, 2), c10::IValue(groups),
         c10::IValue(std::string("none")),
         c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()}));
  });
}

// ---- autocast -----------------------------------------------------------

char *cs_autocast_is_enabled(int device, bool *out) {
  return guarded([&] {
    *out = at::autocast::is_autocast_enabled(device_type(device));
  });
}

char *cs_autocast_set_enabled(int device, bool enabled) {
  return guarded(
      [&] { at::autocast::set_autocast_enabled(device_type(device), enabled); });
}

char *cs_autocast_get_dtype(int device, int *out) {
  return guarded([&] {
    *out = dtype_code(at::autocast::get_autocast_dtype(device_type(device)));
  });
}

char *cs_autocast_set_dtype(int device, int dtype) {
  return guarded([&] {
    at::autocast::set_autocast_dtype(device_type(device), scalar_type(dtype));
  });
}

char *cs_autocast_increment_nesting(int *out) {
  return guarded([&] { *out = at::autocast::increment_nesting(); });
}

char *cs_autocast_decrement_nesting(int *out) {
  return guarded([&] { *out = at::autocast::decrement_nesting(); });
}

char *cs_autocast_clear_cache() {
  return guarded([&] { at::autocast::clear_cache(); });
}

char *cs_autocast_is_cache_enabled(bool *out) {
  return guarded([&] { *out = at::autocast::is_autocast_cache_enabled(); });
}

char *cs_autocast_set_cache_enabled(bool enabled) {
  return guarded([&] { at::autocast::set_autocast_cache_enabled(enabled); });
}

// ---- CUDA graphs --------------------------------------------------------

#ifdef CAMSHAFT_ATEN_CUDA

// A graph, and while it captures, the side stream it captures on (a
// capture cannot run on the legacy default stream).
struct cs_cuda_graph {
  at::cuda::CUDAGraph graph;
  c10::DeviceIndex device;
  std::optional<c10::StreamGuard> capturing;
};

} // extern "C"

namespace {
c10::Device cuda_device(int index) {
  return c10::Device(c10::DeviceType::CUDA,
                     static_cast<c10::DeviceIndex>(index));
}
} // namespace

extern "C" {

char *cs_cuda_device_count(int *out) {
  return guarded([&] { *out = static_cast<int>(c10::cuda::device_count()); });
}

char *cs_cuda_synchronize(int device) {
  return guarded([&] {
    c10::DeviceGuard guard(cuda_device(device));
    c10::cuda::device_synchronize();
  });
}

char *cs_cuda_graph_new(int device, cs_cuda_graph **out) {
  return guarded([&] {
    auto index = static_cast<c10::DeviceIndex>(device);
    if (device < 0 || index >= c10::cuda::device_count()) {
      throw std::invalid_argument("no CUDA device " + std::to_string(device));
    }
    c10::DeviceGuard guard(cuda_device(device));
    *out = new cs_cuda_graph{at::cuda::CUDAGraph(), index, std::nullopt};
  });
}

void cs_cuda_graph_free(cs_cuda_graph *g) { delete g; }

// As torch.cuda.graph's __enter__: wait for the device, then capture on a
// side stream of the pool (made current on this thread until capture_end).
char *cs_cuda_graph_capture_begin(cs_cuda_graph *g) {
  return guarded([&] {
    if (g->capturing.has_value()) {
      throw std::logic_error("this graph is already capturing");
    }
    c10::DeviceGuard guard(cuda_device(g->device));
    c10::cuda::device_synchronize();
    g->capturing.emplace(
        c10::cuda::getStreamFromPool(false, g->device).unwrap());
    try {
      g->graph.capture_begin();
    } catch (...) {
      g->capturing.reset();
      throw;
    }
  });
}

char *cs_cuda_graph_capture_end(cs_cuda_graph *g) {
  return guarded([&] {
    if (!g->capturing.has_value()) {
      throw std::logic_error("this graph is not capturing");
    }
    try {
      g->graph.capture_end();
    } catch (...) {
      g->capturing.reset();
      throw;
    }
    g->capturing.reset();
  });
}

// Replays on the current stream of the graph's device.
char *cs_cuda_graph_replay(cs_cuda_graph *g) {
  return guarded([&] {
    c10::DeviceGuard guard(cuda_device(g->device));
    g->graph.replay();
  });
}

#endif

} // extern "C"
