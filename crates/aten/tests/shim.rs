//! The shim against plain tch arithmetic, on the CPU; the CUDA graph test
//! runs where a GPU is (and says why it is skipped elsewhere).
#![allow(clippy::unwrap_used)]

use camshaft_aten::{
    AdamWStep, AdamWTensors, AutocastDevice, AutocastDtype, Conv2dGeometry, CudaGraph, Error,
    LearningRate, PackedConv2d, autocast, contiguous_channels_last, cuda_device_count,
    found_non_finite, fused_adamw, is_channels_last, non_finite_check_and_unscale,
};
use tch::{Device, Kind, Tensor};

const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn step(lr: f64, found_inf: Option<&Tensor>) -> AdamWStep<'_> {
    AdamWStep {
        lr: LearningRate::Value(lr),
        beta1: 0.9,
        beta2: 0.99,
        weight_decay: 0.01,
        eps: 1e-5,
        grad_scale: None,
        found_inf,
    }
}

struct State {
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: Vec<Tensor>,
}

impl State {
    /// Random parameters, fresh moments. Tests run on parallel threads that
    /// share libtorch's generator, so a second state for comparison is a
    /// [`State::copy`] of the first, never a second draw after the same seed.
    fn new(shapes: &[&[i64]]) -> Self {
        let params: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, F32)).collect();
        State {
            m: params.iter().map(Tensor::zeros_like).collect(),
            v: params.iter().map(Tensor::zeros_like).collect(),
            steps: params.iter().map(|_| Tensor::zeros([1], F32)).collect(),
            params,
        }
    }

    fn copy(&self) -> Self {
        let copy = |ts: &[Tensor]| ts.iter().map(Tensor::copy).collect();
        State {
            params: copy(&self.params),
            m: copy(&self.m),
            v: copy(&self.v),
            steps: copy(&self.steps),
        }
    }

    fn tensors<'a>(&'a self, grads: &'a [Tensor]) -> AdamWTensors<'a> {
        AdamWTensors {
            params: &self.params,
            grads,
            exp_avgs: &self.m,
            exp_avg_sqs: &self.v,
            steps: &self.steps,
        }
    }
}

/// AdamW written out with tch ops, the formula of `fused_adamw`'s docs.
fn reference_step(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, t: i32, lr: f64) -> Tensor {
    let (b1, b2, wd, eps) = (0.9, 0.99, 0.01, 1e-5);
    let p = p * (1.0 - lr * wd);
    let _ = m.shallow_clone().lerp_(g, 1.0 - b1);
    let _ = v.shallow_clone().lerp_(&g.square(), 1.0 - b2);
    let denom = v.sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
    p - m / denom * (lr / (1.0 - b1.powi(t)))
}

#[test]
fn fused_adamw_is_adamw() {
    let shapes: [&[i64]; 3] = [&[4, 3, 3, 3], &[7], &[10, 5]];
    let fused = State::new(&shapes);
    let mut reference = fused.copy();
    for t in 1..=5 {
        let grads: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, F32)).collect();
        let lr = 1e-2 * t as f64;
        fused_adamw(fused.tensors(&grads), step(lr, None)).unwrap();
        let r = &reference;
        let next: Vec<Tensor> = (grads.iter().enumerate())
            .map(|(i, g)| reference_step(&r.params[i], g, &r.m[i], &r.v[i], t, lr))
            .collect();
        reference.params = next;
    }
    // A few float32 ulps of values near 4 (the reference orders its
    // operations otherwise); a wrong bias correction or decay is ≫ 1e-4.
    for i in 0..shapes.len() {
        assert!(max_diff(&fused.params[i], &reference.params[i]) < 4e-6);
        assert!(max_diff(&fused.m[i], &reference.m[i]) < 4e-6);
        assert_eq!(fused.steps[i].double_value(&[0]), 5.0);
    }
}

#[test]
fn a_found_inf_step_changes_nothing_and_a_tensor_lr_is_a_number() {
    let shapes: [&[i64]; 2] = [&[3, 2], &[5]];
    let a = State::new(&shapes);
    let b = a.copy();
    let grads: Vec<Tensor> = shapes.iter().map(|s| Tensor::ones(*s, F32)).collect();
    let before: Vec<Tensor> = a.params.iter().map(Tensor::copy).collect();
    let inf = Tensor::ones([1], F32);
    fused_adamw(a.tensors(&grads), step(0.1, Some(&inf))).unwrap();
    for (p, q) in a.params.iter().zip(&before) {
        assert_eq!(max_diff(p, q), 0.0);
    }
    assert_eq!(a.steps[0].double_value(&[0]), 0.0, "the count is put back");
    let lr = Tensor::from_slice(&[0.1f32]);
    let no_inf = Tensor::zeros([1], F32);
    let mut by_tensor = step(0.0, Some(&no_inf));
    by_tensor.lr = LearningRate::Tensor(&lr);
    fused_adamw(a.tensors(&grads), by_tensor).unwrap();
    fused_adamw(b.tensors(&grads), step(0.1, None)).unwrap();
    for (p, q) in a.params.iter().zip(&b.params) {
        assert!(max_diff(p, q) < 1e-7);
    }
}

