//! The test that proves the data-parallel design: for the lecture's CNN (no
//! BatchNorm), two ranks with batch B each, all-reducing gradients over the
//! TCP ring, follow one rank with batch 2B on the same sample order — the
//! weights after an epoch agree within 1e-5.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;

use camshaft_collective::{CollectiveConfig, DEFAULT_BUCKET_BYTES, RingCommunicator, RingListener};
use camshaft_data::SyntheticConfig;
use camshaft_vision::{
    Arch, Head, Learner, LearnerConfig, LoaderConfig, LrRange, Model, ModelSpec, Normalization,
    Plan, Shard,
};
use camshaft_worker::GroupSync;
use tch::{Device, Tensor};

const B: usize = 16;

fn learner(shard: Shard, batch_size: usize) -> Learner {
    let data = SyntheticConfig {
        seed: 3,
        train_len: 128,
        valid_len: 32,
        image_size: 32,
        num_classes: 2,
    }
    .splits()
    .unwrap();
    let spec = ModelSpec {
        arch: Arch::Cnn,
        head: Head::Linear,
        class_names: data.train.class_names().to_vec(),
        input_size: 32,
        normalization: Normalization::None,
    };
    tch::manual_seed(11);
    let model = Model::new(spec, Device::Cpu).unwrap();
    let config = LearnerConfig {
        loader: LoaderConfig {
            batch_size,
            image_size: 32,
            threads: 1,
            seed: 5,
            ..LoaderConfig::default()
        },
        shard,
        progress: false,
        ..LearnerConfig::default()
    };
    let mut learner = Learner::new(model, data, config).unwrap();
    learner
        .start(Plan::one_cycle(1, LrRange::Single(1e-3)))
        .unwrap();
    learner
}

fn weights(learner: &Learner) -> BTreeMap<String, Tensor> {
    learner
        .model()
        .named_variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

#[test]
fn two_ranks_with_batch_b_follow_one_rank_with_batch_2b() {
    tch::set_num_threads(1);
    let mut single = learner(Shard::default(), 2 * B);
    let single_row = single.next_epoch().unwrap().unwrap();
    let expected = weights(&single);

    let listeners = [
        RingListener::bind("127.0.0.1:0").unwrap(),
        RingListener::bind("127.0.0.1:0").unwrap(),
    ];
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().to_string())
        .collect();
    // Built here, one after the other: initialisation draws from libtorch's
    // one global generator, which two threads would race for.
    let learners: Vec<Learner> = (0..2)
        .map(|rank| {
            learner(
                Shard {
                    rank,
                    world_size: 2,
                },
                B,
            )
        })
        .collect();
    let ranks: Vec<_> = listeners
        .into_iter()
        .zip(learners)
        .enumerate()
        .map(|(rank, (listener, mut learner))| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                let comm = RingCommunicator::connect(
                    listener,
                    rank,
                    2,
                    peers,
                    CollectiveConfig::default(),
                )
                .unwrap();
                learner
                    .set_sync(Box::new(GroupSync::new(comm, DEFAULT_BUCKET_BYTES)))
                    .unwrap();
                let row = learner.next_epoch().unwrap().unwrap();
                (row, weights(&learner))
            })
        })
        .collect();
    let results: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();

    for (row, got) in &results {
        // The group's table is the whole data set's, as one rank's is.
        assert_eq!(row.train_samples, single_row.train_samples);
        assert_eq!(row.valid_samples, single_row.valid_samples);
        assert!((row.train_loss - single_row.train_loss).abs() < 1e-5);
        assert!((row.accuracy - single_row.accuracy).abs() < 1e-9);
        for (name, want) in &expected {
            let diff = (&got[name] - want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{name} differs by {diff}");
        }
    }
    // Something was learnt, so the agreement is not of untouched weights.
    let moved = (&results[0].1["4.weight"]
        - &learner(Shard::default(), B).model().named_variables()["4.weight"])
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 1e-4, "the weights did not move ({moved})");
}
