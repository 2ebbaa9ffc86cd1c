//! The registry's editable parts and which epoch a job registers, on a real
//! `camshaft up` driven by `ctl` and gRPC: `--register best` registers the
//! best validation epoch's weights even when training went on past it,
//! `--early-stop` ends training and says why, and versions carry tags and a
//! description from submit, import and `ctl models update`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use camshaft_cluster_tests::Cluster;
use camshaft_proto::v1::{
    self, GetAliasHistoryRequest, GetJobRequest, GetModelRequest, JobState,
    UpdateModelVersionRequest, WatchJobRequest, WatchModelsRequest, job_event::Event,
    model_event::Event as ModelEvent,
};
use camshaft_store::{EmbeddedConfig, EmbeddedStore, JobId, Store, bundle};
use tonic::Code;

/// One cluster test at a time: each trains on the same two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn job(cluster: &Cluster, id: &str) -> v1::Job {
    block_on(async {
        let mut client = cluster.coordinator().await.unwrap();
        client
            .get_job(GetJobRequest { job_id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    })
}

fn wait_until_done(cluster: &Cluster, id: &str) -> v1::Job {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let job = job(cluster, id);
        if job.state().is_terminal() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is still {:?}:\n{}",
            job.state(),
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn model(cluster: &Cluster, reference: &str) -> v1::ModelVersion {
    block_on(async {
        let mut client = cluster.coordinator().await.unwrap();
        client
            .get_model(GetModelRequest {
                model: reference.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .version
            .unwrap()
    })
}

/// A synthetic job that trains on a sliver of data, so its validation loss
/// stops improving within a few epochs: with a patience of 2 it stops two
/// epochs after the best one (here the loss went 0.693, 0.689, 0.866,
/// 2.00: best epoch 1, stopped after epoch 3), and registers the best.
#[test]
fn the_best_epoch_is_registered_and_early_stopping_ends_training() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let cluster = Cluster::start(&data, &[]).unwrap();
    let epochs = 10u32;
    let id = cluster
        .ctl_ok(&[
            "submit-job",
            "--dataset",
            "synthetic",
            "--model",
            "resnet18",
            "--head",
            "cam",
            "--image-size",
            "32",
            "--train-len",
            "256",
            "--valid-len",
            "64",
            "--batch-size",
            "32",
            "--lr",
            "2e-3",
            "--seed",
            "3",
            "--epochs",
            &epochs.to_string(),
            "--name",
            "shapes",
            "--register",
            "best",
            "--early-stop",
            "2",
            "--tag",
            "team=vision",
            "--description",
            "best of a short run",
        ])
        .unwrap()
        .trim()
        .to_string();
    let done = wait_until_done(&cluster, &id);
    assert_eq!(done.state(), JobState::Succeeded, "{}", cluster.log());

    // Early stopping ended training before the plan's last epoch, and the
    // job says so.
    let stop = done.early_stop.clone().expect("the job stopped early");
    assert!(stop.epoch + 1 < epochs, "{stop:?}");
    let rows = &done.history;
    assert_eq!(
        rows.len() as u32,
        stop.epoch + 1,
        "no epoch ran after the stop"
    );
    assert_eq!(rows.last().unwrap().epoch, stop.epoch);
    // The best epoch is the earliest lowest validation loss, and the last
    // one (two epochs without improvement later) is not it.
    let best = rows
        .iter()
        .fold(None::<&v1::EpochMetrics>, |best, row| match best {
            Some(b) if b.valid_loss <= row.valid_loss => Some(b),
            _ => Some(row),
        })
        .unwrap();
    println!(
        "stopped after epoch {} of {epochs}; valid_loss by epoch: {:?}; best epoch {}",
        stop.epoch,
        rows.iter().map(|r| r.valid_loss).collect::<Vec<_>>(),
        best.epoch
    );
    assert_eq!(stop.best_epoch, best.epoch, "{rows:#?}");
    assert_ne!(stop.best_epoch, stop.epoch);
    assert_eq!(stop.monitor, "valid_loss");
    assert!(
        rows.last().unwrap().valid_loss >= best.valid_loss,
        "{rows:#?}"
    );

    // The registered version is the best epoch's, with its metrics, tags
    // and description.
    let version = model(&cluster, "shapes:1");
    let lineage = version.lineage.clone().unwrap();
    assert_eq!(lineage.epoch, Some(best.epoch));
    assert_eq!(lineage.selected_by, "best valid_loss");
    assert_eq!(lineage.metrics["valid_loss"], best.valid_loss);
    assert_eq!(lineage.metrics["accuracy"], best.accuracy);
    assert_eq!(version.tags["team"], "vision");
    assert_eq!(version.description, "best of a short run");
    assert_eq!(done.model_version, "shapes:1");

    // The stream ends with the reason.
    let events = block_on(async {
        let mut client = cluster.coordinator().await.unwrap();
        let mut stream = client
            .watch_job(WatchJobRequest {
                job_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event);
        }
        events
    });
    let Some(Event::StateChanged(last)) = events.last().and_then(|e| e.event.clone()) else {
        panic!("{events:#?}");
    };
    assert!(
        last.reason.starts_with(&format!(
            "stopped early after epoch {}: valid_loss did not improve for 2 epochs after epoch {}",
            stop.epoch, best.epoch
        )) && last.reason.ends_with(&format!(
            "registered epoch {} (best valid_loss)",
            best.epoch
        )),
        "{}",
        last.reason
    );

    // ctl shows both.
    let shown = cluster.ctl_ok(&["jobs", "get", &id]).unwrap();
    assert!(
        shown.contains(&format!("early after epoch {}", stop.epoch)),
        "{shown}"
    );
    let shown = cluster.ctl_ok(&["models", "get", "shapes"]).unwrap();
    assert!(
        shown.contains(&format!("{} (best valid_loss)", best.epoch))
            && shown.contains("team=vision"),
        "{shown}"
    );
    let checkpoint: u64 = lineage.checkpoint_id.parse().unwrap();
    cluster.stop().unwrap();

    // The registered weights are the best epoch's, which the final
    // checkpoint carried beside its own (the last epoch's).
    block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new(data.join("store")))
            .await
            .unwrap();
        let job_id = JobId(id.trim_start_matches("j-").parse().unwrap());
        let checkpoint = store.get_checkpoint(job_id, checkpoint).await.unwrap();
        let registered = store.model_weights("shapes", 1).await.unwrap();
        let best = bundle::file(&checkpoint.blob, bundle::BEST_WEIGHTS).unwrap();
        let last = bundle::file(&checkpoint.blob, bundle::WEIGHTS).unwrap();
        assert_eq!(registered, best);
        assert_ne!(registered, last);
        assert_eq!(
            checkpoint.manifest.meta[bundle::SELECTION]["epoch"],
            u64::from(stop.best_epoch)
        );
    });
}

