//! The harness of Camshaft's whole-cluster tests: [`Cluster`] starts the
//! real `camshaft up` binary on loopback ports (port 0, read back from its
//! first stdout line) over a data directory, [`Cluster::ctl`] runs the real
//! `ctl` binary against it, and [`Cluster::coordinator`] /
//! [`Cluster::explainer`] give gRPC clients for assertions the CLI does not
//! print.
//!
//! The binaries are taken from the cargo target directory this test runs
//! from. `cargo test --workspace` builds them (the `camshaft` and
//! `camshaft-ctl` packages have integration tests of their own, which makes
//! cargo build their binaries first); alone, build them with
//! `cargo build -p camshaft -p camshaft-ctl`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use tonic::transport::Channel;

/// A binary of this workspace, next to the running test's target dir.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary is not in target/<profile>/deps")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is not built; run `cargo build -p camshaft -p camshaft-ctl` (cargo test --workspace does it)",
            path.display()
        );
    }
    Ok(path)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `.venv` python with torch and torchvision (`scripts/setup`).
pub fn python() -> PathBuf {
    std::env::var_os("CAMSHAFT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// A free loopback port (bound, then released: good enough for tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `camshaft <args>` with `RUST_LOG=info`, its log (stderr) in `log`.
pub fn spawn_camshaft(args: &[&str], log: &Path) -> anyhow::Result<Child> {
    Command::new(binary("camshaft")?)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting camshaft {args:?}"))
}

/// A `ctl` command pointed at these addresses (add arguments, environment).
pub fn ctl_command(coordinator: &str, explainer: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(binary("ctl")?);
    command
        .env("CAMSHAFT_COORDINATOR", coordinator)
        .env("CAMSHAFT_EXPLAINER", explainer);
    Ok(command)
}

/// Runs `ctl <args>` against these addresses.
pub fn ctl(coordinator: &str, explainer: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(ctl_command(coordinator, explainer)?.args(args).output()?)
}

/// A running `camshaft up`, and any extra `camshaft worker` processes.
pub struct Cluster {
    child: Option<Child>,
    workers: Vec<Child>,
    /// `host:port` of the coordinator.
    pub coordinator_addr: String,
    /// `host:port` of the explainer.
    pub explainer_addr: String,
    /// The data directory (store under `store/`).
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Environment of every [`Cluster::ctl`] (TLS and token settings).
    ctl_env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `camshaft up` over `data_dir` with `extra` flags and waits
    /// until it has bound its ports.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with(data_dir, extra, &[])
    }

    /// [`Cluster::start`], every `ctl` run with `ctl_env` (e.g.
    /// `CAMSHAFT_TLS_CA`, `CAMSHAFT_TOKEN_FILE` for a secured cluster).
    pub fn start_with(
        data_dir: &Path,
        extra: &[&str],
        ctl_env: &[(&str, &Path)],
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(data_dir)?;
        let log = data_dir.join(format!(
            "camshaft-up-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let mut child = Command::new(binary("camshaft")?)
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--coordinator-addr", "127.0.0.1:0"])
            .args(["--explainer-addr", "127.0.0.1:0"])
            .args(["--device", "cpu", "--explainer-device", "cpu"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting camshaft up")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        // "camshaft up: coordinator A, explainer B, ..."
        let addr_after = |key: &str| {
            line.split(key)
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .map(|a| a.trim().to_string())
        };
        let (Some(coordinator_addr), Some(explainer_addr)) =
            (addr_after("coordinator "), addr_after("explainer "))
        else {
            let _ = child.kill();
            bail!(
                "camshaft up did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let cluster = Cluster {
            child: Some(child),
            workers: Vec::new(),
            coordinator_addr,
            explainer_addr,
            data_dir: data_dir.to_path_buf(),
            log,
            ctl_env: ctl_env
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.display().to_string()))
                .collect(),
        };
        cluster.wait_for_workers(1)?;
        Ok(cluster)
    }

    /// Starts one more worker as its own `camshaft worker` process (on the
    /// CPU) and waits until the coordinator lists `expected` workers; returns
    /// its index for [`Cluster::kill_worker`].
    pub fn add_worker(&mut self, expected: usize) -> anyhow::Result<usize> {
        let log = self
            .data_dir
            .join(format!("worker-{}.log", self.workers.len()));
        let child = spawn_camshaft(
            &[
                "worker",
                "--coordinator",
                &self.coordinator_addr,
                "--device",
                "cpu",
                // The credential `camshaft up` wrote for its workers.
                "--data-dir",
                &self.data_dir.display().to_string(),
            ],
            &log,
        )?;
        self.workers.push(child);
        self.wait_for_workers(expected)?;
        Ok(self.workers.len() - 1)
    }

    /// Stops an extra worker process with SIGTERM (it drains: leaves
    /// cleanly) and waits for it to exit.
    pub fn stop_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let child = self.workers.get_mut(index).context("no such worker")?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let status = child.wait()?;
        if !status.success() {
            bail!("the worker exited with {status} after SIGTERM");
        }
        Ok(())
    }

    /// Kills an extra worker process with SIGKILL.
    pub fn kill_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let child = self.workers.get_mut(index).context("no such worker")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ctl` against this cluster.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(ctl_command(&self.coordinator_addr, &self.explainer_addr)?
            .args(args)
            .envs(self.ctl_env.iter().map(|(k, v)| (k, v)))
            .output()?)
    }

    /// Runs `ctl` and fails with its output unless it exits 0; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ctl(args)?;
        if !out.status.success() {
            bail!(
                "ctl {args:?} failed ({}):\n{}{}\nserver log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until `n` workers are registered.
    pub fn wait_for_workers(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(out) = self.ctl(&["workers", "list"]) {
                let text = String::from_utf8_lossy(&out.stdout);
                if out.status.success() && text.lines().skip(1).count() >= n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{n} worker(s) did not register in 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A coordinator client.
    pub async fn coordinator(&self) -> anyhow::Result<CoordinatorClient<Channel>> {
        Ok(
            CoordinatorClient::connect(format!("http://{}", self.coordinator_addr))
                .await?
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// An explainer client.
    pub async fn explainer(&self) -> anyhow::Result<ExplainerClient<Channel>> {
        Ok(
            ExplainerClient::connect(format!("http://{}", self.explainer_addr))
                .await?
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// The `camshaft up` process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the `camshaft up` process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops the cluster with SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("camshaft up exited with {status}:\n{}", self.log());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "camshaft up did not stop within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the cluster with SIGKILL (nothing gets to clean up).
    pub fn kill(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.child.iter_mut().chain(self.workers.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `n` validation images of the synthetic set (`size`² PNGs) under
/// `dir` and returns their paths.
pub fn synthetic_images(dir: &Path, size: u32, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    let config = camshaft_data::SyntheticConfig {
        seed: 7,
        train_len: 0,
        valid_len: n,
        image_size: size,
        num_classes: 2,
    };
    camshaft_data::write_folder(&config, dir)?;
    let mut paths = Vec::new();
    for class in ["circle", "square"] {
        let class_dir = dir.join("valid").join(class);
        if class_dir.is_dir() {
            for entry in std::fs::read_dir(&class_dir)? {
                paths.push(entry?.path());
            }
        }
    }
    paths.sort();
    Ok(paths)
}
