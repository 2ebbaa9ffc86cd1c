"""The SDK's pieces without a server: job specs, names, errors, addresses,
weights conversion, image encoding, batching."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

import camshaft
from camshaft import _names, _status
from camshaft._connection import RetryPolicy, endpoint, read_token, resolve_tls, watch_backoff
from camshaft.errors import from_rpc_error
from camshaft.explain import encode_image, images_per_request, plan_batches
from camshaft.spec import SPEC_KEYS, build_job_spec, load_spec, merge_options
from camshaft.weights import read_safetensors, read_torch_state_dict, sniff, to_safetensors, write_safetensors


def spec_of(**options: Any) -> Any:
    return build_job_spec(merge_options(None, options))


def test_unset_options_stay_unset() -> None:
    spec = spec_of(dataset="pets")
    assert (spec.arch, spec.head, spec.pretrained, spec.normalization, spec.epochs) == (0, 0, 0, 0, 0)
    for optional in ("lr", "seed", "flip", "freeze_epochs", "weight_decay", "max_failures"):
        assert not spec.HasField(optional), optional
    assert not spec.dataset.HasField("synthetic") and spec.name == ""


def test_spec_file_values_become_the_job_spec(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(
        json.dumps(
            {
                "dataset": "synthetic",
                "model": "resnet18",
                "head": "cam",
                "epochs": 3,
                "train_len": 64,
                "valid-len": 32,
                "image-size": 48,
                "classes": 3,
                "pretrained": "imagenet",
                "fine_tune": True,
                "lr": 0.002,
                "alias": "demo",
                "no-flip": True,
                "no-cuda-graphs": True,
            }
        )
    )
    spec = build_job_spec(load_spec(path))
    assert _names.short_name(_names.Arch, spec.arch) == "resnet18"
    assert _names.short_name(_names.PretrainedSource, spec.pretrained) == "imagenet"
    assert (spec.epochs, spec.lr, spec.image_size, list(spec.aliases)) == (3, 0.002, 48, ["demo"])
    assert spec.fine_tune and spec.HasField("flip") and spec.flip is False
    assert spec.HasField("cuda_graphs") and spec.cuda_graphs is False
    s = spec.dataset.synthetic
    assert (s.train_len, s.valid_len, s.image_size, s.num_classes) == (64, 32, 48, 3)


def test_options_override_the_file() -> None:
    file = load_spec({"dataset": "synthetic", "model": "resnet18", "epochs": 3, "alias": ["a", "b"], "seed": 1})
    spec = build_job_spec(merge_options(file, {"epochs": 5, "model": "resnet34", "aliases": ["c"], "flip": False}))
    assert spec.epochs == 5 and _names.short_name(_names.Arch, spec.arch) == "resnet34"
    assert list(spec.aliases) == ["c"] and spec.seed == 1 and spec.flip is False
    # Unset, the coordinator's default (on); the SDK's other spelling too.
    assert not spec.HasField("cuda_graphs")
    off = build_job_spec(merge_options(file, {"cuda_graphs": False}))
    assert off.HasField("cuda_graphs") and off.cuda_graphs is False


def test_spec_mistakes_name_themselves() -> None:
    with pytest.raises(camshaft.InvalidArgument, match="unknown key 'epohcs'"):
        load_spec({"dataset": "pets", "epohcs": 3})
    with pytest.raises(camshaft.InvalidArgument, match="twice"):
        load_spec({"batch_size": 1, "batch-size": 2})
    with pytest.raises(camshaft.InvalidArgument, match="both cuda_graphs and no_cuda_graphs"):
        load_spec({"cuda_graphs": True, "no-cuda-graphs": True})
    with pytest.raises(camshaft.InvalidArgument, match="epochs must be an integer"):
        load_spec({"epochs": "three"})
    with pytest.raises(camshaft.InvalidArgument, match="no data set"):
        spec_of(model="cnn")
    with pytest.raises(camshaft.InvalidArgument, match="unknown dataset 'imagenet'"):
        spec_of(dataset="imagenet")
    with pytest.raises(camshaft.InvalidArgument, match="bad job option"):
        spec_of(dataset="synthetic", epochs=-1)
    # The keys are ctl's, spelled with `_`.
    assert "batch_size" in SPEC_KEYS and "alias" in SPEC_KEYS and len(SPEC_KEYS) == 42


def test_pretrained_path_and_device_alias() -> None:
    spec = spec_of(dataset="pets-breeds", pretrained="/weights/r34.pth", device="gpu")
    assert _names.short_name(_names.PretrainedSource, spec.pretrained) == "path"
    assert spec.pretrained_path == "/weights/r34.pth"
    assert _names.short_name(_names.DeviceKind, spec.device) == "cuda"
    assert _names.short_name(_names.DatasetKind, spec.dataset.kind) == "pets_breeds"


def test_short_names_both_ways() -> None:
    method = _names.ExplainMethod
    for name, want in [
        ("cam", "cam"),
        ("GradCAM++", "grad_cam_plus_plus"),
        ("grad-cam", "grad_cam"),
        ("layercam", "layer_cam"),
        ("EXPLAIN_METHOD_HIRES_CAM", "hires_cam"),
    ]:
        assert _names.short_name(method, _names.parse(method, name)) == want
    assert (
        _names.short_name(_names.FaithfulnessMetric, _names.parse(_names.FaithfulnessMetric, "drop")) == "average_drop"
    )
    assert _names.short_name(_names.JobState, 0) == "unspecified"
    assert _names.short_name(_names.JobState, 99) == "unknown(99)"
    with pytest.raises(camshaft.InvalidArgument, match="expected one of: magma, viridis, inferno, jet"):
        _names.parse(_names.Colormap, "rainbow")
    with pytest.raises(camshaft.InvalidArgument):
        _names.parse(_names.Arch, "unspecified")


class FakeCall(grpc.RpcError):
    """What a failed call looks like to the SDK."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: list[tuple[str, Any]]) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> list[tuple[str, Any]]:
        return self._trailing

    def initial_metadata(self) -> list[tuple[str, Any]]:
        return []


