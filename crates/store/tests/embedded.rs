//! The embedded store on real files: the conformance suite, corruption,
//! reopening, the data-dir lock, and a `kill -9` in the middle of writes.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use camshaft_store::testing::{self, pattern};
use camshaft_store::{
    CHUNK_SIZE, EmbeddedConfig, EmbeddedStore, Error, JobId, JobState, ModelRef, Store,
};
use serde_json::json;

async fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).await.unwrap()
}

fn chunk_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join("blobs").join(&hash[..2]).join(hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.keep_checkpoints = 2;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(config).await.unwrap());
    testing::conformance(store, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_leases_expire_and_are_watched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    testing::leases_and_workers(&store, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_chunk_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let job = store.create_job(json!({})).await.unwrap();
    let blob = pattern(2 * CHUNK_SIZE + 1, 7);
    let manifest = store
        .put_checkpoint(job.id, 1, json!({}), blob)
        .await
        .unwrap();
    let weights = pattern(100, 8);
    let model = store
        .register_model("m", json!({}), json!({}), weights)
        .await
        .unwrap();

    for hash in [&manifest.blob.chunks[1], &model.weights.chunks[0]] {
        let path = chunk_path(dir.path(), hash);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[42] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
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
    std::fs::remove_file(chunk_path(dir.path(), &manifest.blob.chunks[0])).unwrap();
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
async fn reopening_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny snapshot threshold, so reopening goes through snapshot + log.
    let mut config = EmbeddedConfig::new(dir.path());
    config.snapshot_after_bytes = 4096;
    let store = EmbeddedStore::open(config.clone()).await.unwrap();

    let mut jobs = Vec::new();
    for i in 0..20 {
        let job = store.create_job(json!({"i": i})).await.unwrap();
        let mut running = job.clone();
        running.state = JobState::Running;
        running.history.push(json!({"epoch": 0}));
        jobs.push(store.update_job(running).await.unwrap());
    }
    let blob = pattern(CHUNK_SIZE + 5, 1);
    let checkpoint = store
        .put_checkpoint(jobs[3].id, 1, json!({"e": 1}), blob.clone())
        .await
        .unwrap();
    let weights = pattern(5000, 2);
    store
        .register_model("pets", json!({"a": 1}), json!({}), weights.clone())
        .await
        .unwrap();
    store
        .register_model("pets", json!({"a": 2}), json!({}), weights.clone())
        .await
        .unwrap();
    store.set_alias("pets", "prod", 1).await.unwrap();
    let models = store.list_models().await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    drop(store);
    assert!(
        dir.path().join("snapshot.json").exists(),
        "the threshold forced a snapshot"
    );

    // A torn record at the end (a write that was never acknowledged).
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("wal.log"))
        .unwrap();
    log.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(log);
    // An orphan chunk (written, never committed).
    let orphan = chunk_path(dir.path(), &"ab".repeat(32));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();

    let store = EmbeddedStore::open(config).await.unwrap();
    assert_eq!(store.list_jobs().await.unwrap(), jobs);
    assert_eq!(
        store
            .get_checkpoint(jobs[3].id, checkpoint.id)
            .await
            .unwrap()
            .blob,
        blob
    );
    assert_eq!(store.list_models().await.unwrap(), models);
    let prod: ModelRef = "pets@prod".parse().unwrap();
    assert_eq!(store.get_model(&prod).await.unwrap().version, 1);
    assert_eq!(store.model_weights("pets", 2).await.unwrap(), weights);
    assert!(!orphan.exists(), "uncommitted chunks are collected on open");
    // Counters continue; leases do not survive a restart.
    assert_eq!(store.create_job(json!({})).await.unwrap().id, JobId(21));
    let v3 = store
        .register_model("pets", json!({}), json!({}), weights)
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(Error::NotFound { .. })
    ));
    // Appends after the cut tail are readable after another reopen.
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(store.get_job(JobId(21)).await.unwrap().id, JobId(21));
}

