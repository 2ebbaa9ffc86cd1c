"""The HTTP side of each port, with plain ``requests`` as curl users and
other languages' clients see it: the coordinator's REST API (jobs, events as
Server-Sent Events with resume, models, uploads), KServe's V1 data plane on
the explainer, google.rpc.Status errors with their HTTP statuses, the
OpenAPI documents checked by a real validator, and a gRPC-Web call framed
as the gRPC-Web spec says."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import QUICK_JOB, Cluster, Trained, shape_image
from openapi_spec_validator import validate
from PIL import Image
from test_overload import cnn  # noqa: F401 - the tiny cluster's model (a fixture)

from camshaft.v1 import common_pb2


def url(address: str, path: str) -> str:
    return f"http://{address}{path}"


def error_of(response: requests.Response) -> dict[str, Any]:
    """The google.rpc.Status body of a failed answer."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= {"code", "message", "status", "details"}
    return body


def png_b64(array: np.ndarray) -> str:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def events(response: requests.Response) -> list[dict[str, str]]:
    """The events of a text/event-stream answer (comments skipped)."""
    out, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if current:
                out.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    return out


@pytest.mark.parametrize("side", ["coordinator", "explainer"])
def test_the_openapi_documents_are_valid(cluster: Cluster, side: str) -> None:
    document = requests.get(url(getattr(cluster, side), "/openapi.json"), timeout=30).json()
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"].startswith("3.1")
    # Generated from the route table: every route is there, with its method's
    # messages, and descriptions from the protos' comments.
    if side == "coordinator":
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/models/{name}/versions"} <= set(
            document["paths"]
        )
        submit = document["paths"]["/v1/jobs"]["post"]
        assert submit["operationId"] == "SubmitJob"
        assert submit["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/camshaft.v1.SubmitJobRequest"
        }
        assert "epochs" in document["components"]["schemas"]["camshaft.v1.JobSpec"]["properties"]
    else:
        assert {"/v1/models/{model}:predict", "/v1/models/{model}:explain", "/v1/explain"} <= set(document["paths"])
        assert document["components"]["schemas"]["camshaft.v1.ExplainRequest"]["description"]


def test_health_and_readiness_need_no_credential(cluster: Cluster) -> None:
    for address in (cluster.coordinator, cluster.explainer):
        assert requests.get(url(address, "/healthz"), timeout=30).json() == {"status": "SERVING"}
        assert requests.get(url(address, "/readyz"), timeout=30).status_code == 200


def test_jobs_over_http_match_the_sdk(cluster: Cluster, trained: Trained) -> None:
    job_id = trained.job.id
    got = requests.get(url(cluster.coordinator, f"/v1/jobs/{job_id}"), timeout=30)
    assert got.status_code == 200
    job = got.json()["job"]
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert [row["epoch"] for row in job["history"]] == [row.epoch for row in trained.live_rows]
    assert [np.float32(row["trainLoss"]) for row in job["history"]] == [
        np.float32(row.train_loss) for row in trained.live_rows
    ]
    # Filters by state, in proto names or ctl's short ones, and pages.
    done = requests.get(url(cluster.coordinator, "/v1/jobs?states=succeeded"), timeout=30).json()
    assert job_id in [j["id"] for j in done["jobs"]]
    running = requests.get(
        url(cluster.coordinator, "/v1/jobs?states=JOB_STATE_RUNNING&states=pending"), timeout=30
    ).json()
    assert job_id not in [j["id"] for j in running["jobs"]]
    bad = requests.get(url(cluster.coordinator, "/v1/jobs?pageSize=lots"), timeout=30)
    assert bad.status_code == 400
    assert error_of(bad)["details"][0]["fieldViolations"][0]["field"] == "page_size"
    missing = requests.get(url(cluster.coordinator, "/v1/jobs/j-999999"), timeout=30)
    assert missing.status_code == 404 and error_of(missing)["status"] == "NOT_FOUND"


