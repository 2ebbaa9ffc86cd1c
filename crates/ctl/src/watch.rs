//! Following a job: [`JobEvents`] is its event stream, reopened after the
//! last event seen (`after_sequence`) when it breaks; `ctl bench` reads it
//! too. For `ctl jobs watch` and `ctl submit-job --wait`, [`watch`] prints
//! the events as lines and the live epoch table, and ends with the exit
//! status of the job's final state.

use std::time::Duration;

use camshaft_proto::security::AuthChannel;
use camshaft_proto::v1::coordinator_client::CoordinatorClient;
use camshaft_proto::v1::job_event::Event;
use camshaft_proto::v1::{GetJobRequest, JobEvent, JobState, WatchJobRequest};

use crate::client::Servers;
use crate::console;
use crate::error::{AlreadyReported, CallError, EXIT_FAILED, EXIT_INTERRUPTED, Unreachable};
use crate::output::{
    AllReduceTable, EpochTable, failure_line, log_line, registered_line, state_line,
};

/// Reconnection attempts in a row before a watch gives up.
pub const WATCH_RETRIES: u32 = 8;

/// Turns job events into output lines and remembers where the job stands.
#[derive(Debug, Default)]
pub struct EventPrinter {
    table: EpochTable,
    allreduce: AllReduceTable,
    last_sequence: u64,
    terminal: Option<JobState>,
    last_reason: String,
}

impl EventPrinter {
    /// The lines to print for `event`; nothing for an event seen before
    /// (a replay after reconnecting).
    pub fn lines(&mut self, event: &JobEvent) -> Vec<String> {
        if event.sequence != 0 && event.sequence <= self.last_sequence {
            return Vec::new();
        }
        self.last_sequence = self.last_sequence.max(event.sequence);
        match &event.event {
            Some(Event::StateChanged(change)) => {
                if let Ok(state) = JobState::try_from(change.to)
                    && state.is_terminal()
                {
                    self.terminal = Some(state);
                    self.last_reason = change.reason.clone();
                }
                vec![state_line(change)]
            }
            Some(Event::Epoch(metrics)) => self.table.lines(metrics),
            Some(Event::Allreduce(row)) => self.allreduce.lines(row),
            Some(Event::Log(log)) => vec![log_line(log)],
            Some(Event::ModelRegistered(registered)) => registered
                .version
                .as_ref()
                .map(|v| vec![registered_line(v)])
                .unwrap_or_default(),
            Some(Event::Failure(failure)) => vec![failure_line(failure)],
            None => Vec::new(),
        }
    }

    /// The sequence number of the newest event seen (0 before any).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// The terminal state, once an event moved the job into one.
    pub fn terminal(&self) -> Option<JobState> {
        self.terminal
    }
}

/// Whether a broken watch is worth reopening: the server or the connection
/// went away (UNAVAILABLE; UNKNOWN and ABORTED are what a torn HTTP/2
/// connection tends to surface as).
fn reconnectable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Aborted
    )
}

/// Why a broken watch is worth reopening (the call error as text), or the
/// call error to end with when it is not.
fn retry_reason(status: &tonic::Status) -> anyhow::Result<String> {
    let error = CallError::new("coordinator", "WatchJob", status);
    if reconnectable(status) {
        Ok(error.to_string())
    } else {
        Err(error.into())
    }
}

/// The pause before reconnect number `attempt` (1-based): 0.5 s doubling, at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(5_000))
}

/// Watches `job_id` until it ends, printing its events. Ok when it
/// SUCCEEDED; after FAILED or CANCELLED the job's error is printed and the
/// result is [`AlreadyReported`] with exit code 1. Ctrl-C detaches (exit
/// code 130) and leaves the job running.
pub async fn watch(
    servers: &Servers,
    client: Option<CoordinatorClient<AuthChannel>>,
    job_id: &str,
    include_logs: bool,
) -> anyhow::Result<()> {
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler available: watch without one.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = follow(servers, client, job_id, include_logs) => result,
        () = interrupted => {
            eprintln!(
                "\ndetached from {job_id}; it keeps running. Re-attach with `ctl jobs watch {job_id}`"
            );
            Err(AlreadyReported { code: EXIT_INTERRUPTED }.into())
        }
    }
}

