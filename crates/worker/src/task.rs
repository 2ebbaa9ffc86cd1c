//! One assigned rank: load the data, build (or resume) the learner, train
//! the plan epoch by epoch, report each epoch, write checkpoints to the
//! store. Blocking: runs on its own thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use camshaft_data::{
    CIFAR10_BINARY, DataRoots, OXFORD_PETS, PetsLabels, RandomSplit, RemoteArchive, Splits,
    SyntheticConfig, cifar10_binary, fetch, image_folder, oxford_pets,
};
use camshaft_proto::v1::{self, DeviceKind, worker_message::Message as Out};
use camshaft_proto::vocab;
use camshaft_spec::{Dataset, DatasetKind, Pretrained, TrainingSpec};
use camshaft_store::bundle;
use camshaft_vision::learner::CHECKPOINT_FILES;

use crate::checkpoints::{Checkpoints, StoredCheckpoint};
use crate::selection::EpochSelection;
use camshaft_vision::learner::GradientSync;
use camshaft_vision::weights::{WeightsOrigin, import_weights_from, pretrained_file};
use camshaft_vision::{
    EpochStats, HeadPolicy, Learner, LearnerConfig, LoaderConfig, LrRange, Metric, Model, Plan,
    RankStepProfile, Shard,
};

/// Why a task stopped early, as the coordinator is told.
#[derive(Debug)]
pub struct TaskError {
    /// What happened.
    pub reason: String,
    /// False when a retry cannot help (missing data, a bad spec).
    pub retryable: bool,
    /// The epoch in progress.
    pub epoch: Option<u32>,
    /// `TaskError` or `CollectiveTimeout`.
    pub kind: v1::FailureKind,
}

impl TaskError {
    /// A failure a retry cannot fix.
    pub fn fatal(reason: impl Into<String>) -> Self {
        TaskError {
            reason: reason.into(),
            retryable: false,
            epoch: None,
            kind: v1::FailureKind::TaskError,
        }
    }

    /// A collective that failed or timed out (a peer died, the network
    /// broke): a restart with the ranks that are alive can help.
    pub fn collective(reason: impl Into<String>) -> Self {
        TaskError {
            reason: reason.into(),
            retryable: true,
            epoch: None,
            kind: v1::FailureKind::CollectiveTimeout,
        }
    }
}

impl From<camshaft_vision::Error> for TaskError {
    fn from(e: camshaft_vision::Error) -> Self {
        use camshaft_vision::Error as V;
        if let V::Collective(source) = e {
            return crate::sync::collective_failure(source);
        }
        let retryable = !matches!(
            e,
            V::Data(_) | V::Weights { .. } | V::Config(_) | V::Input(_) | V::Diverged { .. }
        );
        TaskError {
            reason: e.to_string(),
            retryable,
            epoch: None,
            kind: v1::FailureKind::TaskError,
        }
    }
}

impl From<camshaft_data::Error> for TaskError {
    fn from(e: camshaft_data::Error) -> Self {
        camshaft_vision::Error::from(e).into()
    }
}

impl From<camshaft_store::Error> for TaskError {
    fn from(e: camshaft_store::Error) -> Self {
        TaskError::fatal(format!("checkpoint: {e}"))
    }
}

impl From<tonic::Status> for TaskError {
    fn from(s: tonic::Status) -> Self {
        TaskError {
            reason: format!("checkpoint through the coordinator: {}", s.message()),
            retryable: true,
            epoch: None,
            kind: v1::FailureKind::TaskError,
        }
    }
}

/// Everything a rank needs besides its assignment.
pub struct TaskContext {
    /// Which of the assignment's ranks this is (an index into its `ranks`).
    pub local_rank: usize,
    /// The group's gradient all-reduce (`SingleProcess` for one rank).
    pub sync: Box<dyn GradientSync>,
    /// Where checkpoints go (through the coordinator).
    pub checkpoints: Checkpoints,
    /// Where data sets and weights are found or downloaded.
    pub data_dir: PathBuf,
    /// The directories a job may name files in (its data set's `data_dir`,
    /// its `pretrained_path`); see [`crate::Config::data_roots`].
    pub data_roots: Vec<PathBuf>,
    /// Image decoding threads.
    pub loader_threads: usize,
    /// libtorch threads of this rank on a CPU; 0: libtorch's default.
    pub intra_op_threads: usize,
    /// Set by a Cancel: the learner stops at its next batch.
    pub cancel: Arc<AtomicBool>,
    /// Sends a message to the coordinator.
    pub send: Box<dyn Fn(Out) + Send>,
}

