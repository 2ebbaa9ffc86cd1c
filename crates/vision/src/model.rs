//! The lecture's models as body + head, with torchvision's parameter names.
//!
//! | arch       | body output (input S)            | parameter names            |
//! |------------|----------------------------------|----------------------------|
//! | `cnn`      | Conv2d(3,128,5) → ReLU → MaxPool2d(2): 128 × (S−4)/2 × (S−4)/2 | `0.weight`, `0.bias` |
//! | `resnet18` | torchvision ResNet18 to `layer4`: 512 × S/32 × S/32 | `conv1.weight`, `layer1.0.bn1.running_mean`, ... |
//! | `resnet34` | torchvision ResNet34 to `layer4`  | as above                   |
//!
//! Heads:
//! - `linear`: the CNN's `Flatten → Linear(128·m², n)` (named `4.*`, as in the
//!   lecture's `nn.Sequential`), or torchvision's `AdaptiveAvgPool2d(1) → fc`
//!   with bias for a ResNet (named `fc.*`).
//! - `cam`: `AdaptiveAvgPool2d(1) → Flatten → Linear(C, n, bias=False)` (named
//!   `fc.weight`, so a torchvision ResNet whose `fc` has no bias imports as-is).
//! - `fastai`: fastai's `create_head`: `AdaptiveConcatPool2d` (max then avg) →
//!   BatchNorm1d(2C) → Dropout(.25) → Linear(2C,512,no bias) → ReLU →
//!   BatchNorm1d(512) → Dropout(.5) → Linear(512,n,no bias), named `head.2`,
//!   `head.4`, `head.6`, `head.8` after fastai's layer indices.

use std::collections::BTreeMap;
use std::fmt;

use tch::nn;
use tch::{Device, Kind, Tensor};

/// The vocabulary's model types (`camshaft-spec`): the body, the head, the
/// normalisation and the spec a model is built from.
pub use camshaft_spec::{Arch, Head, IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Normalization};

use camshaft_aten::{Conv2dGeometry, PackedConv2d};

use crate::{Error, Precision, Result};

fn torch_default_init(fan_in: i64) -> nn::Init {
    // PyTorch's Conv/Linear default (kaiming_uniform with a = √5): U(±1/√fan_in).
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A ResNet convolution: tch's layer, its geometry and, for CPU inference,
/// its weight packed for oneDNN ([`Model::pack_convolutions`]).
#[derive(Debug)]
struct Conv {
    layer: nn::Conv2D,
    geometry: Conv2dGeometry,
    packed: Option<PackedConv2d>,
}

impl Conv {
    /// The convolution of `xs`: the packed kernel where there is one and
    /// no gradient is asked of the result (it has no backward), else
    /// tch's. The packed kernel refuses only inputs it was not made for
    /// (another dtype or device), which tch's then runs.
    fn apply(&self, xs: &Tensor) -> Tensor {
        if let Some(packed) = &self.packed
            && !xs.requires_grad()
            && let Ok(ys) = packed.forward(xs)
        {
            return ys;
        }
        xs.apply(&self.layer)
    }

    /// Pack the current weight (and bias) for oneDNN.
    fn pack(&mut self) -> Result<()> {
        let bias = self.layer.bs.as_ref();
        self.packed = Some(PackedConv2d::new(&self.layer.ws, bias, self.geometry)?);
        Ok(())
    }
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> Conv {
    // torchvision's ResNet init: kaiming normal, fan_out, ReLU gain.
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    };
    Conv {
        layer: nn::conv2d(p, c_in, c_out, k, cfg),
        geometry: Conv2dGeometry {
            padding: [padding; 2],
            stride: [stride; 2],
            dilation: [1, 1],
            groups: 1,
        },
        packed: None,
    }
}

fn batch_norm(p: nn::Path, n: i64, bn_prefixes: &mut Vec<String>, two_d: bool) -> nn::BatchNorm {
    bn_prefixes.push(p.components().collect::<Vec<_>>().join("."));
    let cfg = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    if two_d {
        nn::batch_norm2d(p, n, cfg)
    } else {
        nn::batch_norm1d(p, n, cfg)
    }
}

#[derive(Debug)]
struct BasicBlock {
    conv1: Conv,
    bn1: nn::BatchNorm,
    conv2: Conv,
    bn2: nn::BatchNorm,
    downsample: Option<(Conv, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64, bns: &mut Vec<String>) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            (
                conv(&p / "downsample" / "0", c_in, c_out, 1, stride, 0),
                batch_norm(&p / "downsample" / "1", c_out, bns, true),
            )
        });
        BasicBlock {
            conv1: conv(&p / "conv1", c_in, c_out, 3, stride, 1),
            bn1: batch_norm(&p / "bn1", c_out, bns, true),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1, 1),
            bn2: batch_norm(&p / "bn2", c_out, bns, true),
            downsample,
        }
    }

    /// In-place ReLU and residual add where autograd allows, as torchvision
    /// does (`ReLU(inplace=True)`, `out += identity`): fewer big temporaries.
    fn forward(&self, xs: &Tensor, train: bool, folded: bool) -> Tensor {
        let mut ys = batch_norm_t(self.conv1.apply(xs), &self.bn1, train, folded);
        let _ = ys.relu_();
        let mut ys = batch_norm_t(self.conv2.apply(&ys), &self.bn2, train, folded);
        match &self.downsample {
            Some((c, bn)) => ys += batch_norm_t(c.apply(xs), bn, train, folded),
            None => ys += xs,
        }
        let _ = ys.relu_();
        ys
    }
}

