//! Each bench run side by side: ours, then the reference script, in rounds.

use anyhow::{Context, ensure};

use crate::allreduce::{self, AllreduceArgs, SizeTiming};
use crate::cam::{self, CamArgs};
use crate::ddp::{self, DdpArgs};
use crate::loader::{self, LoaderArgs};
use crate::measure::{Measurement, device_name};
use crate::optim;
use crate::reference::Reference;
use crate::report::BenchResult;
use crate::scaling::{self, ScalingArgs, ScalingPoint};
use crate::train::{self, TrainArgs};

/// Goal of the training benches: at least PyTorch eager's steps/s.
pub const TRAIN_GOAL: f64 = 1.0;
/// Goal of the loader: twice PIL's images/s per core.
pub const LOADER_GOAL: f64 = 2.0;
/// Goal of the CAM bench: at least PyTorch eager's images/s.
pub const CAM_GOAL: f64 = 1.0;
/// Goal of the data-parallel benches: at least PyTorch DDP (gloo)'s rate.
pub const DDP_GOAL: f64 = 1.0;
/// Goal of the all-reduce bench: at least `torch.distributed`'s bus
/// bandwidth at the largest size.
pub const ALLREDUCE_GOAL: f64 = 1.0;

/// Settings shared by every bench.
#[derive(Clone, Debug)]
pub struct Suite {
    /// Intra-op threads for libtorch on both sides (not the loader).
    pub threads: i32,
    /// Rounds of (ours, reference); more rounds spread out a noisy machine.
    pub rounds: usize,
    /// The Python side.
    pub reference: Reference,
    /// Where the training and CAM benches run.
    pub device: tch::Device,
}

impl Suite {
    /// `2 threads` on the CPU, `cuda:0` on a GPU.
    fn where_(&self) -> String {
        match self.device {
            tch::Device::Cpu => format!("{} threads", self.threads),
            d => device_name(d),
        }
    }

    /// Run `ours` then the reference `rounds` times and pool the samples.
    fn side_by_side(
        &self,
        name: &str,
        mut ours: impl FnMut() -> anyhow::Result<Vec<f64>>,
        script: (&str, Vec<String>),
    ) -> anyhow::Result<(Measurement, Measurement)> {
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=self.rounds {
            eprintln!("[{name}] round {round}/{}: ours", self.rounds);
            mine.extend(ours().with_context(|| format!("{name}: our side failed"))?);
            eprintln!("[{name}] round {round}/{}: {}", self.rounds, script.0);
            theirs.extend(self.reference.run(script.0, &script.1)?.samples);
        }
        let none = || format!("{name}: no timed repeats (is --repeats 0?)");
        Ok((
            Measurement::from_samples(mine).with_context(none)?,
            Measurement::from_samples(theirs).with_context(none)?,
        ))
    }

    /// Training steps/s of each model `args` selects.
    pub fn train(&self, args: &TrainArgs) -> anyhow::Result<Vec<BenchResult>> {
        tch::set_num_threads(self.threads);
        let mut results = Vec::new();
        for arch in args.model.archs() {
            let name = args.name(arch);
            let mut script = args.reference_args(arch, self.threads);
            script
                .1
                .extend(["--device".into(), device_name(self.device)]);
            let device = self.device;
            let mut fused_script = script.clone();
            fused_script.1.push("--fused".into());
            let (ours, pytorch) =
                self.side_by_side(&name, || train::ours(arch, args, device), script)?;
            let layout = if args.channels_last { ", NHWC" } else { "" };
            let detail = format!(
                "batch {}, {}×{}, {}{layout}, {}",
                args.batch,
                args.size,
                args.size,
                args.precision,
                self.where_()
            );
            if !args.no_fused_reference {
                // The same side again against AdamW(fused=True), in its own
                // rounds so both rows see the machine in the same state.
                let (ours, fused) = self.side_by_side(
                    &format!("{name}_vs_fused"),
                    || train::ours(arch, args, device),
                    fused_script,
                )?;
                results.push(BenchResult::new(
                    format!("{name}_vs_fused"),
                    format!("{detail}, PyTorch AdamW(fused=True)"),
                    "steps/s",
                    ours,
                    fused,
                    TRAIN_GOAL,
                ));
            }
            results.push(BenchResult::new(
                name,
                format!("{detail}, PyTorch AdamW default"),
                "steps/s",
                ours,
                pytorch,
                TRAIN_GOAL,
            ));
        }
        Ok(results)
    }