/// The result of a finished rank: the final checkpoint and epoch row.
#[derive(Debug)]
pub struct TaskDone {
    /// Rank 0: the id of the checkpoint holding the final weights; empty
    /// on other ranks.
    pub checkpoint_id: String,
    /// The last epoch row.
    pub final_metrics: Option<v1::EpochMetrics>,
}

/// Trains one rank of `assignment` to the end of its plan. Rank 0 reports
/// the group's epoch rows and writes the checkpoints; every rank takes part
/// in the collectives.
pub fn run(assignment: &v1::Assignment, ctx: TaskContext) -> Result<TaskDone, TaskError> {
    let spec = assignment
        .spec
        .as_ref()
        .ok_or_else(|| TaskError::fatal("the assignment has no job spec"))?;
    let local = assignment
        .ranks
        .get(ctx.local_rank)
        .ok_or_else(|| TaskError::fatal("the assignment has no such rank"))?;
    let rank = local.rank;
    let shard = Shard {
        rank: rank as usize,
        world_size: assignment.world_size as usize,
    };
    let device = torch_device(local)?;
    if device == tch::Device::Cpu && ctx.intra_op_threads > 0 {
        camshaft_vision::threads::use_threads_here(ctx.intra_op_threads);
    }
    // The stored spec is complete; completing it again reads it typed.
    let training = vocab::complete_training(spec, 0)
        .map_err(|e| TaskError::fatal(format!("the job spec is not complete: {e}")))?;
    let job_id = assignment.job_id.as_str();
    let say = |message: String| {
        if rank == 0 {
            (ctx.send)(Out::Log(v1::WorkerLog {
                job_id: job_id.to_string(),
                rank,
                level: "info".into(),
                message,
            }));
        }
    };

    let roots = DataRoots::new(&ctx.data_roots)?;
    let data = load_dataset(&training.dataset, &ctx.data_dir, &roots)?;
    say(format!(
        "data: {} training, {} validation images, classes {}",
        data.train.len(),
        data.valid.len(),
        data.train.class_names().join(", ")
    ));
    let config = LearnerConfig {
        shard,
        ..learner_config(&training, ctx.loader_threads)
    };
    let scratch = tempfile::tempdir()
        .map_err(|e| TaskError::fatal(format!("cannot create a scratch directory: {e}")))?;
    let mut last_checkpoint = None;
    // Rank 0 keeps the best epoch's weights here (`register: best`).
    let best_weights = scratch.path().join(BEST_WEIGHTS_FILE);
    let mut learner = if assignment.resume_checkpoint_id.is_empty() {
        let model = new_model(spec, &training, &data, device, &ctx.data_dir, &roots, &say)?;
        let mut learner = Learner::new(model, data, config)?;
        learner.start(plan(&training))?;
        learner
    } else {
        let id = &assignment.resume_checkpoint_id;
        let dir = scratch.path().join("resume");
        unpack_checkpoint(&ctx.checkpoints.get(assignment, id)?, &dir)?;
        let learner = Learner::from_checkpoint(&dir, data, device, &config)?;
        // The best weights so far: carried by the checkpoint when its own
        // epoch is not the best, else its own.
        for file in [bundle::BEST_WEIGHTS, CHECKPOINT_FILES[1]] {
            if dir.join(file).is_file() {
                std::fs::copy(dir.join(file), &best_weights).map_err(|e| {
                    TaskError::fatal(format!("keeping the resumed best weights: {e}"))
                })?;
                break;
            }
        }
        say(format!(
            "resumed from checkpoint {id} ({} epochs done)",
            learner.progress().1
        ));
        last_checkpoint = Some(id.clone());
        learner
    };
    // Every rank starts from rank 0's weights.
    learner.set_sync(ctx.sync)?;
    learner.set_cancel_flag(Arc::clone(&ctx.cancel));
    let layout = if learner.config().channels_last {
        ", channels-last"
    } else {
        ""
    };
    let graphs = match learner.cuda_graphs_unavailable() {
        None => ", CUDA graphs".to_string(),
        Some(why) if device.is_cuda() => format!(", no CUDA graphs ({why})"),
        Some(_) => String::new(),
    };
    say(format!(
        "training on {device:?} in {}{layout}{graphs}, rank {rank} of {}, {} intra-op threads",
        learner.config().precision,
        assignment.world_size,
        tch::get_num_threads()
    ));

    let total = learner.progress().0.map_or(0, Plan::total_epochs);
    let mut final_metrics = None;
    let mut selection = EpochSelection::new(spec);
    selection.replay(learner.history());
    loop {
        if selection.should_stop() {
            // Resumed from the checkpoint written when training stopped.
            break;
        }
        let epoch = learner.progress().1;
        let row = match learner.next_epoch() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                return Err(TaskError {
                    epoch: Some(epoch as u32),
                    ..e.into()
                });
            }
        };
        let mut metrics = wire_metrics(&row);
        metrics.world_size = assignment.world_size;
        final_metrics = Some(v1::EpochMetrics {
            step_profiles: Vec::new(),
            ..metrics.clone()
        });
        if rank == 0 {
            (ctx.send)(Out::EpochReport(v1::EpochReport {
                job_id: job_id.to_string(),
                attempt: assignment.attempt,
                rank,
                metrics: Some(metrics),
            }));
        }
        let improved = selection.observe(row.epoch, row.valid_loss, row.accuracy);
        let keep_best = improved && selection.keeps_best();
        let stop = selection.should_stop();
        if let Some(early) = selection.early_stop() {
            say(format!(
                "stopping early after epoch {}: {}",
                early.epoch, early.reason
            ));
            tracing::info!(
                job_id,
                epoch = early.epoch,
                best_epoch = early.best_epoch,
                "early stop"
            );
        }
        let done = learner.progress().1;
        if done % training.checkpoint_every as usize != 0 && done != total && !stop {
            if keep_best {
                // Rank 0 saves the new best weights (broadcasting the
                // BatchNorm buffers, which every rank joins).
                if rank == 0 {
                    save_best(&mut learner, scratch.path(), &best_weights)?;
                } else {
                    learner.sync_buffers()?;
                }
            }
            continue;
        }
        if rank != 0 {
            // Rank 0 broadcasts the BatchNorm buffers as it saves.
            learner.sync_buffers()?;
            if stop {
                break;
            }
            continue;
        }
        let carried = (selection.keeps_best()
            && selection.best_epoch().is_some()
            && !improved
            && best_weights.is_file())
        .then_some(best_weights.as_path());
        let stored = write_checkpoint(
            &mut learner,
            assignment,
            scratch.path(),
            &ctx.checkpoints,
            &selection,
            carried,
        )?;
        if keep_best {
            let saved = scratch.path().join("checkpoint").join(CHECKPOINT_FILES[1]);
            std::fs::copy(&saved, &best_weights)
                .map_err(|e| TaskError::fatal(format!("keeping the best weights: {e}")))?;
        }
        (ctx.send)(Out::CheckpointWritten(v1::CheckpointWritten {
            job_id: job_id.to_string(),
            attempt: assignment.attempt,
            rank,
            checkpoint_id: stored.checkpoint_id.clone(),
            epochs_done: done as u32,
            size_bytes: stored.size_bytes,
            weights_sha256: stored.sha256,
        }));
        last_checkpoint = Some(stored.checkpoint_id);
        if stop {
            break;
        }
    }
    let checkpoint_id = if rank == 0 {
        last_checkpoint.ok_or_else(|| TaskError::fatal("the plan ended without a checkpoint"))?
    } else {
        String::new()
    };
    Ok(TaskDone {
        checkpoint_id,
        final_metrics,
    })
}

