//! Calls of a server's own gRPC methods from its HTTP routes, in process:
//! the request goes through the same service stack as a call from the
//! network (decoding limits, admission, metrics), framed as gRPC, with the
//! caller's [`Principal`] in its extensions.

use std::convert::Infallible;
use std::pin::Pin;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use camshaft_proto::roles::Principal;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use tonic::Status;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

/// Messages of a gRPC answer, each encoded; an `Err` ends the stream.
pub type Messages = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// A server's gRPC routes, callable in process.
#[derive(Clone)]
pub struct GrpcClient {
    /// Where calls go: `http://host:port` of another server ([`remote`](Self::remote)),
    /// empty for this server's own routes.
    origin: String,
    /// The routes, for calls from this process.
    service: Service,
    /// The routes behind gRPC-Web's translation, for calls from the network.
    network: Service,
}

type Service = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

impl std::fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcClient")
    }
}

/// `message` in gRPC's length-prefixed framing (uncompressed).
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.extend_from_slice(&[0]);
    // A message over 4 GiB cannot be framed; the server's decoding limit is
    // far below that, so such a body never reaches here.
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(message);
    framed.freeze()
}

impl GrpcClient {
    /// Calls go to `service` (a server's tonic routes, with its layers).
    pub fn new<S, B>(service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let service: Service = BoxCloneSyncService::new(service.map_response(|r| r.map(Body::new)));
        // tonic-web passes gRPC calls through and translates gRPC-Web ones
        // (it refuses every other HTTP/1.1 request, so it wraps the gRPC
        // routes only, not the port).
        let web = tonic_web::GrpcWebLayer::new().layer(
            service
                .clone()
                .map_request(|r: http::Request<tonic::body::Body>| r.map(Body::new)),
        );
        GrpcClient {
            origin: String::new(),
            service,
            network: BoxCloneSyncService::new(ServiceExt::<http::Request<Body>>::map_response(
                web,
                |r| r.map(Body::new),
            )),
        }
    }

    /// Calls to another server over `channel`, whose address is `origin`
    /// (`http://host:port`); a transport failure is UNAVAILABLE.
    pub fn remote(origin: &str, channel: tonic::transport::Channel) -> Self {
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let channel = channel.clone();
            async move {
                let answer = channel.oneshot(request.map(tonic::body::Body::new)).await;
                Ok::<_, Infallible>(match answer {
                    Ok(response) => response.map(Body::new),
                    Err(e) => Status::unavailable(format!("the server cannot be reached: {e}"))
                        .into_http::<Body>(),
                })
            }
        });
        let service: Service = BoxCloneSyncService::new(service);
        GrpcClient {
            origin: origin.trim_end_matches('/').to_string(),
            network: service.clone(),
            service,
        }
    }

    /// The answer to a gRPC or gRPC-Web call from the network.
    pub async fn forward(&self, request: http::Request<Body>) -> http::Response<Body> {
        match self.network.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The raw HTTP answer of the gRPC call `request`.
    async fn send(&self, request: http::Request<Body>) -> http::Response<Body> {
        match self.service.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Calls `path` (`/camshaft.v1.Coordinator/GetJob`) as `principal`
    /// with the encoded `messages`, and returns the answer's messages.
    pub async fn call(
        &self,
        path: &str,
        principal: Option<Principal>,
        messages: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<Messages, Status> {
        self.call_with(path, principal, None, messages).await
    }

    /// [`call`](Self::call), also sending `authorization` (for a remote
    /// server, which checks the caller's credential itself).
    pub async fn call_with(
        &self,
        path: &str,
        principal: Option<Principal>,
        authorization: Option<&http::HeaderValue>,
        messages: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<Messages, Status> {
        let body = Body::from_stream(messages.map(|m| Ok::<_, Infallible>(frame(&m))));
        let mut request = http::Request::post(format!("{}{path}", self.origin))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(body)
            .map_err(|e| Status::internal(format!("building the call of {path}: {e}")))?;
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        if let Some(authorization) = authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        let response = self.send(request).await;
        // A trailers-only answer (an error before any message).
        if let Some(status) = Status::from_header_map(response.headers())
            && status.code() != tonic::Code::Ok
        {
            return Err(status);
        }
        Ok(decode(response.into_body()))
    }

    /// A unary call: exactly one message in, one out.
    pub async fn unary(
        &self,
        path: &str,
        principal: Option<Principal>,
        message: Bytes,
    ) -> Result<Bytes, Status> {
        self.unary_with(path, principal, None, message).await
    }

    /// [`unary`](Self::unary), also sending `authorization`.
    pub async fn unary_with(
        &self,
        path: &str,
        principal: Option<Principal>,
        authorization: Option<&http::HeaderValue>,
        message: Bytes,
    ) -> Result<Bytes, Status> {
        self.one_answer(
            path,
            principal,
            authorization,
            futures_util::stream::iter([message]),
        )
        .await
    }

    /// A unary or client-streaming call: `messages` in, exactly one out.
    pub async fn one_answer(
        &self,
        path: &str,
        principal: Option<Principal>,
        authorization: Option<&http::HeaderValue>,
        messages: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<Bytes, Status> {
        let mut answers = self
            .call_with(path, principal, authorization, messages)
            .await?;
        let first = answers
            .next()
            .await
            .ok_or_else(|| Status::internal(format!("{path} answered no message")))??;
        // Drain to the trailers: an error after the message still counts.
        while let Some(next) = answers.next().await {
            next?;
        }
        Ok(first)
    }
}

/// The messages of a gRPC answer body, then its trailers' status (an
/// `Err` item when it is not OK; missing trailers are an error too).
fn decode(body: Body) -> Messages {
    let state = (body, BytesMut::new(), false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut body, mut buffer, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(message) = take_message(&mut buffer) {
                    return Some((Ok(message), (body, buffer, false)));
                }
                match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => buffer.extend_from_slice(&data),
                        Err(frame) => {
                            let status = frame
                                .trailers_ref()
                                .and_then(Status::from_header_map)
                                .unwrap_or_else(|| {
                                    Status::internal("trailers without grpc-status")
                                });
                            if status.code() == tonic::Code::Ok {
                                return None;
                            }
                            return Some((Err(status), (body, buffer, true)));
                        }
                    },
                    Some(Err(e)) => {
                        return Some((
                            Err(Status::internal(format!("reading the answer: {e}"))),
                            (body, buffer, true),
                        ));
                    }
                    None => {
                        return Some((
                            Err(Status::internal("the answer ended without a status")),
                            (body, buffer, true),
                        ));
                    }
                }
            }
        },
    ))
}

/// The first whole message in `buffer`, removed from it.
fn take_message(buffer: &mut BytesMut) -> Option<Bytes> {
    if buffer.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if buffer.len() < 5 + len {
        return None;
    }
    buffer.advance(5);
    Some(buffer.split_to(len).freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_split_where_they_end() {
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&frame(b"abc"));
        buffer.extend_from_slice(&frame(b""));
        buffer.extend_from_slice(&frame(b"defg")[..4]);
        assert_eq!(take_message(&mut buffer).as_deref(), Some(&b"abc"[..]));
        assert_eq!(take_message(&mut buffer).as_deref(), Some(&b""[..]));
        assert_eq!(take_message(&mut buffer), None);
        assert_eq!(buffer.len(), 4);
    }
}
