//! What `ctl bench` hands back: the results as serde types (`--json`), the
//! terminal table, and the `--report DIR` folder — `report.md` with the
//! table, SVG plots drawn with plotters' SVG backend, and `bench.json`.
//! For `train`: `throughput.svg` and `efficiency.svg` (images/s and scaling
//! efficiency against ranks); for `explain`: `throughput.svg` and
//! `latency.svg` (images/s and p50–p99 latency against clients, one line
//! per image size).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use super::placement::{Placement, RankDevice};
use super::plot::{self, Frame, legend_line};
use super::stats::{Percentiles, Summary};
use crate::output::Table;
use crate::trace::{PHASES, StepBreakdown};

/// What `ctl bench train` measured: the workload, then one point per rank count.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Network body (`cnn`, `resnet18`, `resnet34`).
    pub model: String,
    /// Classifier head.
    pub head: String,
    /// What the ranks ran on.
    pub device: RankDevice,
    /// Forward-pass precision (`fp32`, `bf16`, `fp16`).
    pub precision: String,
    /// Weights and inputs channels-last.
    pub channels_last: bool,
    /// Square side of the synthetic images, pixels.
    pub image_size: u32,
    /// Samples per batch per rank (the group steps on ranks × this).
    pub batch_size: u32,
    /// Training samples per epoch (the whole group's).
    pub train_len: u32,
    /// Epochs run first and left out of the numbers.
    pub warmup_epochs: u32,
    /// Epochs measured per job.
    pub epochs: u32,
    /// Jobs per rank count.
    pub repeats: u32,
    /// One point per rank count, in the order asked.
    pub points: Vec<TrainPoint>,
}

/// One rank count's results.
#[derive(Clone, Debug, Serialize)]
pub struct TrainPoint {
    /// Ranks in the group, and how they were laid out.
    #[serde(flatten)]
    pub placement: Placement,
    /// The benchmark's jobs, one per repeat.
    pub jobs: Vec<String>,
    /// The group's training images/s, one sample per measured epoch of every repeat.
    pub images_per_sec: Summary,
    /// The median images/s divided by the ranks.
    pub images_per_sec_per_rank: f64,
    /// `(rate(N)/N) / (rate(b)/b)` of the medians, `b` the fewest ranks asked.
    pub efficiency: f64,
    /// Wall seconds of the measured epochs (training and validation).
    pub epoch_seconds: Summary,
    /// Where a step's time went: per phase, the median over the measured
    /// epochs of the ranks' mean ms per step (and of the slowest rank's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<StepBreakdown>,
}

/// What `ctl bench time-to-accuracy` measured.
#[derive(Clone, Debug, Serialize)]
pub struct TimeToAccuracyReport {
    /// Network body.
    pub model: String,
    /// The data set (`synthetic`, `cifar10:/data/cifar10`, ...).
    pub dataset: String,
    /// Ranks and their layout.
    #[serde(flatten)]
    pub placement: Placement,
    /// The validation accuracy to reach, in [0, 1].
    pub target: f64,
    /// The job's epoch budget (its one-cycle schedule spans these).
    pub max_epochs: u32,
    /// The job.
    pub job_id: String,
    /// Whether an epoch reached `target`.
    pub reached: bool,
    /// Epochs run until it did (the reaching epoch included).
    pub epochs: Option<u32>,
    /// Seconds from the job's start (RUNNING) until the reaching epoch was
    /// recorded, as the coordinator's clock says: rendezvous, data set-up
    /// and checkpoints included.
    pub wall_seconds: Option<f64>,
    /// The summed epoch times up to it: training and validation only.
    pub epoch_seconds: Option<f64>,
    /// The accuracy of the reaching epoch.
    pub accuracy: Option<f64>,
    /// The best accuracy seen.
    pub best_accuracy: f64,
    /// Every epoch: accuracy against wall seconds since the start.
    pub curve: Vec<AccuracyPoint>,
}

/// One epoch of a time-to-accuracy run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyPoint {
    /// 0-based epoch.
    pub epoch: u32,
    /// Validation accuracy.
    pub accuracy: f64,
    /// Seconds since the job started when the epoch was recorded.
    pub wall_seconds: f64,
}

