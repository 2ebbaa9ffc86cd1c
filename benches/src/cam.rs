//! `cam`: Class Activation Maps of a batch with a ResNet34 CAM-head model.
//!
//! Ours: [`cam_all_classes`] (body forward, then the lecture's
//! `einsum('cb,abij->acij', W, feats)` and the head's logits) on a random
//! `(batch, 3, size, size)` input under `no_grad`, a freshly initialised
//! ResNet34 with a 2-class CAM head. PyTorch: `reference/cam.py`, the same in
//! eval mode under `torch.no_grad()`. One timed repeat is one batch.

use std::hint::black_box;

use camshaft_vision::cam::cam_all_classes;
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization};
use clap::Parser;
use tch::{Device, Kind, Tensor};

use crate::measure::rates;
use crate::reference::script_call;

/// Options of `cam`.
#[derive(Clone, Debug, Parser)]
pub struct CamArgs {
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    /// Square input side.
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// Untimed batches first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed batches; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

impl CamArgs {
    /// The reference script's name and arguments.
    pub fn reference_args(&self, threads: i32) -> (&'static str, Vec<String>) {
        script_call(
            "cam.py",
            [
                ("--batch", self.batch.to_string()),
                ("--size", self.size.to_string()),
                ("--warmup", self.warmup.to_string()),
                ("--repeats", self.repeats.to_string()),
                ("--threads", threads.to_string()),
            ],
        )
    }
}

/// Our images per second, one sample per batch.
pub fn ours(args: &CamArgs, device: Device) -> anyhow::Result<Vec<f64>> {
    tch::manual_seed(0);
    let spec = ModelSpec {
        arch: Arch::Resnet34,
        head: Head::Cam,
        class_names: vec!["cat".into(), "dog".into()],
        input_size: args.size,
        normalization: Normalization::Imagenet,
    };
    let model = Model::new(spec, device)?;
    let size = i64::from(args.size);
    let x = Tensor::randn([args.batch, 3, size, size], (Kind::Float, device));
    let batch = usize::try_from(args.batch)?;
    rates(args.warmup, args.repeats, || {
        let (logits, maps) = tch::no_grad(|| cam_all_classes(&model, &x))?;
        crate::measure::sync(device);
        drop(black_box((logits, maps)));
        Ok(batch)
    })
}
