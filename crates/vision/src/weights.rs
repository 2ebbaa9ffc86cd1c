//! Loading and saving weights by name: torchvision state dicts (`.pth`) and
//! safetensors, told apart by their bytes, with a report of what did not
//! fit. tch's `.ot` goes to libtorch's own deserializer, so it is read only
//! from the operator ([`WeightsOrigin::Operator`]), never from a request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Who chose a weight file, which decides the formats it may be read in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// Named by a request (a job's `pretrained_path`) or received from
    /// elsewhere (a stored checkpoint): safetensors or a `torch.save` zip
    /// archive, told apart by their first bytes, whatever the file is
    /// called; both go to readers written for hostile input. A `.ot` file
    /// (tch's format) is refused: it would go to libtorch's own
    /// deserializer.
    #[default]
    Request,
    /// Chosen by the operator on their own machine (`ctl models import`, the
    /// examples): the same formats, and also tch's `.ot`, by its extension.
    Operator,
}

/// The formats a [`WeightsOrigin::Request`] file may have, for messages.
const REQUEST_FORMATS: &str =
    "a .safetensors file or a PyTorch state dict saved by torch.save (.pth, .pt)";

/// What a weight file's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sniffed {
    /// An 8-byte little-endian header length, then a JSON header.
    Safetensors,
    /// A zip archive: `torch.save`'s format (and also tch's `.ot`).
    Zip,
    /// Neither.
    Unknown,
}

fn sniff(path: &Path) -> std::io::Result<Sniffed> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    let head = &head[..read];
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Sniffed::Zip);
    }
    if let [l0, l1, l2, l3, l4, l5, l6, l7, b'{'] = *head {
        let header = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
        if header >= 2 && header <= len.saturating_sub(8) {
            return Ok(Sniffed::Safetensors);
        }
    }
    Ok(Sniffed::Unknown)
}

/// Read every named tensor of a weight file a request named; see
/// [`WeightsOrigin::Request`] and [`read_named_tensors_from`].
pub fn read_named_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    read_named_tensors_from(path, WeightsOrigin::Request)
}

/// Read every named tensor of a weight file: `.safetensors` or a PyTorch
/// state dict saved with `torch.save` (`.pth`, `.pt`, `.bin`; read by
/// [`camshaft_pth`], since libtorch's own reader refuses the `OrderedDict`s
/// torchvision publishes), told apart by the file's first bytes; from the
/// operator also tch's `.ot`.
pub fn read_named_tensors_from(
    path: &Path,
    origin: WeightsOrigin,
) -> Result<Vec<(String, Tensor)>> {
    let bad = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let ot = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("ot"));
    match origin {
        WeightsOrigin::Operator if ot => {
            return Tensor::load_multi(path).map_err(|e| bad(format!("cannot read tensors: {e}")));
        }
        WeightsOrigin::Request if ot => {
            return Err(bad(format!(
                "tch's .ot format goes to libtorch's own deserializer and is not read from a request; give {REQUEST_FORMATS}"
            )));
        }
        _ => {}
    }
    match sniff(path).map_err(|e| bad(format!("cannot read: {e}")))? {
        Sniffed::Safetensors => {
            Tensor::read_safetensors(path).map_err(|e| bad(format!("cannot read tensors: {e}")))
        }
        Sniffed::Zip => camshaft_pth::read_state_dict(path)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .map(|(name, raw)| {
                let shape: Vec<i64> = raw.shape.iter().map(|&d| d as i64).collect();
                let t = Tensor::f_from_data_size(&raw.data, &shape, kind_of(raw.dtype))
                    .map_err(|e| bad(format!("tensor {name}: {e}")))?;
                Ok((name, t))
            })
            .collect(),
        Sniffed::Unknown => Err(bad(format!(
            "neither safetensors nor a torch.save zip archive; give {REQUEST_FORMATS}, saved by PyTorch 1.6 or later"
        ))),
    }
}