/// A job that registers its last epoch says which epoch that is.
#[test]
fn the_last_epoch_is_registered_by_default_and_tags_are_edited() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), &[]).unwrap();
    let id = cluster
        .ctl_ok(&[
            "submit-job",
            "--dataset",
            "synthetic",
            "--model",
            "cnn",
            "--image-size",
            "32",
            "--train-len",
            "64",
            "--valid-len",
            "32",
            "--batch-size",
            "32",
            "--seed",
            "1",
            "--epochs",
            "2",
            "--name",
            "tagged",
        ])
        .unwrap()
        .trim()
        .to_string();
    let done = wait_until_done(&cluster, &id);
    assert_eq!(done.state(), JobState::Succeeded, "{}", cluster.log());
    assert!(done.early_stop.is_none());
    let version = model(&cluster, "tagged");
    let lineage = version.lineage.clone().unwrap();
    assert_eq!(
        (lineage.epoch, lineage.selected_by.as_str()),
        (Some(1), "last")
    );
    let last = done.history.last().unwrap();
    assert_eq!(lineage.metrics["valid_loss"], last.valid_loss);
    assert!(version.tags.is_empty() && version.description.is_empty());

    // ctl: set two tags and a description, then drop one tag.
    cluster
        .ctl_ok(&[
            "models",
            "update",
            "tagged",
            "1",
            "--tag",
            "stage=dev",
            "--tag",
            "owner=alice",
            "--description",
            "first try",
        ])
        .unwrap();
    let shown = cluster
        .ctl_ok(&["models", "update", "tagged", "1", "--remove-tag", "owner"])
        .unwrap();
    assert!(
        shown.contains("stage=dev") && !shown.contains("owner"),
        "{shown}"
    );
    let version = model(&cluster, "tagged@latest");
    assert_eq!(
        (
            version.tags.len(),
            version.tags["stage"].as_str(),
            version.description.as_str()
        ),
        (1, "dev", "first try")
    );
    // A listing shows them too.
    let listed = block_on(async {
        let mut client = cluster.coordinator().await.unwrap();
        client
            .list_models(v1::ListModelsRequest {
                name: "tagged".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .versions
    });
    assert_eq!(listed[0].tags, version.tags);

    // Bad edits are refused with the field; an unknown version is NOT_FOUND.
    block_on(async {
        let mut client = cluster.coordinator().await.unwrap();
        let update = |set: Vec<(&str, String)>, version: u64| UpdateModelVersionRequest {
            name: "tagged".into(),
            version,
            set_tags: set.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        };
        let err = client
            .update_model_version(update(vec![("bad key", "v".into())], 1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("only letters"), "{err:?}");
        let err = client
            .update_model_version(update(vec![("k", "x".repeat(300))], 1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = client
            .update_model_version(update(vec![("stage", "prod".into())], 9))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = client
            .update_model_version(UpdateModelVersionRequest {
                name: "tagged".into(),
                version: 1,
                description: Some("x".repeat(5000)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("5000 bytes"), "{err:?}");
    });
    // Nothing changed.
    assert_eq!(model(&cluster, "tagged:1").tags, version.tags);

    // Alias moves: streamed as they happen, and kept in the history with
    // who made them.
    block_on(async {
        let mut client = cluster.coordinator().await.unwrap();
        let mut stream = client
            .watch_models(WatchModelsRequest {
                name: "tagged".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        cluster
            .ctl_ok(&["models", "alias", "tagged", "prod", "1"])
            .unwrap();
        cluster
            .ctl_ok(&["models", "update", "tagged", "1", "--tag", "live=yes"])
            .unwrap();
        cluster
            .ctl_ok(&["models", "unalias", "tagged", "prod"])
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let event = tokio::time::timeout(Duration::from_secs(60), stream.message())
                .await
                .expect("an event within a minute")
                .unwrap()
                .unwrap();
            seen.push(event);
        }
        let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
        assert!(sequences.windows(2).all(|w| w[1] == w[0] + 1), "{seen:#?}");
        match (&seen[0].event, &seen[1].event, &seen[2].event) {
            (
                Some(ModelEvent::AliasChanged(set)),
                Some(ModelEvent::VersionUpdated(updated)),
                Some(ModelEvent::AliasChanged(removed)),
            ) => {
                assert_eq!(
                    (set.alias.as_str(), set.from_version, set.to_version),
                    ("prod", None, Some(1))
                );
                assert_eq!(updated.tags["live"], "yes");
                assert_eq!((removed.from_version, removed.to_version), (Some(1), None));
                assert_eq!(removed.changed_by, "anonymous");
            }
            other => panic!("{other:#?}"),
        }
        // A reconnect after the first event replays the other two.
        let replay: Vec<v1::ModelEvent> = {
            let mut again = client
                .watch_models(WatchModelsRequest {
                    name: "tagged".into(),
                    after_sequence: seen[0].sequence,
                    stream_id: seen[0].stream_id.clone(),
                    replay_retained: false,
                })
                .await
                .unwrap()
                .into_inner();
            let mut events = Vec::new();
            for _ in 0..2 {
                events.push(again.message().await.unwrap().unwrap());
            }
            events
        };
        assert_eq!(replay, seen[1..]);

        let history = client
            .get_alias_history(GetAliasHistoryRequest {
                name: "tagged".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let changes: Vec<(&str, Option<u64>, Option<u64>, &str)> = history
            .changes
            .iter()
            .map(|c| {
                (
                    c.alias.as_str(),
                    c.from_version,
                    c.to_version,
                    c.changed_by.as_str(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("prod", Some(1), None, "anonymous"),
                ("prod", None, Some(1), "anonymous"),
            ],
            "newest first"
        );
        let err = client
            .get_alias_history(GetAliasHistoryRequest {
                name: "tagged".into(),
                alias: "not an alias!".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    });
    let shown = cluster.ctl_ok(&["models", "history", "tagged"]).unwrap();
    assert_eq!(
        shown.lines().count(),
        3,
        "a header and two changes:\n{shown}"
    );
    assert!(shown.contains("anonymous"), "{shown}");
    cluster.stop().unwrap();
}
