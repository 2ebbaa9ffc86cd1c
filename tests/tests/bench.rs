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
        assert!(
            !slices.is_empty() && slices.len().is_multiple_of(6),
            "rank {rank}"
        );
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

/// `ctl bench allreduce` on the cluster's own ranks: a 2-rank sweep over
/// two worker processes (the TCP ring between them) with a row per size,
/// every sum right, a bandwidth measured, the job SUCCEEDED without a
/// model, `ctl jobs get` showing the table; then a 1-rank sweep (the ring
/// of one), and the refusals (exit 2).
#[test]
fn bench_allreduce_sweeps_every_size_on_one_and_two_cpu_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("cluster"), &[]).unwrap();
    cluster.add_worker(2).unwrap();

    let json = dir.path().join("allreduce.json");
    let report = dir.path().join("report");
    let out = cluster
        .ctl_ok(&[
            "bench",
            "allreduce",
            "--ranks",
            "2",
            "--max-bytes",
            "1M",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--json",
            json.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        out.contains("#wrong") && out.contains("2 ranks (2 × cpu), ring"),
        "{out}"
    );
    assert!(out.contains("# Out of bounds values : 0 OK"), "{out}");

    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = value["rows"].as_array().unwrap();
    let sizes: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (3..=20).map(|p| 1u64 << p).collect();
    assert_eq!(sizes, expected, "8 B doubling to 1 MiB");
    for row in rows {
        assert_eq!(row["wrong"], 0, "{row}");
        assert_eq!(row["world_size"], 2, "{row}");
        assert_eq!(
            row["count"].as_u64().unwrap() * 4,
            row["bytes"].as_u64().unwrap()
        );
        assert!(row["busbw_gbps"].as_f64().unwrap() > 0.0, "{row}");
        let (slowest, mean) = (row["time_us"].as_f64(), row["mean_time_us"].as_f64());
        assert!(mean.unwrap() > 0.0 && mean <= slowest, "{row}");
    }
    assert_eq!(value["collective"], "ring");
    assert!(value["peak_busbw_gbps"].as_f64().unwrap() > 0.0);
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("busbw.svg"), "{markdown}");
    let svg = std::fs::read_to_string(report.join("busbw.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));

    // The job succeeded, registered nothing, and reads as a sweep.
    let job = value["job_id"].as_str().unwrap();
    let got = cluster.ctl_ok(&["jobs", "get", job]).unwrap();
    assert!(got.contains("state:    succeeded"), "{got}");
    assert!(
        got.contains("18/18 sizes") && got.contains("all-reduce sweep"),
        "{got}"
    );
    assert!(got.contains("   1048576 "), "{got}");
    let listed = cluster.ctl_ok(&["jobs", "list"]).unwrap();
    assert!(
        listed.contains("allreduce") && listed.contains("peak busbw"),
        "{listed}"
    );
    let models = cluster.ctl_ok(&["models", "list"]).unwrap();
    assert!(!models.contains("allreduce"), "{models}");

    // One rank: the real (trivial) ring of one; nccl-tests' busbw is 0 there.
    let single = dir.path().join("single.json");
    cluster
        .ctl_ok(&[
            "bench",
            "allreduce",
            "--ranks",
            "1",
            "--max-bytes",
            "64K",
            "--json",
            single.to_str().unwrap(),
        ])
        .unwrap();
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&single).unwrap()).unwrap();
    let rows = value["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 14, "8 B doubling to 64 KiB");
    for row in rows {
        assert_eq!(
            (row["wrong"].as_u64(), row["world_size"].as_u64()),
            (Some(0), Some(1))
        );
        assert!(row["algbw_gbps"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["busbw_gbps"].as_f64(), Some(0.0), "{row}");
    }

    // Refused up front (exit 2): more ranks than the cluster has, bad sizes.
    let refused = cluster
        .ctl(&["bench", "allreduce", "--ranks", "3", "--device", "cpu"])
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--ranks asks for 3"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let too_big = cluster
        .ctl(&["bench", "allreduce", "--max-bytes", "2G"])
        .unwrap();
    assert_eq!(too_big.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("at most 1G"));
    cluster.stop().unwrap();
}
