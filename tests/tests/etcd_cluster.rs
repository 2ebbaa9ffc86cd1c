//! The services as separate processes on a real etcd: `camshaft
//! coordinator`, `camshaft worker` and `camshaft explainer`, each its own
//! process, sharing nothing but etcd (and the workers only the coordinator).
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use camshaft_cluster_tests::{ctl, free_port, spawn_camshaft, synthetic_images};
use camshaft_store::testing::EtcdServer;

/// A service process, killed and reaped when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Epochs of the test job.
const EPOCHS: u64 = 8;

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
        // A quota far above what the CNN job's checkpoints take (KiBs):
        // running out of it is another test's subject.
        let etcd = EtcdServer::start_with(&["--quota-backend-bytes=1073741824"]);
        // A prefix of its own: nothing is shared even if two tests met on
        // one etcd.
        let store = format!("etcd://{}/{prefix}/", etcd.endpoint());
        let dir = tempfile::tempdir().unwrap();
        let coordinator = format!("127.0.0.1:{}", free_port().unwrap());
        let explainer = format!("127.0.0.1:{}", free_port().unwrap());
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
        let data = cluster.dir.path().display().to_string();
        let worker = cluster.service(
            "worker",
            &[
                "worker",
                "--coordinator",
                &c,
                "--device",
                "cpu",
                "--data-dir",
                &data,
            ],
        );
        let explainer = cluster.service("explainer", &["explainer", "--listen", &e, "--store", &s]);
        cluster.services.extend([worker, explainer]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while stdout(&cluster.ctl(&["workers", "list"])).lines().count() < 2 {
            assert!(
                Instant::now() < deadline,
                "the worker did not register:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// Starts `camshaft <args>` logging to `<name>.log`.
    fn service(&self, name: &str, args: &[&str]) -> Service {
        let log = self.dir.path().join(format!("{name}.log"));
        Service(spawn_camshaft(args, &log).unwrap())
    }

    /// Every log so far: the services' and etcd's.
    fn logs(&self) -> String {
        let mut logs = String::new();
        for name in ["coordinator", "coordinator-2", "worker", "explainer"] {
            let path = self.dir.path().join(format!("{name}.log"));
            if let Ok(text) = std::fs::read_to_string(path) {
                logs += &format!("--- {name}.log\n{text}");
            }
        }
        let etcd = self.etcd.log();
        let tail: Vec<&str> = etcd.lines().rev().take(40).collect();
        logs += "--- etcd.log (last 40 lines)\n";
        logs.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
        logs
    }

    /// Starts a coordinator (logging to `<name>.log`) as services[0].
    fn start_coordinator(&mut self, name: &str) {
        let coordinator = self.service(
            name,
            &[
                "coordinator",
                "--listen",
                &self.coordinator,
                "--store",
                &self.store,
                // Where it keeps the workers' credential (the worker reads
                // it from there).
                "--data-dir",
                &self.dir.path().display().to_string(),
            ],
        );
        if self.services.is_empty() {
            self.services.push(coordinator);
        } else {
            self.services[0] = coordinator;
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.coordinator, &self.explainer, args).unwrap()
    }

    /// Submits a synthetic job of [`EPOCHS`] epochs of the lecture's CNN
    /// (checkpoints of KiBs: these tests are about failures,
    /// not about etcd's quota), each epoch long enough (about a second)
    /// that a failure injected after the first checkpoint lands mid-job;
    /// returns its id.
    fn submit(&self) -> String {
        let submit = self.ctl(&[
            "submit-job",
            "--dataset",
            "synthetic",
            "--model",
            "cnn",
            "--head",
            "linear",
            "--image-size",
            "32",
            "--train-len",
            "1024",
            "--valid-len",
            "64",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
            "--seed",
            "1",
            "--epochs",
            &EPOCHS.to_string(),
        ]);
        assert!(
            submit.status.success(),
            "{}",
            String::from_utf8_lossy(&submit.stderr)
        );
        stdout(&submit).trim().to_string()
    }

    /// `ctl jobs get` until its output contains `text`.
    fn wait_for(&self, job: &str, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.ctl(&["jobs", "get", job]);
            let now = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
            if now.contains(text) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} never showed {text:?}:\n{now}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn job_json(&self, job: &str) -> serde_json::Value {
        serde_json::from_str(&stdout(&self.ctl(&["jobs", "get", job, "--json"]))).unwrap()
    }
}

/// One test at a time: each starts etcd and trains on the same two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
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
        EPOCHS - 1
    );

    // The explainer, another process, serves the version from etcd.
    let images = synthetic_images(&cluster.dir.path().join("images"), 32, 2).unwrap();
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
    assert_eq!(epochs, (0..EPOCHS).collect::<Vec<_>>());
    // And the outage did hit the job's writes, which waited it out.
    let logs = cluster.logs();
    assert!(logs.contains("unavailable; retrying"), "{logs}");
}
