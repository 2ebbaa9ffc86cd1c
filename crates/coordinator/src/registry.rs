//! The model registry as the wire sees it: store versions ↔ `v1::ModelVersion`.
//!
//! A version's spec is stored as the JSON of [`camshaft_spec::VersionSpec`]
//! (`{"arch": "resnet18", "head": "cam", "class_names": [..], "input_size":
//! 224, "normalization": "imagenet", "resize": "crop"}`): the model workers
//! and the explainer rebuild, and how its images were resized; it is read
//! and written through that type only, and a stored spec that does not
//! parse is an error naming what failed. Its lineage is stored as the JSON
//! of `v1::Lineage`.

use std::collections::BTreeMap;

use camshaft_proto::v1::{self, ResizeMethod};
use camshaft_spec::{ModelSpec, SpecLimits, VersionSpec};
use camshaft_store::RegisteredModel;
use serde_json::json;

use crate::{Error, Result};

/// The wire form of a stored version, with the aliases that point at it;
/// a stored spec or lineage that does not read is an error naming the
/// version, never a default.
pub fn to_wire(
    version: &camshaft_store::ModelVersion,
    aliases: &BTreeMap<String, u64>,
) -> Result<v1::ModelVersion> {
    let stored = |what: &str, e: &dyn std::fmt::Display| {
        Error::Internal(format!(
            "the stored {what} of {} version {} does not read: {e}",
            version.name, version.version
        ))
    };
    let (tags, description) = annotations(&version.lineage);
    let mut lineage: v1::Lineage =
        serde_json::from_value(version.lineage.clone()).map_err(|e| stored("lineage", &e))?;
    lineage.weights_sha256.clone_from(&version.weights.sha256);
    lineage.weights_size_bytes = version.weights.size;
    let spec = VersionSpec::from_value(&version.spec).map_err(|e| stored("spec", &e))?;
    let spec = v1::ModelSpec::from(&spec);
    Ok(v1::ModelVersion {
        name: version.name.clone(),
        version: version.version,
        aliases: aliases
            .iter()
            .filter(|(_, v)| **v == version.version)
            .map(|(a, _)| a.clone())
            .collect(),
        spec: Some(spec),
        lineage: Some(lineage),
        tags,
        description,
    })
}

/// Most tags on one version.
pub const MAX_TAGS: usize = 32;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 64;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// Longest version description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// The keys of a stored lineage object that hold a version's editable
/// tags and description (beside `v1::Lineage`'s own fields, which the
/// store keeps opaque like the rest).
const TAGS: &str = "tags";
const DESCRIPTION: &str = "description";

/// The tags and description kept in a stored lineage (none for versions
/// stored before they existed).
pub fn annotations(
    lineage: &serde_json::Value,
) -> (std::collections::HashMap<String, String>, String) {
    let tags = lineage
        .get(TAGS)
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let description = lineage
        .get(DESCRIPTION)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string();
    (tags, description)
}

/// `lineage` (stored JSON) with these tags and description.
pub fn with_annotations(
    mut lineage: serde_json::Value,
    tags: &std::collections::HashMap<String, String>,
    description: &str,
) -> serde_json::Value {
    if let Some(object) = lineage.as_object_mut() {
        // Sorted, so a stored record reads the same every time.
        let sorted: BTreeMap<&String, &String> = tags.iter().collect();
        object.insert(TAGS.into(), json!(sorted));
        object.insert(DESCRIPTION.into(), description.into());
    }
    lineage
}