#[test]
fn libtorch_errors_come_back_as_messages() {
    let s = State::new(&[&[3]]);
    let wrong = [Tensor::ones([4], F32)];
    let err = fused_adamw(s.tensors(&wrong), step(0.1, None)).unwrap_err();
    assert!(matches!(err, Error::Torch(_)), "{err}");
    let too_few: [Tensor; 0] = [];
    let err = fused_adamw(s.tensors(&too_few), step(0.1, None)).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let ints = [Tensor::ones([3], (Kind::Int64, Device::Cpu))];
    let wrong_kind = AdamWTensors {
        params: &ints,
        grads: &ints,
        exp_avgs: &ints,
        exp_avg_sqs: &ints,
        steps: &s.steps,
    };
    let err = fused_adamw(wrong_kind, step(0.1, None)).unwrap_err();
    assert!(matches!(err, Error::Torch(_)), "{err}");
    let err = contiguous_channels_last(&Tensor::ones([2, 3], F32)).unwrap_err();
    assert!(matches!(err, Error::Torch(_)), "{err}");
}

#[test]
fn non_finite_values_are_found_on_the_device() {
    let found = Tensor::zeros([1], F32);
    let good = [Tensor::ones([3, 3], F32), Tensor::ones([100], F32) * -2.0];
    found_non_finite(&good, &found).unwrap();
    assert_eq!(found.double_value(&[0]), 0.0);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let t = Tensor::ones([10], F32);
        let _ = t.narrow(0, 4, 1).fill_(bad);
        found_non_finite(&[good[0].shallow_clone(), t], &found).unwrap();
        assert_eq!(found.double_value(&[0]), 1.0, "{bad}");
    }
    found_non_finite(&[], &found).unwrap();
    assert_eq!(found.double_value(&[0]), 0.0);

    // GradScaler's unscale: values divided by the scale, overflow flagged.
    let grads = [Tensor::ones([4], F32) * 8.0, Tensor::ones([2], F32) * 4.0];
    let (found, inv) = (Tensor::zeros([1], F32), Tensor::from_slice(&[0.25f32]));
    non_finite_check_and_unscale(&grads, &found, &inv).unwrap();
    assert_eq!(grads[0].double_value(&[0]), 2.0);
    assert_eq!(grads[1].double_value(&[1]), 1.0);
    assert_eq!(found.double_value(&[0]), 0.0);
    let _ = grads[1].narrow(0, 0, 1).fill_(f64::INFINITY);
    non_finite_check_and_unscale(&grads, &found, &inv).unwrap();
    assert_eq!(found.double_value(&[0]), 1.0);
}

#[test]
fn channels_last_has_nhwc_strides_and_the_same_values() {
    let x = Tensor::randn([2, 3, 4, 5], F32);
    assert!(!is_channels_last(&x).unwrap());
    let y = contiguous_channels_last(&x).unwrap();
    assert_eq!(y.stride(), [60, 1, 15, 3]);
    assert!(is_channels_last(&y).unwrap());
    assert_eq!(max_diff(&x, &y), 0.0);
}

#[test]
fn autocast_state_is_read_and_restored() {
    let a = Tensor::ones([4, 4], F32);
    let dev = AutocastDevice::Cpu;
    let (was_on, was_dtype) = (
        autocast::is_enabled(dev).unwrap(),
        autocast::dtype(dev).unwrap(),
    );
    assert!(!was_on);
    autocast::set_dtype(dev, AutocastDtype::Half).unwrap();
    autocast::set_enabled(dev, true).unwrap();
    assert_eq!(autocast::increment_nesting().unwrap(), 1);
    assert_eq!(a.matmul(&a).kind(), AutocastDtype::Half.kind());
    assert_eq!(autocast::dtype(dev).unwrap(), AutocastDtype::Half);
    assert_eq!(autocast::decrement_nesting().unwrap(), 0);
    autocast::clear_cache().unwrap();
    autocast::set_enabled(dev, was_on).unwrap();
    autocast::set_dtype(dev, was_dtype).unwrap();
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
    assert!(autocast::is_cache_enabled().unwrap());
    autocast::set_cache_enabled(false).unwrap();
    assert!(!autocast::is_cache_enabled().unwrap());
    autocast::set_cache_enabled(true).unwrap();
}

