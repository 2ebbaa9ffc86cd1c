"""Explaining images through the SDK against a real cluster, checked against ``ctl explain``."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import Cluster, Trained, shape_image
from PIL import Image

import camshaft


def ctl_explain(cluster: Cluster, model: str, files: list[Path], out: Path, *flags: str) -> dict[str, tuple[str, str]]:
    """``ctl explain``'s overlays and lines: file name → (predicted, p)."""
    result = cluster.ctl("explain", "--model", model, "--out", str(out), *flags, *map(str, files))
    lines = {}
    for line in result.stdout.splitlines():
        match = re.match(r"(\S+)\s+predicted=(\S+)\s+p=([0-9.]+)", line)
        if match:
            lines[Path(match.group(1)).name] = (match.group(2), match.group(3))
    return lines


def test_results_match_ctl_explain(
    trained: Trained, cluster: Cluster, client: camshaft.Client, image_files: list[Path], tmp_path: Path
) -> None:
    out = client.explain(trained.model, image_files, method="gradcam", top_k=2, overlay=True)
    ctl_lines = ctl_explain(cluster, trained.model, image_files, tmp_path, "--method", "gradcam", "--top-k", "2")
    ctl_json = cluster.ctl(
        "explain", "--model", trained.model, "--out", str(tmp_path / "json"), "--json",
        "--method", "gradcam", "--top-k", "2", *map(str, image_files),
    ).stdout.splitlines()
    ctl_results = [json.loads(line) for line in ctl_json]
    assert [Path(r["file"]).name for r in ctl_results] == [p.name for p in image_files]
    assert [r.id for r in out] == [p.name for p in image_files]
    for result, path, ctl in zip(out, image_files, ctl_results, strict=True):
        assert result.ok, result.error
        assert result.model_version == trained.model
        # The maps are ctl's, bit for bit (its --json prints the raw values).
        ctl_maps = [
            np.array(m["values"], dtype=np.float32).reshape(m["height"], m["width"]) for m in ctl["result"]["maps"]
        ]
        assert len(ctl_maps) == len(result.maps) == 2
        for ours, theirs in zip(result.maps, ctl_maps, strict=True):
            assert np.array_equal(ours, theirs)
        assert np.array_equal(np.array(ctl["result"]["probabilities"], dtype=np.float32), result.probabilities)
        # ctl writes the explainer's overlay PNG as it came: the SDK's is the same, byte for byte.
        assert result.overlay_png == (tmp_path / path.name).read_bytes()
        assert ctl_lines[path.name] == (result.predicted_label, f"{result.probability:.2f}")
        # Two maps (top_k), raw float32 at the feature-map resolution of a 64 px ResNet.
        assert [m.shape for m in result.maps] == [(2, 2), (2, 2)]
        assert all(m.dtype == np.float32 for m in result.maps)
        assert result.map_classes[0] == result.predicted_class and len(set(result.map_classes)) == 2
        assert result.probabilities.dtype == np.float32
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert int(np.argmax(result.probabilities)) == result.predicted_class
        assert result.class_names == ["circle", "square"]
        overlay = result.overlay
        assert isinstance(overlay, Image.Image) and overlay.size == (64, 64)
        assert result._repr_png_() == result.overlay_png


def test_every_kind_of_input_gives_the_same_maps(
    trained: Trained, client: camshaft.Client, image_files: list[Path]
) -> None:
    path = image_files[0]
    pixels = np.asarray(Image.open(path).convert("RGB"))
    floats = pixels.astype(np.float32) / 255.0
    inputs = [str(path), path, Image.open(path), pixels, floats, pixels.transpose(2, 0, 1), path.read_bytes()]
    out = client.explain(trained.model, inputs, top_k=2)
    reference = out[0]
    assert reference.ok and reference.overlay is None  # no overlay unless asked
    batch = client.explain(trained.model, np.stack([pixels, pixels]), top_k=2)  # N × H × W × C
    assert len(batch) == 2
    for result in out[1:] + batch:
        assert result.ok, result.error
        assert result.predicted_class == reference.predicted_class
        np.testing.assert_array_equal(result.probabilities, reference.probabilities)
        for a, b in zip(result.maps, reference.maps):
            np.testing.assert_array_equal(a, b)


def test_a_bad_image_gets_its_own_error(trained: Trained, client: camshaft.Client, image_files: list[Path]) -> None:
    out = client.explain(trained.model, [image_files[0], b"not an image", image_files[1]], ids=["a", "b", "c"])
    assert [r.id for r in out] == ["a", "b", "c"]
    assert out[0].ok and out[2].ok
    assert not out[1].ok and out[1].error_kind == "undecodable" and out[1].maps == []
    with pytest.raises(camshaft.ImageError):
        out[1].raise_for_error()


def test_large_batches_are_streamed_in_order(trained: Trained, client: camshaft.Client) -> None:
    # 70 images: more than one request holds (64), so they go over ExplainStream.
    images = [shape_image("circle" if i % 3 else "square", 64, 100 + i) for i in range(70)]
    ids = [f"img-{i}" for i in range(70)]
    out = client.explain(trained.model, images, ids=ids)
    assert [r.id for r in out] == ids and all(r.ok for r in out)
    # In input order: each result is its own image's, as explained alone.
    for i in (0, 63, 64, 69):
        alone = client.explain(trained.model, images[i])[0]
        np.testing.assert_array_equal(alone.maps[0], out[i].maps[0])
        np.testing.assert_array_equal(alone.probabilities, out[i].probabilities)


def test_targets_by_index_and_by_name(trained: Trained, client: camshaft.Client, image_files: list[Path]) -> None:
    by_name = client.explain(trained.model, image_files[:2], target="square")
    by_index = client.explain(trained.model, image_files[:2], target=[1, "square"])
    for a, b in zip(by_name, by_index):
        assert a.map_classes == [1] and b.map_classes == [1]
        np.testing.assert_array_equal(a.maps[0], b.maps[0])
    with pytest.raises(camshaft.InvalidArgument, match="not a class"):
        client.explain(trained.model, image_files[:1], target="triangle")


def test_faithfulness_and_upsampled_maps(trained: Trained, client: camshaft.Client, image_files: list[Path]) -> None:
    [result] = client.explain(trained.model, image_files[:1], faithfulness="drop", upsampled=True, top_k=2)
    assert len(result.faithfulness) == 2 and all(f is not None and 0.0 <= f <= 1.0 for f in result.faithfulness)
    assert [m.shape for m in result.upsampled_maps] == [(64, 64), (64, 64)]


def test_overlays_decode_as_png(trained: Trained, client: camshaft.Client, image_files: list[Path]) -> None:
    [result] = client.explain(trained.model, image_files[:1], overlay=True, colormap="viridis", alpha=1.0)
    image = Image.open(io.BytesIO(result.overlay_png))
    assert image.format == "PNG" and image.size == (64, 64)
