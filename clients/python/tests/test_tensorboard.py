"""The coordinator's TensorBoard event files, read back with TensorBoard's
own reader: ``camshaft up`` writes each job's epoch rows under
``<data_dir>/tensorboard/<job_id>/``."""

from __future__ import annotations

import math

from conftest import QUICK_JOB, Cluster, Trained
from tensorboard.backend.event_processing import event_accumulator

PHASES = ("data", "forward", "backward", "allreduce", "optimizer")


def load_run(cluster: Cluster, job_id: str) -> event_accumulator.EventAccumulator:
    run = cluster.data_dir / "tensorboard" / job_id
    assert run.is_dir(), f"no run directory {run}: {sorted(p.name for p in run.parent.glob('*'))}"
    files = list(run.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def test_every_epoch_row_is_a_tensorboard_scalar(trained: Trained, cluster: Cluster) -> None:
    acc = load_run(cluster, trained.job.id)
    rows = trained.live_rows
    assert len(rows) == QUICK_JOB["epochs"]
    expected = {
        "train/loss": [r.train_loss for r in rows],
        "valid/loss": [r.valid_loss for r in rows],
        "valid/accuracy": [r.accuracy for r in rows],
        "train/learning_rate": [r.lr for r in rows],
        "train/images_per_sec": [r.images_per_sec for r in rows],
        "epoch/seconds": [r.seconds for r in rows],
    }
    tags = set(acc.Tags()["scalars"])
    assert set(expected) <= tags, tags
    for tag, values in expected.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r.epoch for r in rows], tag
        for event, want in zip(events, values):
            # Written as float32 (`simple_value`).
            assert math.isclose(event.value, want, rel_tol=1e-6, abs_tol=1e-6), (tag, event.value, want)
    # A one-cycle schedule ends far below its peak, never at 0.
    assert 0 < rows[-1].lr < QUICK_JOB["lr"]
    # The job was profiled: seconds per step of each phase, averaged over ranks.
    for phase in PHASES:
        assert f"step_time/{phase}" in tags, tags
    row = rows[-1]
    forward = sum(p["total_seconds"]["forward"] / max(int(p["steps"]), 1) for p in row.step_profiles) / len(
        row.step_profiles
    )
    [event] = acc.Scalars("step_time/forward")
    assert math.isclose(event.value, forward, rel_tol=1e-5), (event.value, forward)
    assert event.value > 0