    /// One optimiser step over ResNet18's parameters, ours (fused and
    /// per-tensor) against PyTorch's AdamW (default and `fused=True`).
    pub fn optim(&self, args: &optim::OptimArgs) -> anyhow::Result<Vec<BenchResult>> {
        tch::set_num_threads(self.threads);
        let device = self.device;
        let mut results = Vec::new();
        for (kernel, fused_ref) in [
            (camshaft_vision::optim::AdamKernel::Fused, true),
            (camshaft_vision::optim::AdamKernel::Fused, false),
            (camshaft_vision::optim::AdamKernel::PerTensor, false),
        ] {
            let mut script = args.reference_args(self.threads);
            script
                .1
                .extend(["--device".into(), crate::measure::device_name(device)]);
            if fused_ref {
                script.1.push("--fused".into());
            }
            let ours_name = match kernel {
                camshaft_vision::optim::AdamKernel::Fused => "fused",
                camshaft_vision::optim::AdamKernel::PerTensor => "per-tensor",
            };
            let theirs_name = if fused_ref {
                "AdamW(fused=True)"
            } else {
                "AdamW default"
            };
            let name = format!(
                "optim_{}_{}",
                ours_name.replace('-', "_"),
                if fused_ref { "vs_fused" } else { "vs_default" }
            );
            let (ours, pytorch) =
                self.side_by_side(&name, || optim::ours(args, kernel, device), script)?;
            results.push(BenchResult::new(
                name,
                format!(
                    "ResNet18's 62 tensors (11.2M floats), ours {ours_name} vs {theirs_name}, {}",
                    self.where_()
                ),
                "steps/s",
                ours,
                pytorch,
                TRAIN_GOAL,
            ));
        }
        Ok(results)
    }

    /// Decode + resize + normalise images/s on one core.
    pub fn loader(&self, args: &LoaderArgs) -> anyhow::Result<Vec<BenchResult>> {
        let dir = tempfile::tempdir().context("cannot make a folder for the JPEGs")?;
        let paths = loader::write_images(dir.path(), args)?;
        tch::set_num_threads(1);
        let script = args.reference_args(dir.path());
        let measured = self.side_by_side("loader", || loader::ours(&paths, args), script);
        let stages = if args.stages {
            Some(self.loader_stages(&paths, dir.path(), args))
        } else {
            None
        };
        tch::set_num_threads(self.threads);
        let (ours, pytorch) = measured?;
        if let Some(stages) = stages {
            eprint!("{}", stages?);
        }
        let detail = format!(
            "{} JPEGs ~500×375 → {}×{}, 1 thread",
            paths.len(),
            args.size,
            args.size
        );
        Ok(vec![BenchResult::new(
            "loader",
            detail,
            "images/s",
            ours,
            pytorch,
            LOADER_GOAL,
        )])
    }

    /// A small table of ms per image per loader stage, ours and PIL's.
    fn loader_stages(
        &self,
        paths: &[std::path::PathBuf],
        dir: &std::path::Path,
        args: &LoaderArgs,
    ) -> anyhow::Result<String> {
        eprintln!("[loader] stages: ours");
        let ours = loader::our_stages(paths, args)?;
        eprintln!("[loader] stages: loader.py --stages");
        let (script, script_args) = args.reference_stage_args(dir);
        let (line, value) = self.reference.run_json(script, &script_args)?;
        let theirs: [f64; 3] = serde_json::from_value(value["stages_ms"].clone())
            .with_context(|| format!("{script} --stages printed {line:?}, without stages_ms"))?;
        let mut out =
            String::from("loader stages, ms per image:  decode  resize  to tensor+normalise\n");
        for (who, t) in [("ours", ours), ("PIL", theirs)] {
            out.push_str(&format!(
                "  {who:<28}{:>6.2}  {:>6.2}  {:>6.2}\n",
                t[0], t[1], t[2]
            ));
        }
        Ok(out)
    }

