//! Step-time breakdowns and Chrome-trace timelines from the ranks' step
//! profiles (`EpochMetrics.step_profiles`, recorded by jobs submitted with
//! `--profile-steps`).
//!
//! A breakdown is milliseconds per step of each phase (data, forward,
//! backward, all-reduce, optimiser), the mean over ranks and the slowest
//! rank's. A timeline is the epoch's last steps of every rank as Chrome's
//! trace-event JSON (`chrome://tracing`, Perfetto), one process per rank, a
//! `step N` slice holding its five phases, like Horovod's timeline: a rank
//! whose all-reduce slice is long was waiting for a slower one.

use std::collections::BTreeMap;

use camshaft_proto::v1::{EpochMetrics, RankStepProfile, StepPhases};
use serde::Serialize;
use serde_json::{Value, json};

/// Phase names, in the order a step runs them.
pub const PHASES: &[&str] = camshaft_spec::StepPhase::NAMES;

fn phase_seconds(p: Option<&StepPhases>) -> [f64; camshaft_spec::PHASES] {
    camshaft_proto::vocab::phases_from_wire(p)
}

/// Milliseconds of each phase per step (serialised by phase name, with the
/// step's total).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseMs(pub [f64; 5]);

impl PhaseMs {
    /// The whole step.
    pub fn total(&self) -> f64 {
        self.0.iter().sum()
    }

    fn of_rank(p: &RankStepProfile) -> Option<PhaseMs> {
        (p.steps > 0).then(|| {
            let secs = phase_seconds(p.total_seconds.as_ref());
            PhaseMs(secs.map(|s| s * 1000.0 / p.steps as f64))
        })
    }
}

impl Serialize for PhaseMs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map: BTreeMap<&str, f64> = PHASES.iter().copied().zip(self.0).collect();
        map.insert("total", self.total());
        map.serialize(serializer)
    }
}

/// Where an epoch's step time went.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepBreakdown {
    /// Ranks that reported a profile.
    pub ranks: usize,
    /// Mean over ranks of each phase's ms per step.
    pub mean_ms: PhaseMs,
    /// The largest rank's ms per step of each phase.
    pub max_ms: PhaseMs,
}

impl StepBreakdown {
    /// The breakdown of one epoch row; `None` without profiles.
    pub fn of(row: &EpochMetrics) -> Option<StepBreakdown> {
        let per_rank: Vec<PhaseMs> = row
            .step_profiles
            .iter()
            .filter_map(PhaseMs::of_rank)
            .collect();
        if per_rank.is_empty() {
            return None;
        }
        let n = per_rank.len() as f64;
        let (mut mean, mut max) = ([0.0; 5], [0.0f64; 5]);
        for rank in &per_rank {
            for i in 0..5 {
                mean[i] += rank.0[i] / n;
                max[i] = max[i].max(rank.0[i]);
            }
        }
        Some(StepBreakdown {
            ranks: per_rank.len(),
            mean_ms: PhaseMs(mean),
            max_ms: PhaseMs(max),
        })
    }

    /// Phase by phase, the median of `breakdowns` (several epochs).
    pub fn median(breakdowns: &[StepBreakdown]) -> Option<StepBreakdown> {
        let first = breakdowns.first()?;
        let median_of = |pick: &dyn Fn(&StepBreakdown) -> f64| {
            let values: Vec<f64> = breakdowns.iter().map(pick).collect();
            camshaft_metrics::stats::median(&values).unwrap_or(0.0)
        };
        let (mut mean, mut max) = ([0.0; 5], [0.0; 5]);
        for i in 0..5 {
            mean[i] = median_of(&|b| b.mean_ms.0[i]);
            max[i] = median_of(&|b| b.max_ms.0[i]);
        }
        Some(StepBreakdown {
            ranks: first.ranks,
            mean_ms: PhaseMs(mean),
            max_ms: PhaseMs(max),
        })
    }
}