fn kind_of(dtype: camshaft_pth::DType) -> tch::Kind {
    use camshaft_pth::DType;
    use tch::Kind;
    match dtype {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
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
        let old_head =
            name.starts_with("fc.") || name.starts_with("head.") || name.starts_with("4.");
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

/// Import a weight file a request named into `model` (the formats of
/// [`WeightsOrigin::Request`]); see [`load_named_tensors`].
pub fn import_weights(model: &mut Model, path: &Path, policy: HeadPolicy) -> Result<ImportReport> {
    import_weights_from(model, path, policy, WeightsOrigin::Request)
}

/// [`import_weights`] of a file from `origin`.
pub fn import_weights_from(
    model: &mut Model,
    path: &Path,
    policy: HeadPolicy,
    origin: WeightsOrigin,
) -> Result<ImportReport> {
    let tensors = read_named_tensors_from(path, origin)?;
    load_named_tensors(model, tensors, policy, path)
}

/// Load a safetensors file held in memory (as [`save_weights`] writes it, e.g.
/// a model version's weights read from the store) into `model`; see
/// [`load_named_tensors`]. `source` names the bytes in errors ("pets:3").
pub fn load_safetensors_bytes(
    model: &mut Model,
    bytes: &[u8],
    policy: HeadPolicy,
    source: &str,
) -> Result<ImportReport> {
    let path = Path::new(source);
    let bad = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = Tensor::try_from(view).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            Ok((name, t))
        })
        .collect::<Result<Vec<_>>>()?;
    load_named_tensors(model, tensors, policy, path)
}

/// Save every variable (parameters and BatchNorm buffers) as safetensors,
/// under torchvision's names, via a temporary file renamed into place.
pub fn save_weights(model: &Model, path: &Path) -> Result<()> {
    if model.is_inference_only() {
        return Err(Error::Config(
            "this model's body was converted for inference (Model::body_in): its variables are not its weights any more".into(),
        ));
    }
    let named: Vec<(String, Tensor)> = model
        .named_variables()
        .into_iter()
        .map(|(k, v)| (k, v.to_device(tch::Device::Cpu)))
        .collect();
    write_safetensors_atomic(&named, path)
}

/// Write `named` (CPU tensors in any layout: safetensors holds them in the
/// default one) to `path` through a temporary sibling.
pub(crate) fn write_safetensors_atomic(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let contiguous: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(k, v)| (k.as_str(), v.contiguous()))
        .collect();
    Tensor::write_safetensors(&contiguous, &tmp).map_err(|e| Error::Weights {
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

    /// The weight file under `cache_dir`, downloaded first if it is not
    /// there (from `mirror`/`<file name>` when given), its sha256 prefix
    /// checked as torchvision checks it. Offline, the error names the address
    /// and the path where the file can be put by hand.
    pub fn fetch(&self, cache_dir: &Path, mirror: Option<&str>) -> Result<PathBuf> {
        let remote = camshaft_data::RemoteArchive {
            name: self.file_name(),
            url: self.url,
            checksum: Some(camshaft_data::Checksum::Sha256Prefix(self.sha256_prefix)),
            size: None,
            extracted_dir: "",
        };
        Ok(camshaft_data::download_archive(&remote, mirror, cache_dir)?)
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

/// The published ImageNet weights for `arch`, if torchvision has them
/// (the lecture's CNN has none).
pub fn pretrained_file(arch: Arch) -> Option<PretrainedFile> {
    PRETRAINED.into_iter().find(|p| p.arch == arch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Weights saved with `save_weights` load back from memory unchanged, and
    /// bytes that are not safetensors are an error naming the source.
    #[test]
    fn safetensors_bytes_round_trip() {
        use crate::model::{Head, ModelSpec, Normalization};
        let spec = ModelSpec {
            arch: Arch::Cnn,
            head: Head::Linear,
            class_names: vec!["a".into(), "b".into()],
            input_size: 16,
            normalization: Normalization::None,
        };
        let saved = Model::new(spec.clone(), tch::Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_weights(&saved, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut loaded = Model::new(spec, tch::Device::Cpu).unwrap();
        let report =
            load_safetensors_bytes(&mut loaded, &bytes, HeadPolicy::Require, "m:1").unwrap();
        assert_eq!(report.loaded, saved.named_variables().len());
        for (name, var) in saved.named_variables() {
            let other = &loaded.named_variables()[&name];
            assert!(var.equal(other), "{name} differs");
        }
        let err = load_safetensors_bytes(&mut loaded, b"junk", HeadPolicy::Require, "m:2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m:2") && err.contains("safetensors"), "{err}");
    }

    /// A wrong file is refused and removed, and an unreachable server gives
    /// an error naming the address and where to put the file by hand.
    #[test]
    fn pretrained_fetch_checks_the_hash_and_explains_offline() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for stream in listener.incoming().take(1) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).unwrap();
                let body = b"not the resnet18 weights";
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .unwrap();
                stream.write_all(body).unwrap();
            }
        });
        let file = pretrained_file(Arch::Resnet18).unwrap();
        let err = file
            .fetch(dir.path(), Some(&format!("http://{addr}")))
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(err.contains("sha256"), "{err}");
        assert!(!dir.path().join(file.file_name()).exists());

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = file
            .fetch(dir.path(), Some(&format!("http://{closed}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("resnet18-f37072fd.pth"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(pretrained_file(Arch::Cnn).is_none());
    }
}
