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

/// Scaling efficiency of each point against the smallest group `b`
/// (whatever order the points are in): `(rate(N) / N) / (rate(b) / b)`.
pub fn efficiency(points: &[(usize, f64)]) -> Vec<f64> {
    let Some(&(base_ranks, base_rate)) = points.iter().min_by_key(|(ranks, _)| *ranks) else {
        return Vec::new();
    };
    let per_rank = base_rate / base_ranks as f64;
    points
        .iter()
        .map(|&(ranks, rate)| rate / ranks as f64 / per_rank)
        .collect()
}

/// The scaling table: images/s (median, min–max), efficiency and ratio per
/// group size, then our step breakdown in ms.
pub fn table(points: &[ScalingPoint]) -> String {
    let ours = efficiency(
        &points
            .iter()
            .map(|p| (p.ranks, p.ours.median))
            .collect::<Vec<_>>(),
    );
    let theirs = efficiency(
        &points
            .iter()
            .map(|p| (p.ranks, p.pytorch.median))
            .collect::<Vec<_>>(),
    );
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