/// Runs one rank of an all-reduce sweep (`JobSpec.collective_bench`) on
/// the group's communicator. Rank 0 reports each size as the group agreed
/// on it; nothing is checkpointed or registered.
pub fn run_sweep(
    assignment: &v1::Assignment,
    bench: &v1::CollectiveBench,
    mut comm: Box<dyn camshaft_collective::Communicator>,
    send: &dyn Fn(Out),
) -> Result<TaskDone, TaskError> {
    use camshaft_spec::sweep::{SWEEP_DTYPE, SWEEP_REDOP, SweepConfig};
    let config = SweepConfig::complete(bench.min_bytes, bench.max_bytes, bench.iters, bench.warmup)
        .map_err(|e| TaskError::fatal(e.to_string()))?;
    let rank = comm.rank() as u32;
    if rank == 0 {
        send(Out::Log(v1::WorkerLog {
            job_id: assignment.job_id.clone(),
            rank,
            level: "info".into(),
            message: format!(
                "all-reduce sweep of {} sizes on {:?}, {} ranks",
                config.sizes().len(),
                comm.device(),
                comm.world_size()
            ),
        }));
    }
    camshaft_collective::sweep::run(&config, comm.as_mut(), |row| {
        if rank != 0 {
            return;
        }
        tracing::info!(job_id = %assignment.job_id, bytes = row.size.bytes, time_us = row.time_us, "all-reduce size measured");
        send(Out::AllreduceReport(v1::AllReduceReport {
            job_id: assignment.job_id.clone(),
            attempt: assignment.attempt,
            rank,
            row: Some(v1::AllReduceRow {
                bytes: row.size.bytes,
                count: row.size.count,
                dtype: SWEEP_DTYPE.into(),
                redop: SWEEP_REDOP.into(),
                time_us: row.time_us,
                mean_time_us: row.mean_time_us,
                algbw_gbps: row.algbw(),
                busbw_gbps: row.busbw(),
                wrong: row.wrong,
                world_size: row.world_size as u32,
                iters: row.size.iters,
                attempt: 0,
                collective: assignment.backend,
            }),
        }));
    })
    .map_err(TaskError::from)?;
    Ok(TaskDone {
        checkpoint_id: String::new(),
        final_metrics: None,
    })
}

