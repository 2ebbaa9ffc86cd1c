//! Ranks as separate processes: the test binary re-executes itself as each
//! rank (`child_rank` below), with the rendezvous in a temporary directory.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use camshaft_collective::{
    CollectiveConfig, Communicator, Error, ReduceOp, RingCommunicator, RingListener,
};
use tch::Tensor;

const ROLE: &str = "CAMSHAFT_RING_TEST_ROLE";
const RANK: &str = "CAMSHAFT_RING_TEST_RANK";
const WORLD: &str = "CAMSHAFT_RING_TEST_WORLD";
const DIR: &str = "CAMSHAFT_RING_TEST_DIR";
const LEN: usize = 100_003;

fn spawn_rank(dir: &Path, rank: usize, world: usize, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_rank", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(RANK, rank.to_string())
        .env(WORLD, world.to_string())
        .env(DIR, dir)
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it when it takes longer.
fn wait(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn publish(path: PathBuf, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// The body of a rank process; a no-op in an ordinary test run.
#[test]
fn child_rank() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let rank: usize = std::env::var(RANK).unwrap().parse().unwrap();
    let world: usize = std::env::var(WORLD).unwrap().parse().unwrap();
    let dir = PathBuf::from(std::env::var(DIR).unwrap());

    let listener = RingListener::bind("127.0.0.1:0").unwrap();
    publish(
        dir.join(format!("addr-{rank}")),
        &listener.local_addr().to_string(),
    );
    let peers: Vec<String> = (0..world)
        .map(|r| wait_for_file(&dir.join(format!("addr-{r}")), Duration::from_secs(60)))
        .collect();
    let config = CollectiveConfig {
        timeout: Duration::from_secs(20),
        session: "process-test".into(),
        ..CollectiveConfig::default()
    };
    let mut comm = RingCommunicator::connect(listener, rank, world, peers, config).unwrap();
    let t = Tensor::from_slice(&vec![(rank + 1) as f32; LEN]);
    match role.as_str() {
        "sum" => {
            comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
                .unwrap();
            let expected = (world * (world + 1) / 2) as f32;
            assert!(
                Vec::<f32>::try_from(&t)
                    .unwrap()
                    .iter()
                    .all(|v| *v == expected)
            );
            comm.barrier().unwrap();
        }
        "victim" => {
            publish(dir.join(format!("ready-{rank}")), "ready");
            // Never joins the all-reduce; the parent kills it with SIGKILL.
            std::thread::sleep(Duration::from_secs(60));
            panic!("the victim was not killed");
        }
        "survivor" => {
            let started = Instant::now();
            let e = comm
                .all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
                .unwrap_err();
            let took = started.elapsed();
            eprintln!("rank {rank}: {e} after {took:?}");
            assert!(matches!(e, Error::PeerLost { .. }), "{e}");
            assert!(took < Duration::from_secs(10), "{took:?}");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn three_processes_sum() {
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Child> = (0..3)
        .map(|r| spawn_rank(dir.path(), r, 3, "sum"))
        .collect();
    for (rank, child) in children.iter_mut().enumerate() {
        assert!(wait(child, Duration::from_secs(120)), "rank {rank} failed");
    }
}

#[test]
fn a_killed_process_fails_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut survivors: Vec<Child> = (0..2)
        .map(|r| spawn_rank(dir.path(), r, 3, "survivor"))
        .collect();
    let mut victim = spawn_rank(dir.path(), 2, 3, "victim");
    wait_for_file(&dir.path().join("ready-2"), Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(200));
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    for (rank, child) in survivors.iter_mut().enumerate() {
        assert!(
            wait(child, Duration::from_secs(60)),
            "survivor {rank} failed"
        );
    }
}
