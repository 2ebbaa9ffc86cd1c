//! The statistics of Camshaft's benchmarks, one copy for `ctl bench` and
//! `camshaft-bench`: the median and nearest-rank quantiles of samples, and
//! scaling efficiency across group sizes.
//!
//! # Example
//!
//! ```
//! use camshaft_metrics::stats::{efficiency, median, quantile};
//!
//! assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
//! assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.9), Some(3.0));
//! // Two ranks at 150 images/s scale at 75% of one at 100.
//! assert_eq!(efficiency(&[(1, 100.0), (2, 150.0)]), [1.0, 0.75]);
//! ```

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The `q` quantile (`0 < q ≤ 1`) of `values` by the nearest-rank method:
/// the smallest value with at least `q` of them at or below it. `None` when
/// empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Scaling efficiency of each `(ranks, rate)` point against the one with
/// the fewest ranks `b` (whatever order they come in):
/// `(rate(N) / N) / (rate(b) / b)`. 1.0 is perfect linear scaling; with
/// `b = 1` this is `rate(N) / (N · rate(1))`. A base rate of zero gives 0.0
/// for every point, never NaN or infinity.
pub fn efficiency(points: &[(u32, f64)]) -> Vec<f64> {
    let Some(&(base_ranks, base_rate)) = points.iter().min_by_key(|(ranks, _)| *ranks) else {
        return Vec::new();
    };
    let per_rank = base_rate / f64::from(base_ranks.max(1));
    points
        .iter()
        .map(|&(ranks, rate)| {
            if per_rank > 0.0 {
                rate / f64::from(ranks.max(1)) / per_rank
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let at = |q| quantile(&hundred, q);
        assert_eq!(
            (at(0.5), at(0.9), at(0.99), at(1.0)),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[7.0], 0.01), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn efficiency_is_per_rank_rate_against_the_smallest_group() {
        assert_eq!(
            efficiency(&[(1, 100.0), (2, 150.0), (4, 400.0)]),
            [1.0, 0.75, 1.0]
        );
        assert_eq!(efficiency(&[(2, 100.0), (4, 100.0)]), [1.0, 0.5]);
        assert_eq!(efficiency(&[(2, 150.0), (1, 100.0)]), [0.75, 1.0]);
        assert!(efficiency(&[]).is_empty());
    }

    #[test]
    fn a_zero_base_rate_gives_zero_not_nan() {
        assert_eq!(efficiency(&[(1, 0.0), (2, 10.0)]), [0.0, 0.0]);
    }
}
