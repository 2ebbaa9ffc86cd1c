"""TLS (mutual) and bearer tokens: a ``camshaft up`` configured as in the
README's "Security" section, with a viewer and an editor in a tokens file."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import QUICK_JOB, Cluster, start_cluster

import camshaft

VIEWER = "viewer-token-0123456789"
EDITOR = "editor-token-0123456789"


def make_pki(folder: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    for name, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "subjectAltName=DNS:client\nextendedKeyUsage=clientAuth\n"),
    ):
        (folder / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + extensions)
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pki = tmp_path_factory.mktemp("pki")
    make_pki(pki)
    (pki / "tokens.csv").write_text(f"# token,name,role\n{VIEWER},vera,viewer\n{EDITOR},eddie,editor\n")
    (pki / "editor-token").write_text(EDITOR + "\n")
    config = f"""
auth_tokens_file = "{pki}/tokens.csv"

[tls]
cert = "{pki}/server.pem"
key = "{pki}/server.key"
client_ca = "{pki}/ca.pem"
ca = "{pki}/ca.pem"

[worker.tls]
ca = "{pki}/ca.pem"
cert = "{pki}/client.pem"
key = "{pki}/client.key"
"""
    cluster = start_cluster(
        tmp_path_factory.mktemp("secured"),
        config,
        client_options=dict(tls={"ca": pki / "ca.pem", "cert": pki / "client.pem", "key": pki / "client.key"},
                            token=VIEWER),
    )  # fmt: skip
    try:
        yield cluster, pki
    finally:
        cluster.stop()


def test_tls_and_tokens(secured: tuple[Cluster, Path]) -> None:
    cluster, pki = secured
    mutual = {"ca": str(pki / "ca.pem"), "cert": str(pki / "client.pem"), "key": str(pki / "client.key")}

    def client(**kwargs: object) -> camshaft.Client:
        kwargs.setdefault("retries", 0)
        kwargs.setdefault("timeout", 30)
        return camshaft.Client(cluster.coordinator, cluster.explainer, **kwargs)  # type: ignore[arg-type]

    # A viewer may look but not submit.
    viewer = client(tls=mutual, token=VIEWER)
    assert viewer.workers.list()
    with pytest.raises(camshaft.PermissionDenied):
        viewer.submit_job(**QUICK_JOB)  # type: ignore[arg-type]
    # An editor (token from a file) may submit: this spec is refused for what it is, not for who sent it.
    editor = client(tls=camshaft.TLS(**mutual), token_file=pki / "editor-token")
    with pytest.raises(camshaft.InvalidArgument):
        editor.submit_job(**dict(QUICK_JOB, epochs=0))  # type: ignore[arg-type]
    assert isinstance(editor.status()["explainer"], camshaft.ServerInfo)
    # No token: the client certificate names no principal here.
    with pytest.raises(camshaft.Unauthenticated):
        client(tls=mutual).workers.list()
    # Plaintext, or TLS without the client certificate, does not get through.
    with pytest.raises(camshaft.Unavailable):
        client(tls=False, token=VIEWER).workers.list()
    with pytest.raises(camshaft.Unavailable):
        client(tls={"ca": str(pki / "ca.pem")}, token=VIEWER).workers.list()


def test_the_environment_ctl_reads(secured: tuple[Cluster, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, pki = secured
    monkeypatch.setenv("CAMSHAFT_COORDINATOR", f"https://{cluster.coordinator}")
    monkeypatch.setenv("CAMSHAFT_EXPLAINER", f"https://{cluster.explainer}")
    monkeypatch.setenv("CAMSHAFT_TLS_CA", str(pki / "ca.pem"))
    monkeypatch.setenv("CAMSHAFT_TLS_CERT", str(pki / "client.pem"))
    monkeypatch.setenv("CAMSHAFT_TLS_KEY", str(pki / "client.key"))
    monkeypatch.setenv("CAMSHAFT_TOKEN_FILE", str(pki / "editor-token"))
    with camshaft.Client(retries=0, timeout=30) as cs:
        assert [w.worker_id for w in cs.workers.list()]
        assert "explainer" in cs.server_info("explainer").roles


def test_http_json_over_mutual_tls(secured: tuple[Cluster, Path]) -> None:
    """The JSON routes share the port's TLS: HTTP/1.1 clients (requests)
    negotiate it by ALPN, and the coordinator reaches the explainer for
    forwarded explain calls over the same mutual TLS."""
    import requests

    cluster, pki = secured
    tls = {"verify": str(pki / "ca.pem"), "cert": (str(pki / "client.pem"), str(pki / "client.key")), "timeout": 30}
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    jobs = requests.get(f"https://{cluster.coordinator}/v1/jobs", headers=viewer, **tls)
    assert jobs.status_code == 200 and "jobs" in jobs.json()
    assert requests.get(f"https://{cluster.coordinator}/v1/jobs", **tls).status_code == 401
    # Forwarded to the explainer, which answers NOT_FOUND (UNAVAILABLE would mean no connection).
    forwarded = requests.post(f"https://{cluster.coordinator}/v1/explain", json={"model": "nope"}, headers=viewer, **tls)
    assert forwarded.status_code == 404, forwarded.text
    assert requests.get(f"https://{cluster.explainer}/readyz", **tls).json() == {"status": "SERVING"}
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{cluster.coordinator}/healthz", verify=str(pki / "ca.pem"), timeout=30)
