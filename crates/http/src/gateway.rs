//! The HTTP routes of one server: a table of [`Route`]s, each bound to the
//! gRPC method whose role its caller needs, matched by method and path
//! template, and the dispatch that serves them beside the gRPC routes on
//! the same port.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use camshaft_proto::roles::Principal;
use camshaft_proto::security::{Authenticator, client_common_name, is_grpc_path};
use futures_util::StreamExt;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};
use tonic::Status;

use crate::grpc::GrpcClient;
use crate::json;
use crate::status::{error_response, status_json};

/// A boxed future, as custom handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A hand-written route's handler.
pub type CustomHandler = Arc<dyn Fn(Call) -> BoxFuture<Result<Response, Status>> + Send + Sync>;

/// How a route is answered.
#[derive(Clone)]
pub enum Handler {
    /// The gRPC method's request is built from the path parameters, the
    /// query and (for [`Route::body`] routes) the JSON body; the answer is
    /// its response's JSON.
    Unary,
    /// A server stream as Server-Sent Events: the `Last-Event-ID` header
    /// sets the request field `resume`, each event's id is the answer's
    /// field `id` and its name the set member of the answer's oneof.
    Events {
        /// Request field set from `Last-Event-ID` (e.g. `after_sequence`).
        resume: &'static str,
        /// Answer field that is the event id (e.g. `sequence`).
        id: &'static str,
    },
    /// Written by the service (KServe's predict, uploads).
    Custom(CustomHandler),
}

/// One HTTP route.
#[derive(Clone)]
pub struct Route {
    /// Its HTTP method.
    pub method: Method,
    /// Its path template: literal segments and `{field}` parameters, which
    /// may carry a literal suffix (`/v1/jobs/{job_id}:cancel`).
    pub path: &'static str,
    /// The gRPC method it calls (`/camshaft.v1.Coordinator/GetJob`): the
    /// caller needs that method's role, and for [`Handler::Unary`] and
    /// [`Handler::Events`] it is the method called.
    pub rpc: &'static str,
    /// Whether the JSON body is the request message (path parameters set
    /// on top of it); otherwise the request has no body.
    pub body: bool,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// How it is answered.
    pub handler: Handler,
    /// For custom routes, the OpenAPI operation's `requestBody` and
    /// `responses` (the generated ones describe the gRPC method's messages).
    pub openapi: Option<Value>,
}

impl Route {
    /// A [`Handler::Unary`] route.
    pub fn unary(
        method: Method,
        path: &'static str,
        rpc: &'static str,
        summary: &'static str,
    ) -> Self {
        Route {
            body: method == Method::POST || method == Method::PUT || method == Method::PATCH,
            method,
            path,
            rpc,
            summary,
            handler: Handler::Unary,
            openapi: None,
        }
    }

    /// The descriptor of the gRPC method it calls.
    pub fn method_descriptor(&self) -> Option<MethodDescriptor> {
        let (service, method) = self.rpc.trim_start_matches('/').split_once('/')?;
        json::pool()
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
    }
}

/// What a custom handler gets: the caller, the path parameters, the request
/// and the server's gRPC routes.
pub struct Call {
    /// Who calls (already allowed to call the route's `rpc`).
    pub principal: Principal,
    /// The path parameters, percent-decoded, in template order.
    pub params: Vec<(String, String)>,
    /// The request, body unread.
    pub request: http::Request<Body>,
    /// The server's gRPC methods.
    pub grpc: GrpcClient,
    /// Most bytes a JSON body may have.
    pub max_body_bytes: usize,
}

impl Call {
    /// Path parameter `name`.
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The HTTP side of one server: its routes, health, readiness and OpenAPI
/// document; every other path is forwarded to the gRPC routes when it is a
/// gRPC method's, else 404.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    assets: Option<Assets>,
}

/// The static files a server serves without credentials (a web console):
/// the content type and bytes of a path, if it is one of them.
pub type Assets = fn(&str) -> Option<(&'static str, &'static [u8])>;

struct Inner {
    title: &'static str,
    routes: Vec<Route>,
    grpc: GrpcClient,
    auth: Arc<Authenticator>,
    health_service: &'static str,
    max_body_bytes: usize,
}