def test_status_codes_become_typed_errors() -> None:
    for code, cls in [
        (grpc.StatusCode.NOT_FOUND, camshaft.NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, camshaft.InvalidArgument),
        (grpc.StatusCode.OUT_OF_RANGE, camshaft.InvalidArgument),
        (grpc.StatusCode.FAILED_PRECONDITION, camshaft.FailedPrecondition),
        (grpc.StatusCode.ALREADY_EXISTS, camshaft.AlreadyExists),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, camshaft.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, camshaft.Unavailable),
        (grpc.StatusCode.ABORTED, camshaft.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, camshaft.DeadlineExceeded),
        (grpc.StatusCode.PERMISSION_DENIED, camshaft.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, camshaft.Unauthenticated),
        (grpc.StatusCode.UNIMPLEMENTED, camshaft.Unimplemented),
        (grpc.StatusCode.INTERNAL, camshaft.Internal),
        (grpc.StatusCode.UNKNOWN, camshaft.Internal),
    ]:
        err = from_rpc_error(FakeCall(code, "why", []), "coordinator", "GetJob")
        assert type(err) is cls and err.code == code and err.message == "why"
        assert str(err) == f"coordinator GetJob: {code.name}: why"


def test_details_win_over_metadata_for_the_retry_hint() -> None:
    status = _status.encode_status(
        8, "busy", retry_delay=1.25, error_info=("QUEUE_FULL", "camshaft", {"budget": "images"})
    )
    err = from_rpc_error(
        FakeCall(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "busy",
            [
                ("retry-after-ms", "900"),
                ("grpc-status-details-bin", status),
            ],
        )
    )
    assert isinstance(err, camshaft.ResourceExhausted) and err.retry_after == 1.25
    assert err.error_info == camshaft.ErrorInfo("QUEUE_FULL", "camshaft", {"budget": "images"})
    only_metadata = from_rpc_error(FakeCall(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", [("retry-after-ms", "900")]))
    assert only_metadata.retry_after == 0.9
    pushback = from_rpc_error(FakeCall(grpc.StatusCode.UNAVAILABLE, "x", [("grpc-retry-pushback-ms", "250")]))
    assert pushback.retry_after == 0.25
    assert from_rpc_error(FakeCall(grpc.StatusCode.UNAVAILABLE, "x", [("retry-after-ms", "soon")])).retry_after is None


def test_field_violations_come_from_bad_request() -> None:
    status = _status.encode_status(
        3, "epochs must be 1..=1000, not 0", field_violations=[("spec.epochs", "epochs must be 1..=1000, not 0")]
    )
    err = from_rpc_error(
        FakeCall(
            grpc.StatusCode.INVALID_ARGUMENT, "epochs must be 1..=1000, not 0", [("grpc-status-details-bin", status)]
        )
    )
    assert isinstance(err, camshaft.InvalidArgument)
    assert err.field_violations == [("spec.epochs", "epochs must be 1..=1000, not 0")]
    assert err.field_violations[0].field == "spec.epochs"
    # Garbage in the trailer is ignored, not raised.
    junk = from_rpc_error(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "x", [("grpc-status-details-bin", b"\xff\x01")]))
    assert junk.field_violations == []


def test_the_vendored_protos_do_not_clash_with_googleapis() -> None:
    # The vendored google.rpc types live in a private pool: the default one is untouched.
    from google.protobuf import descriptor_pool

    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("google.rpc.Status")


def test_retry_policy() -> None:
    policy = RetryPolicy(retries=2)
    busy = camshaft.ResourceExhausted("busy", retry_after=0.5)
    down = camshaft.Unavailable("down")
    assert policy.should_retry(busy, 1) and policy.should_retry(busy, 2) and not policy.should_retry(busy, 3)
    assert policy.should_retry(down, 1) and not policy.should_retry(down, 1, idempotent=False)
    assert policy.should_retry(busy, 1, idempotent=False)
    assert not policy.should_retry(camshaft.InvalidArgument("no"), 1)
    assert 0.5 <= policy.delay(busy, 1) <= 0.55
    for attempt in range(1, 8):
        ceiling = min(5.0, 0.25 * 2 ** (attempt - 1))
        assert ceiling / 2 <= policy.delay(down, attempt) <= ceiling
    assert [watch_backoff(n) for n in (1, 2, 4, 5, 40)] == [0.5, 1.0, 4.0, 5.0, 5.0]


def test_addresses_tls_and_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "CAMSHAFT_COORDINATOR",
        "CAMSHAFT_TLS_CA",
        "CAMSHAFT_TLS_CERT",
        "CAMSHAFT_TLS_KEY",
        "CAMSHAFT_TLS_SERVER_NAME",
        "CAMSHAFT_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    assert endpoint("coordinator", None, None).target == "127.0.0.1:50051"
    assert endpoint("explainer", "http://10.0.0.5:50052/", None).target == "10.0.0.5:50052"
    secure = endpoint("coordinator", "https://c.example", None)
    assert secure.target == "c.example:443" and secure.tls == camshaft.TLS()
    assert endpoint("coordinator", "[::1]:50051", None).target == "[::1]:50051"
    with pytest.raises(camshaft.InvalidArgument, match="scheme 'ftp'"):
        endpoint("coordinator", "ftp://x:1", None)
    monkeypatch.setenv("CAMSHAFT_COORDINATOR", "h:1")
    assert endpoint("coordinator", None, None).target == "h:1"
    assert resolve_tls(None) is None and resolve_tls(True) == camshaft.TLS()
    assert resolve_tls({"ca": "ca.pem", "server_name": "x"}) == camshaft.TLS(ca="ca.pem", server_name="x")
    with pytest.raises(camshaft.InvalidArgument, match="unknown tls"):
        resolve_tls({"cafile": "x"})
    with pytest.raises(camshaft.InvalidArgument, match="cert and key"):
        camshaft.TLS(cert="c.pem").credentials()
    token = tmp_path / "token"
    token.write_text("  s3cret-token-0123456789\n")
    assert read_token(None, token) == "s3cret-token-0123456789"
    monkeypatch.setenv("CAMSHAFT_TOKEN_FILE", str(token))
    assert read_token(None, None) == "s3cret-token-0123456789"
    with pytest.raises(camshaft.InvalidArgument):
        read_token("a\nb", None)


def test_images_are_encoded_as_the_explainer_reads_them(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for value in (pixels, pixels.astype(np.float64) / 255, pixels.transpose(2, 0, 1), Image.fromarray(pixels)):
        data, _ = encode_image(value)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), pixels)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    assert encode_image(path) == (path.read_bytes(), "x.png")
    assert encode_image(b"raw") == (b"raw", "")
    with pytest.raises(camshaft.InvalidArgument):
        encode_image(np.zeros((4, 4, 7), dtype=np.uint8))


