"""Jobs through the SDK against a real cluster, checked against ``ctl``."""

from __future__ import annotations

import math
import re
import socket
import threading
import uuid

import pytest
from conftest import QUICK_JOB, Cluster, Trained

import camshaft

ROW_FIELDS = (
    "epoch",
    "stage",
    "train_loss",
    "valid_loss",
    "accuracy",
    "seconds",
    "images_per_sec",
    "attempt",
    "train_samples",
    "valid_samples",
    "world_size",
)


def snake(key: str) -> str:
    """``trainLoss`` → ``train_loss`` (ctl's JSON may use either spelling)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def ctl_rows(cluster: Cluster, job_id: str) -> list[dict[str, float]]:
    job = cluster.ctl_json("jobs", "get", job_id, "--json")
    assert isinstance(job, dict)
    history = job.get("history", [])
    return [{snake(k): v for k, v in row.items()} for row in history]


def test_watch_rows_are_ctls_epoch_rows(trained: Trained, cluster: Cluster, client: camshaft.Client) -> None:
    job = client.get_job(trained.job.id)
    assert job.state == "succeeded"
    assert job.model_version is not None and job.model_version.startswith("sdk:")
    expected = ctl_rows(cluster, job.id)
    assert len(expected) == QUICK_JOB["epochs"]
    # The rows the live watch yielded, and a replay of the finished job's events.
    for rows in (trained.live_rows, list(job.watch())):
        assert len(rows) == len(expected)
        for row, want in zip(rows, expected):
            for name in ROW_FIELDS:
                assert float(getattr(row, name)) == float(want.get(name, 0)), name
    # `history` is the same table as dicts.
    assert [{k: h[k] for k in ROW_FIELDS} for h in job.history] == [
        {k: getattr(r, k) for k in ROW_FIELDS} for r in trained.live_rows
    ]
    row = trained.live_rows[0]
    assert row.train_samples == QUICK_JOB["train_len"] and row.valid_samples == QUICK_JOB["valid_len"]
    assert 0.0 <= row.accuracy <= 1.0 and math.isfinite(row.train_loss)


def test_history_to_pandas(trained: Trained) -> None:
    pandas = pytest.importorskip("pandas")
    frame = trained.job.to_pandas()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame["epoch"]) == [r.epoch for r in trained.live_rows]
    assert list(frame["accuracy"]) == [r.accuracy for r in trained.live_rows]


def test_the_stored_spec_has_the_servers_defaults(trained: Trained) -> None:
    spec = trained.job.spec
    # What the SDK sent...
    assert (spec["arch"], spec["head"], spec["epochs"], spec["lr"]) == ("resnet18", "cam", 1, 3e-3)
    assert spec["dataset"]["synthetic"]["train_len"] == QUICK_JOB["train_len"]
    # ...and what it left unset, filled in by the coordinator, not the SDK.
    assert spec["weight_decay"] == pytest.approx(0.01)
    assert spec["keep_checkpoints"] == 2 and spec["flip"] is True


def test_events_logs_and_trace(trained: Trained, cluster: Cluster) -> None:
    events = list(trained.job.events())
    sequences = [e.sequence for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "state_changed" and events[-1].terminal_state == "succeeded"
    registered = [e.data for e in events if e.kind == "model_registered"]
    assert [v.ref for v in registered] == [trained.model]
    # Log lines are not among the events unless asked for.
    assert "log" not in kinds
    lines = list(trained.job.logs())
    assert lines and all(isinstance(line, camshaft.LogLine) for line in lines)
    assert {line.level for line in lines} <= {"error", "warn", "info", "debug", "trace"}
    # The step profile's timeline is ctl's, number for number.
    assert trained.job.trace() == cluster.ctl_json("jobs", "trace", trained.job.id)


def test_jobs_list_and_cancel(trained: Trained, client: camshaft.Client) -> None:
    ids = [j.id for j in client.jobs.list()]
    assert trained.job.id in ids
    assert trained.job.id in [j.id for j in client.jobs.list(states="succeeded")]
    assert trained.job.id not in [j.id for j in client.jobs.list(states=["failed", "cancelled"])]
    with pytest.raises(camshaft.FailedPrecondition):
        trained.job.cancel()


def test_spec_file_and_options_like_ctl(tmp_path, client: camshaft.Client) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "job.json"
    spec.write_text('{"dataset": "synthetic", "model": "cnn", "train-len": 64, "valid_len": 32, "epochs": 3}')
    job = client.submit_job(spec, epochs=2, image_size=32, alias="spec-test")
    try:
        assert job.spec["arch"] == "cnn" and job.spec["epochs"] == 2 and job.spec["aliases"] == ["spec-test"]
        assert job.spec["dataset"]["synthetic"]["train_len"] == 64
    finally:
        job.cancel("sdk test")
    assert job.state == "cancelled"
    with pytest.raises(camshaft.JobFailed, match="cancelled"):
        job.wait(timeout=30)


@pytest.mark.server_change
def test_submit_is_idempotent_with_a_request_id(client: camshaft.Client) -> None:
    # Depends on the coordinator honouring SubmitJobRequest.request_id.
    key = f"sdk-test-{uuid.uuid4()}"
    options = dict(QUICK_JOB, epochs=1, name="idem")
    first = client.submit_job(request_id=key, **options)  # type: ignore[arg-type]
    try:
        second = client.submit_job(request_id=key, **options)  # type: ignore[arg-type]
        if second.id != first.id:
            second.cancel("duplicate")
        assert second.id == first.id
        # Without a key (a fresh random one each time) every submit is a new job.
        third = client.submit_job(**options)  # type: ignore[arg-type]
        third.cancel("sdk test")
        assert third.id != first.id
    finally:
        first.cancel("sdk test")


def test_workers_and_status(client: camshaft.Client) -> None:
    workers = client.workers.list()
    assert len(workers) == 1 and workers[0].devices and workers[0].state in ("idle", "busy")
    status = client.status()
    coordinator, explainer = status["coordinator"], status["explainer"]
    assert isinstance(coordinator, camshaft.ServerInfo) and "coordinator" in coordinator.roles
    assert isinstance(explainer, camshaft.ServerInfo) and "explainer" in explainer.roles
    assert coordinator.live_workers == 1 and explainer.devices
    # A server that is not there is reported, not raised.
    down = camshaft.Client(coordinator="127.0.0.1:9", explainer=client.explainer, retries=1, timeout=5)
    assert isinstance(down.status()["coordinator"], camshaft.Unavailable)


class Proxy:
    """A TCP proxy to ``target`` whose connections can be cut at will."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.accepted += 1
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Breaks every open connection (as a lost network would)."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_a_watch_survives_a_broken_connection(cluster: Cluster) -> None:
    proxy = Proxy(cluster.coordinator)
    try:
        with camshaft.Client(f"127.0.0.1:{proxy.port}", cluster.explainer, timeout=120) as cs:
            # The lecture's CNN, quick but with a second or two between epochs.
            options = dict(QUICK_JOB, epochs=2, name="reconnect", model="cnn", head="linear", image_size=32)
            job = cs.submit_job(**dict(options, train_len=1024))  # type: ignore[arg-type]
            rows = []
            sequences = []
            for event in job.events():
                sequences.append(event.sequence)
                if event.kind == "epoch":
                    rows.append(event.data)
                    if len(rows) == 1:
                        proxy.cut()  # mid-job: the stream is open, waiting for epoch 1
        assert proxy.accepted >= 2, "the watch never reconnected"
        assert sequences == sorted(set(sequences)), "an event was seen twice or out of order"
        assert job.state == "succeeded"
        expected = ctl_rows(cluster, job.id)
        assert [(r.epoch, r.train_loss, r.accuracy) for r in rows] == [
            (w["epoch"], w["train_loss"], w["accuracy"]) for w in expected
        ]
    finally:
        proxy.close()
