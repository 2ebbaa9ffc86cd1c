//! Checkpoints go to the store through the coordinator
//! (`WorkerLink.PutCheckpoint` / `GetCheckpoint`): a worker needs no store
//! of its own, and the coordinator refuses a write from a stale attempt.

use camshaft_proto::v1::worker_link_client::WorkerLinkClient;
use camshaft_proto::v1::{
    Assignment, CheckpointHeader, CheckpointPart, GetCheckpointRequest, checkpoint_part,
};
use camshaft_proto::{MAX_MESSAGE_BYTES, bytes::Bytes};
use std::time::Duration;

use camshaft_proto::security::AuthChannel;

/// How long checkpoint calls keep retrying an unavailable coordinator.
const PATIENCE: Duration = Duration::from_secs(120);

/// A stored checkpoint: the learner's metadata and the bundle of its files.
#[derive(Debug)]
pub struct StoredCheckpoint {
    /// The learner's `checkpoint.json`.
    pub meta: serde_json::Value,
    /// The weights and optimiser files, as a [`camshaft_store::bundle`].
    pub blob: Bytes,
}

/// The coordinator's checkpoint calls, usable from a rank's (non-async)
/// thread.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    client: WorkerLinkClient<AuthChannel>,
    runtime: tokio::runtime::Handle,
}

impl Checkpoints {
    /// Calls over `channel` (the worker's connection to the coordinator),
    /// driven by `runtime`.
    pub fn new(channel: AuthChannel, runtime: tokio::runtime::Handle) -> Self {
        let client = WorkerLinkClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Checkpoints { client, runtime }
    }

    /// Stores a checkpoint of `assignment`'s attempt (proved by its
    /// `attempt_secret`); returns its id. Blocking.
    pub fn put(
        &self,
        assignment: &Assignment,
        epochs_done: u64,
        meta: &serde_json::Value,
        blob: Bytes,
    ) -> Result<camshaft_proto::v1::CheckpointStored, tonic::Status> {
        let header = CheckpointHeader {
            job_id: assignment.job_id.clone(),
            attempt: assignment.attempt,
            epochs_done,
            meta_json: meta.to_string(),
            sha256: String::new(),
            attempt_secret: assignment.attempt_secret.clone(),
            ..Default::default()
        };
        let parts = CheckpointPart::stream_parts(header, blob);
        self.patiently("storing a checkpoint", || {
            let mut client = self.client.clone();
            let parts = parts.clone();
            async move {
                Ok(client
                    .put_checkpoint(tokio_stream::iter(parts))
                    .await?
                    .into_inner())
            }
        })
    }

    /// Runs `call` until it succeeds, fails with another code than
    /// UNAVAILABLE (the coordinator or its store restarting), or
    /// [`PATIENCE`] has passed, backing off from 200 ms to 5 s. Blocking.
    fn patiently<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.runtime.block_on(call()) {
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() + backoff < deadline =>
                {
                    tracing::warn!(%what, reason = %s.message(), "coordinator unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// Reads checkpoint `id` of `assignment`'s job (for its attempt, proved
    /// by its `attempt_secret`). Blocking.
    pub fn get(
        &self,
        assignment: &Assignment,
        id: &str,
    ) -> Result<StoredCheckpoint, tonic::Status> {
        self.patiently("reading a checkpoint", || self.get_once(assignment, id))
    }

    async fn get_once(
        &self,
        assignment: &Assignment,
        id: &str,
    ) -> Result<StoredCheckpoint, tonic::Status> {
        let mut client = self.client.clone();
        let job_id = &assignment.job_id;
        let request = GetCheckpointRequest {
            job_id: job_id.clone(),
            checkpoint_id: id.to_string(),
            attempt: assignment.attempt,
            attempt_secret: assignment.attempt_secret.clone(),
        };
        {
            let mut parts = client.get_checkpoint(request).await?.into_inner();
            let header = match parts.message().await? {
                Some(CheckpointPart {
                    part: Some(checkpoint_part::Part::Header(h)),
                }) => h,
                _ => {
                    return Err(tonic::Status::data_loss(
                        "the checkpoint stream has no header",
                    ));
                }
            };
            let mut blob = Vec::new();
            while let Some(part) = parts.message().await? {
                if let Some(checkpoint_part::Part::Chunk(chunk)) = part.part {
                    blob.extend_from_slice(&chunk);
                }
            }
            if blob.len() as u64 != header.size_bytes {
                return Err(tonic::Status::data_loss(format!(
                    "checkpoint {id} of {job_id}: {} of {} bytes arrived",
                    blob.len(),
                    header.size_bytes
                )));
            }
            let meta = serde_json::from_str(&header.meta_json).map_err(|e| {
                tonic::Status::data_loss(format!("checkpoint {id} of {job_id}: bad metadata: {e}"))
            })?;
            Ok(StoredCheckpoint {
                meta,
                blob: blob.into(),
            })
        }
    }
}
