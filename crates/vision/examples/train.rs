//! Train one of the lecture's classifiers and draw its class activation maps,
//! end to end in one process. With no options it trains a ResNet18 with the
//! CAM head on the synthetic shapes set (generated, nothing to download):
//!
//! ```text
//! cargo run --release -p camshaft-vision --example train -- --out out/demo
//! ```
//!
//! writes `out/demo/checkpoint/` (weights, optimiser, plan), `out/demo/cam-grid.png`
//! (25 validation images, titled `class(p)`) and, for the synthetic set,
//! `out/demo/samples/` (images as PNG files) and the pointing game. The
//! defaults are the run of the test `resnet18_learns_and_its_cam_points_at_the_object`
//! (about 4 minutes on 2 CPU cores).
//!
//! The lecture's pets run, with ImageNet weights and the CAM head:
//! `--dataset pets --arch resnet34 --head cam --pretrained imagenet --image-size 512
//! --fine-tune --epochs 5 --lr 2e-3` (downloads Pets and the weights to the cache).

use std::path::PathBuf;

use anyhow::{Context, bail};
use camshaft_data::{
    CIFAR10_BINARY, OXFORD_PETS, PetsLabels, RandomSplit, Split, Splits, Synthetic,
    SyntheticConfig, cifar10_binary, default_cache_dir, fetch, image_folder, oxford_pets,
    write_folder,
};
use camshaft_render::{OverlayOptions, grid, save_png};
use camshaft_vision::cam::{POINTING_TOLERANCE, explain, panel, pointing_game};
use camshaft_vision::weights::pretrained_file;
use camshaft_vision::{
    Arch, CamMethod, EpochTable, Head, HeadPolicy, Learner, LearnerConfig, LoaderConfig, LrRange,
    Metric, Model, ModelSpec, Normalization, Plan, import_weights,
};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DatasetKind {
    /// Generated shapes on clutter, with object boxes.
    Synthetic,
    /// CIFAR-10 binary batches (downloaded when missing).
    Cifar10,
    /// Oxford-IIIT Pets, cat vs dog by the file name's first letter (downloaded when missing).
    Pets,
    /// Oxford-IIIT Pets, 37 breeds.
    PetsBreeds,
    /// An ImageFolder: `train/<class>/*` and `valid/<class>/*` (or `test/`).
    Folder,
}

#[derive(Parser, Debug)]
#[command(about = "Train a classifier and write its CAM images")]
struct Args {
    /// Data set.
    #[arg(long, value_enum, default_value = "synthetic")]
    dataset: DatasetKind,
    /// Where the data set is; cifar10 and pets are downloaded and extracted
    /// here when missing. Default: $CAMSHAFT_DATA_DIR or the user cache.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cnn, resnet18 or resnet34.
    #[arg(long, default_value = "resnet18")]
    arch: Arch,
    /// linear, fastai or cam.
    #[arg(long, default_value = "cam")]
    head: Head,
    /// ImageNet weights for the body: `imagenet` (torchvision's file, fetched
    /// into the cache and checked) or a `.pth`/`.safetensors` path.
    #[arg(long)]
    pretrained: Option<String>,
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
    /// Model input side; also the side of generated images. 128 gives a
    /// ResNet a 4×4 feature map.
    #[arg(long, default_value_t = 128)]
    image_size: u32,
    /// Synthetic: shapes to tell apart (2..=6).
    #[arg(long, default_value_t = 2)]
    classes: usize,
    /// Synthetic: training images.
    #[arg(long, default_value_t = 2048)]
    train_len: usize,
    /// Synthetic: validation images.
    #[arg(long, default_value_t = 512)]
    valid_len: usize,
    /// Seed of the data, the sample order and the initial weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue the run saved in this checkpoint directory instead of starting
    /// a new one (the data options must match the run's).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where to write the checkpoint, the grid and the samples.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
}

