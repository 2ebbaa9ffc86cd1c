"""Issue 19's explanation options through every front door against a real
cluster: target layers, aug_smooth, Score-CAM, ROAD and the faithfulness
baseline from the SDK (sync and async), ``ctl explain`` and KServe's HTTP
``:explain``, each answer naming what ran."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import Cluster, Trained

import camshaft
import camshaft.aio


def test_layers_are_asked_and_named(trained: Trained, client: camshaft.Client, image_files: list[Path]) -> None:
    files = image_files[:2]
    default = client.explain(trained.model, files)
    # The quick job's CAM head at its last layer: CAM, 2×2 at 64 px.
    assert default[0].recipe == camshaft.Recipe("cam", ["layer4"], "fp32", None, False)
    assert default[0].maps[0].shape == (2, 2)
    # At layer3 CAM does not apply: unset resolves to Grad-CAM, 4×4, and says so.
    layer3 = client.explain(trained.model, files, layers="layer3")
    assert layer3[0].recipe is not None
    assert (layer3[0].recipe.method, layer3[0].recipe.target_layers) == ("grad_cam", ["layer3"])
    assert all(r.maps[0].shape == (4, 4) and r.maps[0].min() >= 0 for r in layer3)
    explicit = client.explain(trained.model, files, method="gradcam", layers=["layer3"])
    for a, b in zip(layer3, explicit, strict=True):
        assert np.array_equal(a.maps[0], b.maps[0])
    # Fused LayerCAM: at the finest layer, in TorchCAM's tanh range.
    fused = client.explain(trained.model, files, method="layercam", layers=["layer4", "layer2"])
    assert fused[0].recipe is not None and fused[0].recipe.target_layers == ["layer2", "layer4"]
    assert fused[0].maps[0].shape == (8, 8) and fused[0].maps[0].max() <= np.tanh(2.0) + 1e-6


def test_refusals_name_the_field(trained: Trained, client: camshaft.Client, image_files: list[Path]) -> None:
    with pytest.raises(camshaft.InvalidArgument) as bad:
        client.explain(trained.model, image_files[:1], layers="layer9")
    assert "layer1, layer2, layer3, layer4" in bad.value.message
    assert [v.field for v in bad.value.field_violations] == ["target_layers"]
    with pytest.raises(camshaft.InvalidArgument) as cam:
        client.explain(trained.model, image_files[:1], method="cam", layers="layer3")
    assert [v.field for v in cam.value.field_violations] == ["target_layers"]
    with pytest.raises(camshaft.InvalidArgument, match="faithfulness baseline"):
        client.explain(trained.model, image_files[:1], baseline="grey")


def test_smoothing_score_cam_road_and_baselines(
    trained: Trained, client: camshaft.Client, image_files: list[Path]
) -> None:
    smooth = client.explain(trained.model, image_files[:2], method="gradcam", aug_smooth=True)
    assert smooth[0].recipe is not None and smooth[0].recipe.aug_smooth
    assert all(0.0 <= r.maps[0].min() and r.maps[0].max() <= 1.0 for r in smooth)
    # Score-CAM at layer2 (128 channels: within the default budget).
    score = client.explain(trained.model, image_files[:1], method="scorecam", layers="layer2")
    assert score[0].recipe is not None and score[0].recipe.method == "score_cam"
    assert score[0].maps[0].shape == (8, 8) and score[0].maps[0].min() >= 0
    blur = client.explain(trained.model, image_files[:2], faithfulness="deletion", baseline="blur")
    mean = client.explain(trained.model, image_files[:2], faithfulness="deletion")
    assert blur[0].recipe is not None and blur[0].recipe.faithfulness_baseline == "blur"
    assert mean[0].recipe is not None and mean[0].recipe.faithfulness_baseline == "mean"
    assert [r.faithfulness[0] for r in blur] != [r.faithfulness[0] for r in mean]
    road = client.explain(trained.model, image_files[:2], faithfulness="road")
    assert all(r.faithfulness[0] is not None and -1.0 <= r.faithfulness[0] <= 1.0 for r in road)
    assert road[0].recipe is not None and road[0].recipe.faithfulness_baseline is None


def test_async_ctl_and_kserve_agree_with_the_sdk(
    trained: Trained, cluster: Cluster, client: camshaft.Client, image_files: list[Path], tmp_path: Path
) -> None:
    files = image_files[:2]
    options = dict(method="layercam", layers=["layer3"], aug_smooth=True, faithfulness="drop", baseline="black")
    sdk = client.explain(trained.model, files, **options)  # type: ignore[arg-type]

    async def run() -> list[camshaft.Explanation]:
        async with camshaft.aio.Client(cluster.coordinator, cluster.explainer, timeout=120) as cs:
            return await cs.explain(trained.model, files, **options)  # type: ignore[arg-type]

    aio = asyncio.run(run())
    lines = cluster.ctl(
        "explain", "--model", trained.model, "--out", str(tmp_path), "--json", "--method", "layercam",
        "--layer", "layer3", "--aug-smooth", "--faithfulness", "drop", "--baseline", "black",
        *map(str, files),
    ).stdout.splitlines()
    ctl = [json.loads(line)["result"] for line in lines]
    answer = requests.post(
        f"http://{cluster.explainer}/v1/models/{trained.model}:explain",
        json={
            "instances": [{"b64": base64.b64encode(p.read_bytes()).decode(), "id": p.name} for p in files],
            "parameters": {
                "method": "layercam",
                "target_layers": ["layer3"],
                "aug_smooth": True,
                "faithfulness": "FAITHFULNESS_METRIC_AVERAGE_DROP",
                "faithfulness_baseline": "FAITHFULNESS_BASELINE_BLACK",
            },
        },
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["recipe"] == {
        "method": "EXPLAIN_METHOD_LAYER_CAM",
        "targetLayers": ["layer3"],
        "precision": "fp32",
        "faithfulnessBaseline": "FAITHFULNESS_BASELINE_BLACK",
        "augSmooth": True,
    }
    assert sdk[0].recipe == aio[0].recipe == camshaft.Recipe("layer_cam", ["layer3"], "fp32", "black", True)
    for s, a, c, h in zip(sdk, aio, ctl, body["results"], strict=True):
        assert s.maps[0].shape == (4, 4)
        for other in (a.maps[0], np.float32(c["maps"][0]["values"]).reshape(4, 4),
                      np.float32(h["maps"][0]["values"]).reshape(4, 4)):
            assert np.array_equal(s.maps[0], other), "every front door gets the same map"
        assert s.faithfulness[0] == a.faithfulness[0] == pytest.approx(h["maps"][0]["faithfulness"])
