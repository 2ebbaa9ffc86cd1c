//! Flags and config files → service configs, and the process around them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use camshaft_proto::security::TlsConfig;
use camshaft_proto::v1::DeviceKind;
use camshaft_store::{EmbeddedConfig, EmbeddedStore, EtcdConfig, EtcdStore, Store};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "camshaft",
    version,
    about = "Data-parallel training and CAM explanations over gRPC"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole cluster in one process: coordinator, workers, explainer
    /// and the embedded store under --data-dir.
    Up(UpArgs),
    /// The coordinator alone.
    Coordinator(ServiceArgs),
    /// One worker, connecting to a coordinator.
    Worker(WorkerArgs),
    /// The explainer alone.
    Explainer(ServiceArgs),
}

#[derive(clap::Args, Debug)]
struct Common {
    /// A TOML file with `data_dir`, `store`, `auth_token_file`,
    /// `auth_tokens_file`, `worker_token_file`, and `[tls]`,
    /// `[etcd]`, `[coordinator]`, `[worker]`, `[explainer]` tables (the
    /// services' config fields); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the embedded store keeps its files (`<dir>/store`).
    #[arg(long, env = "CAMSHAFT_HOME")]
    data_dir: Option<PathBuf>,
    /// The store: `embedded` (files under --data-dir; one process only) or
    /// `etcd://host:port[,host:port][/prefix/]` (`etcds://` for TLS; user,
    /// password and certificates from the config file's `[etcd]` table).
    #[arg(long, env = "CAMSHAFT_STORE")]
    store: Option<String>,
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    common: Common,
    /// The coordinator's address (`ctl --coordinator`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    coordinator_addr: String,
    /// The explainer's address (`ctl --explainer`).
    #[arg(long, default_value = "127.0.0.1:50052")]
    explainer_addr: String,
    /// Worker processes to run (each trains one job at a time).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Workers' devices: auto (every GPU, else the CPU), cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// The explainer's device: cpu, cuda or cuda:N (default: cuda:0 when
    /// there is a GPU, else cpu).
    #[arg(long)]
    explainer_device: Option<String>,
    /// Where workers find and download data sets and weights.
    #[arg(long)]
    dataset_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ServiceArgs {
    #[command(flatten)]
    common: Common,
    /// Address to serve on.
    #[arg(long)]
    listen: Option<String>,
    /// The explainer's device (explainer only).
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args, Debug)]
struct WorkerArgs {
    #[command(flatten)]
    common: Common,
    /// The coordinator's address.
    #[arg(long, env = "CAMSHAFT_COORDINATOR")]
    coordinator: Option<String>,
    /// A stable worker id.
    #[arg(long)]
    worker_id: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Where data sets and weights are found and downloaded.
    #[arg(long)]
    dataset_dir: Option<PathBuf>,
    /// The worker credential the coordinator asks for on WorkerLink
    /// (default: `<data_dir>/worker-token` when it exists, as `camshaft up`
    /// and `camshaft coordinator` write it).
    #[arg(long, env = "CAMSHAFT_WORKER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// Where `camshaft up` and `camshaft coordinator` keep the workers'
/// credential when no `worker_token_file` is configured.
const WORKER_TOKEN: &str = "worker-token";

/// Where `camshaft up` and `camshaft coordinator` write the jobs'
/// TensorBoard runs (`<data_dir>/tensorboard/<job_id>/`) when the
/// coordinator's `tensorboard_dir` is absent.
const TENSORBOARD: &str = "tensorboard";

/// The TOML config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    /// `embedded` or an `etcd://` URL (see `--store`).
    store: Option<String>,
    /// etcd settings beyond the URL's endpoints and prefix (credentials,
    /// TLS, timeouts, retention).
    etcd: Option<camshaft_store::EtcdConfig>,
    /// TLS of every service (and what workers trust) unless a service's
    /// table has a `tls` of its own.
    tls: TlsConfig,
    /// The bearer token file (one editor) of every service unless a
    /// service's table names its own.
    auth_token_file: Option<PathBuf>,
    /// The tokens file (`token,name,role` lines) of every service unless a
    /// service's table names its own.
    auth_tokens_file: Option<PathBuf>,
    /// The workers' credential: what the coordinator accepts on WorkerLink
    /// and what workers present, unless their tables name their own.
    worker_token_file: Option<PathBuf>,
    coordinator: camshaft_coordinator::Config,
    worker: camshaft_worker::Config,
    explainer: camshaft_explainer::Config,
}

impl Common {
    fn load(&self) -> anyhow::Result<FileConfig> {
        let mut file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        if let Some(dir) = &self.data_dir {
            file.data_dir = Some(dir.clone());
        }
        if let Some(store) = &self.store {
            file.store = Some(store.clone());
        }
        file.inherit_security();
        Ok(file)
    }
}

