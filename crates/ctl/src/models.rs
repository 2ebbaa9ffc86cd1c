//! `ctl models list|get|alias|unalias|delete|import`.
//!
//! `import` checks the weights locally before uploading anything: it builds
//! the model with camshaft-vision (libtorch), loads the file into it with
//! every head variable required, and uploads the result re-saved as
//! safetensors, so the registry only ever receives weights that fit the spec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use camshaft_proto::bytes::Bytes;
use camshaft_proto::v1::{
    Arch, DeleteAliasRequest, DeleteModelRequest, GetModelRequest, Head, ImportModelHeader,
    ImportModelRequest, ListModelsRequest, ModelSpec, ModelVersion, Normalization, ResizeMethod,
    SetAliasRequest, WeightsFormat,
};
use sha2::{Digest, Sha256};

use crate::cli::{ImportArgs, ModelsCommand};
use crate::client::Servers;
use crate::console;
use crate::error::{CallError, InputError};
use crate::output::{Table, classes_short, format_bytes, format_utc};

/// `ctl models ...`.
pub async fn run(servers: &Servers, command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List { name, json } => list(servers, name, json).await,
        ModelsCommand::Get { reference, json } => get(servers, &reference, json).await,
        ModelsCommand::Alias {
            name,
            alias,
            version,
        } => set_alias(servers, name, alias, version).await,
        ModelsCommand::Unalias { name, alias } => delete_alias(servers, name, alias).await,
        ModelsCommand::Delete {
            name,
            version,
            force,
        } => delete(servers, name, version, force).await,
        ModelsCommand::Import(args) => import(servers, args).await,
    }
}

fn arch_head(spec: Option<&ModelSpec>) -> String {
    let Some(spec) = spec else {
        return "-".into();
    };
    let arch = Arch::try_from(spec.arch).unwrap_or(Arch::Unspecified);
    let head = Head::try_from(spec.head).unwrap_or(Head::Unspecified);
    format!("{}/{}", arch.short_name(), head.short_name())
}

/// A version's row of `ctl models list`.
pub fn model_row(version: &ModelVersion) -> Vec<String> {
    let accuracy = version
        .lineage
        .as_ref()
        .and_then(|l| l.metrics.get("accuracy"))
        .map(|a| format!("{a:.4}"))
        .unwrap_or_else(|| "-".into());
    let created = version
        .lineage
        .as_ref()
        .map(|l| format_utc(l.created_unix_ms))
        .unwrap_or_else(|| "-".into());
    let aliases = if version.aliases.is_empty() {
        "-".into()
    } else {
        version.aliases.join(",")
    };
    vec![
        format!("{}:{}", version.name, version.version),
        aliases,
        arch_head(version.spec.as_ref()),
        classes_short(
            version
                .spec
                .as_ref()
                .map(|s| s.class_names.as_slice())
                .unwrap_or_default(),
        ),
        accuracy,
        created,
    ]
}

async fn list(servers: &Servers, name: Option<String>, json: bool) -> anyhow::Result<()> {
    let name = name.unwrap_or_default();
    if !name.is_empty() {
        camshaft_proto::validate_name(&name).map_err(|e| InputError::new(e.to_string()))?;
    }
    let mut client = servers.coordinator().await?;
    let mut versions = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_models(ListModelsRequest {
                name: name.clone(),
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(CallError::wrap("coordinator", "ListModels"))?
            .into_inner();
        versions.extend(page.versions);
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            break;
        }
        page_token = page.next_page_token;
    }
    if json {
        return console::line(serde_json::to_string_pretty(&versions)?);
    }
    let mut table = Table::new(&[
        "MODEL",
        "ALIASES",
        "ARCH/HEAD",
        "CLASSES",
        "ACCURACY",
        "CREATED",
    ]);
    for version in &versions {
        table.row(model_row(version));
    }
    console::text(table.render())
}

