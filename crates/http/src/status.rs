//! gRPC statuses as HTTP answers: the status code Google's API design guide
//! maps each gRPC code to, and a `google.rpc.Status` JSON body with the
//! standard error details a client library reads (field violations, retry
//! delay), plus `Retry-After` on RESOURCE_EXHAUSTED and UNAVAILABLE.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The HTTP status of gRPC code `code` (google.rpc.Code's mapping).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `status` as google.rpc.Status JSON: `code` (the gRPC code's number),
/// `message`, `status` (its name, as Google's HTTP APIs add) and `details`
/// with `@type`d BadRequest and RetryInfo entries where the status has them.
pub fn status_json(status: &Status) -> Value {
    let details = status.get_error_details();
    let mut listed = Vec::new();
    if let Some(bad) = details.bad_request() {
        let violations: Vec<Value> = bad
            .field_violations
            .iter()
            .map(|v| json!({"field": v.field, "description": v.description}))
            .collect();
        listed.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": violations,
        }));
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        listed.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}.{:03}s", delay.as_secs(), delay.subsec_millis()),
        }));
    }
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "status": camshaft_proto::code_name(status.code()),
        "details": listed,
    })
}

/// The HTTP answer for a failed call: [`http_status`], the
/// [`status_json`] body, `Retry-After` (whole seconds, rounded up) when the
/// status carries a retry hint, `WWW-Authenticate: Bearer` on 401.
pub fn error_response(status: &Status) -> Response {
    let mut response = (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        status_json(status).to_string(),
    )
        .into_response();
    if let Some(delay) = camshaft_proto::retry_after(status) {
        let seconds = delay.as_millis().div_ceil(1000).max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    if status.code() == Code::Unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_proto::ErrorKind;
    use std::time::Duration;

    #[test]
    fn codes_map_as_the_design_guide_says() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn overload_says_when_to_retry() {
        let status = ErrorKind::ResourceExhausted
            .status_with_retry("queue full", Duration::from_millis(1500));
        let response = error_response(&status);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = status_json(&status);
        assert_eq!(body["code"], 8);
        assert_eq!(body["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["details"][0]["retryDelay"], "1.500s");
    }

    #[test]
    fn a_bad_field_is_named() {
        let body = status_json(&camshaft_proto::invalid_field("spec.lr", "lr must be > 0"));
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.BadRequest"
        );
        assert_eq!(body["details"][0]["fieldViolations"][0]["field"], "spec.lr");
        assert_eq!(body["message"], "lr must be > 0");
    }
}
