"""An overloaded explainer: RESOURCE_EXHAUSTED as a typed error with its
retry hint, and the SDK's retries hiding it. Runs on a second cluster whose
explainer admits one request at a time (``TINY_QUEUE_CONFIG``), serving a
small CNN imported through the SDK from a PyTorch ``.pth``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Cluster, shape_image

import camshaft

SIZE = 32  # the CNN's input: conv 5×5 then a 2×2 pool → 128 × 14 × 14 features


@pytest.fixture(scope="session")
def cnn(tiny_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lecture's CNN, random weights, saved by torch.save and imported."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 128, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(128 * 14 * 14, 2),
    )
    path = tmp_path_factory.mktemp("weights") / "cnn.pth"
    torch.save(model.state_dict(), path)
    with tiny_cluster.client() as cs:
        version = cs.models.import_weights(
            path,
            name="cnn",
            arch="cnn",
            head="linear",
            classes=["circle", "square"],
            image_size=SIZE,
            aliases=["prod"],
            metrics={"accuracy": 0.5},
        )
        assert version.spec.normalization == "none"  # ctl's default for the CNN
        assert version.lineage.imported_from == "cnn.pth" and version.lineage.metrics == {"accuracy": 0.5}
        assert "prod" in version.aliases
        # What was stored is the state dict's tensors, converted without torch.
        assert version.lineage.weights_size_bytes > 128 * 14 * 14 * 2 * 4
    return version.ref


def burst(n: int, call: Callable[[], Any]) -> list[Any]:
    """Runs ``call`` on ``n`` threads released at once; each result or error."""
    gate = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = call()
        except Exception as e:  # noqa: BLE001 - collected for the assertions
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def image() -> np.ndarray:
    return shape_image("square", SIZE, 0)


def test_an_overloaded_explainer_is_resource_exhausted_with_a_hint(tiny_cluster: Cluster, cnn: str) -> None:
    cs = tiny_cluster.client(retries=0)
    # Deletion AUC: 22 passes per image, the whole queue of this explainer.
    explain = lambda: cs.explain(cnn, [image()], faithfulness="deletion")  # noqa: E731
    explain()  # the model is loaded before the burst
    for _ in range(5):
        results = burst(6, explain)
        refused = [r for r in results if isinstance(r, camshaft.ResourceExhausted)]
        if refused:
            break
    else:
        pytest.fail(f"6 requests at once never overloaded the explainer: {results}")
    assert all(isinstance(r, (list, camshaft.ResourceExhausted)) for r in results), results
    error = refused[0]
    assert error.code.name == "RESOURCE_EXHAUSTED" and error.server and "explainer" in error.server
    assert error.retry_after is not None and error.retry_after >= 0
    assert error.retryable


@dataclass(frozen=True)
class CountingPolicy(camshaft.RetryPolicy):
    """The SDK's policy, recording each retry it allows."""

    seen: list[str] = field(default_factory=list, compare=False)

    def delay(self, error: camshaft.CamshaftError, attempt: int) -> float:
        self.seen.append(error.code.name if error.code else "?")
        return super().delay(error, attempt)


def test_retries_hide_a_busy_explainer(tiny_cluster: Cluster, cnn: str) -> None:
    cs = tiny_cluster.client(retries=20)
    policy = CountingPolicy(retries=20)
    for server in (cs._coordinator, cs._explainer):
        server.policy = policy
    explain = lambda: cs.explain(f"{cnn.split(':')[0]}@prod", [image()], faithfulness="deletion")  # noqa: E731
    for _ in range(5):
        results = burst(6, explain)
        if policy.seen:
            break
    assert policy.seen, "no request was ever refused, so none was retried"
    assert set(policy.seen) == {"RESOURCE_EXHAUSTED"}
    # Every call succeeded in the end, with the same answer.
    errors = [r for r in results if not isinstance(r, list)]
    assert not errors, errors
    first = results[0][0]
    for [result] in results:
        assert result.ok and result.predicted_class == first.predicted_class
        np.testing.assert_array_equal(result.maps[0], first.maps[0])
        assert result.faithfulness[0] == first.faithfulness[0]


def test_a_batch_over_the_request_limit_is_split(tiny_cluster: Cluster, cnn: str) -> None:
    # This explainer takes one image per request; the SDK finds out and splits.
    cs = tiny_cluster.client()
    images = [shape_image("circle", SIZE, i) for i in range(3)]
    out = cs.explain(cnn, images)
    assert len(out) == 3 and all(r.ok for r in out)
    for i, result in enumerate(out):
        [alone] = cs.explain(cnn, images[i])
        np.testing.assert_array_equal(alone.maps[0], result.maps[0])


def test_weights_that_do_not_fit_are_refused(tiny_cluster: Cluster, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "three.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 128, 5)).state_dict(), path)
    with tiny_cluster.client() as cs, pytest.raises(camshaft.InvalidArgument, match="4.weight"):
        cs.models.import_weights(path, name="broken", arch="cnn", head="linear", classes=["a", "b"], image_size=SIZE)