/// What `ctl bench explain` measured: the workload, then one point per
/// (image set, clients).
#[derive(Clone, Debug, Serialize)]
pub struct ExplainReport {
    /// The model as asked (`name`, `name@alias`, `name:version`).
    pub model: String,
    /// The version that answered, `name:version`.
    pub model_version: String,
    /// The method asked for (`default`: CAM where the head allows it).
    pub method: String,
    /// Images in each Explain call.
    pub images_per_request: u32,
    /// Whether overlay PNGs were asked for too.
    pub overlay: bool,
    /// Seconds measured per point.
    pub seconds: f64,
    /// Seconds run first at each point and left out.
    pub warmup_seconds: f64,
    /// One point per image set and client count, in the order run.
    pub points: Vec<ExplainPoint>,
}

/// One (image set, clients) point of `ctl bench explain`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainPoint {
    /// The images sent: `224×224 generated` or `12 files`.
    pub images: String,
    /// The side of generated images; `None` for files.
    pub size: Option<u32>,
    /// Concurrent clients, each its own connection with one call in flight.
    pub clients: u32,
    /// The measured window, seconds.
    pub seconds: f64,
    /// Calls answered OK within the window.
    pub requests: u64,
    /// Images explained (answered without an image error) within the window.
    pub images_explained: u64,
    /// Images the explainer answered with a per-image error.
    pub image_errors: u64,
    /// `images_explained / seconds`.
    pub images_per_sec: f64,
    /// `requests / seconds`.
    pub requests_per_sec: f64,
    /// Latency of the calls answered OK; `None` when none was.
    pub latency_ms: Option<Percentiles>,
    /// Calls that failed, by gRPC code (`RESOURCE_EXHAUSTED`: the
    /// explainer's queue was full; the client waited `retry-after-ms` and
    /// sent again).
    pub errors: BTreeMap<String, u64>,
}

impl ExplainPoint {
    /// `RESOURCE_EXHAUSTED=3 UNAVAILABLE=1`, or `0`.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors
            .iter()
            .map(|(code, n)| format!("{code}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Failed calls other than RESOURCE_EXHAUSTED (which is back-pressure,
    /// not failure).
    pub fn failed_calls(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(code, _)| code.as_str() != "RESOURCE_EXHAUSTED")
            .map(|(_, n)| n)
            .sum()
    }
}

impl ExplainReport {
    /// A one-line description of the workload.
    pub fn workload(&self) -> String {
        format!(
            "{} ({}), method {}, {} image{} per call{}; {} s measured after {} s warm-up per point",
            self.model,
            self.model_version,
            self.method,
            self.images_per_request,
            plural(self.images_per_request),
            if self.overlay { ", with overlays" } else { "" },
            self.seconds,
            self.warmup_seconds,
        )
    }

    fn latency_cells(point: &ExplainPoint) -> [String; 3] {
        match point.latency_ms {
            Some(l) => [
                format!("{:.1}", l.p50),
                format!("{:.1}", l.p90),
                format!("{:.1}", l.p99),
            ],
            None => ["-".into(), "-".into(), "-".into()],
        }
    }

    /// The terminal table: one row per point.
    pub fn table(&self) -> String {
        let mut table = Table::new(&[
            "IMAGES",
            "CLIENTS",
            "IMAGES/S",
            "REQUESTS/S",
            "P50 MS",
            "P90 MS",
            "P99 MS",
            "REQUESTS",
            "ERRORS",
        ]);
        for point in &self.points {
            let [p50, p90, p99] = Self::latency_cells(point);
            let mut errors = point.errors_text();
            if point.image_errors > 0 {
                errors.push_str(&format!(" (+{} image errors)", point.image_errors));
            }
            table.row(vec![
                point.images.clone(),
                point.clients.to_string(),
                format!("{:.1}", point.images_per_sec),
                format!("{:.1}", point.requests_per_sec),
                p50,
                p90,
                p99,
                point.requests.to_string(),
                errors,
            ]);
        }
        table.render()
    }

