//! Stored records are versioned: records written before the format envelope
//! (checked in under `fixtures/before-envelope/`, written by the store as it
//! was then) read back in both stores as format 1, and a record in an
//! unknown format or one that does not parse is an error naming its key.
//!
//! The fixtures: `embedded/` is a data dir (a snapshot at revision 5 and a
//! write-ahead log holding revisions 6 and 7); the `*.json` files are the
//! values the etcd store kept under its keys.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use camshaft_store::testing::EtcdServer;
use camshaft_store::{
    AliasChange, EmbeddedConfig, EmbeddedStore, Error, EtcdStore, JobId, JobRecord, JobState,
    LeaseId, ModelRef, Store, WorkerRecord,
};
use etcd_client::Client;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-envelope")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

const WEIGHTS_SHA: &str = "13e35c44395f6cade670c076230362267c5288989d3498e207877d62b859a6d8";
const CHECKPOINT_SHA: &str = "bc1df05996834a07811dea3a410eaaf81a8a019e6ae842e8f50a3421eb0ec44d";

/// Job j-1 as the fixtures hold it (`revision` is the store's to set).
fn job_1(revision: u64) -> JobRecord {
    JobRecord {
        id: JobId(1),
        spec: json!({"dataset": "synthetic", "epochs": 2, "model": "cnn"}),
        state: JobState::Succeeded,
        attempts: Vec::new(),
        history: vec![json!({"epoch": 1, "val_acc": 0.5})],
        model_version: Some("pets:1".into()),
        error: None,
        created_ms: 1796571117969,
        updated_ms: 1796571117973,
        revision,
    }
}

fn prod_alias_change(revision: u64) -> AliasChange {
    AliasChange {
        name: "pets".into(),
        alias: "prod".into(),
        from: None,
        to: Some(1),
        by: "alice".into(),
        unix_ms: 1796571117972,
        revision,
    }
}