/// `xs` through `bn`, or as it is when the BatchNorm was folded into the
/// convolution before it ([`Model::fold_batch_norm`]).
fn batch_norm_t(xs: Tensor, bn: &nn::BatchNorm, train: bool, folded: bool) -> Tensor {
    if folded { xs } else { xs.apply_t(bn, train) }
}

/// BatchNorm's epsilon (tch's and PyTorch's default, which [`batch_norm`]
/// keeps).
const BN_EPS: f64 = 1e-5;

/// Fold inference-mode `bn` into `conv` (which it follows): the weight
/// scaled per output channel by γ/√(σ²+ε), a bias β − μ·γ/√(σ²+ε) (plus the
/// scaled old bias) registered as `<path>.bias`. The weight keeps its
/// identity and layout, so later conversions (channels-last, bfloat16)
/// reach it and the new bias alike.
fn fold_into_conv(path: nn::Path, conv: &mut nn::Conv2D, bn: &nn::BatchNorm) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let var = bn.running_var.f_to_kind(Kind::Double)?;
        let mut scale = var.f_add_scalar(BN_EPS)?.f_rsqrt()?;
        if let Some(gamma) = &bn.ws {
            scale = scale.f_mul(&gamma.f_to_kind(Kind::Double)?)?;
        }
        let mean = bn.running_mean.f_to_kind(Kind::Double)?;
        let mut bias = mean.f_neg()?.f_mul(&scale)?;
        if let Some(beta) = &bn.bs {
            bias = bias.f_add(&beta.f_to_kind(Kind::Double)?)?;
        }
        if let Some(old) = &conv.bs {
            bias = bias.f_add(&old.f_to_kind(Kind::Double)?.f_mul(&scale)?)?;
        }
        let kind = conv.ws.kind();
        let weight = conv
            .ws
            .f_to_kind(Kind::Double)?
            .f_mul(&scale.f_view([-1, 1, 1, 1])?)?
            .f_to_kind(kind)?;
        conv.ws.shallow_clone().f_copy_(&weight)?;
        let bias = bias.f_to_kind(kind)?;
        conv.bs = Some(match &conv.bs {
            Some(old) => {
                old.shallow_clone().f_copy_(&bias)?;
                old.shallow_clone()
            }
            None => path.f_var_copy("bias", &bias)?,
        });
        Ok(())
    })
}

#[derive(Debug)]
enum Body {
    Cnn(nn::Conv2D),
    Resnet {
        conv1: Box<Conv>,
        bn1: nn::BatchNorm,
        layers: Vec<Vec<BasicBlock>>,
    },
}

#[derive(Debug)]
enum HeadLayers {
    /// Flatten then linear (the lecture's CNN).
    Flatten(nn::Linear),
    /// Global average pool then linear (torchvision `fc`, or the CAM head).
    Pooled(nn::Linear),
    /// fastai's `create_head`.
    Fastai(Box<FastaiHead>),
}

#[derive(Debug)]
struct FastaiHead {
    bn1: nn::BatchNorm,
    lin1: nn::Linear,
    bn2: nn::BatchNorm,
    lin2: nn::Linear,
}

