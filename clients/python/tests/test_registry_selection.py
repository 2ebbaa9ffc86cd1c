"""Version tags and descriptions (import, ``Models.update``, the HTTP PATCH
route) and a job's ``register``/``monitor``/``early_stop`` options, through
the SDK, its asyncio twin and plain HTTP against the real ``camshaft up``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import requests
from conftest import Cluster

import camshaft
import camshaft.aio
from camshaft.spec import build_job_spec, normalize_options
from camshaft.v1 import coordinator_pb2


def cnn_state_dict() -> dict[str, np.ndarray]:
    """The lecture's CNN at 32 px (2 classes), zero weights."""
    return {
        "0.weight": np.zeros((128, 3, 5, 5), np.float32),
        "0.bias": np.zeros(128, np.float32),
        "4.weight": np.zeros((2, 128 * 14 * 14), np.float32),
        "4.bias": np.zeros(2, np.float32),
    }


def test_job_options_reach_the_spec() -> None:
    spec = build_job_spec(
        normalize_options(
            {
                "dataset": "synthetic",
                "register": "best",
                "monitor": "accuracy",
                "early_stop": 3,
                "tags": {"team": "vision"},
                "description": "why",
            }
        )
    )
    assert spec.register == coordinator_pb2.REGISTER_POLICY_BEST
    assert spec.monitor == coordinator_pb2.MONITOR_METRIC_ACCURACY
    assert (spec.early_stop_patience, dict(spec.tags), spec.description) == (3, {"team": "vision"}, "why")
    # ctl's spelling: repeated key=value strings.
    spec = build_job_spec(normalize_options({"dataset": "synthetic", "tag": ["a=1", "b=x=y"]}))
    assert dict(spec.tags) == {"a": "1", "b": "x=y"}
    with pytest.raises(camshaft.InvalidArgument, match="expected one of: last, best"):
        build_job_spec(normalize_options({"dataset": "synthetic", "register": "first"}))
    with pytest.raises(camshaft.InvalidArgument, match="not key=value"):
        build_job_spec(normalize_options({"dataset": "synthetic", "tag": "novalue"}))
    with pytest.raises(camshaft.InvalidArgument, match="dict of strings"):
        normalize_options({"tags": ["a=1"]})


