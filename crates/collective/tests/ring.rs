//! The TCP ring with real sockets: ranks as threads on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use camshaft_collective::{CollectiveConfig, Communicator, Error, ReduceOp, RingCommunicator};
use common::{config, listeners, ring};
use tch::{Kind, Tensor};

/// Integer-valued, rank-dependent test data (sums stay exact in f32).
fn values(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + rank * 3) % 1000) as f32)
        .collect()
}

/// The element-wise sum of `values` over `n` ranks.
fn expected_sum(n: usize, len: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; len];
    for r in 0..n {
        for (s, v) in sum.iter_mut().zip(values(r, len)) {
            *s += v;
        }
    }
    sum
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap()
}

#[test]
fn all_reduce_sum_is_exact_for_every_size() {
    for n in 1..=4 {
        for len in [0, 1, n - 1, 1_000_003] {
            let results = ring(n, config(20), move |rank, mut comm| {
                let t = Tensor::from_slice(&values(rank, len));
                comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
                    .unwrap();
                to_vec(&t)
            });
            let expected = expected_sum(n, len);
            for (rank, got) in results.iter().enumerate() {
                assert!(*got == expected, "n={n} len={len} rank={rank}");
            }
        }
    }
}

#[test]
fn tiny_slices_still_sum_exactly() {
    let cfg = CollectiveConfig {
        slice_bytes: 8,
        ..config(20)
    };
    let results = ring(3, cfg, |rank, mut comm| {
        let t = Tensor::from_slice(&values(rank, 101));
        comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
            .unwrap();
        to_vec(&t)
    });
    let expected = expected_sum(3, 101);
    assert!(results.iter().all(|r| *r == expected));
}

#[test]
fn average_divides_by_world_size() {
    for n in [2, 3, 4] {
        let results = ring(n, config(20), |rank, mut comm| {
            let t = Tensor::full([5], (rank + 1) as f64, (Kind::Float, tch::Device::Cpu));
            comm.all_reduce(&[t.shallow_clone()], ReduceOp::Average)
                .unwrap();
            to_vec(&t)
        });
        let mean = (n + 1) as f32 / 2.0;
        assert!(
            results.iter().all(|r| *r == vec![mean; 5]),
            "n={n}: {results:?}"
        );
    }
}

#[test]
fn several_tensors_of_several_dtypes_in_one_call() {
    let results = ring(3, config(20), |rank, mut comm| {
        let r = rank as f64;
        let tensors = vec![
            Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r + 1.0),
            Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]).reshape([2, 2]) * (r + 1.0),
            Tensor::from_slice(&[0.5f32; 5]).to_kind(Kind::Half) * (r + 1.0),
            Tensor::from_slice(&[2.0f32; 4]).to_kind(Kind::BFloat16) * (r + 1.0),
            // Large f64 integers stay exact: the ring sums f64 as f64.
            Tensor::from_slice(&[(1u64 << 50) as f64 + r]),
            // A non-contiguous view is reduced in place too.
            Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
                .reshape([2, 3])
                .transpose(0, 1),
        ];
        comm.all_reduce(&tensors, ReduceOp::Sum).unwrap();
        tensors
    });
    for ts in results {
        assert_eq!(to_vec(&ts[0]), vec![6.0, 12.0, 18.0]);
        assert_eq!(ts[1].kind(), Kind::Double);
        assert_eq!(
            Vec::<f64>::try_from(ts[1].reshape([-1])).unwrap(),
            vec![6.0, 12.0, 18.0, 24.0]
        );
        assert_eq!(ts[2].kind(), Kind::Half);
        assert_eq!(to_vec(&ts[2]), vec![3.0; 5]);
        assert_eq!(ts[3].kind(), Kind::BFloat16);
        assert_eq!(to_vec(&ts[3]), vec![12.0; 4]);
        assert_eq!(
            Vec::<f64>::try_from(&ts[4]).unwrap(),
            vec![3.0 * (1u64 << 50) as f64 + 3.0]
        );
        assert_eq!(
            to_vec(&ts[5].contiguous()),
            vec![3.0, 12.0, 6.0, 15.0, 9.0, 18.0]
        );
    }
}

