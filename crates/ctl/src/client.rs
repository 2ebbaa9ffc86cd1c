//! Connecting to the coordinator and the explainer: eager connects with a
//! short timeout (so a missing server is one clear line), and message limits
//! raised to [`MAX_MESSAGE_BYTES`].

use std::time::Duration;

use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::server_info_client::ServerInfoClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{InputError, Unreachable, root_cause};

/// How long a connection attempt may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the servers are (normalised URIs, see [`crate::address`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Servers {
    /// The coordinator's URI.
    pub coordinator: String,
    /// The explainer's URI.
    pub explainer: String,
}

impl Servers {
    /// Connects to the coordinator.
    pub async fn coordinator(&self) -> anyhow::Result<CoordinatorClient<Channel>> {
        let channel = connect("coordinator", &self.coordinator).await?;
        Ok(CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Connects to the explainer.
    pub async fn explainer(&self) -> anyhow::Result<ExplainerClient<Channel>> {
        let channel = connect("explainer", &self.explainer).await?;
        Ok(ExplainerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Connects to the ServerInfo service of `server` (a role name for messages) at `address`.
pub async fn server_info(
    server: &'static str,
    address: &str,
) -> anyhow::Result<ServerInfoClient<Channel>> {
    let channel = connect(server, address).await?;
    Ok(ServerInfoClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Opens a channel to `address`, failing with [`Unreachable`] when nothing answers.
pub async fn connect(server: &'static str, address: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| InputError::new(format!("bad {server} address {address:?}: {e}")))?
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
