//! The conformance suite every [`Store`] backend runs (feature `testing`).
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn etcd_conforms() {
//!     let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(config).await.unwrap());
//!     camshaft_store::testing::conformance(store, KEEP_CHECKPOINTS).await;
//! }
//! ```
//!
//! [`EtcdServer`] starts a throwaway etcd process for such tests (and the
//! cluster tests that want a real etcd).
//!
//! Each check panics with a message on failure, as tests do. The store must be
//! fresh (no records) and retain `keep_checkpoints` checkpoints per job.
//! Timings: lease checks use a 1 s TTL (etcd's granularity) and wait up to
//! [`EVENT_WAIT`] for an expiry, so no check depends on a fast machine.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod etcd_server;

pub use etcd_server::EtcdServer;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::{
    AliasEvent, CHUNK_SIZE, Error, JobState, LATEST, ModelRef, Store, WatchStream, WorkerEvent,
    WorkerRecord, now_ms,
};

/// How long a check waits for a watch event (lease expiry included).
pub const EVENT_WAIT: Duration = Duration::from_secs(15);

/// Runs every check below on a fresh store.
pub async fn conformance(store: Arc<dyn Store>, keep_checkpoints: usize) {
    jobs_compare_and_set(store.as_ref()).await;
    registry_versions_and_aliases(store.as_ref()).await;
    registry_lineage_updates(store.as_ref()).await;
    registry_alias_history(store.as_ref()).await;
    checkpoints_chunked_and_retained(store.as_ref(), keep_checkpoints).await;
    leases_and_workers(store.as_ref(), Duration::from_secs(1)).await;
}

/// Deterministic, non-repeating bytes (so chunks differ and nothing dedupes
/// by accident).
pub fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The next event of a watch, or a panic after [`EVENT_WAIT`].
pub async fn next_event<E: Debug>(events: &mut WatchStream<E>) -> E {
    tokio::time::timeout(EVENT_WAIT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {EVENT_WAIT:?}"))
        .expect("the watch ended while an event was expected")
}

fn assert_not_found<T: Debug>(result: crate::Result<T>, context: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{context}: expected NotFound, got {other:?}"),
    }
}

/// Jobs: ids in order, compare-and-set updates, stale writers refused.
pub async fn jobs_compare_and_set(store: &dyn Store) {
    let first = store
        .create_job(json!({"dataset": "synthetic"}))
        .await
        .unwrap();
    let second = store
        .create_job(json!({"dataset": "cifar10"}))
        .await
        .unwrap();
    assert_eq!(second.id.0, first.id.0 + 1, "job ids are assigned in order");
    assert_eq!(first.state, JobState::Queued);
    assert_eq!(store.get_job(first.id).await.unwrap(), first);
    let listed: Vec<_> = store
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(
        listed.contains(&first.id) && listed.contains(&second.id),
        "{listed:?}"
    );

    // Two coordinators read the same revision; the first write wins.
    let mut fresh = first.clone();
    fresh.state = JobState::Running;
    fresh.history.push(json!({"epoch": 0, "train_loss": 1.5}));
    let updated = store.update_job(fresh).await.unwrap();
    assert!(updated.revision > first.revision);
    assert_eq!(updated.state, JobState::Running);
    assert_eq!(updated.created_ms, first.created_ms);

    let mut stale = first.clone();
    stale.state = JobState::Failed;
    match store.update_job(stale).await {
        Err(Error::Conflict { what }) => assert!(what.contains(&first.id.to_string()), "{what}"),
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert_eq!(store.get_job(first.id).await.unwrap(), updated);

    let mut missing = updated.clone();
    missing.id = crate::JobId(first.id.0 + 1000);
    assert_not_found(store.update_job(missing).await, "update of a missing job");
    assert_not_found(
        store.get_job(crate::JobId(first.id.0 + 1000)).await,
        "missing job",
    );
}

/// Registry: versions per name, `latest`, aliases and their watch, verified
/// weights, deletion, versions never reused.
pub async fn registry_versions_and_aliases(store: &dyn Store) {
    let mut aliases = store.watch_aliases().await.unwrap();
    let name = "suite-model";
    let w1 = pattern(1000, 1);
    let w2 = pattern(CHUNK_SIZE + 10, 2);
    let v1 = store
        .register_model(
            name,
            json!({"arch": "cnn"}),
            json!({"job": "j-1"}),
            w1.clone(),
        )
        .await
        .unwrap();
    let v2 = store
        .register_model(
            name,
            json!({"arch": "cnn"}),
            json!({"job": "j-2"}),
            w2.clone(),
        )
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(v2.weights.chunks.len(), 2);
    assert_eq!(
        next_event(&mut aliases.events).await,
        AliasEvent::Set {
            name: name.into(),
            alias: LATEST.into(),
            version: 1
        }
    );
    assert_eq!(
        next_event(&mut aliases.events).await,
        AliasEvent::Set {
            name: name.into(),
            alias: LATEST.into(),
            version: 2
        }
    );

    let by_name = store.get_model(&name.parse().unwrap()).await.unwrap();
    assert_eq!(by_name, v2, "a bare name resolves through latest");
    assert_eq!(
        store
            .get_model(&format!("{name}:1").parse().unwrap())
            .await
            .unwrap(),
        v1
    );
    assert_eq!(store.model_weights(name, 1).await.unwrap(), w1);
    assert_eq!(store.model_weights(name, 2).await.unwrap(), w2);

    store.set_alias(name, "prod", 1).await.unwrap();
    assert_eq!(
        next_event(&mut aliases.events).await,
        AliasEvent::Set {
            name: name.into(),
            alias: "prod".into(),
            version: 1
        }
    );
    let prod: ModelRef = format!("{name}@prod").parse().unwrap();
    assert_eq!(store.get_model(&prod).await.unwrap().version, 1);
    assert_not_found(
        store.set_alias(name, "prod", 9).await,
        "alias to a missing version",
    );
    assert_not_found(
        store
            .get_model(&format!("{name}@nope").parse().unwrap())
            .await,
        "alias",
    );
    assert!(matches!(
        store
            .register_model("bad/name", json!({}), json!({}), w1.clone())
            .await,
        Err(Error::InvalidArgument { .. })
    ));

    let listed = store.list_models().await.unwrap();
    let entry = listed.iter().find(|m| m.name == name).expect("listed");
    assert_eq!(entry.versions.len(), 2);
    assert_eq!(entry.aliases.get("prod"), Some(&1));
    assert_eq!(entry.aliases.get(LATEST), Some(&2));

    // A version an alias points at is not deleted from under it.
    assert!(matches!(
        store.delete_model_version(name, 1).await,
        Err(Error::Conflict { .. })
    ));
    store.remove_alias(name, "prod").await.unwrap();
    assert_eq!(
        next_event(&mut aliases.events).await,
        AliasEvent::Removed {
            name: name.into(),
            alias: "prod".into()
        }
    );
    store.delete_model_version(name, 1).await.unwrap();
    assert_not_found(store.get_model(&prod).await, "removed alias");
    assert_not_found(store.model_weights(name, 1).await, "deleted version");

    // Deleting what latest points at moves latest back, or removes it.
    let v3 = store
        .register_model(name, json!({}), json!({}), w1.clone())
        .await
        .unwrap();
    assert_eq!(v3.version, 3, "versions are never reused");
    store.delete_model_version(name, 3).await.unwrap();
    assert_eq!(
        store
            .get_model(&name.parse().unwrap())
            .await
            .unwrap()
            .version,
        2
    );
    store.delete_model_version(name, 2).await.unwrap();
    assert_not_found(
        store.get_model(&name.parse().unwrap()).await,
        "latest of no versions",
    );
    let v4 = store
        .register_model(name, json!({}), json!({}), w2.clone())
        .await
        .unwrap();
    assert_eq!(v4.version, 4, "versions are never reused");
    assert_eq!(store.model_weights(name, 4).await.unwrap(), w2);

    let again = store.watch_aliases().await.unwrap();
    assert!(
        again
            .current
            .iter()
            .any(|a| a.name == name && a.alias == LATEST && a.version == 4),
        "{:?}",
        again.current
    );
}

/// Every alias change made through `set_alias_by`/`remove_alias_by` is
/// recorded with who made it, oldest first with increasing revisions;
/// a set to the version already pointed at records nothing; the history
/// filters by alias and outlives the alias.
pub async fn registry_alias_history(store: &dyn Store) {
    let name = "suite-history";
    for seed in 0..2 {
        store
            .register_model(name, json!({}), json!({}), pattern(10, seed))
            .await
            .unwrap();
    }
    assert!(store.alias_history(name, None).await.unwrap().is_empty());
    store.set_alias_by(name, "prod", 1, "alice").await.unwrap();
    store.set_alias_by(name, "prod", 1, "alice").await.unwrap();
    store.set_alias_by(name, "prod", 2, "bob").await.unwrap();
    store.set_alias(name, "canary", 2).await.unwrap();
    store.remove_alias_by(name, "prod", "carol").await.unwrap();
    assert_not_found(
        store.remove_alias_by(name, "prod", "carol").await,
        "removing a removed alias",
    );
    let history = store.alias_history(name, None).await.unwrap();
    let seen: Vec<(&str, Option<u64>, Option<u64>, &str)> = history
        .iter()
        .map(|c| (c.alias.as_str(), c.from, c.to, c.by.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("prod", None, Some(1), "alice"),
            ("prod", Some(1), Some(2), "bob"),
            ("canary", None, Some(2), ""),
            ("prod", Some(2), None, "carol"),
        ]
    );
    assert!(
        history.windows(2).all(|w| w[0].revision < w[1].revision),
        "{history:?}"
    );
    assert!(history.iter().all(|c| c.name == name && c.unix_ms > 0));
    let prod = store.alias_history(name, Some("prod")).await.unwrap();
    assert_eq!(prod.len(), 3);
    assert!(
        store
            .alias_history("suite-no-such-model", None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A version's lineage is replaced in place: the version number, spec,
/// weights and aliases stay; an unknown version is NOT_FOUND.
pub async fn registry_lineage_updates(store: &dyn Store) {
    let name = "suite-annotated";
    let weights = pattern(100, 7);
    let v1 = store
        .register_model(
            name,
            json!({"arch": "cnn"}),
            json!({"job": "j-1"}),
            weights.clone(),
        )
        .await
        .unwrap();
    let lineage = json!({"job": "j-1", "tags": {"team": "vision"}, "description": "first"});
    let updated = store
        .update_model_lineage(name, v1.version, lineage.clone())
        .await
        .unwrap();
    assert_eq!(updated.lineage, lineage);
    assert_eq!((updated.version, &updated.spec), (v1.version, &v1.spec));
    let read = store
        .get_model(&ModelRef::Alias(name.into(), LATEST.into()))
        .await
        .unwrap();
    assert_eq!(
        read, updated,
        "the latest alias still points at it, changed"
    );
    assert_eq!(
        store.model_weights(name, v1.version).await.unwrap(),
        weights
    );
    let err = store
        .update_model_lineage(name, v1.version + 1, json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    // The next registration still gets the next number.
    let v2 = store
        .register_model(name, json!({}), json!({}), weights)
        .await
        .unwrap();
    assert_eq!(v2.version, v1.version + 1);
}

/// Checkpoints: a blob over 2 MiB in 3 chunks, read back verified, the last
/// `keep` retained.
pub async fn checkpoints_chunked_and_retained(store: &dyn Store, keep: usize) {
    let job = store.create_job(json!({})).await.unwrap();
    assert_eq!(store.latest_checkpoint(job.id).await.unwrap(), None);
    let blob = pattern(2 * CHUNK_SIZE + 12345, 3);
    let first = store
        .put_checkpoint(job.id, 1, json!({"step": 10}), blob.clone())
        .await
        .unwrap();
    assert_eq!(first.blob.chunks.len(), 3);
    assert_eq!(first.blob.size, blob.len() as u64);
    assert_eq!(
        store.latest_checkpoint(job.id).await.unwrap(),
        Some(first.clone())
    );
    let read = store.get_checkpoint(job.id, first.id).await.unwrap();
    assert_eq!(read.blob, blob);
    assert_eq!(read.manifest.meta, json!({"step": 10}));

    let mut ids = vec![first.id];
    for epoch in 2..=(keep as u64 + 2) {
        let blob = pattern(CHUNK_SIZE / 2 + epoch as usize, 100 + epoch);
        let manifest = store
            .put_checkpoint(job.id, epoch, json!({"epoch": epoch}), blob.clone())
            .await
            .unwrap();
        assert!(
            manifest.id > *ids.last().unwrap(),
            "checkpoint ids increase"
        );
        ids.push(manifest.id);
        assert_eq!(
            store
                .get_checkpoint(job.id, manifest.id)
                .await
                .unwrap()
                .blob,
            blob
        );
    }
    let retained: Vec<u64> = store
        .list_checkpoints(job.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        retained,
        ids[ids.len() - keep..],
        "the last {keep} are retained"
    );
    assert_not_found(
        store.get_checkpoint(job.id, first.id).await,
        "pruned checkpoint",
    );
    assert_eq!(
        store.latest_checkpoint(job.id).await.unwrap().map(|m| m.id),
        ids.last().copied()
    );
    assert_not_found(
        store
            .put_checkpoint(crate::JobId(job.id.0 + 1000), 1, json!({}), blob)
            .await,
        "checkpoint of a missing job",
    );
}

/// Leases: records live with their lease, revocation and expiry remove them
/// and are watched.
pub async fn leases_and_workers(store: &dyn Store, ttl: Duration) {
    let mut workers = store.watch_workers().await.unwrap();
    let kept = store.grant_lease(ttl).await.unwrap();
    let revoked = store.grant_lease(ttl).await.unwrap();
    let expiring = store.grant_lease(ttl).await.unwrap();
    let record = |id: &str, lease| WorkerRecord {
        id: id.into(),
        hostname: "localhost".into(),
        devices: vec!["cpu".into()],
        lease,
        meta: json!({"addr": "127.0.0.1:0"}),
        registered_ms: now_ms(),
    };
    for (id, lease) in [
        ("w-kept", kept),
        ("w-revoked", revoked),
        ("w-expiring", expiring),
    ] {
        store.put_worker(record(id, lease)).await.unwrap();
        match next_event(&mut workers.events).await {
            WorkerEvent::Put(w) => assert_eq!(w.id, id),
            other => panic!("expected a put of {id}, got {other:?}"),
        }
    }
    assert_eq!(store.list_workers().await.unwrap().len(), 3);

    store.revoke_lease(revoked).await.unwrap();
    assert_eq!(
        next_event(&mut workers.events).await,
        WorkerEvent::Removed {
            id: "w-revoked".into()
        }
    );

    // Keep one lease alive while the other runs out.
    let keeper = async {
        loop {
            tokio::time::sleep(ttl / 4).await;
            store.keep_alive(kept).await.unwrap();
        }
    };
    let expired = tokio::select! {
        event = next_event(&mut workers.events) => event,
        () = keeper => unreachable!("the keeper loops forever"),
    };
    assert_eq!(
        expired,
        WorkerEvent::Removed {
            id: "w-expiring".into()
        }
    );
    store.keep_alive(kept).await.unwrap();
    let alive: Vec<String> = store
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(alive, ["w-kept"]);
    assert_not_found(
        store.keep_alive(expiring).await,
        "keep-alive of an expired lease",
    );
    assert_not_found(
        store.put_worker(record("w-late", expiring)).await,
        "worker on a dead lease",
    );

    store.remove_worker("w-kept").await.unwrap();
    assert_eq!(
        next_event(&mut workers.events).await,
        WorkerEvent::Removed {
            id: "w-kept".into()
        }
    );
    store.revoke_lease(kept).await.unwrap();
    assert!(store.list_workers().await.unwrap().is_empty());
}