#[test]
fn broadcast_from_first_and_last_rank() {
    for n in 1..=4 {
        for root in [0, n - 1] {
            let len = 1_000_003;
            let results = ring(n, config(20), move |rank, mut comm| {
                let a = Tensor::from_slice(&values(rank, len));
                let b = Tensor::from_slice(&[rank as f64; 3]);
                comm.broadcast(&[a.shallow_clone(), b.shallow_clone()], root)
                    .unwrap();
                (to_vec(&a), Vec::<f64>::try_from(&b).unwrap())
            });
            for (a, b) in results {
                assert!(a == values(root, len), "n={n} root={root}");
                assert_eq!(b, vec![root as f64; 3]);
            }
        }
    }
}

#[test]
fn barrier_waits_for_the_slowest_rank() {
    let start = Instant::now();
    let passed = ring(3, config(20), |rank, mut comm| {
        std::thread::sleep(Duration::from_millis(150 * rank as u64));
        comm.barrier().unwrap();
        comm.barrier().unwrap();
        Instant::now()
    });
    for t in passed {
        assert!(t.duration_since(start) >= Duration::from_millis(300));
    }
}

#[test]
fn repeated_calls_reuse_the_ring() {
    let results = ring(2, config(20), |rank, mut comm| {
        let mut out = Vec::new();
        for i in 0..20 {
            let t = Tensor::from_slice(&[(rank + i) as f32; 10]);
            comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
                .unwrap();
            out.push(to_vec(&t)[0]);
        }
        out
    });
    let expected: Vec<f32> = (0..20).map(|i| (2 * i + 1) as f32).collect();
    assert!(results.iter().all(|r| *r == expected));
}

#[test]
fn calls_of_every_path_in_turn_keep_their_sums() {
    // Small calls write from the calling thread, large ones through the
    // sender thread; single contiguous f32 tensors are reduced in place,
    // the others through the staging tensor, which grows and is reused.
    let lens = [3usize, 100_000, 5, 300_000, 4_096, 70_000];
    let results = ring(3, config(20), move |rank, mut comm| {
        let mut out = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let t = Tensor::from_slice(&values(rank + i, len));
            comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
                .unwrap();
            let split = [
                Tensor::from_slice(&values(rank + i, len / 2)),
                Tensor::from_slice(&values(rank + i, len - len / 2)),
            ];
            comm.all_reduce(&split, ReduceOp::Sum).unwrap();
            out.push((to_vec(&t), to_vec(&split[0]), to_vec(&split[1])));
        }
        out
    });
    for per_rank in results {
        for (i, (whole, a, b)) in per_rank.iter().enumerate() {
            let len = lens[i];
            let sum = |len| {
                let mut s = vec![0.0f32; len];
                for r in 0..3 {
                    for (s, v) in s.iter_mut().zip(values(r + i, len)) {
                        *s += v;
                    }
                }
                s
            };
            assert!(*whole == sum(len), "call {i}");
            assert!(*a == sum(len / 2) && *b == sum(len - len / 2), "call {i}");
        }
    }
}

#[test]
fn mismatched_calls_fail_instead_of_mixing_data() {
    let results = ring(2, config(5), |rank, mut comm| {
        let t = Tensor::zeros([10 + rank as i64], (Kind::Float, tch::Device::Cpu));
        let started = Instant::now();
        let err = comm.all_reduce(&[t], ReduceOp::Sum).unwrap_err();
        (err.to_string(), started.elapsed())
    });
    assert!(
        results
            .iter()
            .any(|(e, _)| e.contains("mismatched collective")),
        "{results:?}"
    );
    assert!(results.iter().all(|(_, t)| *t < Duration::from_secs(10)));
}

#[test]
fn unsupported_dtype_is_an_error() {
    let errs = ring(2, config(5), |_, mut comm| {
        let t = Tensor::from_slice(&[1i64, 2]);
        comm.all_reduce(&[t], ReduceOp::Sum).unwrap_err()
    });
    for e in errs {
        assert!(matches!(e, Error::Tensor(_)), "{e}");
    }
}

