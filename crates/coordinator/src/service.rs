//! The tonic adapters: `Coordinator`, `WorkerLink` and `ServerInfo` over a
//! [`Cluster`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use camshaft_proto::v1::{
    self, coordinator_server, import_model_request::Part, server_info_server, worker_link_server,
    worker_message::Message as FromWorker,
};
use camshaft_proto::{ErrorKind, ModelRef, VersionSelector};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use camshaft_proto::roles::Principal;

use crate::cluster::{
    AttemptFailure, Claim, Cluster, Worker, WorkerStatus, parse_job_id, truncate_utf8,
};
use crate::{Error, jobs, registry};

/// Largest weights file `ImportModel` accepts.
pub(crate) const MAX_IMPORT_BYTES: u64 = 2 << 30;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Waits until an event log changes; `false` when its stream should end
/// instead: the log is gone, the client left, or the coordinator is
/// closing (the client is told to watch again with `after_sequence`).
async fn more_events<T, W>(
    changed: &mut watch::Receiver<W>,
    tx: &mpsc::Sender<Result<T, Status>>,
    closing: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        r = changed.changed() => r.is_ok(),
        _ = tx.closed() => false,
        () = async { let _ = closing.wait_for(|c| *c).await; } => {
            let _ = tx.send(Err(ErrorKind::Unavailable.status(
                "the coordinator is shutting down; watch again with after_sequence",
            ))).await;
            false
        }
    }
}

/// The client-facing API (`ctl`) and the workers' control streams, over one
/// [`Cluster`]. Cloned into each tonic service.
#[derive(Clone, Debug)]
pub struct CoordinatorService {
    cluster: Arc<Cluster>,
    /// Becomes true when the server drains: open streams end.
    closing: watch::Receiver<bool>,
}

impl CoordinatorService {
    /// The services over `cluster`; streams end when `closing` turns true.
    pub fn new(cluster: Arc<Cluster>, closing: watch::Receiver<bool>) -> Self {
        CoordinatorService { cluster, closing }
    }
}

