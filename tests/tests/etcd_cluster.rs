//! The services as separate processes on a real etcd: `camshaft
//! coordinator`, `camshaft worker` and `camshaft explainer`, each its own
//! process, sharing nothing but etcd (and the workers only the coordinator).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camshaft_cluster_tests::{binary, synthetic_images};
use camshaft_store::testing::EtcdServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn service(dir: &Path, name: &str, args: &[&str]) -> Service {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Service(
        Command::new(binary("camshaft").unwrap())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn ctl(coordinator: &str, explainer: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("ctl").unwrap())
        .args(args)
        .env("CAMSHAFT_COORDINATOR", coordinator)
        .env("CAMSHAFT_EXPLAINER", explainer)
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ctl jobs get` until its output contains `text`.
fn wait_for(coordinator: &str, job: &str, text: &str, secs: u64, dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = ctl(coordinator, "127.0.0.1:1", &["jobs", "get", job]);
        let text_now = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        if text_now.contains(text) {
            return text_now;
        }
        if Instant::now() > deadline {
            let logs: String = ["coordinator", "coordinator-2", "worker"]
                .iter()
                .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
                .collect();
            panic!("job {job} never showed {text:?}:\n{text_now}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// etcd, a coordinator, a worker and an explainer, each its own process.
struct EtcdCluster {
    etcd: EtcdServer,
    dir: tempfile::TempDir,
    store: String,
    coordinator: String,
    explainer: String,
    services: Vec<Service>,
}

impl EtcdCluster {
    fn start(prefix: &str) -> EtcdCluster {
        let etcd = EtcdServer::start();
        // A prefix of its own: nothing is shared even if two tests met on
        // one etcd.
        let store = format!("etcd://{}/{prefix}/", etcd.endpoint());
        let dir = tempfile::tempdir().unwrap();
        let coordinator = format!("127.0.0.1:{}", free_port());
        let explainer = format!("127.0.0.1:{}", free_port());
        let mut cluster = EtcdCluster {
            etcd,
            dir,
            store,
            coordinator,
            explainer,
            services: Vec::new(),
        };
        cluster.start_coordinator("coordinator");
        let (c, e, s) = (
            cluster.coordinator.clone(),
            cluster.explainer.clone(),
            cluster.store.clone(),
        );
        let worker = service(
            cluster.dir.path(),
            "worker",
            &["worker", "--coordinator", &c, "--device", "cpu"],
        );
        let explainer = service(
            cluster.dir.path(),
            "explainer",
            &["explainer", "--listen", &e, "--store", &s],
        );
        cluster.services.extend([worker, explainer]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while stdout(&cluster.ctl(&["workers", "list"])).lines().count() < 2 {
            assert!(Instant::now() < deadline, "the worker did not register");
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// Starts a coordinator (logging to `<name>.log`) as services[0].
    fn start_coordinator(&mut self, name: &str) {
        let coordinator = service(
            self.dir.path(),
            name,
            &[
                "coordinator",
                "--listen",
                &self.coordinator,
                "--store",
                &self.store,
            ],
        );
        if self.services.is_empty() {
            self.services.push(coordinator);
        } else {
            self.services[0] = coordinator;
        }
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        ctl(&self.coordinator, &self.explainer, args)
    }

    /// Submits the quick 4-epoch synthetic job; returns its id.
    fn submit(&self) -> String {
        let submit = self.ctl(&[
            "submit-job",
            "--dataset",
            "synthetic",
            "--model",
            "resnet18",
            "--head",
            "cam",
            "--image-size",
            "64",
            "--train-len",
            "256",
            "--valid-len",
            "64",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--seed",
            "1",
            "--epochs",
            "4",
        ]);
        assert!(
            submit.status.success(),
            "{}",
            String::from_utf8_lossy(&submit.stderr)
        );
        stdout(&submit).trim().to_string()
    }

    fn wait_for(&self, job: &str, text: &str, secs: u64) -> String {
        wait_for(&self.coordinator, job, text, secs, self.dir.path())
    }

    fn job_json(&self, job: &str) -> serde_json::Value {
        serde_json::from_str(&stdout(&self.ctl(&["jobs", "get", job, "--json"]))).unwrap()
    }
}

/// One test at a time: each starts etcd and trains on the same two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
#[ignore = "in two clean CI runs the etcd this test starts died ~20 s in (cause not found yet); run with --ignored"]
fn separate_processes_on_etcd_survive_a_killed_coordinator() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = EtcdCluster::start("killed-coordinator");
    let job = cluster.submit();

    // Kill -9 the coordinator once a checkpoint is in etcd, start another.
    cluster.wait_for(&job, "\ncheckpoint:", 120);
    cluster.start_coordinator("coordinator-2");

    // It finds the job in etcd, requeues it, the worker reconnects, and the
    // job resumes from its checkpoint and finishes.
    let done = cluster.wait_for(&job, "state:    succeeded", 180);
    assert!(done.contains("coordinator_restart"), "{done}");
    let parsed = cluster.job_json(&job);
    assert_eq!(parsed["attempt"], 2, "{parsed}");
    assert_eq!(
        parsed["history"].as_array().unwrap().last().unwrap()["epoch"],
        3
    );

    // The explainer, another process, serves the version from etcd.
    let images = synthetic_images(&cluster.dir.path().join("images"), 64, 2).unwrap();
    let cams = cluster.dir.path().join("cams");
    let out = cluster.ctl(&[
        "explain",
        "--model",
        "synthetic@latest",
        "--out",
        cams.to_str().unwrap(),
        images[0].to_str().unwrap(),
        images[1].to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).matches("predicted=").count(), 2);
}

#[test]
#[ignore = "in two clean CI runs the etcd this test starts died ~20 s in (cause not found yet); run with --ignored"]
fn an_etcd_outage_mid_job_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = EtcdCluster::start("etcd-outage");
    let job = cluster.submit();
    cluster.wait_for(&job, "\ncheckpoint:", 120);

    // etcd away for a few seconds: clients are told UNAVAILABLE with the
    // reason, the services wait and retry, and carry on when it is back.
    cluster.etcd.stop();
    let out = cluster.ctl(&["models", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNAVAILABLE"), "{err}");
    std::thread::sleep(Duration::from_secs(4));
    cluster.etcd.restart();

    cluster.wait_for(&job, "state:    succeeded", 180);
    let parsed = cluster.job_json(&job);
    // The same attempt finished: no restart, every epoch recorded once.
    assert_eq!(parsed["attempt"], 1, "{parsed}");
    let epochs: Vec<u64> = parsed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [0, 1, 2, 3]);
    // And the outage did hit the job's writes, which waited it out.
    let log = |name: &str| {
        std::fs::read_to_string(cluster.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    };
    let logs = log("coordinator") + &log("worker");
    assert!(logs.contains("unavailable; retrying"), "{logs}");
}