    /// CAM images/s of a ResNet34 CAM-head model.
    pub fn cam(&self, args: &CamArgs) -> anyhow::Result<Vec<BenchResult>> {
        tch::set_num_threads(self.threads);
        let mut script = args.reference_args(self.threads);
        script
            .1
            .extend(["--device".into(), device_name(self.device)]);
        let device = self.device;
        let (ours, pytorch) =
            self.side_by_side("cam_resnet34", || cam::ours(args, device), script)?;
        let detail = format!(
            "batch {}, {}×{}, {}",
            args.batch,
            args.size,
            args.size,
            self.where_()
        );
        Ok(vec![BenchResult::new(
            "cam_resnet34",
            detail,
            "images/s",
            ours,
            pytorch,
            CAM_GOAL,
        )])
    }

    /// Every bench with its default options (`stages` as `loader --stages`).
    pub fn all(&self, stages: bool) -> anyhow::Result<Vec<BenchResult>> {
        let mut results = self.train(&TrainArgs::try_parse_defaults()?)?;
        let loader_args = LoaderArgs {
            stages,
            ..LoaderArgs::try_parse_defaults()?
        };
        results.extend(self.loader(&loader_args)?);
        results.extend(self.cam(&CamArgs::try_parse_defaults()?)?);
        results.extend(self.ddp(&DdpArgs::try_parse_defaults()?)?);
        results.extend(self.allreduce(&AllreduceArgs::try_parse_defaults()?)?);
        results.extend(self.scaling(&ScalingArgs::try_parse_defaults()?)?);
        Ok(results)
    }

    /// Group steps/s of a data-parallel group over the TCP ring against
    /// DDP over gloo (CPU, one thread per rank: `--threads` does not apply).
    pub fn ddp(&self, args: &DdpArgs) -> anyhow::Result<Vec<BenchResult>> {
        ensure!(args.ranks >= 1, "--ranks must be at least 1");
        let training = &args.training;
        let name = format!("ddp_{}", training.arch());
        let script = training.reference_args(args.ranks, 1);
        let (ours, pytorch) = self.side_by_side(&name, || ddp::ours(args), script)?;
        let detail = format!(
            "{} ranks × batch {}, {}×{}, 1 thread each, ring vs gloo",
            args.ranks, training.batch, training.size, training.size
        );
        Ok(vec![BenchResult::new(
            name, detail, "steps/s", ours, pytorch, DDP_GOAL,
        )])
    }

    /// Group images/s at each group size of `args.ranks` (`--threads` per
    /// rank) against DDP over gloo, with scaling efficiency and our step
    /// breakdown; one result per group size.
    pub fn scaling(&self, args: &ScalingArgs) -> anyhow::Result<Vec<BenchResult>> {
        ensure!(
            !args.ranks.is_empty() && args.ranks.iter().all(|&n| n >= 1),
            "--ranks must list group sizes of at least 1"
        );
        let training = &args.training;
        let mut points = Vec::new();
        for &ranks in &args.ranks {
            let name = format!("scaling_{}_{ranks}r", training.arch());
            let mut phases = Vec::new();
            let script = training.reference_args(ranks, self.threads);
            let (ours, pytorch) = self.side_by_side(
                &name,
                || {
                    let run = ddp::group_training(training, ranks, self.threads)?;
                    phases.push(run.phases);
                    Ok(run.steps_per_sec)
                },
                script,
            )?;
            let rounds = phases.len().max(1) as f64;
            let phases = phases
                .into_iter()
                .fold(ddp::StepPhases::default(), |sum, p| sum.plus(&p))
                .divided(rounds);
            let images = (training.batch * ranks as i64) as f64;
            points.push(ScalingPoint {
                ranks,
                ours: ours.scaled(images),
                pytorch: pytorch.scaled(images),
                phases,
            });
        }
        println!(
            "# scaling: {}, batch {} per rank, {}×{}, {} threads per rank, TCP ring vs DDP over gloo",
            training.arch(),
            training.batch,
            training.size,
            training.size,
            self.threads
        );
        print!("{}", scaling::table(&points));
        let (ours_eff, their_eff) = scaling::efficiencies(&points);
        let results = points
            .into_iter()
            .zip(ours_eff.into_iter().zip(their_eff))
            .map(|(p, (eo, et))| {
                let detail = format!(
                    "{} rank{} × batch {}, {}×{}, {} threads each, efficiency {eo:.2} vs {et:.2}",
                    p.ranks,
                    if p.ranks == 1 { "" } else { "s" },
                    training.batch,
                    training.size,
                    training.size,
                    self.threads
                );
                let extra = serde_json::json!({
                    "ranks": p.ranks,
                    "threads_per_rank": self.threads,
                    "efficiency_ours": eo,
                    "efficiency_pytorch": et,
                    "ours_step_seconds": p.phases,
                });
                BenchResult::new(
                    format!("scaling_{}_{}r", training.arch(), p.ranks),
                    detail,
                    "images/s",
                    p.ours,
                    p.pytorch,
                    DDP_GOAL,
                )
                .with_extra(extra)
            })
            .collect();
        Ok(results)
    }

