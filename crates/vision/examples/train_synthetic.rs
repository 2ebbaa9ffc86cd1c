//! Train a classifier on the synthetic shapes data set and draw its class
//! activation maps: the offline stand-in for the lecture, end to end.
//!
//! ```text
//! cargo run --release -p camshaft-vision --example train_synthetic -- --out out/demo
//! ```
//! writes `out/demo/checkpoint/` (weights, optimiser, plan), `out/demo/cam-grid.png`
//! (25 validation images, titled `class(p)`) and `out/demo/samples/` (the data
//! set as PNG files). The defaults are the run of the test
//! `resnet18_learns_and_its_cam_points_at_the_object` (about 4 minutes on 2
//! CPU cores).

use std::path::PathBuf;

use anyhow::Context;
use camshaft_data::{ResizeMethod, Split, Synthetic, SyntheticConfig, write_folder};
use camshaft_render::{OverlayOptions, grid, save_png};
use camshaft_vision::cam::{POINTING_TOLERANCE, explain, panel, pointing_game};
use camshaft_vision::{
    Arch, CamMethod, EpochTable, HeadKind, Learner, LearnerConfig, LoaderConfig, LrRange, Model,
    ModelSpec, Normalization, Plan,
};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Train on synthetic shapes and write CAM images")]
struct Args {
    /// cnn, resnet18 or resnet34.
    #[arg(long, default_value = "resnet18")]
    arch: Arch,
    /// linear, fastai or cam.
    #[arg(long, default_value = "cam")]
    head: HeadKind,
    /// Epochs of `fit_one_cycle` (or of the unfrozen stage with --fine-tune).
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Maximum learning rate (base lr with --fine-tune).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Use fastai's fine_tune (one frozen epoch first) instead of fit_one_cycle.
    #[arg(long)]
    fine_tune: bool,
    /// Run lr_find first and print its suggestion.
    #[arg(long)]
    lr_find: bool,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Side of the generated images (and the model input): 128 gives a
    /// ResNet a 4×4 feature map.
    #[arg(long, default_value_t = 128)]
    image_size: u32,
    /// Shapes to tell apart (2..=6).
    #[arg(long, default_value_t = 2)]
    classes: usize,
    #[arg(long, default_value_t = 2048)]
    train_len: usize,
    #[arg(long, default_value_t = 512)]
    valid_len: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue the run saved in this checkpoint directory instead of starting
    /// a new one (the data and model options must match the run's).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where to write the checkpoint, the grid and the samples.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let data_cfg = SyntheticConfig {
        seed: args.seed,
        train_len: args.train_len,
        valid_len: args.valid_len,
        image_size: args.image_size,
        num_classes: args.classes,
    };
    let data = data_cfg.splits()?;
    let spec = ModelSpec {
        arch: args.arch,
        head: args.head,
        class_names: data.train.class_names().to_vec(),
        input_size: args.image_size,
        normalization: Normalization::None,
    };
    let device = tch::Device::cuda_if_available();
    // Model initialisation draws from libtorch's global generator.
    tch::manual_seed(args.seed as i64);
    let model = Model::new(spec, device)?;
    let config = LearnerConfig {
        loader: LoaderConfig {
            batch_size: args.batch_size,
            image_size: args.image_size,
            seed: args.seed,
            ..LoaderConfig::default()
        },
        ..LearnerConfig::default()
    };
    let valid = data.valid.clone();
    let resuming = args.resume.is_some();
    let mut learner = match &args.resume {
        Some(dir) => Learner::from_checkpoint(dir, data, device, &config)?,
        None => Learner::new(model, data, config)?,
    };
    println!(
        "{} + {} head on {device:?}, {} classes",
        args.arch, args.head, args.classes
    );

    if args.lr_find && !resuming {
        let found = learner.lr_find(1e-7, 10.0, 100)?;
        println!("lr_find suggests {:.2e} (valley)", found.suggestion);
    }
    let plan = if args.fine_tune {
        Plan::fine_tune(args.epochs, args.lr, 1)
    } else {
        Plan::one_cycle(args.epochs, LrRange::Single(args.lr))
    };
    let table = EpochTable::new(&learner.config().metrics);
    if !resuming {
        learner.start(plan)?;
    }
    let checkpoint = args.out.join("checkpoint");
    let mut stage = usize::MAX;
    while let Some(row) = learner.next_epoch()? {
        if row.stage != stage {
            stage = row.stage;
            println!("{}", table.header());
        }
        println!("{}   ({:.0} img/s)", table.row(&row), row.images_per_sec);
        learner.save_checkpoint(&checkpoint)?;
    }
    println!("checkpoint: {}", checkpoint.display());

    // The lecture's 5×5 grid of validation images with their maps.
    let model = learner.into_model();
    let images = (0..25.min(valid.len()))
        .map(|i| valid.image(i))
        .collect::<Result<Vec<_>, _>>()?;
    let method = if args.head == HeadKind::Cam {
        CamMethod::Cam
    } else {
        CamMethod::GradCam
    };
    let targets = vec![None; images.len()];
    let explanations = explain(&model, &images, method, &targets, ResizeMethod::Squish)?;
    let panels = images
        .iter()
        .zip(&explanations)
        .map(|(img, e)| {
            panel(
                &model,
                img,
                e,
                ResizeMethod::Squish,
                &OverlayOptions::default(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let grid_path = args.out.join("cam-grid.png");
    save_png(&grid(&panels, 5)?, &grid_path)?;
    println!("CAM grid ({method:?}): {}", grid_path.display());
    let synthetic_valid = Synthetic::new(data_cfg, Split::Valid)?;
    let exact = pointing_game(&model, &synthetic_valid, 256, method, 0)?;
    let score = pointing_game(&model, &synthetic_valid, 256, method, POINTING_TOLERANCE)?;
    println!(
        "pointing game ({method:?} peak inside the object's box): {:.1}% ({:.1}% with no tolerance)",
        100.0 * score,
        100.0 * exact
    );

    let samples = args.out.join("samples");
    let sample_cfg = SyntheticConfig {
        train_len: 0,
        valid_len: 25,
        ..data_cfg
    };
    write_folder(&sample_cfg, &samples)
        .with_context(|| format!("writing {}", samples.display()))?;
    println!("sample images: {}/valid", samples.display());
    Ok(())
}
