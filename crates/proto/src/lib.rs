//! Camshaft's gRPC contract: the `camshaft.v1` protos (`proto/camshaft/v1/` at
//! the repository root) compiled with tonic, plus the few helpers every service
//! and client needs to speak it the same way.
//!
//! # Services (module [`v1`])
//!
//! | service | served by | called by | client / server types |
//! |---|---|---|---|
//! | `Coordinator` | coordinator | `ctl` | [`v1::coordinator_client::CoordinatorClient`], [`v1::coordinator_server::CoordinatorServer`] |
//! | `WorkerLink` | coordinator | workers (they open the stream: no inbound port on a worker) | [`v1::worker_link_client::WorkerLinkClient`], [`v1::worker_link_server::WorkerLinkServer`] |
//! | `Explainer` | explainer | `ctl`, other teams' clients (public contract) | [`v1::explainer_client::ExplainerClient`], [`v1::explainer_server::ExplainerServer`] |
//! | `ServerInfo` | coordinator, explainer | `ctl status` | [`v1::server_info_client::ServerInfoClient`], [`v1::server_info_server::ServerInfoServer`] |
//!
//! The `.proto` files document every field, its default and the status code of
//! each failure; read them first. A server implements the generated trait
//! (e.g. [`v1::explainer_server::Explainer`]) and wraps it in the generated
//! server type; a client connects with the generated client. Both sides should
//! raise tonic's 4 MiB message limit to [`MAX_MESSAGE_BYTES`] for image
//! batches, and every server should also serve health (`tonic-health`) and
//! reflection ([`reflection_v1`], [`reflection_v1alpha`]: Python reflection
//! clients speak only v1alpha).
//!
//! # Helpers
//!
//! - [`ModelRef`] parses and prints model references (`name`, `name@alias`,
//!   `name:version`); [`validate_name`] and [`validate_alias`] check names.
//! - [`ErrorKind`] maps each kind of failure to one [`tonic::Code`], so every
//!   service answers the same code for the same failure; [`retry_after`] reads
//!   the retry hint of a RESOURCE_EXHAUSTED answer.
//! - Short names for the wire enums (`Arch::from_short_name("resnet18")`,
//!   `Colormap::Magma.short_name()`; the vocabulary's come from
//!   `camshaft-spec`) and [`names::required`] / [`names::known`] for reading
//!   raw enum fields strictly.
//! - [`vocab`]: the one module converting between the wire and
//!   `camshaft-spec` (enums, `JobSpec` → `TrainingSpec` with every default,
//!   `ModelSpec` ↔ `VersionSpec`).
//! - [`v1::ModelSpec::validate`], [`v1::ClassMap::shape`],
//!   [`v1::JobState::is_terminal`], and
//!   [`v1::ImportModelRequest::stream_parts`] (header + 1 MiB chunks for
//!   `ctl models import`).
//! - [`now_unix_ms`] for the `*_unix_ms` fields.
//! - [`roles`]: principals, their roles and the role each RPC needs;
//!   [`short`] quotes caller input in errors with a bounded length.
//! - [`security`]: TLS, mutual TLS and bearer tokens, the same for every
//!   server ([`security::ServerSecurity`]) and client
//!   ([`security::ClientSecurity`]).
//!
//! # Example
//!
//! An explainer server with reflection, and a client calling it:
//!
//! ```no_run
//! use camshaft_proto::v1::explainer_client::ExplainerClient;
//! use camshaft_proto::v1::explainer_server::{Explainer, ExplainerServer};
//! use camshaft_proto::v1::{ExplainMethod, ExplainRequest, ExplainResponse, ImageInput};
//! use camshaft_proto::{MAX_MESSAGE_BYTES, ModelRef};
//! use tonic::{Request, Response, Status};
//!
//! struct MyExplainer;
//!
//! #[tonic::async_trait]
//! impl Explainer for MyExplainer {
//!     async fn explain(
//!         &self,
//!         request: Request<ExplainRequest>,
//!     ) -> Result<Response<ExplainResponse>, Status> {
//!         // A malformed reference becomes INVALID_ARGUMENT with the reason.
//!         let model = ModelRef::parse(&request.get_ref().model)
//!             .map_err(camshaft_proto::Error::from)?;
//!         Err(camshaft_proto::ErrorKind::NotFound.status(format!("no model {model}")))
//!     }
//!
//!     type ExplainStreamStream = std::pin::Pin<
//!         Box<dyn tokio_stream::Stream<Item = Result<ExplainResponse, Status>> + Send>,
//!     >;
//!     async fn explain_stream(
//!         &self,
//!         _request: Request<tonic::Streaming<ExplainRequest>>,
//!     ) -> Result<Response<Self::ExplainStreamStream>, Status> {
//!         Err(Status::unimplemented("not in this example"))
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Server: the explainer, plus reflection v1 and v1alpha.
//! let server = tonic::transport::Server::builder()
//!     .add_service(
//!         ExplainerServer::new(MyExplainer)
//!             .max_decoding_message_size(MAX_MESSAGE_BYTES)
//!             .max_encoding_message_size(MAX_MESSAGE_BYTES),
//!     )
//!     .add_service(camshaft_proto::reflection_v1()?)
//!     .add_service(camshaft_proto::reflection_v1alpha()?)
//!     .serve("127.0.0.1:50052".parse()?);
//! tokio::spawn(server);
//!
//! // Client.
//! let mut client = ExplainerClient::connect("http://127.0.0.1:50052")
//!     .await?
//!     .max_decoding_message_size(MAX_MESSAGE_BYTES)
//!     .max_encoding_message_size(MAX_MESSAGE_BYTES);
//! let png: Vec<u8> = std::fs::read("cat.png")?;
//! let response = client
//!     .explain(ExplainRequest {
//!         model: "pets@latest".into(),
//!         images: vec![ImageInput { id: "cat".into(), data: png.into(), target_class: None }],
//!         method: ExplainMethod::Cam as i32,
//!         return_overlay: true,
//!         ..Default::default()
//!     })
//!     .await?
//!     .into_inner();
//! println!("explained with {}", response.model_version);
//! # Ok(())
//! # }
//! ```
//!
//! `bytes` fields (images, weight chunks, the NCCL id) are [`bytes::Bytes`], so a
//! server slices them out of the request buffer instead of copying.