fn torch_device(rank: &v1::LocalRank) -> Result<tch::Device, TaskError> {
    let device = rank.device.clone().unwrap_or_default();
    match device.kind() {
        DeviceKind::Cuda => {
            let count = tch::Cuda::device_count();
            if i64::from(device.index) >= count {
                return Err(TaskError::fatal(format!(
                    "cuda:{} is not there ({count} CUDA devices)",
                    device.index
                )));
            }
            Ok(tch::Device::Cuda(device.index as usize))
        }
        _ => Ok(tch::Device::Cpu),
    }
}

/// The data set of a job spec (completed here: the spec may name its data
/// set alone), with `seed` as the job's seed: see [`load_dataset`].
pub fn load_data(
    spec: &v1::JobSpec,
    seed: u64,
    worker_dir: &Path,
    roots: &DataRoots,
) -> Result<Splits, TaskError> {
    let request = vocab::dataset_request(spec.dataset.as_ref())
        .map_err(|e| TaskError::fatal(e.to_string()))?;
    let dataset = Dataset::complete(
        request,
        (spec.image_size != 0).then_some(spec.image_size),
        seed,
    )
    .map_err(|e| TaskError::fatal(e.to_string()))?;
    load_dataset(&dataset, worker_dir, roots)
}

/// A complete data set. Its `data_dir` wins over the worker's, and must
/// lie under `roots` (see [`DataRoots::resolve`]); CIFAR-10 and Pets are
/// downloaded there when `download` is set.
pub fn load_dataset(
    dataset: &Dataset,
    worker_dir: &Path,
    roots: &DataRoots,
) -> Result<Splits, TaskError> {
    let dir = if dataset.data_dir.is_empty() {
        worker_dir.to_path_buf()
    } else {
        roots.resolve("dataset.data_dir", Path::new(&dataset.data_dir))?
    };
    let archive_root = |archive: &RemoteArchive<'_>| -> Result<PathBuf, TaskError> {
        if dataset.download {
            return Ok(fetch(archive, &dir)?);
        }
        let inside = dir.join(archive.name);
        Ok(if inside.is_dir() { inside } else { dir.clone() })
    };
    let split = RandomSplit {
        valid_pct: dataset.valid_pct,
        seed: dataset.split_seed,
    };
    Ok(match dataset.kind {
        DatasetKind::Synthetic => {
            let s = dataset
                .synthetic
                .as_ref()
                .ok_or_else(|| TaskError::fatal("a synthetic data set without its settings"))?;
            SyntheticConfig {
                seed: s.seed,
                train_len: s.train_len as usize,
                valid_len: s.valid_len as usize,
                image_size: s.image_size,
                num_classes: s.num_classes as usize,
            }
            .splits()?
        }
        DatasetKind::Cifar10 => cifar10_binary(&archive_root(&CIFAR10_BINARY)?)?,
        DatasetKind::Pets => oxford_pets(&archive_root(&OXFORD_PETS)?, PetsLabels::CatDog, split)?,
        DatasetKind::PetsBreeds => {
            oxford_pets(&archive_root(&OXFORD_PETS)?, PetsLabels::Breeds, split)?
        }
        DatasetKind::Folder => image_folder(&dir)?,
    })
}

