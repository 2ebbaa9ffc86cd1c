//! Connecting to the coordinator and the explainer: eager connects with a
//! short timeout (so a missing server is one clear line), TLS and the bearer
//! token when configured, and message limits raised to [`MAX_MESSAGE_BYTES`].

use std::time::Duration;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::security::{AuthChannel, ClientSecurity};
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::server_info_client::ServerInfoClient;

use crate::error::{InputError, Unreachable, root_cause};

/// How long a connection attempt may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the servers are (normalised URIs, see [`crate::address`]) and how
/// to talk to them.
#[derive(Clone, Debug)]
pub struct Servers {
    /// The coordinator's URI.
    pub coordinator: String,
    /// The explainer's URI.
    pub explainer: String,
    /// TLS and bearer token settings for both.
    pub security: ClientSecurity,
}

impl Servers {
    /// Connects to the coordinator.
    pub async fn coordinator(&self) -> anyhow::Result<CoordinatorClient<AuthChannel>> {
        let channel = self.connect("coordinator", &self.coordinator).await?;
        Ok(CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Connects to the explainer.
    pub async fn explainer(&self) -> anyhow::Result<ExplainerClient<AuthChannel>> {
        let channel = self.connect("explainer", &self.explainer).await?;
        Ok(ExplainerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Connects to the ServerInfo service of `server` (a role name for
    /// messages) at `address`.
    pub async fn server_info(
        &self,
        server: &'static str,
        address: &str,
    ) -> anyhow::Result<ServerInfoClient<AuthChannel>> {
        let channel = self.connect(server, address).await?;
        Ok(ServerInfoClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Opens a channel to `address`, failing with [`Unreachable`] when
    /// nothing answers (or the TLS handshake fails).
    pub async fn connect(
        &self,
        server: &'static str,
        address: &str,
    ) -> anyhow::Result<AuthChannel> {
        let channel = connect(&self.security, server, address).await?;
        Ok(self.security.channel(channel))
    }
}

async fn connect(
    security: &ClientSecurity,
    server: &'static str,
    address: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = security
        .endpoint(address)
        .map_err(|e| InputError::new(format!("{server}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let connecting = endpoint.connect();
    // connect_timeout covers the TCP connect; this covers a peer that accepts
    // but never completes the HTTP/2 handshake.
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(Unreachable {
            server,
            address: address.to_string(),
            reason: root_cause(&e),
        }
        .into()),
        Err(_) => Err(Unreachable {
            server,
            address: address.to_string(),
            reason: format!("no answer within {} s", (CONNECT_TIMEOUT * 2).as_secs()),
        }
        .into()),
    }
}
