from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Arch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARCH_UNSPECIFIED: _ClassVar[Arch]
    ARCH_CNN: _ClassVar[Arch]
    ARCH_RESNET18: _ClassVar[Arch]
    ARCH_RESNET34: _ClassVar[Arch]

class Head(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEAD_UNSPECIFIED: _ClassVar[Head]
    HEAD_LINEAR: _ClassVar[Head]
    HEAD_FASTAI: _ClassVar[Head]
    HEAD_CAM: _ClassVar[Head]

class Normalization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMALIZATION_UNSPECIFIED: _ClassVar[Normalization]
    NORMALIZATION_NONE: _ClassVar[Normalization]
    NORMALIZATION_IMAGENET: _ClassVar[Normalization]

class ResizeMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_METHOD_UNSPECIFIED: _ClassVar[ResizeMethod]
    RESIZE_METHOD_CROP: _ClassVar[ResizeMethod]
    RESIZE_METHOD_SQUISH: _ClassVar[ResizeMethod]
    RESIZE_METHOD_PAD: _ClassVar[ResizeMethod]

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU: _ClassVar[DeviceKind]
    DEVICE_KIND_CUDA: _ClassVar[DeviceKind]

class ServerRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_ROLE_UNSPECIFIED: _ClassVar[ServerRole]
    SERVER_ROLE_COORDINATOR: _ClassVar[ServerRole]
    SERVER_ROLE_WORKER: _ClassVar[ServerRole]
    SERVER_ROLE_EXPLAINER: _ClassVar[ServerRole]
ARCH_UNSPECIFIED: Arch
ARCH_CNN: Arch
ARCH_RESNET18: Arch
ARCH_RESNET34: Arch
HEAD_UNSPECIFIED: Head
HEAD_LINEAR: Head
HEAD_FASTAI: Head
HEAD_CAM: Head
NORMALIZATION_UNSPECIFIED: Normalization
NORMALIZATION_NONE: Normalization
NORMALIZATION_IMAGENET: Normalization
RESIZE_METHOD_UNSPECIFIED: ResizeMethod
RESIZE_METHOD_CROP: ResizeMethod
RESIZE_METHOD_SQUISH: ResizeMethod
RESIZE_METHOD_PAD: ResizeMethod
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_CPU: DeviceKind
DEVICE_KIND_CUDA: DeviceKind
SERVER_ROLE_UNSPECIFIED: ServerRole
SERVER_ROLE_COORDINATOR: ServerRole
SERVER_ROLE_WORKER: ServerRole
SERVER_ROLE_EXPLAINER: ServerRole

class ModelSpec(_message.Message):
    __slots__ = ("arch", "head", "class_names", "input_size", "normalization", "resize")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    arch: Arch
    head: Head
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input_size: int
    normalization: Normalization
    resize: ResizeMethod
    def __init__(self, arch: _Optional[_Union[Arch, str]] = ..., head: _Optional[_Union[Head, str]] = ..., class_names: _Optional[_Iterable[str]] = ..., input_size: _Optional[int] = ..., normalization: _Optional[_Union[Normalization, str]] = ..., resize: _Optional[_Union[ResizeMethod, str]] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("job_id", "dataset", "metrics", "created_unix_ms", "imported_from", "weights_sha256", "weights_size_bytes", "checkpoint_id", "created_by", "epoch", "selected_by")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FROM_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SELECTED_BY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    dataset: str
    metrics: _containers.ScalarMap[str, float]
    created_unix_ms: int
    imported_from: str
    weights_sha256: str
    weights_size_bytes: int
    checkpoint_id: str
    created_by: str
    epoch: int
    selected_by: str
    def __init__(self, job_id: _Optional[str] = ..., dataset: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., created_unix_ms: _Optional[int] = ..., imported_from: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., weights_size_bytes: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., created_by: _Optional[str] = ..., epoch: _Optional[int] = ..., selected_by: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "aliases", "spec", "lineage", "tags", "description")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    spec: ModelSpec
    lineage: Lineage
    tags: _containers.ScalarMap[str, str]
    description: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ..., spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("kind", "index", "name", "memory_bytes", "cpu_threads")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_THREADS_FIELD_NUMBER: _ClassVar[int]
    kind: DeviceKind
    index: int
    name: str
    memory_bytes: int
    cpu_threads: int
    def __init__(self, kind: _Optional[_Union[DeviceKind, str]] = ..., index: _Optional[int] = ..., name: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., cpu_threads: _Optional[int] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "stage", "train_loss", "valid_loss", "accuracy", "seconds", "images_per_sec", "attempt", "train_samples", "valid_samples", "world_size", "step_profiles", "lr")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    VALID_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEP_PROFILES_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
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
    step_profiles: _containers.RepeatedCompositeFieldContainer[RankStepProfile]
    lr: float
    def __init__(self, epoch: _Optional[int] = ..., stage: _Optional[int] = ..., train_loss: _Optional[float] = ..., valid_loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., seconds: _Optional[float] = ..., images_per_sec: _Optional[float] = ..., attempt: _Optional[int] = ..., train_samples: _Optional[int] = ..., valid_samples: _Optional[int] = ..., world_size: _Optional[int] = ..., step_profiles: _Optional[_Iterable[_Union[RankStepProfile, _Mapping]]] = ..., lr: _Optional[float] = ...) -> None: ...

class StepPhases(_message.Message):
    __slots__ = ("data", "forward", "backward", "allreduce", "optimizer")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    ALLREDUCE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    data: float
    forward: float
    backward: float
    allreduce: float
    optimizer: float
    def __init__(self, data: _Optional[float] = ..., forward: _Optional[float] = ..., backward: _Optional[float] = ..., allreduce: _Optional[float] = ..., optimizer: _Optional[float] = ...) -> None: ...

class RankStepProfile(_message.Message):
    __slots__ = ("rank", "steps", "total_seconds", "last_steps")
    RANK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_STEPS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    steps: int
    total_seconds: StepPhases
    last_steps: _containers.RepeatedCompositeFieldContainer[StepTrace]
    def __init__(self, rank: _Optional[int] = ..., steps: _Optional[int] = ..., total_seconds: _Optional[_Union[StepPhases, _Mapping]] = ..., last_steps: _Optional[_Iterable[_Union[StepTrace, _Mapping]]] = ...) -> None: ...

class StepTrace(_message.Message):
    __slots__ = ("step", "start_seconds", "seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    start_seconds: float
    seconds: StepPhases
    def __init__(self, step: _Optional[int] = ..., start_seconds: _Optional[float] = ..., seconds: _Optional[_Union[StepPhases, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("model_version", "aliases", "device", "loaded_unix_ms", "settings", "preloaded")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LOADED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    PRELOADED_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    device: str
    loaded_unix_ms: int
    settings: ModelServingSettings
    preloaded: bool
    def __init__(self, model_version: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ..., loaded_unix_ms: _Optional[int] = ..., settings: _Optional[_Union[ModelServingSettings, _Mapping]] = ..., preloaded: bool = ...) -> None: ...

class ModelServingSettings(_message.Message):
    __slots__ = ("max_batch", "max_batch_wait_ms", "replicas", "precision")
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    max_batch: int
    max_batch_wait_ms: int
    replicas: int
    precision: str
    def __init__(self, max_batch: _Optional[int] = ..., max_batch_wait_ms: _Optional[int] = ..., replicas: _Optional[int] = ..., precision: _Optional[str] = ...) -> None: ...

class PreloadState(_message.Message):
    __slots__ = ("model_ref", "model_version", "ready", "error")
    MODEL_REF_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model_ref: str
    model_version: str
    ready: bool
    error: str
    def __init__(self, model_ref: _Optional[str] = ..., model_version: _Optional[str] = ..., ready: bool = ..., error: _Optional[str] = ...) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("roles", "version", "started_unix_ms", "store", "store_healthy", "cuda_available", "devices", "loaded_models", "queue_depth", "queue_capacity", "live_workers", "active_jobs", "preload")
    ROLES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    CUDA_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    PRELOAD_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedScalarFieldContainer[ServerRole]
    version: str
    started_unix_ms: int
    store: str
    store_healthy: bool
    cuda_available: bool
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    loaded_models: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    queue_depth: int
    queue_capacity: int
    live_workers: int
    active_jobs: int
    preload: _containers.RepeatedCompositeFieldContainer[PreloadState]
    def __init__(self, roles: _Optional[_Iterable[_Union[ServerRole, str]]] = ..., version: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., store: _Optional[str] = ..., store_healthy: bool = ..., cuda_available: bool = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., loaded_models: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ..., queue_depth: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., live_workers: _Optional[int] = ..., active_jobs: _Optional[int] = ..., preload: _Optional[_Iterable[_Union[PreloadState, _Mapping]]] = ...) -> None: ...
