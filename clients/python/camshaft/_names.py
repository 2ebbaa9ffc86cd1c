"""Short names of the wire enums (``resnet18``, ``cam``, ``gradcam``), spelled
as ``ctl``, config files and logs spell them, both ways.

Every ``camshaft.v1`` enum has an ``*_UNSPECIFIED = 0`` value, so the prefix
of an enum's values is that value's name without ``UNSPECIFIED``; a value's
short name is the rest of its name in lower case (``EXPLAIN_METHOD_GRAD_CAM``
is ``grad_cam``), which is the name ``ctl`` prints. Parsing also takes ``-``
for ``_``, any case, and the aliases ``ctl`` accepts (``gradcam++``,
``deletion``, ``gpu``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import EnumDescriptor

from .errors import InvalidArgument
from .v1 import common_pb2, coordinator_pb2, explainer_pb2

# ctl's aliases, by enum, in the normalised spelling (lower case, `_` for `-`).
_ALIASES: dict[str, dict[str, str]] = {
    "camshaft.v1.ExplainMethod": {
        "gradcam": "grad_cam",
        "gradcam++": "grad_cam_plus_plus",
        "grad_cam++": "grad_cam_plus_plus",
        "gradcampp": "grad_cam_plus_plus",
        "xgradcam": "xgrad_cam",
        "layercam": "layer_cam",
        "hirescam": "hires_cam",
        "scorecam": "score_cam",
    },
    "camshaft.v1.FaithfulnessMetric": {"deletion": "deletion_auc", "drop": "average_drop"},
    "camshaft.v1.DeviceKind": {"gpu": "cuda"},
    "camshaft.v1.DatasetKind": {"cifar_10": "cifar10"},
    "camshaft.v1.WeightsFormat": {"pt": "pth"},
}

# What each enum is called in error messages (ctl's words).
_WHAT: dict[str, str] = {
    "camshaft.v1.Arch": "architecture",
    "camshaft.v1.Head": "head",
    "camshaft.v1.Normalization": "normalization",
    "camshaft.v1.ResizeMethod": "resize method",
    "camshaft.v1.DeviceKind": "device kind",
    "camshaft.v1.DatasetKind": "dataset",
    "camshaft.v1.PretrainedSource": "pretrained source",
    "camshaft.v1.Precision": "precision",
    "camshaft.v1.CollectiveBackend": "collective backend",
    "camshaft.v1.RegisterPolicy": "register policy",
    "camshaft.v1.MonitorMetric": "monitored metric",
    "camshaft.v1.JobState": "job state",
    "camshaft.v1.FailureKind": "failure kind",
    "camshaft.v1.WorkerState": "worker state",
    "camshaft.v1.ExplainMethod": "method",
    "camshaft.v1.Colormap": "colormap",
    "camshaft.v1.FaithfulnessMetric": "faithfulness metric",
    "camshaft.v1.FaithfulnessBaseline": "faithfulness baseline",
    "camshaft.v1.WeightsFormat": "weights format",
    "camshaft.v1.ServerRole": "server role",
    "camshaft.v1.ImageErrorKind": "image error kind",
}


def _descriptor(enum: Any) -> EnumDescriptor:
    return enum if isinstance(enum, EnumDescriptor) else enum.DESCRIPTOR


def _prefix(descriptor: EnumDescriptor) -> str:
    zero = descriptor.values_by_number[0].name
    return zero[: -len("UNSPECIFIED")]


def short_name(enum: Any, number: int) -> str:
    """The short name of ``number`` in ``enum`` (``unspecified`` for 0, and
    ``unknown(N)`` for a number this SDK does not know: a newer server's)."""
    descriptor = _descriptor(enum)
    value = descriptor.values_by_number.get(number)
    if value is None:
        return f"unknown({number})"
    return value.name[len(_prefix(descriptor)) :].lower()


def short_names(enum: Any) -> list[str]:
    """Every short name of ``enum`` but ``unspecified``, in declaration order."""
    descriptor = _descriptor(enum)
    return [short_name(descriptor, v.number) for v in descriptor.values if v.number != 0]


def parse(enum: Any, value: str | int) -> Any:
    """The number (an ``int``, typed ``Any`` for the generated messages'
    enum fields) of ``value`` in ``enum``: a short name (any case, ``-`` or
    ``_``), an alias ``ctl`` accepts, the full value name (``ARCH_RESNET18``)
    or the number itself. Anything else is :class:`~camshaft.InvalidArgument`
    listing the choices."""
    descriptor = _descriptor(enum)
    what = _WHAT.get(descriptor.full_name, descriptor.name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgument(f"{what} must be a name like {short_names(descriptor)[0]!r}, not {value!r}")
    if isinstance(value, int):
        if value not in descriptor.values_by_number:
            raise InvalidArgument(f"unknown {what} number {value}")
        return value
    key = value.strip().lower().replace("-", "_")
    key = _ALIASES.get(descriptor.full_name, {}).get(key, key)
    prefix = _prefix(descriptor)
    full = descriptor.values_by_name.get(prefix + key.upper())
    if full is None or full.number == 0:
        full = descriptor.values_by_name.get(value.strip().upper())
    if full is None or full.number == 0:
        raise InvalidArgument(f"unknown {what} {value!r}; expected one of: {', '.join(short_names(descriptor))}")
    return int(full.number)


def parse_optional(enum: Any, value: str | int | None) -> Any:
    """:func:`parse`, with ``None`` as 0 (UNSPECIFIED: the server's default)."""
    return 0 if value is None else parse(enum, value)


# The enums by their Python names, for callers that name them.
Arch = common_pb2.Arch
Head = common_pb2.Head
Normalization = common_pb2.Normalization
ResizeMethod = common_pb2.ResizeMethod
DeviceKind = common_pb2.DeviceKind
ServerRole = common_pb2.ServerRole
DatasetKind = coordinator_pb2.DatasetKind
PretrainedSource = coordinator_pb2.PretrainedSource
Precision = coordinator_pb2.Precision
CollectiveBackend = coordinator_pb2.CollectiveBackend
RegisterPolicy = coordinator_pb2.RegisterPolicy
MonitorMetric = coordinator_pb2.MonitorMetric
JobState = coordinator_pb2.JobState
FailureKind = coordinator_pb2.FailureKind
WorkerState = coordinator_pb2.WorkerState
WeightsFormat = coordinator_pb2.WeightsFormat
ExplainMethod = explainer_pb2.ExplainMethod
Colormap = explainer_pb2.Colormap
FaithfulnessMetric = explainer_pb2.FaithfulnessMetric
FaithfulnessBaseline = explainer_pb2.FaithfulnessBaseline
ImageErrorKind = explainer_pb2.ImageErrorKind

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
"""Job states after which nothing happens to a job any more."""
