"""Job options → ``JobSpec``, as ``ctl submit-job`` builds it.

The options are ``ctl submit-job``'s flags with ``_`` for ``-``
(``batch_size=32``), and a spec file (``--spec FILE``) is the same JSON
object ``ctl`` reads: keys spelled with ``-`` or ``_``, ``"alias"`` a string or
a list. Options given as keyword arguments win over the file's.

Options that are not given stay unset (0, absent, UNSPECIFIED), so the
coordinator applies its defaults and records them in the stored spec
(``job.spec``). Enumeration names are checked here; numbers are left to the
coordinator, which knows the limits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict

from . import _names
from .errors import InvalidArgument
from .v1 import coordinator_pb2

# ctl's spec-file keys (SPEC_KEYS in crates/ctl/src/job_spec.rs), with `_`,
# and the type each value must have.
_STR, _INT, _FLOAT, _BOOL, _STRS, _TAGS = (
    "a string",
    "an integer",
    "a number",
    "true or false",
    "a string or a list of strings",
    "a dict of strings to strings",
)
SPEC_KEYS: dict[str, str] = {
    "dataset": _STR,
    "data_dir": _STR,
    "download": _BOOL,
    "valid_pct": _FLOAT,
    "split_seed": _INT,
    "train_len": _INT,
    "valid_len": _INT,
    "classes": _INT,
    "model": _STR,
    "head": _STR,
    "pretrained": _STR,
    "normalize": _STR,
    "epochs": _INT,
    "fine_tune": _BOOL,
    "freeze_epochs": _INT,
    "lr": _FLOAT,
    "weight_decay": _FLOAT,
    "batch_size": _INT,
    "image_size": _INT,
    "resize": _STR,
    "no_flip": _BOOL,
    "name": _STR,
    "seed": _INT,
    "workers": _INT,
    "min_workers": _INT,
    "gpus_per_worker": _INT,
    "device": _STR,
    "precision": _STR,
    "channels_last": _BOOL,
    "collective": _STR,
    "profile_steps": _BOOL,
    "no_cuda_graphs": _BOOL,
    "max_failures": _INT,
    "max_membership_changes": _INT,
    "checkpoint_every": _INT,
    "keep_checkpoints": _INT,
    "alias": _STRS,
    "register": _STR,
    "monitor": _STR,
    "early_stop": _INT,
    "tag": _STRS,
    "description": _STR,
}

# Keyword arguments the SDK takes besides ctl's: other spellings, and JobSpec
# fields ctl leaves to the server.
EXTRA_KEYS: dict[str, str] = {
    "aliases": _STRS,
    "tags": _TAGS,
    "flip": _BOOL,
    "cuda_graphs": _BOOL,
    "bucket_mib": _INT,
    "collective_timeout_ms": _INT,
}

# JobSpec switches that are on unless set false (`optional bool`): ctl spells
# them `no_<field>`, the SDK takes `<field>` too.
DEFAULT_ON = ("flip", "cuda_graphs")


def _check_type(key: str, value: Any, kind: str) -> Any:
    ok = {
        _STR: isinstance(value, str),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _STRS: isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)),
        _TAGS: isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
    }[kind]
    if not ok:
        raise InvalidArgument(f"{key} must be {kind}, not {value!r}")
    if kind == _TAGS:
        return dict(value)
    if kind == _STRS:
        return [value] if isinstance(value, str) else list(value)
    if kind == _FLOAT:
        return float(value)
    return value


def normalize_options(options: Mapping[str, Any], source: str = "spec") -> dict[str, Any]:
    """``options`` with canonical keys (``_`` for ``-``), checked: an unknown
    key, a key given twice (as ``-`` and ``_``) or a value of the wrong type is
    :class:`~camshaft.InvalidArgument`. ``None`` values are dropped (unset)."""
    known = {**SPEC_KEYS, **EXTRA_KEYS}
    out: dict[str, Any] = {}
    for key, value in options.items():
        canonical = str(key).replace("-", "_")
        if canonical not in known:
            raise InvalidArgument(f"unknown key {key!r} in {source}; known keys: {', '.join(SPEC_KEYS)}")
        if canonical in out:
            raise InvalidArgument(f"key {canonical!r} appears twice in {source} (as `-` and `_`)")
        if value is None:
            continue
        out[canonical] = _check_type(canonical, value, known[canonical])
    if "aliases" in out:
        if "alias" in out:
            raise InvalidArgument(f"{source} has both alias and aliases")
        out["alias"] = out.pop("aliases")
    if "tags" in out:
        if "tag" in out:
            raise InvalidArgument(f"{source} has both tag and tags")
        out["tag"] = [f"{k}={v}" for k, v in out.pop("tags").items()]
    for field in DEFAULT_ON:
        if field in out:
            if f"no_{field}" in out:
                raise InvalidArgument(f"{source} has both {field} and no_{field}")
            out[f"no_{field}"] = not out.pop(field)
    return out


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A spec as ``submit_job(spec=...)`` takes it: a mapping, or the path of a
    JSON file (``ctl submit-job --spec``), normalised by :func:`normalize_options`."""
    if isinstance(spec, Mapping):
        return normalize_options(spec, "spec")
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgument(f"cannot read spec file {path}: {e}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{path}: spec file is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f'{path}: spec file must hold a JSON object like {{"dataset": "synthetic"}}')
    return normalize_options(value, f"spec file {path}")


def merge_options(spec: Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options over a spec's: every option given (not ``None``) wins."""
    merged = dict(spec or {})
    merged.update(normalize_options(options, "options"))
    return merged


def build_job_spec(options: Mapping[str, Any]) -> Any:
    """The ``JobSpec`` of normalised options (see :func:`normalize_options`)."""
    try:
        return _build(dict(options))
    except InvalidArgument:
        raise
    except (ValueError, TypeError) as e:  # protobuf refuses e.g. negative epochs
        raise InvalidArgument(f"bad job option: {e}") from None


def _build(o: dict[str, Any]) -> Any:
    if "dataset" not in o:
        raise InvalidArgument(
            "no data set: pass dataset='synthetic'|'cifar10'|'pets'|'pets-breeds'|'folder' "
            '(or "dataset" in the spec file)'
        )
    kind = _names.parse(_names.DatasetKind, o["dataset"])
    dataset = coordinator_pb2.DatasetSpec(kind=kind, data_dir=o.get("data_dir", ""), download=o.get("download", False))
    if "valid_pct" in o:
        dataset.valid_pct = o["valid_pct"]
    if "split_seed" in o:
        dataset.split_seed = o["split_seed"]
    if kind == _names.DatasetKind.Value("DATASET_KIND_SYNTHETIC"):
        dataset.synthetic.CopyFrom(
            coordinator_pb2.SyntheticDataset(
                train_len=o.get("train_len", 0),
                valid_len=o.get("valid_len", 0),
                image_size=o.get("image_size", 0),
                num_classes=o.get("classes", 0),
            )
        )
    else:
        for key in ("train_len", "valid_len", "classes"):
            if key in o:
                raise InvalidArgument(
                    f"{key} applies to dataset synthetic only, not {_names.short_name(_names.DatasetKind, kind)}"
                )

    pretrained: Any = 0
    pretrained_path = ""
    if "pretrained" in o:
        value = o["pretrained"].strip()
        if not value:
            raise InvalidArgument("pretrained needs 'imagenet', 'none' or a path")
        if value.lower() == "imagenet":
            pretrained = _names.PretrainedSource.Value("PRETRAINED_SOURCE_IMAGENET")
        elif value.lower() == "none":
            pretrained = _names.PretrainedSource.Value("PRETRAINED_SOURCE_NONE")
        else:
            pretrained = _names.PretrainedSource.Value("PRETRAINED_SOURCE_PATH")
            pretrained_path = value

    spec = coordinator_pb2.JobSpec(
        name=o.get("name", ""),
        dataset=dataset,
        arch=_names.parse_optional(_names.Arch, o.get("model")),
        head=_names.parse_optional(_names.Head, o.get("head")),
        pretrained=pretrained,
        pretrained_path=pretrained_path,
        normalization=_names.parse_optional(_names.Normalization, o.get("normalize")),
        epochs=o.get("epochs", 0),
        fine_tune=o.get("fine_tune", False),
        batch_size=o.get("batch_size", 0),
        image_size=o.get("image_size", 0),
        resize=_names.parse_optional(_names.ResizeMethod, o.get("resize")),
        workers=o.get("workers", 0),
        gpus_per_worker=o.get("gpus_per_worker", 0),
        device=_names.parse_optional(_names.DeviceKind, o.get("device")),
        min_workers=o.get("min_workers", 0),
        checkpoint_every=o.get("checkpoint_every", 0),
        keep_checkpoints=o.get("keep_checkpoints", 0),
        precision=_names.parse_optional(_names.Precision, o.get("precision")),
        channels_last=o.get("channels_last", False),
        collective=_names.parse_optional(_names.CollectiveBackend, o.get("collective")),
        bucket_mib=o.get("bucket_mib", 0),
        collective_timeout_ms=o.get("collective_timeout_ms", 0),
        aliases=o.get("alias", []),
        profile_steps=o.get("profile_steps", False),
        register=_names.parse_optional(_names.RegisterPolicy, o.get("register")),
        monitor=_names.parse_optional(_names.MonitorMetric, o.get("monitor")),
        early_stop_patience=o.get("early_stop", 0),
        description=o.get("description", ""),
    )
    for tag in o.get("tag", []):
        key, sep, value = tag.partition("=")
        if not sep:
            raise InvalidArgument(f"tag {tag!r} is not key=value")
        if key in spec.tags:
            raise InvalidArgument(f"tag {key!r} is given twice")
        spec.tags[key] = value
    for key, proto_field in (
        ("freeze_epochs", "freeze_epochs"),
        ("lr", "lr"),
        ("weight_decay", "weight_decay"),
        ("seed", "seed"),
        ("max_failures", "max_failures"),
        ("max_membership_changes", "max_membership_changes"),
    ):
        if key in o:
            setattr(spec, proto_field, o[key])
    for field in DEFAULT_ON:
        if o.get(f"no_{field}"):
            setattr(spec, field, False)
    return spec


def job_states(states: str | Iterable[str | int] | None) -> list[Any]:
    """``ListJobs`` state filters from short names (``"running"``,
    ``["pending", "running"]`` or ``"pending,running"``)."""
    if states is None:
        return []
    if isinstance(states, str):
        states = [s for s in states.split(",") if s.strip()]
    return [_names.parse(_names.JobState, s) for s in states]


class JobOptions(TypedDict, total=False):
    """The options of :meth:`Client.submit_job`: ``ctl submit-job``'s flags with
    ``_`` for ``-``. Unset options are the coordinator's defaults (see
    ``JobSpec`` in coordinator.proto)."""

    dataset: str
    """synthetic, cifar10, pets, pets-breeds or folder (required)."""
    data_dir: str
    download: bool
    valid_pct: float
    split_seed: int
    train_len: int
    """Synthetic data set: training samples."""
    valid_len: int
    """Synthetic data set: validation samples."""
    classes: int
    """Synthetic data set: number of classes (2..=6)."""
    model: str
    """cnn, resnet18 or resnet34."""
    head: str
    """linear, fastai or cam."""
    pretrained: str
    """imagenet, none, or a .pth/.safetensors path on the workers."""
    normalize: str
    """imagenet or none."""
    epochs: int
    fine_tune: bool
    freeze_epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    image_size: int
    resize: str
    """crop, squish or pad."""
    no_flip: bool
    flip: bool
    name: str
    seed: int
    workers: int
    min_workers: int
    gpus_per_worker: int
    device: str
    """cpu or cuda."""
    precision: str
    """fp32, bf16 or fp16."""
    channels_last: bool
    collective: str
    """nccl or ring."""
    profile_steps: bool
    no_cuda_graphs: bool
    """Every training step eager: no CUDA graphs (on CUDA devices a step's
    forward and backward passes replay a graph by default)."""
    cuda_graphs: bool
    max_failures: int
    max_membership_changes: int
    checkpoint_every: int
    keep_checkpoints: int
    alias: str | list[str]
    aliases: str | list[str]
    register: str
    """last (default) or best: which epoch's weights are registered."""
    monitor: str
    """valid_loss (default) or accuracy: picks the best epoch, drives early stopping."""
    early_stop: int
    """Stop after this many epochs without improvement of ``monitor`` (0: never)."""
    tag: str | list[str]
    """Tags of the registered version as ``key=value`` strings."""
    tags: dict[str, str]
    """Tags of the registered version as a dict."""
    description: str
    """Description of the registered version."""
    bucket_mib: int
    collective_timeout_ms: int
