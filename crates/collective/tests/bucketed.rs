//! `BucketedCollective` over a real two-rank ring.
#![allow(clippy::unwrap_used)]

mod common;

use camshaft_collective::BucketedCollective;
use common::{config, ring};
use tch::{Device, Kind, Tensor};

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap()
}

#[test]
fn average_crosses_bucket_boundaries() {
    let shapes: Vec<Vec<i64>> = vec![
        vec![3, 4],
        vec![7],
        vec![2, 2, 2],
        vec![],
        vec![33],
        vec![1],
    ];
    let shapes_for_ranks = shapes.clone();
    let results = ring(2, config(20), move |rank, comm| {
        // 40-byte buckets: most tensors share none, some are split apart.
        let mut sync = BucketedCollective::new(comm).with_bucket_bytes(40);
        let params: Vec<Tensor> = shapes_for_ranks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Tensor::ones(s.as_slice(), (Kind::Float, Device::Cpu))
                    .g_mul_scalar(i as f64 + 1.0)
                    .set_requires_grad(true)
            })
            .collect();
        let loss = params
            .iter()
            .map(|p| (p * p).sum(Kind::Float) * (rank as f64 + 1.0))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        loss.backward();
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        sync.average(&grads).unwrap();
        grads.iter().map(flat).collect::<Vec<_>>()
    });
    // d/dp (k·p²) = 2kp with p = i + 1; the mean of k over ranks is 1.5.
    for grads in results {
        for (i, g) in grads.iter().enumerate() {
            let n = shapes[i].iter().product::<i64>() as usize;
            assert_eq!(*g, vec![3.0 * (i as f32 + 1.0); n], "tensor {i}");
        }
    }
}

#[test]
fn repeated_averages_reuse_the_buckets() {
    let results = ring(2, config(20), |rank, comm| {
        // One bucket of three tensors: it goes through the flat copy.
        let mut sync = BucketedCollective::new(comm).with_bucket_bytes(64);
        let mut out = Vec::new();
        for step in 0..3 {
            let v = (rank * 10 + step) as f64;
            let grads = vec![
                Tensor::full([2, 3], v, (Kind::Float, Device::Cpu)),
                Tensor::full([4], -v, (Kind::Float, Device::Cpu)),
                Tensor::full([5], 2.0 * v, (Kind::Float, Device::Cpu)),
            ];
            sync.average(&grads).unwrap();
            out.push(grads.iter().map(flat).collect::<Vec<_>>());
        }
        out
    });
    for per_rank in results {
        for (step, grads) in per_rank.iter().enumerate() {
            let mean = (10 + 2 * step) as f32 / 2.0;
            assert_eq!(grads[0], vec![mean; 6], "step {step}");
            assert_eq!(grads[1], vec![-mean; 4], "step {step}");
            assert_eq!(grads[2], vec![2.0 * mean; 5], "step {step}");
        }
    }
}

#[test]
fn sum_is_exact_for_large_integers() {
    let results = ring(2, config(20), |rank, comm| {
        let mut sync = BucketedCollective::new(comm);
        let big = (1u64 << 52) as f64;
        let mut values = if rank == 0 {
            vec![1.0, big, 0.25]
        } else {
            vec![2.0, big - 1.0, 0.5]
        };
        sync.sum(&mut values).unwrap();
        values
    });
    let expected = vec![3.0, ((1u64 << 53) - 1) as f64, 0.75];
    assert!(results.iter().all(|v| *v == expected), "{results:?}");
}
