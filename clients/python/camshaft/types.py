"""The SDK's view of the messages it returns: small frozen dataclasses with
enums as short names (``resnet18``, ``running``) and times as Unix
milliseconds, each keeping the message it came from in ``proto``.

:func:`message_to_dict` turns any ``camshaft.v1`` message into plain Python
(what ``job.spec`` and step profiles are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from . import _names


def _is_repeated(f: Any) -> bool:
    # `is_repeated` is the newer spelling; `label` is deprecated in newer protobufs.
    repeated = getattr(f, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(f.label == FieldDescriptor.LABEL_REPEATED)  # pragma: no cover


def _value(f: Any, value: Any) -> Any:
    if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return message_to_dict(value)
    if f.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return _names.short_name(f.enum_type, value)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return bytes(value)
    return value


def message_to_dict(message: Message) -> dict[str, Any]:
    """``message`` as a dict keyed by the proto's field names: every field,
    enums as short names, unset ``optional`` fields as ``None``, nested
    messages as dicts (``None`` when unset), repeated fields as lists and maps
    as dicts."""
    out: dict[str, Any] = {}
    fields: list[Any] = list(message.DESCRIPTOR.fields)
    for f in fields:
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            out[f.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif _is_repeated(f):
            out[f.name] = [_value(f, v) for v in value]
        elif f.has_presence and not message.HasField(f.name):
            out[f.name] = None
        else:
            out[f.name] = _value(f, value)
    return out


@dataclass(frozen=True)
class EpochRow:
    """One row of a job's epoch table (``EpochMetrics``), for the whole group."""

    epoch: int
    stage: int
    train_loss: float
    valid_loss: float
    accuracy: float
    seconds: float
    images_per_sec: float
    attempt: int
    train_samples: int
    valid_samples: int
    world_size: int
    step_profiles: list[dict[str, Any]] = field(default_factory=list, repr=False)
    #: Learning rate of the epoch's last step (the head's parameter group).
    lr: float = 0.0
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> EpochRow:
        return cls(
            epoch=m.epoch,
            stage=m.stage,
            train_loss=m.train_loss,
            valid_loss=m.valid_loss,
            accuracy=m.accuracy,
            seconds=m.seconds,
            images_per_sec=m.images_per_sec,
            attempt=m.attempt,
            train_samples=m.train_samples,
            valid_samples=m.valid_samples,
            world_size=m.world_size,
            step_profiles=[message_to_dict(p) for p in m.step_profiles],
            lr=m.lr,
            proto=m,
        )

    def to_dict(self) -> dict[str, Any]:
        """The row as a dict (the fields of ``EpochMetrics``)."""
        return message_to_dict(self.proto)


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild and feed a model: everything besides its weights."""

    arch: str
    head: str
    class_names: list[str]
    input_size: int
    normalization: str
    resize: str

    @classmethod
    def from_proto(cls, m: Any) -> ModelSpec:
        return cls(
            arch=_names.short_name(_names.Arch, m.arch),
            head=_names.short_name(_names.Head, m.head),
            class_names=list(m.class_names),
            input_size=m.input_size,
            normalization=_names.short_name(_names.Normalization, m.normalization),
            resize=_names.short_name(_names.ResizeMethod, m.resize),
        )


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from."""

    job_id: str
    dataset: str
    metrics: dict[str, float]
    created_unix_ms: int
    imported_from: str
    weights_sha256: str
    weights_size_bytes: int
    checkpoint_id: str
    created_by: str
    #: The epoch (0-based) whose weights these are; None for an import.
    epoch: int | None = None
    #: How that epoch was chosen: ``last``, ``best valid_loss``, ``best accuracy``.
    selected_by: str = ""

    @classmethod
    def from_proto(cls, m: Any) -> Lineage:
        return cls(
            job_id=m.job_id,
            dataset=m.dataset,
            metrics=dict(m.metrics),
            created_unix_ms=m.created_unix_ms,
            imported_from=m.imported_from,
            weights_sha256=m.weights_sha256,
            weights_size_bytes=m.weights_size_bytes,
            checkpoint_id=m.checkpoint_id,
            created_by=m.created_by,
            epoch=m.epoch if m.HasField("epoch") else None,
            selected_by=m.selected_by,
        )


