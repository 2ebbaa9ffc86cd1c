//! The registry's change feed (`WatchModels`): every version registered,
//! deleted or edited and every alias moved through this coordinator,
//! numbered in order and kept in memory (the last [`MAX_MODEL_EVENTS`]) for
//! followers to replay after a reconnect, as a job's [`JobLog`] is.
//!
//! The numbering belongs to one coordinator run, named by its `stream_id`;
//! a follower that sees another `stream_id` re-reads the registry (as a
//! Kubernetes informer relists after "resource version too old").
//!
//! [`JobLog`]: crate::jobs::JobLog

use std::collections::VecDeque;
use std::sync::Mutex;

use camshaft_proto::now_unix_ms;
use camshaft_proto::v1::{self, model_event::Event};
use tokio::sync::watch;

/// Events kept for replay; a follower further behind re-reads the registry.
pub const MAX_MODEL_EVENTS: usize = 10_000;

/// The numbered registry events of this coordinator run.
#[derive(Debug)]
pub struct ModelEventLog {
    stream_id: String,
    events: Mutex<VecDeque<v1::ModelEvent>>,
    last: watch::Sender<u64>,
}

impl ModelEventLog {
    /// An empty log named `stream_id`.
    pub fn new(stream_id: String) -> Self {
        ModelEventLog {
            stream_id,
            events: Mutex::new(VecDeque::new()),
            last: watch::Sender::new(0),
        }
    }

    /// The run's name, in every event.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Appends an event, numbered and stamped, and wakes followers.
    pub fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let sequence = *self.last.borrow() + 1;
        events.push_back(v1::ModelEvent {
            sequence,
            unix_ms: now_unix_ms(),
            stream_id: self.stream_id.clone(),
            event: Some(event),
        });
        while events.len() > MAX_MODEL_EVENTS {
            events.pop_front();
        }
        self.last.send_replace(sequence);
    }

    /// The last sequence handed out (0 before any event).
    pub fn last_sequence(&self) -> u64 {
        *self.last.borrow()
    }

    /// Retained events with a sequence above `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<v1::ModelEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|e| e.sequence > after)
            .cloned()
            .collect()
    }

    /// A receiver that changes with every push.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
}

/// The model name an event is about.
pub fn name_of(event: &v1::ModelEvent) -> &str {
    match &event.event {
        Some(Event::VersionRegistered(v) | Event::VersionUpdated(v)) => &v.name,
        Some(Event::VersionDeleted(d)) => &d.name,
        Some(Event::AliasChanged(c)) => &c.name,
        None => "",
    }
}

/// The wire form of a stored alias change.
pub fn wire_change(change: &camshaft_store::AliasChange) -> v1::AliasChange {
    v1::AliasChange {
        name: change.name.clone(),
        alias: change.alias.clone(),
        from_version: change.from,
        to_version: change.to,
        changed_by: change.by.clone(),
        unix_ms: change.unix_ms as i64,
        revision: change.revision,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deleted(name: &str, version: u64) -> Event {
        Event::VersionDeleted(v1::ModelVersionDeleted {
            name: name.into(),
            version,
            removed_aliases: vec![],
        })
    }

    #[test]
    fn events_are_numbered_replayed_and_bounded() {
        let log = ModelEventLog::new("run-1".into());
        assert_eq!(log.last_sequence(), 0);
        log.push(deleted("a", 1));
        log.push(deleted("b", 2));
        let all = log.after(0);
        assert_eq!(all.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(all[1].stream_id, "run-1");
        assert_eq!(name_of(&all[1]), "b");
        assert_eq!(log.after(1).len(), 1);
        assert!(log.after(2).is_empty());
        for i in 0..MAX_MODEL_EVENTS as u64 {
            log.push(deleted("c", i));
        }
        let kept = log.after(0);
        assert_eq!(kept.len(), MAX_MODEL_EVENTS);
        assert_eq!(kept[0].sequence, 3, "the oldest went first");
        assert_eq!(log.last_sequence(), MAX_MODEL_EVENTS as u64 + 2);
    }
}
