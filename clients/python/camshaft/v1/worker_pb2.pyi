from camshaft.v1 import common_pb2 as _common_pb2
from camshaft.v1 import coordinator_pb2 as _coordinator_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckpointHeader(_message.Message):
    __slots__ = ("job_id", "attempt", "epochs_done", "meta_json", "size_bytes", "sha256", "checkpoint_id", "attempt_secret")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    META_JSON_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_SECRET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    epochs_done: int
    meta_json: str
    size_bytes: int
    sha256: str
    checkpoint_id: str
    attempt_secret: bytes
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., epochs_done: _Optional[int] = ..., meta_json: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., attempt_secret: _Optional[bytes] = ...) -> None: ...

class CheckpointPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: CheckpointHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[CheckpointHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class CheckpointStored(_message.Message):
    __slots__ = ("checkpoint_id", "size_bytes", "sha256")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    size_bytes: int
    sha256: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("job_id", "checkpoint_id", "attempt", "attempt_secret")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_SECRET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    checkpoint_id: str
    attempt: int
    attempt_secret: bytes
    def __init__(self, job_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., attempt: _Optional[int] = ..., attempt_secret: _Optional[bytes] = ...) -> None: ...

class RunningAssignment(_message.Message):
    __slots__ = ("job_id", "attempt", "ranks", "epochs_done")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    ranks: _containers.RepeatedScalarFieldContainer[int]
    epochs_done: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., ranks: _Optional[_Iterable[int]] = ..., epochs_done: _Optional[int] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("worker_id", "hostname", "devices", "version", "labels", "running", "nccl_available")
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
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    NCCL_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.Device]
    version: str
    labels: _containers.ScalarMap[str, str]
    running: _containers.RepeatedCompositeFieldContainer[RunningAssignment]
    nccl_available: bool
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[_common_pb2.Device, _Mapping]]] = ..., version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., running: _Optional[_Iterable[_Union[RunningAssignment, _Mapping]]] = ..., nccl_available: bool = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("unix_ms", "ranks")
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    ranks: _containers.RepeatedCompositeFieldContainer[RankProgress]
    def __init__(self, unix_ms: _Optional[int] = ..., ranks: _Optional[_Iterable[_Union[RankProgress, _Mapping]]] = ...) -> None: ...

class RankProgress(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "epoch", "step", "steps_in_epoch")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_IN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    epoch: int
    step: int
    steps_in_epoch: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., steps_in_epoch: _Optional[int] = ...) -> None: ...

class RendezvousOffer(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "nccl_unique_id", "ring_address")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    NCCL_UNIQUE_ID_FIELD_NUMBER: _ClassVar[int]
    RING_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    nccl_unique_id: bytes
    ring_address: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., nccl_unique_id: _Optional[bytes] = ..., ring_address: _Optional[str] = ...) -> None: ...

class EpochReport(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "metrics")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    metrics: _common_pb2.EpochMetrics
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., metrics: _Optional[_Union[_common_pb2.EpochMetrics, _Mapping]] = ...) -> None: ...

class AllReduceReport(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "row")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    row: _coordinator_pb2.AllReduceRow
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., row: _Optional[_Union[_coordinator_pb2.AllReduceRow, _Mapping]] = ...) -> None: ...

class CheckpointWritten(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "checkpoint_id", "epochs_done", "size_bytes", "weights_sha256")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_DONE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    checkpoint_id: str
    epochs_done: int
    size_bytes: int
    weights_sha256: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., epochs_done: _Optional[int] = ..., size_bytes: _Optional[int] = ..., weights_sha256: _Optional[str] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "kind", "reason", "epoch", "retryable")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    kind: _coordinator_pb2.FailureKind
    reason: str
    epoch: int
    retryable: bool
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., kind: _Optional[_Union[_coordinator_pb2.FailureKind, str]] = ..., reason: _Optional[str] = ..., epoch: _Optional[int] = ..., retryable: bool = ...) -> None: ...

class TaskDone(_message.Message):
    __slots__ = ("job_id", "attempt", "rank", "final_checkpoint_id", "final_metrics")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    FINAL_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    rank: int
    final_checkpoint_id: str
    final_metrics: _common_pb2.EpochMetrics
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., final_checkpoint_id: _Optional[str] = ..., final_metrics: _Optional[_Union[_common_pb2.EpochMetrics, _Mapping]] = ...) -> None: ...

