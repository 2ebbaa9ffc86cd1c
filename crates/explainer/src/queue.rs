//! Admission by cost: every request is charged, before anything of it is
//! decoded, against three budgets — images admitted and not answered,
//! bytes of decoded images in flight, compute units queued — and refused
//! with RESOURCE_EXHAUSTED and a retry hint when one would be passed, or
//! with INVALID_ARGUMENT when it could never fit.
//!
//! A charge is a [`Ticket`]: split per decoding worker and per image, it
//! travels with the work (into the blocking decoding task, the batcher's
//! queue, the drawing task) and is given back when dropped, that is when
//! the work it pays for has really stopped, not when the call that asked
//! for it went away.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::{Config, Error, Result};

/// One of the admission budgets, named by its config key in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// [`Config::max_queued_images`].
    Images,
    /// [`Config::max_decode_bytes_in_flight`].
    DecodeBytes,
    /// [`Config::max_queued_compute_units`].
    ComputeUnits,
}

impl Budget {
    /// The config key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Budget::Images => "max_queued_images",
            Budget::DecodeBytes => "max_decode_bytes_in_flight",
            Budget::ComputeUnits => "max_queued_compute_units",
        }
    }

    /// What it counts, as in "2 images queued".
    pub fn what(self) -> &'static str {
        match self {
            Budget::Images => "images queued",
            Budget::DecodeBytes => "bytes of decoded images in flight",
            Budget::ComputeUnits => "compute units queued",
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// What a request (or one part of it) is charged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Images.
    pub images: u64,
    /// Bytes of decoded images (see [`crate::cost`]).
    pub bytes: u64,
    /// Compute units (see [`crate::cost`]).
    pub units: u64,
}

struct Budgets {
    limits: Cost,
    per_request_units: u64,
    replicas: usize,
    images: AtomicU64,
    bytes: AtomicU64,
    units: AtomicU64,
    /// Serialises admissions (check and add of all three at once); drops
    /// only subtract and need no lock.
    admitting: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Budgets {
    fn publish(&self) {
        self.metrics.set_admitted(
            self.images.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
            self.units.load(Ordering::SeqCst),
        );
    }
}

/// The admission budgets shared by every request.
pub(crate) struct Admission {
    budgets: Arc<Budgets>,
}

/// A charge against the budgets, given back when dropped. Split it to hand
/// parts of it to the pieces of work they pay for.
pub(crate) struct Ticket {
    budgets: Arc<Budgets>,
    held: Cost,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Ticket").field(&self.held).finish()
    }
}