    /// `report.md`: the workload, the table, the plots and how to read them.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Camshaft explainer benchmark\n\n");
        out.push_str(&format!("{}.\n\n", self.workload()));
        out.push_str(
            "| images | clients | images/s | requests/s | p50 ms | p90 ms | p99 ms | requests | errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for point in &self.points {
            let [p50, p90, p99] = Self::latency_cells(point);
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {p50} | {p90} | {p99} | {} | {} |\n",
                point.images,
                point.clients,
                point.images_per_sec,
                point.requests_per_sec,
                point.requests,
                point.errors_text(),
            ));
        }
        out.push_str(
            "\n![Explain throughput against clients](throughput.svg)\n\n\
             ![Explain latency against clients](latency.svg)\n\n\
             Each client is its own gRPC connection with one `Explain` call in \
             flight at a time. Images/s counts the images explained in calls \
             that ended inside the measured window, over its length; latency \
             is per call, from sending it to its answer, percentiles by \
             nearest rank. RESOURCE_EXHAUSTED means the explainer's queue was \
             full: the client waited the `retry-after-ms` it was given and \
             sent again.\n",
        );
        out
    }
}

impl TrainReport {
    /// A one-line description of the workload.
    pub fn workload(&self) -> String {
        format!(
            "{}/{} in {}{} on {}×{} synthetic images, batch {} per rank, {} training samples per epoch; \
             {} warm-up epoch{} dropped, {} measured epoch{} × {} repeat{} per rank count",
            self.model,
            self.head,
            self.precision,
            if self.channels_last {
                " channels-last"
            } else {
                ""
            },
            self.image_size,
            self.image_size,
            self.batch_size,
            self.train_len,
            self.warmup_epochs,
            plural(self.warmup_epochs),
            self.epochs,
            plural(self.epochs),
            self.repeats,
            plural(self.repeats),
        )
    }

    /// The terminal table: ranks, layout, images/s (median, min–max), per
    /// rank, efficiency, epoch time.
    pub fn table(&self) -> String {
        let mut table = Table::new(&[
            "RANKS",
            "LAYOUT",
            "IMAGES/S",
            "MIN–MAX",
            "PER RANK",
            "EFFICIENCY",
            "EPOCH TIME",
            "JOBS",
        ]);
        for point in &self.points {
            table.row(vec![
                point.placement.ranks.to_string(),
                point.placement.label(),
                format!("{:.1}", point.images_per_sec.median),
                format!(
                    "{:.1}–{:.1}",
                    point.images_per_sec.min, point.images_per_sec.max
                ),
                format!("{:.1}", point.images_per_sec_per_rank),
                format!("{:.2}", point.efficiency),
                format!("{:.2} s", point.epoch_seconds.median),
                point.jobs.join(","),
            ]);
        }
        table.render()
    }

    fn breakdown_rows(&self) -> Vec<Vec<String>> {
        self.points
            .iter()
            .filter_map(|p| {
                let b = p.step_ms?;
                let mut row = vec![p.placement.ranks.to_string()];
                row.extend(b.mean_ms.0.iter().map(|ms| format!("{ms:.1}")));
                row.push(format!("{:.1}", b.max_ms.0[3]));
                row.push(format!("{:.1}", b.mean_ms.total()));
                Some(row)
            })
            .collect()
    }

    const BREAKDOWN_COLUMNS: [&str; 8] = [
        "RANKS",
        "DATA",
        "FORWARD",
        "BACKWARD",
        "ALLREDUCE",
        "OPTIMIZER",
        "ALLREDUCE MAX",
        "STEP",
    ];

    /// The step-time table (ms per step by phase), when the jobs were
    /// profiled.
    pub fn breakdown_table(&self) -> Option<String> {
        let rows = self.breakdown_rows();
        if rows.is_empty() {
            return None;
        }
        let mut table = Table::new(&Self::BREAKDOWN_COLUMNS);
        for row in rows {
            table.row(row);
        }
        Some(table.render())
    }