async fn follow(
    servers: &Servers,
    client: Option<CoordinatorClient<AuthChannel>>,
    job_id: &str,
    include_logs: bool,
) -> anyhow::Result<()> {
    let mut events = JobEvents::open(servers, client, job_id, include_logs).await?;
    let mut printer = EventPrinter::default();
    loop {
        let event = events.next().await?;
        for line in printer.lines(&event) {
            console::line(line)?;
        }
        if let Some(state) = printer.terminal() {
            return finish(events.client(), job_id, state, &printer.last_reason).await;
        }
    }
}

/// A job's event stream that survives a broken connection: [`JobEvents::next`]
/// reopens `WatchJob` after the last event seen (with [`backoff`], at most
/// [`WATCH_RETRIES`] times in a row) when the stream breaks in a way worth
/// retrying, and skips events seen before. Used by `ctl jobs watch`,
/// `submit-job --wait` and `ctl bench`; the caller stops calling `next`
/// once an event moves the job into a terminal state.
pub struct JobEvents<'a> {
    servers: &'a Servers,
    client: CoordinatorClient<AuthChannel>,
    job_id: String,
    include_logs: bool,
    /// The open stream; `None` before the first call and after a break.
    stream: Option<tonic::Streaming<JobEvent>>,
    /// Why the last stream or WatchJob call broke, until reconnected.
    broke_because: Option<String>,
    last_sequence: u64,
    /// Reconnects since the last event that arrived.
    retries: u32,
}