/// A classifier: body + head in one `VarStore`, so the body can be frozen and
/// the whole saved or loaded by torchvision-compatible names.
pub struct Model {
    spec: ModelSpec,
    vs: nn::VarStore,
    body: Body,
    head: HeadLayers,
    bn_prefixes: Vec<String>,
    /// The dtype the body runs in, when not float32 (see
    /// [`Model::body_in`]): then the model is for inference only.
    body_kind: Option<Kind>,
    /// The body's BatchNorms are folded into its convolutions
    /// ([`Model::fold_batch_norm`]): for inference only.
    folded: bool,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec)
            .field("device", &self.vs.device())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Build a freshly initialised model on `device` (PyTorch's and
    /// torchvision's initialisations; fastai's kaiming-normal for its head).
    pub fn new(spec: ModelSpec, device: Device) -> Result<Self> {
        spec.validate().map_err(|e| match e {
            camshaft_spec::Error::Spec(reason) => Error::Config(reason),
            other => Error::Config(other.to_string()),
        })?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut bns = Vec::new();
        let n = spec.num_classes() as i64;
        let c = spec.feature_channels();
        let body = match spec.arch {
            Arch::Cnn => {
                let fan_in = 3 * 5 * 5;
                let cfg = nn::ConvConfig {
                    ws_init: torch_default_init(fan_in),
                    bs_init: torch_default_init(fan_in),
                    ..Default::default()
                };
                Body::Cnn(nn::conv2d(&root / "0", 3, 128, 5, cfg))
            }
            Arch::Resnet18 | Arch::Resnet34 => {
                let blocks: [i64; 4] = if spec.arch == Arch::Resnet18 {
                    [2, 2, 2, 2]
                } else {
                    [3, 4, 6, 3]
                };
                let conv1 = Box::new(conv(&root / "conv1", 3, 64, 7, 2, 3));
                let bn1 = batch_norm(&root / "bn1", 64, &mut bns, true);
                let mut layers = Vec::new();
                let mut c_in = 64;
                for (i, (&count, c_out)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
                    let p = &root / format!("layer{}", i + 1);
                    let stride = if i == 0 { 1 } else { 2 };
                    let mut layer = vec![BasicBlock::new(&p / "0", c_in, c_out, stride, &mut bns)];
                    for j in 1..count {
                        layer.push(BasicBlock::new(&p / j, c_out, c_out, 1, &mut bns));
                    }
                    layers.push(layer);
                    c_in = c_out;
                }
                Body::Resnet { conv1, bn1, layers }
            }
        };
        let head = match (spec.head, spec.arch) {
            (Head::Linear, Arch::Cnn) => {
                let m = spec.feature_size();
                let fan_in = c * m * m;
                let cfg = nn::LinearConfig {
                    ws_init: torch_default_init(fan_in),
                    bs_init: Some(torch_default_init(fan_in)),
                    bias: true,
                };
                HeadLayers::Flatten(nn::linear(&root / "4", fan_in, n, cfg))
            }
            (Head::Linear | Head::Cam, _) => {
                let bias = spec.head == Head::Linear;
                let cfg = nn::LinearConfig {
                    ws_init: torch_default_init(c),
                    bs_init: bias.then(|| torch_default_init(c)),
                    bias,
                };
                HeadLayers::Pooled(nn::linear(&root / "fc", c, n, cfg))
            }
            (Head::Fastai, _) => {
                let p = &root / "head";
                let cfg = nn::LinearConfig {
                    ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
                    bs_init: None,
                    bias: false,
                };
                HeadLayers::Fastai(Box::new(FastaiHead {
                    bn1: batch_norm(&p / "2", 2 * c, &mut bns, false),
                    lin1: nn::linear(&p / "4", 2 * c, 512, cfg),
                    bn2: batch_norm(&p / "6", 512, &mut bns, false),
                    lin2: nn::linear(&p / "8", 512, n, cfg),
                }))
            }
        };
        Ok(Model {
            spec,
            vs,
            body,
            head,
            bn_prefixes: bns,
            body_kind: None,
            folded: false,
        })
    }

    /// The spec this model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The variables (parameters and BatchNorm buffers).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable access to the variables (device moves, precision changes).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The body's last feature map, `(N, C, h, w)`.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.last_layer();
        if let Some(kind) = self.body_kind {
            return self
                .body_stages(&xs.to_kind(kind), train, 0, last, true)
                .to_kind(Kind::Float);
        }
        self.body_stages(xs, train, 0, last, true)
    }

    /// The names of the body's layers a map can be taken at
    /// ([`ModelSpec::layer_names`]).
    pub fn layer_names(&self) -> &'static [&'static str] {
        self.spec.layer_names()
    }

    /// The index (into [`Model::layer_names`]) of the body's last layer.
    pub fn last_layer(&self) -> usize {
        self.layer_names().len() - 1
    }

    /// The index of layer `name` (see [`Model::layer_names`]), or an
    /// [`Error::Input`] naming the valid ones.
    pub fn layer_index(&self, name: &str) -> Result<usize> {
        let names = self.layer_names();
        names.iter().position(|&n| n == name).ok_or_else(|| {
            Error::Input(format!(
                "unknown layer {name:?} for a {} body (expected one of: {})",
                self.spec.arch,
                names.join(", ")
            ))
        })
    }

    /// The feature maps `(N, C, h, w)` after each of `layers` (indices into
    /// [`Model::layer_names`], any order), from one pass of the body up to
    /// the deepest of them, in float32; in the order asked.
    pub fn features_at(&self, xs: &Tensor, layers: &[usize], train: bool) -> Result<Vec<Tensor>> {
        let last = self.last_layer();
        if let Some(&bad) = layers.iter().find(|&&l| l > last) {
            return Err(Error::Input(format!("layer index {bad} is past {last}")));
        }
        let deepest = layers.iter().copied().max().unwrap_or(last);
        let mut x = match self.body_kind {
            Some(kind) => xs.to_kind(kind),
            None => xs.shallow_clone(),
        };
        let mut kept: Vec<Option<Tensor>> = layers.iter().map(|_| None).collect();
        for stage in 0..=deepest {
            x = self.body_stages(&x, train, stage, stage, true);
            for (slot, _) in kept.iter_mut().zip(layers).filter(|(_, l)| **l == stage) {
                *slot = Some(x.to_kind(Kind::Float));
            }
        }
        Ok(kept.into_iter().flatten().collect())
    }

    /// The logits `(N, classes)` from the feature map after layer `layer`
    /// (float32, as [`Model::features_at`] gives it): the rest of the body,
    /// in the body's precision, then the head. Differentiable (no in-place
    /// operation touches what autograd needs), so gradient methods can
    /// differentiate the logits at any layer.
    pub fn forward_from(&self, features: &Tensor, layer: usize, train: bool) -> Tensor {
        let last = self.last_layer();
        if layer >= last {
            return self.head(features, train);
        }
        let body = match self.body_kind {
            Some(kind) => self
                .body_stages(&features.to_kind(kind), train, layer + 1, last, false)
                .to_kind(Kind::Float),
            None => self.body_stages(features, train, layer + 1, last, false),
        };
        self.head(&body, train)
    }

    /// Stages `from..=to` of the body, numbered as [`Model::layer_names`]
    /// (a ResNet's stem runs with `layer1`, stage 0; the CNN's stages are
    /// its three modules). `in_place`
    /// lets the CNN's ReLU run in place (not on a tensor autograd needs).
    fn body_stages(
        &self,
        xs: &Tensor,
        train: bool,
        from: usize,
        to: usize,
        in_place: bool,
    ) -> Tensor {
        let mut x = xs.shallow_clone();
        match &self.body {
            Body::Cnn(c) => {
                for stage in from..=to {
                    x = match stage {
                        0 => x.apply(c),
                        1 if in_place => {
                            // In place: the convolution's backward needs its
                            // input, not its output.
                            let mut y = x;
                            let _ = y.relu_();
                            y
                        }
                        1 => x.relu(),
                        _ => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
                    };
                }
            }
            Body::Resnet { conv1, bn1, layers } => {
                for stage in from..=to {
                    if stage == 0 {
                        x = batch_norm_t(conv1.apply(&x), bn1, train, self.folded)
                            .relu()
                            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
                    }
                    for block in layers.get(stage).into_iter().flatten() {
                        x = block.forward(&x, train, self.folded);
                    }
                }
            }
        }
        x
    }

    /// The head applied to a feature map: logits `(N, classes)`.
    pub fn head(&self, features: &Tensor, train: bool) -> Tensor {
        match &self.head {
            HeadLayers::Flatten(fc) => features.flatten(1, -1).apply(fc),
            HeadLayers::Pooled(fc) => features
                .mean_dim(&[-2i64, -1][..], false, Kind::Float)
                .apply(fc),
            HeadLayers::Fastai(h) => {
                let FastaiHead {
                    bn1,
                    lin1,
                    bn2,
                    lin2,
                } = &**h;
                let mx = features.amax(&[-2i64, -1][..], false);
                let avg = features.mean_dim(&[-2i64, -1][..], false, Kind::Float);
                Tensor::cat(&[mx, avg], 1)
                    .apply_t(bn1, train)
                    .dropout(0.25, train)
                    .apply(lin1)
                    .relu()
                    .apply_t(bn2, train)
                    .dropout(0.5, train)
                    .apply(lin2)
            }
        }
    }

    /// Logits `(N, classes)` for a normalised batch `(N, 3, S, S)`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.features(xs, train), train)
    }

    /// The linear map of a pooled head, `(classes, C)`, and its bias: what CAM
    /// applies at every spatial position. `None` for the flatten and fastai heads.
    pub fn pooled_linear(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        match &self.head {
            HeadLayers::Pooled(fc) => Some((&fc.ws, fc.bs.as_ref())),
            _ => None,
        }
    }

    /// Whether `name` (a variable name) belongs to a BatchNorm layer.
    pub fn is_batch_norm(&self, name: &str) -> bool {
        self.bn_prefixes.iter().any(|p| {
            name.len() > p.len() && name.starts_with(p.as_str()) && name.as_bytes()[p.len()] == b'.'
        })
    }

    /// Whether `name` is a head variable (the part replaced for a new task).
    pub fn is_head(&self, name: &str) -> bool {
        match &self.head {
            HeadLayers::Flatten(_) => name.starts_with("4."),
            HeadLayers::Pooled(_) => name.starts_with("fc."),
            HeadLayers::Fastai(_) => name.starts_with("head."),
        }
    }

    /// The trainable parameters split into fastai's layer groups, by name:
    /// ResNet: `[stem, layer1, layer2]`, `[layer3, layer4]`, head
    /// (fastai's `_resnet_split`); CNN: body, head. Discriminative learning
    /// rates are spread over these groups and freezing keeps only the last.
    pub fn param_groups(&self) -> Vec<Vec<(String, Tensor)>> {
        let vars: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        let n_groups = match self.spec.arch {
            Arch::Cnn => 2,
            _ => 3,
        };
        let mut groups: Vec<Vec<(String, Tensor)>> = (0..n_groups).map(|_| Vec::new()).collect();
        for (name, t) in vars {
            if is_buffer(&name) {
                continue;
            }
            let g = if self.is_head(&name) {
                n_groups - 1
            } else if name.starts_with("layer3.") || name.starts_with("layer4.") {
                1
            } else {
                0
            };
            groups[g].push((name, t));
        }
        groups
    }

    /// Freeze every group but the head, keeping BatchNorm affine parameters
    /// trainable (fastai's `train_bn=True`), or unfreeze everything.
    pub fn set_frozen(&self, frozen: bool) {
        let groups = self.param_groups();
        let last = groups.len() - 1;
        for (i, group) in groups.into_iter().enumerate() {
            for (name, t) in group {
                let trainable = !frozen || i == last || self.is_batch_norm(&name);
                let _ = t.set_requires_grad(trainable);
            }
        }
    }

    /// All variables by name, parameters and buffers, sorted.
    pub fn named_variables(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// For inference only: runs the body in `precision` (bfloat16 or
    /// float16; float32 leaves the model as it is): every variable of the
    /// body (convolutions, BatchNorm parameters and statistics) is converted
    /// in place, as `body.to(torch.bfloat16)` does; the head stays float32,
    /// and [`Model::features`] takes and returns float32, so callers see no
    /// difference but the rounding. On a CPU with bfloat16 instructions a
    /// ResNet34 body then takes about half the time, its features ~1% (of
    /// their largest value) away from float32's. The model can then be
    /// neither trained (use [`crate::precision::Autocast`], which keeps
    /// float32 master weights) nor saved.
    pub fn body_in(&mut self, precision: Precision) -> Result<()> {
        let Some(kind) = crate::precision::autocast_kind(precision) else {
            return Ok(());
        };
        if self.is_packed() {
            return Err(Error::Config(
                "convert the body's precision before packing its convolutions".into(),
            ));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, v) in self.vs.variables() {
                if !self.is_head(&name) && v.is_floating_point() {
                    // `to_kind` keeps the layout (channels-last stays so).
                    v.shallow_clone().f_set_data(&v.f_to_kind(kind)?)?;
                }
            }
            Ok(())
        })?;
        self.body_kind = Some(kind);
        Ok(())
    }

    /// Whether [`Model::body_in`] or [`Model::fold_batch_norm`] changed
    /// this model for inference (then it can be neither trained nor saved).
    pub fn is_inference_only(&self) -> bool {
        self.body_kind.is_some() || self.folded
    }

    /// For inference only: fold every BatchNorm of the body into the
    /// convolution it follows, as serving stacks do (`torch.fx`'s
    /// `fuse_conv_bn_eval`), computed in float64 from the running
    /// statistics: the body then runs one kernel fewer per convolution,
    /// and its features and logits equal the unfolded model's in eval mode
    /// up to rounding (checked to 1e-4 by the tests, CAM maps included).
    /// The head, and the small CNN, which has no BatchNorm, are left as
    /// they are. Call it before [`Model::to_channels_last`] and
    /// [`Model::body_in`] (which then convert the folded weights and the
    /// new biases too); the model can afterwards be neither trained nor
    /// saved, and `forward_t(.., true)` no longer normalises by batch.
    pub fn fold_batch_norm(&mut self) -> Result<()> {
        if self.body_kind.is_some() {
            return Err(Error::Config(
                "fold BatchNorm before converting the body's precision (Model::body_in)".into(),
            ));
        }
        if self.folded {
            return Ok(());
        }
        let root = self.vs.root();
        if let Body::Resnet { conv1, bn1, layers } = &mut self.body {
            fold_into_conv(&root / "conv1", &mut conv1.layer, bn1)?;
            for (i, layer) in layers.iter_mut().enumerate() {
                for (j, block) in layer.iter_mut().enumerate() {
                    let p = &root / format!("layer{}", i + 1) / j;
                    fold_into_conv(&p / "conv1", &mut block.conv1.layer, &block.bn1)?;
                    fold_into_conv(&p / "conv2", &mut block.conv2.layer, &block.bn2)?;
                    if let Some((conv, bn)) = &mut block.downsample {
                        fold_into_conv(&p / "downsample" / "0", &mut conv.layer, bn)?;
                    }
                }
            }
        }
        self.folded = true;
        Ok(())
    }

    /// Whether [`Model::pack_convolutions`] packed this model's
    /// convolutions.
    pub fn is_packed(&self) -> bool {
        matches!(&self.body, Body::Resnet { conv1, .. } if conv1.packed.is_some())
    }

    /// Whether [`Model::fold_batch_norm`] folded this model's BatchNorms.
    pub fn is_folded(&self) -> bool {
        self.folded
    }

    /// For float32 inference on the CPU, after [`Model::fold_batch_norm`]:
    /// reorder every convolution weight of a ResNet body once into
    /// oneDNN's blocked layout ([`PackedConv2d`], what PyTorch Inductor's
    /// CPU freezing does), so passes that ask no gradient of the body skip
    /// the reorder eager PyTorch pays on every call: a ResNet34 body at
    /// 224 px, one image, 2 threads, about 1.17× faster than folded and
    /// channels-last alone, its features within 1e-5 (relative) of the
    /// unpacked ones. Gradient methods still differentiate through tch's
    /// convolutions (a packed one has no backward). The packed weights are
    /// copies: weights changed afterwards are not seen, which is why only a
    /// folded (inference-only) model packs. Returns the convolutions
    /// packed (none for the small CNN).
    pub fn pack_convolutions(&mut self) -> Result<usize> {
        if !self.folded || self.body_kind.is_some() || self.device() != Device::Cpu {
            return Err(Error::Config(
                "only a folded float32 body on the CPU packs its convolutions (fold_batch_norm first)"
                    .into(),
            ));
        }
        let mut packed = 0;
        if let Body::Resnet { conv1, layers, .. } = &mut self.body {
            conv1.pack()?;
            packed += 1;
            for block in layers.iter_mut().flatten() {
                block.conv1.pack()?;
                block.conv2.pack()?;
                packed += 2;
                if let Some((conv, _)) = &mut block.downsample {
                    conv.pack()?;
                    packed += 1;
                }
            }
        }
        Ok(packed)
    }

    /// Store every 4-D weight channels-last (NHWC strides), like
    /// `model.to(memory_format=torch.channels_last)`: convolutions given a
    /// channels-last input then run NHWC kernels (tensor cores on GPUs,
    /// oneDNN's blocked formats on CPUs). The values do not change, and
    /// neither do the variables' identities (optimiser state made after
    /// this follows the layout).
    pub fn to_channels_last(&mut self) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (_, mut v) in self.vs.variables() {
                if v.dim() == 4 {
                    let nhwc = channels_last(&v)?;
                    v.f_set_data(&nhwc)?;
                }
            }
            Ok(())
        })
    }
}