    /// All-reduce time and bandwidth per size of the active communicator
    /// against `torch.distributed` (gloo, or NCCL on GPUs): prints the
    /// nccl-tests table and returns one result, the bus bandwidth at the
    /// largest size, with every size in its JSON. Fails after printing the
    /// table when one of our sums was wrong.
    pub fn allreduce(&self, args: &AllreduceArgs) -> anyhow::Result<Vec<BenchResult>> {
        let ranks = args.ranks()?;
        let sizes = args.sizes()?;
        ensure!(
            !sizes.is_empty(),
            "no message sizes between --min-bytes and --max-bytes"
        );
        let script = args.reference_args(ranks, &sizes);
        let (mut mine, mut theirs): (Vec<SizeTiming>, Vec<SizeTiming>) = (Vec::new(), Vec::new());
        for round in 1..=self.rounds {
            eprintln!("[allreduce] round {round}/{}: ours", self.rounds);
            let ours = allreduce::ours(args, ranks).context("allreduce: our side failed")?;
            pool(&mut mine, ours);
            eprintln!("[allreduce] round {round}/{}: {}", self.rounds, script.0);
            let (line, value) = self.reference.run_json(script.0, &script.1)?;
            let rows: Vec<SizeTiming> = serde_json::from_value(value["sizes"].clone())
                .with_context(|| format!("{} printed {line:?}, without sizes", script.0))?;
            ensure!(
                rows.iter()
                    .map(|r| r.bytes)
                    .eq(sizes.iter().map(|s| s.bytes)),
                "{} ran other sizes than ours",
                script.0
            );
            pool(&mut theirs, rows);
        }
        print!("{}", allreduce::table(args, ranks, &mine, &theirs));
        let wrong: u64 = mine.iter().map(|r| r.wrong).sum();
        ensure!(
            wrong == 0,
            "allreduce: {wrong} elements of our sums were wrong"
        );
        Ok(vec![allreduce::summary(
            args,
            ranks,
            &mine,
            &theirs,
            ALLREDUCE_GOAL,
        )?])
    }
}

/// Adds a round's per-size timings to the pooled ones (same sizes, same
/// order): samples appended, wrong counts added.
fn pool(pooled: &mut Vec<SizeTiming>, round: Vec<SizeTiming>) {
    if pooled.is_empty() {
        *pooled = round;
        return;
    }
    for (p, r) in pooled.iter_mut().zip(round) {
        p.samples_us.extend(r.samples_us);
        p.wrong += r.wrong;
    }
}

/// The defaults of a subcommand's options, as clap would parse them from
/// an empty command line (one source of truth for `all`).
trait ParseDefaults: clap::Parser {
    fn try_parse_defaults() -> anyhow::Result<Self> {
        Ok(Self::try_parse_from(["camshaft-bench"])?)
    }
}

impl<T: clap::Parser> ParseDefaults for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_parses_the_defaults_of_the_group_benches() {
        let scaling = ScalingArgs::try_parse_defaults().expect("scaling defaults");
        assert_eq!(scaling.ranks, [1, 2]);
        assert_eq!(scaling.training.batch, 32);
        let ddp = DdpArgs::try_parse_defaults().expect("ddp defaults");
        assert_eq!(ddp.ranks, 2);
        let allreduce = AllreduceArgs::try_parse_defaults().expect("allreduce defaults");
        let sizes = allreduce.sizes().expect("sizes");
        assert_eq!(sizes.first().map(|s| s.bytes), Some(8));
        assert_eq!(sizes.last().map(|s| s.bytes), Some(64 << 20));
        assert_eq!(allreduce.ranks().expect("ring ranks"), 2);
    }
}
