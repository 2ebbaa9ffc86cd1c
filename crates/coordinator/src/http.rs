//! The coordinator's REST routes (served beside gRPC on its port by
//! `camshaft-http`): jobs, their events as Server-Sent Events, workers,
//! models, aliases, uploads and status. Each route calls one gRPC method.

use std::sync::Arc;

use bytes::Bytes;
use camshaft_http::gateway::{BoxFuture, json_response, multipart, read_json_object};
use camshaft_http::{Call, GrpcClient, Handler, Route, json};
use camshaft_proto::v1;
use http::Method;
use prost::Message;
use serde_json::json;
use tonic::Status;

use crate::service::MAX_IMPORT_BYTES;

/// The path of Coordinator method `$m`.
macro_rules! rpc {
    ($m:ident) => {
        concat!("/camshaft.v1.Coordinator/", stringify!($m))
    };
}

const IMPORT: &str = rpc!(ImportModel);

/// The client of the explainer that `address` names (empty: none), for
/// the routes that forward to it.
pub fn explainer_client(
    address: &str,
    tls: &camshaft_proto::security::TlsConfig,
) -> crate::Result<Option<GrpcClient>> {
    if address.is_empty() {
        return Ok(None);
    }
    let security = camshaft_proto::security::ClientSecurity::with_token(tls, None)
        .map_err(|e| crate::Error::Config(format!("explainer_tls: {e}")))?;
    let endpoint = security
        .endpoint(address)
        .map_err(|e| crate::Error::Config(format!("explainer_address: {e}")))?;
    Ok(Some(GrpcClient::remote(
        &security.uri(address),
        endpoint.connect_lazy(),
    )))
}

/// A route that forwards the gRPC method `rpc` of the explainer, with the
/// caller's credential (the explainer checks it again).
fn forwarded(
    method: Method,
    path: &'static str,
    rpc: &'static str,
    summary: &'static str,
    explainer: Option<GrpcClient>,
) -> Route {
    let route = Route::unary(method, path, rpc, summary);
    let descriptor = route.method_descriptor();
    let handler = move |call: Call| -> BoxFuture<Result<camshaft_http::Response, Status>> {
        let (explainer, descriptor) = (explainer.clone(), descriptor.clone());
        Box::pin(async move {
            let explainer = explainer.ok_or_else(|| {
                Status::unavailable(
                    "this coordinator forwards to no explainer (set coordinator.explainer_address)",
                )
            })?;
            let descriptor =
                descriptor.ok_or_else(|| Status::internal(format!("no method {rpc}")))?;
            let authorization = call
                .request
                .headers()
                .get(http::header::AUTHORIZATION)
                .cloned();
            let body = read_json_object(call.request.into_body(), call.max_body_bytes).await?;
            let message = json::from_json(&descriptor.input(), serde_json::Value::Object(body))?;
            let answer = explainer
                .unary_with(rpc, None, authorization.as_ref(), message)
                .await?;
            Ok(json_response(&json::to_json(
                &descriptor.output(),
                &answer,
            )?))
        })
    };
    Route {
        handler: Handler::Custom(Arc::new(handler)),
        openapi: Some(json!({
            "responses": {"200": {"description": "The explainer's answer",
                "content": {"application/json": {"schema": {"$message": if rpc.ends_with("/Explain") {
                    "camshaft.v1.ExplainResponse" } else { "camshaft.v1.GetServerInfoResponse" }}}}}},
        })),
        ..route
    }
}