@dataclass(frozen=True)
class ModelVersion:
    """One registered, immutable version of a named model."""

    name: str
    version: int
    aliases: list[str]
    spec: ModelSpec
    lineage: Lineage
    #: Free-form labels, editable with :meth:`~camshaft.client.Models.update`.
    tags: dict[str, str] = field(default_factory=dict)
    #: What the version is for, editable.
    description: str = ""
    proto: Any = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        """``name:version``, the reference that always means this version."""
        return f"{self.name}:{self.version}"

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    def __str__(self) -> str:
        return self.ref

    @classmethod
    def from_proto(cls, m: Any) -> ModelVersion:
        return cls(
            name=m.name,
            version=m.version,
            aliases=list(m.aliases),
            spec=ModelSpec.from_proto(m.spec),
            lineage=Lineage.from_proto(m.lineage),
            tags=dict(m.tags),
            description=m.description,
            proto=m,
        )


@dataclass(frozen=True)
class StateChange:
    """The job changed state."""

    from_state: str
    to_state: str
    attempt: int
    reason: str
    world_size: int


@dataclass(frozen=True)
class LogLine:
    """A log line from a rank."""

    level: str
    rank: int
    worker_id: str
    message: str

    def __str__(self) -> str:
        return f"[rank {self.rank} {self.level}] {self.message}"


@dataclass(frozen=True)
class JobFailure:
    """One failure of a job attempt."""

    attempt: int
    kind: str
    rank: int | None
    worker_id: str
    reason: str
    epoch: int | None
    unix_ms: int

    @classmethod
    def from_proto(cls, m: Any) -> JobFailure:
        return cls(
            attempt=m.attempt,
            kind=_names.short_name(_names.FailureKind, m.kind),
            rank=m.rank if m.HasField("rank") else None,
            worker_id=m.worker_id,
            reason=m.reason,
            epoch=m.epoch if m.HasField("epoch") else None,
            unix_ms=m.unix_ms,
        )


@dataclass(frozen=True)
class JobEvent:
    """One event of a job, in the order the coordinator recorded it.

    ``kind`` is ``state_changed``, ``epoch``, ``log``, ``model_registered``,
    ``failure`` or ``allreduce``; ``data`` is the matching
    :class:`StateChange`, :class:`EpochRow`, :class:`LogLine`,
    :class:`ModelVersion`, :class:`JobFailure` or dict (an all-reduce row).
    """

    job_id: str
    sequence: int
    unix_ms: int
    kind: str
    data: Any
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> JobEvent:
        kind = m.WhichOneof("event") or ""
        data: Any = None
        if kind == "state_changed":
            c = m.state_changed
            data = StateChange(
                from_state=_names.short_name(_names.JobState, getattr(c, "from")),
                to_state=_names.short_name(_names.JobState, c.to),
                attempt=c.attempt,
                reason=c.reason,
                world_size=c.world_size,
            )
        elif kind == "epoch":
            data = EpochRow.from_proto(m.epoch)
        elif kind == "log":
            data = LogLine(m.log.level, m.log.rank, m.log.worker_id, m.log.message)
        elif kind == "model_registered":
            data = ModelVersion.from_proto(m.model_registered.version)
        elif kind == "failure":
            data = JobFailure.from_proto(m.failure)
        elif kind == "allreduce":
            data = message_to_dict(m.allreduce)
        return cls(job_id=m.job_id, sequence=m.sequence, unix_ms=m.unix_ms, kind=kind, data=data, proto=m)

    @property
    def terminal_state(self) -> str | None:
        """The terminal state this event moved the job into, if it did."""
        if self.kind == "state_changed" and self.data.to_state in _names.TERMINAL_STATES:
            return str(self.data.to_state)
        return None