    /// `report.md`: the workload, the table, the plots and how to read them.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Camshaft training benchmark\n\n");
        out.push_str(&format!(
            "{} — ranks on {}.\n\n",
            self.workload(),
            self.device
        ));
        out.push_str(
            "| ranks | layout | images/s (median) | min–max | per rank | efficiency | epoch time (median) | jobs |\n\
             |---:|---|---:|---:|---:|---:|---:|---|\n",
        );
        for point in &self.points {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1}–{:.1} | {:.1} | {:.2} | {:.2} s | {} |\n",
                point.placement.ranks,
                point.placement.label(),
                point.images_per_sec.median,
                point.images_per_sec.min,
                point.images_per_sec.max,
                point.images_per_sec_per_rank,
                point.efficiency,
                point.epoch_seconds.median,
                point.jobs.join(", "),
            ));
        }
        out.push_str(
            "\n![Training throughput against ranks](throughput.svg)\n\n\
             ![Scaling efficiency against ranks](efficiency.svg)\n\n\
             Images/s is the group's training samples per second of an epoch's \
             training loop, as the workers measure it (validation and \
             checkpoints left out); the spread is min–max over every measured \
             epoch of every repeat. Efficiency is `(images/s(N) / N) / \
             (images/s(b) / b)` of the medians, `b` the fewest ranks measured: \
             1.00 is linear scaling. The batch is per rank, so a group of N \
             ranks steps on N × the batch and takes fewer steps per epoch.\n",
        );
        let rows = self.breakdown_rows();
        if !rows.is_empty() {
            out.push_str(&format!(
                "\n## Step time\n\nMilliseconds per step by phase ({}), the mean over \
                 ranks, median over the measured epochs; `allreduce max` is the slowest \
                 rank's all-reduce, which includes waiting for the others. \
                 `trace-<N>ranks.json` is the last measured epoch's final steps on \
                 every rank as a Chrome trace (open it in chrome://tracing or \
                 ui.perfetto.dev).\n\n\
                 | ranks | data | forward | backward | allreduce | optimizer | allreduce max | step |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---:|\n",
                PHASES.join(", ")
            ));
            for row in rows {
                out.push_str(&format!("| {} |\n", row.join(" | ")));
            }
        }
        out
    }
}

impl TimeToAccuracyReport {
    /// The plain-language result line.
    pub fn summary(&self) -> String {
        let layout = format!(
            "{} rank{} ({})",
            self.placement.ranks,
            plural(self.placement.ranks),
            self.placement.label()
        );
        match (self.epochs, self.wall_seconds, self.accuracy) {
            (Some(epochs), Some(wall), Some(accuracy)) => format!(
                "reached accuracy {accuracy:.4} ≥ {} after {epochs} epoch{} in {wall:.1} s wall \
                 ({:.1} s in epochs) on {layout}, job {}",
                self.target,
                plural(epochs),
                self.epoch_seconds.unwrap_or(0.0),
                self.job_id
            ),
            _ => format!(
                "never reached accuracy {} in {} epoch{} (best {:.4}) on {layout}, job {}",
                self.target,
                self.curve.len(),
                plural(self.curve.len() as u32),
                self.best_accuracy,
                self.job_id
            ),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Writes the `--report` folder: `report.md`, `throughput.svg`,
/// `efficiency.svg` and `bench.json`. Returns the Markdown file's path.
pub fn write_report(dir: &Path, report: &TrainReport) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        anyhow::Ok(path)
    };
    write("throughput.svg", throughput_svg(report)?)?;
    write("efficiency.svg", efficiency_svg(report)?)?;
    write_json(&dir.join("bench.json"), report)?;
    write("report.md", report.markdown())
}

/// The x range of a plot of `ranks`: from 0 to a little past the largest.
fn rank_axis(report: &TrainReport) -> std::ops::Range<f64> {
    let most = report
        .points
        .iter()
        .map(|p| p.placement.ranks)
        .max()
        .unwrap_or(1);
    0.0..f64::from(most) * 1.1 + 0.5
}

/// Images/s against ranks: the medians joined, min–max bars, and the linear
/// scaling of the smallest group for comparison.
pub fn throughput_svg(report: &TrainReport) -> anyhow::Result<String> {
    let mut points: Vec<(f64, &Summary)> = report
        .points
        .iter()
        .map(|p| (f64::from(p.placement.ranks), &p.images_per_sec))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let linear: Vec<(f64, f64)> = match points.first() {
        Some(&(ranks, base)) => points
            .iter()
            .map(|&(n, _)| (n, base.median * n / ranks.max(1.0)))
            .collect(),
        None => Vec::new(),
    };
    let top = points
        .iter()
        .map(|(_, s)| s.max)
        .chain(linear.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 1.15;
    let frame = Frame {
        caption: &format!("Training throughput — {}", report.model),
        x: ("ranks", rank_axis(report)),
        y: ("images/s", 0.0..top),
        x_labels: None,
        legend: Some(SeriesLabelPosition::UpperLeft),
    };
    plot::svg(frame, |chart| {
        let grey = BLACK.mix(0.4);
        chart
            .draw_series(LineSeries::new(
                linear,
                ShapeStyle::from(&grey).stroke_width(1),
            ))?
            .label("linear scaling")
            .legend(legend_line(grey));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(n, s)| (n, s.median)),
                ShapeStyle::from(&BLUE).stroke_width(2),
            ))?
            .label("median images/s (bars: min–max)")
            .legend(legend_line(BLUE));
        chart.draw_series(
            points
                .iter()
                .map(|&(n, s)| ErrorBar::new_vertical(n, s.min, s.median, s.max, BLUE, 8)),
        )?;
        chart.draw_series(
            points
                .iter()
                .map(|&(n, s)| Circle::new((n, s.median), 4, BLUE.filled())),
        )?;
        Ok(())
    })
}

