//! A cluster with mutual TLS and a bearer token: `camshaft up` configured
//! by its config file, its in-process worker connecting with a client
//! certificate and the token, `ctl` with and without them (coordinator and
//! explainer), and each service's health on a plaintext port of its own for
//! probes.
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_cluster_tests::{Cluster, ctl_command, free_port, synthetic_images};
use camshaft_proto::testing::{Pki, TOKEN};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[test]
fn a_cluster_with_mutual_tls_and_a_token_serves_only_clients_with_both() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::new(&pki_dir);
    let health_port = free_port().unwrap();
    let explainer_health_port = free_port().unwrap();
    let coordinator_metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let worker_metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let p = |name: &str| pki.path(name).display().to_string();
    let config = dir.path().join("camshaft.toml");
    std::fs::write(
        &config,
        format!(
            r#"
auth_token_file = "{token}"

[tls]
cert = "{server_cert}"
key = "{server_key}"
client_ca = "{ca}"
ca = "{ca}"

[coordinator]
health_listen = "127.0.0.1:{health_port}"
metrics_listen = "{coordinator_metrics}"

[explainer]
health_listen = "127.0.0.1:{explainer_health_port}"

[worker]
metrics_listen = "{worker_metrics}"

[worker.tls]
ca = "{ca}"
cert = "{client_cert}"
key = "{client_key}"
"#,
            token = p("token"),
            server_cert = p("server.pem"),
            server_key = p("server.key"),
            ca = p("ca.pem"),
            client_cert = p("client.pem"),
            client_key = p("client.key"),
        ),
    )
    .unwrap();
    let ca = pki.path("ca.pem");
    let client_cert = pki.path("client.pem");
    let client_key = pki.path("client.key");
    let token = pki.path("token");
    let env = [
        ("CAMSHAFT_TLS_CA", ca.as_path()),
        ("CAMSHAFT_TLS_CERT", client_cert.as_path()),
        ("CAMSHAFT_TLS_KEY", client_key.as_path()),
        ("CAMSHAFT_TOKEN_FILE", token.as_path()),
    ];
    // Starting waits until the worker has registered: it got through.
    let cluster = Cluster::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &env,
    )
    .unwrap();

    // A job runs end to end: the worker's calls (epochs, checkpoints) carry
    // its certificate and the token.
    let out = cluster
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
            "128",
            "--valid-len",
            "32",
            "--epochs",
            "1",
            "--wait",
        ])
        .unwrap();
    assert!(out.contains("succeeded"), "{out}");
    // And the explainer serves it to a client with both.
    let images = synthetic_images(&dir.path().join("images"), 32, 1).unwrap();
    let cams = dir.path().join("cams");
    let out = cluster
        .ctl_ok(&[
            "explain",
            "--model",
            "synthetic@latest",
            "--out",
            cams.to_str().unwrap(),
            images[0].to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.contains("predicted="), "{out}");

    // Without the token: UNAUTHENTICATED, said plainly.
    let without = |drop: &[&str], args: &[&str]| {
        let mut command = ctl_command(&cluster.coordinator_addr, &cluster.explainer_addr).unwrap();
        for (k, v) in env {
            if !drop.contains(&k) {
                command.env(k, v);
            }
        }
        let out = command.args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let image = images[0].to_str().unwrap();
    let explain = ["explain", "--model", "synthetic@latest", image];
    for args in [&["jobs", "list"][..], &explain[..]] {
        let err = without(&["CAMSHAFT_TOKEN_FILE"], args);
        assert!(
            err.contains("UNAUTHENTICATED") && err.contains("bearer token"),
            "{err}"
        );
    }
    // Without a client certificate the handshake fails.
    let err = without(
        &["CAMSHAFT_TLS_CERT", "CAMSHAFT_TLS_KEY"],
        &["jobs", "list"],
    );
    assert!(!err.contains("UNAUTHENTICATED"), "{err}");
    // Plaintext gets nowhere.
    let err = without(
        &["CAMSHAFT_TLS_CA", "CAMSHAFT_TLS_CERT", "CAMSHAFT_TLS_KEY"],
        &["jobs", "list"],
    );
    assert!(!err.is_empty());

    // Probes: health in plaintext, no certificate, no token.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (port, service) in [
        (health_port, "camshaft.v1.Coordinator"),
        (explainer_health_port, "camshaft.v1.Explainer"),
    ] {
        let status = runtime.block_on(async {
            let channel =
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
            let mut client = HealthClient::new(channel);
            client
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
        });
        assert_eq!(status, 1, "{service} SERVING");
    }

    // Metrics in plaintext on their own ports: the job and the calls above
    // are counted (refused calls never reach the services).
    // The services ask scrapes for a client token as they ask calls.
    let scrape = |addr: &str| {
        runtime
            .block_on(camshaft_metrics::scrape_as(
                addr.parse().unwrap(),
                Some(TOKEN),
            ))
            .unwrap()
    };
    let refused = runtime
        .block_on(camshaft_metrics::scrape(
            coordinator_metrics.parse().unwrap(),
        ))
        .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let text = scrape(&coordinator_metrics);
    for line in [
        "camshaft_coordinator_workers 1",
        "camshaft_coordinator_jobs_submitted_total 1",
        "camshaft_coordinator_jobs_finished_total{state=\"succeeded\"} 1",
        "camshaft_coordinator_epochs_total 1",
        "camshaft_coordinator_grpc_requests_total{code=\"OK\",method=\"/camshaft.v1.Coordinator/SubmitJob\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    let text = scrape(&worker_metrics);
    assert!(
        text.lines().any(|l| l == "camshaft_worker_ranks_running 0"),
        "{text}"
    );
    cluster.stop().unwrap();
}
