//! The etcd store against a real etcd (started per test on loopback ports):
//! the conformance suite, large and corrupted blobs, prefixes, lease expiry,
//! an etcd that stops and comes back, garbage collection, the quota, TLS.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use camshaft_store::testing::{self, EtcdServer, next_event, pattern};
use camshaft_store::{
    CHUNK_SIZE, Error, EtcdConfig, EtcdStore, EtcdTls, JobId, Store, WorkerEvent, WorkerRecord,
    now_ms,
};
use etcd_client::{AlarmAction, AlarmType, Client, GetOptions};
use serde_json::json;

async fn connect(config: EtcdConfig) -> EtcdStore {
    EtcdStore::connect(config).await.unwrap()
}

/// A raw client on the test's etcd, to look under (and break) the store.
async fn raw(etcd: &EtcdServer) -> Client {
    Client::connect([format!("http://{}", etcd.endpoint())], None)
        .await
        .unwrap()
}

async fn count_keys(client: &mut Client, prefix: &str) -> usize {
    let options = GetOptions::new().with_prefix().with_count_only();
    client.get(prefix, Some(options)).await.unwrap().count() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let etcd = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(connect(etcd.config("/conformance/")).await);
    testing::conformance(store, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_chunk_files() {
    let etcd = EtcdServer::start();
    let blobs = tempfile::tempdir().unwrap();
    let config = EtcdConfig {
        blob_dir: Some(blobs.path().to_owned()),
        ..etcd.config("/files/")
    };
    let store = connect(config).await;
    assert!(store.describe().ends_with(&format!(
        "(prefix /files/, blobs in {})",
        blobs.path().display()
    )));
    let store: Arc<dyn Store> = Arc::new(store);
    testing::checkpoints_chunked_and_retained(store.as_ref(), 2).await;
    testing::registry_versions_and_aliases(store.as_ref()).await;

    // Only the chunks of retained checkpoints and live versions are left,
    // and none of them in etcd.
    let mut files = Vec::new();
    for sub in std::fs::read_dir(blobs.path()).unwrap() {
        for file in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            files.push(file.unwrap().file_name().into_string().unwrap());
        }
    }
    let mut live: Vec<String> = Vec::new();
    for job in store.list_jobs().await.unwrap() {
        for manifest in store.list_checkpoints(job.id).await.unwrap() {
            live.extend(manifest.blob.chunks);
        }
    }
    for model in store.list_models().await.unwrap() {
        for version in model.versions {
            live.extend(version.weights.chunks);
        }
    }
    files.sort();
    live.sort();
    live.dedup();
    assert_eq!(files, live, "chunk files are exactly the referenced chunks");
    let mut client = raw(&etcd).await;
    assert_eq!(count_keys(&mut client, "/files/chunks/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_checkpoint_round_trips_in_5_chunks_and_pruned_chunks_go() {
    let etcd = EtcdServer::start();
    let store = connect(etcd.config("/big/")).await;
    let job = store.create_job(json!({})).await.unwrap();
    let blob = pattern(5 * CHUNK_SIZE, 5);
    let first = store
        .put_checkpoint(job.id, 1, json!({}), blob.clone())
        .await
        .unwrap();
    assert_eq!(first.blob.chunks.len(), 5);
    let read = store.get_checkpoint(job.id, first.id).await.unwrap();
    assert_eq!(read.blob, blob);

    let mut client = raw(&etcd).await;
    assert_eq!(count_keys(&mut client, "/big/chunks/").await, 5);
    // Two more (retention 2) prune the first; its chunks are collected.
    for epoch in 2..=3 {
        store
            .put_checkpoint(job.id, epoch, json!({}), pattern(CHUNK_SIZE + 1, epoch))
            .await
            .unwrap();
    }
    assert_eq!(count_keys(&mut client, "/big/chunks/").await, 4);
    assert_eq!(count_keys(&mut client, "/big/pending/").await, 0);
    assert!(matches!(
        store.get_checkpoint(job.id, first.id).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_fails_the_read_naming_it() {
    let etcd = EtcdServer::start();
    let store = connect(etcd.config("/corrupt/")).await;
    let job = store.create_job(json!({})).await.unwrap();
    let manifest = store
        .put_checkpoint(job.id, 1, json!({}), pattern(2 * CHUNK_SIZE + 1, 7))
        .await
        .unwrap();
    let model = store
        .register_model("m", json!({}), json!({}), pattern(100, 8))
        .await
        .unwrap();

    let mut client = raw(&etcd).await;
    for hash in [&manifest.blob.chunks[1], &model.weights.chunks[0]] {
        let key = format!("/corrupt/chunks/{hash}");
        let mut bytes = client.get(key.as_str(), None).await.unwrap().kvs()[0]
            .value()
            .to_vec();
        bytes[42] ^= 0x01;
        client.put(key, bytes, None).await.unwrap();
    }

    let err = store.get_checkpoint(job.id, manifest.id).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{message}");
    for part in [
        "checkpoint 1 of job j-1",
        "chunk 2 of 3",
        "failed its sha256",
        &manifest.blob.chunks[1],
    ] {
        assert!(message.contains(part), "{message:?} should name {part:?}");
    }
    let err = store.model_weights("m", 1).await.unwrap_err().to_string();
    assert!(
        err.contains("weights of model m:1") && err.contains("chunk 1 of 1"),
        "{err}"
    );

    // A missing chunk is as loud.
    client
        .delete(format!("/corrupt/chunks/{}", manifest.blob.chunks[0]), None)
        .await
        .unwrap();
    let err = store
        .get_checkpoint(job.id, manifest.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chunk 1 of 3") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_under_different_prefixes_do_not_see_each_other() {
    let etcd = EtcdServer::start();
    let a = connect(etcd.config("/team-a/")).await;
    let b = connect(etcd.config("/team-b/")).await;
    let job = a.create_job(json!({"team": "a"})).await.unwrap();
    a.register_model("shared-name", json!({}), json!({}), pattern(10, 1))
        .await
        .unwrap();
    let lease = a.grant_lease(Duration::from_secs(30)).await.unwrap();
    a.put_worker(worker("w-a", lease)).await.unwrap();

    assert!(b.list_jobs().await.unwrap().is_empty());
    assert!(b.list_models().await.unwrap().is_empty());
    assert!(b.list_workers().await.unwrap().is_empty());
    assert!(b.watch_aliases().await.unwrap().current.is_empty());
    let other = b.create_job(json!({"team": "b"})).await.unwrap();
    assert_eq!(other.id, job.id, "each prefix counts its own ids");
    assert_eq!(a.get_job(job.id).await.unwrap().spec, json!({"team": "a"}));
    assert_eq!(
        b.register_model("shared-name", json!({}), json!({}), pattern(10, 2))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(a.list_workers().await.unwrap().len(), 1);
    assert_eq!(
        b.describe(),
        format!("etcd store at {} (prefix /team-b/)", etcd.endpoint())
    );
}

fn worker(id: &str, lease: camshaft_store::LeaseId) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        hostname: "localhost".into(),
        devices: vec!["cpu".into()],
        lease,
        meta: json!({}),
        registered_ms: now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_kept_alive_expires_and_its_worker_goes() {
    let etcd = EtcdServer::start();
    let store = connect(etcd.config("/leases/")).await;
    let mut workers = store.watch_workers().await.unwrap();
    // 1 s asks for less than etcd's minimum; it is rounded up to 2 s.
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        store.keep_alive(lease).await.unwrap(),
        Duration::from_secs(2)
    );
    let started = Instant::now();
    store.put_worker(worker("w-1", lease)).await.unwrap();
    assert!(matches!(
        next_event(&mut workers.events).await,
        WorkerEvent::Put(w) if w.id == "w-1"
    ));
    assert_eq!(
        next_event(&mut workers.events).await,
        WorkerEvent::Removed { id: "w-1".into() }
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "expired after {after:?}"
    );
    assert!(store.list_workers().await.unwrap().is_empty());
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke_lease(lease).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_is_unavailable_and_loses_nothing() {
    let mut etcd = EtcdServer::start();
    let config = etcd.config("/restart/");
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let store = connect(config.clone()).await;

    let job = store.create_job(json!({"i": 1})).await.unwrap();
    let blob = pattern(CHUNK_SIZE + 3, 1);
    let checkpoint = store
        .put_checkpoint(job.id, 1, json!({}), blob.clone())
        .await
        .unwrap();
    store
        .register_model("m", json!({}), json!({}), pattern(64, 2))
        .await
        .unwrap();
    store.set_alias("m", "prod", 1).await.unwrap();
    let mut aliases = store.watch_aliases().await.unwrap();
    let jobs = store.list_jobs().await.unwrap();
    let models = store.list_models().await.unwrap();

    etcd.stop();
    let started = Instant::now();
    for (what, result) in [
        ("get_job", store.get_job(job.id).await.map(|_| ())),
        ("create_job", store.create_job(json!({})).await.map(|_| ())),
        (
            "grant_lease",
            store.grant_lease(Duration::from_secs(5)).await.map(|_| ()),
        ),
    ] {
        match result {
            Err(Error::Unavailable { reason }) => {
                assert!(reason.contains(&etcd.endpoint()), "{what}: {reason}");
            }
            other => panic!("{what} on a stopped etcd: expected Unavailable, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < 3 * (timeout + Duration::from_millis(500)),
        "three calls took {:?} with a {timeout:?} request timeout",
        started.elapsed()
    );
    // The watch ends rather than going quiet.
    let ended = tokio::time::timeout(testing::EVENT_WAIT, aliases.events.recv()).await;
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    // Connecting to nothing fails fast too.
    let started = Instant::now();
    assert!(matches!(
        EtcdStore::connect(config.clone()).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5));

    etcd.restart();
    // The same store reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let listed = loop {
        match store.list_jobs().await {
            Ok(listed) => break listed,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the store to reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not reconnect: {e}"),
        }
    };
    assert_eq!(listed, jobs);
    assert_eq!(store.list_models().await.unwrap(), models);
    assert_eq!(
        store
            .get_checkpoint(job.id, checkpoint.id)
            .await
            .unwrap()
            .blob,
        blob
    );
    assert_eq!(store.create_job(json!({})).await.unwrap().id, JobId(2));
    // So does a new one.
    let again = connect(config).await;
    assert_eq!(again.model_weights("m", 1).await.unwrap(), pattern(64, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_versions_are_never_reused() {
    let etcd = EtcdServer::start();
    let store = connect(etcd.config("/versions/")).await;
    for expected in 1..=3 {
        let v = store
            .register_model("m", json!({}), json!({}), pattern(10, expected))
            .await
            .unwrap();
        assert_eq!(v.version, expected);
    }
    for version in [3, 1, 2] {
        store.delete_model_version("m", version).await.unwrap();
    }
    assert!(store.list_models().await.unwrap().is_empty());
    let v = store
        .register_model("m", json!({}), json!({}), pattern(10, 9))
        .await
        .unwrap();
    assert_eq!(
        v.version, 4,
        "versions continue after every one was deleted"
    );
    let mut client = raw(&etcd).await;
    // Only version 4's chunk is left.
    assert_eq!(count_keys(&mut client, "/versions/chunks/").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_store() {
    let etcd = EtcdServer::start();
    let store = Arc::new(connect(etcd.config("/many/")).await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let job = store.create_job(json!({"i": i})).await.unwrap();
                store
                    .put_checkpoint(job.id, 1, json!({}), pattern(1000, i))
                    .await
                    .unwrap();
                // Equal content from many tasks at once: one set of chunks.
                store
                    .register_model("same", json!({}), json!({}), pattern(CHUNK_SIZE + 1, 99))
                    .await
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>());
    let mut ids: Vec<u64> = store
        .list_jobs()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id.0)
        .collect();
    ids.dedup();
    assert_eq!(ids, (1..=16).collect::<Vec<u64>>());
    for version in [1, 16] {
        let weights = store.model_weights("same", version).await.unwrap();
        assert_eq!(weights, pattern(CHUNK_SIZE + 1, 99));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_etcd_is_compacted_and_the_checkpoint_retried() {
    // A 24 MiB quota: without compaction, the history of 2 MiB checkpoints
    // fills it after a handful.
    let etcd = EtcdServer::start_with(&["--quota-backend-bytes=25165824"]);
    let config = EtcdConfig {
        keep_checkpoints: 1,
        ..etcd.config("/quota/")
    };
    let store = connect(config).await;
    let job = store.create_job(json!({})).await.unwrap();
    let mut last = None;
    for epoch in 0..16u64 {
        let blob = pattern(2 * CHUNK_SIZE, 1000 + epoch);
        let manifest = store
            .put_checkpoint(job.id, epoch, json!({}), blob.clone())
            .await
            .unwrap_or_else(|e| panic!("checkpoint {epoch}: {e}"));
        last = Some((manifest, blob));
    }
    let (manifest, blob) = last.unwrap();
    assert_eq!(
        store
            .get_checkpoint(job.id, manifest.id)
            .await
            .unwrap()
            .blob,
        blob
    );
    let mut client = raw(&etcd).await;
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 0, "the NOSPACE alarm is disarmed");
    // Other writes work again: the alarm is gone.
    store.create_job(json!({})).await.unwrap();
    // It did come to that, and the store dug itself out.
    let log = etcd.log();
    assert!(
        log.contains("alarm NOSPACE raised"),
        "the quota was never hit"
    );
    assert!(log.contains("finished defragmenting"));
    assert!(log.contains("alarm disarmed"));
}

/// Runs the `openssl` command line (certificates for the TLS test).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("the TLS test makes its certificates with the `openssl` command ({e}); install openssl")
        });
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=camshaft test ca",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let path = |name: &str| certs.path().join(name);
    let etcd = EtcdServer::start_tls(&[
        "--cert-file",
        path("server.pem").to_str().unwrap(),
        "--key-file",
        path("server.key").to_str().unwrap(),
        "--client-cert-auth",
        "--trusted-ca-file",
        path("ca.pem").to_str().unwrap(),
    ]);
    let mut config = EtcdConfig::from_url(&format!("etcds://{}/tls/", etcd.endpoint())).unwrap();
    config.request_timeout_ms = 2_000;
    config.tls = Some(EtcdTls {
        ca_file: Some(path("ca.pem")),
        cert_file: Some(path("client.pem")),
        key_file: Some(path("client.key")),
    });
    let store = connect(config.clone()).await;
    let job = store.create_job(json!({"tls": true})).await.unwrap();
    let blob = pattern(CHUNK_SIZE + 1, 3);
    let manifest = store
        .put_checkpoint(job.id, 1, json!({}), blob.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .get_checkpoint(job.id, manifest.id)
            .await
            .unwrap()
            .blob,
        blob
    );

    // Without the client certificate etcd turns the store away.
    config.tls = Some(EtcdTls {
        ca_file: Some(path("ca.pem")),
        ..EtcdTls::default()
    });
    let refused = EtcdStore::connect(config).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
}
