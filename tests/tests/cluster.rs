//! Whole-cluster tests: the real `camshaft up` process on loopback ports,
//! driven by the real `ctl` and by gRPC clients. Training runs on the
//! synthetic shapes (64×64, a few hundred images) so a job takes seconds.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use camshaft_cluster_tests::{Cluster, python, repo_root, synthetic_images};
use camshaft_proto::v1::{
    self, Arch, DatasetKind, DatasetSpec, ExplainMethod, GetJobRequest, GetModelRequest, Head,
    ImageInput, JobSpec, JobState, ListModelsRequest, ResizeMethod, SubmitJobRequest,
    WatchJobRequest, job_event::Event,
};
use tonic::Code;

/// One cluster test at a time: each trains on the same two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `ctl submit-job` flags of a small, quick synthetic job.
const QUICK_JOB: &[&str] = &[
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
];

fn quick_job(epochs: &str) -> Vec<&str> {
    let mut args = QUICK_JOB.to_vec();
    args.extend(["--epochs", epochs]);
    args
}

async fn job(cluster: &Cluster, id: &str) -> v1::Job {
    let mut client = cluster.coordinator().await.unwrap();
    client
        .get_job(GetJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
}

/// Waits until the job is in one of `states`.
fn wait_for_state(cluster: &Cluster, id: &str, states: &[JobState], secs: u64) -> v1::Job {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job = block_on(job(cluster, id));
        if states.contains(&job.state()) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is still {:?} after {secs} s:\n{}",
            job.state(),
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn a_job_runs_from_submit_to_registered_version_to_explained_images() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), &[]).unwrap();

    // The epoch table streams while the job runs; the version is registered.
    // (Squish, as the version then records: the synthetic images are square,
    // so it trains as a crop would.)
    let mut args = quick_job("2");
    args.extend(["--resize", "squish", "--wait"]);
    let out = cluster.ctl_ok(&args).unwrap();
    assert!(
        out.contains("epoch  train_loss  valid_loss  accuracy  time   images/s"),
        "{out}"
    );
    assert!(
        out.contains("registered synthetic:1 (aliases: latest)"),
        "{out}"
    );

    let job = block_on(job(&cluster, "j-1"));
    assert_eq!(job.state(), JobState::Succeeded);
    assert_eq!(job.model_version, "synthetic:1");
    assert_eq!(job.history.len(), 2);
    assert_eq!(job.epochs_done, 2);
    assert!(
        job.history
            .iter()
            .all(|row| row.attempt == 1 && row.valid_samples == 64)
    );

    // The registry holds the version with its lineage and spec.
    let version = block_on(async {
        let mut c = cluster.coordinator().await.unwrap();
        c.get_model(GetModelRequest {
            model: "synthetic@latest".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap()
    });
    let lineage = version.lineage.unwrap();
    assert_eq!(lineage.job_id, "j-1");
    assert_eq!(lineage.dataset, "synthetic");
    assert_eq!(lineage.metrics["accuracy"], job.history[1].accuracy);
    assert_eq!(lineage.weights_sha256.len(), 64);
    let spec = version.spec.unwrap();
    assert_eq!((spec.arch(), spec.head()), (Arch::Resnet18, Head::Cam));
    assert_eq!(spec.class_names, ["circle", "square"]);
    assert_eq!(
        spec.resize(),
        ResizeMethod::Squish,
        "the job's resize is recorded"
    );

    // A replayed watch of the finished job ends with its terminal state.
    let events = block_on(async {
        let mut c = cluster.coordinator().await.unwrap();
        let mut stream = c
            .watch_job(WatchJobRequest {
                job_id: "j-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(e) = stream.message().await.unwrap() {
            events.push(e);
        }
        events
    });
    let epochs = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::Epoch(_))))
        .count();
    assert_eq!(epochs, 2);
    assert!(matches!(
        events.last().unwrap().event,
        Some(Event::StateChanged(ref c)) if c.to() == JobState::Succeeded
    ));

    // ctl explain writes one overlay per image and the grid.
    let images = synthetic_images(&dir.path().join("images"), 64, 4).unwrap();
    let cams = dir.path().join("cams");
    let grid = dir.path().join("grid.png");
    let mut args = vec![
        "explain",
        "--model",
        "synthetic@latest",
        "--out",
        cams.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
    ];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let out = cluster.ctl_ok(&args).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.contains("predicted=")).count(),
        4,
        "{out}"
    );
    for image in &images {
        let overlay = png(&cams.join(image.file_name().unwrap()));
        assert_eq!(overlay.dimensions(), (64, 64));
        // An overlay is the image with a heat map over it, not the image.
        assert_ne!(overlay, png(image));
    }
    assert!(png(&grid).width() > 2 * 64);

    // Several methods: a folder of overlays per method, a grid column per
    // method. (LayerCAM drops the negative weights that Grad-CAM sums, so
    // their overlays differ.)
    let compared = dir.path().join("compared");
    let grid = dir.path().join("methods.png");
    let mut args = vec![
        "explain",
        "--model",
        "synthetic@latest",
        "--method",
        "gradcam,layercam,hirescam",
        "--out",
        compared.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
    ];
    args.extend(images[..2].iter().map(|p| p.to_str().unwrap()));
    let out = cluster.ctl_ok(&args).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.contains("predicted=")).count(),
        6,
        "{out}"
    );
    let overlay = |method: &str| png(&compared.join(method).join(images[0].file_name().unwrap()));
    assert_ne!(overlay("grad_cam"), overlay("layer_cam"));
    assert_eq!(overlay("hires_cam").dimensions(), (64, 64));
    // 3 columns × 2 rows of square panels with titles: wider than high,
    // but not the 5 columns of --cols.
    let (width, height) = png(&grid).dimensions();
    let aspect = f64::from(width) / f64::from(height);
    assert!((1.0..2.0).contains(&aspect), "{width}×{height}");
    let out = cluster
        .ctl(&[
            "explain",
            "--model",
            "synthetic@latest",
            "--method",
            "cam,CAM",
            "x.png",
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--method names cam twice"));

    // Through the API: maps at the feature resolution, raw; the spatial
    // mean of a CAM is its logit, so the maps rank the classes as the
    // probabilities do.
    let response = block_on(async {
        let mut e = cluster.explainer().await.unwrap();
        e.explain(v1::ExplainRequest {
            model: "synthetic:1".into(),
            images: vec![ImageInput {
                id: "a".into(),
                data: std::fs::read(&images[0]).unwrap().into(),
                target_class: None,
            }],
            method: ExplainMethod::Cam as i32,
            top_k: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    });
    assert_eq!(response.model_version, "synthetic:1");
    let result = &response.results[0];
    assert!(result.error.is_empty(), "{}", result.error);
    assert_eq!(result.maps.len(), 2);
    let means: Vec<f32> = result
        .maps
        .iter()
        .map(|m| {
            assert_eq!((m.height, m.width), (2, 2));
            m.values.iter().sum::<f32>() / m.values.len() as f32
        })
        .collect();
    let by_map = if means[0] > means[1] {
        result.maps[0].class_index
    } else {
        result.maps[1].class_index
    };
    assert_eq!(by_map, result.predicted_class);
    let p = &result.probabilities;
    let (l0, l1) = (
        means[result.maps.iter().position(|m| m.class_index == 0).unwrap()],
        means[result.maps.iter().position(|m| m.class_index == 1).unwrap()],
    );
    let softmax_p1 = 1.0 / (1.0 + (l0 - l1).exp());
    assert!((softmax_p1 - p[1]).abs() < 1e-4, "{p:?} vs {softmax_p1}");

    cluster.stop().unwrap();
}

#[test]
fn bad_requests_get_the_reason_and_a_stable_code() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), &[]).unwrap();

    let out = cluster.ctl(&quick_job("0")).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("epochs"),
        "{err}"
    );

    block_on(async {
        let mut c = cluster.coordinator().await.unwrap();
        let submit = |spec: JobSpec| SubmitJobRequest {
            spec: Some(spec),
            ..Default::default()
        };
        let synthetic = DatasetSpec {
            kind: DatasetKind::Synthetic as i32,
            ..Default::default()
        };
        let no_arch = JobSpec {
            dataset: Some(synthetic.clone()),
            head: Head::Cam as i32,
            epochs: 1,
            ..Default::default()
        };
        let status = c.submit_job(submit(no_arch)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("arch"), "{}", status.message());
        let fine_tune_from_scratch = JobSpec {
            dataset: Some(synthetic),
            arch: Arch::Resnet18 as i32,
            head: Head::Cam as i32,
            epochs: 1,
            fine_tune: true,
            ..Default::default()
        };
        let status = c
            .submit_job(submit(fine_tune_from_scratch))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("pretrained"));

        let status = c
            .get_job(GetJobRequest {
                job_id: "j-99".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let status = c
            .get_job(GetJobRequest {
                job_id: "seventeen".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = c
            .get_model(GetModelRequest {
                model: "nothing@latest".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    });
    // Nothing was stored for the refused specs.
    assert!(cluster.ctl_ok(&["jobs", "list"]).unwrap().lines().count() <= 1);
    cluster.stop().unwrap();
}

/// A torchvision ResNet18 state dict with a 2-class `fc`, written by the
/// `.venv`'s torchvision.
fn torchvision_state_dict(path: &Path, bias: bool) {
    let script = repo_root().join("tests/reference/torchvision_state_dict.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(path).arg("2");
    if !bias {
        cmd.arg("--no-bias");
    }
    let out = cmd
        .output()
        .expect("run the .venv python (scripts/setup creates it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn import(cluster: &Cluster, name: &str, head: &str, weights: &Path) -> std::process::Output {
    cluster
        .ctl(&[
            "models",
            "import",
            "--name",
            name,
            "--arch",
            "resnet18",
            "--head",
            head,
            "--classes",
            "cat,dog",
            "--image-size",
            "64",
            "--normalize",
            "imagenet",
            weights.to_str().unwrap(),
        ])
        .unwrap()
}

#[test]
fn a_pytorch_model_imports_and_a_corrupt_image_gets_its_own_error() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), &[]).unwrap();
    let no_bias = dir.path().join("resnet18-cam.pth");
    torchvision_state_dict(&no_bias, false);

    // A bias-free fc is the CAM head; asked for as the linear head, the
    // missing key is named and nothing is registered.
    let out = import(&cluster, "pets", "linear", &no_bias);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fc.bias"), "{err}");
    let out = import(&cluster, "pets", "cam", &no_bias);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("registered pets:1"));

    let images = synthetic_images(&dir.path().join("images"), 64, 2).unwrap();
    let good = |i: usize, id: &str| ImageInput {
        id: id.into(),
        data: std::fs::read(&images[i]).unwrap().into(),
        target_class: None,
    };
    let corrupt = ImageInput {
        id: "corrupt".into(),
        // A PNG cut off after its header.
        data: std::fs::read(&images[0]).unwrap()[..60].to_vec().into(),
        target_class: None,
    };
    let response = block_on(async {
        let mut e = cluster.explainer().await.unwrap();
        e.explain(v1::ExplainRequest {
            model: "pets".into(),
            images: vec![good(0, "first"), corrupt, good(1, "last")],
            return_overlay: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    });
    assert_eq!(response.model_version, "pets:1");
    let ids: Vec<&str> = response.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["first", "corrupt", "last"]);
    assert!(!response.results[1].error.is_empty());
    assert!(response.results[1].maps.is_empty());
    for r in [&response.results[0], &response.results[2]] {
        assert!(r.error.is_empty(), "{}", r.error);
        assert_eq!(r.class_names, ["cat", "dog"]);
        assert_eq!(r.maps[0].values.len(), 4);
        assert!(!r.overlay_png.is_empty());
    }
    cluster.stop().unwrap();
}

#[test]
fn a_restart_keeps_every_registered_version() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let weights = dir.path().join("resnet18.pth");
    torchvision_state_dict(&weights, true);
    let cluster = Cluster::start(&data, &[]).unwrap();
    for _ in 0..2 {
        let out = import(&cluster, "pets", "linear", &weights);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cluster
        .ctl_ok(&["models", "alias", "pets", "prod", "1"])
        .unwrap();
    let before = cluster.ctl_ok(&["models", "list"]).unwrap();
    cluster.stop().unwrap();

    let cluster = Cluster::start(&data, &[]).unwrap();
    assert_eq!(cluster.ctl_ok(&["models", "list"]).unwrap(), before);
    let versions = block_on(async {
        let mut c = cluster.coordinator().await.unwrap();
        c.list_models(ListModelsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .versions
    });
    let names: Vec<(u64, Vec<String>)> = versions
        .iter()
        .map(|v| (v.version, v.aliases.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (1, vec!["prod".to_string()]),
            (2, vec!["latest".to_string()])
        ]
    );
    let images = synthetic_images(&dir.path().join("images"), 64, 1).unwrap();
    let out = cluster
        .ctl_ok(&[
            "explain",
            "--model",
            "pets@prod",
            "--out",
            dir.path().join("cams").to_str().unwrap(),
            images[0].to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.contains("predicted="), "{out}");
    cluster.stop().unwrap();
}

#[test]
fn a_killed_cluster_resumes_the_job_from_its_last_checkpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let cluster = Cluster::start(&data, &[]).unwrap();
    let id = cluster.ctl_ok(&quick_job("4")).unwrap().trim().to_string();
    assert_eq!(id, "j-1");

    // Wait for the first checkpoint, then kill -9 the whole cluster.
    let deadline = Instant::now() + Duration::from_secs(120);
    while block_on(job(&cluster, &id)).epochs_done < 1 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.kill().unwrap();

    let cluster = Cluster::start(&data, &[]).unwrap();
    let job = wait_for_state(&cluster, &id, &[JobState::Succeeded, JobState::Failed], 180);
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.failures.len(), 1);
    assert_eq!(job.failures[0].kind(), v1::FailureKind::CoordinatorRestart);
    assert_eq!(
        job.failures_used, 0,
        "a coordinator restart is charged to no budget"
    );
    // Attempt 2 picked up after the checkpointed epochs: every epoch of the
    // plan appears, none is trained twice from scratch.
    let resumed: Vec<u32> = job
        .history
        .iter()
        .filter(|row| row.attempt == 2)
        .map(|row| row.epoch)
        .collect();
    let first = job.history.iter().filter(|row| row.attempt == 1).count() as u32;
    assert!(first >= 1);
    assert_eq!(
        *resumed.first().unwrap(),
        job.history
            .iter()
            .filter(|r| r.attempt == 1)
            .map(|r| r.epoch)
            .max()
            .unwrap()
            + 1
    );
    assert_eq!(*resumed.last().unwrap(), 3);
    assert_eq!(job.model_version, "synthetic:1");
    cluster.stop().unwrap();
}

#[test]
fn a_cancelled_job_frees_its_worker_for_the_next() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), &[]).unwrap();
    let long = cluster.ctl_ok(&quick_job("50")).unwrap().trim().to_string();
    let short = cluster.ctl_ok(&quick_job("1")).unwrap().trim().to_string();
    wait_for_state(&cluster, &long, &[JobState::Running], 30);
    assert_eq!(block_on(job(&cluster, &short)).state(), JobState::Pending);

    cluster
        .ctl_ok(&["jobs", "cancel", &long, "--reason", "test is done with it"])
        .unwrap();
    let cancelled = block_on(job(&cluster, &long));
    assert_eq!(cancelled.state(), JobState::Cancelled);
    assert_eq!(cancelled.error, "test is done with it");
    // Cancelling again is a no-op; the next job gets the worker.
    cluster.ctl_ok(&["jobs", "cancel", &long]).unwrap();
    let done = wait_for_state(
        &cluster,
        &short,
        &[JobState::Succeeded, JobState::Failed],
        120,
    );
    assert_eq!(done.state(), JobState::Succeeded, "{}", done.error);
    // A finished job cannot be cancelled.
    let out = cluster.ctl(&["jobs", "cancel", &short]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED_PRECONDITION"));
    cluster.stop().unwrap();
}

#[test]
fn two_workers_in_two_processes_train_as_one_group() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), &[]).unwrap();

    // The job waits for its second worker; the worker joining starts it.
    // In bfloat16 autocast with channels-last weights: the ring averages
    // gradients that are not contiguous in the default sense.
    let mut args = quick_job("2");
    args.extend(["--workers", "2", "--precision", "bf16", "--channels-last"]);
    let id = cluster.ctl_ok(&args).unwrap().trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(block_on(job(&cluster, &id)).state(), JobState::Pending);
    cluster.add_worker(2).unwrap();
    let out = cluster.ctl_ok(&["jobs", "watch", &id, "--logs"]).unwrap();
    assert!(out.contains("world size 2"), "{out}");
    assert!(out.contains("in bf16, channels-last, rank 0 of 2"), "{out}");
    let job = block_on(job(&cluster, "j-1"));
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    for row in &job.history {
        assert_eq!(row.world_size, 2);
        // 256 training images, 2 ranks × batch 32: every sample once, none
        // twice; the whole validation set, exactly.
        assert_eq!(row.train_samples, 256);
        assert_eq!(row.valid_samples, 64);
    }
    cluster.stop().unwrap();
}