class WorkerLog(_message.Message):
    __slots__ = ("job_id", "rank", "level", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    level: str
    message: str
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ..., level: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "rendezvous_offer", "epoch_report", "checkpoint_written", "task_failed", "task_done", "log", "drain", "allreduce_report")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_OFFER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_REPORT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    TASK_FAILED_FIELD_NUMBER: _ClassVar[int]
    TASK_DONE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    ALLREDUCE_REPORT_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    rendezvous_offer: RendezvousOffer
    epoch_report: EpochReport
    checkpoint_written: CheckpointWritten
    task_failed: TaskFailed
    task_done: TaskDone
    log: WorkerLog
    drain: Drain
    allreduce_report: AllReduceReport
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., rendezvous_offer: _Optional[_Union[RendezvousOffer, _Mapping]] = ..., epoch_report: _Optional[_Union[EpochReport, _Mapping]] = ..., checkpoint_written: _Optional[_Union[CheckpointWritten, _Mapping]] = ..., task_failed: _Optional[_Union[TaskFailed, _Mapping]] = ..., task_done: _Optional[_Union[TaskDone, _Mapping]] = ..., log: _Optional[_Union[WorkerLog, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., allreduce_report: _Optional[_Union[AllReduceReport, _Mapping]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("worker_id", "lease_ttl_ms", "heartbeat_interval_ms", "coordinator_version", "keep_running")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEEP_RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    lease_ttl_ms: int
    heartbeat_interval_ms: int
    coordinator_version: str
    keep_running: _containers.RepeatedCompositeFieldContainer[RunningAssignment]
    def __init__(self, worker_id: _Optional[str] = ..., lease_ttl_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., coordinator_version: _Optional[str] = ..., keep_running: _Optional[_Iterable[_Union[RunningAssignment, _Mapping]]] = ...) -> None: ...

class LocalRank(_message.Message):
    __slots__ = ("rank", "local_rank", "device")
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    rank: int
    local_rank: int
    device: _common_pb2.Device
    def __init__(self, rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., device: _Optional[_Union[_common_pb2.Device, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("job_id", "attempt", "world_size", "ranks", "spec", "backend", "resume_checkpoint_id", "shard_seed", "rendezvous_timeout_ms", "num_workers", "attempt_secret")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RESUME_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_SEED_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    NUM_WORKERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_SECRET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    world_size: int
    ranks: _containers.RepeatedCompositeFieldContainer[LocalRank]
    spec: _coordinator_pb2.JobSpec
    backend: _coordinator_pb2.CollectiveBackend
    resume_checkpoint_id: str
    shard_seed: int
    rendezvous_timeout_ms: int
    num_workers: int
    attempt_secret: bytes
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., world_size: _Optional[int] = ..., ranks: _Optional[_Iterable[_Union[LocalRank, _Mapping]]] = ..., spec: _Optional[_Union[_coordinator_pb2.JobSpec, _Mapping]] = ..., backend: _Optional[_Union[_coordinator_pb2.CollectiveBackend, str]] = ..., resume_checkpoint_id: _Optional[str] = ..., shard_seed: _Optional[int] = ..., rendezvous_timeout_ms: _Optional[int] = ..., num_workers: _Optional[int] = ..., attempt_secret: _Optional[bytes] = ...) -> None: ...

class Rendezvous(_message.Message):
    __slots__ = ("job_id", "attempt", "nccl_unique_id", "ring_peers")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NCCL_UNIQUE_ID_FIELD_NUMBER: _ClassVar[int]
    RING_PEERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    nccl_unique_id: bytes
    ring_peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., nccl_unique_id: _Optional[bytes] = ..., ring_peers: _Optional[_Iterable[str]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason", "drain")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    reason: str
    drain: bool
    def __init__(self, reason: _Optional[str] = ..., drain: bool = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("registered", "assignment", "rendezvous", "cancel", "shutdown")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    assignment: Assignment
    rendezvous: Rendezvous
    cancel: Cancel
    shutdown: Shutdown
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., rendezvous: _Optional[_Union[Rendezvous, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...