/// The job's `pretrained_path`, which must lie under `roots` (see
/// [`DataRoots::resolve`]).
pub fn pretrained_path(spec: &v1::JobSpec, roots: &DataRoots) -> Result<PathBuf, TaskError> {
    Ok(roots.resolve("pretrained_path", Path::new(&spec.pretrained_path))?)
}

/// Imports the job's `pretrained_path` into `model`: a file under `roots`
/// in a format safe to read from a request (never tch's `.ot`).
pub fn import_pretrained(
    model: &mut Model,
    spec: &v1::JobSpec,
    roots: &DataRoots,
) -> Result<(PathBuf, camshaft_vision::ImportReport), TaskError> {
    let path = pretrained_path(spec, roots)?;
    let report = import_weights_from(
        model,
        &path,
        HeadPolicy::KeepInitialised,
        WeightsOrigin::Request,
    )?;
    Ok((path, report))
}

fn new_model(
    spec: &v1::JobSpec,
    training: &TrainingSpec,
    data: &Splits,
    device: tch::Device,
    data_dir: &Path,
    roots: &DataRoots,
    say: &dyn Fn(String),
) -> Result<Model, TaskError> {
    let arch = training.arch;
    let model_spec = training.model_spec(data.train.class_names().to_vec());
    // Initialisation draws from libtorch's one global generator: ranks of
    // this process take turns, so each gets the seed's weights (rank 0's
    // are broadcast to all anyway, but a rank-0 init raced by another
    // thread would not be reproducible).
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let mut model = {
        let _turn = INIT.lock().unwrap_or_else(|p| p.into_inner());
        tch::manual_seed(training.seed as i64);
        Model::new(model_spec, device)?
    };
    let imported = match &training.pretrained {
        Pretrained::Imagenet => {
            let file = pretrained_file(arch)
                .ok_or_else(|| TaskError::fatal(format!("no ImageNet weights for {arch}")))?;
            let mirror = std::env::var("CAMSHAFT_WEIGHTS_MIRROR").ok();
            // Downloaded to the worker's own directory and checked against
            // torchvision's sha256; still read as a request's file would be.
            let path = file.fetch(data_dir, mirror.as_deref())?;
            let report = import_weights_from(
                &mut model,
                &path,
                HeadPolicy::KeepInitialised,
                WeightsOrigin::Request,
            )?;
            Some((path, report))
        }
        Pretrained::Path(_) => Some(import_pretrained(&mut model, spec, roots)?),
        Pretrained::None => None,
    };
    if let Some((path, report)) = imported {
        say(format!(
            "imported {} tensors from {} (new head: {})",
            report.loaded,
            path.display(),
            report.kept_initialised.join(", ")
        ));
    }
    Ok(model)
}

fn learner_config(spec: &TrainingSpec, threads: usize) -> LearnerConfig {
    let defaults = LearnerConfig::default();
    LearnerConfig {
        loader: LoaderConfig {
            batch_size: spec.batch_size as usize,
            image_size: spec.image_size,
            resize: spec.resize,
            flip: spec.flip,
            normalization: spec.normalization,
            threads: if threads == 0 {
                defaults.loader.threads
            } else {
                threads
            },
            seed: spec.seed,
            ..defaults.loader
        },
        adam: camshaft_vision::optim::AdamConfig {
            wd: spec.weight_decay,
            ..defaults.adam
        },
        metrics: vec![Metric::Accuracy],
        progress: false,
        precision: spec.precision,
        channels_last: spec.channels_last,
        profile_steps: spec.profile_steps,
        cuda_graphs: spec.cuda_graphs,
        ..defaults
    }
}

fn plan(spec: &TrainingSpec) -> Plan {
    if spec.fine_tune() {
        Plan::fine_tune(spec.epochs as usize, spec.lr, spec.freeze_epochs as usize)
    } else {
        Plan::one_cycle(spec.epochs as usize, LrRange::Single(spec.lr))
    }
}

fn wire_metrics(row: &EpochStats) -> v1::EpochMetrics {
    v1::EpochMetrics {
        epoch: row.epoch as u32,
        stage: row.stage as u32,
        train_loss: row.train_loss,
        valid_loss: row.valid_loss,
        accuracy: row.accuracy,
        seconds: row.seconds,
        images_per_sec: row.images_per_sec,
        attempt: 0,
        train_samples: row.train_samples,
        valid_samples: row.valid_samples,
        world_size: 1,
        step_profiles: row.step_profiles.iter().map(wire_profile).collect(),
        lr: row.lr,
    }
}

