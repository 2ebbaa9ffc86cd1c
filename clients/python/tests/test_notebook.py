"""The example notebook, run headless against the test cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cluster

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_and_shows_overlays(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The notebook reads the addresses from the environment its kernel inherits.
    monkeypatch.setenv("CAMSHAFT_COORDINATOR", cluster.coordinator)
    monkeypatch.setenv("CAMSHAFT_EXPLAINER", cluster.explainer)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), "commit the notebook without outputs"
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the overlay and the grid are shown as PNG"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "succeeded -> quickstart:" in text
