//! The arithmetic of `ctl bench`, apart from the network: which epoch rows
//! count, images/s per epoch, median and spread, the first epoch that
//! reaches an accuracy, and latency percentiles. The median, quantiles and
//! scaling efficiency are `camshaft_metrics::stats`, shared with
//! `camshaft-bench`.

use std::collections::BTreeMap;

use camshaft_proto::v1::EpochMetrics;
use serde::Serialize;

use camshaft_metrics::stats::quantile;
pub use camshaft_metrics::stats::{efficiency, median};

/// Latency percentiles of the calls of one benchmark point, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// 90% of the calls took at most this long.
    pub p90: f64,
    /// 99% of the calls took at most this long.
    pub p99: f64,
    /// The slowest call.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Percentiles> {
        Some(Percentiles {
            p50: quantile(values, 0.5)?,
            p90: quantile(values, 0.9)?,
            p99: quantile(values, 0.99)?,
            max: quantile(values, 1.0)?,
        })
    }
}

/// Samples of one quantity with their median and spread (min–max).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The median of `samples`.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// Every sample, in the order measured.
    pub samples: Vec<f64>,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(samples: Vec<f64>) -> Option<Summary> {
        let median = median(&samples)?;
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary {
            median,
            min,
            max,
            samples,
        })
    }
}

/// The group's training images/s of one epoch row.
///
/// `images_per_sec` is what the workers measured: the group's training
/// samples over rank 0's training loop (validation and checkpointing left
/// out), so it is preferred. Rows without it fall back to training samples
/// over the whole epoch's wall time (which includes validation). `None` for
/// a row with neither.
pub fn epoch_rate(row: &EpochMetrics) -> Option<f64> {
    if row.images_per_sec.is_finite() && row.images_per_sec > 0.0 {
        return Some(row.images_per_sec);
    }
    (row.seconds > 0.0 && row.train_samples > 0).then(|| row.train_samples as f64 / row.seconds)
}

/// The rows that count for throughput: one per epoch index (the newest
/// attempt's, should a restart have run an epoch twice), the first
/// `warmup_epochs` dropped, in epoch order.
pub fn measured_rows(rows: &[EpochMetrics], warmup_epochs: u32) -> Vec<EpochMetrics> {
    let mut newest: BTreeMap<u32, &EpochMetrics> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.epoch >= warmup_epochs) {
        match newest.get(&row.epoch) {
            Some(seen) if seen.attempt > row.attempt => {}
            _ => {
                newest.insert(row.epoch, row);
            }
        }
    }
    newest.into_values().cloned().collect()
}

/// The first row (by arrival) whose validation accuracy is at least `target`.
pub fn first_reaching(rows: &[EpochMetrics], target: f64) -> Option<&EpochMetrics> {
    rows.iter().find(|r| r.accuracy >= target)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(epoch: u32, attempt: u32, images_per_sec: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            attempt,
            images_per_sec,
            ..Default::default()
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&hundred).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        let few = Percentiles::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((few.p50, few.p90, few.p99, few.max), (2.0, 3.0, 3.0, 3.0));
        assert_eq!(quantile(&[7.0], 0.01), Some(7.0));
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn summary_has_median_and_spread() {
        let s = Summary::of(vec![120.0, 100.0, 130.0, 90.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (110.0, 90.0, 130.0));
        assert_eq!(s.samples, [120.0, 100.0, 130.0, 90.0]);
        assert!(Summary::of(Vec::new()).is_none());
    }

    #[test]
    fn rate_prefers_the_workers_measure_then_samples_over_epoch_time() {
        assert_eq!(epoch_rate(&row(0, 1, 250.0)), Some(250.0));
        let fallback = EpochMetrics {
            train_samples: 1000,
            seconds: 4.0,
            ..Default::default()
        };
        assert_eq!(epoch_rate(&fallback), Some(250.0));
        assert_eq!(epoch_rate(&EpochMetrics::default()), None);
    }

    #[test]
    fn warmup_is_dropped_and_a_restarted_epoch_counts_once() {
        let rows = [
            row(0, 1, 10.0),
            row(1, 1, 20.0),
            row(2, 1, 30.0),
            // Attempt 2 resumed from the checkpoint after epoch 1.
            row(2, 2, 33.0),
            row(3, 2, 40.0),
        ];
        let kept: Vec<(u32, f64)> = measured_rows(&rows, 1)
            .iter()
            .map(|r| (r.epoch, r.images_per_sec))
            .collect();
        assert_eq!(kept, [(1, 20.0), (2, 33.0), (3, 40.0)]);
        assert!(measured_rows(&rows, 4).is_empty());
    }

    #[test]
    fn the_first_epoch_at_or_above_the_target() {
        let rows: Vec<EpochMetrics> = [0.5, 0.93, 0.94, 0.96]
            .iter()
            .enumerate()
            .map(|(i, &accuracy)| EpochMetrics {
                epoch: i as u32,
                accuracy,
                ..Default::default()
            })
            .collect();
        assert_eq!(first_reaching(&rows, 0.94).unwrap().epoch, 2);
        assert!(first_reaching(&rows, 0.97).is_none());
    }
}