mod checks;
mod error;
mod import;
mod model_ref;
pub mod names;
pub mod roles;
pub mod security;
mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod vocab;

pub use checks::MAX_INPUT_SIZE;
pub use error::{Error, Result};
pub use import::IMPORT_CHUNK_BYTES;
pub use model_ref::{
    LATEST_ALIAS, MAX_NAME_LEN, ModelRef, VersionSelector, validate_alias, validate_name,
};
pub use prost::bytes;
pub use status::{
    ErrorKind, RETRY_AFTER_METADATA, RETRY_PUSHBACK_METADATA, code_name, field_violations,
    invalid_field, retry_after,
};

/// The generated `camshaft.v1` messages, enums, clients and servers.
///
/// Enum fields are stored as `i32` (prost's convention): set them with
/// `Arch::Resnet18 as i32` and read them with the generated getters
/// (`spec.arch()`) or strictly with [`names::required`].
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags
)]
pub mod v1 {
    tonic::include_proto!("camshaft.v1");
}

/// The encoded `FileDescriptorSet` of every `camshaft.v1` file, for server
/// reflection (see [`reflection_v1`]) and for tools that need the schema.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/camshaft_v1_descriptor.bin"));

/// Fully qualified names of the services in [`FILE_DESCRIPTOR_SET`] (as the
/// health service and reflection name them).
pub const SERVICE_NAMES: [&str; 4] = [
    "camshaft.v1.Coordinator",
    "camshaft.v1.WorkerLink",
    "camshaft.v1.Explainer",
    "camshaft.v1.ServerInfo",
];

/// Message size limit for encoding and decoding on servers and clients: 64 MiB,
/// room for a batch of large images (tonic's default of 4 MiB is not). Servers
/// still check images per request and bytes per image themselves, so that an
/// oversized batch is answered with a stable code (INVALID_ARGUMENT) rather
/// than tonic's OUT_OF_RANGE.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Reflection service (`grpc.reflection.v1`) over every `camshaft.v1` service.
pub fn reflection_v1() -> std::result::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Reflection service (`grpc.reflection.v1alpha`) over every `camshaft.v1`
/// service, for clients (grpcio's, grpcurl's older builds) that speak only v1alpha.
pub fn reflection_v1alpha() -> std::result::Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
}

/// How many characters of a caller's string an error message quotes.
pub const QUOTED_CHARS: usize = 64;

/// `s` quoted for an error message or a log line: at most [`QUOTED_CHARS`]
/// characters, escaped as Rust's `{:?}` does, and how long it really was
/// when cut ("\"aaaa…\" (100000 bytes)"). Input is quoted through this, so
/// an error never echoes an unbounded value back.
pub fn short(s: &str) -> String {
    match s.char_indices().nth(QUOTED_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// Milliseconds since the Unix epoch, the unit of every `*_unix_ms` field
/// (0 for a clock before 1970).
pub fn unix_ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// [`unix_ms`] of now.
pub fn now_unix_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}
