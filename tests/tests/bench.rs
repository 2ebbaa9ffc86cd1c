//! `ctl bench` against a real `camshaft up` cluster: `train` on two CPU
//! workers (both rank counts measured) and `explain` against its explainer;
//! the JSON and the report folders written. No timings are asserted, only
//! that they were measured.
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_cluster_tests::Cluster;

#[test]
fn bench_train_measures_one_and_two_cpu_ranks_and_writes_json_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("cluster"), &[]).unwrap();
    // `camshaft up` brings one worker; a second process makes two CPU ranks.
    cluster.add_worker(2).unwrap();

    let json = dir.path().join("bench.json");
    let report = dir.path().join("report");
    let out = cluster
        .ctl_ok(&[
            "bench",
            "train",
            "--model",
            "cnn",
            "--ranks",
            "1,2",
            "--image-size",
            "32",
            "--train-len",
            "256",
            "--valid-len",
            "64",
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--json",
            json.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.contains("RANKS") && out.contains("EFFICIENCY"), "{out}");

    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["model"], "cnn");
    assert_eq!(value["device"], "cpu");
    let points = value["points"].as_array().unwrap();
    let ranks: Vec<u64> = points
        .iter()
        .map(|p| p["ranks"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 2]);
    for point in points {
        let rate = point["images_per_sec"]["median"].as_f64().unwrap();
        let efficiency = point["efficiency"].as_f64().unwrap();
        assert!(rate > 0.0 && efficiency > 0.0, "{point}");
        // Two measured epochs of one job.
        assert_eq!(
            point["images_per_sec"]["samples"].as_array().unwrap().len(),
            2
        );
    }
    assert_eq!(points[0]["efficiency"].as_f64(), Some(1.0));
    assert_eq!(points[1]["workers"], 2);
    // Step-time breakdown: every phase timed, the parts add up to the step.
    assert!(out.contains("ALLREDUCE MAX"), "{out}");
    for point in points {
        let ms = &point["step_ms"]["mean_ms"];
        let phases = ["data", "forward", "backward", "allreduce", "optimizer"];
        let sum: f64 = phases.iter().map(|p| ms[p].as_f64().unwrap()).sum();
        assert!(ms["forward"].as_f64().unwrap() > 0.0, "{point}");
        assert!(
            (sum - ms["total"].as_f64().unwrap()).abs() < 1e-6,
            "{point}"
        );
        assert_eq!(point["step_ms"]["ranks"], point["ranks"], "{point}");
    }

    // The timeline of each rank count: every rank, a step slice holding its
    // five phases in order.
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("trace-2ranks.json")).unwrap())
            .unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    for rank in 0..2 {
        let slices: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["pid"] == rank)
            .collect();
        assert!(!slices.is_empty() && slices.len() % 6 == 0, "rank {rank}");
        assert!(slices[0]["name"].as_str().unwrap().starts_with("step "));
        assert_eq!(slices[4]["name"], "allreduce");
    }
    assert!(report.join("trace-1ranks.json").exists());

    // `ctl jobs trace` writes the same kind of timeline for a profiled job.
    let job = points[1]["jobs"][0].as_str().unwrap();
    let traced = cluster.ctl(&["jobs", "trace", job]).unwrap();
    assert!(traced.status.success());
    let trace: serde_json::Value = serde_json::from_slice(&traced.stdout).unwrap();
    assert_eq!(trace["otherData"]["world_size"], 2);
    assert!(String::from_utf8_lossy(&traced.stderr).contains("ms/step, mean of 2 ranks"));
    let missing = cluster
        .ctl(&["jobs", "trace", job, "--epoch", "7"])
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));

    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("| 2 | 2 × cpu |"), "{markdown}");
    for name in ["throughput.svg", "efficiency.svg"] {
        let svg = std::fs::read_to_string(report.join(name)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
    }

    // The bench cancels its jobs after their last epoch: no model registered.
    let models = cluster.ctl_ok(&["models", "list"]).unwrap();
    assert!(!models.contains("bench"), "{models}");
    // Asking for more ranks than the cluster has is refused up front (exit 2).
    let refused = cluster
        .ctl(&["bench", "train", "--ranks", "3", "--device", "cpu"])
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("the cluster has 2 CPU workers (one rank each); --ranks asks for 3"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    cluster.stop().unwrap();
}

/// `ctl bench explain` against the explainer of a real cluster, on a small
/// CNN trained for it: a row per (size, clients) point, every call
/// answered, the JSON and the report folder written. Bad flags exit 2.
#[test]
fn bench_explain_measures_every_size_and_client_count() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), &[]).unwrap();
    cluster
        .ctl_ok(&[
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
            "64",
            "--valid-len",
            "32",
            "--epochs",
            "1",
            "--name",
            "shapes",
            "--wait",
        ])
        .unwrap();

    let json = dir.path().join("explain.json");
    let report = dir.path().join("report");
    let out = cluster
        .ctl_ok(&[
            "bench",
            "explain",
            "--model",
            "shapes@latest",
            "--clients",
            "1,4",
            "--size",
            "32,64",
            "--images-per-request",
            "2",
            "--seconds",
            "1",
            "--warmup-seconds",
            "0.25",
            "--json",
            json.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.contains("IMAGES/S") && out.contains("P99 MS"), "{out}");

    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["model_version"], "shapes:1");
    let points = value["points"].as_array().unwrap();
    let grid: Vec<(u64, u64)> = points
        .iter()
        .map(|p| (p["size"].as_u64().unwrap(), p["clients"].as_u64().unwrap()))
        .collect();
    assert_eq!(grid, [(32, 1), (32, 4), (64, 1), (64, 4)]);
    for point in points {
        let requests = point["requests"].as_u64().unwrap();
        let seconds = point["seconds"].as_f64().unwrap();
        assert!(point["images_per_sec"].as_f64().unwrap() > 0.0, "{point}");
        assert!(requests > 0, "{point}");
        // No errors: every call answered, two images each.
        assert_eq!(point["errors"], serde_json::json!({}), "{point}");
        assert_eq!(point["image_errors"], 0, "{point}");
        assert_eq!(point["images_explained"].as_u64(), Some(2 * requests));
        let per_sec = point["requests_per_sec"].as_f64().unwrap();
        assert!(
            (per_sec * seconds - requests as f64).abs() < 1e-6,
            "{point}"
        );
        let latency = &point["latency_ms"];
        assert!(latency["p50"].as_f64().unwrap() > 0.0, "{point}");
        assert!(
            latency["p50"].as_f64() <= latency["p99"].as_f64(),
            "{point}"
        );
    }
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("| 64×64 generated | 4 |"), "{markdown}");
    for name in ["throughput.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(report.join(name)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
    }

    // Bad input is refused before any call (exit 2); so is a model that is
    // not there, by the explainer (exit 4).
    let refused = cluster
        .ctl(&["bench", "explain", "--model", "shapes", "--clients", "2,2"])
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--clients lists 2 twice"));
    let missing = cluster
        .ctl(&["bench", "explain", "--model", "nope", "--seconds", "0.1"])
        .unwrap();
    assert_eq!(missing.status.code(), Some(4), "{missing:?}");
    cluster.stop().unwrap();
}
