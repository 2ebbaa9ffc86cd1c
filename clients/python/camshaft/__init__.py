"""Camshaft's Python SDK: train image classifiers data-parallel on a Camshaft
cluster and explain their decisions with class activation maps.

::

    import camshaft

    cs = camshaft.Client(coordinator="127.0.0.1:50051", explainer="127.0.0.1:50052")
    job = cs.submit_job(dataset="synthetic", model="resnet18", head="cam", epochs=4, image_size=128)
    for row in job.watch():                    # reconnects by itself
        print(row.epoch, row.train_loss, row.accuracy)
    job.wait(timeout=600)
    out = cs.explain(job.model_version, ["a.jpg"], method="gradcam", top_k=2, overlay=True)
    out[0].predicted_label, out[0].maps[0], out[0].overlay

:class:`Client` is synchronous; :mod:`camshaft.aio` has the same methods for
asyncio. Errors are :class:`CamshaftError` subclasses, one per gRPC status
code (:class:`NotFound`, :class:`InvalidArgument`, ...). The generated
messages and stubs are in :mod:`camshaft.v1`.
"""

from ._connection import DEFAULT_COORDINATOR, DEFAULT_EXPLAINER, MAX_MESSAGE_BYTES, TLS, RetryPolicy
from ._version import __version__
from .client import Client, Job, Jobs, Models, Workers
from .errors import (
    AlreadyExists,
    CamshaftError,
    Cancelled,
    DeadlineExceeded,
    ErrorInfo,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    JobFailed,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    WaitTimeout,
)
from .explain import Explanation, ImageError, Recipe
from .spec import JobOptions
from .types import (
    Device,
    EpochRow,
    JobEvent,
    JobFailure,
    Lineage,
    LoadedModel,
    LogLine,
    ModelServingSettings,
    ModelSpec,
    ModelVersion,
    PreloadState,
    ServerInfo,
    StateChange,
    Worker,
)

__all__ = [
    "DEFAULT_COORDINATOR",
    "DEFAULT_EXPLAINER",
    "MAX_MESSAGE_BYTES",
    "TLS",
    "AlreadyExists",
    "CamshaftError",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "Device",
    "EpochRow",
    "ErrorInfo",
    "Explanation",
    "FailedPrecondition",
    "FieldViolation",
    "ImageError",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobFailure",
    "JobOptions",
    "Jobs",
    "Lineage",
    "LoadedModel",
    "LogLine",
    "ModelServingSettings",
    "ModelSpec",
    "ModelVersion",
    "Models",
    "NotFound",
    "PermissionDenied",
    "PreloadState",
    "Recipe",
    "ResourceExhausted",
    "RetryPolicy",
    "ServerInfo",
    "StateChange",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WaitTimeout",
    "Worker",
    "Workers",
    "__version__",
]


def __getattr__(name: str) -> object:
    # `camshaft.aio` without importing grpc.aio until it is used.
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module 'camshaft' has no attribute {name!r}")