/// Largest JSON body by default: a gRPC message of the largest size the
/// servers accept, as base64 inside JSON (4/3), with room for the rest.
pub const DEFAULT_MAX_BODY_BYTES: usize = camshaft_proto::MAX_MESSAGE_BYTES / 3 * 4 + (1 << 20);

impl Gateway {
    /// The gateway of a server titled `title` whose gRPC routes are `grpc`,
    /// whose credentials `auth` checks and whose readiness is the gRPC
    /// health of `health_service` (`camshaft.v1.Coordinator`).
    pub fn new(
        title: &'static str,
        routes: Vec<Route>,
        grpc: GrpcClient,
        auth: Arc<Authenticator>,
        health_service: &'static str,
    ) -> Self {
        Gateway {
            assets: None,
            inner: Arc::new(Inner {
                title,
                routes,
                grpc,
                auth,
                health_service,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            }),
        }
    }

    /// Also serves `assets` on GET, outside `/v1/`, with no credential.
    pub fn with_assets(self, assets: Assets) -> Self {
        Gateway {
            assets: Some(assets),
            ..self
        }
    }

    /// The routes, for [`crate::openapi::document`].
    pub fn routes(&self) -> &[Route] {
        &self.inner.routes
    }

    /// The server's title.
    pub fn title(&self) -> &'static str {
        self.inner.title
    }

    /// Every route of the port, gRPC and HTTP, as tonic serves them.
    pub fn into_routes(self) -> tonic::service::Routes {
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let gateway = self.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request).await) }
        });
        tonic::service::Routes::from(axum::Router::new().fallback_service(service))
    }

    /// Answers one request.
    pub async fn handle(&self, request: http::Request<Body>) -> Response {
        let path = request.uri().path().to_string();
        // gRPC (and gRPC-Web) calls go to the gRPC routes, also to paths no
        // service has: tonic answers those UNIMPLEMENTED, as gRPC clients
        // expect. (Every service's path starts with `/camshaft.` or
        // `/grpc.`, which the credentials check covers.)
        let grpc_call = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc_call || is_grpc_path(&path) {
            return self.inner.grpc.forward(request).await;
        }
        let method = request.method().clone();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => return json_response(&json!({"status": "SERVING"})),
            ("GET", "/readyz") => return self.ready().await,
            ("GET", "/openapi.json") => {
                return json_response(&crate::openapi::document(self));
            }
            ("GET", "/v1/whoami") => return self.whoami(&request),
            ("GET", _) if !path.starts_with("/v1/") => {
                if let Some((content_type, bytes)) = self.assets.and_then(|a| a(&path)) {
                    return asset_response(content_type, bytes);
                }
            }
            _ => {}
        }
        let mut path_matched = false;
        for route in &self.inner.routes {
            let Some(params) = match_path(route.path, &path) else {
                continue;
            };
            path_matched = true;
            if route.method != method {
                continue;
            }
            return match self.serve(route, params, request).await {
                Ok(response) => response,
                Err(status) => error_response(&status),
            };
        }
        if path_matched {
            let mut response = error_response(&Status::unimplemented(format!(
                "{method} is not a method of {}",
                camshaft_proto::short(&path)
            )));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return response;
        }
        error_response(&Status::not_found(format!(
            "no route {method} {} (see /openapi.json)",
            camshaft_proto::short(&path)
        )))
    }

    /// `GET /v1/whoami`: the caller's name and role (`anonymous`, an
    /// editor, where the server asks for no token), so a client can show
    /// only what its caller may do.
    fn whoami(&self, request: &http::Request<Body>) -> Response {
        let given = credential(request, false);
        let certificate = client_common_name(request.extensions());
        match self.inner.auth.authenticate(
            given.as_ref().map(HeaderValue::as_bytes),
            certificate.as_deref(),
        ) {
            Ok(principal) => json_response(&json!({
                "name": principal.name,
                "role": principal.role.to_string(),
            })),
            Err(status) => error_response(&status),
        }
    }

    async fn ready(&self) -> Response {
        use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};
        let request = HealthCheckRequest {
            service: self.inner.health_service.to_string(),
        };
        let answer = self
            .inner
            .grpc
            .unary(
                "/grpc.health.v1.Health/Check",
                None,
                request.encode_to_vec().into(),
            )
            .await
            .and_then(|bytes| {
                HealthCheckResponse::decode(bytes).map_err(|e| Status::internal(e.to_string()))
            });
        match answer {
            Ok(r) if r.status() == health_check_response::ServingStatus::Serving => {
                json_response(&json!({"status": "SERVING"}))
            }
            Ok(r) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"status": r.status().as_str_name()}).to_string(),
            )
                .into_response(),
            Err(status) => error_response(&status),
        }
    }

    async fn serve(
        &self,
        route: &Route,
        params: Vec<(String, String)>,
        request: http::Request<Body>,
    ) -> Result<Response, Status> {
        let principal = self.authorize(route, &request)?;
        let inner = &self.inner;
        match &route.handler {
            Handler::Custom(handler) => {
                handler(Call {
                    principal,
                    params,
                    request,
                    grpc: inner.grpc.clone(),
                    max_body_bytes: inner.max_body_bytes,
                })
                .await
            }
            Handler::Unary => {
                let method = route
                    .method_descriptor()
                    .ok_or_else(|| Status::internal(format!("no method {}", route.rpc)))?;
                let message = self
                    .request_message(route, &method, &params, request)
                    .await?;
                let answer = inner
                    .grpc
                    .unary(route.rpc, Some(principal), message)
                    .await?;
                Ok(json_response(&json::to_json(&method.output(), &answer)?))
            }
            Handler::Events { resume, id } => {
                let method = route
                    .method_descriptor()
                    .ok_or_else(|| Status::internal(format!("no method {}", route.rpc)))?;
                let last = request
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mut params = params;
                if let Some(last) = last {
                    params.push(((*resume).to_string(), last));
                }
                let message = self
                    .request_message(route, &method, &params, request)
                    .await?;
                let answers = inner
                    .grpc
                    .call(
                        route.rpc,
                        Some(principal),
                        futures_util::stream::iter([message]),
                    )
                    .await?;
                Ok(events(answers, method.output(), id))
            }
        }
    }

    /// The caller of `request`, if it may call gRPC method `rpc`. Event
    /// streams also take the token as `?access_token=` (browsers'
    /// EventSource cannot set a header).
    fn authorize(&self, route: &Route, request: &http::Request<Body>) -> Result<Principal, Status> {
        let events = matches!(route.handler, Handler::Events { .. });
        let given = credential(request, events);
        let certificate = client_common_name(request.extensions());
        let principal = self.inner.auth.authorize(
            route.rpc,
            given.as_ref().map(HeaderValue::as_bytes),
            certificate.as_deref(),
        )?;
        Ok(principal.unwrap_or_else(Principal::anonymous))
    }

    /// The encoded request message of a [`Handler::Unary`] or
    /// [`Handler::Events`] route.
    async fn request_message(
        &self,
        route: &Route,
        method: &MethodDescriptor,
        params: &[(String, String)],
        request: http::Request<Body>,
    ) -> Result<Bytes, Status> {
        let input = method.input();
        let (parts, body) = request.into_parts();
        let mut object = if route.body {
            read_json_object(body, self.inner.max_body_bytes).await?
        } else {
            Map::new()
        };
        for (name, value) in query_pairs(parts.uri.query().unwrap_or("")) {
            if name == "access_token" {
                continue;
            }
            set_field(&input, &mut object, &name, &value, true)?;
        }
        for (name, value) in params {
            set_field(&input, &mut object, name, value, false)?;
        }
        if let Some(key) = parts.headers.get("idempotency-key")
            && input.get_field_by_name("request_id").is_some()
        {
            let key = key
                .to_str()
                .map_err(|_| Status::invalid_argument("Idempotency-Key must be ASCII"))?;
            object.insert("requestId".into(), Value::String(key.to_string()));
        }
        json::from_json(&input, Value::Object(object))
    }
}