#[test]
fn bad_arguments_are_config_errors() {
    let (mut ls, peers) = listeners(2);
    let l = ls.pop().unwrap();
    let e = RingCommunicator::connect(l, 2, 2, peers.clone(), config(1)).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let l = ls.pop().unwrap();
    let e = RingCommunicator::connect(l, 0, 3, peers, config(1)).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[test]
fn world_of_one_is_a_no_op() {
    let (mut ls, peers) = listeners(1);
    let mut comm = RingCommunicator::connect(ls.pop().unwrap(), 0, 1, peers, config(1)).unwrap();
    let t = Tensor::from_slice(&[1.0f32, 2.0]);
    comm.all_reduce(&[t.shallow_clone()], ReduceOp::Average)
        .unwrap();
    comm.broadcast(&[t.shallow_clone()], 0).unwrap();
    comm.barrier().unwrap();
    assert_eq!(to_vec(&t), vec![1.0, 2.0]);
    assert!(comm.broadcast(&[t], 1).is_err());
}

#[test]
fn another_session_is_refused() {
    let (listeners, peers) = listeners(2);
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, l)| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                let cfg = CollectiveConfig {
                    session: format!("job-{rank}"),
                    ..config(3)
                };
                let started = Instant::now();
                let e = RingCommunicator::connect(l, rank, 2, peers, cfg).unwrap_err();
                (e.to_string(), started.elapsed())
            })
        })
        .collect();
    for h in handles {
        let (e, took) = h.join().unwrap();
        assert!(e.contains("refused") || e.contains("timed out"), "{e}");
        assert!(took < Duration::from_secs(10));
    }
}

#[test]
fn stray_connections_are_dropped_and_the_ring_still_forms() {
    let (listeners, peers) = listeners(2);
    // Garbage, then a connection that never speaks, before the real peer.
    let mut junk = std::net::TcpStream::connect(&peers[0]).unwrap();
    std::io::Write::write_all(&mut junk, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _silent = std::net::TcpStream::connect(&peers[0]).unwrap();
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, l)| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                let mut comm = RingCommunicator::connect(l, rank, 2, peers, config(20)).unwrap();
                let t = Tensor::from_slice(&[1.0f32]);
                comm.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
                    .unwrap();
                to_vec(&t)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), vec![2.0]);
    }
}

#[test]
fn connect_times_out_when_a_peer_never_comes() {
    let (mut ls, peers) = listeners(2);
    let _absent = ls.pop().unwrap(); // rank 1 listens but never joins
    let started = Instant::now();
    let e = RingCommunicator::connect(ls.pop().unwrap(), 0, 2, peers, config(2)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn silent_peer_times_out() {
    let results = ring(2, config(2), |rank, mut comm| {
        if rank == 1 {
            std::thread::sleep(Duration::from_secs(4));
            return None;
        }
        let started = Instant::now();
        let e = comm
            .all_reduce(&[Tensor::from_slice(&[1.0f32; 1000])], ReduceOp::Sum)
            .unwrap_err();
        Some((e, started.elapsed()))
    });
    let (e, took) = results.into_iter().flatten().next().unwrap();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("ring peer 1 (127.0.0.1:"), "{e}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(10));
}

#[test]
fn a_dead_peer_fails_the_others_fast() {
    // A long timeout: the failure must come from the closed connection.
    let results = ring(3, config(30), |rank, mut comm| {
        if rank == 2 {
            drop(comm);
            return None;
        }
        let started = Instant::now();
        let e = comm
            .all_reduce(&[Tensor::from_slice(&[1.0f32; 100_000])], ReduceOp::Sum)
            .unwrap_err();
        let took = started.elapsed();
        // The communicator is unusable afterwards.
        let again = comm.barrier().unwrap_err();
        Some((e, took, again))
    });
    for (e, took, again) in results.into_iter().flatten() {
        assert!(matches!(e, Error::PeerLost { .. }), "{e}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(matches!(again, Error::Broken(_)), "{again}");
    }
}

#[test]
fn aborter_unblocks_a_pending_all_reduce() {
    let results = ring(2, config(60), |rank, mut comm| {
        if rank == 1 {
            std::thread::sleep(Duration::from_secs(2));
            return None;
        }
        let aborter = comm.aborter();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            aborter.abort();
        });
        let started = Instant::now();
        let e = comm
            .all_reduce(&[Tensor::from_slice(&[1.0f32; 10])], ReduceOp::Sum)
            .unwrap_err();
        let took = started.elapsed();
        killer.join().unwrap();
        let started = Instant::now();
        let later = comm.barrier().unwrap_err();
        Some((e, took, later, started.elapsed()))
    });
    let (e, took, later, later_took) = results.into_iter().flatten().next().unwrap();
    assert!(matches!(e, Error::Aborted), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(matches!(later, Error::Aborted), "{later}");
    assert!(later_took < Duration::from_millis(100));
}