/// The byte offset of each record of a version 2 `wal.log` (format in the
/// crate doc: an 8-byte file header, then a 16-byte header per record with
/// the payload length at bytes 4..8).
fn record_offsets(log: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 8;
    while at < log.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(log[at + 4..at + 8].try_into().unwrap());
        at += 16 + len as usize;
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_mid_log_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(store.create_job(json!({"i": i})).await.unwrap());
    }
    drop(store);
    let log_path = dir.path().join("wal.log");
    let whole = std::fs::read(&log_path).unwrap();
    let offsets = record_offsets(&whole);
    assert_eq!(offsets.len(), 3);
    let middle = offsets[1];

    // The top byte of the middle record's length (it would seem to run past
    // the end of the file), then a byte of its payload.
    for byte in [middle + 7, middle + 16 + 5] {
        let mut bytes = whole.clone();
        bytes[byte] ^= 0x40;
        std::fs::write(&log_path, &bytes).unwrap();
        let err = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{message}");
        let at = format!("{} record at byte {middle}", log_path.display());
        assert!(message.contains(&at), "{message:?} should name {at:?}");
        assert_eq!(
            std::fs::read(&log_path).unwrap(),
            bytes,
            "a refused log is left as it was"
        );
    }

    // A torn last record: the store opens with the earlier ones.
    std::fs::write(&log_path, &whole[..whole.len() - 3]).unwrap();
    let store = open(dir.path()).await;
    assert_eq!(store.list_jobs().await.unwrap(), jobs[..2]);
    assert_eq!(
        std::fs::metadata(&log_path).unwrap().len(),
        offsets[2] as u64,
        "the torn tail is cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_log_is_read_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(store.create_job(json!({"i": i})).await.unwrap());
    }
    drop(store);
    // The same records framed as version 1 wrote them: len, crc32, payload.
    let log_path = dir.path().join("wal.log");
    let current = std::fs::read(&log_path).unwrap();
    let mut old = b"CSLOG\x00\x00\x01".to_vec();
    for at in record_offsets(&current) {
        let len = u32::from_le_bytes(current[at + 4..at + 8].try_into().unwrap());
        let payload = &current[at + 16..at + 16 + len as usize];
        old.extend_from_slice(&len.to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        old.extend_from_slice(payload);
    }
    std::fs::write(&log_path, &old).unwrap();

    let store = open(dir.path()).await;
    assert_eq!(store.list_jobs().await.unwrap(), jobs);
    assert!(dir.path().join("snapshot.json").exists());
    assert_eq!(
        &std::fs::read(&log_path).unwrap()[..8],
        b"CSLOG\x00\x00\x02"
    );
    let next = store.create_job(json!({})).await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(store.get_job(next.id).await.unwrap(), next);
    assert_eq!(store.list_jobs().await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).await);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let job = store.create_job(json!({"i": i})).await.unwrap();
                store
                    .put_checkpoint(job.id, 1, json!({}), pattern(1000, i))
                    .await
                    .unwrap();
                // Equal content from many tasks at once: one set of chunks.
                let same = pattern(CHUNK_SIZE + 1, 99);
                store
                    .register_model("same", json!({}), json!({}), same)
                    .await
                    .unwrap();
                store
                    .register_model("shared", json!({}), json!({}), pattern(10, i))
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
    assert_eq!(
        versions,
        (1..=32).collect::<Vec<u64>>(),
        "each version assigned once"
    );
    assert_eq!(store.list_jobs().await.unwrap().len(), 32);
    for version in [1, 32] {
        let weights = store.model_weights("same", version).await.unwrap();
        assert_eq!(weights, pattern(CHUNK_SIZE + 1, 99));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_per_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let err = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DataDirLocked { .. }), "{err}");

    // Another process is refused too, and told who holds the dir.
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["lock_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // libtest prints "test lock_child ... " on the same line first.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("OPEN "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .1;
    assert!(line.contains("in use by another store"), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );

    drop(store);
    open(dir.path()).await;
    let mut bad = EmbeddedConfig::new(dir.path());
    bad.keep_checkpoints = 0;
    assert!(matches!(
        EmbeddedStore::open(bad).await,
        Err(Error::InvalidArgument { .. })
    ));
}

