//! proto3 JSON of any `camshaft.v1` message, both ways, through the
//! descriptor set compiled into `camshaft-proto` (prost-reflect's dynamic
//! messages): the generated structs keep their own serde (the store's
//! format) and need no second one.

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::Status;

/// The descriptors of every message and service in `camshaft.v1`.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is compiled into camshaft-proto by its build script from
        // the same protos as the generated code: it always decodes.
        DescriptorPool::decode(camshaft_proto::FILE_DESCRIPTOR_SET).unwrap_or_default()
    })
}

/// The descriptor of message `name` (e.g. `camshaft.v1.Job`).
pub fn message(name: &str) -> Result<MessageDescriptor, Status> {
    pool()
        .get_message_by_name(name)
        .ok_or_else(|| Status::internal(format!("no message {name} in the descriptor set")))
}

/// How answers are printed: proto3 JSON (lowerCamelCase names, enums by
/// name, 64-bit integers as strings, bytes as base64), with fields at their
/// default values included, as grpc-gateway's `EmitUnpopulated`: a browser
/// or a `jq` filter should not have to know proto3's defaults.
fn print_options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

/// The proto3 JSON of the encoded message `bytes` of type `descriptor`.
pub fn to_json(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<serde_json::Value, Status> {
    let message = DynamicMessage::decode(descriptor.clone(), bytes)
        .map_err(|e| Status::internal(format!("answer does not decode: {e}")))?;
    message
        .serialize_with_options(serde_json::value::Serializer, &print_options())
        .map_err(|e| Status::internal(format!("answer does not print as JSON: {e}")))
}

/// The proto3 JSON of a generated message whose full name is `name`.
pub fn typed_to_json<M: Message>(name: &str, value: &M) -> Result<serde_json::Value, Status> {
    to_json(&message(name)?, &value.encode_to_vec())
}

/// The message of type `descriptor` that the proto3 JSON `value` spells,
/// encoded; INVALID_ARGUMENT (naming the field) when it does not parse:
/// unknown fields, wrong types, enum names that do not exist.
///
/// Enum values may also be given by the short names `ctl` uses, in any
/// case (`resnet18`, `gradcam++`, `running` for `JOB_STATE_RUNNING`).
pub fn from_json(
    descriptor: &MessageDescriptor,
    mut value: serde_json::Value,
) -> Result<Bytes, Status> {
    expand_enum_names(descriptor, &mut value);
    let message = DynamicMessage::deserialize(descriptor.clone(), value).map_err(|e| {
        Status::invalid_argument(format!(
            "the body is not a valid {}: {e}",
            descriptor.name()
        ))
    })?;
    Ok(message.encode_to_vec().into())
}

/// The full name of the value of `enumeration` that `short` names: the
/// full name itself, or its part after the enum's prefix compared without
/// case, `_` and `-` (`gradcam`, `grad-cam` and `GRAD_CAM` all name
/// `EXPLAIN_METHOD_GRAD_CAM`; `++` reads as `_PLUS_PLUS`).
pub fn enum_value_name(enumeration: &prost_reflect::EnumDescriptor, short: &str) -> Option<String> {
    let squash = |s: &str| -> String {
        s.to_ascii_uppercase()
            .replace("++", "PLUSPLUS")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect()
    };
    let wanted = squash(short);
    let prefix = squash(enumeration.name());
    enumeration
        .values()
        .find(|v| {
            v.name() == short || {
                let full = squash(v.name());
                full == wanted || full.strip_prefix(&prefix) == Some(wanted.as_str())
            }
        })
        .map(|v| v.name().to_string())
}

/// Replaces short enum names in `value` (an object of `descriptor`'s
/// fields, at any depth) by their full names; leaves everything else to
/// the parser.
fn expand_enum_names(descriptor: &MessageDescriptor, value: &mut serde_json::Value) {
    use prost_reflect::Kind;
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for (key, item) in object.iter_mut() {
        let Some(field) = descriptor
            .get_field_by_json_name(key)
            .or_else(|| descriptor.get_field_by_name(key))
        else {
            continue;
        };
        let items: Vec<&mut serde_json::Value> = match item {
            serde_json::Value::Array(list) if field.is_list() => list.iter_mut().collect(),
            other => vec![other],
        };
        for item in items {
            match field.kind() {
                Kind::Enum(e) => {
                    if let Some(full) = item.as_str().and_then(|s| enum_value_name(&e, s)) {
                        *item = serde_json::Value::String(full);
                    }
                }
                Kind::Message(m) if !field.is_map() => expand_enum_names(&m, item),
                _ => {}
            }
        }
    }
}

/// [`from_json`] decoded into the generated type `M`.
pub fn typed_from_json<M: Message + Default>(
    name: &str,
    value: serde_json::Value,
) -> Result<M, Status> {
    let bytes = from_json(&message(name)?, value)?;
    M::decode(bytes).map_err(|e| Status::internal(format!("{name} does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_proto::v1;
    use serde_json::json;

    #[test]
    fn a_spec_round_trips_through_proto3_json() {
        let spec = v1::JobSpec {
            name: "j".into(),
            epochs: 3,
            lr: Some(0.01),
            seed: Some(u64::MAX),
            arch: v1::Arch::Resnet18 as i32,
            ..Default::default()
        };
        let value = typed_to_json("camshaft.v1.JobSpec", &spec).unwrap();
        // Enums by name, 64-bit integers as strings, lowerCamelCase.
        assert_eq!(value["arch"], json!("ARCH_RESNET18"));
        assert_eq!(value["seed"], json!(u64::MAX.to_string()));
        assert_eq!(value["epochs"], json!(3));
        assert!(value.get("batchSize").is_some(), "defaults are printed");
        let back: v1::JobSpec = typed_from_json("camshaft.v1.JobSpec", value).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn bad_json_is_invalid_argument_naming_the_field() {
        let err = typed_from_json::<v1::JobSpec>("camshaft.v1.JobSpec", json!({"epochz": 1}))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("epochz"), "{}", err.message());
        let err =
            typed_from_json::<v1::JobSpec>("camshaft.v1.JobSpec", json!({"arch": "ARCH_NOPE"}))
                .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // Short enum names, at any depth.
        let spec: v1::JobSpec = typed_from_json(
            "camshaft.v1.JobSpec",
            json!({"arch": "resnet18", "dataset": {"kind": "synthetic"}}),
        )
        .unwrap();
        assert_eq!(spec.arch, v1::Arch::Resnet18 as i32);
        assert_eq!(
            spec.dataset.unwrap().kind,
            v1::DatasetKind::Synthetic as i32
        );
        let request: v1::ExplainRequest = typed_from_json(
            "camshaft.v1.ExplainRequest",
            json!({"method": "gradcam++", "colormap": "Viridis"}),
        )
        .unwrap();
        assert_eq!(request.method, v1::ExplainMethod::GradCamPlusPlus as i32);
        assert_eq!(request.colormap, v1::Colormap::Viridis as i32);
        // Both the proto name and the JSON name of a field are accepted.
        let spec: v1::JobSpec = typed_from_json(
            "camshaft.v1.JobSpec",
            json!({"batch_size": 8, "maxFailures": 4}),
        )
        .unwrap();
        assert_eq!((spec.batch_size, spec.max_failures), (8, Some(4)));
    }
}
