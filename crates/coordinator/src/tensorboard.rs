//! TensorBoard event files of every job's epoch rows, so `tensorboard
//! --logdir <dir>` shows each job as a run: `<dir>/<job_id>/events.out.tfevents.*`.
//!
//! No TensorFlow and no generated protos: a file is a sequence of TFRecords
//! (`u64` little-endian length, masked CRC-32C of those 8 bytes, the data,
//! masked CRC-32C of the data), each holding one `tensorflow.Event`, encoded
//! with prost from the few fields written here ([`Event`], [`Summary`],
//! [`SummaryValue`], with `Event`'s field numbers). The first record of a file
//! is the `file_version` event `brain.Event:2`.
//!
//! Each coordinator process starts its own file per job (the name carries the
//! coordinator's start time), so a file is only ever appended by one writer
//! and a restart never appends after a torn record; TensorBoard reads every
//! file of a run directory. The steps are the job's 0-based epochs; the tags
//! are [`TAGS`] plus `step_time/<phase>` (seconds per step, the mean over
//! ranks) for epochs of jobs submitted with `profile_steps`.
//!
//! ```
//! use camshaft_coordinator::tensorboard::{masked_crc32c, record};
//! let framed = record(b"x");
//! assert_eq!(framed.len(), 8 + 4 + 1 + 4);
//! assert_eq!(&framed[13..], &masked_crc32c(b"x").to_le_bytes());
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use camshaft_proto::v1;
use prost::Message;

use crate::{Error, Result};

/// The scalar tags every epoch row writes, in order.
pub const TAGS: [&str; 6] = [
    "train/loss",
    "valid/loss",
    "valid/accuracy",
    "train/learning_rate",
    "train/images_per_sec",
    "epoch/seconds",
];

/// `tensorflow.Event`: only the fields written here (the others are absent
/// from the encoding, as proto3 allows).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The step (here: the job's epoch).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `brain.Event:2` in a file's first event (`oneof what`).
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// The scalars (`oneof what`).
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// One value per tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value` (a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    /// The series' name, e.g. `train/loss`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar (`oneof value`: always present, even when 0).
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotated right by 15 bits plus `0xa282ead8`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// `data` framed as one TFRecord.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The events of one epoch row: one event at step `row.epoch` with every
/// scalar of [`TAGS`], and the profiled phases' seconds per step.
pub fn epoch_event(row: &v1::EpochMetrics, wall_time: f64) -> Event {
    let scalars = [
        row.train_loss,
        row.valid_loss,
        row.accuracy,
        row.lr,
        row.images_per_sec,
        row.seconds,
    ];
    let mut value: Vec<SummaryValue> = TAGS
        .iter()
        .zip(scalars)
        .map(|(tag, v)| SummaryValue {
            tag: (*tag).to_string(),
            simple_value: Some(v as f32),
        })
        .collect();
    if !row.step_profiles.is_empty() {
        let mut sums = [0.0f64; 5];
        let mut ranks = 0.0f64;
        for profile in &row.step_profiles {
            let (Some(p), steps) = (&profile.total_seconds, profile.steps) else {
                continue;
            };
            let per = 1.0 / steps.max(1) as f64;
            for (sum, v) in sums
                .iter_mut()
                .zip(camshaft_proto::vocab::phases_from_wire(Some(p)))
            {
                *sum += v * per;
            }
            ranks += 1.0;
        }
        if ranks > 0.0 {
            let phases = camshaft_spec::StepPhase::NAMES;
            value.extend(phases.iter().zip(sums).map(|(phase, sum)| SummaryValue {
                tag: format!("step_time/{phase}"),
                simple_value: Some((sum / ranks) as f32),
            }));
        }
    }
    Event {
        wall_time,
        step: i64::from(row.epoch),
        file_version: None,
        summary: Some(Summary { value }),
    }
}

/// Writes jobs' epoch rows as TensorBoard runs under one directory.
#[derive(Clone, Debug)]
pub struct TensorboardWriter {
    dir: PathBuf,
    /// Part of every file name: this coordinator's start, in ms.
    started_unix_ms: i64,
}

impl TensorboardWriter {
    /// A writer into `dir` (created on the first row) for a coordinator that
    /// started at `started_unix_ms`.
    pub fn new(dir: impl Into<PathBuf>, started_unix_ms: i64) -> Self {
        TensorboardWriter {
            dir: dir.into(),
            started_unix_ms,
        }
    }

    /// The run directory of job `job_id`.
    pub fn run_dir(&self, job_id: &str) -> PathBuf {
        self.dir.join(job_id)
    }