/// The human description of `ctl models get`.
pub fn version_summary(version: &ModelVersion) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{:<11}{value}\n", format!("{name}:")));
    };
    field("model", format!("{}:{}", version.name, version.version));
    field(
        "aliases",
        if version.aliases.is_empty() {
            "-".into()
        } else {
            version.aliases.join(", ")
        },
    );
    if let Some(spec) = &version.spec {
        field("arch/head", arch_head(Some(spec)));
        let normalization = Normalization::try_from(spec.normalization)
            .unwrap_or(Normalization::Unspecified)
            .short_name();
        let resize = ResizeMethod::try_from(spec.resize)
            .unwrap_or(ResizeMethod::Unspecified)
            .short_name();
        field(
            "input",
            format!(
                "{0}x{0}, normalization {normalization}, resize {resize}",
                spec.input_size
            ),
        );
        field(
            "classes",
            format!(
                "{} ({})",
                spec.class_names.len(),
                spec.class_names.join(", ")
            ),
        );
    }
    if let Some(lineage) = &version.lineage {
        if !lineage.job_id.is_empty() {
            field("job", lineage.job_id.clone());
        }
        if !lineage.imported_from.is_empty() {
            field("imported", lineage.imported_from.clone());
        }
        if !lineage.dataset.is_empty() {
            field("dataset", lineage.dataset.clone());
        }
        if !lineage.metrics.is_empty() {
            let mut metrics: Vec<_> = lineage.metrics.iter().collect();
            metrics.sort_by(|a, b| a.0.cmp(b.0));
            field(
                "metrics",
                metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={v:.6}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        field("created", format_utc(lineage.created_unix_ms));
        if !lineage.created_by.is_empty() {
            field("by", lineage.created_by.clone());
        }
        if !lineage.weights_sha256.is_empty() {
            field(
                "weights",
                format!(
                    "{} sha256 {}",
                    format_bytes(lineage.weights_size_bytes),
                    lineage.weights_sha256
                ),
            );
        }
        if !lineage.checkpoint_id.is_empty() {
            field("checkpoint", lineage.checkpoint_id.clone());
        }
    }
    out
}

async fn get(servers: &Servers, reference: &str, json: bool) -> anyhow::Result<()> {
    camshaft_proto::ModelRef::parse(reference).map_err(|e| InputError::new(e.to_string()))?;
    let mut client = servers.coordinator().await?;
    let version = client
        .get_model(GetModelRequest {
            model: reference.to_string(),
        })
        .await
        .map_err(CallError::wrap("coordinator", "GetModel"))?
        .into_inner()
        .version
        .ok_or_else(|| anyhow::anyhow!("the coordinator returned no version for {reference}"))?;
    if json {
        console::line(serde_json::to_string_pretty(&version)?)
    } else {
        console::text(version_summary(&version))
    }
}

fn check_name_alias(name: &str, alias: &str) -> Result<(), InputError> {
    camshaft_proto::validate_name(name).map_err(|e| InputError::new(e.to_string()))?;
    camshaft_proto::validate_alias(alias).map_err(|e| InputError::new(e.to_string()))
}

async fn set_alias(
    servers: &Servers,
    name: String,
    alias: String,
    version: u64,
) -> anyhow::Result<()> {
    check_name_alias(&name, &alias)?;
    let mut client = servers.coordinator().await?;
    let response = client
        .set_alias(SetAliasRequest {
            name: name.clone(),
            alias: alias.clone(),
            version,
        })
        .await
        .map_err(CallError::wrap("coordinator", "SetAlias"))?
        .into_inner();
    let now = response.version.map(|v| v.version).unwrap_or(version);
    match response.previous_version {
        Some(previous) if previous != now => console::line(format!(
            "{name}@{alias} -> {name}:{now} (was {name}:{previous})"
        )),
        _ => console::line(format!("{name}@{alias} -> {name}:{now}")),
    }
}

async fn delete_alias(servers: &Servers, name: String, alias: String) -> anyhow::Result<()> {
    check_name_alias(&name, &alias)?;
    let mut client = servers.coordinator().await?;
    let response = client
        .delete_alias(DeleteAliasRequest {
            name: name.clone(),
            alias: alias.clone(),
        })
        .await
        .map_err(CallError::wrap("coordinator", "DeleteAlias"))?
        .into_inner();
    console::line(format!(
        "removed {name}@{alias} (was {name}:{})",
        response.previous_version
    ))
}

async fn delete(servers: &Servers, name: String, version: u64, force: bool) -> anyhow::Result<()> {
    camshaft_proto::validate_name(&name).map_err(|e| InputError::new(e.to_string()))?;
    let mut client = servers.coordinator().await?;
    let response = client
        .delete_model(DeleteModelRequest {
            name: name.clone(),
            version,
            force,
        })
        .await
        .map_err(CallError::wrap("coordinator", "DeleteModel"))?
        .into_inner();
    if response.removed_aliases.is_empty() {
        console::line(format!("deleted {name}:{version}"))
    } else {
        console::line(format!(
            "deleted {name}:{version} (removed aliases: {})",
            response.removed_aliases.join(", ")
        ))
    }
}

/// The two specs of an import: camshaft-vision's, to check the weights
/// locally, and the wire's, for the ImportModel header.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportSpecs {
    /// The spec camshaft-vision builds the model from.
    pub vision: camshaft_vision::ModelSpec,
    /// The same spec on the wire (resize CROP, as validation did).
    pub wire: ModelSpec,
}

