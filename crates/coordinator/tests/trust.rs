//! The coordinator's trust boundaries over real gRPC on loopback: roles on
//! every RPC, `WorkerLink` streams bound to what they were assigned, the
//! attempt secret on checkpoints, and the bounds on what one caller can
//! make the coordinator keep.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use camshaft_coordinator::{Config, ServerConfig, serve};
use camshaft_proto::security::{AuthChannel, ClientSecurity, TlsConfig};
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::worker_link_client::WorkerLinkClient;
use camshaft_proto::v1::{
    self, CoordinatorMessage, WorkerMessage, coordinator_message::Message as ToWorker,
    worker_message::Message as FromWorker,
};
use camshaft_store::{EmbeddedConfig, EmbeddedStore, Store};
use proptest::prelude::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const EDITOR: &str = "editor-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const NODE_A: &str = "node-a-token-0123456789";
const NODE_B: &str = "node-b-token-0123456789";
const ROGUE: &str = "rogue-token-01234567890";

/// A coordinator on loopback over an embedded store, with a tokens file of
/// an editor (`alice`), a viewer (`val`) and three workers.
struct Server {
    addr: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(change: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        format!(
            "{EDITOR},alice,editor\n{VIEWER},val,viewer\n{NODE_A},node-a,worker\n\
             {NODE_B},node-b,worker\n{ROGUE},rogue,worker\n"
        ),
    )
    .unwrap();
    let mut config = Config {
        server: ServerConfig {
            auth_tokens_file: Some(tokens),
            ..ServerConfig::default()
        },
        ..Config::default()
    };
    change(&mut config);
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store")))
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(config, Arc::clone(&store), listener, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        store,
        _dir: dir,
        _stop: stop,
    }
}

async fn channel(addr: &str, token: Option<&str>) -> AuthChannel {
    let security = ClientSecurity::with_token(&TlsConfig::default(), token).unwrap();
    let channel = security.endpoint(addr).unwrap().connect().await.unwrap();
    security.channel(channel)
}

async fn client(addr: &str, token: Option<&str>) -> CoordinatorClient<AuthChannel> {
    CoordinatorClient::new(channel(addr, token).await)
}

/// An attached worker stream: what it sends, what it is told.
struct Worker {
    tx: mpsc::Sender<WorkerMessage>,
    rx: Streaming<CoordinatorMessage>,
}

impl Worker {
    async fn attach(addr: &str, token: &str, id: &str) -> Result<Worker, tonic::Status> {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(message(FromWorker::Register(v1::Register {
            worker_id: id.to_string(),
            hostname: "test".into(),
            devices: vec![v1::Device {
                kind: v1::DeviceKind::Cpu as i32,
                name: "cpu".into(),
                ..Default::default()
            }],
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })))
        .await
        .unwrap();
        let mut link = WorkerLinkClient::new(channel(addr, Some(token)).await);
        let mut rx = link.attach(ReceiverStream::new(rx)).await?.into_inner();
        match rx.message().await? {
            Some(CoordinatorMessage {
                message: Some(ToWorker::Registered(r)),
            }) => {
                assert!(id.is_empty() || r.worker_id == id);
                Ok(Worker { tx, rx })
            }
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    async fn send(&self, m: FromWorker) {
        // A closed stream is what some tests expect; they check it apart.
        let _ = self.tx.send(message(m)).await;
    }

    /// The next Assignment (skipping anything else), within 10 s.
    async fn assignment(&mut self) -> v1::Assignment {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.rx.message().await.unwrap() {
                    Some(CoordinatorMessage {
                        message: Some(ToWorker::Assignment(a)),
                    }) => return a,
                    Some(_) => continue,
                    None => panic!("the stream ended before an assignment"),
                }
            }
        })
        .await
        .unwrap()
    }

    /// How the stream ends (within `wait`): the error, or `None` if it is
    /// still open then.
    async fn ended_within(&mut self, wait: Duration) -> Option<tonic::Status> {
        tokio::time::timeout(wait, async {
            loop {
                match self.rx.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return tonic::Status::ok("closed"),
                    Err(e) => return e,
                }
            }
        })
        .await
        .ok()
    }
}

fn message(m: FromWorker) -> WorkerMessage {
    WorkerMessage { message: Some(m) }
}