/// The parts of a `multipart/form-data` request, at most `max_bytes` in
/// all (INVALID_ARGUMENT past it, or when it is not multipart).
pub fn multipart(
    request: http::Request<Body>,
    max_bytes: u64,
) -> Result<multer::Multipart<'static>, Status> {
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| Status::invalid_argument("the body must be multipart/form-data"))?;
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(max_bytes));
    Ok(multer::Multipart::with_constraints(
        request.into_body().into_data_stream(),
        boundary,
        constraints,
    ))
}

/// The `Authorization` header of `request`, or (where `query_token`) a
/// bearer token from its `access_token` query parameter.
fn credential(request: &http::Request<Body>, query_token: bool) -> Option<HeaderValue> {
    if let Some(given) = request.headers().get(header::AUTHORIZATION) {
        return Some(given.clone());
    }
    if !query_token {
        return None;
    }
    let token = query_pairs(request.uri().query().unwrap_or(""))
        .into_iter()
        .find(|(name, _)| name == "access_token")?
        .1;
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// A static file, with headers that keep a page from running anything but
/// its own files (a console shows untrusted class names and images).
fn asset_response(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
                 script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response()
}

/// `value` as a JSON response.
pub fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The whole body, at most `max` bytes (INVALID_ARGUMENT past it).
pub async fn read_body(body: Body, max: usize) -> Result<Bytes, Status> {
    http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::invalid_argument(format!("the body is over {max} bytes"))
            } else {
                Status::invalid_argument(format!("reading the body: {e}"))
            }
        })
}

