//! Repeated timing with warm-up, summarised by the median.

use std::time::Instant;

use camshaft_metrics::stats::median;
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

    /// Every rate times `factor` (steps/s to images/s).
    pub fn scaled(&self, factor: f64) -> Self {
        Measurement {
            median: self.median * factor,
            best: self.best * factor,
            samples: self.samples.iter().map(|s| s * factor).collect(),
        }
    }

    /// The lowest and highest sample.
    pub fn spread(&self) -> (f64, f64) {
        let lowest = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        (lowest, self.best)
    }
}

/// `cpu`, `cuda` or `cuda:N` as a libtorch device; a GPU that is not there
/// is an error here, not a crash later.
pub fn parse_device(name: &str) -> anyhow::Result<tch::Device> {
    let device = match name.trim().to_ascii_lowercase().as_str() {
        "cpu" => return Ok(tch::Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--device {name:?} is not cpu, cuda or cuda:N"))?,
    };
    let count = tch::Cuda::device_count();
    anyhow::ensure!(
        i64::try_from(device).unwrap_or(i64::MAX) < count,
        "--device {name}: {count} CUDA devices (is libtorch built with CUDA?)"
    );
    Ok(tch::Device::Cuda(device))
}

/// The name the reference scripts take for `device` (`cpu`, `cuda:0`).
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Waits for `device`'s queued kernels, so a timed repeat includes them.
pub fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
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
