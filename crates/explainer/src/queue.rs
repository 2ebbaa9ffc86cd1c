//! The bounded queue: admission of a request's images, RESOURCE_EXHAUSTED
//! with a retry hint past the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// Counts the images admitted and not answered yet, across every model.
pub(crate) struct Admission {
    limit: usize,
    replicas: usize,
    queued: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Images of one request, counted until dropped.
pub(crate) struct Admitted<'a> {
    admission: &'a Admission,
    images: usize,
}

impl Admission {
    pub(crate) fn new(limit: usize, replicas: usize, metrics: Arc<Metrics>) -> Self {
        Admission {
            limit,
            replicas: replicas.max(1),
            queued: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Images admitted now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Admits `images` more, or refuses with [`Error::Overloaded`] (and a
    /// hint: the time the queue ahead takes to drain at the recent pace)
    /// when that would pass the limit.
    pub(crate) fn admit(&self, images: usize) -> Result<Admitted<'_>> {
        let mut now = self.queued.load(Ordering::SeqCst);
        loop {
            if now + images > self.limit {
                return Err(Error::Overloaded {
                    queued: now,
                    limit: self.limit,
                    retry_after: retry_hint(now, self.replicas, self.metrics.recent_image_secs()),
                });
            }
            match self.queued.compare_exchange(
                now,
                now + images,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        self.metrics.set_queued(now + images);
        Ok(Admitted {
            admission: self,
            images,
        })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let before = self
            .admission
            .queued
            .fetch_sub(self.images, Ordering::SeqCst);
        self.admission
            .metrics
            .set_queued(before.saturating_sub(self.images));
    }
}

/// How long a refused client should wait: the images queued ahead of it,
/// shared by the replicas, at the recent `image_secs` each (between 1 ms
/// and 60 s). Per image, not per `max_batch`: passes are often smaller (on a
/// CPU a pass holds one image at 512 px).
pub(crate) fn retry_hint(queued: usize, replicas: usize, image_secs: f64) -> Duration {
    let images = queued as f64 / replicas.max(1) as f64;
    Duration::from_secs_f64((images * image_secs).clamp(0.001, 60.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn admission_is_bounded_and_released_on_drop() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let a = Admission::new(5, 1, Arc::clone(&metrics));
        let first = a.admit(3).unwrap();
        let second = a.admit(2).unwrap();
        assert_eq!(a.queued(), 5);
        match a.admit(1) {
            Err(Error::Overloaded {
                queued,
                limit,
                retry_after,
            }) => {
                assert_eq!((queued, limit), (5, 5));
                // 5 images at the default 0.05 s.
                assert_eq!(retry_after, Duration::from_millis(250));
            }
            other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
        }
        // After a pass of 4 images in 0.4 s and one of 1 image in 0.1 s:
        // 0.1 s per image whatever the pass size.
        metrics.observe_batch("cam", 4, Duration::from_millis(400));
        metrics.observe_batch("cam", 1, Duration::from_millis(100));
        match a.admit(1) {
            Err(Error::Overloaded { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_millis(500));
            }
            other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
        }
        drop(first);
        assert_eq!(a.queued(), 2);
        let _third = a.admit(3).unwrap();
        drop(second);
        assert_eq!(a.queued(), 3);
    }

    #[test]
    fn retry_hint_is_clamped() {
        assert_eq!(retry_hint(0, 1, 0.5), Duration::from_millis(1));
        assert_eq!(retry_hint(16, 1, 0.5), Duration::from_secs(8));
        assert_eq!(retry_hint(16, 4, 0.5), Duration::from_secs(2));
        assert_eq!(retry_hint(1 << 20, 1, 1.0), Duration::from_secs(60));
    }
}
