from camshaft.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_KIND_UNSPECIFIED: _ClassVar[DatasetKind]
    DATASET_KIND_SYNTHETIC: _ClassVar[DatasetKind]
    DATASET_KIND_CIFAR10: _ClassVar[DatasetKind]
    DATASET_KIND_PETS: _ClassVar[DatasetKind]
    DATASET_KIND_PETS_BREEDS: _ClassVar[DatasetKind]
    DATASET_KIND_FOLDER: _ClassVar[DatasetKind]

class PretrainedSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRETRAINED_SOURCE_UNSPECIFIED: _ClassVar[PretrainedSource]
    PRETRAINED_SOURCE_NONE: _ClassVar[PretrainedSource]
    PRETRAINED_SOURCE_IMAGENET: _ClassVar[PretrainedSource]
    PRETRAINED_SOURCE_PATH: _ClassVar[PretrainedSource]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]

class CollectiveBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLLECTIVE_BACKEND_UNSPECIFIED: _ClassVar[CollectiveBackend]
    COLLECTIVE_BACKEND_NCCL: _ClassVar[CollectiveBackend]
    COLLECTIVE_BACKEND_RING: _ClassVar[CollectiveBackend]

class RegisterPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTER_POLICY_UNSPECIFIED: _ClassVar[RegisterPolicy]
    REGISTER_POLICY_LAST: _ClassVar[RegisterPolicy]
    REGISTER_POLICY_BEST: _ClassVar[RegisterPolicy]

class MonitorMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MONITOR_METRIC_UNSPECIFIED: _ClassVar[MonitorMetric]
    MONITOR_METRIC_VALID_LOSS: _ClassVar[MonitorMetric]
    MONITOR_METRIC_ACCURACY: _ClassVar[MonitorMetric]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_RESTARTING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_TASK_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_WORKER_LOST: _ClassVar[FailureKind]
    FAILURE_KIND_COLLECTIVE_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_MEMBERSHIP_CHANGE: _ClassVar[FailureKind]
    FAILURE_KIND_COORDINATOR_RESTART: _ClassVar[FailureKind]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_IDLE: _ClassVar[WorkerState]
    WORKER_STATE_BUSY: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]
    WORKER_STATE_LOST: _ClassVar[WorkerState]

class WeightsFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHTS_FORMAT_UNSPECIFIED: _ClassVar[WeightsFormat]
    WEIGHTS_FORMAT_SAFETENSORS: _ClassVar[WeightsFormat]
    WEIGHTS_FORMAT_PTH: _ClassVar[WeightsFormat]
DATASET_KIND_UNSPECIFIED: DatasetKind
DATASET_KIND_SYNTHETIC: DatasetKind
DATASET_KIND_CIFAR10: DatasetKind
DATASET_KIND_PETS: DatasetKind
DATASET_KIND_PETS_BREEDS: DatasetKind
DATASET_KIND_FOLDER: DatasetKind
PRETRAINED_SOURCE_UNSPECIFIED: PretrainedSource
PRETRAINED_SOURCE_NONE: PretrainedSource
PRETRAINED_SOURCE_IMAGENET: PretrainedSource
PRETRAINED_SOURCE_PATH: PretrainedSource
PRECISION_UNSPECIFIED: Precision
PRECISION_FP32: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision
COLLECTIVE_BACKEND_UNSPECIFIED: CollectiveBackend
COLLECTIVE_BACKEND_NCCL: CollectiveBackend
COLLECTIVE_BACKEND_RING: CollectiveBackend
REGISTER_POLICY_UNSPECIFIED: RegisterPolicy
REGISTER_POLICY_LAST: RegisterPolicy
REGISTER_POLICY_BEST: RegisterPolicy
MONITOR_METRIC_UNSPECIFIED: MonitorMetric
MONITOR_METRIC_VALID_LOSS: MonitorMetric
MONITOR_METRIC_ACCURACY: MonitorMetric
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_RESTARTING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_TASK_ERROR: FailureKind
FAILURE_KIND_WORKER_LOST: FailureKind
FAILURE_KIND_COLLECTIVE_TIMEOUT: FailureKind
FAILURE_KIND_MEMBERSHIP_CHANGE: FailureKind
FAILURE_KIND_COORDINATOR_RESTART: FailureKind
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_IDLE: WorkerState
WORKER_STATE_BUSY: WorkerState
WORKER_STATE_DRAINING: WorkerState
WORKER_STATE_LOST: WorkerState
WEIGHTS_FORMAT_UNSPECIFIED: WeightsFormat
WEIGHTS_FORMAT_SAFETENSORS: WeightsFormat
WEIGHTS_FORMAT_PTH: WeightsFormat