/// Builds both specs from `ctl models import` flags. Normalisation defaults
/// to ImageNet's for a ResNet (torchvision bodies are trained with it) and
/// none for the CNN.
pub fn import_specs(args: &ImportArgs) -> Result<ImportSpecs, InputError> {
    let bad = |e: camshaft_proto::Error| InputError::new(e.to_string());
    let arch = Arch::from_short_name(&args.arch).map_err(bad)?;
    let head = Head::from_short_name(&args.head).map_err(bad)?;
    let normalization = match &args.normalize {
        Some(name) => Normalization::from_short_name(name).map_err(bad)?,
        None if arch == Arch::Cnn => Normalization::None,
        None => Normalization::Imagenet,
    };
    let class_names: Vec<String> = args.classes.iter().map(|c| c.trim().to_string()).collect();
    if class_names.iter().any(String::is_empty) {
        return Err(InputError::new("--classes has an empty class name"));
    }
    let vision = camshaft_vision::ModelSpec {
        arch: match arch {
            Arch::Cnn => camshaft_vision::Arch::Cnn,
            Arch::Resnet18 => camshaft_vision::Arch::Resnet18,
            Arch::Resnet34 | Arch::Unspecified => camshaft_vision::Arch::Resnet34,
        },
        head: match head {
            Head::Linear => camshaft_vision::HeadKind::Linear,
            Head::Fastai => camshaft_vision::HeadKind::Fastai,
            Head::Cam | Head::Unspecified => camshaft_vision::HeadKind::Cam,
        },
        class_names: class_names.clone(),
        input_size: args.image_size,
        normalization: match normalization {
            Normalization::Imagenet => camshaft_vision::Normalization::Imagenet,
            Normalization::None | Normalization::Unspecified => {
                camshaft_vision::Normalization::None
            }
        },
    };
    vision
        .validate()
        .map_err(|e| InputError::new(format!("bad model spec: {e}")))?;
    let wire = ModelSpec {
        arch: arch.into(),
        head: head.into(),
        class_names,
        input_size: args.image_size,
        normalization: normalization.into(),
        resize: ResizeMethod::Crop.into(),
    };
    Ok(ImportSpecs { vision, wire })
}

