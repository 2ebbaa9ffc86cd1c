//! Repeated timing with warm-up, summarised by the median.

use std::time::Instant;

use serde::Serialize;

/// Rates from several timed repeats of one side (ours or PyTorch) of a bench.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The median of `samples`: what the table reports.
    pub median: f64,
    /// The highest rate: on a machine shared with other work, the sample
    /// least disturbed by it (kept in the JSON; the table shows the median).
    pub best: f64,
    /// One rate per timed repeat, in the order they ran.
    pub samples: Vec<f64>,
}

impl Measurement {
    /// Summarise rates; `None` for an empty list.
    pub fn from_samples(samples: Vec<f64>) -> Option<Self> {
        let median = median(&samples)?;
        let best = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Measurement {
            median,
            best,
            samples,
        })
    }
}

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

/// Run `work` `warmup` times untimed, then `repeats` times timed. `work`
/// returns how many units (steps, images) it processed; each sample is
/// units per second of wall-clock time.
pub fn rates(
    warmup: usize,
    repeats: usize,
    mut work: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..warmup {
        work()?;
    }
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let units = work()?;
        samples.push(units as f64 / start.elapsed().as_secs_f64());
    }
    Ok(samples)
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
}
