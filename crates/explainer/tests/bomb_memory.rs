//! Decompression bombs against the decoded-bytes budget, measured by the
//! process's own peak memory. Alone in its test binary: `VmHWM` is per
//! process, and another test decoding beside it would count.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use camshaft_explainer::Config;
use camshaft_proto::v1::ExplainMethod;
use camshaft_vision::Head;
use common::{Cluster, bomb_png, input, metric_value, png, request};
use tonic::Code;

const MIB: u64 = 1 << 20;

/// A field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Eight clients each send a real 5657×5657 16-bit RGBA PNG (1.6 MB,
/// 256 MB of pixels, ~352 MB charged with its RGB copy) at once, against a
/// 768 MiB budget: at most two are decoded at a time, the others are
/// refused by admission with RESOURCE_EXHAUSTED naming the budget. The
/// admitted-bytes gauge never passes the budget, and the process's peak
/// memory grows by no more than the budget plus a fixed allowance for
/// everything else (the eight requests' bytes on both ends, buffers).
/// Without the budget the eight decodings take ~2.3 GB at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bombs_are_bounded_by_the_decoded_bytes_budget() {
    let budget = 768 * MIB;
    let config = Config {
        max_decode_bytes_in_flight: budget,
        ..Config::default()
    };
    let mut c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;
    // Load the model and warm every path before measuring.
    let warm = c
        .client
        .explain(request(
            "pets",
            vec![input("w", png(64, 64, 1))],
            ExplainMethod::Cam,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(warm.results[0].error.is_empty());
    let bomb = bomb_png(5657, 5657);
    assert!(bomb.len() < 2 * MIB as usize, "{} bytes", bomb.len());

    // Reset the peak to what is resident now.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let base = status_bytes("VmRSS:");

    // The gauge, sampled all along.
    let sampling = {
        let addr = c.metrics_addr;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut highest = 0f64;
            loop {
                let text = camshaft_metrics::scrape(addr).await.unwrap();
                let bytes = metric_value(&text, "camshaft_explainer_admitted_decode_bytes", &[]);
                highest = highest.max(bytes);
                tokio::select! {
                    _ = &mut stopped => return highest,
                    () = tokio::time::sleep(Duration::from_millis(2)) => {}
                }
            }
        });
        (stop, task)
    };
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut client = c.client();
            let req = request(
                "pets",
                vec![input(&format!("bomb{i}"), bomb.clone())],
                ExplainMethod::Cam,
            );
            tokio::spawn(async move { client.explain(req).await })
        })
        .collect();
    let (mut explained, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(resp) => {
                let r = &resp.into_inner().results[0];
                // A valid (black) image: it is explained.
                assert!(r.error.is_empty(), "{}", r.error);
                explained += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("max_decode_bytes_in_flight"),
                    "{}",
                    status.message()
                );
                assert!(camshaft_proto::retry_after(&status).is_some());
                refused += 1;
            }
        }
    }
    let _ = sampling.0.send(());
    let highest = sampling.1.await.unwrap();
    let peak = status_bytes("VmHWM:");
    let grown = peak.saturating_sub(base);
    eprintln!(
        "{explained} explained, {refused} refused; admitted bytes at most {highest}; peak grew {} MiB over {} MiB resident",
        grown / MIB,
        base / MIB
    );
    assert!(explained >= 1, "no bomb was admitted");
    assert!(refused >= 1, "every bomb was admitted at once");
    assert!(
        highest <= budget as f64,
        "admitted {highest} bytes, over the budget of {budget}"
    );
    let allowance = 256 * MIB;
    assert!(
        grown <= budget + allowance,
        "peak memory grew {} MiB, over the {} MiB budget + {} MiB",
        grown / MIB,
        budget / MIB,
        allowance / MIB
    );
    assert_eq!(
        c.metric("camshaft_explainer_admitted_decode_bytes", &[])
            .await,
        0.0
    );
    c.stop().await;
}
