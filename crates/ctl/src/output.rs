//! Text formatting without I/O: fastai's epoch table, job event lines,
//! aligned tables, times and sizes. Everything `ctl` prints goes through
//! these, so the unit tests pin the exact text scripts rely on.

use camshaft_proto::v1::{
    AllReduceRow, Device, DeviceKind, EpochMetrics, FailureKind, JobFailure, JobState,
    JobStateChanged, LogLine, ModelVersion,
};

/// The header of the epoch table, as fastai prints it.
pub fn epoch_header() -> String {
    format!(
        "{:<7}{:<12}{:<12}{:<10}{:<6} {}",
        "epoch", "train_loss", "valid_loss", "accuracy", "time", "images/s"
    )
}

/// One row of the epoch table: losses and accuracy with 6 decimals, time as
/// `mm:ss` (fastai's `format_time`), then the whole group's training
/// images per second.
pub fn epoch_row(metrics: &EpochMetrics) -> String {
    format!(
        "{:<7}{:<12.6}{:<12.6}{:<10.6}{:<6} {:.0}",
        metrics.epoch,
        metrics.train_loss,
        metrics.valid_loss,
        metrics.accuracy,
        format_epoch_time(metrics.seconds),
        metrics.images_per_sec
    )
}

/// fastai's `format_time`: whole seconds as `mm:ss`, or `h:mm:ss` past an hour.
pub fn format_epoch_time(seconds: f64) -> String {
    let total = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h == 0 {
        format!("{m:02}:{s:02}")
    } else {
        format!("{h}:{m:02}:{s:02}")
    }
}

/// Prints the epoch table row by row, repeating the header whenever a new
/// stage (fine_tune's frozen then unfrozen) or a new attempt starts.
#[derive(Debug, Default)]
pub struct EpochTable {
    last: Option<(u32, u32)>,
}

impl EpochTable {
    /// The lines to print for `metrics`: a header first when the stage or
    /// attempt changed, then the row.
    pub fn lines(&mut self, metrics: &EpochMetrics) -> Vec<String> {
        let key = (metrics.attempt, metrics.stage);
        let mut lines = Vec::with_capacity(2);
        if self.last != Some(key) {
            lines.push(epoch_header());
            self.last = Some(key);
        }
        lines.push(epoch_row(metrics));
        lines
    }
}

/// The two header lines of an all-reduce sweep, nccl-tests'
/// `all_reduce_perf` columns (its in-place half; no root for an all-reduce).
pub fn allreduce_header() -> [String; 2] {
    [
        format!(
            "#{:>11} {:>13} {:>9} {:>7} {:>9} {:>7} {:>7} {:>6}",
            "size", "count", "type", "redop", "time", "algbw", "busbw", "#wrong"
        ),
        format!(
            "#{:>11} {:>13} {:>9} {:>7} {:>9} {:>7} {:>7} {:>6}",
            "(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", ""
        )
        .trim_end()
        .to_string(),
    ]
}

/// One row of an all-reduce sweep, as nccl-tests prints it: the time is
/// the slowest rank's mean, `busbw = algbw · 2(n−1)/n`.
pub fn allreduce_row(row: &AllReduceRow) -> String {
    format!(
        " {:>11} {:>13} {:>9} {:>7} {:>9.2} {:>7.2} {:>7.2} {:>6}",
        row.bytes,
        row.count,
        row.dtype,
        row.redop,
        row.time_us,
        row.algbw_gbps,
        row.busbw_gbps,
        row.wrong
    )
}

/// Prints a sweep's rows, with the header first and again when a new
/// attempt starts over.
#[derive(Debug, Default)]
pub struct AllReduceTable {
    attempt: Option<u32>,
}

impl AllReduceTable {
    /// The lines to print for `row`.
    pub fn lines(&mut self, row: &AllReduceRow) -> Vec<String> {
        let mut lines = Vec::with_capacity(3);
        if self.attempt != Some(row.attempt) {
            lines.extend(allreduce_header());
            self.attempt = Some(row.attempt);
        }
        lines.push(allreduce_row(row));
        lines
    }
}

