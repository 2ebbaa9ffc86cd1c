//! The explainer's HTTP routes (served beside gRPC on its port by
//! `camshaft-http`): KServe's V1 data plane, so KServe and TorchServe
//! clients work unchanged, plus `POST /v1/explain` (an ExplainRequest in
//! proto3 JSON) and `GET /v1/status`.
//!
//! KServe V1: `GET /v1/models/{model}` loads the version the reference
//! names and answers `{"name", "ready", "modelVersion", "spec"}`;
//! `POST /v1/models/{model}:predict` and `:explain` take
//! `{"instances": [...], "parameters": {...}}`, where an instance is an
//! image as base64 (`{"b64": "..."}`, `{"image_bytes": {"b64": "..."}}`,
//! `{"data": "..."}` or the bare string, with an optional `id`/`key` and
//! `target_class`), and the parameters are ExplainRequest's options by
//! their proto or JSON names. `:explain` answers the ExplainResponse;
//! `:predict` answers `{"predictions": [...], "modelVersion"}` with each
//! image's classes, probabilities, logits and error, without maps.

use std::sync::Arc;

use camshaft_http::gateway::{BoxFuture, json_response, read_json_object};
use camshaft_http::{Call, Handler, Response, Route, json};
use http::Method;
use serde_json::{Map, Value, json};
use tonic::Status;

use crate::explain::ExplainEngine;

const EXPLAIN: &str = "/camshaft.v1.Explainer/Explain";

/// The route table.
pub fn routes(engine: Arc<ExplainEngine>) -> Vec<Route> {
    let custom = |method: Method,
                  path: &'static str,
                  summary: &'static str,
                  handler: Handler,
                  openapi: Value| Route {
        method,
        path,
        rpc: EXPLAIN,
        body: true,
        summary,
        handler,
        openapi: Some(openapi),
    };
    let kserve_body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": ["instances"],
        "properties": {
            "instances": {"type": "array", "items": {"oneOf": [
                {"type": "string", "contentEncoding": "base64"},
                {"type": "object", "properties": {
                    "b64": {"type": "string", "contentEncoding": "base64"},
                    "id": {"type": "string"},
                    "target_class": {"type": "integer"}}}]}},
            "parameters": {"description": "ExplainRequest's options (method, top_k, return_overlay, colormap, alpha, faithfulness, faithfulness_baseline, target_layers, aug_smooth, ...).",
                "type": "object"}}}}}});
    let metadata = Arc::clone(&engine);
    vec![
        custom(
            Method::GET,
            "/v1/models/{model}",
            "KServe V1 model metadata: loads the version the reference names; ready and its spec.",
            Handler::Custom(Arc::new(move |call| -> BoxFuture<_> {
                let engine = Arc::clone(&metadata);
                Box::pin(async move { model_metadata(&engine, call.param("model")).await })
            })),
            json!({"responses": {"200": {"description": "The model is loaded",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "name": {"type": "string"}, "ready": {"type": "boolean"},
                    "modelVersion": {"type": "string"},
                    "spec": {"type": "object"}}}}}}}}),
        ),
        custom(
            Method::POST,
            "/v1/models/{model}:predict",
            "KServe V1 predict: classes and probabilities of base64 images.",
            Handler::Custom(Arc::new(|call| -> BoxFuture<_> {
                Box::pin(kserve(call, false))
            })),
            json!({"requestBody": kserve_body.clone(), "responses": {"200": {"description": "Predictions",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "modelVersion": {"type": "string"},
                    "predictions": {"type": "array", "items": {"$message": "camshaft.v1.ImageExplanation"}}}}}}}}}),
        ),
        custom(
            Method::POST,
            "/v1/models/{model}:explain",
            "KServe V1 explain: class activation maps (and overlays) of base64 images.",
            Handler::Custom(Arc::new(|call| -> BoxFuture<_> {
                Box::pin(kserve(call, true))
            })),
            json!({"requestBody": kserve_body, "responses": {"200": {"description": "Explanations",
                "content": {"application/json": {"schema": {"$message": "camshaft.v1.ExplainResponse"}}}}}}),
        ),
        Route::unary(
            Method::POST,
            "/v1/explain",
            EXPLAIN,
            "Explain a batch of images (an ExplainRequest in proto3 JSON).",
        ),
        Route::unary(
            Method::GET,
            "/v1/status",
            "/camshaft.v1.ServerInfo/GetServerInfo",
            "The explainer's version, device, loaded models and queue.",
        ),
    ]
}

