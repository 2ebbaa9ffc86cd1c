//! The HTTP/JSON side of every Camshaft port.
//!
//! A service serves gRPC, gRPC-Web (tonic-web, in
//! [`ServerSecurity::builder`](camshaft_proto::security::ServerSecurity::builder))
//! and HTTP/1.1 + HTTP/2 JSON on one port. The JSON routes are a table of
//! [`Route`]s, each bound to one gRPC method: the caller needs that
//! method's role, and the route calls the method in process
//! ([`GrpcClient`]), through the same service stack as a network call, so
//! limits, admission and metrics are the gRPC method's. Requests and
//! answers are the methods' messages in proto3 JSON ([`json`]); failures
//! are `google.rpc.Status` JSON with the HTTP status Google's API design
//! guide maps the code to ([`status`]); server streams are Server-Sent
//! Events; the OpenAPI 3.1 document ([`openapi`]) is generated from the
//! route table and the descriptors at `/openapi.json`. `/healthz` (the
//! process answers) and `/readyz` (the service's gRPC health is SERVING)
//! need no credential. Every server starts and drains the same way
//! ([`server`]).

pub mod gateway;
pub mod grpc;
pub mod json;
pub mod openapi;
pub mod server;
pub mod status;

pub use axum::response::Response;
pub use gateway::{Call, Gateway, Handler, Route};
pub use grpc::GrpcClient;
pub use server::Startup;