/// The body as a JSON object, at most `max` bytes; an empty body is an
/// empty object. INVALID_ARGUMENT when it is not JSON or not an object.
pub async fn read_json_object(body: Body, max: usize) -> Result<Map<String, Value>, Status> {
    let bytes = read_body(body, max).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Status::invalid_argument("the body must be a JSON object")),
        Err(e) => Err(Status::invalid_argument(format!(
            "the body is not JSON: {e}"
        ))),
    }
}

/// Sets field `name` (proto or JSON name) of `object` to the string
/// `value` read as the field's kind. A repeated field from the query
/// collects every occurrence.
fn set_field(
    message: &MessageDescriptor,
    object: &mut Map<String, Value>,
    name: &str,
    value: &str,
    from_query: bool,
) -> Result<(), Status> {
    let field = message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
        .ok_or_else(|| {
            camshaft_proto::invalid_field(
                name,
                format!(
                    "{} has no field {}",
                    message.name(),
                    camshaft_proto::short(name)
                ),
            )
        })?;
    let bad = |why: &str| {
        camshaft_proto::invalid_field(
            field.name(),
            format!("{} {}: {why}", field.name(), camshaft_proto::short(value)),
        )
    };
    let scalar = match field.kind() {
        Kind::Double | Kind::Float => value
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("not a number"))?,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => value
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| bad("not an integer"))?,
        Kind::Bool => match value {
            "true" | "1" | "" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad("not true or false")),
        },
        Kind::Enum(e) => match json::enum_value_name(&e, value) {
            Some(name) => Value::String(name),
            None => return Err(bad("not one of its values")),
        },
        Kind::Message(_) => return Err(bad("a message cannot be set from the path or query")),
        // 64-bit integers are strings in proto3 JSON; strings and bytes as is.
        _ => Value::String(value.to_string()),
    };
    let key = field.json_name().to_string();
    if field.is_list() && from_query {
        match object
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(scalar),
            other => *other = Value::Array(vec![scalar]),
        }
    } else {
        object.remove(field.name());
        object.insert(key, scalar);
    }
    Ok(())
}

/// The parameters of `template` in `path`, or `None` when it does not match.
pub fn match_path(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut template_segments = template.trim_start_matches('/').split('/');
    let mut path_segments = path.trim_start_matches('/').split('/');
    loop {
        match (template_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(t), Some(p)) => match t.find('{') {
                None if t == p => {}
                None => return None,
                Some(open) => {
                    let close = t.find('}')?;
                    let (prefix, suffix) = (&t[..open], &t[close + 1..]);
                    let value = p.strip_prefix(prefix)?.strip_suffix(suffix)?;
                    let value = percent_decode(value)?;
                    if value.is_empty() {
                        return None;
                    }
                    params.push((t[open + 1..close].to_string(), value));
                }
            },
            _ => return None,
        }
    }
}

