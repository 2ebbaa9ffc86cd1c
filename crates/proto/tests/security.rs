//! TLS, mutual TLS and bearer tokens over real loopback connections, with a
//! CA and certificates made at test time.
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_proto::security::{ClientSecurity, CredentialFiles, ServerSecurity, TlsConfig};
use camshaft_proto::testing::{Pki, TOKEN};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_response};

/// Serves health and reflection with `security` on a loopback port.
async fn serve(security: ServerSecurity) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = security.incoming(listener);
    let router = security
        .builder()
        .unwrap()
        .add_service(health)
        .add_service(camshaft_proto::reflection_v1().unwrap());
    tokio::spawn(router.serve_with_incoming(incoming));
    addr.to_string()
}

/// Lists the services through reflection (a call that needs the token).
async fn list_services(client: &ClientSecurity, addr: &str) -> Result<Vec<String>, tonic::Status> {
    let channel = client
        .endpoint(addr)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let mut reflection = ServerReflectionClient::new(client.channel(channel));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer = answers.message().await?.unwrap();
    match answer.message_response.unwrap() {
        server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn health(client: &ClientSecurity, addr: &str) -> Result<i32, tonic::Status> {
    let channel = client
        .endpoint(addr)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(answer.into_inner().status)
}

fn token(path: &std::path::Path) -> CredentialFiles<'_> {
    CredentialFiles {
        token: Some(path),
        ..CredentialFiles::default()
    }
}

#[tokio::test]
async fn tls_with_a_token_lets_in_only_calls_that_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = ServerSecurity::load(&pki.server(false), token(&pki.path("token"))).unwrap();
    assert!(server.tls() && server.token_required() && !server.mutual_tls());
    let addr = serve(server).await;

    let with_token = ClientSecurity::with_token(&pki.client(false), Some(TOKEN)).unwrap();
    let services = list_services(&with_token, &addr).await.unwrap();
    assert!(
        services.iter().any(|s| s == "camshaft.v1.Coordinator"),
        "{services:?}"
    );

    let no_token = ClientSecurity::with_token(&pki.client(false), None).unwrap();
    let refused = list_services(&no_token, &addr).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("bearer token"), "{refused:?}");

    let wrong = ClientSecurity::with_token(&pki.client(false), Some("guess")).unwrap();
    let refused = list_services(&wrong, &addr).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("wrong"), "{refused:?}");

    // Health stays open for probes, token or not.
    assert_eq!(health(&no_token, &addr).await.unwrap(), 1);

    // A plaintext client gets no answer from a TLS server.
    let plain = ClientSecurity::with_token(&TlsConfig::default(), Some(TOKEN)).unwrap();
    assert!(list_services(&plain, &addr).await.is_err());
    // Nor does a client that trusts another CA.
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other.path());
    let untrusting = ClientSecurity::with_token(&stranger.client(false), Some(TOKEN)).unwrap();
    assert!(list_services(&untrusting, &addr).await.is_err());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = ServerSecurity::load(&pki.server(true), CredentialFiles::default()).unwrap();
    assert!(server.mutual_tls() && !server.token_required());
    let addr = serve(server).await;

    let with_cert = ClientSecurity::with_token(&pki.client(true), None).unwrap();
    assert!(!list_services(&with_cert, &addr).await.unwrap().is_empty());
    let without = ClientSecurity::with_token(&pki.client(false), None).unwrap();
    assert!(list_services(&without, &addr).await.is_err());
}

#[tokio::test]
async fn no_settings_mean_plaintext_and_no_token() {
    let server = ServerSecurity::load(&TlsConfig::default(), CredentialFiles::default()).unwrap();
    assert!(!server.tls() && !server.token_required());
    let addr = serve(server).await;
    let client = ClientSecurity::default();
    assert!(!list_services(&client, &addr).await.unwrap().is_empty());
}

#[test]
fn unreadable_files_are_named() {
    let missing = TlsConfig {
        cert: Some("/nonexistent/server.pem".into()),
        key: Some("/nonexistent/server.key".into()),
        ..TlsConfig::default()
    };
    let e = ServerSecurity::load(&missing, CredentialFiles::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/server.pem"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let e = ServerSecurity::load(&TlsConfig::default(), token(&dir.path().join("empty")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
}

#[tokio::test]
async fn under_mutual_tls_a_client_certificate_names_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let serve_with = |line: &str| {
        let tokens = dir.path().join(format!("tokens-{}.csv", line.len()));
        std::fs::write(
            &tokens,
            format!("editor-token-0123456789,alice,editor\n{line}\n"),
        )
        .unwrap();
        let server = ServerSecurity::load(
            &pki.server(true),
            CredentialFiles {
                tokens: Some(&tokens),
                ..CredentialFiles::default()
            },
        )
        .unwrap();
        assert!(server.token_required());
        serve(server)
    };
    let with_cert = ClientSecurity::with_token(&pki.client(true), None).unwrap();
    // The certificate's CN is `client`: a viewer may list, with no token.
    let addr = serve_with("cert:client,dash,viewer").await;
    assert!(!list_services(&with_cert, &addr).await.unwrap().is_empty());
    // As a worker, the same certificate may not use the client API.
    let addr = serve_with("cert:client,node-1,worker").await;
    let e = list_services(&with_cert, &addr).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("node-1 (worker)"), "{e:?}");
    // A certificate nobody named is no credential.
    let addr = serve_with("cert:someone-else,x,editor").await;
    let e = list_services(&with_cert, &addr).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

/// HTTP/1.1 clients (Python's `requests`, most KServe clients) ask for
/// `http/1.1` only: the TLS handshake must offer it beside `h2`.
#[tokio::test]
async fn tls_offers_http1_to_clients_that_ask_for_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = ServerSecurity::load(&pki.server(false), CredentialFiles::default()).unwrap();
    let addr = serve(server).await;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    for (offered, expected) in [(&b"http/1.1"[..], "HTTP/1.1 "), (&b"h2"[..], "")] {
        let mut config =
            tokio_rustls::rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
        config.alpn_protocols = vec![offered.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(offered));
        if expected.is_empty() {
            continue;
        }
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&answer).starts_with(expected),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
