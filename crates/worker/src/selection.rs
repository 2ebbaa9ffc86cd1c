//! Which epoch a job registers, and when it stops early: fastai's
//! `SaveModelCallback(monitor, every_epoch=False)` and
//! `EarlyStoppingCallback(monitor, patience)` over the group's epoch rows.
//!
//! Every rank sees the same rows (their sums are all-reduced), so every rank
//! reaches the same decision after the same epoch without talking: the
//! group stops together. The state is a function of the rows alone, so a
//! rank resumed from a checkpoint rebuilds it from the checkpoint's history
//! ([`EpochSelection::replay`]).
//!
//! An epoch improves on the best when its metric is strictly better
//! (`valid_loss` lower, `accuracy` higher): the earliest of equal epochs
//! stays the best, and a NaN never improves.
//!
//! (Compiled, not run, as every doctest of a crate that links libtorch:
//! rustdoc's binaries do not get its library path. The unit tests below
//! run the same cases.)
//!
//! ```no_run
//! use camshaft_proto::v1::{JobSpec, MonitorMetric, RegisterPolicy};
//! use camshaft_worker::selection::EpochSelection;
//!
//! let spec = JobSpec {
//!     register: RegisterPolicy::Best as i32,
//!     monitor: MonitorMetric::ValidLoss as i32,
//!     early_stop_patience: 2,
//!     ..Default::default()
//! };
//! let mut selection = EpochSelection::new(&spec);
//! for (epoch, loss) in [0.9, 0.5, 0.6, 0.7].into_iter().enumerate() {
//!     selection.observe(epoch, loss, 0.0);
//! }
//! assert_eq!(selection.registered_epoch(), Some(1));
//! assert!(selection.should_stop());
//! ```

use camshaft_proto::v1::{self, MonitorMetric, RegisterPolicy};
use camshaft_vision::EpochStats;
use serde_json::json;

/// The best-epoch and early-stopping state of one job.
#[derive(Clone, Debug)]
pub struct EpochSelection {
    policy: RegisterPolicy,
    monitor: MonitorMetric,
    patience: u32,
    /// The best epoch and its value, once one had a number.
    best: Option<(usize, f64)>,
    /// The last epoch seen.
    last: Option<usize>,
    /// Epochs in a row without improvement.
    waited: u32,
}

impl EpochSelection {
    /// The selection a job spec asks for (UNSPECIFIED: register the last
    /// epoch, monitor `valid_loss`).
    pub fn new(spec: &v1::JobSpec) -> Self {
        EpochSelection {
            policy: match spec.register() {
                RegisterPolicy::Best => RegisterPolicy::Best,
                _ => RegisterPolicy::Last,
            },
            monitor: match spec.monitor() {
                MonitorMetric::Accuracy => MonitorMetric::Accuracy,
                _ => MonitorMetric::ValidLoss,
            },
            patience: spec.early_stop_patience,
            best: None,
            last: None,
            waited: 0,
        }
    }

    /// Observes the rows of a resumed learner's history, in order.
    pub fn replay(&mut self, history: &[EpochStats]) {
        self.replay_rows(history.iter().map(|r| (r.epoch, r.valid_loss, r.accuracy)));
    }

    /// Observes `(epoch, valid_loss, accuracy)` rows in order.
    pub fn replay_rows(&mut self, rows: impl IntoIterator<Item = (usize, f64, f64)>) {
        for (epoch, valid_loss, accuracy) in rows {
            self.observe(epoch, valid_loss, accuracy);
        }
    }

    /// Observes one epoch's row; true when it is the new best.
    pub fn observe(&mut self, epoch: usize, valid_loss: f64, accuracy: f64) -> bool {
        self.last = Some(epoch);
        let value = match self.monitor {
            MonitorMetric::Accuracy => accuracy,
            _ => valid_loss,
        };
        let better = match self.best {
            _ if value.is_nan() => false,
            None => true,
            Some((_, best)) if self.monitor == MonitorMetric::Accuracy => value > best,
            Some((_, best)) => value < best,
        };
        if better {
            self.best = Some((epoch, value));
            self.waited = 0;
        } else {
            self.waited += 1;
        }
        better
    }

    /// Whether the job keeps its best epoch's weights (REGISTER_POLICY_BEST).
    pub fn keeps_best(&self) -> bool {
        self.policy == RegisterPolicy::Best
    }

