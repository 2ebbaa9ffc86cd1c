//! Watches: a snapshot read at revision R, then an etcd watch from R+1 on the
//! same prefix, its events translated into the store's events by a task
//! that ends (dropping the sender, which ends the [`WatchStream`]) when etcd
//! cancels the watch, its revision was compacted, the connection breaks, the
//! holder drops the stream, or the store is dropped.

use etcd_client::{Event, EventType, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::{Inner, decode, header_revision};
use crate::error::{Error, Result};
use crate::etcd::keys::Keys;
use crate::records::{Alias, AliasEvent, WorkerEvent, WorkerRecord};
use crate::store::{WatchStream, Watched};

pub(super) async fn workers(
    inner: &Inner,
    shutdown: watch::Receiver<()>,
) -> Result<Watched<Vec<WorkerRecord>, WorkerEvent>> {
    let prefix = inner.keys.workers();
    let snapshot = inner.get_prefix("list workers", &prefix).await?;
    let at = header_revision(snapshot.header())?;
    let mut current: Vec<WorkerRecord> =
        snapshot.kvs().iter().map(decode).collect::<Result<_>>()?;
    current.sort_by(|a, b| a.id.cmp(&b.id));
    let keys = inner.keys.clone();
    let events = start(inner, prefix, at, shutdown, move |event| {
        worker_event(&keys, event)
    })
    .await?;
    Ok(Watched { current, events })
}

pub(super) async fn aliases(
    inner: &Inner,
    shutdown: watch::Receiver<()>,
) -> Result<Watched<Vec<Alias>, AliasEvent>> {
    // Aliases live beside versions under models/; the snapshot and the
    // watch take the whole prefix and keep the alias keys.
    let prefix = inner.keys.models();
    let snapshot = inner.get_prefix("list model aliases", &prefix).await?;
    let at = header_revision(snapshot.header())?;
    let mut current = Vec::new();
    for kv in snapshot.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if let Some((name, alias)) = inner.keys.parse_alias(&key) {
            current.push(Alias {
                name: name.to_owned(),
                alias: alias.to_owned(),
                version: Inner::alias_value(kv)?,
            });
        }
    }
    let keys = inner.keys.clone();
    let events = start(inner, prefix, at, shutdown, move |event| {
        alias_event(&keys, event)
    })
    .await?;
    Ok(Watched { current, events })
}

fn worker_event(keys: &Keys, event: &Event) -> Option<WorkerEvent> {
    let kv = event.kv()?;
    match event.event_type() {
        EventType::Put => match decode::<WorkerRecord>(kv) {
            Ok(worker) => Some(WorkerEvent::Put(worker)),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a worker record that does not decode");
                None
            }
        },
        EventType::Delete => {
            let key = String::from_utf8_lossy(kv.key());
            let id = keys.parse_worker(&key)?;
            Some(WorkerEvent::Removed { id: id.to_owned() })
        }
    }
}

fn alias_event(keys: &Keys, event: &Event) -> Option<AliasEvent> {
    let kv = event.kv()?;
    let key = String::from_utf8_lossy(kv.key());
    let (name, alias) = keys.parse_alias(&key)?;
    let (name, alias) = (name.to_owned(), alias.to_owned());
    match event.event_type() {
        EventType::Put => match Inner::alias_value(kv) {
            Ok(version) => Some(AliasEvent::Set {
                name,
                alias,
                version,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an alias that does not decode");
                None
            }
        },
        EventType::Delete => Some(AliasEvent::Removed { name, alias }),
    }
}

/// Opens an etcd watch on `prefix` from `at + 1`, waits until etcd confirms
/// it, and feeds its translated events to the returned stream from a task.
async fn start<E, F>(
    inner: &Inner,
    prefix: String,
    at: i64,
    mut shutdown: watch::Receiver<()>,
    translate: F,
) -> Result<WatchStream<E>>
where
    E: Send + 'static,
    F: Fn(&Event) -> Option<E> + Send + 'static,
{
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(at + 1);
    let open = async {
        let mut stream = inner
            .client
            .watch_client()
            .watch(prefix.as_str(), Some(options))
            .await?;
        let created = stream.message().await?;
        Ok((stream, created))
    };
    let (mut stream, created) = inner.rpc("start a watch", open).await?;
    match created {
        Some(response) if response.created() && !response.canceled() => {}
        other => {
            return Err(Error::Unavailable {
                reason: format!(
                    "etcd at {} did not start a watch on {prefix} from revision {}: {}",
                    inner.endpoints,
                    at + 1,
                    other.map_or_else(
                        || "the stream closed".to_owned(),
                        |r| r.cancel_reason().to_owned()
                    )
                ),
            });
        }
    }

    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() || response.compact_revision() != 0 {
                            tracing::info!(
                                %prefix,
                                reason = response.cancel_reason(),
                                compact_revision = response.compact_revision(),
                                "etcd cancelled a watch; ending it so its holder watches again"
                            );
                            return;
                        }
                        for event in response.events() {
                            if let Some(event) = translate(event)
                                && sender.send(event).is_err()
                            {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::info!(%prefix, "etcd closed a watch stream; ending the watch");
                        return;
                    }
                    Err(e) => {
                        tracing::info!(%prefix, error = %e, "an etcd watch failed; ending it");
                        return;
                    }
                },
                () = sender.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(WatchStream::new(receiver))
}
