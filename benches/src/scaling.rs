//! `scaling`: training images/s of a data-parallel group of 1..N ranks on
//! this machine, how efficiently it scales, and where a step's time goes.
//!
//! Each group size runs [`group_training`] (ranks as threads over the TCP
//! ring, `--threads` intra-op threads per rank, the `ddp` bench's step) and
//! `reference/ddp.py` with the same ranks and threads. The group's images/s
//! is rank 0's steps/s × batch × ranks. Scaling efficiency is
//! `images/s(N) / (N/b · images/s(b))` for the smallest group size `b` in
//! `--ranks` (1 by default): 1.0 is perfect scaling. Rank 0's mean time per
//! step in data, forward, backward, all-reduce and optimiser is ours only:
//! DDP overlaps its all-reduce with backward, so it has no such split.
//!
//! [`group_training`]: crate::ddp::group_training

use camshaft_metrics::stats::efficiency;
use clap::Parser;
use serde::Serialize;

use crate::ddp::{GroupTraining, StepPhases};
use crate::measure::Measurement;

/// Options of `scaling`.
#[derive(Clone, Debug, Parser)]
pub struct ScalingArgs {
    #[command(flatten)]
    pub training: GroupTraining,
    /// Group sizes to run, comma-separated (threads for ours, processes for
    /// PyTorch).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub ranks: Vec<usize>,
}

/// One group size, both sides.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingPoint {
    /// Ranks in the group.
    pub ranks: usize,
    /// Our group images/s.
    pub ours: Measurement,
    /// PyTorch DDP's group images/s.
    pub pytorch: Measurement,
    /// Our rank 0's mean seconds per step in each part of a step.
    pub phases: StepPhases,
}

/// Scaling efficiency of our group and of PyTorch's at each point, from
/// the medians, against the smallest group `b` (whatever order the points
/// are in): `(rate(N) / N) / (rate(b) / b)`
/// ([`camshaft_metrics::stats::efficiency`]).
pub fn efficiencies(points: &[ScalingPoint]) -> (Vec<f64>, Vec<f64>) {
    let of = |rate: fn(&ScalingPoint) -> f64| {
        let points: Vec<(u32, f64)> = points
            .iter()
            .map(|p| (u32::try_from(p.ranks).unwrap_or(u32::MAX), rate(p)))
            .collect();
        efficiency(&points)
    };
    (of(|p| p.ours.median), of(|p| p.pytorch.median))
}

/// The scaling table: images/s (median, min–max), efficiency and ratio per
/// group size, then our step breakdown in ms.
pub fn table(points: &[ScalingPoint]) -> String {
    let (ours, theirs) = efficiencies(points);
    let cell = |m: &Measurement| {
        let (lo, hi) = m.spread();
        format!("{:>8.1} ({lo:.0}–{hi:.0})", m.median)
    };
    let mut out = format!(
        "# ranks  {:>22} {:>5}  {:>22} {:>5}  {:>6}\n",
        "ours images/s", "eff", "DDP images/s", "eff", "ratio"
    );
    for ((p, eo), et) in points.iter().zip(&ours).zip(&theirs) {
        out.push_str(&format!(
            "  {:>5}  {:>22} {eo:>5.2}  {:>22} {et:>5.2}  {:>5.2}×\n",
            p.ranks,
            cell(&p.ours),
            cell(&p.pytorch),
            p.ours.median / p.pytorch.median
        ));
    }
    out.push_str("# ranks  ours, rank 0, ms per step:");
    for (name, _) in StepPhases::default().named() {
        out.push_str(&format!(" {name:>10}"));
    }
    out.push_str(&format!(" {:>10}\n", "sum"));
    for p in points {
        out.push_str(&format!("  {:>5}  {:>26}", p.ranks, ""));
        for (_, secs) in p.phases.named() {
            out.push_str(&format!(" {:>10.2}", secs * 1e3));
        }
        out.push_str(&format!(" {:>10.2}\n", p.phases.total() * 1e3));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up() {
        let phases = StepPhases {
            data: 1.0,
            forward: 2.0,
            backward: 3.0,
            all_reduce: 4.0,
            optimiser: 5.0,
        };
        assert_eq!(phases.total(), 15.0);
        assert_eq!(phases.divided(5.0).total(), 3.0);
    }
}