#[test]
fn a_killed_worker_process_fails_the_attempt_and_the_job_resumes_without_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), &[]).unwrap();
    let extra = cluster.add_worker(2).unwrap();

    let mut args = quick_job("4");
    args.extend(["--workers", "2", "--min-workers", "1"]);
    let id = cluster.ctl_ok(&args).unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while block_on(job(&cluster, &id)).epochs_done < 1 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    cluster.kill_worker(extra).unwrap();

    // The surviving rank does not hang in its all-reduce: the attempt fails
    // and the job resumes on the one worker left, from its checkpoint.
    let restarted = wait_for_state(
        &cluster,
        &id,
        &[JobState::Restarting, JobState::Running, JobState::Succeeded],
        60,
    );
    let job = wait_for_state(&cluster, &id, &[JobState::Succeeded, JobState::Failed], 180);
    assert_eq!(
        job.state(),
        JobState::Succeeded,
        "{}\n{}",
        job.error,
        cluster.log()
    );
    assert!(job.attempt >= 2, "{restarted:?}");
    let failure = &job.failures[0];
    assert!(
        matches!(
            failure.kind(),
            v1::FailureKind::WorkerLost | v1::FailureKind::CollectiveTimeout
        ),
        "{failure:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(170));
    assert_eq!(job.failures_used, 1);
    let last = job.history.last().unwrap();
    assert_eq!((last.epoch, last.world_size), (3, 1));
    assert!(job.history.iter().any(|r| r.world_size == 2));
    cluster.stop().unwrap();
}

#[test]
fn a_worker_leaving_cleanly_is_a_membership_change_not_a_failure() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), &[]).unwrap();
    let extra = cluster.add_worker(2).unwrap();

    let mut args = quick_job("4");
    args.extend([
        "--workers",
        "2",
        "--min-workers",
        "1",
        "--max-failures",
        "0",
    ]);
    let id = cluster.ctl_ok(&args).unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while block_on(job(&cluster, &id)).epochs_done < 1 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.stop_worker(extra).unwrap();

    // With no failure budget at all, the job still finishes: leaving is
    // charged to max_membership_changes.
    let job = wait_for_state(&cluster, &id, &[JobState::Succeeded, JobState::Failed], 180);
    assert_eq!(
        job.state(),
        JobState::Succeeded,
        "{}\n{}",
        job.error,
        cluster.log()
    );
    assert_eq!(
        job.failures[0].kind(),
        v1::FailureKind::MembershipChange,
        "{:?}",
        job.failures
    );
    assert_eq!((job.failures_used, job.membership_changes_used), (0, 1));
    cluster.stop().unwrap();
}
