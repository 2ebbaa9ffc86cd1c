//! [`GroupSync`], the learner's gradient sync, over a real two-rank ring:
//! a model's weights broadcast from rank 0 and its gradients averaged, and
//! a failed collective reported with its kind.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use camshaft_collective::{CollectiveConfig, RingCommunicator, RingListener};
use camshaft_proto::v1::FailureKind;
use camshaft_vision::learner::GradientSync;
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization};
use camshaft_worker::GroupSync;
use camshaft_worker::task::TaskError;
use tch::{Device, Kind, Tensor};

/// Runs `body(rank, comm)` on `n` ranks (threads) of one loopback ring and
/// returns the results in rank order.
fn ring<T, F>(n: usize, body: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, RingCommunicator) -> T + Send + Sync + 'static,
{
    let listeners: Vec<RingListener> = (0..n)
        .map(|_| RingListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().to_string())
        .collect();
    let body = std::sync::Arc::new(body);
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let (peers, body) = (peers.clone(), body.clone());
            std::thread::spawn(move || {
                let config = CollectiveConfig::with_timeout(Duration::from_secs(30));
                let comm = RingCommunicator::connect(listener, rank, n, peers, config).unwrap();
                body(rank, comm)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap()
}

fn cnn() -> Model {
    let spec = ModelSpec {
        arch: Arch::Cnn,
        head: Head::Linear,
        class_names: (0..10).map(|i| format!("c{i}")).collect(),
        input_size: 32,
        normalization: Normalization::None,
    };
    Model::new(spec, Device::Cpu).unwrap()
}

#[test]
fn model_weights_broadcast_and_gradients_average() {
    let results = ring(2, |rank, comm| {
        tch::manual_seed(rank as i64);
        let model = cnn();
        let mut sync = GroupSync::new(comm, 64 << 10);
        let vars: Vec<Tensor> = model.named_variables().into_values().collect();
        let before: Vec<Vec<f32>> = vars.iter().map(flat).collect();
        sync.broadcast(&vars).unwrap();
        let after: Vec<Vec<f32>> = vars.iter().map(flat).collect();

        let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let ys = Tensor::from_slice(&[rank as i64, 9]);
        model
            .forward_t(&xs, true)
            .cross_entropy_for_logits(&ys)
            .backward();
        let grads: Vec<Tensor> = vars
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let local: Vec<Vec<f32>> = grads.iter().map(flat).collect();
        sync.average(&grads).unwrap();
        let averaged: Vec<Vec<f32>> = grads.iter().map(flat).collect();
        (before, after, local, averaged)
    });
    let (before0, after0, local0, avg0) = &results[0];
    let (before1, after1, local1, avg1) = &results[1];
    assert_eq!(after0, before0, "rank 0 keeps its weights");
    assert_eq!(after1, before0, "rank 1 gets rank 0's weights");
    assert_ne!(before1, before0, "the ranks started different");
    assert_eq!(avg0, avg1, "both ranks hold the same average");
    assert!(!local0.is_empty());
    for ((a, b), m) in local0.iter().zip(local1).zip(avg0) {
        for ((x, y), z) in a.iter().zip(b).zip(m) {
            assert!(((x + y) / 2.0 - z).abs() <= 1e-6 * (1.0 + z.abs()));
        }
    }
}

#[test]
fn a_peer_that_leaves_is_reported_as_a_collective_failure() {
    let results = ring(2, |rank, comm| {
        let mut sync = GroupSync::new(comm, 64 << 10);
        if rank == 1 {
            // Rank 1 leaves the group: its communicator closes the ring.
            drop(sync);
            return None;
        }
        let grads = [Tensor::ones([1000], (Kind::Float, Device::Cpu))];
        let e = sync.average(&grads).unwrap_err();
        Some(TaskError::from(e))
    });
    let failure = results[0].as_ref().unwrap();
    assert_eq!(failure.kind, FailureKind::CollectiveTimeout, "{failure:?}");
    assert!(failure.retryable);
    assert!(failure.reason.contains("ring peer 1"), "{}", failure.reason);
}

#[test]
fn ranks_that_disagree_are_reported_as_not_retryable() {
    let results = ring(2, |rank, comm| {
        let mut sync = GroupSync::new(comm, 64 << 10);
        // Rank 1 broadcasts while rank 0 averages: the ring's header check
        // refuses the call on at least one rank.
        let grads = [Tensor::ones([8], (Kind::Float, Device::Cpu))];
        let e = if rank == 0 {
            sync.average(&grads).unwrap_err()
        } else {
            sync.broadcast(&grads).unwrap_err()
        };
        TaskError::from(e)
    });
    assert!(
        results.iter().any(|f| f.kind == FailureKind::TaskError
            && !f.retryable
            && f.reason.contains("mismatched collective")),
        "{results:?}"
    );
}
