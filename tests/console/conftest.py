"""The console's browser test harness: a real ``camshaft up`` on loopback
ports (read back from its first stdout line), Debian's chromium driven by
selenium through Debian's chromedriver (so nothing is downloaded), and a
folder for screenshots.

Environment: ``CAMSHAFT_BIN`` (default ``target/debug/camshaft``),
``CONSOLE_SCREENSHOTS`` (default ``target/console-screenshots``),
``CHROMIUM`` / ``CHROMEDRIVER`` (default ``/usr/bin/chromium`` and
``/usr/bin/chromedriver``), ``CONSOLE_UPDATE_DOCS=1`` to rewrite
``docs/console-job.png`` and ``docs/console-explain.png``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    """A running ``camshaft up``."""

    process: subprocess.Popen[bytes]
    coordinator: str
    explainer: str
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.coordinator}/"

    def api(self, method: str, path: str, body: object | None = None, token: str | None = None) -> dict:
        """One call of the coordinator's HTTP/JSON API; raises on an error status."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"http://{self.coordinator}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                text = answer.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from e
        return json.loads(text) if text else {}

    def wait_job(self, job_id: str, timeout: float = 180, token: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.api("GET", f"/v1/jobs/{job_id}", token=token)["job"]
            if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s\n{self.server_log()}")
            time.sleep(0.3)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def start_cluster(data_dir: Path, config: str | None = None, token: str | None = None) -> Cluster:
    """Starts ``camshaft up`` over ``data_dir`` and waits for its worker."""
    binary = Path(os.environ.get("CAMSHAFT_BIN") or REPO / "target" / "debug" / "camshaft")
    if not binary.is_file():
        pytest.exit(f"{binary} is not built: run scripts/test-console (or cargo build --bins)", returncode=2)
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(binary), "up", "--data-dir", str(data_dir),
        "--coordinator-addr", "127.0.0.1:0", "--explainer-addr", "127.0.0.1:0",
        "--device", "cpu", "--explainer-device", "cpu",
    ]  # fmt: skip
    if config is not None:
        (data_dir / "config.toml").write_text(config)
        args += ["--config", str(data_dir / "config.toml")]
    log = data_dir / "camshaft-up.log"
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=log.open("wb"), env=dict(os.environ, RUST_LOG="info"),
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(120)
    line = first[0].decode() if first else ""

    def after(key: str) -> str:
        return line.split(key, 1)[1].split(",", 1)[0].strip() if key in line else ""

    cluster = Cluster(process, after("coordinator "), after("explainer "), data_dir, log)
    if not cluster.coordinator:
        cluster.stop()
        raise RuntimeError(f"camshaft up did not start: {line!r}\n{cluster.server_log()}")
    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while True:
        try:
            if cluster.api("GET", "/v1/workers", token=token).get("workers"):
                return cluster
        except (AssertionError, OSError):
            pass
        if time.monotonic() > deadline:
            cluster.stop()
            raise RuntimeError(f"no worker registered in 60 s:\n{cluster.server_log()}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or REPO / "target" / "console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


def make_browser(downloads: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1360,900", "--force-device-scale-factor=1", "--lang=en-GB",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
    ):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="session")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    driver = make_browser(downloads)
    try:
        yield driver
    finally:
        driver.quit()


def png_bytes(width: int, height: int, kind: str) -> bytes:
    """A light circle or square on a dark background, as a PNG, written
    without dependencies (zlib + a hand-made PNG container)."""
    import struct
    import zlib

    rows = []
    cx, cy, r = width * 0.55, height * 0.45, min(width, height) * 0.28
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r if kind == "circle" else abs(x - cx) <= r and abs(y - cy) <= r
            row += bytes((235, 220, 90) if inside else (25, 30, 45))
        rows.append(bytes(row))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    out.write(chunk(b"IDAT", zlib.compress(b"".join(rows))))
    out.write(chunk(b"IEND", b""))
    return out.getvalue()


def safetensors_bytes(tensors: dict[str, list[int]]) -> bytes:
    """A safetensors file of float32 zeros with these names and shapes."""
    import struct

    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(offset)