    /// Appends `row` to job `job_id`'s event file (blocking file I/O: call
    /// it off the async threads), starting the file with its version event.
    pub fn append(&self, job_id: &str, row: &v1::EpochMetrics) -> Result<PathBuf> {
        let dir = self.run_dir(job_id);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(format!(
            "events.out.tfevents.{}.camshaft-coordinator",
            self.started_unix_ms.max(0) / 1000
        ));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let wall_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut bytes = Vec::new();
        let fresh = file.metadata().map_err(|e| io_error(&path, e))?.len() == 0;
        if fresh {
            let version = Event {
                wall_time,
                step: 0,
                file_version: Some("brain.Event:2".into()),
                summary: None,
            };
            bytes.extend(record(&version.encode_to_vec()));
        }
        bytes.extend(record(&epoch_event(row, wall_time).encode_to_vec()));
        file.write_all(&bytes).map_err(|e| io_error(&path, e))?;
        Ok(path)
    }
}

/// Writes `row` of job `job` under the cluster's
/// [`Config::tensorboard_dir`](crate::Config::tensorboard_dir), if it names
/// one, on a blocking thread. A failure is logged, never the worker's
/// problem: the row is already in the job's history.
pub(crate) async fn record_epoch(
    cluster: &crate::Cluster,
    job: camshaft_store::JobId,
    row: v1::EpochMetrics,
) {
    let Some(dir) = cluster.config().tensorboard_dir() else {
        return;
    };
    let writer = TensorboardWriter::new(dir, cluster.started_unix_ms);
    let job_id = job.to_string();
    let written = tokio::task::spawn_blocking(move || writer.append(&job_id, &row)).await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(job_id = %job, error = %e, "tensorboard row not written"),
        Err(e) => tracing::warn!(job_id = %job, error = %e, "tensorboard writer stopped"),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("tensorboard file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn crc32c_matches_known_vectors() {
        // RFC 3720 (iSCSI) B.4 and the usual check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn records_frame_length_and_data_with_masked_crcs() {
        // TensorFlow's masking of crc32c("") = 0 and a hand-computed one.
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
        let data = b"hello";
        let framed = record(data);
        assert_eq!(&framed[..8], &5u64.to_le_bytes());
        let crc = crc32c(&5u64.to_le_bytes());
        // TensorFlow's formula as written in its source, not our helper.
        #[expect(clippy::manual_rotate, reason = "the reference formula, spelt out")]
        let masked = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(&framed[8..12], &masked.to_le_bytes());
        assert_eq!(&framed[12..17], data);
        assert_eq!(&framed[17..], &masked_crc32c(data).to_le_bytes());
    }

    #[test]
    fn epoch_events_hold_every_tag_and_profiled_phases() {
        let mut row = v1::EpochMetrics {
            epoch: 2,
            train_loss: 0.5,
            lr: 0.0,
            ..Default::default()
        };
        let event = Event::decode(epoch_event(&row, 1.0).encode_to_vec().as_slice()).unwrap();
        assert_eq!(event.step, 2);
        let values = event.summary.unwrap().value;
        let tags: Vec<&str> = values.iter().map(|v| v.tag.as_str()).collect();
        assert_eq!(tags, TAGS);
        // A zero scalar is still written (TensorBoard would skip a value
        // without its `simple_value`).
        assert_eq!(values[3].simple_value, Some(0.0));
        row.step_profiles = vec![
            v1::RankStepProfile {
                rank: 0,
                steps: 4,
                total_seconds: Some(v1::StepPhases {
                    forward: 4.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
            v1::RankStepProfile {
                rank: 1,
                steps: 2,
                total_seconds: Some(v1::StepPhases {
                    forward: 4.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let values = epoch_event(&row, 1.0).summary.unwrap().value;
        let forward = values
            .iter()
            .find(|v| v.tag == "step_time/forward")
            .unwrap();
        // (4/4 + 4/2) / 2 ranks.
        assert_eq!(forward.simple_value, Some(1.5));
    }

    #[test]
    fn a_file_starts_with_its_version_and_appends_rows() {
        let dir = tempfile::tempdir().unwrap();
        let writer = TensorboardWriter::new(dir.path().join("tb"), 1_700_000_000_000);
        let row = v1::EpochMetrics::default();
        writer.append("j-1", &row).unwrap();
        let path = writer.append("j-1", &row).unwrap();
        assert!(path.starts_with(dir.path().join("tb").join("j-1")));
        let bytes = std::fs::read(&path).unwrap();
        let mut events = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let data = &rest[12..12 + len];
            let crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            events.push(Event::decode(data).unwrap());
            rest = &rest[16 + len..];
        }
        assert_eq!(events.len(), 3, "version + two rows");
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert!(events[1].summary.is_some() && events[2].summary.is_some());
    }
}