/// `x` (4-D) with channels-last strides: `x.contiguous(memory_format=
/// torch.channels_last)`, through `camshaft-aten` (tch has no
/// memory-format argument).
pub fn channels_last(x: &Tensor) -> Result<Tensor> {
    Ok(camshaft_aten::contiguous_channels_last(x)?)
}

/// Whether 4-D `x` has channels-last strides.
pub fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    size.len() == 4 && {
        let (c, h, w) = (size[1], size[2], size[3]);
        stride[1] == 1 && stride[3] == c && stride[2] == c * w && stride[0] == c * h * w
    }
}

/// BatchNorm running statistics (not trained by gradients).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(arch: Arch, head: Head, size: u32) -> ModelSpec {
        ModelSpec {
            arch,
            head,
            class_names: (0..10).map(|i| format!("c{i}")).collect(),
            input_size: size,
            normalization: Normalization::None,
        }
    }

    #[test]
    fn lecture_cnn_has_the_lecture_shapes() {
        let m = Model::new(spec(Arch::Cnn, Head::Linear, 32), Device::Cpu).unwrap();
        let vars = m.named_variables();
        assert_eq!(vars["0.weight"].size(), [128, 3, 5, 5]);
        assert_eq!(vars["4.weight"].size(), [10, 25088]);
        let y = m.forward_t(
            &Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(y.size(), [2, 10]);
    }

    #[test]
    fn heads_have_their_shapes_and_names() {
        let cam = Model::new(spec(Arch::Resnet18, Head::Cam, 64), Device::Cpu).unwrap();
        let vars = cam.named_variables();
        assert_eq!(vars["fc.weight"].size(), [10, 512]);
        assert!(!vars.contains_key("fc.bias"));
        let fastai = Model::new(spec(Arch::Resnet34, Head::Fastai, 64), Device::Cpu).unwrap();
        let vars = fastai.named_variables();
        assert_eq!(vars["head.4.weight"].size(), [512, 1024]);
        assert_eq!(vars["head.8.weight"].size(), [10, 512]);
        assert!(vars.contains_key("head.2.running_var"));
        assert!(vars.contains_key("layer3.5.conv2.weight"));
        let x = Tensor::zeros([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(fastai.features(&x, false).size(), [2, 512, 2, 2]);
        assert_eq!(fastai.forward_t(&x, false).size(), [2, 10]);
    }

    #[test]
    fn freezing_keeps_batch_norm_and_head_trainable() {
        let m = Model::new(spec(Arch::Resnet18, Head::Fastai, 64), Device::Cpu).unwrap();
        m.set_frozen(true);
        let vars = m.named_variables();
        assert!(!vars["conv1.weight"].requires_grad());
        assert!(!vars["layer4.1.conv2.weight"].requires_grad());
        assert!(vars["layer4.1.bn2.weight"].requires_grad());
        assert!(vars["head.8.weight"].requires_grad());
        m.set_frozen(false);
        assert!(m.named_variables()["conv1.weight"].requires_grad());
        let groups = m.param_groups();
        assert_eq!(groups.len(), 3);
        assert!(
            groups[1]
                .iter()
                .all(|(n, _)| n.starts_with("layer3") || n.starts_with("layer4"))
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(Arch::Resnet18, Head::Cam, 16);
        assert!(Model::new(s.clone(), Device::Cpu).is_err());
        s.input_size = 64;
        s.class_names.truncate(1);
        assert!(Model::new(s, Device::Cpu).is_err());
        assert!("resnet50".parse::<Arch>().is_err());
        assert_eq!("CAM".parse::<Head>().unwrap(), Head::Cam);
    }
}