    /// The best epoch so far, if one had a number.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.map(|(epoch, _)| epoch)
    }

    /// Whether training should stop now: `patience` epochs in a row
    /// without improvement (never with a patience of 0).
    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.waited >= self.patience
    }

    /// The epoch whose weights the job registers if it ends now: the best
    /// under REGISTER_POLICY_BEST (the last when no epoch had a number),
    /// else the last.
    pub fn registered_epoch(&self) -> Option<usize> {
        match self.best_epoch() {
            Some(best) if self.keeps_best() => Some(best),
            _ => self.last,
        }
    }

    /// The monitored metric's name (`valid_loss`, `accuracy`).
    pub fn monitor_name(&self) -> &'static str {
        match self.monitor {
            MonitorMetric::Accuracy => "accuracy",
            _ => "valid_loss",
        }
    }

    /// Why training stopped, once it should.
    pub fn early_stop(&self) -> Option<v1::EarlyStop> {
        if !self.should_stop() {
            return None;
        }
        let last = self.last.unwrap_or(0);
        let monitor = self.monitor_name();
        let (reason, best_epoch, best_value) = match self.best {
            Some((epoch, value)) => (
                format!(
                    "{monitor} did not improve for {} after epoch {epoch} ({value:.6})",
                    epochs(self.waited)
                ),
                epoch,
                value,
            ),
            None => (
                format!("{monitor} was never a number in {}", epochs(self.waited)),
                last,
                // No best value: 0 rather than NaN, which JSON cannot hold.
                0.0,
            ),
        };
        Some(v1::EarlyStop {
            epoch: last as u32,
            best_epoch: best_epoch as u32,
            best_value,
            monitor: monitor.into(),
            reason,
        })
    }

    /// What a checkpoint records under [`camshaft_store::bundle::SELECTION`].
    pub fn record(&self) -> serde_json::Value {
        let selected_by = match self.best {
            Some(_) if self.keeps_best() => format!("best {}", self.monitor_name()),
            _ => "last".to_string(),
        };
        let mut record = json!({
            "epoch": self.registered_epoch(),
            "selected_by": selected_by,
        });
        if let (Some(stop), Some(object)) = (self.early_stop(), record.as_object_mut()) {
            let value = serde_json::to_value(&stop).unwrap_or_default();
            object.insert("early_stop".into(), value);
        }
        record
    }
}

/// "1 epoch", "2 epochs".
fn epochs(n: u32) -> String {
    if n == 1 {
        "1 epoch".into()
    } else {
        format!("{n} epochs")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(register: RegisterPolicy, monitor: MonitorMetric, patience: u32) -> v1::JobSpec {
        v1::JobSpec {
            register: register as i32,
            monitor: monitor as i32,
            early_stop_patience: patience,
            ..Default::default()
        }
    }

    #[test]
    fn best_loss_is_the_earliest_lowest_and_last_is_last() {
        let mut best =
            EpochSelection::new(&spec(RegisterPolicy::Best, MonitorMetric::ValidLoss, 0));
        let mut last = EpochSelection::new(&spec(
            RegisterPolicy::Unspecified,
            MonitorMetric::Unspecified,
            0,
        ));
        let improved: Vec<bool> = [0.9, 0.4, 0.4, f64::NAN, 0.6]
            .into_iter()
            .enumerate()
            .map(|(epoch, loss)| {
                last.observe(epoch, loss, 0.0);
                best.observe(epoch, loss, 0.0)
            })
            .collect();
        assert_eq!(improved, [true, true, false, false, false]);
        assert_eq!(best.registered_epoch(), Some(1));
        assert_eq!(
            best.record(),
            json!({"epoch": 1, "selected_by": "best valid_loss"})
        );
        assert_eq!(last.registered_epoch(), Some(4));
        assert_eq!(last.record(), json!({"epoch": 4, "selected_by": "last"}));
        assert!(!best.should_stop(), "no patience, no stop");
    }

    #[test]
    fn accuracy_is_better_higher_and_patience_stops() {
        let mut s = EpochSelection::new(&spec(RegisterPolicy::Best, MonitorMetric::Accuracy, 2));
        s.observe(0, 0.5, 0.6);
        s.observe(1, 0.4, 0.8);
        s.observe(2, 0.3, 0.7);
        assert!(!s.should_stop());
        s.observe(3, 0.2, 0.8);
        assert!(s.should_stop(), "two epochs without a higher accuracy");
        let stop = s.early_stop().unwrap();
        assert_eq!(
            (stop.epoch, stop.best_epoch, stop.monitor.as_str()),
            (3, 1, "accuracy")
        );
        assert_eq!(
            stop.reason,
            "accuracy did not improve for 2 epochs after epoch 1 (0.800000)"
        );
        assert_eq!(s.record()["early_stop"]["best_epoch"], 1);
        assert_eq!(s.record()["epoch"], 1);
    }

    #[test]
    fn a_resumed_selection_replays_to_the_same_state() {
        let rows: Vec<(usize, f64, f64)> = vec![(0, 0.9, 0.0), (1, 0.5, 0.0), (2, 0.7, 0.0)];
        let job = spec(RegisterPolicy::Best, MonitorMetric::ValidLoss, 2);
        let mut live = EpochSelection::new(&job);
        for &(epoch, loss, accuracy) in &rows {
            live.observe(epoch, loss, accuracy);
        }
        let mut resumed = EpochSelection::new(&job);
        resumed.replay_rows(rows);
        assert_eq!(resumed.record(), live.record());
        assert!(!resumed.should_stop());
        resumed.observe(3, 0.8, 0.0);
        assert!(resumed.should_stop());
    }

    #[test]
    fn a_metric_that_is_never_a_number_stops_and_registers_the_last() {
        let mut s = EpochSelection::new(&spec(RegisterPolicy::Best, MonitorMetric::ValidLoss, 1));
        s.observe(0, f64::NAN, 0.0);
        assert!(s.should_stop());
        assert_eq!(s.registered_epoch(), Some(0));
        assert_eq!(s.record()["selected_by"], "last");
        assert!(s.early_stop().unwrap().reason.contains("never a number"));
    }
}