/// The closing lines of a sweep, as nccl-tests ends its table: the number
/// of wrong elements, the average bus bandwidth, and the peak with its size.
pub fn allreduce_footer(rows: &[AllReduceRow]) -> Vec<String> {
    let wrong: u64 = rows.iter().map(|r| r.wrong).sum();
    let avg = rows.iter().map(|r| r.busbw_gbps).sum::<f64>() / rows.len().max(1) as f64;
    let mut lines = vec![
        format!(
            "# Out of bounds values : {wrong} {}",
            if wrong == 0 { "OK" } else { "WRONG" }
        ),
        format!("# Avg bus bandwidth    : {avg:.4} GB/s"),
    ];
    if let Some(peak) = rows
        .iter()
        .max_by(|a, b| a.busbw_gbps.total_cmp(&b.busbw_gbps))
    {
        lines.push(format!(
            "# Peak bus bandwidth   : {:.4} GB/s at {} ({} rank{})",
            peak.busbw_gbps,
            format_bytes(peak.bytes),
            peak.world_size,
            if peak.world_size == 1 { "" } else { "s" }
        ));
    }
    lines
}

/// A job state's short name (`running`), or the number for one ctl does not know.
pub fn state_name(raw: i32) -> String {
    match JobState::try_from(raw) {
        Ok(state) => state.short_name().to_string(),
        Err(_) => format!("state {raw}"),
    }
}

/// A state change: `[running] 1 worker, world size 1`.
pub fn state_line(change: &JobStateChanged) -> String {
    let mut parts = Vec::new();
    if !change.reason.is_empty() {
        parts.push(change.reason.clone());
    }
    if change.attempt > 1 {
        parts.push(format!("attempt {}", change.attempt));
    }
    if change.world_size > 0 {
        parts.push(format!("world size {}", change.world_size));
    }
    let state = state_name(change.to);
    if parts.is_empty() {
        format!("[{state}]")
    } else {
        format!("[{state}] {}", parts.join(", "))
    }
}

/// A failure: `attempt 1 failed (worker_lost): lease expired (worker w-2, rank 1, epoch 3)`.
pub fn failure_line(failure: &JobFailure) -> String {
    let kind = match FailureKind::try_from(failure.kind) {
        Ok(kind) => kind.short_name().to_string(),
        Err(_) => format!("kind {}", failure.kind),
    };
    let mut line = format!("attempt {} failed ({kind})", failure.attempt);
    if !failure.reason.is_empty() {
        line.push_str(": ");
        line.push_str(&failure.reason);
    }
    let mut details = Vec::new();
    if !failure.worker_id.is_empty() {
        details.push(format!("worker {}", failure.worker_id));
    }
    if let Some(rank) = failure.rank {
        details.push(format!("rank {rank}"));
    }
    if let Some(epoch) = failure.epoch {
        details.push(format!("epoch {epoch}"));
    }
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join(", ")));
    }
    line
}

/// A registered version: `registered synthetic:3 (aliases: latest)`.
pub fn registered_line(version: &ModelVersion) -> String {
    let mut line = format!("registered {}:{}", version.name, version.version);
    if !version.aliases.is_empty() {
        line.push_str(&format!(" (aliases: {})", version.aliases.join(", ")));
    }
    line
}

/// A rank's log line: `[rank 0 on w-1] info: message`.
pub fn log_line(log: &LogLine) -> String {
    let mut source = format!("rank {}", log.rank);
    if !log.worker_id.is_empty() {
        source.push_str(&format!(" on {}", log.worker_id));
    }
    format!("[{source}] {}: {}", log.level, log.message)
}

/// Left-aligned columns separated by two spaces, the last column unpadded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header row.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A Unix-epoch millisecond time as UTC, `2024-05-01 12:34:56Z`; `-` for 0.
pub fn format_utc(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".to_string();
    }
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How long ago `then_ms` was at `now_ms`: `4s`, `12m`, `3h`, `2d` (`-` for 0).
pub fn format_age(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "-".to_string();
    }
    format_duration_ms(now_ms.saturating_sub(then_ms).max(0))
}