/// Items of one page: from `token` (an offset; empty: the start), at most
/// `size` of them (0: 100, capped at 1 000) and at most `max_bytes` encoded
/// (at least one, so every page makes progress), and the token of the next
/// page (empty after the last).
fn page<T: prost::Message>(
    items: Vec<T>,
    size: u32,
    token: &str,
    max_bytes: u64,
) -> Result<(Vec<T>, String), Status> {
    let start: usize = if token.is_empty() {
        0
    } else {
        token.parse().map_err(|_| {
            Status::invalid_argument(format!("bad page_token {}", camshaft_proto::short(token)))
        })?
    };
    let size = if size == 0 {
        100
    } else {
        (size as usize).min(1_000)
    };
    let total = items.len();
    let mut bytes = 0u64;
    let items: Vec<T> = items
        .into_iter()
        .skip(start)
        .take(size)
        .take_while(|item| {
            let first = bytes == 0;
            bytes += item.encoded_len() as u64 + 8;
            first || bytes <= max_bytes
        })
        .collect();
    let next = if start + items.len() < total {
        (start + items.len()).to_string()
    } else {
        String::new()
    };
    Ok((items, next))
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for CoordinatorService {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let job = self
            .cluster
            .submit(
                request.spec.unwrap_or_default(),
                &principal.name,
                &request.request_id,
            )
            .await?;
        Ok(Response::new(v1::SubmitJobResponse { job: Some(job) }))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let job = self.cluster.job(&request.into_inner().job_id).await?;
        Ok(Response::new(v1::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let states = request.states();
        let states: Vec<v1::JobState> = states.collect();
        let records: Vec<_> = self
            .cluster
            .jobs()
            .await?
            .into_iter()
            .filter(|r| states.is_empty() || states.contains(&jobs::wire_state(r)))
            .collect();
        let jobs: Vec<v1::Job> = records
            .iter()
            .map(|r| {
                let mut job = jobs::to_wire(r, None)?;
                // No checkpoint is read per listed job: the epochs with a row.
                job.epochs_done = job
                    .history
                    .iter()
                    .map(|row| row.epoch + 1)
                    .max()
                    .unwrap_or(0);
                Ok(job)
            })
            .collect::<crate::Result<_>>()?;
        let (jobs, next_page_token) = page(
            jobs,
            request.page_size,
            &request.page_token,
            self.cluster.config().max_page_bytes,
        )?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        let job = self
            .cluster
            .cancel(&request.job_id, &request.reason, &principal.name)
            .await?;
        Ok(Response::new(v1::CancelJobResponse { job: Some(job) }))
    }

    type WatchJobStream = EventStream<v1::JobEvent>;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let request = request.into_inner();
        let log = self.cluster.job_log(&request.job_id).await?;
        let (tx, rx) = mpsc::channel(64);
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            let mut changed = log.subscribe();
            let mut seen = request.after_sequence;
            loop {
                changed.borrow_and_update();
                for event in log.after(seen) {
                    seen = event.sequence;
                    let is_log = matches!(event.event, Some(v1::job_event::Event::Log(_)));
                    if is_log && !request.include_logs {
                        continue;
                    }
                    let last = jobs::is_final(&event);
                    if tx.send(Ok(event)).await.is_err() || last {
                        return;
                    }
                }
                // Past the end of a finished job: nothing more will come.
                if log.is_finished() {
                    return;
                }
                if !more_events(&mut changed, &tx, &mut closing).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self
            .cluster
            .list_workers(request.into_inner().include_lost)
            .into_iter()
            .map(worker_info)
            .collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn list_models(
        &self,
        request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        let request = request.into_inner();
        let models = self
            .cluster
            .store()
            .list_models()
            .await
            .map_err(Error::from)?;
        let versions: Vec<v1::ModelVersion> = models
            .iter()
            .filter(|m| request.name.is_empty() || m.name == request.name)
            .flat_map(|m| m.versions.iter().map(|v| registry::to_wire(v, &m.aliases)))
            .collect::<crate::Result<_>>()?;
        let (versions, next_page_token) = page(
            versions,
            request.page_size,
            &request.page_token,
            self.cluster.config().max_page_bytes,
        )?;
        Ok(Response::new(v1::ListModelsResponse {
            versions,
            next_page_token,
        }))
    }

    async fn get_model(
        &self,
        request: Request<v1::GetModelRequest>,
    ) -> Result<Response<v1::GetModelResponse>, Status> {
        let reference =
            ModelRef::parse(&request.into_inner().model).map_err(camshaft_proto::Error::from)?;
        let store_ref = match &reference.selector {
            VersionSelector::Version(v) => {
                camshaft_store::ModelRef::Version(reference.name.clone(), *v)
            }
            VersionSelector::Alias(a) => {
                camshaft_store::ModelRef::Alias(reference.name.clone(), a.clone())
            }
            VersionSelector::Latest => camshaft_store::ModelRef::Alias(
                reference.name.clone(),
                camshaft_store::LATEST.to_string(),
            ),
        };
        let store = self.cluster.store();
        let version = store.get_model(&store_ref).await.map_err(Error::from)?;
        let models = store.list_models().await.map_err(Error::from)?;
        Ok(Response::new(v1::GetModelResponse {
            version: Some(registry::to_wire(
                &version,
                &registry::aliases_of(&models, &reference.name),
            )?),
        }))
    }

    async fn set_alias(
        &self,
        request: Request<v1::SetAliasRequest>,
    ) -> Result<Response<v1::SetAliasResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        camshaft_proto::validate_name(&request.name)?;
        camshaft_proto::validate_alias(&request.alias)?;
        let store = self.cluster.store();
        let previous_version = self
            .cluster
            .set_alias(
                &request.name,
                &request.alias,
                request.version,
                &principal.name,
            )
            .await?;
        let version = store
            .get_model(&camshaft_store::ModelRef::Version(
                request.name.clone(),
                request.version,
            ))
            .await
            .map_err(Error::from)?;
        let after = registry::aliases_of(
            &store.list_models().await.map_err(Error::from)?,
            &request.name,
        );
        tracing::info!(
            model = %request.name,
            alias = %request.alias,
            from = ?previous_version,
            to = request.version,
            %principal,
            "alias moved"
        );
        Ok(Response::new(v1::SetAliasResponse {
            version: Some(registry::to_wire(&version, &after)?),
            previous_version,
        }))
    }

    async fn delete_alias(
        &self,
        request: Request<v1::DeleteAliasRequest>,
    ) -> Result<Response<v1::DeleteAliasResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        camshaft_proto::validate_name(&request.name)?;
        camshaft_proto::validate_alias(&request.alias)?;
        let previous_version = self
            .cluster
            .remove_alias(&request.name, &request.alias, &principal.name)
            .await?;
        tracing::info!(model = %request.name, alias = %request.alias, from = previous_version, %principal, "alias removed");
        Ok(Response::new(v1::DeleteAliasResponse { previous_version }))
    }

    async fn delete_model(
        &self,
        request: Request<v1::DeleteModelRequest>,
    ) -> Result<Response<v1::DeleteModelResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        camshaft_proto::validate_name(&request.name)?;
        let store = self.cluster.store();
        let aliases = registry::aliases_of(
            &store.list_models().await.map_err(Error::from)?,
            &request.name,
        );
        let pointing: Vec<String> = aliases
            .iter()
            .filter(|(a, v)| **v == request.version && a.as_str() != camshaft_store::LATEST)
            .map(|(a, _)| a.clone())
            .collect();
        if !pointing.is_empty() && !request.force {
            return Err(ErrorKind::FailedPrecondition.status(format!(
                "{}:{} is aliased as {}; move the aliases or delete with force",
                request.name,
                request.version,
                pointing.join(", ")
            )));
        }
        for alias in &pointing {
            self.cluster
                .remove_alias(&request.name, alias, &principal.name)
                .await?;
        }
        store
            .delete_model_version(&request.name, request.version)
            .await
            .map_err(Error::from)?;
        let events = self.cluster.model_events();
        events.push(v1::model_event::Event::VersionDeleted(
            v1::ModelVersionDeleted {
                name: request.name.clone(),
                version: request.version,
                removed_aliases: pointing.clone(),
            },
        ));
        // `latest` moved to the highest version left (or went with the last).
        let latest = camshaft_store::LATEST;
        if aliases.get(latest) == Some(&request.version) {
            let now = registry::aliases_of(
                &store.list_models().await.map_err(Error::from)?,
                &request.name,
            )
            .get(latest)
            .copied();
            events.push(v1::model_event::Event::AliasChanged(v1::AliasChange {
                name: request.name.clone(),
                alias: latest.into(),
                from_version: Some(request.version),
                to_version: now,
                changed_by: principal.name.clone(),
                unix_ms: camshaft_proto::now_unix_ms(),
                revision: 0,
            }));
        }
        tracing::info!(model = %request.name, version = request.version, %principal, "model version deleted");
        Ok(Response::new(v1::DeleteModelResponse {
            removed_aliases: pointing,
        }))
    }

    async fn import_model(
        &self,
        request: Request<Streaming<v1::ImportModelRequest>>,
    ) -> Result<Response<v1::ImportModelResponse>, Status> {
        let principal = Principal::of(&request);
        let mut parts = request.into_inner();
        let header = match parts.message().await? {
            Some(v1::ImportModelRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first ImportModel message must be the header",
                ));
            }
        };
        camshaft_proto::validate_name(&header.name)?;
        let limits = &self.cluster.config().model_limits;
        registry::check_aliases(&header.aliases, limits)?;
        registry::check_tags("header.tags", &header.tags)?;
        registry::check_description("header.description", &header.description)?;
        let spec = header.spec.as_ref().ok_or_else(|| Error::InvalidField {
            field: "header.spec".into(),
            reason: "a model version needs its spec".into(),
        })?;
        let spec = registry::spec_from_wire(spec)?;
        // Refused before a byte of the upload is read.
        registry::check_spec(&spec, limits)?;
        let format = header.format();
        if !matches!(
            format,
            v1::WeightsFormat::Safetensors | v1::WeightsFormat::Pth
        ) {
            return Err(camshaft_proto::invalid_field(
                "header.format",
                "format must be safetensors or pth (a torch.save state dict)",
            ));
        }
        if header.size_bytes > MAX_IMPORT_BYTES {
            return Err(Status::invalid_argument(format!(
                "weights of {} bytes are over the import limit of {MAX_IMPORT_BYTES}",
                header.size_bytes
            )));
        }
        let weights = receive_blob(&mut parts, header.size_bytes, &header.sha256, |p| {
            match p.part {
                Some(Part::Chunk(chunk)) => Some(chunk),
                _ => None,
            }
        })
        .await?;
        let weights = registry::stored_weights(format, weights)?;
        registry::check_registrable(&spec, &weights, limits)?;
        let lineage = v1::Lineage {
            dataset: header.dataset.clone(),
            metrics: header.metrics.clone(),
            created_unix_ms: camshaft_proto::now_unix_ms(),
            imported_from: header.file_name.clone(),
            created_by: principal.name.clone(),
            ..Default::default()
        };
        let version = self
            .cluster
            .register(
                &header.name,
                spec,
                lineage,
                weights,
                &header.aliases,
                (&header.tags, &header.description),
            )
            .await?;
        tracing::info!(model = %format!("{}:{}", version.name, version.version), %principal, "model imported");
        Ok(Response::new(v1::ImportModelResponse {
            version: Some(version),
        }))
    }

    async fn get_alias_history(
        &self,
        request: Request<v1::GetAliasHistoryRequest>,
    ) -> Result<Response<v1::GetAliasHistoryResponse>, Status> {
        let request = request.into_inner();
        camshaft_proto::validate_name(&request.name)?;
        if !request.alias.is_empty() {
            camshaft_proto::validate_alias(&request.alias)?;
        }
        let alias = (!request.alias.is_empty()).then_some(request.alias.as_str());
        let history = self
            .cluster
            .store()
            .alias_history(&request.name, alias)
            .await
            .map_err(Error::from)?;
        let newest_first: Vec<v1::AliasChange> = history
            .iter()
            .rev()
            .map(crate::model_events::wire_change)
            .collect();
        let (changes, next_page_token) = page(
            newest_first,
            request.page_size,
            &request.page_token,
            self.cluster.config().max_page_bytes,
        )?;
        Ok(Response::new(v1::GetAliasHistoryResponse {
            changes,
            next_page_token,
        }))
    }

    type WatchModelsStream = EventStream<v1::ModelEvent>;

    async fn watch_models(
        &self,
        request: Request<v1::WatchModelsRequest>,
    ) -> Result<Response<Self::WatchModelsStream>, Status> {
        let request = request.into_inner();
        if !request.name.is_empty() {
            camshaft_proto::validate_name(&request.name)?;
        }
        let cluster = Arc::clone(&self.cluster);
        let (tx, rx) = mpsc::channel(64);
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            let log = cluster.model_events();
            let mut changed = log.subscribe();
            // 0: only what happens from now on; another run's sequence (or
            // a replay): everything this run kept.
            let other_run = !request.stream_id.is_empty() && request.stream_id != log.stream_id();
            let mut seen = if request.replay_retained || other_run {
                0
            } else if request.after_sequence == 0 {
                log.last_sequence()
            } else {
                request.after_sequence
            };
            loop {
                changed.borrow_and_update();
                for event in log.after(seen) {
                    seen = event.sequence;
                    let wanted = request.name.is_empty()
                        || crate::model_events::name_of(&event) == request.name;
                    if wanted && tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if !more_events(&mut changed, &tx, &mut closing).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_model_version(
        &self,
        request: Request<v1::UpdateModelVersionRequest>,
    ) -> Result<Response<v1::UpdateModelVersionResponse>, Status> {
        let principal = Principal::of(&request);
        let request = request.into_inner();
        camshaft_proto::validate_name(&request.name)?;
        if request.version == 0 {
            return Err(camshaft_proto::invalid_field(
                "version",
                "version must be ≥ 1",
            ));
        }
        if request.remove_tags.len() > registry::MAX_TAGS {
            return Err(camshaft_proto::invalid_field(
                "remove_tags",
                format!(
                    "{} tag keys to remove; a version has at most {}",
                    request.remove_tags.len(),
                    registry::MAX_TAGS
                ),
            ));
        }
        let version = self
            .cluster
            .update_version(
                &request.name,
                request.version,
                &request.remove_tags,
                &request.set_tags,
                request.description.as_deref(),
            )
            .await?;
        tracing::info!(model = %request.name, version = request.version, tags = version.tags.len(), %principal, "model version updated");
        Ok(Response::new(v1::UpdateModelVersionResponse {
            version: Some(version),
        }))
    }
}

/// The chunks after a header, checked against the header's size and sha256
/// (an empty sha256 skips that check). `chunk_of` gives a message's chunk,
/// `None` for anything else (refused).
async fn receive_blob<M>(
    parts: &mut Streaming<M>,
    size: u64,
    sha256: &str,
    chunk_of: impl Fn(M) -> Option<bytes::Bytes>,
) -> Result<bytes::Bytes, Status> {
    // Grown as bytes arrive, never sized from the (untrusted) header.
    let mut blob = Vec::new();
    while let Some(part) = parts.message().await? {
        let chunk = chunk_of(part)
            .ok_or_else(|| Status::invalid_argument("only chunks may follow the header"))?;
        if blob.len() as u64 + chunk.len() as u64 > size {
            return Err(Status::invalid_argument(format!(
                "more bytes arrived than the header's size_bytes {size}"
            )));
        }
        blob.extend_from_slice(&chunk);
    }
    if blob.len() as u64 != size {
        return Err(Status::invalid_argument(format!(
            "the upload ended after {} of {size} bytes",
            blob.len()
        )));
    }
    let sha = hex::encode(Sha256::digest(&blob));
    if !sha256.is_empty() && !sha256.eq_ignore_ascii_case(&sha) {
        return Err(Status::invalid_argument(format!(
            "the uploaded bytes have sha256 {sha}, not the header's {sha256}"
        )));
    }
    Ok(blob.into())
}

#[tonic::async_trait]
impl worker_link_server::WorkerLink for CoordinatorService {
    async fn put_checkpoint(
        &self,
        request: Request<Streaming<v1::CheckpointPart>>,
    ) -> Result<Response<v1::CheckpointStored>, Status> {
        use v1::checkpoint_part::Part as CPart;
        let mut parts = request.into_inner();
        let header = match parts.message().await? {
            Some(v1::CheckpointPart {
                part: Some(CPart::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the header",
                ));
            }
        };
        let job = parse_job_id(&header.job_id)?;
        self.cluster
            .check_attempt_secret(job, header.attempt, &header.attempt_secret)
            .inspect_err(|e| tracing::warn!(job_id = %job, attempt = header.attempt, error = %e, "checkpoint upload refused"))?;
        if !self.cluster.is_current(job, header.attempt).await? {
            return Err(ErrorKind::FailedPrecondition.status(format!(
                "attempt {} of job {job} is not running; its checkpoint is refused",
                header.attempt
            )));
        }
        let max = self.cluster.config().max_checkpoint_bytes;
        if header.size_bytes > max {
            return Err(Status::invalid_argument(format!(
                "a checkpoint of {} bytes is over max_checkpoint_bytes ({max})",
                header.size_bytes
            )));
        }
        let meta: serde_json::Value = serde_json::from_str(&header.meta_json)
            .map_err(|e| Status::invalid_argument(format!("meta_json is not JSON: {e}")))?;
        let blob = receive_blob(&mut parts, header.size_bytes, &header.sha256, |p| {
            match p.part {
                Some(CPart::Chunk(chunk)) => Some(chunk),
                _ => None,
            }
        })
        .await?;
        let manifest = self
            .cluster
            .store()
            .put_checkpoint(job, header.epochs_done, meta, blob)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::CheckpointStored {
            checkpoint_id: manifest.id.to_string(),
            size_bytes: manifest.blob.size,
            sha256: manifest.blob.sha256,
        }))
    }

    type GetCheckpointStream = EventStream<v1::CheckpointPart>;

    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<Self::GetCheckpointStream>, Status> {
        let request = request.into_inner();
        let job = parse_job_id(&request.job_id)?;
        self.cluster
            .check_attempt_secret(job, request.attempt, &request.attempt_secret)
            .inspect_err(|e| tracing::warn!(job_id = %job, attempt = request.attempt, error = %e, "checkpoint read refused"))?;
        let id: u64 = request.checkpoint_id.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "{} is not a checkpoint id",
                camshaft_proto::short(&request.checkpoint_id)
            ))
        })?;
        let checkpoint = self
            .cluster
            .store()
            .get_checkpoint(job, id)
            .await
            .map_err(Error::from)?;
        let header = v1::CheckpointHeader {
            job_id: job.to_string(),
            attempt: 0,
            epochs_done: checkpoint.manifest.epoch,
            meta_json: checkpoint.manifest.meta.to_string(),
            size_bytes: 0,
            sha256: checkpoint.manifest.blob.sha256.clone(),
            checkpoint_id: id.to_string(),
            attempt_secret: Default::default(),
        };
        let parts = v1::CheckpointPart::stream_parts(header, checkpoint.blob);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            parts.into_iter().map(Ok),
        ))))
    }

    type AttachStream = EventStream<v1::CoordinatorMessage>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer_ip = request.remote_addr().map(|a| a.ip());
        let principal = Principal::of(&request);
        let mut inbound = request.into_inner();
        let ttl = self.cluster.config().lease_ttl();
        let register = match tokio::time::timeout(ttl, inbound.message()).await {
            Ok(Ok(Some(v1::WorkerMessage {
                message: Some(FromWorker::Register(r)),
            }))) => r,
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no Register within the lease TTL",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be Register",
                ));
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, conn) = self
            .cluster
            .register_worker(register, &principal.name, tx.clone(), peer_ip)
            .await?;
        let cluster = Arc::clone(&self.cluster);
        tokio::spawn(async move {
            let reason = loop {
                let message = match tokio::time::timeout(ttl, inbound.message()).await {
                    Err(_) => {
                        break format!("no message for {} ms (lease expired)", ttl.as_millis());
                    }
                    Ok(Err(status)) => break format!("stream broke: {}", status.message()),
                    Ok(Ok(None)) => break "stream closed".to_string(),
                    Ok(Ok(Some(m))) => m,
                };
                cluster.heartbeat(&id, conn).await;
                if let Some(message) = message.message {
                    match handle(&cluster, &id, conn, message).await {
                        Ok(()) => {}
                        Err(e @ Error::PermissionDenied(_)) => {
                            tracing::warn!(worker_id = %id, %principal, error = %e, "refused a worker message; closing its stream");
                            let _ = tx.send(Err(e.into()));
                            break "it sent a message about work it was not given".to_string();
                        }
                        Err(e) => {
                            tracing::error!(worker_id = %id, error = %e, "handling a worker message failed");
                        }
                    }
                }
            };
            cluster.worker_gone(&id, conn, &reason).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// One message of a worker, after `Register`. A message about a rank the
/// stream runs is acted on; one about an attempt it ran before is dropped;
/// anything else is PERMISSION_DENIED (and changes nothing). Reports that
/// only rank 0 makes (epoch and all-reduce rows, checkpoints) are refused
/// from other ranks.
async fn handle(
    cluster: &Arc<Cluster>,
    worker: &str,
    conn: u64,
    message: FromWorker,
) -> crate::Result<()> {
    let not_given = |job_id: &str| {
        Error::PermissionDenied(format!(
            "worker {worker} was not given job {}",
            camshaft_proto::short(job_id)
        ))
    };
    // The job and claim of a message about `rank` of `attempt` (one only
    // rank 0 sends when `rank0_only`).
    let about = |job_id: &str, attempt: u32, rank: u32, rank0_only: bool| {
        let job = parse_job_id(job_id).map_err(|_| not_given(job_id))?;
        if rank0_only && rank != 0 {
            return Err(Error::PermissionDenied(format!(
                "only rank 0 reports for the group, not rank {rank}"
            )));
        }
        Ok::<_, Error>((job, cluster.claim(worker, conn, job, attempt, rank)?))
    };
    match message {
        FromWorker::Register(_) => {
            tracing::warn!(worker_id = %worker, "a second Register on one stream is ignored");
        }
        FromWorker::Heartbeat(_) => {}
        FromWorker::RendezvousOffer(offer) => {
            if let (_, Claim::Current) = about(&offer.job_id, offer.attempt, offer.rank, false)? {
                cluster.rendezvous_offer(worker, offer)?;
            }
        }
        FromWorker::EpochReport(report) => {
            if let (job, Claim::Current) = about(&report.job_id, report.attempt, report.rank, true)?
            {
                let row = report.metrics.unwrap_or_default();
                cluster.epoch_done(job, report.attempt, row.clone()).await?;
                crate::tensorboard::record_epoch(cluster, job, row).await;
            }
        }
        FromWorker::AllreduceReport(report) => {
            if let (job, Claim::Current) = about(&report.job_id, report.attempt, report.rank, true)?
            {
                let row = report.row.unwrap_or_default();
                cluster.allreduce_row(job, report.attempt, row).await?;
            }
        }
        FromWorker::CheckpointWritten(c) => {
            if let (_, Claim::Current) = about(&c.job_id, c.attempt, c.rank, true)? {
                tracing::info!(job_id = %c.job_id, checkpoint = %c.checkpoint_id, epochs_done = c.epochs_done, "checkpoint written");
            }
        }
        FromWorker::TaskFailed(f) => {
            if let (job, Claim::Current) = about(&f.job_id, f.attempt, f.rank, false)? {
                let kind = match f.kind() {
                    v1::FailureKind::CollectiveTimeout => v1::FailureKind::CollectiveTimeout,
                    _ => v1::FailureKind::TaskError,
                };
                let mut reason = f.reason;
                truncate_utf8(&mut reason, cluster.config().max_log_line_bytes as usize);
                let failure = AttemptFailure {
                    kind,
                    rank: Some(f.rank),
                    worker: Some(worker.to_string()),
                    reason,
                    epoch: f.epoch,
                    retryable: f.retryable,
                };
                cluster.fail_attempt(job, f.attempt, failure).await?;
            }
        }
        FromWorker::TaskDone(done) => {
            if let (job, Claim::Current) = about(&done.job_id, done.attempt, done.rank, false)? {
                cluster.rank_done(job, done).await?;
            }
        }
        FromWorker::Log(line) => {
            // A log line names no attempt: it belongs to the one the
            // stream runs now.
            let job = parse_job_id(&line.job_id).map_err(|_| not_given(&line.job_id))?;
            let attempt = cluster.current_attempt_of(worker, conn, job, line.rank)?;
            cluster.rank_log(
                job,
                attempt,
                v1::LogLine {
                    level: line.level,
                    rank: line.rank,
                    worker_id: worker.to_string(),
                    message: line.message,
                },
            );
        }
        FromWorker::Drain(mut d) => {
            truncate_utf8(&mut d.reason, cluster.config().max_log_line_bytes as usize);
            tracing::info!(worker_id = %worker, reason = %d.reason, "worker draining");
            cluster.drain(worker, conn, &d.reason).await?;
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl server_info_server::ServerInfo for CoordinatorService {
    async fn get_server_info(
        &self,
        _request: Request<v1::GetServerInfoRequest>,
    ) -> Result<Response<v1::GetServerInfoResponse>, Status> {
        let (live_workers, active_jobs, store_healthy) = self.cluster.counts().await;
        Ok(Response::new(v1::GetServerInfoResponse {
            roles: vec![v1::ServerRole::Coordinator as i32],
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: self.cluster.started_unix_ms,
            store: self.cluster.store().describe(),
            store_healthy,
            live_workers,
            active_jobs,
            ..Default::default()
        }))
    }
}

/// The wire form of a worker.
fn worker_info(w: Worker) -> v1::WorkerInfo {
    let (job_id, ranks) = match w.task {
        Some(task) => (task.job.to_string(), task.ranks),
        None => (String::new(), Vec::new()),
    };
    let state = match w.status {
        WorkerStatus::Idle => v1::WorkerState::Idle,
        WorkerStatus::Busy => v1::WorkerState::Busy,
        WorkerStatus::Draining => v1::WorkerState::Draining,
        WorkerStatus::Lost => v1::WorkerState::Lost,
    };
    v1::WorkerInfo {
        worker_id: w.id,
        hostname: w.hostname,
        devices: w.devices,
        state: state as i32,
        job_id,
        ranks,
        registered_unix_ms: w.registered_unix_ms,
        last_heartbeat_unix_ms: w.last_heartbeat_unix_ms,
        lease_expires_unix_ms: w.lease_expires_unix_ms,
        version: w.version,
        labels: w.labels,
    }
}

/// How long a draining server waits for open calls before it stops anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);