const LOCK_CHILD: &str = "CAMSHAFT_STORE_TEST_LOCK_CHILD";
const CRASH_CHILD: &str = "CAMSHAFT_STORE_TEST_CRASH_CHILD";

/// Helper for `one_store_per_data_dir`: a no-op unless that test runs it.
#[tokio::test]
async fn lock_child() {
    let Some(dir) = std::env::var_os(LOCK_CHILD) else {
        return;
    };
    let result = EmbeddedStore::open(EmbeddedConfig::new(PathBuf::from(dir))).await;
    println!(
        "OPEN {}",
        result
            .map(|_| "ok".to_owned())
            .unwrap_or_else(|e| e.to_string())
    );
}

/// Helper for `kill_9_loses_no_acknowledged_write`: writes until killed and
/// prints each write after the store acknowledged it. A no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD) else {
        return;
    };
    let mut config = EmbeddedConfig::new(PathBuf::from(dir));
    config.snapshot_after_bytes = 4 << 10; // snapshots happen mid-stream too
    let store = EmbeddedStore::open(config).await.unwrap();
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let job = store.create_job(json!({"i": i})).await.unwrap();
        writeln!(out, "ACK job {}", job.id).unwrap();
        if i % 3 == 0 {
            let blob = pattern(CHUNK_SIZE + CHUNK_SIZE / 2, i);
            let m = store
                .put_checkpoint(job.id, i, json!({"i": i}), blob)
                .await
                .unwrap();
            writeln!(out, "ACK checkpoint {} {} {i}", job.id, m.id).unwrap();
        }
        if i % 5 == 0 {
            let m = store
                .register_model("crash", json!({}), json!({}), pattern(4096, i))
                .await
                .unwrap();
            writeln!(out, "ACK model {} {i}", m.version).unwrap();
        }
        out.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest prints "test crash_child ... " before the first ack, same line.
    let ack = |line: String| line.find("ACK ").map(|at| line[at..].to_owned());
    let mut acks = Vec::new();
    while acks.len() < 40 {
        let line = lines
            .next()
            .expect("the child stopped before 40 writes")
            .unwrap();
        acks.extend(ack(line));
    }
    child.kill().unwrap(); // SIGKILL, wherever the child is
    // Whatever it printed before dying was acknowledged too.
    acks.extend(lines.map_while(Result::ok).filter_map(ack));
    child.wait().unwrap();

    let store = open(dir.path()).await;
    let (mut jobs, mut checkpoints, mut models) = (0, 0, 0);
    for ack in &acks {
        let words: Vec<&str> = ack.split_whitespace().collect();
        match words[1] {
            "job" => {
                store.get_job(words[2].parse().unwrap()).await.unwrap();
                jobs += 1;
            }
            "checkpoint" => {
                let job: JobId = words[2].parse().unwrap();
                let seed: u64 = words[4].parse().unwrap();
                let read = store
                    .get_checkpoint(job, words[3].parse().unwrap())
                    .await
                    .unwrap();
                assert_eq!(
                    read.blob,
                    pattern(CHUNK_SIZE + CHUNK_SIZE / 2, seed),
                    "{ack}"
                );
                checkpoints += 1;
            }
            "model" => {
                let seed: u64 = words[3].parse().unwrap();
                let weights = store
                    .model_weights("crash", words[2].parse().unwrap())
                    .await
                    .unwrap();
                assert_eq!(weights, pattern(4096, seed), "{ack}");
                models += 1;
            }
            other => panic!("unknown ack {other}"),
        }
    }
    assert!(jobs > 0 && checkpoints > 0 && models > 0, "{acks:?}");
    eprintln!("{jobs} jobs, {checkpoints} checkpoints, {models} models acknowledged and found");
    // And the store goes on from where the child stopped.
    let next = store.create_job(json!({})).await.unwrap();
    assert!(next.id.0 as usize > jobs);
}