/// `name=value` pairs of a query string, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                percent_decode(&name.replace('+', " "))?,
                percent_decode(&value.replace('+', " "))?,
            ))
        })
        .collect()
}

/// `text` with `%XX` escapes decoded; `None` when they are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(text.get(i + 1..i + 3)?, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How often an idle event stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `answers` as a `text/event-stream` response.
fn events(answers: crate::grpc::Messages, output: MessageDescriptor, id: &'static str) -> Response {
    let ticks = tokio_stream_interval(KEEP_ALIVE);
    let state = (answers, ticks, output, false);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut answers, mut ticks, output, done)| async move {
            if done {
                return None;
            }
            let (chunk, done) = tokio::select! {
                next = answers.next() => match next {
                    Some(Ok(bytes)) => match json::to_json(&output, &bytes) {
                        Ok(value) => (event_text(&output, &value, id), false),
                        Err(status) => (error_event(&status), true),
                    },
                    Some(Err(status)) => (error_event(&status), true),
                    None => return None,
                },
                _ = ticks.tick() => (": keep-alive\n\n".to_string(), false),
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(chunk)),
                (answers, ticks, output, done),
            ))
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (http::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn tokio_stream_interval(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// One event: `id` from the answer's field, `event` the set member of its
/// oneof (`message` when it has none), `data` its JSON.
fn event_text(output: &MessageDescriptor, value: &Value, id: &str) -> String {
    let name = output
        .oneofs()
        .flat_map(|o| o.fields().collect::<Vec<_>>())
        .find(|f| value.get(f.json_name()).is_some_and(|v| !v.is_null()))
        .map_or_else(|| "message".to_string(), |f| f.json_name().to_string());
    let id_value = output
        .get_field_by_name(id)
        .and_then(|f| value.get(f.json_name()))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .unwrap_or_default();
    format!("id: {id_value}\nevent: {name}\ndata: {value}\n\n")
}

/// The event that ends a stream with an error status.
fn error_event(status: &Status) -> String {
    format!("event: error\ndata: {}\n\n", status_json(status))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        match_path(template, path)
    }

    #[test]
    fn templates_match_whole_segments_and_suffixes() {
        assert_eq!(params("/v1/jobs", "/v1/jobs"), Some(vec![]));
        assert_eq!(params("/v1/jobs", "/v1/jobs/x"), None);
        assert_eq!(
            params("/v1/jobs/{job_id}", "/v1/jobs/7"),
            Some(vec![("job_id".into(), "7".into())])
        );
        assert_eq!(
            params("/v1/models/{model}:predict", "/v1/models/pets:3:predict"),
            Some(vec![("model".into(), "pets:3".into())])
        );
        assert_eq!(
            params("/v1/models/{model}", "/v1/models/pets%40prod"),
            Some(vec![("model".into(), "pets@prod".into())])
        );
        assert_eq!(params("/v1/jobs/{job_id}:cancel", "/v1/jobs/:cancel"), None);
        assert_eq!(params("/v1/jobs/{job_id}", "/v1/jobs/%ff"), None);
    }

    #[test]
    fn query_values_take_the_field_kind() {
        let list = json::message("camshaft.v1.ListJobsRequest").unwrap();
        let mut object = Map::new();
        for (name, value) in query_pairs("states=running&states=JOB_STATE_PENDING&pageSize=5") {
            set_field(&list, &mut object, &name, &value, true).unwrap();
        }
        assert_eq!(
            Value::Object(object.clone()),
            json!({"states": ["JOB_STATE_RUNNING", "JOB_STATE_PENDING"], "pageSize": 5})
        );
        let err = set_field(&list, &mut object, "page_size", "many", true).unwrap_err();
        assert_eq!(camshaft_proto::field_violations(&err)[0].0, "page_size");
        let err = set_field(&list, &mut object, "nope", "1", true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