fn wire_phases(seconds: &[f64; camshaft_spec::PHASES]) -> Option<v1::StepPhases> {
    Some(camshaft_proto::vocab::phases_to_wire(seconds))
}

fn wire_profile(p: &RankStepProfile) -> v1::RankStepProfile {
    v1::RankStepProfile {
        rank: p.rank as u32,
        steps: p.steps,
        total_seconds: wire_phases(&p.total_seconds),
        last_steps: p
            .last_steps
            .iter()
            .map(|t| v1::StepTrace {
                step: t.step as u32,
                start_seconds: t.start,
                seconds: wire_phases(&t.seconds),
            })
            .collect(),
    }
}

/// Saves the learner's checkpoint directory and stores it through the
/// coordinator: `checkpoint.json` as the metadata, the weights and
/// optimiser files as a bundle.
///
/// The metadata records `selection` (which epoch the job would register
/// if it ended here); `best_weights`, when the best epoch is an earlier
/// one, travels in the bundle as [`bundle::BEST_WEIGHTS`].
fn write_checkpoint(
    learner: &mut Learner,
    assignment: &v1::Assignment,
    scratch: &Path,
    checkpoints: &Checkpoints,
    selection: &EpochSelection,
    best_weights: Option<&Path>,
) -> Result<v1::CheckpointStored, TaskError> {
    let dir = scratch.join("checkpoint");
    learner.save_checkpoint(&dir)?;
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| TaskError::fatal(format!("reading the checkpoint's {name}: {e}")))
    };
    let [meta_file, weights_file, optimizer_file] = CHECKPOINT_FILES;
    let mut meta: serde_json::Value = serde_json::from_slice(&read(meta_file)?)
        .map_err(|e| TaskError::fatal(format!("the checkpoint's {meta_file}: {e}")))?;
    if let Some(object) = meta.as_object_mut() {
        object.insert(bundle::SELECTION.into(), selection.record());
    }
    let weights = read(weights_file)?;
    let optimizer = read(optimizer_file)?;
    let best = best_weights
        .map(|path| {
            std::fs::read(path)
                .map_err(|e| TaskError::fatal(format!("reading the best weights: {e}")))
        })
        .transpose()?;
    let mut files = vec![
        (weights_file, weights.as_slice()),
        (optimizer_file, optimizer.as_slice()),
    ];
    if let Some(best) = &best {
        files.push((bundle::BEST_WEIGHTS, best.as_slice()));
    }
    let blob = bundle::pack(files);
    let epochs = learner.progress().1 as u64;
    Ok(checkpoints.put(assignment, epochs, &meta, blob)?)
}

/// Where rank 0 keeps the best epoch's weights in its scratch directory.
const BEST_WEIGHTS_FILE: &str = "best.safetensors";

/// Saves the learner (a collective: BatchNorm buffers are broadcast) and
/// keeps its weights as the best epoch's.
fn save_best(learner: &mut Learner, scratch: &Path, best: &Path) -> Result<(), TaskError> {
    let dir = scratch.join("best-epoch");
    learner.save_checkpoint(&dir)?;
    std::fs::rename(dir.join(CHECKPOINT_FILES[1]), best)
        .map_err(|e| TaskError::fatal(format!("keeping the best weights: {e}")))
}

/// Writes a stored checkpoint back as the directory the learner reads
/// (with the best epoch's weights, when it carries them).
fn unpack_checkpoint(checkpoint: &StoredCheckpoint, dir: &Path) -> Result<(), TaskError> {
    let io = |e: std::io::Error| TaskError::fatal(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let meta = serde_json::to_vec(&checkpoint.meta)
        .map_err(|e| TaskError::fatal(format!("checkpoint metadata: {e}")))?;
    std::fs::write(dir.join(CHECKPOINT_FILES[0]), meta).map_err(io)?;
    for (name, data) in bundle::unpack(&checkpoint.blob)? {
        if !CHECKPOINT_FILES.contains(&name.as_str()) && name != bundle::BEST_WEIGHTS {
            return Err(TaskError::fatal(format!(
                "unexpected checkpoint file {name:?}"
            )));
        }
        std::fs::write(dir.join(&name), &data).map_err(io)?;
    }
    Ok(())
}
