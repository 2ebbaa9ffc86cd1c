//! The command line, parsed once by clap into these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::address::{DEFAULT_COORDINATOR, DEFAULT_EXPLAINER};
use crate::job_spec::JobOptions;

/// ctl: the command line client of a Camshaft cluster.
#[derive(Debug, Parser)]
#[command(name = "ctl", version, about, long_about = None)]
pub struct Cli {
    /// The coordinator's address (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CAMSHAFT_COORDINATOR",
        default_value = DEFAULT_COORDINATOR,
        value_name = "ADDR"
    )]
    pub coordinator: String,
    /// The explainer's address (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CAMSHAFT_EXPLAINER",
        default_value = DEFAULT_EXPLAINER,
        value_name = "ADDR"
    )]
    pub explainer: String,
    /// TLS and token options for both servers.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach servers that use TLS or ask for a bearer token.
#[derive(Debug, Default, Args)]
pub struct SecurityArgs {
    /// Speak TLS, trusting this CA bundle (PEM) for the servers'
    /// certificates. (`https://` addresses use TLS with the system's roots.)
    #[arg(
        long,
        global = true,
        help_heading = "Security",
        env = "CAMSHAFT_TLS_CA",
        value_name = "PEM"
    )]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that ask for one (mutual TLS).
    #[arg(
        long,
        global = true,
        help_heading = "Security",
        env = "CAMSHAFT_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        global = true,
        help_heading = "Security",
        env = "CAMSHAFT_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name to verify in the servers' certificates, when it is not the
    /// address's host.
    #[arg(
        long,
        global = true,
        help_heading = "Security",
        env = "CAMSHAFT_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
    /// A file holding the bearer token the servers ask for.
    #[arg(
        long,
        global = true,
        help_heading = "Security",
        env = "CAMSHAFT_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
}