/// Chrome trace-event JSON of `row`'s traced steps: one process per rank,
/// times in µs from the rank's epoch start.
pub fn chrome_trace(job_id: &str, row: &EpochMetrics) -> Value {
    let mut events = Vec::new();
    for profile in &row.step_profiles {
        let pid = profile.rank;
        events.push(json!({
            "name": "process_name", "ph": "M", "pid": pid,
            "args": {"name": format!("rank {pid}")},
        }));
        events.push(json!({
            "name": "process_sort_index", "ph": "M", "pid": pid,
            "args": {"sort_index": pid},
        }));
        for step in &profile.last_steps {
            let seconds = phase_seconds(step.seconds.as_ref());
            let mut at = step.start_seconds * 1e6;
            events.push(json!({
                "name": format!("step {}", step.step), "cat": "step", "ph": "X",
                "pid": pid, "tid": 0, "ts": at, "dur": seconds.iter().sum::<f64>() * 1e6,
                "args": {"epoch": row.epoch, "step": step.step},
            }));
            for (name, secs) in PHASES.iter().zip(seconds) {
                events.push(json!({
                    "name": name, "cat": "phase", "ph": "X",
                    "pid": pid, "tid": 0, "ts": at, "dur": secs * 1e6,
                    "args": {"epoch": row.epoch, "step": step.step},
                }));
                at += secs * 1e6;
            }
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "job": job_id,
            "epoch": row.epoch,
            "attempt": row.attempt,
            "world_size": row.world_size,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_proto::v1::StepTrace;

    fn phases(s: [f64; 5]) -> Option<StepPhases> {
        Some(StepPhases {
            data: s[0],
            forward: s[1],
            backward: s[2],
            allreduce: s[3],
            optimizer: s[4],
        })
    }

    fn row() -> EpochMetrics {
        let rank = |rank: u32, allreduce: f64| RankStepProfile {
            rank,
            steps: 10,
            total_seconds: phases([0.1, 0.2, 0.4, allreduce, 0.1]),
            last_steps: vec![
                StepTrace {
                    step: 8,
                    start_seconds: 1.0,
                    seconds: phases([0.01, 0.02, 0.04, allreduce / 10.0, 0.01]),
                },
                StepTrace {
                    step: 9,
                    start_seconds: 1.1,
                    seconds: phases([0.01, 0.02, 0.04, allreduce / 10.0, 0.01]),
                },
            ],
        };
        EpochMetrics {
            epoch: 2,
            world_size: 2,
            step_profiles: vec![rank(0, 0.1), rank(1, 0.3)],
            ..EpochMetrics::default()
        }
    }

    #[test]
    fn breakdowns_are_ms_per_step_mean_and_max_over_ranks() {
        let b = StepBreakdown::of(&row()).unwrap();
        assert_eq!(b.ranks, 2);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(b.mean_ms.0[0], 10.0));
        assert!(close(b.mean_ms.0[3], 20.0), "{:?}", b.mean_ms);
        assert!(close(b.max_ms.0[3], 30.0));
        assert!(close(b.mean_ms.total(), 10.0 + 20.0 + 40.0 + 20.0 + 10.0));
        let json = serde_json::to_value(b).unwrap();
        assert!(close(json["mean_ms"]["allreduce"].as_f64().unwrap(), 20.0));
        assert!(close(json["max_ms"]["total"].as_f64().unwrap(), 110.0));
        assert!(StepBreakdown::of(&EpochMetrics::default()).is_none());

        let slower = StepBreakdown {
            mean_ms: PhaseMs([1.0; 5]),
            ..b
        };
        let m = StepBreakdown::median(&[b, slower, b]).unwrap();
        assert_eq!(m.mean_ms, b.mean_ms);
    }

    #[test]
    fn traces_nest_the_phases_of_each_step_of_each_rank() {
        let trace = chrome_trace("j-1", &row());
        let events = trace["traceEvents"].as_array().unwrap();
        // Per rank: 2 metadata events, 2 steps × (1 step + 5 phases).
        assert_eq!(events.len(), 2 * (2 + 2 * 6));
        let slices: Vec<&Value> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["pid"] == 1)
            .collect();
        assert_eq!(slices[0]["name"], "step 8");
        assert!((slices[0]["ts"].as_f64().unwrap() - 1e6).abs() < 1e-6);
        let names: Vec<&str> = slices[1..6]
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, PHASES);
        // Phases follow each other inside their step.
        let end = |e: &Value| e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap();
        assert!((end(slices[5]) - end(slices[0])).abs() < 1e-6);
        assert!((slices[2]["ts"].as_f64().unwrap() - end(slices[1])).abs() < 1e-6);
        assert_eq!(trace["otherData"]["job"], "j-1");
    }
}