/// Checks the model version and checkpoint the fixtures hold, in either store.
async fn assert_model_and_checkpoint(store: &dyn Store) {
    let model = store
        .get_model(&"pets@prod".parse::<ModelRef>().unwrap())
        .await
        .unwrap();
    assert_eq!((model.name.as_str(), model.version), ("pets", 1));
    assert_eq!(model.spec, json!({"arch": "cnn", "resize": "squish"}));
    assert_eq!(model.lineage, json!({"job": "j-1"}));
    assert_eq!(model.weights.sha256, WEIGHTS_SHA);
    assert_eq!(model.created_ms, 1796571117972);
    assert_eq!(
        store.model_weights("pets", 1).await.unwrap(),
        Bytes::from_static(b"weights v1")
    );

    let checkpoint = store.latest_checkpoint(JobId(1)).await.unwrap().unwrap();
    assert_eq!((checkpoint.id, checkpoint.epoch), (1, 1));
    assert_eq!(checkpoint.meta, json!({"step": 100}));
    assert_eq!(checkpoint.blob.sha256, CHECKPOINT_SHA);
    let checkpoint = store.get_checkpoint(JobId(1), 1).await.unwrap();
    assert_eq!(checkpoint.blob, Bytes::from_static(b"checkpoint one"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn corrupt_message<T: std::fmt::Debug>(result: camshaft_store::Result<T>) -> String {
    match result {
        Err(e @ Error::Corrupt { .. }) => e.to_string(),
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_data_dir_from_before_the_envelope_opens() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("embedded"), dir.path());
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();

    // From the snapshot.
    assert_eq!(store.get_job(JobId(1)).await.unwrap(), job_1(5));
    assert_eq!(
        store.alias_history("pets", None).await.unwrap(),
        [prod_alias_change(4)]
    );
    assert_model_and_checkpoint(&store).await;
    // From the write-ahead log.
    let job_2 = store.get_job(JobId(2)).await.unwrap();
    assert_eq!(job_2.spec, json!({"dataset": "folder"}));
    assert_eq!(job_2.state, JobState::Queued);
    let checkpoint = store.get_checkpoint(JobId(2), 1).await.unwrap();
    assert_eq!(checkpoint.manifest.epoch, 3);
    assert_eq!(checkpoint.blob, Bytes::from_static(b"checkpoint two"));

    // New records go into the same log in the envelope; both read back.
    let job_3 = store.create_job(json!({"dataset": "new"})).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(store.get_job(job_3.id).await.unwrap(), job_3);
    assert_eq!(store.get_job(JobId(1)).await.unwrap(), job_1(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_snapshot_in_an_unknown_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("embedded"), dir.path());
    let snapshot = dir.path().join("snapshot.json");
    let today: serde_json::Value =
        serde_json::from_slice(&fixture("embedded/snapshot.json")).unwrap();
    let future = json!({"format": 2, "record": today});
    std::fs::write(&snapshot, serde_json::to_vec(&future).unwrap()).unwrap();
    let message = corrupt_message(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await);
    assert!(
        message.contains(&snapshot.display().to_string()),
        "{message}"
    );
    assert!(message.contains("format 2"), "{message}");

    std::fs::write(
        &snapshot,
        br#"{"format": 1, "record": {"revision": "five"}}"#,
    )
    .unwrap();
    let message = corrupt_message(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await);
    assert!(
        message.contains(&snapshot.display().to_string()),
        "{message}"
    );
}

/// The etcd store's keys under `prefix` (as `etcd::keys` lays them out).
fn key(prefix: &str, rest: &str) -> String {
    format!("{prefix}{rest}")
}

fn num(n: u64) -> String {
    format!("{n:020}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_records_from_before_the_envelope_read() {
    let etcd = EtcdServer::start();
    let prefix = "/formats/";
    let mut raw = Client::connect([format!("http://{}", etcd.endpoint())], None)
        .await
        .unwrap();
    let puts: [(String, Vec<u8>); 8] = [
        (
            key(prefix, &format!("jobs/{}", num(1))),
            fixture("job.json"),
        ),
        (key(prefix, "counters/job"), b"1".to_vec()),
        (
            key(prefix, &format!("models/pets/versions/{}", num(1))),
            fixture("model_version.json"),
        ),
        (key(prefix, "models/pets/aliases/prod"), b"1".to_vec()),
        (
            key(
                prefix,
                &format!("alias-history/pets/{}/prod/{}", num(1796571117972), num(0)),
            ),
            fixture("alias_change.json"),
        ),
        (
            key(prefix, &format!("checkpoints/{}/{}", num(1), num(1))),
            fixture("checkpoint.json"),
        ),
        (
            key(prefix, &format!("chunks/{WEIGHTS_SHA}")),
            fixture(&format!("embedded/blobs/13/{WEIGHTS_SHA}")),
        ),
        (
            key(prefix, &format!("chunks/{CHECKPOINT_SHA}")),
            fixture(&format!("embedded/blobs/bc/{CHECKPOINT_SHA}")),
        ),
    ];
    for (key, value) in puts {
        raw.put(key, value, None).await.unwrap();
    }
    let store = EtcdStore::connect(etcd.config(prefix)).await.unwrap();

    let job = store.get_job(JobId(1)).await.unwrap();
    assert_eq!(job, job_1(job.revision));
    assert_model_and_checkpoint(&store).await;
    let history = store.alias_history("pets", None).await.unwrap();
    assert_eq!(history, [prod_alias_change(history[0].revision)]);

    // A worker record as it was written, attached to a live lease.
    let lease = store
        .grant_lease(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let mut worker: serde_json::Value = serde_json::from_slice(&fixture("worker.json")).unwrap();
    worker["lease"] = json!(lease.0);
    let options = etcd_client::PutOptions::new().with_lease(lease.0);
    raw.put(
        key(prefix, "workers/w-1"),
        serde_json::to_vec(&worker).unwrap(),
        Some(options),
    )
    .await
    .unwrap();
    assert_eq!(
        store.list_workers().await.unwrap(),
        [WorkerRecord {
            id: "w-1".into(),
            hostname: "node-a".into(),
            devices: vec!["cuda:0".into(), "cpu".into()],
            lease: LeaseId(lease.0),
            meta: json!({"address": "10.0.0.5:7000"}),
            registered_ms: 1_700_000_000_000,
        }]
    );

    // Writing the old job back stores it in the envelope, and it reads the same.
    let updated = store.update_job(job.clone()).await.unwrap();
    let stored = raw
        .get(key(prefix, &format!("jobs/{}", num(1))), None)
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(stored.kvs()[0].value()).unwrap();
    assert_eq!(stored["format"], 1);
    assert_eq!(stored["record"]["id"], "j-1");
    assert_eq!(store.get_job(JobId(1)).await.unwrap(), updated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_records_in_an_unknown_format_or_garbled_are_errors_naming_the_key() {
    let etcd = EtcdServer::start();
    let prefix = "/bad-formats/";
    let mut raw = Client::connect([format!("http://{}", etcd.endpoint())], None)
        .await
        .unwrap();
    let store = EtcdStore::connect(etcd.config(prefix)).await.unwrap();
    let job_key = key(prefix, &format!("jobs/{}", num(1)));
    let today: serde_json::Value = serde_json::from_slice(&fixture("job.json")).unwrap();

    let future = json!({"format": 2, "record": today});
    raw.put(job_key.as_str(), serde_json::to_vec(&future).unwrap(), None)
        .await
        .unwrap();
    let message = corrupt_message(store.get_job(JobId(1)).await);
    assert!(message.contains(&job_key), "{message}");
    assert!(message.contains("format 2"), "{message}");
    let message = corrupt_message(store.list_jobs().await);
    assert!(message.contains(&job_key), "{message}");

    let garbled = &fixture("job.json")[..100];
    raw.put(job_key.as_str(), garbled, None).await.unwrap();
    let message = corrupt_message(store.get_job(JobId(1)).await);
    assert!(message.contains(&job_key), "{message}");

    let renamed = json!({"format": 1, "record": {"id": "j-1", "spek": {}}});
    raw.put(
        job_key.as_str(),
        serde_json::to_vec(&renamed).unwrap(),
        None,
    )
    .await
    .unwrap();
    let message = corrupt_message(store.get_job(JobId(1)).await);
    assert!(message.contains(&job_key), "{message}");
}