/// An all-reduce sweep on two CPU workers: it registers nothing, so it
/// succeeds once its ranks are done.
fn sweep() -> v1::JobSpec {
    v1::JobSpec {
        name: "sweep".into(),
        workers: 2,
        device: v1::DeviceKind::Cpu as i32,
        collective_bench: Some(v1::CollectiveBench {
            min_bytes: 1024,
            max_bytes: 1024,
            iters: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn submit(addr: &str, spec: v1::JobSpec) -> Result<v1::Job, tonic::Status> {
    Ok(client(addr, Some(EDITOR))
        .await
        .submit_job(v1::SubmitJobRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap())
}

/// Everything a stranger could change: every job record (its revision
/// moves with any write) and every model.
async fn snapshot(store: &Arc<dyn Store>) -> String {
    let jobs = store.list_jobs().await.unwrap();
    let models = store.list_models().await.unwrap();
    format!("{jobs:?}\n{models:?}")
}

#[tokio::test]
async fn every_rpc_checks_the_callers_role() {
    let s = start(|_| {}).await;
    let code = |r: Result<tonic::Response<v1::ListJobsResponse>, tonic::Status>| {
        r.map_or_else(|e| e.code(), |_| Code::Ok)
    };
    let list = v1::ListJobsRequest::default();
    assert_eq!(
        code(
            client(&s.addr, Some(VIEWER))
                .await
                .list_jobs(list.clone())
                .await
        ),
        Code::Ok
    );
    assert_eq!(
        code(
            client(&s.addr, Some(NODE_A))
                .await
                .list_jobs(list.clone())
                .await
        ),
        Code::PermissionDenied,
        "a worker credential is refused on the client API"
    );
    assert_eq!(
        code(client(&s.addr, None).await.list_jobs(list.clone()).await),
        Code::Unauthenticated
    );
    let e = client(&s.addr, Some(VIEWER))
        .await
        .submit_job(v1::SubmitJobRequest {
            request_id: String::new(),
            spec: Some(sweep()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("val (viewer)"), "{e:?}");
    let e = Worker::attach(&s.addr, EDITOR, "").await.err().unwrap();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a client token is refused on WorkerLink"
    );
    let job = submit(&s.addr, sweep()).await.unwrap();
    assert_eq!(job.created_by, "alice");
    // A job whose model could not be registered is refused before it trains.
    let too_big = v1::JobSpec {
        dataset: Some(v1::DatasetSpec {
            kind: v1::DatasetKind::Synthetic as i32,
            ..Default::default()
        }),
        arch: v1::Arch::Resnet18 as i32,
        head: v1::Head::Cam as i32,
        image_size: 2000,
        epochs: 1,
        ..Default::default()
    };
    let e = submit(&s.addr, too_big).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("max_input_size"), "{e:?}");
}

#[tokio::test]
async fn lost_workers_are_forgotten_after_their_ttl() {
    let s = start(|c| c.lost_worker_ttl_ms = 300).await;
    let lost = |include_lost| {
        let addr = s.addr.clone();
        async move {
            client(&addr, Some(VIEWER))
                .await
                .list_workers(v1::ListWorkersRequest { include_lost })
                .await
                .unwrap()
                .into_inner()
                .workers
                .len()
        }
    };
    drop(Worker::attach(&s.addr, NODE_A, "gone-1").await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((lost(false).await, lost(true).await), (0, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lost(true).await, 0, "forgotten after lost_worker_ttl_ms");
    // Its id is free again, for anyone with a worker credential.
    Worker::attach(&s.addr, ROGUE, "gone-1").await.unwrap();
}

#[tokio::test]
async fn a_worker_id_stays_with_its_principal() {
    let s = start(|_| {}).await;
    let a = Worker::attach(&s.addr, NODE_A, "node-a-1").await.unwrap();
    let e = Worker::attach(&s.addr, ROGUE, "node-a-1")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The owner itself may reconnect under its id.
    drop(a);
    Worker::attach(&s.addr, NODE_A, "node-a-1").await.unwrap();
}

/// Messages a stream that was assigned nothing might send about the job
/// `job` of attempt 1 (or anything else).
fn hostile_message(job: String) -> impl Strategy<Value = FromWorker> {
    let job_id = prop_oneof![Just(job), Just("j-999".to_string()), "[a-z0-9-]{0,8}"];
    (job_id, 0u32..3, 0u32..3, any::<bool>()).prop_flat_map(|(job_id, attempt, rank, flag)| {
        let j = job_id.clone();
        prop_oneof![
            Just(FromWorker::TaskFailed(v1::TaskFailed {
                job_id: j.clone(),
                attempt,
                rank,
                reason: "pwned".into(),
                retryable: flag,
                ..Default::default()
            })),
            Just(FromWorker::TaskDone(v1::TaskDone {
                job_id: j.clone(),
                attempt,
                rank,
                final_checkpoint_id: "1".into(),
                ..Default::default()
            })),
            Just(FromWorker::EpochReport(v1::EpochReport {
                job_id: j.clone(),
                attempt,
                rank,
                metrics: Some(v1::EpochMetrics {
                    accuracy: 1.0,
                    ..Default::default()
                }),
            })),
            Just(FromWorker::AllreduceReport(v1::AllReduceReport {
                job_id: j.clone(),
                attempt,
                rank,
                row: Some(v1::AllReduceRow::default()),
            })),
            Just(FromWorker::RendezvousOffer(v1::RendezvousOffer {
                job_id: j.clone(),
                attempt,
                rank,
                nccl_unique_id: vec![7; 128].into(),
                ring_address: "10.0.0.66:1".into(),
            })),
            Just(FromWorker::Log(v1::WorkerLog {
                job_id: j.clone(),
                rank,
                level: "error".into(),
                message: "x".repeat(10_000),
            })),
            Just(FromWorker::CheckpointWritten(v1::CheckpointWritten {
                job_id: j,
                attempt,
                rank,
                checkpoint_id: "1".into(),
                ..Default::default()
            })),
            Just(FromWorker::Heartbeat(v1::Heartbeat::default())),
        ]
    })
}

#[test]
fn a_stream_that_owns_no_assignment_changes_nothing_and_a_job_needs_every_rank() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s, mut a, mut b, job) = runtime.block_on(async {
        let s = start(|_| {}).await;
        let mut a = Worker::attach(&s.addr, NODE_A, "").await.unwrap();
        let mut b = Worker::attach(&s.addr, NODE_B, "").await.unwrap();
        let job = submit(&s.addr, sweep()).await.unwrap().id;
        let (x, y) = (a.assignment().await, b.assignment().await);
        assert_eq!((x.job_id.as_str(), x.attempt), (job.as_str(), 1));
        assert_eq!(x.world_size, 2);
        assert!(
            x.attempt_secret.len() >= 16,
            "the attempt secret has ≥ 128 bits"
        );
        assert_eq!(x.attempt_secret, y.attempt_secret);
        (s, a, b, job)
    });
    let before = runtime.block_on(snapshot(&s.store));
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(messages in proptest::collection::vec(hostile_message(job.clone()), 1..6))| {
        runtime.block_on(async {
            let mut rogue = Worker::attach(&s.addr, ROGUE, "").await.unwrap();
            let refers_to_work = messages.iter().any(|m| !matches!(m, FromWorker::Heartbeat(_)));
            for m in messages {
                rogue.send(m).await;
            }
            if refers_to_work {
                let end = rogue.ended_within(Duration::from_secs(5)).await.expect("the stream is closed");
                assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
            }
            assert_eq!(snapshot(&s.store).await, before, "a stranger changed the store");
        });
    });
    runtime.block_on(async {
        // The group's own streams were left alone.
        let open = Duration::from_millis(500);
        assert!(a.ended_within(open).await.is_none() && b.ended_within(open).await.is_none());
        let state = |job: &str| {
            let addr = s.addr.clone();
            let job = job.to_string();
            async move {
                client(&addr, Some(VIEWER))
                    .await
                    .get_job(v1::GetJobRequest { job_id: job })
                    .await
                    .unwrap()
                    .into_inner()
                    .job
                    .unwrap()
                    .state()
            }
        };
        let done = |rank, attempt| {
            FromWorker::TaskDone(v1::TaskDone {
                job_id: job.clone(),
                attempt,
                rank,
                ..Default::default()
            })
        };
        a.send(done(0, 1)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            state(&job).await,
            v1::JobState::Running,
            "one rank of two is done"
        );
        b.send(done(1, 1)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while state(&job).await != v1::JobState::Succeeded {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the job did not succeed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[tokio::test]
async fn checkpoints_need_the_attempt_secret_and_fit_the_limit() {
    use v1::checkpoint_part::Part;
    let s = start(|c| c.max_checkpoint_bytes = 1 << 20).await;
    let mut a = Worker::attach(&s.addr, NODE_A, "").await.unwrap();
    let _b = Worker::attach(&s.addr, NODE_B, "").await.unwrap();
    let job = submit(&s.addr, sweep()).await.unwrap().id;
    let assignment = a.assignment().await;
    let put = |secret: Vec<u8>, size: u64, token: &'static str| {
        let addr = s.addr.clone();
        let job = job.clone();
        async move {
            let header = v1::CheckpointPart {
                part: Some(Part::Header(v1::CheckpointHeader {
                    job_id: job,
                    attempt: 1,
                    meta_json: "{}".into(),
                    size_bytes: size,
                    attempt_secret: secret.into(),
                    ..Default::default()
                })),
            };
            let chunk = v1::CheckpointPart {
                part: Some(Part::Chunk(vec![0u8; 1024].into())),
            };
            WorkerLinkClient::new(channel(&addr, Some(token)).await)
                .put_checkpoint(tokio_stream::iter([header, chunk]))
                .await
        }
    };
    // The header's size is never allocated: 2^40 and u64::MAX are refused.
    for size in [1u64 << 40, u64::MAX] {
        let e = put(Vec::new(), size, ROGUE).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = put(assignment.attempt_secret.to_vec(), size, NODE_A)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("max_checkpoint_bytes"), "{e:?}");
    }
    // More bytes than the header declared are refused too.
    let e = put(assignment.attempt_secret.to_vec(), 10, NODE_A)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = WorkerLinkClient::new(channel(&s.addr, Some(ROGUE)).await)
        .get_checkpoint(v1::GetCheckpointRequest {
            job_id: job.clone(),
            checkpoint_id: "1".into(),
            attempt: 1,
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A worker of the group may not speak for a rank it does not host.
    let other = 1 - assignment.ranks[0].rank;
    a.send(FromWorker::TaskDone(v1::TaskDone {
        job_id: job.clone(),
        attempt: 1,
        rank: other,
        ..Default::default()
    }))
    .await;
    let end = a.ended_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    // Still serving.
    client(&s.addr, Some(VIEWER))
        .await
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn logs_watches_and_queues_are_bounded() {
    let s = start(|c| {
        c.max_log_lines_per_attempt = 5;
        c.max_log_line_bytes = 100;
        c.max_active_jobs_per_principal = 2;
    })
    .await;
    let mut a = Worker::attach(&s.addr, NODE_A, "").await.unwrap();
    let _b = Worker::attach(&s.addr, NODE_B, "").await.unwrap();
    let job = submit(&s.addr, sweep()).await.unwrap().id;
    let assignment = a.assignment().await;
    let rank = assignment.ranks[0].rank;
    for _ in 0..50 {
        a.send(FromWorker::Log(v1::WorkerLog {
            job_id: job.clone(),
            rank,
            level: "info".into(),
            message: "y".repeat(1_000),
        }))
        .await;
    }
    // A second job is accepted (queued); a third is over the principal's quota.
    submit(&s.addr, sweep()).await.unwrap();
    let e = submit(&s.addr, sweep()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("max_active_jobs_per_principal"),
        "{e:?}"
    );

    let mut c = client(&s.addr, Some(VIEWER)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = client(&s.addr, Some(EDITOR))
        .await
        .cancel_job(v1::CancelJobRequest {
            job_id: job.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert!(cancel.error.contains("alice"), "{}", cancel.error);
    let events = |after| {
        let job = job.clone();
        let mut c = c.clone();
        async move {
            let mut stream = c
                .watch_job(v1::WatchJobRequest {
                    job_id: job,
                    after_sequence: after,
                    include_logs: true,
                })
                .await
                .unwrap()
                .into_inner();
            let mut all = Vec::new();
            // A finished job's watch ends by itself, wherever it starts.
            tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(e) = stream.message().await.unwrap() {
                    all.push(e);
                }
            })
            .await
            .expect("the watch of a finished job ended");
            all
        }
    };
    let all = events(0).await;
    let logs: Vec<&v1::LogLine> = all
        .iter()
        .filter_map(|e| match &e.event {
            Some(v1::job_event::Event::Log(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(
        logs.len(),
        6,
        "5 lines and the one saying the rest were dropped"
    );
    assert!(logs.iter().all(|l| l.message.len() <= 200));
    assert!(logs[5].message.contains("max_log_lines_per_attempt"));
    assert!(events(u64::MAX).await.is_empty());
    let _ = c.list_jobs(v1::ListJobsRequest::default()).await.unwrap();
}

#[tokio::test]
async fn list_pages_stay_under_the_byte_budget() {
    let s = start(|c| c.max_page_bytes = 300).await;
    for _ in 0..6 {
        submit(&s.addr, sweep()).await.unwrap();
    }
    let mut c = client(&s.addr, Some(VIEWER)).await;
    let mut token = String::new();
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = c
            .list_jobs(v1::ListJobsRequest {
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let bytes: usize = page.jobs.iter().map(prost::Message::encoded_len).sum();
        assert!(page.jobs.len() == 1 || bytes <= 300, "{bytes}");
        seen += page.jobs.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, 6);
    assert!(pages > 1, "the budget split the listing");
}
