//! `ctl models list|get|alias|unalias|delete|import|update|history|watch`.
//!
//! `import` checks the weights locally before uploading anything, without
//! libtorch: a `torch.save` state dict is read by `camshaft-pth` and turned
//! into float32 safetensors, and the safetensors are checked against every
//! tensor name and shape the spec's architecture and head expect
//! (`camshaft-spec`, the check the registry runs too), so the registry only
//! ever receives weights that fit the spec.

use std::collections::HashMap;
use std::path::Path;

use camshaft_proto::bytes::Bytes;
use camshaft_proto::v1::{
    Arch, DeleteAliasRequest, DeleteModelRequest, GetAliasHistoryRequest, GetModelRequest, Head,
    ImportModelHeader, ImportModelRequest, ListModelsRequest, ModelSpec, ModelVersion,
    Normalization, ResizeMethod, SetAliasRequest, UpdateModelVersionRequest, WatchModelsRequest,
    WeightsFormat, model_event::Event as ModelEvent,
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
        ModelsCommand::History {
            name,
            alias,
            limit,
            json,
        } => history(servers, &name, alias, limit, json).await,
        ModelsCommand::Watch { name, json } => watch(servers, name, json).await,
        ModelsCommand::Update {
            name,
            version,
            tags,
            remove_tags,
            description,
        } => update(servers, name, version, &tags, remove_tags, description).await,
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
    if !version.tags.is_empty() {
        let mut tags: Vec<_> = version.tags.iter().collect();
        tags.sort();
        field(
            "tags",
            tags.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !version.description.is_empty() {
        field("about", version.description.clone());
    }
    if let Some(lineage) = &version.lineage {
        if !lineage.job_id.is_empty() {
            field("job", lineage.job_id.clone());
        }
        if let Some(epoch) = lineage.epoch {
            field("epoch", format!("{epoch} ({})", lineage.selected_by));
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

async fn history(
    servers: &Servers,
    name: &str,
    alias: Option<String>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    camshaft_proto::validate_name(name).map_err(|e| InputError::new(e.to_string()))?;
    if let Some(alias) = &alias {
        camshaft_proto::validate_alias(alias).map_err(|e| InputError::new(e.to_string()))?;
    }
    let mut client = servers.coordinator().await?;
    let mut changes = Vec::new();
    let mut page_token = String::new();
    while changes.len() < limit {
        let page = client
            .get_alias_history(GetAliasHistoryRequest {
                name: name.to_string(),
                alias: alias.clone().unwrap_or_default(),
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(CallError::wrap("coordinator", "GetAliasHistory"))?
            .into_inner();
        changes.extend(page.changes);
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            break;
        }
        page_token = page.next_page_token;
    }
    changes.truncate(limit);
    if json {
        return console::line(serde_json::to_string_pretty(&changes)?);
    }
    let mut table = Table::new(&["WHEN", "ALIAS", "FROM", "TO", "BY"]);
    let version = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for change in &changes {
        table.row(vec![
            format_utc(change.unix_ms),
            change.alias.clone(),
            version(change.from_version),
            version(change.to_version),
            if change.changed_by.is_empty() {
                "-".into()
            } else {
                change.changed_by.clone()
            },
        ]);
    }
    console::text(table.render())
}

/// One line of `ctl models watch`.
pub fn event_line(event: &camshaft_proto::v1::ModelEvent) -> String {
    let by = |who: &str| {
        if who.is_empty() {
            String::new()
        } else {
            format!(" by {who}")
        }
    };
    let what = match &event.event {
        Some(ModelEvent::VersionRegistered(v)) => format!(
            "registered {}:{}{}",
            v.name,
            v.version,
            by(v.lineage.as_ref().map_or("", |l| l.created_by.as_str()))
        ),
        Some(ModelEvent::VersionUpdated(v)) => format!("updated {}:{}", v.name, v.version),
        Some(ModelEvent::VersionDeleted(d)) => format!("deleted {}:{}", d.name, d.version),
        Some(ModelEvent::AliasChanged(c)) => match (c.from_version, c.to_version) {
            (_, None) => format!("removed {}@{}{}", c.name, c.alias, by(&c.changed_by)),
            (None, Some(to)) => format!("{}@{} -> {to}{}", c.name, c.alias, by(&c.changed_by)),
            (Some(from), Some(to)) => format!(
                "{}@{} -> {to} (was {from}){}",
                c.name,
                c.alias,
                by(&c.changed_by)
            ),
        },
        None => "unknown event".into(),
    };
    format!("{} #{} {what}", format_utc(event.unix_ms), event.sequence)
}

async fn watch(servers: &Servers, name: Option<String>, json: bool) -> anyhow::Result<()> {
    let name = name.unwrap_or_default();
    if !name.is_empty() {
        camshaft_proto::validate_name(&name).map_err(|e| InputError::new(e.to_string()))?;
    }
    let mut client = servers.coordinator().await?;
    let mut stream = client
        .watch_models(WatchModelsRequest {
            name,
            ..Default::default()
        })
        .await
        .map_err(CallError::wrap("coordinator", "WatchModels"))?
        .into_inner();
    while let Some(event) = stream
        .message()
        .await
        .map_err(CallError::wrap("coordinator", "WatchModels"))?
    {
        if json {
            console::line(serde_json::to_string(&event)?)?;
        } else {
            console::line(event_line(&event))?;
        }
    }
    Ok(())
}

async fn update(
    servers: &Servers,
    name: String,
    version: u64,
    tags: &[String],
    remove_tags: Vec<String>,
    description: Option<String>,
) -> anyhow::Result<()> {
    camshaft_proto::validate_name(&name).map_err(|e| InputError::new(e.to_string()))?;
    let set_tags = crate::job_spec::parse_tags(tags)?;
    if set_tags.is_empty() && remove_tags.is_empty() && description.is_none() {
        return Err(InputError::new(
            "nothing to change: pass --tag KEY=VALUE, --remove-tag KEY or --description TEXT",
        )
        .into());
    }
    let mut client = servers.coordinator().await?;
    let version = client
        .update_model_version(UpdateModelVersionRequest {
            name,
            version,
            set_tags,
            remove_tags,
            description,
        })
        .await
        .map_err(CallError::wrap("coordinator", "UpdateModelVersion"))?
        .into_inner()
        .version
        .ok_or_else(|| anyhow::anyhow!("the coordinator returned no version"))?;
    console::text(version_summary(&version))
}

/// The two specs of an import: the vocabulary's, to check the weights
/// locally, and the wire's, for the ImportModel header.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportSpecs {
    /// The model the weights must fit.
    pub model: camshaft_spec::ModelSpec,
    /// The same spec on the wire (resize CROP, as validation did).
    pub wire: ModelSpec,
}

/// Builds both specs from `ctl models import` flags. Normalisation defaults
/// to ImageNet's for a ResNet (torchvision bodies are trained with it) and
/// none for the CNN.
pub fn import_specs(args: &ImportArgs) -> Result<ImportSpecs, InputError> {
    let bad = |e: camshaft_spec::Error| InputError::new(e.to_string());
    let arch = camshaft_spec::Arch::from_name(&args.arch).map_err(bad)?;
    let head = camshaft_spec::Head::from_name(&args.head).map_err(bad)?;
    let normalization = match &args.normalize {
        Some(name) => camshaft_spec::Normalization::from_name(name).map_err(bad)?,
        None if arch == camshaft_spec::Arch::Cnn => camshaft_spec::Normalization::None,
        None => camshaft_spec::Normalization::Imagenet,
    };
    let class_names: Vec<String> = args.classes.iter().map(|c| c.trim().to_string()).collect();
    if class_names.iter().any(String::is_empty) {
        return Err(InputError::new("--classes has an empty class name"));
    }
    let model = camshaft_spec::ModelSpec {
        arch,
        head,
        class_names,
        input_size: args.image_size,
        normalization,
    };
    model.validate().map_err(bad)?;
    let wire = ModelSpec::from(&camshaft_spec::VersionSpec {
        model: model.clone(),
        resize: camshaft_spec::ResizeMethod::Crop,
    });
    Ok(ImportSpecs { model, wire })
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

/// The weights file as the registry stores it (a `.safetensors` file as
/// it is, anything else read as a `torch.save` state dict and converted to
/// float32 safetensors), after checking that it holds exactly the tensors
/// `spec` expects, with their shapes. Blocking (reads the file).
fn checked_safetensors(spec: &camshaft_spec::ModelSpec, weights: &Path) -> anyhow::Result<Vec<u8>> {
    let unfit = |e: &dyn std::fmt::Display| {
        InputError::new(format!(
            "the weights in {} do not fit the model: {e}",
            weights.display()
        ))
    };
    let is_safetensors = weights
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let bytes = if is_safetensors {
        std::fs::read(weights)?
    } else {
        let tensors = camshaft_pth::read_state_dict(weights).map_err(|e| unfit(&e))?;
        camshaft_spec::state_dict_safetensors(tensors).map_err(|e| unfit(&e))?
    };
    spec.shape().check_weights(&bytes).map_err(|e| unfit(&e))?;
    Ok(bytes)
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
    // File reading stays off the async runtime's threads.
    let weights = args.weights.clone();
    let model = specs.model.clone();
    let bytes =
        tokio::task::spawn_blocking(move || checked_safetensors(&model, &weights)).await??;
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
        tags: crate::job_spec::parse_tags(&args.tags)?,
        description: args.description.clone().unwrap_or_default(),
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
            tags: vec![],
            description: None,
            weights: std::path::PathBuf::from("w.pth"),
        }
    }

    #[test]
    fn import_specs_match_on_both_sides() {
        let specs = import_specs(&import_args("resnet34", "cam")).unwrap();
        assert_eq!(specs.model.arch, camshaft_spec::Arch::Resnet34);
        assert_eq!(specs.model.head, camshaft_spec::Head::Cam);
        assert_eq!(
            specs.model.normalization,
            camshaft_spec::Normalization::Imagenet
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

    /// A safetensors file with the tensors `spec` expects (zeros).
    fn fitting_safetensors(spec: &camshaft_spec::ModelSpec) -> Vec<u8> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = spec
            .shape()
            .expected_parameters()
            .into_iter()
            .map(|(name, shape)| {
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let data = vec![0u8; 4 * shape.iter().product::<usize>()];
                (name, shape, data)
            })
            .collect();
        let views = tensors.iter().map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        });
        safetensors::tensor::serialize(views, &None).unwrap()
    }

    #[test]
    fn weights_that_do_not_fit_are_refused_locally() {
        let dir = tempfile::tempdir().unwrap();
        // Weights of a 3-class CNN do not fit a 2-class CNN.
        let three = camshaft_spec::ModelSpec {
            arch: camshaft_spec::Arch::Cnn,
            head: camshaft_spec::Head::Linear,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            input_size: 32,
            normalization: camshaft_spec::Normalization::None,
        };
        let path = dir.path().join("three.safetensors");
        std::fs::write(&path, fitting_safetensors(&three)).unwrap();
        let bytes = checked_safetensors(&three, &path).unwrap();
        assert!(!bytes.is_empty());
        let two = camshaft_spec::ModelSpec {
            class_names: vec!["a".into(), "b".into()],
            ..three
        };
        let err = checked_safetensors(&two, &path).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        assert!(
            err.contains("4.weight is [3, 25088], expected [2, 25088]"),
            "{err}"
        );
        // Anything else is read as a `torch.save` file, without libtorch.
        let pth = dir.path().join("three.pth");
        std::fs::write(&pth, b"not a zip").unwrap();
        let err = checked_safetensors(&two, &pth).unwrap_err().to_string();
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
                epoch: Some(3),
                selected_by: "best valid_loss".into(),
                ..Default::default()
            }),
            tags: [("team".to_string(), "vision".to_string())].into(),
            description: "pets, fine-tuned".into(),
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
        let summary = version_summary(&version);
        assert!(
            summary.contains("metrics:   accuracy=0.986000\n"),
            "{summary}"
        );
        assert!(summary.contains("tags:      team=vision\n"), "{summary}");
        assert!(
            summary.contains("about:     pets, fine-tuned\n"),
            "{summary}"
        );
        assert!(
            summary.contains("epoch:     3 (best valid_loss)\n"),
            "{summary}"
        );
    }

    #[test]
    fn registry_events_read_as_one_line() {
        use camshaft_proto::v1::{AliasChange, ModelEvent as Wire};
        let event = |e: ModelEvent| Wire {
            sequence: 7,
            unix_ms: 1_714_566_896_000,
            stream_id: "x".into(),
            event: Some(e),
        };
        let change = |from, to| {
            ModelEvent::AliasChanged(AliasChange {
                name: "pets".into(),
                alias: "prod".into(),
                from_version: from,
                to_version: to,
                changed_by: "alice".into(),
                ..Default::default()
            })
        };
        assert_eq!(
            event_line(&event(change(Some(1), Some(2)))),
            "2024-05-01 12:34:56Z #7 pets@prod -> 2 (was 1) by alice"
        );
        assert!(event_line(&event(change(None, Some(2)))).ends_with("pets@prod -> 2 by alice"));
        assert!(event_line(&event(change(Some(2), None))).ends_with("removed pets@prod by alice"));
    }
}