def test_tags_are_set_at_import_edited_and_bounded(cluster: Cluster) -> None:
    with cluster.client() as cs:
        version = cs.models.import_weights(
            cnn_state_dict(),
            name="tagged-py",
            arch="cnn",
            head="linear",
            classes=["a", "b"],
            image_size=32,
            tags={"team": "vision", "stage": "dev"},
            description="zeros",
        )
        assert version.tags == {"team": "vision", "stage": "dev"}
        assert version.description == "zeros"
        assert version.lineage.epoch is None and version.lineage.selected_by == ""
        updated = cs.models.update(version.name, version.version, tags={"stage": "prod"}, remove_tags="team")
        assert updated.tags == {"stage": "prod"} and updated.description == "zeros"
        assert cs.models.get(version.ref).tags == {"stage": "prod"}
        cleared = cs.models.update(version.name, version.version, description="")
        assert cleared.description == "" and cleared.tags == {"stage": "prod"}
        with pytest.raises(camshaft.InvalidArgument) as bad:
            cs.models.update(version.name, version.version, tags={f"k{i}": "v" for i in range(40)})
        assert [(v.field, v.description) for v in bad.value.field_violations] == [
            ("set_tags", "40 tags; a version has at most 32")
        ]
        with pytest.raises(camshaft.NotFound):
            cs.models.update(version.name, 99, tags={"a": "b"})

    async def edit() -> camshaft.ModelVersion:
        async with camshaft.aio.Client(cluster.coordinator, cluster.explainer, timeout=60) as acs:
            return await acs.models.update("tagged-py", version.version, tags={"async": "yes"})

    assert asyncio.run(edit()).tags == {"stage": "prod", "async": "yes"}

    # Plain HTTP: the PATCH route, and a bad tag as a google.rpc.Status.
    base = f"http://{cluster.coordinator}/v1/models/tagged-py/versions/{version.version}"
    answer = requests.patch(base, json={"set_tags": {"owner": "bob"}, "remove_tags": ["async"]}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"]["tags"] == {"stage": "prod", "owner": "bob"}
    answer = requests.patch(base, json={"set_tags": {"bad key": "v"}}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "only letters" in answer.json()["message"]
    # ctl sees the same version.
    shown = cluster.ctl("models", "get", f"tagged-py:{version.version}").stdout
    assert "owner=bob" in shown and "stage=prod" in shown


def test_a_job_records_the_epoch_it_registered(cluster: Cluster) -> None:
    with cluster.client() as cs:
        job = cs.jobs.submit(
            dataset="synthetic",
            model="cnn",
            image_size=32,
            train_len=64,
            valid_len=32,
            batch_size=32,
            seed=2,
            epochs=2,
            name="selected-py",
            register="best",
            monitor="accuracy",
            tags={"from": "sdk"},
        )
        job.wait(timeout=600)
        assert (job.spec["register"], job.spec["monitor"]) == ("best", "accuracy")
        assert job.early_stop is None
        version = job.model
        assert version is not None
        accuracies = [row.accuracy for row in job.rows]
        best = accuracies.index(max(accuracies))
        assert version.lineage.epoch == best
        assert version.lineage.selected_by == "best accuracy"
        assert version.lineage.metrics["accuracy"] == accuracies[best]
        assert version.tags == {"from": "sdk"}


def test_the_early_stop_is_read_from_a_job_message() -> None:
    job = coordinator_pb2.Job(id="j-1")
    assert camshaft.client.early_stop_of(job) is None
    job.early_stop.epoch = 4
    job.early_stop.reason = "valid_loss did not improve for 2 epochs after epoch 2 (0.5)"
    assert camshaft.client.early_stop_of(job)["epoch"] == 4  # type: ignore[index]



def test_alias_moves_are_kept_and_streamed(cluster: Cluster) -> None:
    with cluster.client() as cs:
        version = cs.models.import_weights(
            cnn_state_dict(), name="watched-py", arch="cnn", head="linear", classes=["a", "b"], image_size=32
        )
        cs.models.set_alias("watched-py", "prod", version.version)
        cs.models.update("watched-py", version.version, description="live")
        cs.models.delete_alias("watched-py", "prod")
        history = cs.models.history("watched-py")
        assert [(h["alias"], h["from_version"], h["to_version"], h["changed_by"]) for h in history] == [
            ("prod", version.version, None, "anonymous"),
            ("prod", None, version.version, "anonymous"),
        ]
        assert cs.models.history("watched-py", alias="latest") == []
        # Every event the coordinator kept for the name, in order; the
        # iterator ends once the stream has been quiet for 3 s.
        events = list(cs.models.watch("watched-py", replay_retained=True, idle=3))
    kinds = [next(k for k in ("version_registered", "alias_changed", "version_updated") if e.get(k)) for e in events]
    assert kinds == ["version_registered", "alias_changed", "alias_changed", "version_updated", "alias_changed"], events
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == sorted(sequences)
    latest, prod = events[1]["alias_changed"], events[2]["alias_changed"]
    assert (latest["alias"], latest["from_version"], latest["to_version"]) == ("latest", None, version.version)
    assert (prod["alias"], prod["to_version"]) == ("prod", version.version)
    assert events[3]["version_updated"]["description"] == "live"

    async def history_and_events() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        async with camshaft.aio.Client(cluster.coordinator, cluster.explainer, timeout=60) as acs:
            history = await acs.models.history("watched-py", alias="prod")
            streamed = [e async for e in acs.models.watch("watched-py", replay_retained=True, idle=3)]
            return history, streamed

    async_history, async_events = asyncio.run(history_and_events())
    assert len(async_history) == 2
    assert [e["sequence"] for e in async_events] == [e["sequence"] for e in events]

    # The same as Server-Sent Events, resumable by Last-Event-ID.
    url = f"http://{cluster.coordinator}/v1/registry/events"
    with requests.get(
        url, params={"name": "watched-py", "replay_retained": "true"}, stream=True, timeout=30
    ) as answer:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/event-stream")
        seen: list[dict[str, str]] = []
        current: dict[str, str] = {}
        for line in answer.iter_lines(decode_unicode=True):
            if line == "":
                if "data" in current:
                    seen.append(current)
                current = {}
                if len(seen) == 5:
                    break
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value
    assert [int(e["id"]) for e in seen] == sequences
    # ctl prints the history too.
    shown = cluster.ctl("models", "history", "watched-py").stdout
    assert shown.count("anonymous") == 2, shown
    # A bad alias filter is the caller's mistake.
    answer = requests.get(f"http://{cluster.coordinator}/v1/models/watched-py/history", params={"alias": "a b"}, timeout=30)
    assert answer.status_code == 400, answer.text
    answer = requests.get(f"http://{cluster.coordinator}/v1/models/watched-py/history", timeout=30)
    assert [c["alias"] for c in answer.json()["changes"]] == ["prod", "prod"]