impl<'a> JobEvents<'a> {
    /// Follows `job_id` over `client`, or over a new connection to the
    /// coordinator when `None`. Nothing is asked of the server until the
    /// first [`JobEvents::next`].
    pub async fn open(
        servers: &'a Servers,
        client: Option<CoordinatorClient<AuthChannel>>,
        job_id: &str,
        include_logs: bool,
    ) -> anyhow::Result<JobEvents<'a>> {
        let client = match client {
            Some(client) => client,
            None => servers.coordinator().await?,
        };
        Ok(JobEvents {
            servers,
            client,
            job_id: job_id.to_string(),
            include_logs,
            stream: None,
            broke_because: None,
            last_sequence: 0,
            retries: 0,
        })
    }

    /// The coordinator connection in use (the newest, after a reconnect).
    pub fn client(&mut self) -> &mut CoordinatorClient<AuthChannel> {
        &mut self.client
    }

    /// The next event not seen before. An error is a status that is not
    /// worth retrying, or a stream that stayed broken through
    /// [`WATCH_RETRIES`] reconnects.
    pub async fn next(&mut self) -> anyhow::Result<JobEvent> {
        loop {
            if let Some(stream) = &mut self.stream {
                match stream.message().await {
                    Ok(Some(event)) => {
                        self.retries = 0;
                        if event.sequence != 0 && event.sequence <= self.last_sequence {
                            continue;
                        }
                        self.last_sequence = self.last_sequence.max(event.sequence);
                        return Ok(event);
                    }
                    Ok(None) => self.broke_because = Some("the stream ended early".into()),
                    Err(status) => self.broke_because = Some(retry_reason(&status)?),
                }
                self.stream = None;
            }
            if let Some(reason) = self.broke_because.take() {
                self.reconnect(&reason).await?;
            }
            let request = WatchJobRequest {
                job_id: self.job_id.clone(),
                after_sequence: self.last_sequence,
                include_logs: self.include_logs,
            };
            match self.client.watch_job(request).await {
                Ok(response) => self.stream = Some(response.into_inner()),
                Err(status) => self.broke_because = Some(retry_reason(&status)?),
            }
        }
    }

    /// Waits out the backoff and connects afresh, until a connection is made
    /// or the retries are spent.
    async fn reconnect(&mut self, broke_because: &str) -> anyhow::Result<()> {
        let job_id = self.job_id.as_str();
        loop {
            self.retries += 1;
            if self.retries > WATCH_RETRIES {
                anyhow::bail!(
                    "lost the event stream of {job_id} ({broke_because}); \
                     gave up after {WATCH_RETRIES} reconnects — re-attach with `ctl jobs watch {job_id}`"
                );
            }
            let pause = backoff(self.retries);
            tracing::info!(job_id, retries = self.retries, ?pause, reason = %broke_because, "reconnecting the watch");
            tokio::time::sleep(pause).await;
            match self.servers.coordinator().await {
                Ok(fresh) => {
                    self.client = fresh;
                    return Ok(());
                }
                Err(e) if e.is::<Unreachable>() => {
                    tracing::info!(job_id, error = %e, "coordinator still unreachable");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Ends a watch that saw the job reach `state`.
async fn finish(
    client: &mut CoordinatorClient<AuthChannel>,
    job_id: &str,
    state: JobState,
    reason: &str,
) -> anyhow::Result<()> {
    if state == JobState::Succeeded {
        return Ok(());
    }
    // The job's error is the authoritative reason; the state change's reason
    // serves when GetJob does not answer.
    let error = match client
        .get_job(GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await
    {
        Ok(response) => response
            .into_inner()
            .job
            .map(|job| job.error)
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| reason.to_string()),
        Err(_) => reason.to_string(),
    };
    let verb = if state == JobState::Cancelled {
        "was cancelled"
    } else {
        "failed"
    };
    if error.is_empty() {
        eprintln!("job {job_id} {verb}");
    } else {
        eprintln!("job {job_id} {verb}: {error}");
    }
    Err(AlreadyReported { code: EXIT_FAILED }.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use camshaft_proto::v1::{
        EpochMetrics, FailureKind, JobFailure, JobStateChanged, ModelRegistered, ModelVersion,
    };

    fn event(sequence: u64, event: Event) -> JobEvent {
        JobEvent {
            job_id: "j-1".into(),
            sequence,
            unix_ms: 0,
            event: Some(event),
        }
    }

    fn epoch(epoch: u32, stage: u32) -> Event {
        Event::Epoch(EpochMetrics {
            epoch,
            stage,
            attempt: 1,
            train_loss: 0.5,
            valid_loss: 0.25,
            accuracy: 0.875,
            seconds: 75.0,
            ..Default::default()
        })
    }

    #[test]
    fn a_fine_tune_job_prints_like_fastai() {
        let events = [
            event(
                1,
                Event::StateChanged(JobStateChanged {
                    from: JobState::Pending as i32,
                    to: JobState::Running as i32,
                    attempt: 1,
                    reason: "1 worker".into(),
                    world_size: 1,
                }),
            ),
            event(2, epoch(0, 0)),
            event(3, epoch(1, 1)),
            event(4, epoch(2, 1)),
            event(
                5,
                Event::Failure(JobFailure {
                    attempt: 1,
                    kind: FailureKind::TaskError as i32,
                    reason: "nan loss".into(),
                    ..Default::default()
                }),
            ),
            event(
                6,
                Event::ModelRegistered(ModelRegistered {
                    version: Some(ModelVersion {
                        name: "pets".into(),
                        version: 2,
                        aliases: vec!["latest".into()],
                        ..Default::default()
                    }),
                }),
            ),
            event(
                7,
                Event::StateChanged(JobStateChanged {
                    from: JobState::Running as i32,
                    to: JobState::Succeeded as i32,
                    attempt: 1,
                    ..Default::default()
                }),
            ),
        ];
        let mut printer = EventPrinter::default();
        let mut out = Vec::new();
        for e in &events {
            out.extend(printer.lines(e));
        }
        // A replayed event (after a reconnect) prints nothing.
        assert!(printer.lines(&events[2]).is_empty());
        assert_eq!(
            out.join("\n"),
            "[running] 1 worker, world size 1\n\
             epoch  train_loss  valid_loss  accuracy  time   images/s\n\
             0      0.500000    0.250000    0.875000  01:15  0\n\
             epoch  train_loss  valid_loss  accuracy  time   images/s\n\
             1      0.500000    0.250000    0.875000  01:15  0\n\
             2      0.500000    0.250000    0.875000  01:15  0\n\
             attempt 1 failed (task_error): nan loss\n\
             registered pets:2 (aliases: latest)\n\
             [succeeded]"
        );
        assert_eq!(printer.terminal(), Some(JobState::Succeeded));
        assert_eq!(printer.last_sequence(), 7);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_millis(1000));
        assert_eq!(backoff(4), Duration::from_millis(4000));
        assert_eq!(backoff(5), Duration::from_millis(5000));
        assert_eq!(backoff(40), Duration::from_millis(5000));
    }
}
