//! Running the PyTorch reference scripts in `benches/reference/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::measure::Measurement;

/// Where the Python interpreter and the reference scripts are.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The interpreter (with torch, torchvision, pillow and numpy).
    pub python: PathBuf,
    /// The folder holding `train_step.py`, `loader.py` and `cam.py`.
    pub scripts: PathBuf,
}

/// The fields every reference script prints on its one JSON line.
#[derive(Debug, Deserialize)]
struct ScriptOutput {
    median: f64,
    samples: Vec<f64>,
}

/// A reference script's name with its `--flag value` arguments, as the
/// benches hand them to [`Reference::run`].
pub fn script_call<const N: usize>(
    script: &'static str,
    flags: [(&str, String); N],
) -> (&'static str, Vec<String>) {
    let args = flags
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
    (script, args)
}

impl Reference {
    /// The interpreter named by `python`, else `<repo>/.venv/bin/python`
    /// (what `scripts/setup` creates); the scripts beside this crate.
    pub fn locate(python: Option<PathBuf>) -> Self {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let repo = crate_dir.parent().unwrap_or(crate_dir);
        Reference {
            python: python.unwrap_or_else(|| repo.join(".venv/bin/python")),
            scripts: crate_dir.join("reference"),
        }
    }

    /// Run `script` with `args`; its last stdout line must be the JSON
    /// measurement.
    pub fn run(&self, script: &str, args: &[String]) -> anyhow::Result<Measurement> {
        let (line, value) = self.run_json(script, args)?;
        let parsed: ScriptOutput = serde_json::from_value(value)
            .with_context(|| format!("{script} printed {line:?}, not its JSON measurement"))?;
        Measurement::from_samples(parsed.samples)
            .filter(|m| (m.median - parsed.median).abs() <= 1e-9 * parsed.median.abs().max(1.0))
            .with_context(|| {
                format!("{script} reported no samples, or a median that is not theirs")
            })
    }

    /// Run `script` with `args` and parse its last stdout line as JSON
    /// (returned with the line itself, for error messages). Stderr is shown
    /// only when the script fails.
    pub fn run_json(
        &self,
        script: &str,
        args: &[String],
    ) -> anyhow::Result<(String, serde_json::Value)> {
        let path = self.scripts.join(script);
        let output = Command::new(&self.python)
            .arg(&path)
            .args(args)
            .output()
            .with_context(|| {
                format!(
                    "cannot start {} (set CAMSHAFT_PYTHON or --python to a Python with torch)",
                    self.python.display()
                )
            })?;
        if !output.status.success() {
            bail!(
                "{} {} failed ({}):\n{}",
                path.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .with_context(|| format!("{script} printed nothing"))?;
        let value = serde_json::from_str(line)
            .with_context(|| format!("{script} printed {line:?}, not JSON"))?;
        Ok((line.to_string(), value))
    }
}