class SyntheticDataset(_message.Message):
    __slots__ = ("train_len", "valid_len", "image_size", "num_classes", "seed")
    TRAIN_LEN_FIELD_NUMBER: _ClassVar[int]
    VALID_LEN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    train_len: int
    valid_len: int
    image_size: int
    num_classes: int
    seed: int
    def __init__(self, train_len: _Optional[int] = ..., valid_len: _Optional[int] = ..., image_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("kind", "data_dir", "download", "valid_pct", "split_seed", "synthetic")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    VALID_PCT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_SEED_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    kind: DatasetKind
    data_dir: str
    download: bool
    valid_pct: float
    split_seed: int
    synthetic: SyntheticDataset
    def __init__(self, kind: _Optional[_Union[DatasetKind, str]] = ..., data_dir: _Optional[str] = ..., download: bool = ..., valid_pct: _Optional[float] = ..., split_seed: _Optional[int] = ..., synthetic: _Optional[_Union[SyntheticDataset, _Mapping]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "dataset", "arch", "head", "pretrained", "pretrained_path", "normalization", "epochs", "fine_tune", "freeze_epochs", "lr", "batch_size", "image_size", "resize", "flip", "weight_decay", "seed", "workers", "gpus_per_worker", "device", "min_workers", "max_failures", "max_membership_changes", "checkpoint_every", "keep_checkpoints", "precision", "channels_last", "collective", "bucket_mib", "collective_timeout_ms", "aliases", "profile_steps", "collective_bench", "register", "monitor", "early_stop_patience", "tags", "description", "cuda_graphs")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_PATH_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNE_FIELD_NUMBER: _ClassVar[int]
    FREEZE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    FLIP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMBERSHIP_CHANGES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    KEEP_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_LAST_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_MIB_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    PROFILE_STEPS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_BENCH_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOP_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CUDA_GRAPHS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: DatasetSpec
    arch: _common_pb2.Arch
    head: _common_pb2.Head
    pretrained: PretrainedSource
    pretrained_path: str
    normalization: _common_pb2.Normalization
    epochs: int
    fine_tune: bool
    freeze_epochs: int
    lr: float
    batch_size: int
    image_size: int
    resize: _common_pb2.ResizeMethod
    flip: bool
    weight_decay: float
    seed: int
    workers: int
    gpus_per_worker: int
    device: _common_pb2.DeviceKind
    min_workers: int
    max_failures: int
    max_membership_changes: int
    checkpoint_every: int
    keep_checkpoints: int
    precision: Precision
    channels_last: bool
    collective: CollectiveBackend
    bucket_mib: int
    collective_timeout_ms: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    profile_steps: bool
    collective_bench: CollectiveBench
    register: RegisterPolicy
    monitor: MonitorMetric
    early_stop_patience: int
    tags: _containers.ScalarMap[str, str]
    description: str
    cuda_graphs: bool
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[_Union[DatasetSpec, _Mapping]] = ..., arch: _Optional[_Union[_common_pb2.Arch, str]] = ..., head: _Optional[_Union[_common_pb2.Head, str]] = ..., pretrained: _Optional[_Union[PretrainedSource, str]] = ..., pretrained_path: _Optional[str] = ..., normalization: _Optional[_Union[_common_pb2.Normalization, str]] = ..., epochs: _Optional[int] = ..., fine_tune: bool = ..., freeze_epochs: _Optional[int] = ..., lr: _Optional[float] = ..., batch_size: _Optional[int] = ..., image_size: _Optional[int] = ..., resize: _Optional[_Union[_common_pb2.ResizeMethod, str]] = ..., flip: bool = ..., weight_decay: _Optional[float] = ..., seed: _Optional[int] = ..., workers: _Optional[int] = ..., gpus_per_worker: _Optional[int] = ..., device: _Optional[_Union[_common_pb2.DeviceKind, str]] = ..., min_workers: _Optional[int] = ..., max_failures: _Optional[int] = ..., max_membership_changes: _Optional[int] = ..., checkpoint_every: _Optional[int] = ..., keep_checkpoints: _Optional[int] = ..., precision: _Optional[_Union[Precision, str]] = ..., channels_last: bool = ..., collective: _Optional[_Union[CollectiveBackend, str]] = ..., bucket_mib: _Optional[int] = ..., collective_timeout_ms: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ..., profile_steps: bool = ..., collective_bench: _Optional[_Union[CollectiveBench, _Mapping]] = ..., register: _Optional[_Union[RegisterPolicy, str]] = ..., monitor: _Optional[_Union[MonitorMetric, str]] = ..., early_stop_patience: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., cuda_graphs: bool = ...) -> None: ...

class EarlyStop(_message.Message):
    __slots__ = ("epoch", "best_epoch", "best_value", "monitor", "reason")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    best_epoch: int
    best_value: float
    monitor: str
    reason: str
    def __init__(self, epoch: _Optional[int] = ..., best_epoch: _Optional[int] = ..., best_value: _Optional[float] = ..., monitor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CollectiveBench(_message.Message):
    __slots__ = ("min_bytes", "max_bytes", "iters", "warmup")
    MIN_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    ITERS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    min_bytes: int
    max_bytes: int
    iters: int
    warmup: int
    def __init__(self, min_bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ..., iters: _Optional[int] = ..., warmup: _Optional[int] = ...) -> None: ...

class AllReduceRow(_message.Message):
    __slots__ = ("bytes", "count", "dtype", "redop", "time_us", "algbw_gbps", "busbw_gbps", "wrong", "world_size", "iters", "attempt", "collective", "mean_time_us")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    REDOP_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    ALGBW_GBPS_FIELD_NUMBER: _ClassVar[int]
    BUSBW_GBPS_FIELD_NUMBER: _ClassVar[int]
    WRONG_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ITERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_US_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    count: int
    dtype: str
    redop: str
    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int
    world_size: int
    iters: int
    attempt: int
    collective: CollectiveBackend
    mean_time_us: float
    def __init__(self, bytes: _Optional[int] = ..., count: _Optional[int] = ..., dtype: _Optional[str] = ..., redop: _Optional[str] = ..., time_us: _Optional[float] = ..., algbw_gbps: _Optional[float] = ..., busbw_gbps: _Optional[float] = ..., wrong: _Optional[int] = ..., world_size: _Optional[int] = ..., iters: _Optional[int] = ..., attempt: _Optional[int] = ..., collective: _Optional[_Union[CollectiveBackend, str]] = ..., mean_time_us: _Optional[float] = ...) -> None: ...

class JobFailure(_message.Message):
    __slots__ = ("attempt", "kind", "rank", "worker_id", "reason", "epoch", "unix_ms")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    kind: FailureKind
    rank: int
    worker_id: str
    reason: str
    epoch: int
    unix_ms: int
    def __init__(self, attempt: _Optional[int] = ..., kind: _Optional[_Union[FailureKind, str]] = ..., rank: _Optional[int] = ..., worker_id: _Optional[str] = ..., reason: _Optional[str] = ..., epoch: _Optional[int] = ..., unix_ms: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "attempt", "created_unix_ms", "started_unix_ms", "finished_unix_ms", "history", "failures", "failures_used", "membership_changes_used", "worker_ids", "world_size", "model_version", "error", "last_checkpoint_id", "epochs_done", "allreduce_rows", "created_by", "early_stop")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_USED_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_CHANGES_USED_FIELD_NUMBER: _ClassVar[int]
    WORKER_IDS_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    ALLREDUCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOP_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: JobState
    attempt: int
    created_unix_ms: int
    started_unix_ms: int
    finished_unix_ms: int
    history: _containers.RepeatedCompositeFieldContainer[_common_pb2.EpochMetrics]
    failures: _containers.RepeatedCompositeFieldContainer[JobFailure]
    failures_used: int
    membership_changes_used: int
    worker_ids: _containers.RepeatedScalarFieldContainer[str]
    world_size: int
    model_version: str
    error: str
    last_checkpoint_id: str
    epochs_done: int
    allreduce_rows: _containers.RepeatedCompositeFieldContainer[AllReduceRow]
    created_by: str
    early_stop: EarlyStop
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., history: _Optional[_Iterable[_Union[_common_pb2.EpochMetrics, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[JobFailure, _Mapping]]] = ..., failures_used: _Optional[int] = ..., membership_changes_used: _Optional[int] = ..., worker_ids: _Optional[_Iterable[str]] = ..., world_size: _Optional[int] = ..., model_version: _Optional[str] = ..., error: _Optional[str] = ..., last_checkpoint_id: _Optional[str] = ..., epochs_done: _Optional[int] = ..., allreduce_rows: _Optional[_Iterable[_Union[AllReduceRow, _Mapping]]] = ..., created_by: _Optional[str] = ..., early_stop: _Optional[_Union[EarlyStop, _Mapping]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence", "include_logs")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LOGS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    include_logs: bool
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., include_logs: bool = ...) -> None: ...

class JobStateChanged(_message.Message):
    __slots__ = ("to", "attempt", "reason", "world_size")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    to: JobState
    attempt: int
    reason: str
    world_size: int
    def __init__(self, to: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., world_size: _Optional[int] = ..., **kwargs) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("level", "rank", "worker_id", "message")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: str
    rank: int
    worker_id: str
    message: str
    def __init__(self, level: _Optional[str] = ..., rank: _Optional[int] = ..., worker_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ModelRegistered(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ModelVersion
    def __init__(self, version: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "unix_ms", "state_changed", "epoch", "log", "model_registered", "failure", "allreduce")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    MODEL_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ALLREDUCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    unix_ms: int
    state_changed: JobStateChanged
    epoch: _common_pb2.EpochMetrics
    log: LogLine
    model_registered: ModelRegistered
    failure: JobFailure
    allreduce: AllReduceRow
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., unix_ms: _Optional[int] = ..., state_changed: _Optional[_Union[JobStateChanged, _Mapping]] = ..., epoch: _Optional[_Union[_common_pb2.EpochMetrics, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., model_registered: _Optional[_Union[ModelRegistered, _Mapping]] = ..., failure: _Optional[_Union[JobFailure, _Mapping]] = ..., allreduce: _Optional[_Union[AllReduceRow, _Mapping]] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "hostname", "devices", "state", "job_id", "ranks", "registered_unix_ms", "last_heartbeat_unix_ms", "lease_expires_unix_ms", "version", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.Device]
    state: WorkerState
    job_id: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    registered_unix_ms: int
    last_heartbeat_unix_ms: int
    lease_expires_unix_ms: int
    version: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[_common_pb2.Device, _Mapping]]] = ..., state: _Optional[_Union[WorkerState, str]] = ..., job_id: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., registered_unix_ms: _Optional[int] = ..., last_heartbeat_unix_ms: _Optional[int] = ..., lease_expires_unix_ms: _Optional[int] = ..., version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("include_lost",)
    INCLUDE_LOST_FIELD_NUMBER: _ClassVar[int]
    include_lost: bool
    def __init__(self, include_lost: bool = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ModelVersion
    def __init__(self, version: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("name", "alias", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    version: int
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SetAliasResponse(_message.Message):
    __slots__ = ("version", "previous_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ModelVersion
    previous_version: int
    def __init__(self, version: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., previous_version: _Optional[int] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("name", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ("previous_version",)
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    previous_version: int
    def __init__(self, previous_version: _Optional[int] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "version", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    force: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., force: bool = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("removed_aliases",)
    REMOVED_ALIASES_FIELD_NUMBER: _ClassVar[int]
    removed_aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed_aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportModelHeader(_message.Message):
    __slots__ = ("name", "spec", "format", "size_bytes", "sha256", "file_name", "dataset", "aliases", "metrics", "tags", "description")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _common_pb2.ModelSpec
    format: WeightsFormat
    size_bytes: int
    sha256: str
    file_name: str
    dataset: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.ScalarMap[str, float]
    tags: _containers.ScalarMap[str, str]
    description: str
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., format: _Optional[_Union[WeightsFormat, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., file_name: _Optional[str] = ..., dataset: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tags: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ...) -> None: ...

class UpdateModelVersionRequest(_message.Message):
    __slots__ = ("name", "version", "set_tags", "remove_tags", "description")
    class SetTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    set_tags: _containers.ScalarMap[str, str]
    remove_tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., set_tags: _Optional[_Mapping[str, str]] = ..., remove_tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class AliasChange(_message.Message):
    __slots__ = ("name", "alias", "from_version", "to_version", "changed_by", "unix_ms", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    from_version: int
    to_version: int
    changed_by: str
    unix_ms: int
    revision: int
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., changed_by: _Optional[str] = ..., unix_ms: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class GetAliasHistoryRequest(_message.Message):
    __slots__ = ("name", "alias", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetAliasHistoryResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[AliasChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[AliasChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchModelsRequest(_message.Message):
    __slots__ = ("name", "after_sequence", "stream_id", "replay_retained")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_RETAINED_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    stream_id: str
    replay_retained: bool
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ..., stream_id: _Optional[str] = ..., replay_retained: bool = ...) -> None: ...

class ModelVersionDeleted(_message.Message):
    __slots__ = ("name", "version", "removed_aliases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REMOVED_ALIASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    removed_aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., removed_aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelEvent(_message.Message):
    __slots__ = ("sequence", "unix_ms", "stream_id", "version_registered", "version_deleted", "alias_changed", "version_updated")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    VERSION_DELETED_FIELD_NUMBER: _ClassVar[int]
    ALIAS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    VERSION_UPDATED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    unix_ms: int
    stream_id: str
    version_registered: _common_pb2.ModelVersion
    version_deleted: ModelVersionDeleted
    alias_changed: AliasChange
    version_updated: _common_pb2.ModelVersion
    def __init__(self, sequence: _Optional[int] = ..., unix_ms: _Optional[int] = ..., stream_id: _Optional[str] = ..., version_registered: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., version_deleted: _Optional[_Union[ModelVersionDeleted, _Mapping]] = ..., alias_changed: _Optional[_Union[AliasChange, _Mapping]] = ..., version_updated: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ...) -> None: ...

class UpdateModelVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ModelVersion
    def __init__(self, version: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ImportModelHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ImportModelHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImportModelResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ModelVersion
    def __init__(self, version: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ...) -> None: ...