/// Checks tags (`field` names them in the error): at most [`MAX_TAGS`];
/// keys 1..=[`MAX_TAG_KEY_BYTES`] bytes of letters, digits and `_ - . / :`;
/// values up to [`MAX_TAG_VALUE_BYTES`] bytes without control characters.
pub fn check_tags(field: &str, tags: &std::collections::HashMap<String, String>) -> Result<()> {
    let bad = |reason: String| Error::InvalidField {
        field: field.to_string(),
        reason,
    };
    if tags.len() > MAX_TAGS {
        return Err(bad(format!(
            "{} tags; a version has at most {MAX_TAGS}",
            tags.len()
        )));
    }
    for (key, value) in tags {
        if key.is_empty() || key.len() > MAX_TAG_KEY_BYTES {
            return Err(bad(format!(
                "tag key {} must be 1..={MAX_TAG_KEY_BYTES} bytes",
                camshaft_proto::short(key)
            )));
        }
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:".contains(c))
        {
            return Err(bad(format!(
                "tag key {} may hold only letters, digits and _ - . / :",
                camshaft_proto::short(key)
            )));
        }
        if value.len() > MAX_TAG_VALUE_BYTES {
            return Err(bad(format!(
                "the value of tag {key} is {} bytes; at most {MAX_TAG_VALUE_BYTES}",
                value.len()
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(bad(format!(
                "the value of tag {key} holds a control character"
            )));
        }
    }
    Ok(())
}

/// Checks a description: at most [`MAX_DESCRIPTION_BYTES`] bytes, no
/// control characters but newlines and tabs.
pub fn check_description(field: &str, description: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidField {
        field: field.to_string(),
        reason,
    };
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(bad(format!(
            "the description is {} bytes; at most {MAX_DESCRIPTION_BYTES}",
            description.len()
        )));
    }
    if description
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(bad("the description holds a control character".into()));
    }
    Ok(())
}

/// `tags` after an UpdateModelVersion: `remove` taken out, then `set`
/// added or overwritten; checked as a whole.
pub fn updated_tags(
    mut tags: std::collections::HashMap<String, String>,
    remove: &[String],
    set: &std::collections::HashMap<String, String>,
) -> Result<std::collections::HashMap<String, String>> {
    check_tags("set_tags", set)?;
    for key in remove {
        tags.remove(key);
    }
    tags.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    if tags.len() > MAX_TAGS {
        return Err(Error::InvalidField {
            field: "set_tags".into(),
            reason: format!(
                "the version would have {} tags; at most {MAX_TAGS}",
                tags.len()
            ),
        });
    }
    Ok(tags)
}

/// The aliases of `name` in a registry listing (empty for an unknown name).
pub fn aliases_of(models: &[RegisteredModel], name: &str) -> BTreeMap<String, u64> {
    models
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.aliases.clone())
        .unwrap_or_default()
}

/// The stored form of a wire `ModelSpec`, after checking it.
pub fn spec_from_wire(spec: &v1::ModelSpec) -> Result<serde_json::Value> {
    Ok(spec.to_version_spec()?.to_value())
}

/// `model_spec` (a checkpoint's, the model alone) with the resize of the
/// job that trained it, as a version's spec is stored. A spec that does
/// not parse is returned as it is, for [`check_registrable`] to refuse
/// with the reason.
pub fn with_resize(model_spec: serde_json::Value, resize: ResizeMethod) -> serde_json::Value {
    match ModelSpec::from_value(&model_spec) {
        Ok(model) => VersionSpec {
            model,
            resize: resize.vocab().unwrap_or_default(),
        }
        .to_value(),
        Err(_) => model_spec,
    }
}