#[test]
fn cuda_graphs_replay_what_they_captured() {
    if cuda_device_count() == 0 {
        // The error a caller sees without a GPU (or without CUDA compiled).
        assert!(CudaGraph::new(0).is_err());
        eprintln!(
            "skipped: no CUDA device (CUDA compiled: {})",
            camshaft_aten::CUDA_COMPILED
        );
        return;
    }
    let dev = Device::Cuda(0);
    let x = Tensor::zeros([1024], (Kind::Float, dev));
    let y = Tensor::zeros([1024], (Kind::Float, dev));
    // Warm up outside the capture (lazy initialisation must not be captured).
    y.shallow_clone().copy_(&(&x * 2.0 + 1.0));
    let mut graph = CudaGraph::new(0).unwrap();
    graph
        .capture(|| y.shallow_clone().copy_(&(&x * 2.0 + 1.0)))
        .unwrap();
    for v in [1.0, 5.0] {
        let _ = x.shallow_clone().fill_(v);
        graph.replay().unwrap();
        camshaft_aten::cuda_synchronize(0).unwrap();
        assert_eq!(y.double_value(&[7]), 2.0 * v + 1.0);
    }
}

/// A 1×1 convolution's gradient comes back channels-last while its parameter
/// is contiguous: the strides differ only on dimensions of length 1, where
/// they mean nothing, so the step must run (and equal the contiguous one).
/// Strides that really differ (a transposed gradient) stay an error.
#[test]
fn strides_of_length_one_dimensions_do_not_matter() {
    let s = State::new(&[&[8, 4, 1, 1]]);
    let t = s.copy();
    let grad = Tensor::randn([8, 4, 1, 1], F32);
    // The strides autograd gives it (libtorch's own channels-last conversion
    // keeps a tensor it already counts as channels-last).
    let nhwc = grad.as_strided([8, 4, 1, 1], [4, 1, 4, 4], None);
    assert_ne!(nhwc.stride(), grad.stride(), "the test needs other strides");
    fused_adamw(s.tensors(std::slice::from_ref(&nhwc)), step(0.1, None)).unwrap();
    fused_adamw(t.tensors(std::slice::from_ref(&grad)), step(0.1, None)).unwrap();
    assert!(s.params[0].equal(&t.params[0]));

    let square = State::new(&[&[3, 3]]);
    let transposed = Tensor::randn([3, 3], F32).t_();
    let err = fused_adamw(
        square.tensors(std::slice::from_ref(&transposed)),
        step(0.1, None),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Torch(_)), "{err}");
}

/// A packed convolution is the convolution: 3×3 with padding, a strided
/// 1×1 without bias, a grouped one, on NCHW and channels-last inputs.
#[test]
fn packed_convolutions_equal_conv2d() {
    let geometry = |padding: i64, stride: i64, groups: i64| Conv2dGeometry {
        padding: [padding; 2],
        stride: [stride; 2],
        dilation: [1, 1],
        groups,
    };
    let cases: [(&[i64], Conv2dGeometry, bool); 3] = [
        (&[16, 8, 3, 3], geometry(1, 1, 1), true),
        (&[16, 8, 1, 1], geometry(0, 2, 1), false),
        (&[16, 4, 3, 3], geometry(1, 2, 2), true),
    ];
    for (shape, g, with_bias) in cases {
        let w = Tensor::randn(shape, F32);
        let b = with_bias.then(|| Tensor::randn([shape[0]], F32));
        let packed = PackedConv2d::new(&w, b.as_ref(), g).unwrap();
        let x = Tensor::randn([2, 8, 13, 13], F32);
        let want = x.conv2d(&w, b.as_ref(), g.stride, g.padding, g.dilation, g.groups);
        for input in [x.shallow_clone(), contiguous_channels_last(&x).unwrap()] {
            let got = packed.forward(&input).unwrap();
            assert_eq!(got.size(), want.size());
            let err = max_diff(&got, &want);
            assert!(err < 1e-4, "{shape:?} {g:?}: {err}");
        }
    }
}

#[test]
fn packed_convolutions_refuse_what_they_cannot_run() {
    let w = Tensor::randn([4, 3, 3, 3], F32);
    let geometry = Conv2dGeometry {
        padding: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let bad_bias = Tensor::zeros([5], F32);
    assert!(PackedConv2d::new(&w, Some(&bad_bias), geometry).is_err());
    assert!(PackedConv2d::new(&w.to_kind(Kind::Double), None, geometry).is_err());
    let packed = PackedConv2d::new(&w, None, geometry).unwrap();
    // Wrong channel count: libtorch's message comes back, no crash.
    let err = packed
        .forward(&Tensor::zeros([1, 5, 8, 8], F32))
        .unwrap_err();
    assert!(matches!(err, Error::Torch(_)), "{err}");
    assert!(packed.forward(&Tensor::zeros([5, 8, 8], F32)).is_err());
}