impl SecurityArgs {
    /// The TLS settings as the services' config spells them.
    pub fn tls(&self) -> camshaft_proto::security::TlsConfig {
        camshaft_proto::security::TlsConfig {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: None,
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a training job; prints its id (or follows it with --wait).
    SubmitJob(Box<SubmitJobArgs>),
    /// List, inspect, follow and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The model registry: list, inspect, alias, delete, import.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The workers the coordinator knows.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// CAM overlays of image files from the explainer.
    Explain(ExplainArgs),
    /// Benchmark the cluster: training throughput and scaling, time to
    /// accuracy, explainer throughput and latency.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// What the coordinator and the explainer say about themselves.
    Status {
        /// Print the servers' answers as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ctl submit-job`.
#[derive(Debug, Args)]
pub struct SubmitJobArgs {
    /// JSON file of job options (keys as the long flags, `-` or `_`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// The job's options.
    #[command(flatten)]
    pub options: JobOptions,
    /// Follow the job until it ends; exit non-zero unless it succeeds.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, also print the ranks' log lines.
    #[arg(long, requires = "wait")]
    pub logs: bool,
    /// Idempotency key: submitting again with the same key (as the same
    /// principal) returns the job the first submit created, so a retried
    /// command cannot start a second job.
    #[arg(long, value_name = "KEY")]
    pub request_id: Option<String>,
}

/// `ctl jobs ...`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// Only jobs in these states (pending, running, restarting, succeeded,
        /// failed, cancelled); repeatable or comma-separated.
        #[arg(long = "state", value_name = "STATE", value_delimiter = ',')]
        states: Vec<String>,
        /// Print the jobs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job: state, spec, epoch table, failures, model version, error.
    Get {
        /// The job id, e.g. j-3.
        id: String,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a job's events until it ends (as `submit-job --wait`).
    Watch {
        /// The job id.
        id: String,
        /// Also print the ranks' log lines.
        #[arg(long)]
        logs: bool,
    },
    /// A Chrome-trace timeline (chrome://tracing, Perfetto) of an epoch's
    /// last steps on every rank, from a job submitted with --profile-steps;
    /// prints the epoch's step-time breakdown on stderr.
    Trace {
        /// The job id.
        id: String,
        /// The epoch (default: the last one profiled).
        #[arg(long)]
        epoch: Option<u32>,
        /// Write the trace here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Cancel a pending or running job.
    Cancel {
        /// The job id.
        id: String,
        /// Recorded as the job's error.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `ctl models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Registered versions, optionally of one model name.
    List {
        /// Only versions of this name.
        name: Option<String>,
        /// Print the versions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One version: `name` (latest), `name@alias` or `name:version`.
    Get {
        /// The model reference.
        #[arg(value_name = "REF")]
        reference: String,
        /// Print the version as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Point an alias at a version.
    Alias {
        /// The model name.
        name: String,
        /// The alias to create or move.
        alias: String,
        /// The version it should point at.
        version: u64,
    },
    /// Remove an alias.
    Unalias {
        /// The model name.
        name: String,
        /// The alias to remove.
        alias: String,
    },
    /// Delete a version and its weights.
    Delete {
        /// The model name.
        name: String,
        /// The version to delete.
        version: u64,
        /// Also remove aliases that point at it.
        #[arg(long)]
        force: bool,
    },
    /// Register a version from a PyTorch state dict (.pth) or .safetensors file.
    Import(ImportArgs),
    /// Who moved which alias of a model when, newest first.
    History {
        /// The model name.
        name: String,
        /// Only this alias's changes.
        #[arg(long)]
        alias: Option<String>,
        /// At most this many changes.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow registry changes (new, deleted and edited versions, alias
    /// moves) as they happen, one line each (JSON with --json).
    Watch {
        /// Only changes of this model name.
        name: Option<String>,
        /// Print each event as one line of JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a version's tags and description.
    Update {
        /// The model name.
        name: String,
        /// The version.
        version: u64,
        /// Tag to add or overwrite, `key=value` (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Tag key to remove (repeatable).
        #[arg(long = "remove-tag", value_name = "KEY")]
        remove_tags: Vec<String>,
        /// The new description ("" clears it).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
}

/// `ctl models import`.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// Name to register under.
    #[arg(long)]
    pub name: String,
    /// Network body: cnn, resnet18 or resnet34.
    #[arg(long)]
    pub arch: String,
    /// Head: linear (torchvision's fc with bias), fastai, or cam (fc without bias).
    #[arg(long)]
    pub head: String,
    /// Class names in logit order, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub classes: Vec<String>,
    /// Square input side the model was trained on, in pixels.
    #[arg(long, value_name = "PIXELS")]
    pub image_size: u32,
    /// Input normalisation: imagenet or none (default: imagenet for ResNets, none for the CNN).
    #[arg(long, value_name = "NORM")]
    pub normalize: Option<String>,
    /// Alias to point at the new version besides `latest` (repeatable).
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// Data set description recorded in the lineage.
    #[arg(long, value_name = "TEXT")]
    pub dataset: Option<String>,
    /// Metric recorded in the lineage, e.g. accuracy=0.986 (repeatable).
    #[arg(long = "metric", value_name = "NAME=VALUE")]
    pub metrics: Vec<String>,
    /// Tag of the new version, `key=value` (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Description of the new version.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// The weights file: .pth (torch.save of a state dict) or .safetensors.
    #[arg(value_name = "WEIGHTS")]
    pub weights: PathBuf,
}

/// `ctl workers ...`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Workers with their state, devices and assignment.
    List {
        /// Also list lost workers still on record.
        #[arg(long)]
        all: bool,
        /// Print the workers as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ctl explain`.
#[derive(Clone, Debug, Args)]
pub struct ExplainArgs {
    /// The model: `name` (latest), `name@alias` or `name:version`.
    #[arg(long, value_name = "REF")]
    pub model: String,
    /// cam, grad-cam, grad-cam++, xgrad-cam, layer-cam, hires-cam or score-cam
    /// (default: CAM where the head allows it, else Grad-CAM; the answer
    /// names the method that ran). Several, comma-separated,
    /// compare methods: overlays go to a folder per method under --out and the
    /// grid has a column per method.
    #[arg(long, value_name = "METHOD,...", value_delimiter = ',')]
    pub method: Vec<String>,
    /// Class to explain, as an index or a class name (default: the predicted class).
    #[arg(long, value_name = "CLASS")]
    pub target: Option<String>,
    /// Maps per image (the overlay draws the first).
    #[arg(long, value_name = "K")]
    pub top_k: Option<u32>,
    /// Also score each map's faithfulness: deletion (deletion AUC), drop
    /// (average drop in confidence) or road (ROAD, most relevant first);
    /// lower is more faithful.
    #[arg(long, value_name = "METRIC")]
    pub faithfulness: Option<String>,
    /// What removed pixels become in the faithfulness scores: mean
    /// (ImageNet's mean colour, the default), black or blur.
    #[arg(long, value_name = "BASELINE")]
    pub baseline: Option<String>,
    /// Take the maps at this layer (`layer1`..`layer4` for a ResNet, `0`,
    /// `1`, `2` for the CNN; default: the last). Repeat it to fuse several
    /// layers (TorchCAM's fusion, at the finest layer's resolution).
    #[arg(long = "layer", value_name = "LAYER")]
    pub layers: Vec<String>,
    /// Smooth the maps over flipped and rescaled copies of each image
    /// (pytorch-grad-cam's aug_smooth: six times the compute).
    #[arg(long)]
    pub aug_smooth: bool,
    /// Overlay colormap: magma, viridis, inferno or jet.
    #[arg(long)]
    pub colormap: Option<String>,
    /// Overlay opacity in [0, 1].
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Folder for the overlay PNGs.
    #[arg(long, value_name = "DIR", default_value = "cams")]
    pub out: PathBuf,
    /// Also save all overlays as one titled grid (`cat(0.98)`) to this PNG.
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// Columns of the grid (with several methods: one per method).
    #[arg(long, default_value_t = 5)]
    pub cols: u32,
    /// Print each result as a line of JSON (`{"file", "method", "result"}`,
    /// the result an ImageExplanation in proto3 JSON, as the HTTP API
    /// answers it: maps with their raw values) instead of a summary line.
    #[arg(long)]
    pub json: bool,
    /// Image files (PNG or JPEG).
    #[arg(value_name = "IMAGES", required = true)]
    pub images: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn submit_job_flags_parse() {
        let cli = Cli::try_parse_from([
            "ctl",
            "--coordinator",
            "h:1",
            "submit-job",
            "--dataset",
            "synthetic",
            "--model",
            "resnet18",
            "--alias",
            "a",
            "--alias",
            "b",
            "--fine-tune",
            "--lr",
            "2e-3",
        ])
        .unwrap();
        assert_eq!(cli.coordinator, "h:1");
        let Command::SubmitJob(args) = cli.command else {
            panic!("submit-job expected");
        };
        assert_eq!(args.options.aliases, vec!["a", "b"]);
        assert!(args.options.fine_tune);
        assert_eq!(args.options.training.lr, Some(0.002));
        assert!(!args.wait);
    }

    #[test]
    fn states_split_on_commas() {
        let cli =
            Cli::try_parse_from(["ctl", "jobs", "list", "--state", "running,pending"]).unwrap();
        let Command::Jobs(JobsCommand::List { states, .. }) = cli.command else {
            panic!("jobs list expected");
        };
        assert_eq!(states, vec!["running", "pending"]);
    }
}