/// Checks a version before anything of it is stored ("registered means
/// loadable"): the stored `spec` (vision's JSON) within `limits`, and
/// `weights` (safetensors; only the header is read) holding exactly the
/// tensors its architecture and head expect, with their shapes: see
/// [`camshaft_spec`]. Every refusal is INVALID_ARGUMENT with a short
/// message naming the first few problems.
pub fn check_registrable(
    spec: &serde_json::Value,
    weights: &[u8],
    limits: &SpecLimits,
) -> Result<()> {
    camshaft_spec::check_spec(spec, limits)
        .and_then(|shape| shape.check_weights(weights))
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// The weights of an import as the registry stores them: a safetensors
/// file as it came, or a `torch.save` state dict (`WeightsFormat::Pth`)
/// read by `camshaft-pth` (no pickle code runs; its read limits apply) and
/// re-saved as float32 safetensors. As `ctl models import` does, DDP's
/// `module.` prefixes are dropped and so are BatchNorm's
/// `num_batches_tracked` counters; [`check_registrable`] then checks the
/// names and shapes.
pub fn stored_weights(format: v1::WeightsFormat, upload: bytes::Bytes) -> Result<bytes::Bytes> {
    if format != v1::WeightsFormat::Pth {
        return Ok(upload);
    }
    let bad = |reason: String| Error::InvalidField {
        field: "format".into(),
        reason,
    };
    let tensors = camshaft_pth::read_state_dict_bytes(&upload, "the uploaded state dict")
        .map_err(|e| bad(e.to_string()))?;
    camshaft_spec::state_dict_safetensors(tensors)
        .map(bytes::Bytes::from)
        .map_err(|e| bad(e.to_string()))
}

/// Checks a stored `spec` against `limits` alone (class names, input side):
/// the part of [`check_registrable`] that needs no weights, so an import
/// can be refused before its upload is received.
pub fn check_spec(spec: &serde_json::Value, limits: &SpecLimits) -> Result<()> {
    camshaft_spec::check_spec(spec, limits)
        .map(drop)
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Checks the aliases one registration sets (an import's, or a job's for
/// its trained version): at most `limits.max_aliases`, each a valid alias.
pub fn check_aliases(aliases: &[String], limits: &SpecLimits) -> Result<()> {
    if aliases.len() > limits.max_aliases {
        return Err(Error::InvalidArgument(format!(
            "{} aliases; at most {} may be set at once",
            aliases.len(),
            limits.max_aliases
        )));
    }
    for alias in aliases {
        camshaft_proto::validate_alias(alias)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use camshaft_proto::v1::{Arch, Head, Normalization};

    use super::*;

    /// A stored spec as the wire's, through the conversion `to_wire` uses.
    fn spec_to_wire(spec: &serde_json::Value) -> camshaft_spec::Result<v1::ModelSpec> {
        Ok(v1::ModelSpec::from(&VersionSpec::from_value(spec)?))
    }

    #[test]
    fn safetensors_pass_and_garbage_pth_is_refused() {
        let bytes = bytes::Bytes::from_static(b"not checked here");
        assert_eq!(
            stored_weights(v1::WeightsFormat::Safetensors, bytes.clone()).unwrap(),
            bytes
        );
        let err = stored_weights(v1::WeightsFormat::Pth, bytes).unwrap_err();
        assert!(matches!(err, Error::InvalidField { .. }), "{err:?}");
    }

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
        assert_eq!(spec_to_wire(&stored).unwrap(), wire);
        for resize in [ResizeMethod::Squish, ResizeMethod::Pad] {
            let other = v1::ModelSpec {
                resize: resize as i32,
                ..wire.clone()
            };
            let stored = spec_from_wire(&other).unwrap();
            assert_eq!(stored["resize"], resize.short_name());
            assert_eq!(spec_to_wire(&stored).unwrap(), other);
        }
        // A version stored before the resize was recorded was cropped.
        let mut old = stored;
        old.as_object_mut().unwrap().remove("resize");
        assert_eq!(spec_to_wire(&old).unwrap().resize(), ResizeMethod::Crop);
        // A trained model's spec gets its job's resize.
        let trained = with_resize(old, ResizeMethod::Squish);
        assert_eq!(
            spec_to_wire(&trained).unwrap().resize(),
            ResizeMethod::Squish
        );
        // A stored spec that does not parse is an error naming what failed.
        let mut broken = trained;
        broken["head"] = json!("gap");
        let err = spec_to_wire(&broken).unwrap_err().to_string();
        assert!(err.contains("head \"gap\" is not one of"), "{err}");
    }

    /// A safetensors file of zeros with these tensors (F32).
    fn safetensors(tensors: &[(String, Vec<i64>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut offset = 0;
        for (name, shape) in tensors {
            let size = 4 * shape.iter().product::<i64>();
            header.insert(
                name.clone(),
                json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}),
            );
            offset += size;
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.resize(file.len() + offset as usize, 0);
        file
    }

    #[test]
    fn only_weights_that_fit_their_spec_are_registrable() {
        // The lecture's CNN at 6×6 pixels: a 1×1 feature map, small weights.
        let spec = json!({"arch": "cnn", "head": "linear", "class_names": ["a", "b"],
                          "input_size": 6, "normalization": "none"});
        let limits = SpecLimits::default();
        let shape = camshaft_spec::ModelShape::from_spec(&spec).unwrap();
        let mut tensors = shape.expected_parameters();
        check_registrable(&spec, &safetensors(&tensors), &limits).unwrap();

        tensors.last_mut().unwrap().1 = vec![10];
        let err = check_registrable(&spec, &safetensors(&tensors), &limits).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "weights do not fit cnn with the linear head for 2 classes at 6×6 pixels: \
             4.bias is [10], expected [2]"
        );
        let err = check_registrable(&spec, b"PK\x03\x04", &limits).unwrap_err();
        assert!(err.to_string().contains("not a safetensors file"), "{err}");

        let many = json!({"arch": "cnn", "head": "linear", "class_names": vec!["x"; 20_000],
                          "input_size": 6, "normalization": "none"});
        let err = check_registrable(&many, &safetensors(&tensors), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad model spec: 20000 classes; at most 1000 are allowed"
        );
        assert_eq!(err.kind(), camshaft_proto::ErrorKind::InvalidArgument);
        assert_eq!(
            check_spec(&many, &limits).unwrap_err().to_string(),
            err.to_string()
        );
        check_spec(&spec, &limits).unwrap();
    }

    #[test]
    fn tags_and_descriptions_are_bounded_and_stored_beside_the_lineage() {
        use std::collections::HashMap;
        let tags: HashMap<String, String> = [
            ("team".into(), "vision".into()),
            ("data/set".into(), "pets-2026".into()),
        ]
        .into();
        check_tags("tags", &tags).unwrap();
        let lineage = json!({"job_id": "j-1", "metrics": {"accuracy": 0.9}});
        let stored = with_annotations(lineage, &tags, "the pets model\nsecond line");
        assert_eq!(
            annotations(&stored),
            (tags.clone(), "the pets model\nsecond line".into())
        );
        // The lineage itself still reads.
        let wire: v1::Lineage = serde_json::from_value(stored).unwrap();
        assert_eq!(wire.job_id, "j-1");
        assert_eq!(annotations(&json!({})), (HashMap::new(), String::new()));

        let many: HashMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        let err = check_tags("tags", &many).unwrap_err();
        assert_eq!(err.to_string(), "33 tags; a version has at most 32");
        let err = check_tags("tags", &[("bad key".into(), "v".into())].into()).unwrap_err();
        assert!(err.to_string().contains("only letters"), "{err}");
        let err = check_tags("tags", &[(String::new(), "v".into())].into()).unwrap_err();
        assert!(err.to_string().contains("1..=64 bytes"), "{err}");
        let err = check_tags("tags", &[("k".into(), "x".repeat(257))].into()).unwrap_err();
        assert!(err.to_string().contains("257 bytes"), "{err}");
        let err = check_tags("tags", &[("k".into(), "a\u{7}".into())].into()).unwrap_err();
        assert!(err.to_string().contains("control"), "{err}");
        check_description("description", &"d".repeat(4096)).unwrap();
        assert!(check_description("description", &"d".repeat(4097)).is_err());
        assert!(check_description("description", "bell\u{7}").is_err());

        let after = updated_tags(
            tags,
            &["team".into(), "absent".into()],
            &[("stage".into(), "prod".into())].into(),
        )
        .unwrap();
        assert_eq!(
            after,
            [
                ("data/set".into(), "pets-2026".into()),
                ("stage".into(), "prod".into())
            ]
            .into()
        );
        let full: HashMap<String, String> =
            (0..32).map(|i| (format!("k{i}"), "v".into())).collect();
        let err = updated_tags(full, &[], &[("one-more".into(), "v".into())].into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the version would have 33 tags; at most 32"
        );
    }

    #[test]
    fn aliases_are_counted_and_checked() {
        let limits = SpecLimits::default();
        check_aliases(&["prod".into(), "v1-candidate".into()], &limits).unwrap();
        let many: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
        assert_eq!(
            check_aliases(&many, &limits).unwrap_err().to_string(),
            "17 aliases; at most 16 may be set at once"
        );
        assert!(check_aliases(&["12".into()], &limits).is_err());
    }
}
