//! The model registry as the wire sees it: store versions ↔ `v1::ModelVersion`.
//!
//! A version's spec is stored as the JSON of `camshaft_vision::ModelSpec`
//! (`{"arch": "resnet18", "head": "cam", "class_names": [..], "input_size":
//! 224, "normalization": "imagenet"}`), which is what workers and the
//! explainer rebuild models from; the names are the protos' short names. Its
//! lineage is stored as the JSON of `v1::Lineage`.

use std::collections::BTreeMap;

use camshaft_proto::v1::{self, Arch, Head, Normalization, ResizeMethod};
use camshaft_store::RegisteredModel;
use serde_json::json;

use crate::{Error, Result};

/// The wire form of a stored version, with the aliases that point at it.
pub fn to_wire(
    version: &camshaft_store::ModelVersion,
    aliases: &BTreeMap<String, u64>,
) -> v1::ModelVersion {
    let mut lineage: v1::Lineage =
        serde_json::from_value(version.lineage.clone()).unwrap_or_default();
    lineage.weights_sha256.clone_from(&version.weights.sha256);
    lineage.weights_size_bytes = version.weights.size;
    v1::ModelVersion {
        name: version.name.clone(),
        version: version.version,
        aliases: aliases
            .iter()
            .filter(|(_, v)| **v == version.version)
            .map(|(a, _)| a.clone())
            .collect(),
        spec: Some(spec_to_wire(&version.spec)),
        lineage: Some(lineage),
    }
}

/// The aliases of `name` in a registry listing (empty for an unknown name).
pub fn aliases_of(models: &[RegisteredModel], name: &str) -> BTreeMap<String, u64> {
    models
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.aliases.clone())
        .unwrap_or_default()
}

/// A stored spec (vision's JSON) as the wire's `ModelSpec`; unknown names
/// read as UNSPECIFIED rather than failing a listing.
pub fn spec_to_wire(spec: &serde_json::Value) -> v1::ModelSpec {
    let text = |key: &str| spec.get(key).and_then(|v| v.as_str()).unwrap_or("");
    v1::ModelSpec {
        arch: Arch::from_short_name(text("arch")).unwrap_or(Arch::Unspecified) as i32,
        head: Head::from_short_name(text("head")).unwrap_or(Head::Unspecified) as i32,
        class_names: spec
            .get("class_names")
            .and_then(|v| v.as_array())
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        input_size: spec
            .get("input_size")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        normalization: Normalization::from_short_name(text("normalization"))
            .unwrap_or(Normalization::None) as i32,
        // The explainer resizes as validation does, which is always a crop.
        resize: ResizeMethod::Crop as i32,
    }
}

/// The stored form of a wire `ModelSpec`, after checking it.
pub fn spec_from_wire(spec: &v1::ModelSpec) -> Result<serde_json::Value> {
    spec.validate()?;
    if spec.resize() != ResizeMethod::Crop && spec.resize() != ResizeMethod::Unspecified {
        return Err(Error::InvalidArgument(format!(
            "resize {} is not supported: the explainer resizes by centre crop",
            spec.resize().short_name()
        )));
    }
    let normalization = match spec.normalization() {
        Normalization::Unspecified => Normalization::None,
        n => n,
    };
    Ok(json!({
        "arch": spec.arch().short_name(),
        "head": spec.head().short_name(),
        "class_names": spec.class_names,
        "input_size": spec.input_size,
        "normalization": normalization.short_name(),
    }))
}

/// Checks that `bytes` is a safetensors file (its header parses as the
/// tensor table) and returns its tensor names.
pub fn safetensors_names(bytes: &[u8]) -> Result<Vec<String>> {
    let bad =
        |why: &str| Error::InvalidArgument(format!("weights are not a safetensors file: {why}"));
    let len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("shorter than its 8-byte header length"))?;
    let header = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get(8..8usize.checked_add(len)?))
        .ok_or_else(|| bad("the header is longer than the file"))?;
    let table: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&format!("bad header: {e}")))?;
    Ok(table
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, _)| name)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn specs_round_trip_between_wire_and_store() {
        let wire = v1::ModelSpec {
            arch: Arch::Resnet34 as i32,
            head: Head::Cam as i32,
            class_names: vec!["cat".into(), "dog".into()],
            input_size: 224,
            normalization: Normalization::Imagenet as i32,
            resize: ResizeMethod::Crop as i32,
        };
        let stored = spec_from_wire(&wire).unwrap();
        assert_eq!(stored["arch"], "resnet34");
        assert_eq!(stored["normalization"], "imagenet");
        assert_eq!(spec_to_wire(&stored), wire);
        let squish = v1::ModelSpec {
            resize: ResizeMethod::Squish as i32,
            ..wire
        };
        assert!(spec_from_wire(&squish).is_err());
    }

    #[test]
    fn safetensors_headers_are_checked() {
        let header = br#"{"fc.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(&[0; 4]);
        assert_eq!(safetensors_names(&file).unwrap(), vec!["fc.weight"]);
        assert!(safetensors_names(b"PK\x03\x04 a zip").is_err());
        assert!(safetensors_names(&file[..20]).is_err());
    }
}
