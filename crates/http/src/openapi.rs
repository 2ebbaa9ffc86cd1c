//! The OpenAPI 3.1 document of a [`Gateway`], generated from its route
//! table and the descriptors of the messages the routes carry (proto3 JSON
//! as JSON Schema), with the protos' comments as descriptions.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::gateway::{Gateway, Handler, Route};
use crate::json;

/// The document.
pub fn document(gateway: &Gateway) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in gateway.routes() {
        let operation = operation(route, &mut schemas);
        paths
            .entry(route.path.to_string())
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    let mut components = Map::new();
    schemas.status();
    components.insert("schemas".into(), Value::Object(schemas.done));
    components.insert(
        "securitySchemes".into(),
        json!({"bearer": {"type": "http", "scheme": "bearer",
            "description": "A token of the server's tokens file (`token,name,role`); none when the server asks for none."}}),
    );
    let mut paths: Map<String, Value> = paths
        .into_iter()
        .map(|(path, ops)| (path, Value::Object(ops)))
        .collect();
    for (path, summary) in [
        ("/healthz", "Liveness: the process answers."),
        (
            "/readyz",
            "Readiness: 200 when the service's gRPC health is SERVING, else 503.",
        ),
    ] {
        paths.insert(
            path.into(),
            json!({"get": {"summary": summary, "operationId": path.trim_start_matches('/'),
                "security": [], "responses": {"200": {"description": "Serving",
                "content": {"application/json": {"schema": {"type": "object",
                "properties": {"status": {"type": "string"}}}}}},
                "503": {"description": "Not serving"}}}}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": gateway.title(),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated from the server's route table and the camshaft.v1 protos: \
                every route calls the gRPC method named in its operationId with the same \
                credentials, limits and errors. Bodies are proto3 JSON (lowerCamelCase names, \
                enums by name, 64-bit integers as strings, bytes as base64).",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components,
    })
}

fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let method = route.method_descriptor();
    let mut op = Map::new();
    op.insert("summary".into(), Value::String(route.summary.to_string()));
    // The gRPC method's name; hand-written routes share a method, so
    // theirs is spelled from the HTTP method and path.
    let operation_id = match route.handler {
        Handler::Custom(_) => format!(
            "{}{}",
            route.method.as_str().to_ascii_lowercase(),
            route.path
        )
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_"),
        _ => route
            .rpc
            .rsplit('/')
            .next()
            .unwrap_or(route.rpc)
            .to_string(),
    };
    op.insert("operationId".into(), Value::String(operation_id));
    if let Some(m) = &method
        && let Some(text) = comments(m.parent_file().file_descriptor_proto(), m.full_name())
    {
        op.insert("description".into(), Value::String(text));
    }
    let path_params = path_parameters(route.path);
    let mut parameters: Vec<Value> = path_params
        .iter()
        .map(|name| {
            let schema = method
                .as_ref()
                .and_then(|m| m.input().get_field_by_name(name))
                .map_or_else(|| json!({"type": "string"}), |f| schemas.field(&f));
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    let custom = matches!(route.handler, Handler::Custom(_));
    if let (Some(m), false) = (&method, custom) {
        let input = m.input();
        if !route.body {
            for field in input.fields() {
                if path_params.iter().any(|p| p == field.name())
                    || matches!(field.kind(), Kind::Message(_))
                {
                    continue;
                }
                parameters.push(json!({
                    "name": field.json_name(), "in": "query", "required": false,
                    "schema": schemas.field(&field),
                }));
            }
        } else {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json":
                    {"schema": schemas.message_ref(&input)}}}),
            );
        }
        if input.get_field_by_name("request_id").is_some() && route.body {
            parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
                "schema": {"type": "string", "maxLength": 128},
                "description": "Sets requestId: a retried call with the same key returns the first call's result."}));
        }
        if let Handler::Events { .. } = route.handler {
            parameters.push(
                json!({"name": "Last-Event-ID", "in": "header", "required": false,
                "schema": {"type": "string"}, "description": "Resume after this event id."}),
            );
        }
        let output = schemas.message_ref(&m.output());
        let response = match route.handler {
            Handler::Events { .. } => {
                json!({"description": "Server-Sent Events, each `data` one message",
                "content": {"text/event-stream": {"schema": {"type": "string"},
                "x-item-schema": output}}})
            }
            _ => json!({"description": "OK", "content": {"application/json": {"schema": output}}}),
        };
        op.insert("responses".into(), json!({"200": response}));
    }
    if let Some(Value::Object(extra)) = &route.openapi {
        for (key, value) in extra {
            op.insert(key.clone(), schemas.resolve(value));
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut responses = responses;
    responses.insert(
        "default".into(),
        json!({"description": "An error: google.rpc.Status",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}}),
    );
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The `{name}` parameters of a path template.
fn path_parameters(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// The leading comment of the element `full_name` (a message, field or
/// method) in `file`'s source info, if the descriptor set kept it.
fn comments(file: &prost_types::FileDescriptorProto, full_name: &str) -> Option<String> {
    let path = element_path(file, full_name)?;
    let location = file
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|l| l.path == path)?;
    let text = location.leading_comments().trim();
    (!text.is_empty()).then(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The source-info path of a top-level message (4, i), one of its fields
/// (4, i, 2, j) or a service's method (6, i, 2, j).
fn element_path(file: &prost_types::FileDescriptorProto, full_name: &str) -> Option<Vec<i32>> {
    let local = full_name.strip_prefix(&format!("{}.", file.package()))?;
    let mut parts = local.split('.');
    let (first, second) = (parts.next()?, parts.next());
    if let Some(i) = file.message_type.iter().position(|m| m.name() == first) {
        let i = i32::try_from(i).ok()?;
        return match second {
            None => Some(vec![4, i]),
            Some(field) => {
                let j = file.message_type[i as usize]
                    .field
                    .iter()
                    .position(|f| f.name() == field)?;
                Some(vec![4, i, 2, i32::try_from(j).ok()?])
            }
        };
    }
    let i = file.service.iter().position(|s| s.name() == first)?;
    let j = file.service[i]
        .method
        .iter()
        .position(|m| Some(m.name()) == second)?;
    Some(vec![6, i32::try_from(i).ok()?, 2, i32::try_from(j).ok()?])
}

/// The component schemas referenced so far.
#[derive(Default)]
struct Schemas {
    done: Map<String, Value>,
    pending: BTreeSet<String>,
}

impl Schemas {
    /// A `$ref` to `message`'s schema, adding it (and what it uses).
    fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_string();
        if !self.done.contains_key(&name) && self.pending.insert(name.clone()) {
            let schema = self.message(message);
            self.done.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// `value` with `{"$message": "camshaft.v1.X"}` objects turned into refs.
    fn resolve(&mut self, value: &Value) -> Value {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(name)) = object.get("$message")
                    && let Ok(message) = json::message(name)
                {
                    return self.message_ref(&message);
                }
                Value::Object(
                    object
                        .iter()
                        .map(|(k, v)| (k.clone(), self.resolve(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.resolve(v)).collect()),
            other => other.clone(),
        }
    }

    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let file = message.parent_file();
        let mut properties = Map::new();
        for field in message.fields() {
            let mut schema = self.field(&field);
            if let Some(text) = comments(file.file_descriptor_proto(), field.full_name())
                && let Value::Object(o) = &mut schema
            {
                if o.contains_key("$ref") {
                    schema = json!({"allOf": [schema], "description": text});
                } else {
                    o.insert("description".into(), Value::String(text));
                }
            }
            properties.insert(field.json_name().to_string(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if let Some(text) = comments(file.file_descriptor_proto(), message.full_name()) {
            schema["description"] = Value::String(text);
        }
        schema
    }

    fn field(&mut self, field: &prost_reflect::FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({"type": "object"});
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.kind(&value.kind())});
        }
        let item = self.kind(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": item})
        } else {
            item
        }
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": ["string", "integer"], "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": ["string", "integer"], "format": "uint64"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(m) => self.message_ref(m),
        }
    }

    /// google.rpc.Status as the error bodies print it.
    fn status(&mut self) {
        self.done.insert(
            "google.rpc.Status".into(),
            json!({"type": "object", "description": "An error (google.rpc.Status).",
                "properties": {
                    "code": {"type": "integer", "description": "The gRPC status code."},
                    "message": {"type": "string"},
                    "status": {"type": "string", "description": "The code's name, e.g. NOT_FOUND."},
                    "details": {"type": "array", "items": {"type": "object",
                        "properties": {"@type": {"type": "string"}},
                        "description": "google.rpc.BadRequest (fieldViolations) or google.rpc.RetryInfo (retryDelay)."}},
                }}),
        );
    }
}
