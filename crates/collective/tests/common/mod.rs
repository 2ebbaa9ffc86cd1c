//! Shared harness: a ring of N ranks as threads on loopback.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use camshaft_collective::{CollectiveConfig, RingCommunicator, RingListener};

/// A config for tests: short timeout, small slices (several per chunk).
pub fn config(timeout_secs: u64) -> CollectiveConfig {
    CollectiveConfig {
        timeout: Duration::from_secs(timeout_secs),
        slice_bytes: 64 << 10,
        ..CollectiveConfig::default()
    }
}

/// `n` listeners on loopback and their addresses.
pub fn listeners(n: usize) -> (Vec<RingListener>, Vec<String>) {
    let listeners: Vec<RingListener> = (0..n)
        .map(|_| RingListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers = listeners
        .iter()
        .map(|l| l.local_addr().to_string())
        .collect();
    (listeners, peers)
}

/// Runs `body(rank, comm)` on `n` ranks (threads) of one ring and returns
/// the results in rank order.
pub fn ring<T, F>(n: usize, config: CollectiveConfig, body: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, RingCommunicator) -> T + Send + Sync + 'static,
{
    let (listeners, peers) = listeners(n);
    let body = std::sync::Arc::new(body);
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let (peers, config, body) = (peers.clone(), config.clone(), body.clone());
            std::thread::spawn(move || {
                let comm = RingCommunicator::connect(listener, rank, n, peers, config).unwrap();
                body(rank, comm)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}