impl FileConfig {
    /// The top-level `[tls]`, `auth_token_file` and `auth_tokens_file` go
    /// to every service whose own table leaves them unset, and
    /// `worker_token_file` to the coordinator and (as the token they
    /// present) the workers; workers take the client side of `[tls]`
    /// (`ca`, `server_name`): a client certificate for mutual TLS goes in
    /// `[worker.tls]`.
    fn inherit_security(&mut self) {
        let token = &self.auth_token_file;
        if self.coordinator.server.tls.is_empty() {
            self.coordinator.server.tls = self.tls.clone();
        }
        if self.coordinator.server.auth_token_file.is_none() {
            self.coordinator.server.auth_token_file.clone_from(token);
        }
        if self.coordinator.server.auth_tokens_file.is_none() {
            self.coordinator
                .server
                .auth_tokens_file
                .clone_from(&self.auth_tokens_file);
        }
        if self.coordinator.worker_token_file.is_none() {
            self.coordinator
                .worker_token_file
                .clone_from(&self.worker_token_file);
        }
        if self.explainer.server.tls.is_empty() {
            self.explainer.server.tls = self.tls.clone();
        }
        if self.explainer.server.auth_token_file.is_none() {
            self.explainer.server.auth_token_file.clone_from(token);
        }
        if self.explainer.server.auth_tokens_file.is_none() {
            self.explainer
                .server
                .auth_tokens_file
                .clone_from(&self.auth_tokens_file);
        }
        if self.worker.tls.is_empty() && !self.tls.is_empty() {
            self.worker.tls = TlsConfig {
                // A server without a CA of its own: trust its certificate.
                ca: self.tls.ca.clone().or_else(|| self.tls.cert.clone()),
                server_name: self.tls.server_name.clone(),
                ..TlsConfig::default()
            };
        }
        if self.worker.auth_token_file.is_none() {
            self.worker
                .auth_token_file
                .clone_from(&self.worker_token_file);
        }
    }

    /// The data directory: configured, or the default.
    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// A coordinator with no `worker_token_file` configured gets
    /// `<data_dir>/worker-token`, created (0600) if missing: a one-machine
    /// cluster needs no set-up, and WorkerLink still admits only holders
    /// of the file (or of a tokens file's worker tokens).
    fn provision_worker_token(&mut self) -> anyhow::Result<()> {
        if self.coordinator.worker_token_file.is_some() {
            return Ok(());
        }
        let dir = self.data_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the data dir {}", dir.display()))?;
        let path = dir.join(WORKER_TOKEN);
        camshaft_proto::security::ensure_token_file(&path)?;
        tracing::info!(path = %path.display(), "workers' credential");
        self.coordinator.worker_token_file = Some(path);
        Ok(())
    }

    /// Opens the configured store: etcd for an `etcd://` URL, else the
    /// embedded store under the data dir.
    async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        match self.store.as_deref() {
            Some(url) if url.starts_with("etcd://") || url.starts_with("etcds://") => {
                let from_url = EtcdConfig::from_url(url)?;
                let config = match &self.etcd {
                    Some(file) => EtcdConfig {
                        endpoints: from_url.endpoints,
                        prefix: from_url.prefix,
                        tls: file.tls.clone().or(from_url.tls),
                        ..file.clone()
                    },
                    None => from_url,
                };
                let store = EtcdStore::connect(config)
                    .await
                    .with_context(|| format!("connecting to the etcd store at {url}"))?;
                Ok(Arc::new(store))
            }
            None | Some("embedded") => open_embedded(self.data_dir.as_deref()).await,
            Some(other) => bail!("--store {other:?} is neither `embedded` nor an etcd:// URL"),
        }
    }
}

fn default_data_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("camshaft");
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/camshaft"),
        None => PathBuf::from("camshaft-data"),
    }
}

async fn open_embedded(data_dir: Option<&Path>) -> anyhow::Result<Arc<dyn Store>> {
    let dir = data_dir
        .map_or_else(default_data_dir, Path::to_path_buf)
        .join("store");
    let store = EmbeddedStore::open(EmbeddedConfig::new(&dir))
        .await
        .with_context(|| format!("opening the embedded store at {}", dir.display()))?;
    Ok(Arc::new(store))
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what} (is another camshaft running?)")
    })
}

/// A shutdown signal (Ctrl-C or SIGTERM) every service can wait on.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutting down");
        tx.send_replace(true);
    });
    rx
}