/// A duration, coarsely: `850ms`, `4s`, `12m`, `3h`, `2d`.
pub fn format_duration_ms(ms: i64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 120 {
        format!("{s}s")
    } else if s < 2 * 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86_400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// A byte count with a binary unit: `512 B`, `44.7 MiB`, `80.0 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A device in a few words: `cuda:0 NVIDIA H100 80GB HBM3 (79.6 GiB)`, `cpu (16 threads)`.
pub fn device_summary(device: &Device) -> String {
    let kind = DeviceKind::try_from(device.kind).unwrap_or(DeviceKind::Unspecified);
    let mut text = match kind {
        DeviceKind::Cuda => format!("cuda:{}", device.index),
        DeviceKind::Cpu => "cpu".to_string(),
        DeviceKind::Unspecified => format!("device {}", device.index),
    };
    if kind == DeviceKind::Cuda && !device.name.is_empty() {
        text.push(' ');
        text.push_str(&device.name);
    }
    let mut details = Vec::new();
    if device.cpu_threads > 0 {
        details.push(format!("{} threads", device.cpu_threads));
    }
    if device.memory_bytes > 0 {
        details.push(format_bytes(device.memory_bytes));
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

/// Devices in a table cell: `cuda:0,cuda:1` or `cpu`.
pub fn devices_short(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "-".to_string();
    }
    devices
        .iter()
        .map(|d| match DeviceKind::try_from(d.kind) {
            Ok(DeviceKind::Cuda) => format!("cuda:{}", d.index),
            Ok(DeviceKind::Cpu) => "cpu".to_string(),
            _ => format!("device:{}", d.index),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Class names in a table cell: all of them when short, else the count.
pub fn classes_short(class_names: &[String]) -> String {
    let joined = class_names.join(",");
    if class_names.is_empty() {
        "-".to_string()
    } else if joined.chars().count() <= 32 {
        joined
    } else {
        format!("{} classes", class_names.len())
    }
}

#[cfg(test)]
mod tests {
    // 0.693147 is ln 2 as fastai prints it, not an approximation to fix.
    #![allow(clippy::approx_constant)]
    use super::*;

    fn row(epoch: u32, stage: u32, attempt: u32) -> EpochMetrics {
        EpochMetrics {
            epoch,
            stage,
            attempt,
            train_loss: 0.693147,
            valid_loss: 0.681234,
            accuracy: 0.55,
            seconds: 12.7,
            ..Default::default()
        }
    }

    #[test]
    fn epoch_table_text_is_fastais() {
        assert_eq!(
            epoch_header(),
            "epoch  train_loss  valid_loss  accuracy  time   images/s"
        );
        assert_eq!(
            epoch_row(&row(0, 0, 1)),
            "0      0.693147    0.681234    0.550000  00:12  0"
        );
        let long = EpochMetrics {
            epoch: 12,
            train_loss: 12.5,
            valid_loss: f64::NAN,
            accuracy: 1.0,
            seconds: 3725.0,
            ..Default::default()
        };
        assert_eq!(
            epoch_row(&long),
            "12     12.500000   NaN         1.000000  1:02:05 0"
        );
    }

    #[test]
    fn header_repeats_per_stage_and_attempt() {
        let mut table = EpochTable::default();
        assert_eq!(table.lines(&row(0, 0, 1)).len(), 2);
        assert_eq!(table.lines(&row(1, 1, 1)).len(), 2);
        assert_eq!(table.lines(&row(2, 1, 1)).len(), 1);
        assert_eq!(table.lines(&row(2, 1, 2)).len(), 2);
    }

    #[test]
    fn epoch_times() {
        assert_eq!(format_epoch_time(0.4), "00:00");
        assert_eq!(format_epoch_time(59.99), "00:59");
        assert_eq!(format_epoch_time(61.0), "01:01");
        assert_eq!(format_epoch_time(-3.0), "00:00");
    }

    #[test]
    fn event_lines() {
        let change = JobStateChanged {
            from: JobState::Pending as i32,
            to: JobState::Running as i32,
            attempt: 1,
            reason: "1 worker".into(),
            world_size: 1,
        };
        assert_eq!(state_line(&change), "[running] 1 worker, world size 1");
        let done = JobStateChanged {
            to: JobState::Succeeded as i32,
            ..Default::default()
        };
        assert_eq!(state_line(&done), "[succeeded]");
        let failure = JobFailure {
            attempt: 1,
            kind: FailureKind::WorkerLost as i32,
            reason: "lease expired after 10 s".into(),
            worker_id: "w-2".into(),
            rank: Some(1),
            epoch: None,
            unix_ms: 0,
        };
        assert_eq!(
            failure_line(&failure),
            "attempt 1 failed (worker_lost): lease expired after 10 s (worker w-2, rank 1)"
        );
        let version = ModelVersion {
            name: "synthetic".into(),
            version: 3,
            aliases: vec!["latest".into()],
            ..Default::default()
        };
        assert_eq!(
            registered_line(&version),
            "registered synthetic:3 (aliases: latest)"
        );
    }

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["ID", "STATE", "NAME"]);
        table.row(vec!["j-1".into(), "running".into(), "pets".into()]);
        table.row(vec!["j-10".into(), "pending".into(), String::new()]);
        assert_eq!(
            table.render(),
            "ID    STATE    NAME\nj-1   running  pets\nj-10  pending\n"
        );
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(format_utc(0), "-");
        assert_eq!(format_utc(1_714_566_896_000), "2024-05-01 12:34:56Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(format_age(10_000, 6_000), "4s");
        assert_eq!(format_age(10_000_000, 4_000_000), "100m");
        assert_eq!(format_age(10_000, 0), "-");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(46_872_576), "44.7 MiB");
        let gpu = Device {
            kind: DeviceKind::Cuda as i32,
            index: 1,
            name: "NVIDIA H100".into(),
            memory_bytes: 80 * 1024 * 1024 * 1024,
            cpu_threads: 0,
        };
        assert_eq!(device_summary(&gpu), "cuda:1 NVIDIA H100 (80.0 GiB)");
        assert_eq!(devices_short(&[gpu]), "cuda:1");
        assert_eq!(classes_short(&["cat".into(), "dog".into()]), "cat,dog");
    }

    #[test]
    fn the_allreduce_table_reads_like_nccl_tests() {
        let row = |bytes: u64, attempt: u32, busbw_gbps: f64| AllReduceRow {
            bytes,
            count: bytes / 4,
            dtype: "float".into(),
            redop: "sum".into(),
            time_us: 12.345,
            algbw_gbps: busbw_gbps,
            busbw_gbps,
            wrong: 0,
            world_size: 2,
            iters: 50,
            attempt,
            collective: 2,
            mean_time_us: 12.0,
        };
        let mut table = AllReduceTable::default();
        let first = table.lines(&row(8, 1, 0.0));
        assert_eq!(
            first,
            [
                "#       size         count      type   redop      time   algbw   busbw #wrong",
                "#        (B)    (elements)                        (us)  (GB/s)  (GB/s)",
                "           8             2     float     sum     12.35    0.00    0.00      0",
            ]
        );
        assert_eq!(table.lines(&row(1 << 20, 1, 1.5)).len(), 1);
        // A restarted attempt starts the table again.
        assert_eq!(table.lines(&row(8, 2, 0.0)).len(), 3);
        let rows = [row(8, 1, 0.5), row(16, 1, 1.5)];
        assert_eq!(
            allreduce_footer(&rows),
            [
                "# Out of bounds values : 0 OK",
                "# Avg bus bandwidth    : 1.0000 GB/s",
                "# Peak bus bandwidth   : 1.5000 GB/s at 16 B (2 ranks)",
            ]
        );
    }
}