def test_batches_respect_count_bytes_and_compute() -> None:
    assert plan_batches([1] * 5, 2, 100) == [range(0, 2), range(2, 4), range(4, 5)]
    assert plan_batches([60, 60, 10, 200, 1], 64, 100) == [range(0, 1), range(1, 3), range(3, 4), range(4, 5)]
    assert plan_batches([], 64, 100) == []
    assert images_per_request(None, 0) == 64
    assert images_per_request(2, _names.parse(_names.FaithfulnessMetric, "deletion")) == 512 // 43


def test_a_torch_state_dict_converts_without_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    state = model.state_dict()
    state["2.weight"] = state["2.weight"].t().contiguous().t()  # a non-contiguous view
    path = tmp_path / "m.pth"
    torch.save(state, path)
    data = path.read_bytes()
    assert sniff(data) == "zip"
    raw = read_torch_state_dict(data)
    assert list(raw) == list(state)
    converted, name = to_safetensors(path)
    assert name == "m.pth" and sniff(converted) == "safetensors"
    tensors = read_safetensors(converted)
    assert "1.num_batches_tracked" not in tensors
    for key, value in tensors.items():
        np.testing.assert_array_equal(value.array, state[key].numpy())
    # A dict of tensors (model.state_dict()) gives the same file.
    assert to_safetensors(model.state_dict())[0] == converted
    # DDP's prefix goes; a safetensors file is otherwise uploaded as it is.
    prefixed = write_safetensors({f"module.{k}": v for k, v in tensors.items()})
    assert to_safetensors(prefixed)[0] == converted
    assert to_safetensors(converted)[0] == converted
    with pytest.raises(camshaft.InvalidArgument, match="neither safetensors nor"):
        to_safetensors(b"hello")


def test_a_pickle_with_other_globals_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "f": print}, path)
    with pytest.raises(camshaft.InvalidArgument, match=r"builtin__?\.print, which a state dict does not use"):
        read_torch_state_dict(path.read_bytes())