async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Runs the chosen command to its end.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Up(up) => run_up(up).await,
        Command::Coordinator(a) => {
            let mut file = a.common.load()?;
            file.provision_worker_token()?;
            let mut config = file.coordinator.clone();
            if let Some(listen) = a.listen {
                config.listen_addr = listen;
            }
            config
                .tensorboard_dir
                .get_or_insert_with(|| file.data_dir().join(TENSORBOARD));
            config.validate()?;
            let store = file.open_store().await?;
            let listener = bind("coordinator", &config.listen_addr).await?;
            camshaft_coordinator::serve(config, store, listener, until(shutdown_signal())).await?;
            Ok(())
        }
        Command::Explainer(a) => {
            let file = a.common.load()?;
            let mut config = file.explainer.clone();
            if let Some(listen) = a.listen {
                config.listen_addr = listen;
            }
            if let Some(device) = a.device {
                config.device = device;
            }
            config.validate()?;
            let store = file.open_store().await?;
            let listener = bind("explainer", &config.listen_addr).await?;
            camshaft_explainer::serve(config, store, listener, until(shutdown_signal())).await?;
            Ok(())
        }
        Command::Worker(a) => {
            let file = a.common.load()?;
            let default_token = file.data_dir().join(WORKER_TOKEN);
            // Named data dir: its credential is used even if the
            // coordinator beside this worker has not written it yet (the
            // worker reads it at every connection).
            let data_dir_named = file.data_dir.is_some();
            let mut config = file.worker;
            if let Some(c) = a.coordinator {
                config.coordinator = c;
            }
            if let Some(id) = a.worker_id {
                config.worker_id = id;
            }
            if let Some(d) = a.device {
                config.device = d;
            }
            if let Some(d) = a.dataset_dir {
                config.data_dir = Some(d);
            }
            if let Some(t) = a.token_file {
                config.auth_token_file = Some(t);
            }
            if config.auth_token_file.is_none() && (data_dir_named || default_token.is_file()) {
                config.auth_token_file = Some(default_token);
            }
            config.validate()?;
            camshaft_worker::run(config, until(shutdown_signal())).await?;
            Ok(())
        }
    }
}

async fn run_up(up: UpArgs) -> anyhow::Result<()> {
    let mut file = up.common.load()?;
    if up.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let data_dir = file.data_dir();
    file.provision_worker_token()?;
    if file.worker.auth_token_file.is_none() {
        file.worker
            .auth_token_file
            .clone_from(&file.coordinator.worker_token_file);
    }
    let store = FileConfig {
        data_dir: Some(data_dir.clone()),
        ..file.clone()
    }
    .open_store()
    .await?;

    let mut coordinator = file.coordinator;
    coordinator.listen_addr = up.coordinator_addr;
    coordinator
        .tensorboard_dir
        .get_or_insert_with(|| data_dir.join(TENSORBOARD));
    coordinator.validate()?;
    let mut explainer = file.explainer;
    explainer.listen_addr = up.explainer_addr;
    explainer.device = match up.explainer_device {
        Some(d) => d,
        None if tch::Cuda::is_available() => "cuda:0".into(),
        None => "cpu".into(),
    };
    explainer.validate()?;
    let coordinator_listener = bind("coordinator", &coordinator.listen_addr).await?;
    let explainer_listener = bind("explainer", &explainer.listen_addr).await?;
    let coordinator_addr = coordinator_listener.local_addr()?;
    let explainer_addr = explainer_listener.local_addr()?;

    let mut worker = file.worker;
    worker.coordinator = coordinator_addr.to_string();
    // The console's explain page reaches the explainer through the
    // coordinator, over the same TLS the workers use to reach it.
    if coordinator.explainer_address.is_empty() {
        coordinator.explainer_address = explainer_addr.to_string();
        coordinator.explainer_tls = worker.tls.clone();
    }
    if let Some(d) = up.device {
        worker.device = d;
    }
    if let Some(d) = up.dataset_dir {
        worker.data_dir = Some(d);
    }
    worker.validate()?;
    let devices = camshaft_worker::devices(&worker)?;

    let console = format!(
        "{}://{coordinator_addr}/",
        if coordinator.server.tls.cert.is_some() {
            "https"
        } else {
            "http"
        }
    );
    let stop = shutdown_signal();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(named(
        "coordinator",
        camshaft_coordinator::serve(
            coordinator,
            Arc::clone(&store),
            coordinator_listener,
            until(stop.clone()),
        ),
    ));
    tasks.spawn(named(
        "explainer",
        camshaft_explainer::serve(
            explainer,
            Arc::clone(&store),
            explainer_listener,
            until(stop.clone()),
        ),
    ));
    for i in 0..up.workers {
        let mut config = worker.clone();
        if !config.worker_id.is_empty() && up.workers > 1 {
            config.worker_id = format!("{}-{i}", config.worker_id);
        }
        if i > 0 {
            // One metrics port per process: the first worker's.
            config.metrics_listen.clear();
        }
        tasks.spawn(named(
            "worker",
            camshaft_worker::run(config, until(stop.clone())),
        ));
    }
    // One line on stdout once every listener is bound, for scripts and tests.
    println!(
        "camshaft up: coordinator {coordinator_addr}, explainer {explainer_addr}, {} worker(s) on {}, data {}, console {console}",
        up.workers,
        devices
            .iter()
            .map(|d| match d.kind() {
                DeviceKind::Cuda => format!("cuda:{}", d.index),
                _ => "cpu".to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        data_dir.display()
    );
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(name)) => tracing::info!(service = name, "stopped"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a service failed; stopping the others");
                failed.get_or_insert(e);
            }
            Err(e) => {
                failed.get_or_insert(anyhow::anyhow!("a service panicked: {e}"));
            }
        }
        if failed.is_some() {
            // Stop the rest: this process is no longer a whole cluster.
            tasks.abort_all();
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A service's future, its error named, its success the service's name.
async fn named<E: Into<anyhow::Error>>(
    name: &'static str,
    service: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<&'static str> {
    service
        .await
        .map_err(|e| e.into().context(format!("the {name} failed")))?;
    Ok(name)
}
