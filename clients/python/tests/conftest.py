"""The SDK's test harness: the real ``camshaft up`` on loopback ports (port 0,
read back from its first stdout line, as the Rust cluster tests do) over a
temporary data directory, once per session, and the real ``ctl`` to compare
with.

The binaries are ``CAMSHAFT_BIN`` and ``CTL_BIN`` (``scripts/test-python``
points them at ``target/debug``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import camshaft

REPO = Path(__file__).resolve().parents[3]

# The job every cluster test shares: the Rust cluster tests' quick job
# (ResNet18 with the CAM head on 256 synthetic 64 px images), one epoch.
QUICK_JOB = dict(
    dataset="synthetic",
    model="resnet18",
    head="cam",
    image_size=64,
    train_len=256,
    valid_len=64,
    batch_size=32,
    lr=3e-3,
    seed=1,
    epochs=1,
)

# An explainer with room for one 32 px image with deletion AUC (1 + 21
# passes) at a time: a second request at once is RESOURCE_EXHAUSTED.
TINY_QUEUE_CONFIG = """
[explainer]
max_images_per_request = 1
max_queued_images = 1
max_compute_units_per_request = 22
max_queued_compute_units = 22
max_model_input_size = 64
"""


def binary(env: str, name: str) -> Path:
    path = Path(os.environ.get(env) or REPO / "target" / "debug" / name)
    if not path.is_file():
        pytest.exit(f"{path} is not built: run scripts/test-python (or cargo build --bins)", returncode=2)
    return path


@dataclass
class Cluster:
    """A running ``camshaft up``."""

    process: subprocess.Popen[bytes]
    coordinator: str
    explainer: str
    data_dir: Path
    log: Path
    client_options: dict[str, object] = field(default_factory=dict)

    def client(self, **kwargs: object) -> camshaft.Client:
        """An SDK client of this cluster (with its TLS and token, if any)."""
        options: dict[str, object] = {"timeout": 120, **self.client_options, **kwargs}
        return camshaft.Client(coordinator=self.coordinator, explainer=self.explainer, **options)  # type: ignore[arg-type]

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, CAMSHAFT_COORDINATOR=self.coordinator, CAMSHAFT_EXPLAINER=self.explainer)
        out = subprocess.run(
            [str(binary("CTL_BIN", "ctl")), *args], env=env, capture_output=True, text=True, timeout=300
        )
        if check and out.returncode != 0:
            raise AssertionError(f"ctl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out

    def ctl_json(self, *args: str) -> object:
        return json.loads(self.ctl(*args).stdout)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # Its own process group (start_new_session): the whole group goes.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def start_cluster(
    data_dir: Path, config: str | None = None, client_options: dict[str, object] | None = None
) -> Cluster:
    """Starts ``camshaft up`` over ``data_dir`` (with a config file's text) and
    waits until its worker has registered; ``client_options`` are what an SDK
    client needs to reach it (TLS, token)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(binary("CAMSHAFT_BIN", "camshaft")),
        "up",
        "--data-dir",
        str(data_dir),
        "--coordinator-addr",
        "127.0.0.1:0",
        "--explainer-addr",
        "127.0.0.1:0",
        "--device",
        "cpu",
        "--explainer-device",
        "cpu",
    ]
    if config is not None:
        path = data_dir / "config.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    log = data_dir / "camshaft-up.log"
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=dict(os.environ, RUST_LOG="info"),
        start_new_session=True,
    )
    assert process.stdout is not None
    # "camshaft up: coordinator A, explainer B, ..."; then keep draining stdout.
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(120)
    line = first[0].decode() if first else ""

    def after(key: str) -> str | None:
        if key not in line:
            return None
        return line.split(key, 1)[1].split(",", 1)[0].strip()

    coordinator, explainer = after("coordinator "), after("explainer ")
    cluster = Cluster(process, coordinator or "", explainer or "", data_dir, log, dict(client_options or {}))
    if not coordinator or not explainer:
        cluster.stop()
        raise RuntimeError(f"camshaft up did not start: {line!r}\n{cluster.server_log()}")
    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()  # type: ignore[union-attr]
    # Ready once the coordinator lists its worker.
    client = cluster.client(timeout=5)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.workers.list():
                break
        except camshaft.CamshaftError:
            pass
        if time.monotonic() > deadline:
            cluster.stop()
            raise RuntimeError(f"no worker registered in 60 s:\n{cluster.server_log()}")
        time.sleep(0.2)
    client.close()
    return cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's ``camshaft up`` (default config)."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def tiny_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second ``camshaft up`` whose explainer admits one request at a time."""
    c = start_cluster(tmp_path_factory.mktemp("tiny"), TINY_QUEUE_CONFIG)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture()
def client(cluster: Cluster) -> Iterator[camshaft.Client]:
    with cluster.client() as c:
        yield c


@dataclass
class Trained:
    """The quick job, and the rows its live watch yielded."""

    job: camshaft.Job
    live_rows: list[camshaft.EpochRow]

    @property
    def model(self) -> str:
        assert self.job.model_version
        return self.job.model_version


@pytest.fixture(scope="session")
def trained(cluster: Cluster) -> Trained:
    """The quick job (with step profiles), submitted through the SDK and
    followed live with ``Job.watch`` to its end."""
    cs = cluster.client()
    job = cs.submit_job(name="sdk", profile_steps=True, **QUICK_JOB)  # type: ignore[arg-type]
    try:
        rows = list(job.watch())
        job.wait(timeout=600)
    except camshaft.CamshaftError as e:
        raise AssertionError(f"{e}\n{cluster.server_log()}") from e
    return Trained(job, rows)


def shape_image(kind: str, size: int, seed: int) -> np.ndarray:
    """A picture like the synthetic data set's: a light shape on a dark
    background, at a random place."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 8, size // 4))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    fill = tuple(int(v) for v in rng.integers(160, 256, 3))
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    return np.asarray(image)


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six 64 px PNGs of circles and squares."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(6):
        kind = "circle" if i % 2 == 0 else "square"
        path = folder / f"{kind}-{i}.png"
        Image.fromarray(shape_image(kind, 64, i)).save(path)
        paths.append(path)
    return paths
