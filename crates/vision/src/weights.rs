//! Loading and saving weights by name: torchvision state dicts (`.pth`),
//! safetensors and tch's `.ot`, with a report of what did not fit.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use crate::model::{Arch, Model};
use crate::{Error, Result};

/// What to do with variables of the file that the model's head does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadPolicy {
    /// Every head variable must be in the file with the right shape (loading
    /// our own checkpoints and imported models).
    Require,
    /// Keep the model's freshly initialised head when the file's head differs
    /// or is missing (ImageNet weights for a new task: the 1000-class `fc` is
    /// dropped).
    KeepInitialised,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Variables copied from the file.
    pub loaded: usize,
    /// File keys ignored (the old head, `num_batches_tracked`).
    pub ignored: Vec<String>,
    /// Model variables left at their initial values (the new head).
    pub kept_initialised: Vec<String>,
}

/// Read every named tensor of a weight file: `.safetensors`, a PyTorch state
/// dict saved with `torch.save` (`.pth`, `.pt`, `.bin`), or tch's `.ot`.
pub fn read_named_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let read = match ext.as_str() {
        "safetensors" => Tensor::read_safetensors(path),
        "ot" => Tensor::load_multi(path),
        _ => Tensor::loadz_multi(path),
    };
    read.map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot read tensors: {e}"),
    })
}

/// Copy named tensors into the model's variables. Names may carry DDP's
/// `module.` prefix. Body mismatches are always errors that list the keys.
pub fn load_named_tensors(
    model: &mut Model,
    tensors: Vec<(String, Tensor)>,
    policy: HeadPolicy,
    source: &Path,
) -> Result<ImportReport> {
    let mut file: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v))
        .collect();
    let mut report = ImportReport::default();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let vars = model.named_variables();
    let mut copies = Vec::new();
    for (name, var) in &vars {
        let head = model.is_head(name);
        match file.remove(name) {
            Some(t) if t.size() == var.size() => copies.push((var.shallow_clone(), t)),
            Some(t) if head && policy == HeadPolicy::KeepInitialised => {
                report.ignored.push(format!("{name} {:?}", t.size()));
                report.kept_initialised.push(name.clone());
            }
            Some(t) => mismatched.push(format!(
                "{name}: file {:?}, model {:?}",
                t.size(),
                var.size()
            )),
            None if head && policy == HeadPolicy::KeepInitialised => {
                report.kept_initialised.push(name.clone())
            }
            None => missing.push(name.clone()),
        }
    }
    let mut unexpected = Vec::new();
    for (name, t) in file {
        let old_head = name.starts_with("fc.") || name.starts_with("head.") || name.starts_with("4.");
        if name.ends_with("num_batches_tracked")
            || (old_head && policy == HeadPolicy::KeepInitialised)
        {
            report.ignored.push(format!("{name} {:?}", t.size()));
        } else {
            unexpected.push(name);
        }
    }
    if !(missing.is_empty() && mismatched.is_empty() && unexpected.is_empty()) {
        let mut reason = Vec::new();
        if !missing.is_empty() {
            reason.push(format!("missing keys: {}", missing.join(", ")));
        }
        if !mismatched.is_empty() {
            reason.push(format!("shape mismatches: {}", mismatched.join("; ")));
        }
        if !unexpected.is_empty() {
            reason.push(format!("unexpected keys: {}", unexpected.join(", ")));
        }
        return Err(Error::Weights {
            path: source.to_path_buf(),
            reason: format!(
                "does not fit {} with a {} head ({})",
                model.spec().arch,
                model.spec().head,
                reason.join("; ")
            ),
        });
    }
    tch::no_grad(|| -> Result<()> {
        for (mut var, t) in copies {
            var.f_copy_(&t.to_kind(var.kind()))?;
        }
        Ok(())
    })?;
    report.loaded = vars.len() - report.kept_initialised.len();
    Ok(report)
}

/// Import a weight file into `model`; see [`load_named_tensors`].
pub fn import_weights(model: &mut Model, path: &Path, policy: HeadPolicy) -> Result<ImportReport> {
    let tensors = read_named_tensors(path)?;
    load_named_tensors(model, tensors, policy, path)
}

/// Save every variable (parameters and BatchNorm buffers) as safetensors,
/// under torchvision's names, via a temporary file renamed into place.
pub fn save_weights(model: &Model, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = model
        .named_variables()
        .into_iter()
        .map(|(k, v)| (k, v.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    write_safetensors_atomic(&named, path)
}

pub(crate) fn write_safetensors_atomic(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    Tensor::write_safetensors(named, &tmp).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// torchvision's ImageNet weight files: address and the sha256 prefix that
/// torchvision puts in the file name and checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PretrainedFile {
    /// Architecture the weights are for.
    pub arch: Arch,
    /// Canonical download address.
    pub url: &'static str,
    /// First hex digits of the file's sha256.
    pub sha256_prefix: &'static str,
}

impl PretrainedFile {
    /// The file name in a cache directory.
    pub fn file_name(&self) -> &'static str {
        self.url.rsplit('/').next().unwrap_or(self.url)
    }
}

/// ImageNet (`IMAGENET1K_V1`) weights of the ResNets, as torchvision publishes them.
pub const PRETRAINED: [PretrainedFile; 2] = [
    PretrainedFile {
        arch: Arch::Resnet18,
        url: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        sha256_prefix: "f37072fd",
    },
    PretrainedFile {
        arch: Arch::Resnet34,
        url: "https://download.pytorch.org/models/resnet34-b627a593.pth",
        sha256_prefix: "b627a593",
    },
];

/// The published ImageNet weights for `arch`, if torchvision has them.
pub fn pretrained_file(arch: Arch) -> Option<PretrainedFile> {
    PRETRAINED.into_iter().find(|p| p.arch == arch)
}
