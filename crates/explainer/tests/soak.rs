//! Soak: many concurrent clients on loopback for a bounded time. Every
//! response is accounted for, and the process's resident memory after a
//! warm-up stays flat (no growth per request) within a generous bound.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use camshaft_explainer::Config;
use camshaft_proto::v1::{ExplainMethod, ImageErrorKind};
use camshaft_vision::Head;
use common::{Cluster, input, png, request};

const CLIENTS: usize = 24;

/// Resident set size of this process, from /proc/self/statm (pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    answered: AtomicU64,
    images: AtomicU64,
    explained: AtomicU64,
    refused_images: AtomicU64,
}

/// Runs the clients until `until`; every request must come back OK with one
/// result per image, the good ones explained and the corrupt one refused.
async fn load(c: &Cluster, until: Instant, tally: &Arc<Tally>) {
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let mut client = c.client();
        let tally = Arc::clone(tally);
        tasks.push(tokio::spawn(async move {
            let mut round = 0u32;
            while Instant::now() < until {
                round += 1;
                let n = 1 + (k + round as usize) % 3;
                let mut images: Vec<_> = (0..n)
                    .map(|i| input(&format!("{k}-{round}-{i}"), png(64, 64, (k * 7 + i) as u8)))
                    .collect();
                let corrupt = round.is_multiple_of(5);
                if corrupt {
                    images.push(input("bad", b"\x89PNG\r\n\x1a\n broken".to_vec()));
                }
                let method = if k % 2 == 0 {
                    ExplainMethod::Cam
                } else {
                    ExplainMethod::GradCam
                };
                let mut req = request("pets", images, method);
                req.return_overlay = round.is_multiple_of(3);
                tally.requests.fetch_add(1, Ordering::SeqCst);
                let resp = client.explain(req).await.unwrap().into_inner();
                tally.answered.fetch_add(1, Ordering::SeqCst);
                assert_eq!(resp.results.len(), n + usize::from(corrupt));
                for r in &resp.results {
                    tally.images.fetch_add(1, Ordering::SeqCst);
                    if r.id == "bad" {
                        assert_eq!(r.error_kind, ImageErrorKind::Undecodable as i32);
                        tally.refused_images.fetch_add(1, Ordering::SeqCst);
                    } else {
                        assert!(r.error.is_empty(), "{}", r.error);
                        assert_eq!(r.maps.len(), 1);
                        assert_eq!(r.overlay_png.is_empty(), !round.is_multiple_of(3));
                        tally.explained.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_every_answer_accounted_for_memory_flat() {
    let config = Config {
        max_batch: 16,
        max_batch_wait_ms: 2,
        ..Config::default()
    };
    let c = Cluster::start(config).await;
    c.register("pets", Head::Cam).await;

    let warm = Arc::new(Tally::default());
    load(&c, Instant::now() + Duration::from_secs(6), &warm).await;
    let before = rss_bytes();
    let soak = Arc::new(Tally::default());
    load(&c, Instant::now() + Duration::from_secs(18), &soak).await;
    let after = rss_bytes();

    let requests = soak.requests.load(Ordering::SeqCst);
    let images = soak.images.load(Ordering::SeqCst);
    assert_eq!(soak.answered.load(Ordering::SeqCst), requests);
    assert_eq!(
        soak.explained.load(Ordering::SeqCst) + soak.refused_images.load(Ordering::SeqCst),
        images
    );
    assert!(requests >= CLIENTS as u64, "every client got answers");
    // The server saw every image of both phases, and nothing is left queued.
    let served = c.metric("camshaft_explainer_images_total", &[]).await;
    assert_eq!(served as u64, images + warm.images.load(Ordering::SeqCst));
    assert_eq!(c.metric("camshaft_explainer_queued_images", &[]).await, 0.0);
    let growth = after.saturating_sub(before);
    eprintln!(
        "soak: {requests} requests, {images} images; RSS {} MiB -> {} MiB (+{} KiB, {} B/request)",
        before >> 20,
        after >> 20,
        growth >> 10,
        growth / requests.max(1)
    );
    // Generous: allocator arenas and libtorch caches settle during the
    // warm-up; a leak of even one 64×64 image per request would pass this
    // after a few thousand requests.
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB over {requests} requests",
        growth >> 20
    );
    c.stop().await;
}