/// The route table; `explainer` serves the forwarded explain routes.
pub fn routes(explainer: Option<GrpcClient>) -> Vec<Route> {
    vec![
        Route::unary(
            Method::GET,
            "/v1/jobs",
            rpc!(ListJobs),
            "Jobs, newest first, filtered by `states`; paginated.",
        ),
        Route::unary(
            Method::POST,
            "/v1/jobs",
            rpc!(SubmitJob),
            "Submit a job (an `Idempotency-Key` header makes retries safe).",
        ),
        Route::unary(
            Method::GET,
            "/v1/jobs/{job_id}",
            rpc!(GetJob),
            "One job with its attempts, failures and epoch history.",
        ),
        Route::unary(
            Method::POST,
            "/v1/jobs/{job_id}:cancel",
            rpc!(CancelJob),
            "Cancel a pending or running job.",
        ),
        Route {
            handler: Handler::Events {
                resume: "after_sequence",
                id: "sequence",
            },
            ..Route::unary(
                Method::GET,
                "/v1/jobs/{job_id}/events",
                rpc!(WatchJob),
                "A job's events as Server-Sent Events (resume with Last-Event-ID).",
            )
        },
        Route::unary(
            Method::GET,
            "/v1/workers",
            rpc!(ListWorkers),
            "Workers, their devices and leases.",
        ),
        Route::unary(
            Method::GET,
            "/v1/models",
            rpc!(ListModels),
            "Registered model versions; paginated.",
        ),
        Route::unary(
            Method::GET,
            "/v1/models/{model}",
            rpc!(GetModel),
            "One version by reference: `name`, `name@alias` or `name:version`.",
        ),
        Route::unary(
            Method::PUT,
            "/v1/models/{name}/aliases/{alias}",
            rpc!(SetAlias),
            "Point an alias at a version (`{\"version\": n}`).",
        ),
        Route::unary(
            Method::DELETE,
            "/v1/models/{name}/aliases/{alias}",
            rpc!(DeleteAlias),
            "Remove an alias.",
        ),
        Route::unary(
            Method::DELETE,
            "/v1/models/{name}/versions/{version}",
            rpc!(DeleteModel),
            "Delete a version (`force` removes the aliases pointing at it).",
        ),
        Route::unary(
            Method::PATCH,
            "/v1/models/{name}/versions/{version}",
            rpc!(UpdateModelVersion),
            "Change a version's tags (`set_tags`, `remove_tags`) and `description`.",
        ),
        Route::unary(
            Method::GET,
            "/v1/models/{name}/history",
            rpc!(GetAliasHistory),
            "Who moved which alias of a model when (`alias` filters); newest first, paginated.",
        ),
        Route {
            handler: Handler::Events {
                resume: "after_sequence",
                id: "sequence",
            },
            ..Route::unary(
                Method::GET,
                "/v1/registry/events",
                rpc!(WatchModels),
                "Registry changes as Server-Sent Events: versions registered, deleted, edited; aliases moved (resume with Last-Event-ID; `name` filters).",
            )
        },
        Route {
            method: Method::POST,
            path: "/v1/models/{name}/versions",
            rpc: IMPORT,
            body: true,
            summary: "Import a version: multipart/form-data with a `header` part (ImportModelHeader JSON; name from the path, size filled in, format from the content when unset) and a `weights` part (safetensors or a torch.save state dict).",
            handler: Handler::Custom(Arc::new(|call| -> BoxFuture<_> { Box::pin(import(call)) })),
            openapi: Some(json!({
                "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["weights"],
                    "properties": {
                        "header": {"$message": "camshaft.v1.ImportModelHeader"},
                        "weights": {"type": "string", "contentMediaType": "application/octet-stream"},
                    }}}}},
                "responses": {"200": {"description": "The registered version",
                    "content": {"application/json": {"schema": {"$message": "camshaft.v1.ImportModelResponse"}}}}},
            })),
        },
        Route::unary(
            Method::GET,
            "/v1/status",
            "/camshaft.v1.ServerInfo/GetServerInfo",
            "The coordinator's version, store, workers and jobs.",
        ),
        forwarded(
            Method::POST,
            "/v1/explain",
            "/camshaft.v1.Explainer/Explain",
            "Explain a batch of images (an ExplainRequest), forwarded to the explainer.",
            explainer.clone(),
        ),
        forwarded(
            Method::GET,
            "/v1/explainer/status",
            "/camshaft.v1.ServerInfo/GetServerInfo",
            "The explainer's version, device, loaded models and queue (forwarded).",
            explainer,
        ),
    ]
}

/// Size of the chunks an upload is sent to ImportModel in.
const CHUNK: usize = 1 << 20;

/// `POST /v1/models/{name}/versions`: the multipart upload, as the
/// ImportModel stream `ctl models import` sends.
async fn import(call: Call) -> Result<camshaft_http::Response, Status> {
    let name = call.param("name").to_string();
    let Call {
        principal,
        request,
        grpc,
        ..
    } = call;
    // The header part, then the weights, read whole (ImportModel checks the
    // size and the bytes before registering them; MAX_IMPORT_BYTES bounds it).
    let mut parts = multipart(request, MAX_IMPORT_BYTES + (1 << 20))?;
    let mut header = v1::ImportModelHeader::default();
    let mut weights: Option<Bytes> = None;
    while let Some(mut part) = parts.next_field().await.map_err(bad_upload)? {
        match part.name() {
            Some("header") => {
                let text = part.bytes().await.map_err(bad_upload)?;
                let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                    Status::invalid_argument(format!("the header part is not JSON: {e}"))
                })?;
                header = json::typed_from_json("camshaft.v1.ImportModelHeader", value)?;
            }
            Some("weights") => {
                let file_name = part.file_name().unwrap_or_default().to_string();
                let mut data = Vec::new();
                while let Some(chunk) = part.chunk().await.map_err(bad_upload)? {
                    if (data.len() + chunk.len()) as u64 > MAX_IMPORT_BYTES {
                        return Err(Status::invalid_argument(format!(
                            "weights over the import limit of {MAX_IMPORT_BYTES} bytes"
                        )));
                    }
                    data.extend_from_slice(&chunk);
                }
                if header.file_name.is_empty() {
                    header.file_name = file_name;
                }
                weights = Some(data.into());
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown part {} (expected header and weights)",
                    camshaft_proto::short(other.unwrap_or(""))
                )));
            }
        }
    }
    let weights = weights.ok_or_else(|| Status::invalid_argument("no weights part"))?;
    header.name = name;
    header.size_bytes = weights.len() as u64;
    if header.format == v1::WeightsFormat::Unspecified as i32 {
        // torch.save writes a zip archive; safetensors starts with its
        // header's length.
        header.format = if weights.starts_with(b"PK\x03\x04") {
            v1::WeightsFormat::Pth
        } else {
            v1::WeightsFormat::Safetensors
        } as i32;
    }
    let mut messages = vec![
        v1::ImportModelRequest {
            part: Some(v1::import_model_request::Part::Header(header)),
        }
        .encode_to_vec()
        .into(),
    ];
    let mut offset = 0;
    while offset < weights.len() {
        let end = (offset + CHUNK).min(weights.len());
        messages.push(
            v1::ImportModelRequest {
                part: Some(v1::import_model_request::Part::Chunk(
                    weights.slice(offset..end),
                )),
            }
            .encode_to_vec()
            .into(),
        );
        offset = end;
    }
    let answer = grpc
        .one_answer(
            IMPORT,
            Some(principal),
            None,
            futures_util::stream::iter(messages),
        )
        .await?;
    let value = json::to_json(&json::message("camshaft.v1.ImportModelResponse")?, &answer)?;
    Ok(camshaft_http::gateway::json_response(&value))
}

fn bad_upload(e: multer::Error) -> Status {
    Status::invalid_argument(format!("reading the upload: {e}"))
}