@dataclass(frozen=True)
class Device:
    """A compute device of a worker or server."""

    kind: str
    index: int
    name: str
    memory_bytes: int
    cpu_threads: int

    @classmethod
    def from_proto(cls, m: Any) -> Device:
        return cls(
            kind=_names.short_name(_names.DeviceKind, m.kind),
            index=m.index,
            name=m.name,
            memory_bytes=m.memory_bytes,
            cpu_threads=m.cpu_threads,
        )


@dataclass(frozen=True)
class Worker:
    """A worker as the coordinator sees it."""

    worker_id: str
    hostname: str
    devices: list[Device]
    state: str
    job_id: str
    ranks: list[int]
    registered_unix_ms: int
    last_heartbeat_unix_ms: int
    lease_expires_unix_ms: int
    version: str
    labels: dict[str, str]
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> Worker:
        return cls(
            worker_id=m.worker_id,
            hostname=m.hostname,
            devices=[Device.from_proto(d) for d in m.devices],
            state=_names.short_name(_names.WorkerState, m.state),
            job_id=m.job_id,
            ranks=list(m.ranks),
            registered_unix_ms=m.registered_unix_ms,
            last_heartbeat_unix_ms=m.last_heartbeat_unix_ms,
            lease_expires_unix_ms=m.lease_expires_unix_ms,
            version=m.version,
            labels=dict(m.labels),
            proto=m,
        )


@dataclass(frozen=True)
class ModelServingSettings:
    """How an explainer runs a model's versions: its ``models.<name>``
    entry over its global settings."""

    max_batch: int
    max_batch_wait_ms: int
    replicas: int
    precision: str


@dataclass(frozen=True)
class LoadedModel:
    """A model version held in an explainer's memory."""

    model_version: str
    aliases: list[str]
    device: str
    loaded_unix_ms: int
    #: The settings it runs with (``None`` from explainers older than them).
    settings: ModelServingSettings | None = None
    #: Whether the explainer's ``preload`` names it (kept loaded and warm).
    preloaded: bool = False

    @classmethod
    def from_proto(cls, m: Any) -> LoadedModel:
        s = m.settings if m.HasField("settings") else None
        return cls(
            model_version=m.model_version,
            aliases=list(m.aliases),
            device=m.device,
            loaded_unix_ms=m.loaded_unix_ms,
            settings=None
            if s is None
            else ModelServingSettings(s.max_batch, s.max_batch_wait_ms, s.replicas, s.precision),
            preloaded=m.preloaded,
        )


@dataclass(frozen=True)
class PreloadState:
    """One reference of an explainer's ``preload`` list: health is
    NOT_SERVING until every one is ready."""

    model_ref: str
    #: ``name:version`` it resolved to when last loaded; empty before.
    model_version: str
    ready: bool
    #: Why it is not ready (the last error); empty while it loads.
    error: str


@dataclass(frozen=True)
class ServerInfo:
    """What a server says about itself (``ctl status``)."""

    roles: list[str]
    version: str
    started_unix_ms: int
    store: str
    store_healthy: bool
    cuda_available: bool
    devices: list[Device]
    loaded_models: list[LoadedModel]
    queue_depth: int
    queue_capacity: int
    live_workers: int
    active_jobs: int
    #: Explainer only: its ``preload`` list.
    preload: list[PreloadState] = field(default_factory=list)
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: Any) -> ServerInfo:
        return cls(
            roles=[_names.short_name(_names.ServerRole, r) for r in m.roles],
            version=m.version,
            started_unix_ms=m.started_unix_ms,
            store=m.store,
            store_healthy=m.store_healthy,
            cuda_available=m.cuda_available,
            devices=[Device.from_proto(d) for d in m.devices],
            loaded_models=[LoadedModel.from_proto(lm) for lm in m.loaded_models],
            queue_depth=m.queue_depth,
            queue_capacity=m.queue_capacity,
            live_workers=m.live_workers,
            active_jobs=m.active_jobs,
            preload=[PreloadState(p.model_ref, p.model_version, p.ready, p.error) for p in m.preload],
            proto=m,
        )
