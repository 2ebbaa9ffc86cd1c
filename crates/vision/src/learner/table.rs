//! The epoch table: one [`EpochStats`] row per epoch for the whole group,
//! its [`Metric`] columns, and [`EpochTable`], which prints the rows as
//! fastai does (`epoch train_loss valid_loss accuracy time`).

use serde::{Deserialize, Serialize};

use super::profile::RankStepProfile;

/// A metric column of the epoch table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of validation samples classified right.
    Accuracy,
    /// 1 − accuracy.
    ErrorRate,
}

impl Metric {
    /// Column name, as fastai prints it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::ErrorRate => "error_rate",
        }
    }
}

/// One row of the epoch table, for the whole group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 0-based epoch within the plan.
    pub epoch: usize,
    /// Stage of the plan (0 for `fit_one_cycle`; 0 frozen, 1 unfrozen for `fine_tune`).
    pub stage: usize,
    /// Mean training loss over every sample of the epoch (all ranks).
    pub train_loss: f64,
    /// Mean validation loss over the whole validation set.
    pub valid_loss: f64,
    /// Validation accuracy.
    pub accuracy: f64,
    /// Training samples seen (all ranks).
    pub train_samples: u64,
    /// Validation samples evaluated (all ranks).
    pub valid_samples: u64,
    /// Wall time of the epoch, training and validation.
    pub seconds: f64,
    /// Training throughput of the group.
    pub images_per_sec: f64,
    /// Learning rate of the epoch's last step, of the last parameter group
    /// (the head's: the largest under discriminative rates).
    #[serde(default)]
    pub lr: f64,
    /// Each rank's step phases, in rank order, when
    /// [`LearnerConfig::profile_steps`](super::LearnerConfig::profile_steps) is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_profiles: Vec<RankStepProfile>,
}

impl EpochStats {
    /// The value of a metric column.
    pub fn metric(&self, m: Metric) -> f64 {
        match m {
            Metric::Accuracy => self.accuracy,
            Metric::ErrorRate => 1.0 - self.accuracy,
        }
    }
}

/// fastai's epoch table: `epoch train_loss valid_loss accuracy time`.
#[derive(Clone, Debug)]
pub struct EpochTable {
    metrics: Vec<Metric>,
}

impl EpochTable {
    /// A table with these metric columns.
    pub fn new(metrics: &[Metric]) -> Self {
        EpochTable {
            metrics: metrics.to_vec(),
        }
    }

    fn columns(&self) -> Vec<&'static str> {
        let mut c = vec!["epoch", "train_loss", "valid_loss"];
        c.extend(self.metrics.iter().map(|m| m.name()));
        c.push("time");
        c
    }

    /// The header line.
    pub fn header(&self) -> String {
        self.columns()
            .iter()
            .map(|c| format!("{c:<12}"))
            .collect::<String>()
            .trim_end()
            .to_string()
    }

    /// One row: losses and metrics with six decimals, time as `mm:ss`.
    pub fn row(&self, s: &EpochStats) -> String {
        let secs = s.seconds.round() as u64;
        let mut cells = vec![
            s.epoch.to_string(),
            format!("{:.6}", s.train_loss),
            format!("{:.6}", s.valid_loss),
        ];
        cells.extend(self.metrics.iter().map(|&m| format!("{:.6}", s.metric(m))));
        cells.push(format!("{:02}:{:02}", secs / 60, secs % 60));
        cells
            .iter()
            .map(|c| format!("{c:<12}"))
            .collect::<String>()
            .trim_end()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_line_up() {
        let t = EpochTable::new(&[Metric::Accuracy, Metric::ErrorRate]);
        assert_eq!(
            t.header(),
            "epoch       train_loss  valid_loss  accuracy    error_rate  time"
        );
        let row = t.row(&EpochStats {
            epoch: 3,
            stage: 0,
            train_loss: 0.5,
            valid_loss: 0.25,
            accuracy: 0.9,
            train_samples: 1,
            valid_samples: 1,
            seconds: 65.2,
            images_per_sec: 1.0,
            lr: 1e-3,
            step_profiles: Vec::new(),
        });
        assert_eq!(
            row,
            "3           0.500000    0.250000    0.900000    0.100000    01:05"
        );
    }
}