async fn model_metadata(engine: &ExplainEngine, model: &str) -> Result<Response, Status> {
    let version = engine.resolve(model).await?;
    let loaded = engine.cache().get(&version).await?;
    Ok(json_response(&json!({
        "name": model,
        "ready": true,
        "modelVersion": loaded.key,
        "versions": [version.version.to_string()],
        "spec": version.spec,
        "resize": format!("{:?}", loaded.resize).to_ascii_lowercase(),
    })))
}

/// `:predict` (`explain` false) and `:explain`.
async fn kserve(call: Call, explain: bool) -> Result<Response, Status> {
    let model = call.param("model").to_string();
    let Call {
        principal,
        request,
        grpc,
        max_body_bytes,
        ..
    } = call;
    let body = read_json_object(request.into_body(), max_body_bytes).await?;
    let mut request = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(Status::invalid_argument("parameters must be an object")),
    };
    for reserved in ["model", "images"] {
        if request.contains_key(reserved) {
            return Err(camshaft_proto::invalid_field(
                &format!("parameters.{reserved}"),
                format!("{reserved} is set by the path and the instances, not a parameter"),
            ));
        }
    }
    let instances = body
        .get("instances")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            camshaft_proto::invalid_field("instances", "instances must be an array of images")
        })?;
    let images: Vec<Value> = instances
        .iter()
        .enumerate()
        .map(|(i, instance)| image_of(i, instance))
        .collect::<Result<_, _>>()?;
    request.insert("model".into(), Value::String(model));
    request.insert("images".into(), Value::Array(images));
    let explain_request = json::message("camshaft.v1.ExplainRequest")?;
    let message = json::from_json(&explain_request, Value::Object(request))?;
    let answer = grpc.unary(EXPLAIN, Some(principal), message).await?;
    let mut answer = json::to_json(&json::message("camshaft.v1.ExplainResponse")?, &answer)?;
    if explain {
        return Ok(json_response(&answer));
    }
    let mut predictions = answer["results"].take();
    if let Some(items) = predictions.as_array_mut() {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for heavy in ["maps", "upsampledMaps", "overlayPng"] {
                item.remove(heavy);
            }
        }
    }
    Ok(json_response(&json!({
        "modelVersion": answer["modelVersion"],
        "predictions": predictions,
    })))
}

/// One KServe instance as an ImageInput in proto3 JSON.
fn image_of(index: usize, instance: &Value) -> Result<Value, Status> {
    let field = format!("instances[{index}]");
    let bad = || {
        camshaft_proto::invalid_field(
            &field,
            "an instance is base64 image bytes: a string, {\"b64\": ...}, {\"image_bytes\": {\"b64\": ...}} or {\"data\": ...}",
        )
    };
    let (data, object) = match instance {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => {
            let data = o
                .get("b64")
                .or_else(|| o.get("image_bytes").and_then(|b| b.get("b64")))
                .or_else(|| o.get("data"))
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            (data.to_string(), Some(o))
        }
        _ => return Err(bad()),
    };
    let mut image = Map::new();
    image.insert("data".into(), Value::String(data));
    let id = object
        .and_then(|o| o.get("id").or_else(|| o.get("key")))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .unwrap_or_else(|| index.to_string());
    image.insert("id".into(), Value::String(id));
    if let Some(target) =
        object.and_then(|o| o.get("target_class").or_else(|| o.get("targetClass")))
    {
        image.insert("targetClass".into(), target.clone());
    }
    Ok(Value::Object(image))
}