/// Scaling efficiency against ranks, with the 1.0 of linear scaling.
pub fn efficiency_svg(report: &TrainReport) -> anyhow::Result<String> {
    let mut points: Vec<(f64, f64)> = report
        .points
        .iter()
        .map(|p| (f64::from(p.placement.ranks), p.efficiency))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x_range = rank_axis(report);
    let top = points.iter().map(|&(_, e)| e).fold(1.0, f64::max) * 1.15;
    let frame = Frame {
        caption: &format!("Scaling efficiency — {}", report.model),
        x: ("ranks", x_range.clone()),
        y: ("efficiency", 0.0..top),
        x_labels: None,
        legend: Some(SeriesLabelPosition::LowerLeft),
    };
    plot::svg(frame, |chart| {
        let grey = BLACK.mix(0.4);
        chart
            .draw_series(LineSeries::new(
                [(x_range.start, 1.0), (x_range.end, 1.0)],
                ShapeStyle::from(&grey).stroke_width(1),
            ))?
            .label("linear scaling (1.0)")
            .legend(legend_line(grey));
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                ShapeStyle::from(&RED).stroke_width(2),
            ))?
            .label("efficiency of the median images/s")
            .legend(legend_line(RED));
        chart.draw_series(
            points
                .iter()
                .map(|&(n, e)| Circle::new((n, e), 4, RED.filled())),
        )?;
        Ok(())
    })
}

/// Writes the `--report` folder of `ctl bench explain`: `report.md`,
/// `throughput.svg`, `latency.svg` and `bench.json`. Returns the Markdown
/// file's path.
pub fn write_explain_report(dir: &Path, report: &ExplainReport) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        anyhow::Ok(path)
    };
    let throughput = explain_series(report, |p| Some((p.images_per_sec, None)));
    write(
        "throughput.svg",
        clients_plot(
            &format!("Explain throughput — {}", report.model_version),
            "images/s",
            &throughput,
        )?,
    )?;
    let latency = explain_series(report, |p| {
        p.latency_ms.map(|l| (l.p50, Some((l.p50, l.p99))))
    });
    write(
        "latency.svg",
        clients_plot(
            &format!("Explain latency — {}", report.model_version),
            "ms per call (p50, bars to p99)",
            &latency,
        )?,
    )?;
    write_json(&dir.join("bench.json"), report)?;
    write("report.md", report.markdown())
}

/// One line of a plot: its label and `(x, y, optional bar from–to)` points.
type Series = (String, Vec<(f64, f64, Option<(f64, f64)>)>);

