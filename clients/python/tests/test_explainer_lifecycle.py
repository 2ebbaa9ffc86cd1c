"""The explainer's lifecycle through the SDK and HTTP against a real
``camshaft up``: a ``preload`` reference keeps ``/readyz`` at 503 until its
model exists, is loaded and warmed up; then ``server_info`` shows it
preloaded with its own ``models.<name>`` settings, and the first request
loads nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from conftest import QUICK_JOB, Cluster, shape_image, start_cluster

import camshaft

CONFIG = """
[explainer]
preload = ["lifecycle@latest"]
warmup_batch_sizes = [1, 2]

[explainer.models.lifecycle]
max_batch = 3
max_batch_wait_ms = 4
"""


@pytest.fixture(scope="module")
def preloading(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("preload"), CONFIG)
    try:
        yield c
    finally:
        c.stop()


def readyz(address: str) -> int:
    return requests.get(f"http://{address}/readyz", timeout=30).status_code


def test_preload_holds_readiness_until_the_model_is_warm(preloading: Cluster) -> None:
    with preloading.client() as cs:
        info = cs.server_info("explainer")
        [state] = info.preload
        assert state.model_ref == "lifecycle@latest" and not state.ready
        assert readyz(preloading.explainer) == 503
        assert info.loaded_models == []

        job = cs.submit_job(name="lifecycle", **QUICK_JOB)  # type: ignore[arg-type]
        job.wait(timeout=600)
        deadline = time.monotonic() + 120
        while not (info := cs.server_info("explainer")).preload[0].ready:
            assert time.monotonic() < deadline, f"never warm: {info.preload}"
            time.sleep(0.2)
        assert info.preload[0].model_version == "lifecycle:1" and info.preload[0].error == ""
        [loaded] = info.loaded_models
        assert loaded.model_version == "lifecycle:1" and loaded.preloaded
        assert loaded.settings == camshaft.ModelServingSettings(
            max_batch=3, max_batch_wait_ms=4, replicas=1, precision="fp32"
        )
        deadline = time.monotonic() + 30
        while readyz(preloading.explainer) != 200:
            assert time.monotonic() < deadline, "readyz never turned 200"
            time.sleep(0.1)

        # The first request is answered by the warm version: still one load.
        [result] = cs.explain("lifecycle@latest", [shape_image("circle", 64, 1)])
        assert result.error is None and result.model_version == "lifecycle:1"
        assert np.isfinite(result.probabilities).all()
        assert [m.model_version for m in cs.server_info("explainer").loaded_models] == ["lifecycle:1"]

    # The HTTP/JSON status route shows the same fields.
    status = requests.get(f"http://{preloading.coordinator}/v1/explainer/status", timeout=30).json()
    assert status["preload"][0]["ready"] is True
    [model] = status["loadedModels"]
    assert model["preloaded"] is True and model["settings"]["maxBatch"] == 3