impl Admission {
    /// The budgets of `config`, publishing into `metrics`.
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        Admission {
            budgets: Arc::new(Budgets {
                limits: Cost {
                    images: config.max_queued_images as u64,
                    bytes: config.max_decode_bytes_in_flight,
                    units: config.max_queued_compute_units,
                },
                per_request_units: config.max_compute_units_per_request,
                replicas: config.model_replicas.max(1),
                images: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                units: AtomicU64::new(0),
                admitting: Mutex::new(()),
                metrics,
            }),
        }
    }

    /// The budgets: what may be charged at once.
    pub(crate) fn limits(&self) -> Cost {
        self.budgets.limits
    }

    /// What is charged now, over every ticket alive.
    pub(crate) fn in_use(&self) -> Cost {
        let b = &self.budgets;
        Cost {
            images: b.images.load(Ordering::SeqCst),
            bytes: b.bytes.load(Ordering::SeqCst),
            units: b.units.load(Ordering::SeqCst),
        }
    }

    /// Charges `cost` at once, or refuses: INVALID_ARGUMENT
    /// ([`Error::InvalidRequest`], naming the config key) when the request
    /// alone is over [`Config::max_compute_units_per_request`] or over the
    /// whole decoded-bytes budget; [`Error::Overloaded`] (with a hint: the
    /// units queued ahead at the recent pace) when it would pass a budget
    /// now. Nothing is charged when it refuses.
    pub(crate) fn admit(&self, cost: Cost) -> Result<Ticket> {
        let b = &self.budgets;
        if cost.units > b.per_request_units {
            return Err(Error::InvalidRequest(format!(
                "this request needs {} compute units (forward passes: one per image, or one per channel of the layers for Score-CAM, six times with aug_smooth; and top_k × 21 more per image for deletion AUC, × 2 for average drop, × 3 for ROAD; each ⌈input_size²/224²⌉ units), over the limit of {} per request (max_compute_units_per_request); send fewer images, a smaller top_k, an earlier layer or no faithfulness",
                cost.units, b.per_request_units
            )));
        }
        if cost.bytes > b.limits.bytes {
            return Err(Error::InvalidRequest(format!(
                "this request's images decode to about {} bytes (from their headers), over the limit of {} bytes in flight (max_decode_bytes_in_flight); send fewer or smaller images per request",
                cost.bytes, b.limits.bytes
            )));
        }
        let _admitting = b.admitting.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.in_use();
        let over = [
            (Budget::Images, now.images, cost.images, b.limits.images),
            (Budget::ComputeUnits, now.units, cost.units, b.limits.units),
            (Budget::DecodeBytes, now.bytes, cost.bytes, b.limits.bytes),
        ]
        .into_iter()
        .find(|&(_, used, asked, limit)| used.saturating_add(asked) > limit);
        if let Some((budget, in_use, asked, limit)) = over {
            let mut retry_after = retry_hint(now.units, b.replicas, b.metrics.recent_unit_secs());
            if budget == Budget::DecodeBytes {
                // Decodes end on their own, whatever the queue: about one
                // large image's decoding.
                retry_after = retry_after.max(Duration::from_millis(100));
            }
            return Err(Error::Overloaded {
                budget,
                in_use,
                asked,
                limit,
                retry_after,
            });
        }
        b.images.fetch_add(cost.images, Ordering::SeqCst);
        b.bytes.fetch_add(cost.bytes, Ordering::SeqCst);
        b.units.fetch_add(cost.units, Ordering::SeqCst);
        b.publish();
        Ok(Ticket {
            budgets: Arc::clone(b),
            held: cost,
        })
    }
}

impl Ticket {
    /// What this ticket holds.
    pub(crate) fn held(&self) -> Cost {
        self.held
    }

    /// Moves up to `cost` (each part at most what this ticket holds) into a
    /// new ticket.
    pub(crate) fn split(&mut self, cost: Cost) -> Ticket {
        let part = Cost {
            images: cost.images.min(self.held.images),
            bytes: cost.bytes.min(self.held.bytes),
            units: cost.units.min(self.held.units),
        };
        self.held.images -= part.images;
        self.held.bytes -= part.bytes;
        self.held.units -= part.units;
        Ticket {
            budgets: Arc::clone(&self.budgets),
            held: part,
        }
    }

    /// Gives the compute units back now (the image was computed); the rest
    /// stays held.
    pub(crate) fn release_units(&mut self) {
        drop(self.split(Cost {
            units: self.held.units,
            ..Cost::default()
        }));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.held == Cost::default() {
            return;
        }
        let b = &self.budgets;
        b.images.fetch_sub(self.held.images, Ordering::SeqCst);
        b.bytes.fetch_sub(self.held.bytes, Ordering::SeqCst);
        b.units.fetch_sub(self.held.units, Ordering::SeqCst);
        b.publish();
    }
}