def test_events_stream_and_resume(cluster: Cluster, trained: Trained) -> None:
    path = url(cluster.coordinator, f"/v1/jobs/{trained.job.id}/events")
    with requests.get(path, stream=True, timeout=60) as response:
        assert response.headers["content-type"] == "text/event-stream"
        every = events(response)
    ids = [int(e["id"]) for e in every]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] == 1
    assert every[-1]["event"] == "stateChanged"
    assert json.loads(every[-1]["data"])["stateChanged"]["to"] == "JOB_STATE_SUCCEEDED"
    epochs = [json.loads(e["data"])["epoch"] for e in every if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [row.epoch for row in trained.live_rows]
    # Resuming after an event gives exactly the ones after it.
    with requests.get(path, headers={"Last-Event-ID": str(ids[1])}, stream=True, timeout=60) as response:
        rest = events(response)
    assert [int(e["id"]) for e in rest] == ids[2:]


def test_submit_is_idempotent_and_errors_name_the_field(cluster: Cluster) -> None:
    spec = {
        "name": "http",
        "dataset": {"kind": "synthetic", "synthetic": {"trainLen": 32, "validLen": 16}},
        "arch": "cnn",
        "epochs": 1,
    }
    bad = requests.post(url(cluster.coordinator, "/v1/jobs"), json={"spec": {**spec, "lr": -1}}, timeout=30)
    assert bad.status_code == 400
    status = error_of(bad)
    assert status["status"] == "INVALID_ARGUMENT"
    assert status["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "spec.lr", "description": status["message"]}],
        }
    ]
    unknown = requests.post(url(cluster.coordinator, "/v1/jobs"), json={"spec": {"epochz": 1}}, timeout=30)
    assert unknown.status_code == 400 and "epochz" in error_of(unknown)["message"]

    key = {"Idempotency-Key": "http-test-1"}
    first = requests.post(url(cluster.coordinator, "/v1/jobs"), json={"spec": spec}, headers=key, timeout=30)
    again = requests.post(url(cluster.coordinator, "/v1/jobs"), json={"spec": spec}, headers=key, timeout=30)
    other = requests.post(
        url(cluster.coordinator, "/v1/jobs"), json={"spec": spec, "requestId": "http-test-2"}, timeout=30
    )
    assert first.status_code == again.status_code == other.status_code == 200, first.text
    ids = [r.json()["job"]["id"] for r in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    for job_id in (ids[0], ids[2]):
        cancelled = requests.post(
            url(cluster.coordinator, f"/v1/jobs/{job_id}:cancel"), json={"reason": "test"}, timeout=30
        )
        assert cancelled.status_code in (200, 400), cancelled.text  # 400: it finished first
    wrong_method = requests.delete(url(cluster.coordinator, f"/v1/jobs/{ids[0]}"), timeout=30)
    assert wrong_method.status_code == 405


def safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    """A safetensors file of float32 ``tensors``."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def test_models_import_alias_and_delete_over_http(cluster: Cluster) -> None:
    rng = np.random.default_rng(0)
    weights = safetensors(
        {
            "0.weight": rng.standard_normal((128, 3, 5, 5)).astype(np.float32) * 0.05,
            "0.bias": np.zeros(128, np.float32),
            "4.weight": rng.standard_normal((2, 128 * 14 * 14)).astype(np.float32) * 0.01,
            "4.bias": np.zeros(2, np.float32),
        }
    )
    header = {
        "spec": {
            "arch": "cnn",
            "head": "linear",
            "classNames": ["circle", "square"],
            "inputSize": 32,
            "normalization": "none",
        },
        "dataset": "upload",
        "metrics": {"accuracy": 0.5},
    }
    base = url(cluster.coordinator, "/v1/models/uploaded")
    imported = requests.post(
        f"{base}/versions",
        files={"header": (None, json.dumps(header), "application/json"), "weights": ("cnn.safetensors", weights)},
        timeout=60,
    )
    assert imported.status_code == 200, imported.text
    version = imported.json()["version"]
    assert version["name"] == "uploaded" and version["lineage"]["importedFrom"] == "cnn.safetensors"
    number = version["version"]
    # Weights that do not match the spec are refused and nothing is stored.
    truncated = requests.post(
        f"{base}/versions",
        files={"header": (None, json.dumps(header)), "weights": ("bad.safetensors", weights[:-8])},
        timeout=60,
    )
    assert truncated.status_code == 400, truncated.text
    moved = requests.put(f"{base}/aliases/prod", json={"version": number}, timeout=30)
    assert moved.status_code == 200, moved.text
    got = requests.get(url(cluster.coordinator, "/v1/models/uploaded@prod"), timeout=30).json()
    assert got["version"]["version"] == number and "prod" in got["version"]["aliases"]
    listed = requests.get(url(cluster.coordinator, "/v1/models?name=uploaded"), timeout=30).json()
    assert [v["version"] for v in listed["versions"]] == [number]
    # The explainer answers KServe's model metadata for it.
    meta = requests.get(url(cluster.explainer, "/v1/models/uploaded@prod"), timeout=60).json()
    assert meta["ready"] is True and meta["modelVersion"] == f"uploaded:{number}"
    aliased = requests.delete(f"{base}/versions/{number}", timeout=30)
    assert aliased.status_code == 400 and error_of(aliased)["status"] == "FAILED_PRECONDITION"
    assert requests.delete(f"{base}/aliases/prod", timeout=30).status_code == 200
    assert requests.delete(f"{base}/versions/{number}?force=true", timeout=30).status_code == 200
    assert requests.get(url(cluster.coordinator, "/v1/models/uploaded:" + number), timeout=30).status_code == 404


def test_kserve_predict_and_explain_match_the_sdk(cluster: Cluster, trained: Trained, image_files: list[Path]) -> None:
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in image_files[:3]]
    instances = [{"b64": png_b64(a), "id": f"img-{i}"} for i, a in enumerate(arrays)]
    base = url(cluster.explainer, f"/v1/models/{trained.model}")
    with cluster.client() as cs:
        sdk = cs.explain(trained.model, arrays, method="gradcam", top_k=2)

    predicted = requests.post(f"{base}:predict", json={"instances": instances}, timeout=120)
    assert predicted.status_code == 200, predicted.text
    predictions = predicted.json()["predictions"]
    assert [p["id"] for p in predictions] == ["img-0", "img-1", "img-2"]
    for p, s in zip(predictions, sdk, strict=True):
        assert p["predictedClass"] == s.predicted_class
        assert np.array_equal(np.float32(p["probabilities"]), s.probabilities)
        assert "maps" not in p

    explained = requests.post(
        f"{base}:explain",
        json={
            "instances": instances,
            "parameters": {"method": "gradcam", "top_k": 2, "return_overlay": True, "colormap": "viridis"},
        },
        timeout=120,
    )
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["modelVersion"] == predicted.json()["modelVersion"] == sdk[0].model_version
    size = QUICK_JOB["image_size"]
    for result, s in zip(body["results"], sdk, strict=True):
        assert len(result["maps"]) == 2
        for http_map, sdk_map in zip(result["maps"], s.maps, strict=True):
            values = np.float32(http_map["values"]).reshape(http_map["height"], http_map["width"])
            assert np.array_equal(values, sdk_map), "the maps over HTTP are the gRPC ones, bit for bit"
        overlay = Image.open(io.BytesIO(base64.b64decode(result["overlayPng"])))
        assert overlay.size == (size, size)

    # A corrupt image is that image's error; a body that is not base64 the request's.
    mixed = requests.post(
        f"{base}:predict",
        json={"instances": [instances[0]["b64"], base64.b64encode(b"not a png").decode()]},
        timeout=120,
    )
    assert mixed.status_code == 200
    errors = [p["errorKind"] for p in mixed.json()["predictions"]]
    assert errors == ["IMAGE_ERROR_KIND_UNSPECIFIED", "IMAGE_ERROR_KIND_UNDECODABLE"]
    not_b64 = requests.post(f"{base}:predict", json={"instances": [{"b64": "%%%"}]}, timeout=30)
    assert not_b64.status_code == 400
    no_model = requests.post(
        url(cluster.explainer, "/v1/models/nope:predict"), json={"instances": [instances[0]]}, timeout=30
    )
    assert no_model.status_code == 404 and error_of(no_model)["code"] == 5
    reserved = requests.post(
        f"{base}:explain", json={"instances": [instances[0]], "parameters": {"model": "x"}}, timeout=30
    )
    assert reserved.status_code == 400
    assert error_of(reserved)["details"][0]["fieldViolations"][0]["field"] == "parameters.model"


def test_an_overloaded_explainer_answers_429_with_retry_after(tiny_cluster: Cluster, cnn: str) -> None:
    body = {"instances": [png_b64(shape_image("circle", 32, 1))], "parameters": {"faithfulness": "deletion_auc"}}
    target = url(tiny_cluster.explainer, f"/v1/models/{cnn}:explain")
    gate = threading.Barrier(6)
    answers: list[requests.Response | None] = [None] * 6

    def run(i: int) -> None:
        gate.wait()
        answers[i] = requests.post(target, json=body, timeout=120)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    codes = [a.status_code for a in answers if a is not None]
    assert 200 in codes, codes
    busy = [a for a in answers if a is not None and a.status_code == 429]
    assert busy, f"six requests at once at a one-request explainer: {codes}"
    assert int(busy[0].headers["retry-after"]) >= 1
    details = error_of(busy[0])["details"]
    assert details[0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert details[0]["retryDelay"].endswith("s")


def grpc_web_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def test_grpc_web_call_as_the_spec_frames_it(cluster: Cluster) -> None:
    """GetServerInfo over HTTP/1.1 as application/grpc-web+proto: a data
    frame, then a trailers frame (flag 0x80) with grpc-status."""
    answer = requests.post(
        url(cluster.coordinator, "/camshaft.v1.ServerInfo/GetServerInfo"),
        data=grpc_web_frame(common_pb2.GetServerInfoRequest().SerializeToString()),
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "accept": "application/grpc-web+proto",
        },
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/grpc-web")
    data, frames = answer.content, []
    while data:
        flag, length = data[0], struct.unpack(">I", data[1:5])[0]
        frames.append((flag, data[5 : 5 + length]))
        data = data[5 + length :]
    assert [flag for flag, _ in frames] == [0x00, 0x80]
    info = common_pb2.GetServerInfoResponse.FromString(frames[0][1])
    assert common_pb2.SERVER_ROLE_COORDINATOR in info.roles
    trailers = dict(line.split(":", 1) for line in frames[1][1].decode().strip().split("\r\n"))
    assert trailers["grpc-status"].strip() == "0"


def test_http_needs_the_same_credentials_as_grpc(secured_http: tuple[Cluster, dict[str, str]]) -> None:
    cluster, tokens = secured_http
    jobs = url(cluster.coordinator, "/v1/jobs")
    anonymous = requests.get(jobs, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert error_of(anonymous)["status"] == "UNAUTHENTICATED"
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    assert requests.get(jobs, headers=viewer, timeout=30).status_code == 200
    denied = requests.post(jobs, json={"spec": {}}, headers=viewer, timeout=30)
    assert denied.status_code == 403 and error_of(denied)["status"] == "PERMISSION_DENIED"
    editor = {"Authorization": f"Bearer {tokens['editor']}"}
    invalid = requests.post(jobs, json={"spec": {}}, headers=editor, timeout=30)
    assert invalid.status_code == 400  # allowed in, then the spec is checked
    assert requests.get(url(cluster.coordinator, "/healthz"), timeout=30).status_code == 200
    assert requests.get(url(cluster.explainer, "/v1/status"), timeout=30).status_code == 401
    assert requests.get(url(cluster.explainer, "/v1/status"), headers=viewer, timeout=30).status_code == 200
    assert requests.get(url(cluster.coordinator, "/v1/whoami"), headers=viewer, timeout=30).json() == {"name": "vera", "role": "viewer"}
    # Event streams also take the token in the query (EventSource sends no header).
    events_url = url(cluster.coordinator, "/v1/jobs/j-1/events")
    assert requests.get(events_url, timeout=30).status_code == 401
    assert requests.get(f"{events_url}?access_token={tokens['viewer']}", timeout=30).status_code == 404
    # The coordinator forwards explain calls with the caller's credential.
    explain = url(cluster.coordinator, "/v1/explain")
    assert requests.post(explain, json={"model": "nope"}, timeout=30).status_code == 401
    assert requests.post(explain, json={"model": "nope"}, headers=viewer, timeout=30).status_code == 404


@pytest.fixture(scope="module")
def secured_http(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A cluster whose clients need tokens (a tokens file with a viewer and
    an editor)."""
    from conftest import start_cluster

    folder = tmp_path_factory.mktemp("tokens")
    tokens = {"viewer": "v-" + "1" * 40, "editor": "e-" + "2" * 40}
    (folder / "tokens.csv").write_text(f"{tokens['viewer']},vera,viewer\n{tokens['editor']},ed,editor\n")
    config = f'auth_tokens_file = "{folder / "tokens.csv"}"\n'
    cluster = start_cluster(folder / "cluster", config, {"token": tokens["editor"]})
    try:
        yield cluster, tokens
    finally:
        cluster.stop()


def test_the_coordinator_forwards_explain_and_says_who_calls(cluster: Cluster, trained: Trained, image_files: list[Path]) -> None:
    """The console's door to the explainer: the coordinator's /v1/explain
    forwards to the explainer, whose answer is the same as asked directly."""
    request = {"model": trained.model, "method": "gradcam", "topK": 2,
               "images": [{"id": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in image_files[:2]]}
    direct = requests.post(url(cluster.explainer, "/v1/explain"), json=request, timeout=120)
    forwarded = requests.post(url(cluster.coordinator, "/v1/explain"), json=request, timeout=120)
    assert direct.status_code == forwarded.status_code == 200, forwarded.text
    assert forwarded.json()["results"] == direct.json()["results"]
    missing = requests.post(url(cluster.coordinator, "/v1/explain"), json={**request, "model": "nope"}, timeout=60)
    assert missing.status_code == 404 and error_of(missing)["status"] == "NOT_FOUND"
    status = requests.get(url(cluster.coordinator, "/v1/explainer/status"), timeout=30).json()
    assert status["roles"] == ["SERVER_ROLE_EXPLAINER"] and int(status["queueCapacity"]) > 0
    assert requests.get(url(cluster.coordinator, "/v1/whoami"), timeout=30).json() == {"name": "anonymous", "role": "editor"}


def test_the_console_is_served_with_a_strict_policy(cluster: Cluster) -> None:
    page = requests.get(url(cluster.coordinator, "/"), timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert requests.get(url(cluster.coordinator, "/no-such-file.js"), timeout=30).status_code == 404


def test_a_pth_upload_is_converted_by_the_coordinator(cluster: Cluster, tmp_path: Path) -> None:
    """A torch.save state dict uploaded over HTTP (format from its content) is
    read without running its pickle and stored as safetensors."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 128, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(128 * 14 * 14, 2))
    state = {f"module.{k}": v.half() for k, v in cnn.state_dict().items()}  # DDP names, float16
    path = tmp_path / "cnn.pth"
    torch.save(state, path)
    header = {"spec": {"arch": "cnn", "head": "linear", "classNames": ["circle", "square"], "inputSize": 32,
                       "normalization": "none"}}
    base = url(cluster.coordinator, "/v1/models/from-pth/versions")
    done = requests.post(base, files={"header": (None, json.dumps(header)), "weights": ("cnn.pth", path.read_bytes())}, timeout=60)
    assert done.status_code == 200, done.text
    version = done.json()["version"]
    # Stored as float32 safetensors: 4 bytes per parameter plus the header.
    parameters = sum(p.numel() for p in cnn.parameters())
    assert int(version["lineage"]["weightsSizeBytes"]) > parameters * 4
    # The explainer serves it.
    meta = requests.get(url(cluster.explainer, f"/v1/models/from-pth:{version['version']}"), timeout=60).json()
    assert meta["ready"] is True
    garbage = requests.post(base, files={"header": (None, json.dumps(header)), "weights": ("x.pth", b"PK\x03\x04 no zip")}, timeout=60)
    assert garbage.status_code == 400 and error_of(garbage)["details"][0]["fieldViolations"][0]["field"] == "format"