/// Parses `--metric name=value` options.
pub fn parse_metrics(metrics: &[String]) -> Result<HashMap<String, f64>, InputError> {
    let mut parsed = HashMap::new();
    for metric in metrics {
        let (name, value) = metric
            .split_once('=')
            .ok_or_else(|| InputError::new(format!("--metric {metric:?}: expected NAME=VALUE")))?;
        let value: f64 = value.trim().parse().map_err(|_| {
            InputError::new(format!("--metric {metric:?}: {value:?} is not a number"))
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(InputError::new(format!("--metric {metric:?}: empty name")));
        }
        parsed.insert(name.to_string(), value);
    }
    Ok(parsed)
}

/// Loads `weights` into a fresh model of `spec` (every variable required,
/// head included) and returns the model's weights re-saved as safetensors.
fn checked_safetensors(
    spec: camshaft_vision::ModelSpec,
    weights: &Path,
) -> anyhow::Result<Vec<u8>> {
    let mut model = camshaft_vision::Model::new(spec, tch::Device::Cpu)
        .map_err(|e| InputError::new(format!("cannot build the model: {e}")))?;
    camshaft_vision::import_weights(&mut model, weights, camshaft_vision::HeadPolicy::Require)
        .map_err(|e| {
            InputError::new(format!(
                "the weights in {} do not fit the model: {e}",
                weights.display()
            ))
        })?;
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join("weights.safetensors");
    camshaft_vision::save_weights(&model, &path)?;
    Ok(std::fs::read(&path)?)
}

async fn import(servers: &Servers, args: ImportArgs) -> anyhow::Result<()> {
    camshaft_proto::validate_name(&args.name).map_err(|e| InputError::new(e.to_string()))?;
    for alias in &args.aliases {
        camshaft_proto::validate_alias(alias).map_err(|e| InputError::new(e.to_string()))?;
    }
    let specs = import_specs(&args)?;
    let metrics = parse_metrics(&args.metrics)?;
    if !args.weights.is_file() {
        return Err(
            InputError::new(format!("no weights file at {}", args.weights.display())).into(),
        );
    }
    let file_name = args
        .weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // libtorch work stays off the async runtime's threads.
    let weights = args.weights.clone();
    let vision_spec = specs.vision.clone();
    let bytes =
        tokio::task::spawn_blocking(move || checked_safetensors(vision_spec, &weights)).await??;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let header = ImportModelHeader {
        name: args.name.clone(),
        spec: Some(specs.wire),
        format: WeightsFormat::Safetensors.into(),
        size_bytes: 0,
        sha256,
        file_name,
        dataset: args.dataset.clone().unwrap_or_default(),
        aliases: args.aliases.clone(),
        metrics,
    };
    let parts = ImportModelRequest::stream_parts(header, Bytes::from(bytes), 0);
    let mut client = servers.coordinator().await?;
    let version = client
        .import_model(tokio_stream::iter(parts))
        .await
        .map_err(CallError::wrap("coordinator", "ImportModel"))?
        .into_inner()
        .version
        .ok_or_else(|| {
            anyhow::anyhow!("the coordinator registered the model but returned no version")
        })?;
    console::line(format!("registered {}:{}", version.name, version.version))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_proto::v1::Lineage;

    fn import_args(arch: &str, head: &str) -> ImportArgs {
        ImportArgs {
            name: "pets".into(),
            arch: arch.into(),
            head: head.into(),
            classes: vec!["cat".into(), "dog".into()],
            image_size: 224,
            normalize: None,
            aliases: vec![],
            dataset: None,
            metrics: vec![],
            weights: PathBuf::from("w.pth"),
        }
    }

    #[test]
    fn import_specs_match_on_both_sides() {
        let specs = import_specs(&import_args("resnet34", "cam")).unwrap();
        assert_eq!(specs.vision.arch, camshaft_vision::Arch::Resnet34);
        assert_eq!(specs.vision.head, camshaft_vision::HeadKind::Cam);
        assert_eq!(
            specs.vision.normalization,
            camshaft_vision::Normalization::Imagenet
        );
        assert_eq!(specs.wire.arch(), Arch::Resnet34);
        assert_eq!(specs.wire.head(), Head::Cam);
        assert_eq!(specs.wire.resize(), ResizeMethod::Crop);
        assert_eq!(specs.wire.normalization(), Normalization::Imagenet);
        assert_eq!(specs.wire.class_names, vec!["cat", "dog"]);
        let cnn = import_specs(&import_args("cnn", "linear")).unwrap();
        assert_eq!(cnn.wire.normalization(), Normalization::None);
        assert!(import_specs(&import_args("vgg", "cam")).is_err());
        let mut one_class = import_args("resnet18", "cam");
        one_class.classes = vec!["cat".into()];
        assert!(import_specs(&one_class).is_err());
    }

    #[test]
    fn weights_that_do_not_fit_are_refused_locally() {
        let dir = tempfile::tempdir().unwrap();
        // Weights of a 3-class CNN do not fit a 2-class CNN.
        let three = camshaft_vision::ModelSpec {
            arch: camshaft_vision::Arch::Cnn,
            head: camshaft_vision::HeadKind::Linear,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            input_size: 32,
            normalization: camshaft_vision::Normalization::None,
        };
        let model = camshaft_vision::Model::new(three.clone(), tch::Device::Cpu).unwrap();
        let path = dir.path().join("three.safetensors");
        camshaft_vision::save_weights(&model, &path).unwrap();
        let bytes = checked_safetensors(three.clone(), &path).unwrap();
        assert!(!bytes.is_empty());
        let two = camshaft_vision::ModelSpec {
            class_names: vec!["a".into(), "b".into()],
            ..three
        };
        let err = checked_safetensors(two, &path).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }

    #[test]
    fn metrics_and_rows() {
        let metrics = parse_metrics(&["accuracy=0.98".into()]).unwrap();
        assert_eq!(metrics.get("accuracy"), Some(&0.98));
        assert!(parse_metrics(&["accuracy".into()]).is_err());
        assert!(parse_metrics(&["accuracy=high".into()]).is_err());
        let version = ModelVersion {
            name: "pets".into(),
            version: 2,
            aliases: vec!["latest".into(), "prod".into()],
            spec: Some(ModelSpec {
                arch: Arch::Resnet34 as i32,
                head: Head::Cam as i32,
                class_names: vec!["cat".into(), "dog".into()],
                ..Default::default()
            }),
            lineage: Some(Lineage {
                metrics: [("accuracy".to_string(), 0.986)].into_iter().collect(),
                created_unix_ms: 1_714_566_896_000,
                ..Default::default()
            }),
        };
        assert_eq!(
            model_row(&version),
            vec![
                "pets:2",
                "latest,prod",
                "resnet34/cam",
                "cat,dog",
                "0.9860",
                "2024-05-01 12:34:56Z"
            ]
        );
        assert!(version_summary(&version).contains("metrics:   accuracy=0.986000\n"));
    }
}