/// How long a refused client should wait: the compute units queued ahead
/// of it, shared by the replicas, at the recent `unit_secs` each (between
/// 1 ms and 60 s).
pub(crate) fn retry_hint(units: u64, replicas: usize, unit_secs: f64) -> Duration {
    let units = units as f64 / replicas.max(1) as f64;
    Duration::from_secs_f64((units * unit_secs).clamp(0.001, 60.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_vision::CamMethod;

    fn admission(images: usize, bytes: u64, units: u64, per_request: u64) -> Admission {
        let config = Config {
            max_queued_images: images,
            max_decode_bytes_in_flight: bytes,
            max_queued_compute_units: units,
            max_compute_units_per_request: per_request,
            ..Config::default()
        };
        Admission::new(&config, Arc::new(Metrics::new().unwrap()))
    }

    fn cost(images: u64, bytes: u64, units: u64) -> Cost {
        Cost {
            images,
            bytes,
            units,
        }
    }

    #[test]
    fn each_budget_bounds_admission_and_drops_give_back() {
        let a = admission(5, 1000, 100, 60);
        let first = a.admit(cost(3, 400, 10)).unwrap();
        let second = a.admit(cost(2, 100, 10)).unwrap();
        assert_eq!(a.in_use(), cost(5, 500, 20));
        match a.admit(cost(1, 1, 1)) {
            Err(Error::Overloaded {
                budget,
                in_use,
                asked,
                limit,
                retry_after,
            }) => {
                assert_eq!((budget, in_use, asked, limit), (Budget::Images, 5, 1, 5));
                // 20 units at the default 0.05 s.
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        drop(second);
        assert!(matches!(
            a.admit(cost(1, 700, 1)),
            Err(Error::Overloaded {
                budget: Budget::DecodeBytes,
                ..
            })
        ));
        let third = a.admit(cost(1, 100, 55)).unwrap();
        let refused = a.admit(cost(1, 1, 40)).unwrap_err();
        assert!(matches!(
            refused,
            Error::Overloaded {
                budget: Budget::ComputeUnits,
                in_use: 65,
                ..
            }
        ));
        assert!(refused.to_string().contains("max_queued_compute_units"));
        // A refusal charged nothing.
        assert_eq!(a.in_use(), cost(4, 500, 65));
        drop(first);
        drop(third);
        assert_eq!(a.in_use(), Cost::default());
    }

    #[test]
    fn a_request_over_a_whole_budget_is_invalid() {
        let a = admission(5, 1000, 100, 60);
        let e = a.admit(cost(1, 10, 61)).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest(_)));
        assert!(
            e.to_string().contains("max_compute_units_per_request"),
            "{e}"
        );
        let e = a.admit(cost(1, 1001, 1)).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest(_)));
        assert!(e.to_string().contains("max_decode_bytes_in_flight"), "{e}");
        assert_eq!(a.in_use(), Cost::default());
    }

    #[test]
    fn split_tickets_give_back_their_own_part() {
        let a = admission(5, 1000, 100, 60);
        let mut whole = a.admit(cost(3, 300, 30)).unwrap();
        let mut image = whole.split(cost(1, 50, 10));
        let rest = whole.split(cost(9, 9999, 9999));
        assert_eq!(whole.held(), Cost::default());
        assert_eq!(rest.held(), cost(2, 250, 20));
        drop(whole);
        assert_eq!(a.in_use(), cost(3, 300, 30));
        image.release_units();
        assert_eq!(a.in_use(), cost(3, 300, 20));
        drop(rest);
        assert_eq!(a.in_use(), cost(1, 50, 0));
        // A ticket moved into a blocking task holds its charge until the
        // task ends, whatever happened to whoever spawned it.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let task = std::thread::spawn(move || {
            let _image = image;
            wait.recv().unwrap();
        });
        assert_eq!(a.in_use(), cost(1, 50, 0));
        go.send(()).unwrap();
        task.join().unwrap();
        assert_eq!(a.in_use(), Cost::default());
    }

    #[test]
    fn the_hint_is_the_queue_at_the_recent_pace_per_unit() {
        let metrics = Arc::new(Metrics::new().unwrap());
        // A pass of 4 images worth 8 units in 0.4 s, then 1 unit in 0.1 s:
        // 0.05 s and 0.1 s per unit, averaged.
        metrics.observe_batch(CamMethod::Cam, 4, 8, Duration::from_millis(400));
        metrics.observe_batch(CamMethod::Cam, 1, 1, Duration::from_millis(100));
        let secs = metrics.recent_unit_secs();
        assert!((secs - 0.06).abs() < 1e-9, "{secs}");
        assert_eq!(retry_hint(0, 1, 0.5), Duration::from_millis(1));
        assert_eq!(retry_hint(16, 1, 0.5), Duration::from_secs(8));
        assert_eq!(retry_hint(16, 4, 0.5), Duration::from_secs(2));
        assert_eq!(retry_hint(1 << 20, 1, 1.0), Duration::from_secs(60));
    }
}
