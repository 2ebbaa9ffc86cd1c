//! The results table and its JSON form.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::measure::Measurement;

/// One bench: both sides, their ratio and the goal from the issue.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Short name, e.g. `train_cnn`.
    pub bench: String,
    /// What was run: sizes, batch, threads.
    pub detail: String,
    /// Unit of both medians (higher is better).
    pub unit: &'static str,
    /// Camshaft.
    pub ours: Measurement,
    /// The PyTorch (or PIL) reference script.
    pub pytorch: Measurement,
    /// `ours.median / pytorch.median`.
    pub ratio: f64,
    /// The smallest acceptable ratio.
    pub goal: f64,
    /// Whether `ratio >= goal`.
    pub met: bool,
    /// Bench-specific figures beyond the two medians (per-size rows of
    /// `allreduce`, efficiency and step breakdown of `scaling`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

impl BenchResult {
    /// Pair the two sides of a bench with its goal.
    pub fn new(
        bench: impl Into<String>,
        detail: impl Into<String>,
        unit: &'static str,
        ours: Measurement,
        pytorch: Measurement,
        goal: f64,
    ) -> Self {
        let ratio = ours.median / pytorch.median;
        BenchResult {
            bench: bench.into(),
            detail: detail.into(),
            unit,
            ours,
            pytorch,
            ratio,
            goal,
            met: ratio >= goal,
            extra: None,
        }
    }

    /// The same result with bench-specific figures for the JSON.
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

/// Everything one run of `camshaft-bench` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch at the end of the run.
    pub unix_time: u64,
    /// The command line.
    pub command: String,
    /// Intra-op threads on both sides (the loader always uses one).
    pub threads: i32,
    /// Cores the OS offers this process.
    pub cores: usize,
    /// Rounds of (ours, PyTorch) per bench; samples of all rounds are pooled.
    pub rounds: usize,
    /// One entry per bench, in the order run.
    pub results: Vec<BenchResult>,
}

impl Report {
    /// The table `bench | ours | pytorch | ratio (ours/pytorch) | goal`, in
    /// Markdown so it can be pasted into the README.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "bench".to_string(),
            "ours".to_string(),
            "pytorch".to_string(),
            "ratio (ours/pytorch)".to_string(),
            "goal".to_string(),
        ]];
        for r in &self.results {
            rows.push([
                format!("{} ({})", r.bench, r.detail),
                format!("{:.2} {}", r.ours.median, r.unit),
                format!("{:.2} {}", r.pytorch.median, r.unit),
                format!("{:.2}×", r.ratio),
                format!("≥{:.1}× {}", r.goal, if r.met { "met" } else { "MISSED" }),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|c| {
                rows.iter()
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String; 5]| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, &w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&rows[0]);
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for row in &rows[1..] {
            out.push_str(&line(row));
        }
        out
    }

    /// Write the report as pretty JSON, creating parent folders.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