/// One series per image set, in the order first measured, x = clients.
fn explain_series(
    report: &ExplainReport,
    value: impl Fn(&ExplainPoint) -> Option<(f64, Option<(f64, f64)>)>,
) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for point in &report.points {
        let Some((y, bar)) = value(point) else {
            continue;
        };
        let at = (f64::from(point.clients), y, bar);
        match series.iter_mut().find(|(label, _)| *label == point.images) {
            Some((_, points)) => points.push(at),
            None => series.push((point.images.clone(), vec![at])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// A plot of `series` against clients, from 0 up.
fn clients_plot(caption: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<String> {
    const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let points = || series.iter().flat_map(|(_, points)| points.iter());
    let most_clients = points().map(|p| p.0).fold(1.0, f64::max);
    let top = points()
        .map(|&(_, y, bar)| bar.map_or(y, |(_, hi)| hi.max(y)))
        .fold(1e-3, f64::max)
        * 1.15;
    let frame = Frame {
        caption,
        x: ("clients", 0.0..most_clients * 1.1 + 0.5),
        y: (y_desc, 0.0..top),
        x_labels: None,
        legend: Some(SeriesLabelPosition::UpperLeft),
    };
    plot::svg(frame, |chart| {
        for (i, (label, line)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    line.iter().map(|&(x, y, _)| (x, y)),
                    ShapeStyle::from(&color).stroke_width(2),
                ))?
                .label(label.as_str())
                .legend(legend_line(color));
            chart.draw_series(line.iter().filter_map(|&(x, y, bar)| {
                bar.map(|(lo, hi)| ErrorBar::new_vertical(x, lo, y, hi, color, 8))
            }))?;
            chart.draw_series(
                line.iter()
                    .map(|&(x, y, _)| Circle::new((x, y), 4, color.filled())),
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report() -> TrainReport {
        let point = |ranks: u32, samples: Vec<f64>, efficiency: f64| TrainPoint {
            placement: Placement {
                ranks,
                workers: ranks,
                gpus_per_worker: 0,
                device: RankDevice::Cpu,
            },
            jobs: vec![format!("j-{ranks}")],
            images_per_sec_per_rank: Summary::of(samples.clone()).unwrap().median
                / f64::from(ranks),
            images_per_sec: Summary::of(samples).unwrap(),
            efficiency,
            epoch_seconds: Summary::of(vec![2.0, 2.5]).unwrap(),
            step_ms: (ranks == 2).then_some(StepBreakdown {
                ranks: 2,
                mean_ms: crate::trace::PhaseMs([1.0, 2.0, 3.0, 4.0, 0.5]),
                max_ms: crate::trace::PhaseMs([1.0, 2.0, 3.0, 6.25, 0.5]),
            }),
        };
        TrainReport {
            model: "cnn".into(),
            head: "linear".into(),
            precision: "fp32".into(),
            channels_last: false,
            device: RankDevice::Cpu,
            image_size: 32,
            batch_size: 64,
            train_len: 256,
            warmup_epochs: 1,
            epochs: 2,
            repeats: 1,
            points: vec![
                point(1, vec![1000.0, 1040.0], 1.0),
                point(2, vec![1800.0, 1900.0], 0.9),
            ],
        }
    }

    #[test]
    fn the_table_has_a_row_per_rank_count() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("RANKS"), "{table}");
        assert!(
            lines[1].contains("1020.0") && lines[1].contains("1.00"),
            "{table}"
        );
        assert!(
            lines[2].contains("1850.0")
                && lines[2].contains("1800.0–1900.0")
                && lines[2].contains("925.0")
                && lines[2].contains("0.90"),
            "{table}"
        );
    }

    #[test]
    fn the_breakdown_table_has_a_row_per_profiled_rank_count() {
        let table = report().breakdown_table().unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "only the 2-rank point has a profile: {table}"
        );
        assert!(lines[0].starts_with("RANKS") && lines[0].contains("ALLREDUCE MAX"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["2", "1.0", "2.0", "3.0", "4.0", "0.5", "6.2", "10.5"]
        );
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["points"][1]["step_ms"]["max_ms"]["allreduce"], 6.25);
        assert!(json["points"][0].get("step_ms").is_none());
    }

    #[test]
    fn the_report_folder_holds_markdown_svgs_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        let markdown = write_report(&out, &report()).unwrap();
        let text = std::fs::read_to_string(&markdown).unwrap();
        assert!(
            text.starts_with("# Camshaft training benchmark\n"),
            "{text}"
        );
        assert!(
            text.contains("| 2 | 2 × cpu | 1850.0 | 1800.0–1900.0 | 925.0 | 0.90 | 2.25 s | j-2 |"),
            "{text}"
        );
        assert!(text.contains("![Training throughput against ranks](throughput.svg)"));
        assert!(text.contains("](efficiency.svg)"));
        assert!(
            text.contains("| 2 | 1.0 | 2.0 | 3.0 | 4.0 | 0.5 | 6.2 | 10.5 |"),
            "{text}"
        );
        for name in ["throughput.svg", "efficiency.svg"] {
            let svg = std::fs::read_to_string(out.join(name)).unwrap();
            assert!(
                svg.starts_with("<svg"),
                "{name}: {}",
                &svg[..80.min(svg.len())]
            );
            assert!(svg.trim_end().ends_with("</svg>"), "{name}");
            assert!(svg.contains("ranks"), "{name} has no axis label");
            assert!(
                svg.contains("<polyline") || svg.contains("<path"),
                "{name} has no line"
            );
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap())
                .unwrap();
        assert_eq!(json["points"][1]["ranks"], 2);
        assert_eq!(json["points"][1]["device"], "cpu");
        assert_eq!(json["points"][1]["images_per_sec"]["median"], 1850.0);
        assert_eq!(json["points"][1]["efficiency"], 0.9);
    }

    fn explain_report() -> ExplainReport {
        let point = |images: &str, size, clients: u32, rate: f64| ExplainPoint {
            images: images.into(),
            size,
            clients,
            seconds: 2.0,
            requests: (rate * 2.0) as u64,
            images_explained: (rate * 2.0) as u64,
            image_errors: 0,
            images_per_sec: rate,
            requests_per_sec: rate,
            latency_ms: Percentiles::of(&[10.0, 12.0, 30.0]),
            errors: BTreeMap::new(),
        };
        let mut busy = point("512×512 generated", Some(512), 8, 20.0);
        busy.errors.insert("RESOURCE_EXHAUSTED".into(), 3);
        ExplainReport {
            model: "synthetic".into(),
            model_version: "synthetic:1".into(),
            method: "cam".into(),
            images_per_request: 1,
            overlay: false,
            seconds: 2.0,
            warmup_seconds: 1.0,
            points: vec![
                point("224×224 generated", Some(224), 1, 50.0),
                point("224×224 generated", Some(224), 8, 120.0),
                point("512×512 generated", Some(512), 1, 10.0),
                busy,
            ],
        }
    }

    #[test]
    fn the_explain_report_has_a_row_per_point_and_two_plots() {
        let report = explain_report();
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("IMAGES") && lines[0].contains("P99 MS"));
        assert!(
            lines[2].contains("120.0") && lines[2].contains("30.0"),
            "{table}"
        );
        assert!(lines[4].ends_with("RESOURCE_EXHAUSTED=3"), "{table}");
        assert_eq!(report.points[3].failed_calls(), 0);

        let dir = tempfile::tempdir().unwrap();
        let markdown = write_explain_report(dir.path(), &report).unwrap();
        let text = std::fs::read_to_string(markdown).unwrap();
        assert!(
            text.starts_with("# Camshaft explainer benchmark\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "| 224×224 generated | 8 | 120.0 | 120.0 | 12.0 | 30.0 | 30.0 | 240 | 0 |"
            ),
            "{text}"
        );
        for name in ["throughput.svg", "latency.svg"] {
            let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(
                svg.contains("clients") && svg.contains("512×512 generated"),
                "{name}"
            );
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench.json")).unwrap())
                .unwrap();
        assert_eq!(json["points"][3]["errors"]["RESOURCE_EXHAUSTED"], 3);
        assert_eq!(json["points"][0]["latency_ms"]["p50"], 12.0);
    }

    #[test]
    fn time_to_accuracy_says_plainly_whether_it_was_reached() {
        let mut tta = TimeToAccuracyReport {
            model: "resnet18".into(),
            dataset: "cifar10".into(),
            placement: Placement {
                ranks: 2,
                workers: 1,
                gpus_per_worker: 2,
                device: RankDevice::Cuda,
            },
            target: 0.94,
            max_epochs: 10,
            job_id: "j-7".into(),
            reached: true,
            epochs: Some(8),
            wall_seconds: Some(200.0),
            epoch_seconds: Some(184.0),
            accuracy: Some(0.9412),
            best_accuracy: 0.9412,
            curve: Vec::new(),
        };
        assert_eq!(
            tta.summary(),
            "reached accuracy 0.9412 ≥ 0.94 after 8 epochs in 200.0 s wall (184.0 s in epochs) \
             on 2 ranks (1 × 2 cuda), job j-7"
        );
        tta.reached = false;
        tta.epochs = None;
        tta.wall_seconds = None;
        tta.accuracy = None;
        tta.best_accuracy = 0.9;
        tta.curve = vec![
            AccuracyPoint {
                epoch: 0,
                accuracy: 0.9,
                wall_seconds: 20.0
            };
            10
        ];
        assert_eq!(
            tta.summary(),
            "never reached accuracy 0.94 in 10 epochs (best 0.9000) on 2 ranks (1 × 2 cuda), job j-7"
        );
    }
}
