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

#[test]
fn separate_processes_on_etcd_survive_a_killed_coordinator() {
    let etcd = EtcdServer::start();
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let coordinator = format!("127.0.0.1:{}", free_port());
    let explainer = format!("127.0.0.1:{}", free_port());
    let coordinator_args = ["coordinator", "--listen", &coordinator, "--store", &store];
    let first = service(dir.path(), "coordinator", &coordinator_args);
    let _worker = service(
        dir.path(),
        "worker",
        &["worker", "--coordinator", &coordinator, "--device", "cpu"],
    );
    let _explainer = service(
        dir.path(),
        "explainer",
        &["explainer", "--listen", &explainer, "--store", &store],
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while stdout(&ctl(&coordinator, &explainer, &["workers", "list"]))
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the worker did not register");
        std::thread::sleep(Duration::from_millis(200));
    }
    let submit = ctl(
        &coordinator,
        &explainer,
        &[
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
        ],
    );
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let job = stdout(&submit).trim().to_string();

    // Kill -9 the coordinator once a checkpoint is in etcd, start another.
    wait_for(&coordinator, &job, "\ncheckpoint:", 120, dir.path());
    drop(first);
    let _second = service(dir.path(), "coordinator-2", &coordinator_args);

    // It finds the job in etcd, requeues it, the worker reconnects, and the
    // job resumes from its checkpoint and finishes.
    let done = wait_for(&coordinator, &job, "state:    succeeded", 180, dir.path());
    assert!(done.contains("coordinator_restart"), "{done}");
    let job_json = stdout(&ctl(
        &coordinator,
        &explainer,
        &["jobs", "get", &job, "--json"],
    ));
    let parsed: serde_json::Value = serde_json::from_str(&job_json).unwrap();
    assert_eq!(parsed["attempt"], 2, "{job_json}");
    assert_eq!(
        parsed["history"].as_array().unwrap().last().unwrap()["epoch"],
        3
    );

    // The explainer, another process, serves the version from etcd.
    let images = synthetic_images(&dir.path().join("images"), 64, 2).unwrap();
    let cams = dir.path().join("cams");
    let out = ctl(
        &coordinator,
        &explainer,
        &[
            "explain",
            "--model",
            "synthetic@latest",
            "--out",
            cams.to_str().unwrap(),
            images[0].to_str().unwrap(),
            images[1].to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).matches("predicted=").count(), 2);
}