fn load_data(args: &Args, synthetic: &SyntheticConfig) -> anyhow::Result<Splits> {
    let dir = args.data_dir.clone().unwrap_or_else(default_cache_dir);
    Ok(match args.dataset {
        DatasetKind::Synthetic => synthetic.splits()?,
        DatasetKind::Cifar10 => cifar10_binary(&fetch(&CIFAR10_BINARY, &dir)?)?,
        DatasetKind::Pets | DatasetKind::PetsBreeds => {
            let labels = if args.dataset == DatasetKind::Pets {
                PetsLabels::CatDog
            } else {
                PetsLabels::Breeds
            };
            oxford_pets(&fetch(&OXFORD_PETS, &dir)?, labels, RandomSplit::default())?
        }
        DatasetKind::Folder => match &args.data_dir {
            Some(dir) => image_folder(dir)?,
            None => bail!("--dataset folder needs --data-dir"),
        },
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let synthetic = SyntheticConfig {
        seed: args.seed,
        train_len: args.train_len,
        valid_len: args.valid_len,
        image_size: args.image_size,
        num_classes: args.classes,
    };
    let data = load_data(&args, &synthetic)?;
    let spec = ModelSpec {
        arch: args.arch,
        head: args.head,
        class_names: data.train.class_names().to_vec(),
        input_size: args.image_size,
        normalization: if args.pretrained.is_some() {
            Normalization::Imagenet
        } else {
            Normalization::None
        },
    };
    let device = tch::Device::cuda_if_available();
    // Model initialisation draws from libtorch's global generator.
    tch::manual_seed(args.seed as i64);
    let mut model = Model::new(spec, device)?;
    if let Some(weights) = &args.pretrained {
        let path = if weights == "imagenet" {
            let file = pretrained_file(args.arch).with_context(|| {
                format!("torchvision has no ImageNet weights for {}", args.arch)
            })?;
            file.fetch(&default_cache_dir(), None)?
        } else {
            PathBuf::from(weights)
        };
        let report = import_weights(&mut model, &path, HeadPolicy::KeepInitialised)?;
        println!(
            "imported {} tensors from {} (new head: {})",
            report.loaded,
            path.display(),
            report.kept_initialised.join(", ")
        );
    }
    let config = LearnerConfig {
        loader: LoaderConfig {
            batch_size: args.batch_size,
            image_size: args.image_size,
            normalization: model.spec().normalization,
            seed: args.seed,
            ..LoaderConfig::default()
        },
        metrics: vec![Metric::Accuracy, Metric::ErrorRate],
        ..LearnerConfig::default()
    };
    let resize = config.loader.resize;
    let valid = data.valid.clone();
    let mut learner = match &args.resume {
        Some(dir) => Learner::from_checkpoint(dir, data, device, &config)?,
        None => Learner::new(model, data, config)?,
    };
    println!(
        "{} + {} head on {device:?}, classes: {}",
        args.arch,
        args.head,
        valid.class_names().join(", ")
    );

    if args.resume.is_none() {
        if args.lr_find {
            let found = learner.lr_find(1e-7, 10.0, 100)?;
            println!("lr_find suggests {:.2e} (valley)", found.suggestion);
        }
        learner.start(if args.fine_tune {
            Plan::fine_tune(args.epochs, args.lr, 1)
        } else {
            Plan::one_cycle(args.epochs, LrRange::Single(args.lr))
        })?;
    }
    let table = EpochTable::new(&learner.config().metrics);
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
    let method = if model.pooled_linear().is_some() {
        CamMethod::Cam
    } else {
        CamMethod::GradCam
    };
    let explanations = explain(&model, &images, method, &vec![None; images.len()], resize)?;
    let panels = images
        .iter()
        .zip(&explanations)
        .map(|(img, e)| panel(&model, img, e, resize, &OverlayOptions::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let grid_path = args.out.join("cam-grid.png");
    save_png(&grid(&panels, 5)?, &grid_path)?;
    println!("CAM grid ({method:?}): {}", grid_path.display());

    if args.dataset == DatasetKind::Synthetic {
        let synthetic_valid = Synthetic::new(synthetic, Split::Valid)?;
        let exact = pointing_game(&model, &synthetic_valid, 256, method, 0)?;
        let score = pointing_game(&model, &synthetic_valid, 256, method, POINTING_TOLERANCE)?;
        println!(
            "pointing game ({method:?} peak inside the object's box ± {POINTING_TOLERANCE} px): {:.1}% ({:.1}% with no tolerance)",
            100.0 * score,
            100.0 * exact
        );
        let samples = args.out.join("samples");
        let sample_cfg = SyntheticConfig {
            train_len: 0,
            valid_len: 25,
            ..synthetic
        };
        write_folder(&sample_cfg, &samples)
            .with_context(|| format!("writing {}", samples.display()))?;
        println!("sample images: {}/valid", samples.display());
    }
    Ok(())
}
