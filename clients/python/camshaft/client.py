"""The synchronous client: :class:`Client`, and the :class:`Job` it returns.

Everything ``ctl`` does is here: ``submit_job`` (``ctl submit-job``),
``jobs.list/get/cancel/watch`` and ``Job.logs``/``Job.trace`` (``ctl jobs``),
``models.list/get/set_alias/delete_alias/delete/import_weights``
(``ctl models``), ``workers.list`` (``ctl workers list``), ``explain``
(``ctl explain``) and ``status``/``server_info`` (``ctl status``).
"""

from __future__ import annotations

import builtins
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from . import _names
from ._connection import (
    WATCH_RECONNECT_CODES,
    Endpoint,
    RetryPolicy,
    TLSOption,
    endpoint,
    read_token,
    resolve_tls,
    secure_or_insecure,
    watch_backoff,
)
from .errors import (
    CamshaftError,
    DeadlineExceeded,
    InvalidArgument,
    JobFailed,
    Unavailable,
    WaitTimeout,
    from_rpc_error,
)
from .explain import (
    ExplainOptions,
    Explanation,
    Recipe,
    ImageLike,
    image_inputs,
    images_per_request,
    plan_batches,
    too_large_for_one_request,
)
from .spec import build_job_spec, job_states, load_spec, merge_options
from .types import EpochRow, JobEvent, LogLine, ModelVersion, ServerInfo, Worker, message_to_dict
from .v1 import common_pb2, common_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc, explainer_pb2_grpc
from .weights import to_safetensors

if TYPE_CHECKING:
    import pandas
    from typing_extensions import Unpack

    from .spec import JobOptions

T = TypeVar("T")

IMPORT_CHUNK_BYTES = 1024 * 1024
"""Chunk size of an ``ImportModel`` upload (``camshaft_proto::IMPORT_CHUNK_BYTES``)."""

LOG_IDLE_SECONDS = 1.0
"""``Job.logs()`` of a running job stops after this long without a new line."""


class Deadline:
    """An absolute deadline from a timeout in seconds (``None``: none)."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (``None`` without a deadline); raises
        :class:`DeadlineExceeded` once it has passed."""
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the timeout passed")
        return left

    def sleep_for(self, seconds: float) -> float:
        """``seconds``, or what is left of the deadline when that is less."""
        left = None if self.at is None else self.at - time.monotonic()
        return seconds if left is None else max(0.0, min(seconds, left))


def new_request_id() -> str:
    """A random idempotency key for ``SubmitJob`` (a UUID4)."""
    return str(uuid.uuid4())


def import_header(
    name: str,
    arch: str,
    head: str,
    classes: Sequence[str],
    image_size: int,
    normalize: str | None,
    resize: str | None,
    aliases: str | Sequence[str],
    dataset: str | None,
    metrics: Mapping[str, float] | None,
    data: bytes,
    file_name: str,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> Any:
    """The ``ImportModelHeader`` of an import, as ``ctl models import`` builds
    it: normalisation defaults to ImageNet's for a ResNet and none for the
    CNN; resize to crop (what validation did)."""
    arch_number = _names.parse(_names.Arch, arch)
    class_names = [str(c).strip() for c in classes]
    if isinstance(classes, str) or not class_names:
        raise InvalidArgument("classes must be a list of class names in logit order")
    if any(not c for c in class_names):
        raise InvalidArgument("classes has an empty class name")
    if normalize is None:
        normalize = "none" if _names.short_name(_names.Arch, arch_number) == "cnn" else "imagenet"
    spec = common_pb2.ModelSpec(
        arch=arch_number,
        head=_names.parse(_names.Head, head),
        class_names=class_names,
        input_size=int(image_size),
        normalization=_names.parse(_names.Normalization, normalize),
        resize=_names.parse(_names.ResizeMethod, resize or "crop"),
    )
    header = coordinator_pb2.ImportModelHeader(
        name=name,
        spec=spec,
        format=coordinator_pb2.WEIGHTS_FORMAT_SAFETENSORS,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        file_name=file_name,
        dataset=dataset or "",
        aliases=[aliases] if isinstance(aliases, str) else list(aliases),
    )
    for key, value in (metrics or {}).items():
        header.metrics[str(key)] = float(value)
    for key, value in (tags or {}).items():
        header.tags[str(key)] = str(value)
    header.description = description or ""
    return header


def early_stop_of(job: Any) -> dict[str, Any] | None:
    """A ``Job`` message's ``early_stop`` as a dict; None when unset."""
    if not job.HasField("early_stop"):
        return None
    stop = job.early_stop
    return {
        "epoch": stop.epoch,
        "best_epoch": stop.best_epoch,
        "best_value": stop.best_value,
        "monitor": stop.monitor,
        "reason": stop.reason,
    }


def update_request(
    name: str,
    version: int,
    tags: Mapping[str, str] | None,
    remove_tags: str | Sequence[str],
    description: str | None,
) -> Any:
    """The ``UpdateModelVersionRequest`` of :meth:`Models.update`."""
    request = coordinator_pb2.UpdateModelVersionRequest(
        name=name,
        version=int(version),
        remove_tags=[remove_tags] if isinstance(remove_tags, str) else list(remove_tags),
    )
    for key, value in (tags or {}).items():
        request.set_tags[str(key)] = str(value)
    if description is not None:
        request.description = description
    return request


def import_requests(header: Any, data: bytes) -> Iterator[Any]:
    """The ``ImportModel`` stream: the header, then 1 MiB chunks."""
    yield coordinator_pb2.ImportModelRequest(header=header)
    view = memoryview(data)
    for start in range(0, len(data), IMPORT_CHUNK_BYTES):
        yield coordinator_pb2.ImportModelRequest(chunk=bytes(view[start : start + IMPORT_CHUNK_BYTES]))


def explanations(response: Any, expected: int) -> list[Explanation]:
    """The results of one ``ExplainResponse`` for ``expected`` images."""
    if len(response.results) != expected:
        raise CamshaftError(f"the explainer answered {len(response.results)} results for {expected} images")
    recipe = Recipe.from_proto(response.recipe) if response.HasField("recipe") else None
    return [Explanation.from_proto(r, response.model_version, recipe) for r in response.results]


def chrome_trace(job_id: str, row: EpochRow) -> dict[str, Any]:
    """Chrome trace-event JSON of an epoch's traced steps (``ctl jobs trace``):
    one process per rank, times in µs from the rank's epoch start."""
    phases = ("data", "forward", "backward", "allreduce", "optimizer")
    events: list[dict[str, Any]] = []
    for profile in row.step_profiles:
        pid = profile["rank"]
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"rank {pid}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}})
        for step in profile["last_steps"]:
            seconds = [(step["seconds"] or {}).get(p, 0.0) for p in phases]
            at = step["start_seconds"] * 1e6
            args = {"epoch": row.epoch, "step": step["step"]}
            events.append(
                {
                    "name": f"step {step['step']}",
                    "cat": "step",
                    "ph": "X",
                    "pid": pid,
                    "tid": 0,
                    "ts": at,
                    "dur": sum(seconds) * 1e6,
                    "args": args,
                }
            )
            for name, secs in zip(phases, seconds):
                events.append(
                    {
                        "name": name,
                        "cat": "phase",
                        "ph": "X",
                        "pid": pid,
                        "tid": 0,
                        "ts": at,
                        "dur": secs * 1e6,
                        "args": args,
                    }
                )
                at += secs * 1e6
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"job": job_id, "epoch": row.epoch, "attempt": row.attempt, "world_size": row.world_size},
    }


def profiled_row(job_id: str, history: Sequence[EpochRow], epochs_done: int, epoch: int | None) -> EpochRow:
    """The epoch row to trace: ``epoch``'s latest run, or the last one profiled."""
    rows = [r for r in reversed(history) if r.step_profiles]
    if epoch is not None:
        rows = [r for r in reversed(history) if r.epoch == epoch][:1]
        rows = [r for r in rows if r.step_profiles]
    if not rows:
        which = f"epoch {epoch}" if epoch is not None else "any epoch"
        raise InvalidArgument(
            f"job {job_id} has no step profile for {which} (epochs done: {epochs_done}; it needs profile_steps=True)"
        )
    return rows[0]


class _Server:
    """One server: its channel (opened lazily), stubs, and calls with retries."""

    def __init__(self, ep: Endpoint, metadata: tuple[tuple[str, str], ...], policy: RetryPolicy) -> None:
        self.endpoint = ep
        self.metadata = metadata
        self.policy = policy
        self._channel: grpc.Channel | None = None
        self._stubs: dict[type, Any] = {}
        self._lock = threading.Lock()

    def stub(self, cls: type) -> Any:
        with self._lock:
            if self._channel is None:
                self._channel = secure_or_insecure(self.endpoint)
            if cls not in self._stubs:
                self._stubs[cls] = cls(self._channel)
            return self._stubs[cls]

    def error(self, e: grpc.RpcError, method: str) -> CamshaftError:
        err = from_rpc_error(e, f"{self.endpoint.role} at {self.endpoint.target}", method)
        return err

    def call(
        self,
        stub_cls: type,
        method: str,
        request: Any | Callable[[], Any],
        deadline: Deadline,
        idempotent: bool = True,
    ) -> Any:
        """Calls a unary (or client-streaming: ``request`` a factory of the
        request iterator) method, retrying as the policy says."""
        rpc = getattr(self.stub(stub_cls), method)
        attempt = 0
        while True:
            attempt += 1
            try:
                payload = request() if callable(request) else request
                return rpc(payload, timeout=deadline.remaining(), metadata=self.metadata)
            except grpc.RpcError as e:
                err = self.error(e, method)
                if not self.policy.should_retry(err, attempt, idempotent):
                    raise err from None
                pause = deadline.sleep_for(self.policy.delay(err, attempt))
                time.sleep(pause)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._stubs.clear()


class Job:
    """A training job: its id, where it stands, its epoch table.

    :attr:`state`, :attr:`history` and the other properties read the job as
    last fetched, fetching it again first while it is not finished
    (:meth:`refresh` fetches it explicitly). :meth:`watch` follows the epoch
    table live, :meth:`wait` until the job ends.
    """

    def __init__(self, client: Client, proto: Any) -> None:
        self._client = client
        self._proto = proto

    @property
    def id(self) -> str:
        """Coordinator-assigned id, e.g. ``j-17``."""
        return str(self._proto.id)

    @property
    def proto(self) -> Any:
        """The ``camshaft.v1.Job`` as last fetched."""
        return self._proto

    def refresh(self) -> Job:
        """Fetches the job again (``GetJob``); returns itself."""
        self._proto = self._client.jobs._get_proto(self.id)
        return self

    def _current(self) -> Any:
        if _names.short_name(_names.JobState, self._proto.state) not in _names.TERMINAL_STATES:
            self.refresh()
        return self._proto

    @property
    def state(self) -> str:
        """``pending``, ``running``, ``restarting``, ``succeeded``, ``failed`` or ``cancelled``."""
        return _names.short_name(_names.JobState, self._current().state)

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or was cancelled)."""
        return self.state in _names.TERMINAL_STATES

    @property
    def spec(self) -> dict[str, Any]:
        """The spec with the coordinator's defaults applied, as a dict."""
        return message_to_dict(self._proto.spec)

    @property
    def info(self) -> dict[str, Any]:
        """The whole job (``camshaft.v1.Job``) as a dict."""
        return message_to_dict(self._current())

    @property
    def attempt(self) -> int:
        return int(self._current().attempt)

    @property
    def error(self) -> str | None:
        """Why it FAILED or was CANCELLED."""
        return self._current().error or None

    @property
    def model_version(self) -> str | None:
        """The registered version, ``name:version``, once SUCCEEDED."""
        return self._current().model_version or None

    @property
    def early_stop(self) -> dict[str, Any] | None:
        """Why training ended before its plan did (``early_stop`` of the
        spec): ``{"epoch", "best_epoch", "best_value", "monitor", "reason"}``;
        None when it ran the whole plan."""
        return early_stop_of(self._current())

    @property
    def rows(self) -> list[EpochRow]:
        """The epoch table so far, every attempt, as :class:`EpochRow`."""
        return [EpochRow.from_proto(m) for m in self._current().history]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The epoch table so far, every attempt, one dict per row (the
        fields of ``EpochMetrics``: epoch, train_loss, valid_loss, accuracy, ...)."""
        return [row.to_dict() for row in self.rows]

    def to_pandas(self) -> pandas.DataFrame:
        """The epoch table as a pandas DataFrame (needs pandas)."""
        try:
            import pandas
        except ImportError as e:
            raise ImportError("Job.to_pandas() needs pandas: pip install pandas") from e
        rows = [{k: v for k, v in row.items() if k != "step_profiles"} for row in self.history]
        return pandas.DataFrame(rows)

    @property
    def model(self) -> ModelVersion | None:
        """The registered model version, once SUCCEEDED."""
        version = self.model_version
        return self._client.models.get(version) if version else None

    def events(self, include_logs: bool = False, after_sequence: int = 0) -> Iterator[JobEvent]:
        """Every event of the job from the start (or after ``after_sequence``),
        then live ones, until the event that makes it terminal; reconnects by
        itself when the stream breaks (see :meth:`Jobs.watch`)."""
        for event in self._client.jobs.watch(self.id, include_logs=include_logs, after_sequence=after_sequence):
            if event.terminal_state is not None:
                self.refresh()
            yield event

    def watch(self) -> Iterator[EpochRow]:
        """The epoch table, row by row, from the first row to the job's end
        (rows already in are replayed first); reconnects by itself."""
        for event in self.events():
            if event.kind == "epoch":
                yield event.data

    def logs(self, follow: bool = False) -> Iterator[LogLine]:
        """The ranks' log lines. Of a finished job: all of them. Of a running
        one: those logged so far, or with ``follow`` every line until the job ends."""
        idle = None if follow or self.done else LOG_IDLE_SECONDS
        for event in self._client.jobs.watch(self.id, include_logs=True, idle=idle):
            if event.kind == "log":
                yield event.data

    def wait(self, timeout: float | None = None, raise_on_failure: bool = True) -> Job:
        """Waits until the job ends (at most ``timeout`` seconds: then
        :class:`~camshaft.WaitTimeout`). Raises :class:`~camshaft.JobFailed`
        when it failed or was cancelled, unless ``raise_on_failure`` is off.
        Returns itself."""
        deadline = Deadline(timeout)
        if not self.done:
            try:
                for event in self._client.jobs.watch(self.id, deadline=deadline):
                    if event.terminal_state is not None:
                        break
            except DeadlineExceeded:
                if deadline.at is not None and time.monotonic() >= deadline.at:
                    raise WaitTimeout(f"job {self.id} is still {self.refresh().state} after {timeout} s") from None
                raise
            self.refresh()
        state = _names.short_name(_names.JobState, self._proto.state)
        if raise_on_failure and state in ("failed", "cancelled"):
            verb = "was cancelled" if state == "cancelled" else "failed"
            reason = f": {self._proto.error}" if self._proto.error else ""
            raise JobFailed(f"job {self.id} {verb}{reason}", self)
        return self

    def cancel(self, reason: str | None = None) -> Job:
        """Cancels the job (a no-op when it was cancelled already;
        :class:`~camshaft.FailedPrecondition` when it has finished)."""
        self._proto = self._client.jobs._cancel_proto(self.id, reason)
        return self

    def trace(self, epoch: int | None = None) -> dict[str, Any]:
        """Chrome trace-event JSON (chrome://tracing, Perfetto) of an epoch's
        last steps on every rank (``ctl jobs trace``); the job must have been
        submitted with ``profile_steps=True``. Default: the last epoch profiled."""
        row = profiled_row(self.id, self.rows, self._proto.epochs_done, epoch)
        return chrome_trace(self.id, row)

    def __repr__(self) -> str:
        state = _names.short_name(_names.JobState, self._proto.state)
        return f"Job(id={self.id!r}, state={state!r}, epochs_done={self._proto.epochs_done})"


class Jobs:
    """``cs.jobs``: submit, list, get, cancel and watch jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _server(self) -> _Server:
        return self._client._coordinator

    def submit(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Submits a training job (``ctl submit-job``) and returns it, PENDING.

        ``spec`` is a dict or the path of a JSON spec file (``ctl submit-job
        --spec``); ``options`` are ``ctl submit-job``'s flags with ``_`` for
        ``-`` and win over the spec's. Unset options get the coordinator's
        defaults. ``request_id`` is the idempotency key: a retried submit with
        the same key returns the job the first one created; by default a
        random one, so the SDK's own retries never create a job twice.
        """
        spec_options = load_spec(spec) if spec is not None else {}
        job_spec = build_job_spec(merge_options(spec_options, options))
        request = coordinator_pb2.SubmitJobRequest(spec=job_spec, request_id=request_id or new_request_id())
        response = self._server.call(
            coordinator_pb2_grpc.CoordinatorStub, "SubmitJob", request, Deadline(self._client.timeout)
        )
        return Job(self._client, response.job)

    def _get_proto(self, job_id: str) -> Any:
        response = self._server.call(
            coordinator_pb2_grpc.CoordinatorStub,
            "GetJob",
            coordinator_pb2.GetJobRequest(job_id=job_id),
            Deadline(self._client.timeout),
        )
        return response.job

    def get(self, job_id: str) -> Job:
        """One job (``ctl jobs get``); :class:`~camshaft.NotFound` if unknown."""
        return Job(self._client, self._get_proto(job_id))

    def list(self, states: str | Iterable[str] | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first (``ctl jobs list``), optionally only in these
        states (``"running"``, ``["pending", "running"]``); every page, or the
        first ``limit`` jobs."""
        wanted = job_states(states)
        jobs: list[Job] = []
        token = ""
        while True:
            page = self._server.call(
                coordinator_pb2_grpc.CoordinatorStub,
                "ListJobs",
                coordinator_pb2.ListJobsRequest(states=wanted, page_token=token),
                Deadline(self._client.timeout),
            )
            jobs.extend(Job(self._client, j) for j in page.jobs)
            if limit is not None and len(jobs) >= limit:
                return jobs[:limit]
            if not page.next_page_token or page.next_page_token == token:
                return jobs
            token = page.next_page_token

    def _cancel_proto(self, job_id: str, reason: str | None) -> Any:
        response = self._server.call(
            coordinator_pb2_grpc.CoordinatorStub,
            "CancelJob",
            coordinator_pb2.CancelJobRequest(job_id=job_id, reason=reason or ""),
            Deadline(self._client.timeout),
        )
        return response.job

    def cancel(self, job_id: str, reason: str | None = None) -> Job:
        """Cancels a pending or running job (``ctl jobs cancel``)."""
        return Job(self._client, self._cancel_proto(job_id, reason))

    def watch(
        self,
        job_id: str,
        include_logs: bool = False,
        after_sequence: int = 0,
        *,
        deadline: Deadline | None = None,
        idle: float | None = None,
    ) -> Iterator[JobEvent]:
        """A job's events (``ctl jobs watch``): the stored ones after
        ``after_sequence``, then live ones, until the event that makes the job
        terminal. A broken stream (UNAVAILABLE, or a torn connection) is
        reopened after the last event seen, with backoff, at most
        ``watch_retries`` times in a row, as ``ctl`` does; events seen before
        are skipped. With ``idle``, the stream also ends after that many
        seconds without an event."""
        deadline = deadline or Deadline(None)
        server = self._server
        stub = server.stub(coordinator_pb2_grpc.CoordinatorStub)
        last = after_sequence
        reconnects = 0
        broke: str | None = None
        while True:
            if broke is not None:
                reconnects += 1
                if reconnects > self._client.watch_retries:
                    raise Unavailable(
                        f"lost the event stream of {job_id} ({broke}); gave up after "
                        f"{self._client.watch_retries} reconnects",
                        server=f"coordinator at {server.endpoint.target}",
                        method="WatchJob",
                    )
                time.sleep(deadline.sleep_for(watch_backoff(reconnects)))
                broke = None
            request = coordinator_pb2.WatchJobRequest(job_id=job_id, after_sequence=last, include_logs=include_logs)
            call = stub.WatchJob(request, timeout=deadline.remaining(), metadata=server.metadata)
            quiet = _IdleCancel(call, idle)
            try:
                quiet.arm()
                for message in call:
                    quiet.disarm()
                    reconnects = 0
                    if message.sequence and message.sequence <= last:
                        quiet.arm()
                        continue
                    last = max(last, message.sequence)
                    event = JobEvent.from_proto(message)
                    yield event
                    if event.terminal_state is not None:
                        return
                    quiet.arm()
                broke = "the stream ended early"
            except grpc.RpcError as e:
                if quiet.fired.is_set():
                    return
                err = server.error(e, "WatchJob")
                if e.code() not in WATCH_RECONNECT_CODES:
                    raise err from None
                broke = str(err)
            finally:
                quiet.disarm()
                call.cancel()


class _IdleCancel:
    """Cancels a streaming call once it has been armed for ``idle`` seconds
    (never, with ``idle`` ``None``); :attr:`fired` tells that it did."""

    def __init__(self, call: Any, idle: float | None) -> None:
        self.call = call
        self.idle = idle
        self.fired = threading.Event()
        self._timer: threading.Timer | None = None

    def _expire(self) -> None:
        self.fired.set()
        self.call.cancel()

    def arm(self) -> None:
        self.disarm()
        if self.idle is not None:
            self._timer = threading.Timer(self.idle, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Models:
    """``cs.models``: the model registry (``ctl models``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _call(self, method: str, request: Any, idempotent: bool = True) -> Any:
        return self._client._coordinator.call(
            coordinator_pb2_grpc.CoordinatorStub, method, request, Deadline(self._client.timeout), idempotent
        )

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Registered versions (``ctl models list``), by name then version,
        optionally of one model name; every page."""
        versions: list[ModelVersion] = []
        token = ""
        while True:
            page = self._call("ListModels", coordinator_pb2.ListModelsRequest(name=name or "", page_token=token))
            versions.extend(ModelVersion.from_proto(v) for v in page.versions)
            if not page.next_page_token or page.next_page_token == token:
                return versions
            token = page.next_page_token

    def get(self, ref: str) -> ModelVersion:
        """One version by reference: ``name`` (its ``latest``), ``name@alias``
        or ``name:version`` (``ctl models get``)."""
        return ModelVersion.from_proto(self._call("GetModel", coordinator_pb2.GetModelRequest(model=ref)).version)

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Points ``name@alias`` at ``name:version`` (``ctl models alias``);
        returns the version it now points at."""
        request = coordinator_pb2.SetAliasRequest(name=name, alias=alias, version=version)
        return ModelVersion.from_proto(self._call("SetAlias", request).version)

    def delete_alias(self, name: str, alias: str) -> int:
        """Removes ``name@alias`` (``ctl models unalias``); returns the version
        it pointed at."""
        response = self._call("DeleteAlias", coordinator_pb2.DeleteAliasRequest(name=name, alias=alias))
        return int(response.previous_version)

    def delete(self, name: str, version: int, force: bool = False) -> builtins.list[str]:
        """Deletes ``name:version`` and its weights (``ctl models delete``);
        with ``force`` also the aliases pointing at it, which it returns."""
        request = coordinator_pb2.DeleteModelRequest(name=name, version=version, force=force)
        return list(self._call("DeleteModel", request).removed_aliases)

    def import_weights(
        self,
        weights: str | os.PathLike[str] | bytes | Mapping[str, Any],
        *,
        name: str,
        arch: str,
        head: str,
        classes: Sequence[str],
        image_size: int,
        normalize: str | None = None,
        resize: str | None = None,
        aliases: str | Sequence[str] = (),
        dataset: str | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Registers a version from weights (``ctl models import``): a
        ``.safetensors`` file, a PyTorch state dict saved by ``torch.save``
        (``.pth``, converted here without torch), their bytes, or a dict of
        arrays or tensors (``model.state_dict()``). Names and shapes are
        torchvision's (a ResNet with the CAM head has ``fc.weight`` only);
        the coordinator checks them against the spec (INVALID_ARGUMENT
        naming the keys that do not fit). ``normalize`` defaults to
        ``imagenet`` for the ResNets and ``none`` for the CNN, ``resize`` to ``crop``."""
        data, file_name = to_safetensors(weights)
        header = import_header(
            name,
            arch,
            head,
            classes,
            image_size,
            normalize,
            resize,
            aliases,
            dataset,
            metrics,
            data,
            file_name,
            tags,
            description,
        )
        response = self._call("ImportModel", lambda: import_requests(header, data), idempotent=False)
        return ModelVersion.from_proto(response.version)

    def history(self, name: str, alias: str | None = None) -> builtins.list[dict[str, Any]]:
        """Who moved which alias of ``name`` when (``ctl models history``),
        newest first, every page: dicts with ``alias``, ``from_version``
        (None: created), ``to_version`` (None: removed), ``changed_by``,
        ``unix_ms`` and ``revision``; only ``alias``'s with ``alias``."""
        changes: builtins.list[dict[str, Any]] = []
        token = ""
        while True:
            request = coordinator_pb2.GetAliasHistoryRequest(name=name, alias=alias or "", page_token=token)
            page = self._call("GetAliasHistory", request)
            changes.extend(message_to_dict(c) for c in page.changes)
            if not page.next_page_token or page.next_page_token == token:
                return changes
            token = page.next_page_token

    def watch(
        self,
        name: str | None = None,
        after_sequence: int = 0,
        *,
        replay_retained: bool = False,
        idle: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Registry changes as they happen (``ctl models watch``), as dicts
        of ``ModelEvent``: ``sequence``, ``stream_id``, ``unix_ms`` and one of
        ``version_registered``, ``version_deleted``, ``version_updated``,
        ``alias_changed``; only ``name``'s with ``name``. With
        ``after_sequence`` the retained events after it come first. A broken
        stream is reopened after the last event seen (as :meth:`Jobs.watch`
        does); with ``replay_retained`` every event the coordinator kept comes
        first; with ``idle`` the iterator ends after that many seconds
        without an event."""
        server = self._client._coordinator
        stub = server.stub(coordinator_pb2_grpc.CoordinatorStub)
        last, stream_id, reconnects = after_sequence, "", 0
        while True:
            request = coordinator_pb2.WatchModelsRequest(
                name=name or "",
                after_sequence=last,
                stream_id=stream_id,
                replay_retained=replay_retained and not stream_id,
            )
            call = stub.WatchModels(request, metadata=server.metadata)
            quiet = _IdleCancel(call, idle)
            try:
                quiet.arm()
                for message in call:
                    quiet.disarm()
                    reconnects = 0
                    last, stream_id = message.sequence, message.stream_id
                    yield message_to_dict(message)
                    quiet.arm()
                return
            except grpc.RpcError as e:
                if quiet.fired.is_set():
                    return
                err = server.error(e, "WatchModels")
                reconnects += 1
                if e.code() not in WATCH_RECONNECT_CODES or reconnects > self._client.watch_retries:
                    raise err from None
                time.sleep(watch_backoff(reconnects))
            finally:
                quiet.disarm()
                call.cancel()

    def update(
        self,
        name: str,
        version: int,
        *,
        tags: Mapping[str, str] | None = None,
        remove_tags: str | Sequence[str] = (),
        description: str | None = None,
    ) -> ModelVersion:
        """Changes ``name:version``'s tags (``remove_tags`` taken out, then
        ``tags`` added or overwritten) and, unless ``None``, its description
        (``ctl models update``); returns the version. At most 32 tags, keys of
        letters, digits and ``_-./:`` up to 64 bytes, values up to 256 bytes,
        a description up to 4096 bytes: :class:`~camshaft.InvalidArgument` past them."""
        request = update_request(name, version, tags, remove_tags, description)
        return ModelVersion.from_proto(self._call("UpdateModelVersion", request).version)


class Workers:
    """``cs.workers``: the workers the coordinator knows."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, include_lost: bool = False) -> list[Worker]:
        """Workers with their state, devices and assignment (``ctl workers list``)."""
        response = self._client._coordinator.call(
            coordinator_pb2_grpc.CoordinatorStub,
            "ListWorkers",
            coordinator_pb2.ListWorkersRequest(include_lost=include_lost),
            Deadline(self._client.timeout),
        )
        return [Worker.from_proto(w) for w in response.workers]


class Client:
    """A client of a Camshaft cluster: the coordinator (jobs, models,
    workers) and the explainer.

    Args:
        coordinator: its address, ``host:port``, ``http://host:port`` or
            ``https://host[:port]`` (default: ``CAMSHAFT_COORDINATOR``, else
            ``127.0.0.1:50051``, ``camshaft up``'s).
        explainer: likewise (``CAMSHAFT_EXPLAINER``, else ``127.0.0.1:50052``).
        token: the bearer token the servers ask for (``authorization:
            Bearer <token>`` on every call).
        token_file: a file holding it (default: ``CAMSHAFT_TOKEN_FILE``).
        tls: ``True`` for TLS with gRPC's default roots, a :class:`~camshaft.TLS`
            or dict (``ca``, ``cert``, ``key``, ``server_name``), ``False``
            for plaintext; default: ``CAMSHAFT_TLS_*``, and TLS for
            ``https://`` addresses.
        retries: how many times a call refused for now (RESOURCE_EXHAUSTED,
            UNAVAILABLE) is retried, with exponential backoff and jitter,
            honouring the server's retry hint.
        timeout: the deadline of each call (and of a whole
            :meth:`explain`), in seconds; ``None``: none.
        watch_retries: reconnects in a row before a job watch gives up.
    """

    def __init__(
        self,
        coordinator: str | None = None,
        explainer: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: TLSOption = None,
        retries: int = 5,
        timeout: float | None = None,
        watch_retries: int = 8,
    ) -> None:
        resolved_tls = resolve_tls(tls)
        bearer = read_token(token, token_file)
        metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {bearer}"),) if bearer else ()
        self.retry_policy = RetryPolicy(retries=retries)
        self.timeout = timeout
        self.watch_retries = watch_retries
        self._coordinator = _Server(endpoint("coordinator", coordinator, resolved_tls), metadata, self.retry_policy)
        self._explainer = _Server(endpoint("explainer", explainer, resolved_tls), metadata, self.retry_policy)
        self.jobs = Jobs(self)
        self.models = Models(self)
        self.workers = Workers(self)

    @property
    def coordinator(self) -> str:
        """The coordinator's ``host:port``."""
        return self._coordinator.endpoint.target

    @property
    def explainer(self) -> str:
        """The explainer's ``host:port``."""
        return self._explainer.endpoint.target

    def __repr__(self) -> str:
        return f"camshaft.Client(coordinator={self.coordinator!r}, explainer={self.explainer!r})"

    def close(self) -> None:
        """Closes both channels (a later call opens them again)."""
        self._coordinator.close()
        self._explainer.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── jobs ──

    def submit_job(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Submits a training job; see :meth:`Jobs.submit`."""
        return self.jobs.submit(spec, request_id=request_id, **options)

    def get_job(self, job_id: str) -> Job:
        """One job; see :meth:`Jobs.get`."""
        return self.jobs.get(job_id)

    def list_jobs(self, states: str | Iterable[str] | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first; see :meth:`Jobs.list`."""
        return self.jobs.list(states, limit)

    # ── servers ──

    def server_info(self, server: str = "coordinator") -> ServerInfo:
        """What ``server`` (``"coordinator"`` or ``"explainer"``) says about itself."""
        target = {"coordinator": self._coordinator, "explainer": self._explainer}.get(server)
        if target is None:
            raise InvalidArgument(f"server must be 'coordinator' or 'explainer', not {server!r}")
        response = target.call(
            common_pb2_grpc.ServerInfoStub,
            "GetServerInfo",
            common_pb2.GetServerInfoRequest(),
            Deadline(self.timeout),
        )
        return ServerInfo.from_proto(response)

    def status(self) -> dict[str, ServerInfo | CamshaftError]:
        """Both servers' info (``ctl status``): for each, its
        :class:`ServerInfo`, or the error that asking it ended with."""
        out: dict[str, ServerInfo | CamshaftError] = {}
        for server in ("coordinator", "explainer"):
            try:
                out[server] = self.server_info(server)
            except CamshaftError as e:
                out[server] = e
        return out

    # ── explain ──

    def _resolve_target(self, model: str, target: Any) -> Any:
        """``target=`` as class indices: names are looked up in the model's spec."""
        names: list[str] = []

        def one(t: Any) -> int | None:
            if t is None or isinstance(t, int):
                return t
            text = str(t).strip()
            if text.lstrip("-").isdigit():
                return int(text)
            if not names:
                names.extend(self.models.get(model).class_names)
            if text not in names:
                raise InvalidArgument(f"target {text!r} is not a class of {model} (classes: {', '.join(names)})")
            return names.index(text)

        if isinstance(target, (list, tuple)):
            return [one(t) for t in target]
        return one(target)

    def explain(
        self,
        model: str,
        images: ImageLike | Sequence[ImageLike],
        *,
        method: str | None = None,
        target: int | str | Sequence[int | str | None] | None = None,
        top_k: int | None = None,
        overlay: bool = False,
        colormap: str | None = None,
        alpha: float | None = None,
        faithfulness: str | None = None,
        upsampled: bool = False,
        ids: Sequence[str] | None = None,
        timeout: float | None = None,
        layers: str | Sequence[str] | None = None,
        aug_smooth: bool = False,
        baseline: str | None = None,
    ) -> list[Explanation]:
        """Explains images with one model version (``ctl explain``).

        ``images`` is one image or a list: paths, PNG/JPEG bytes, PIL images
        or arrays (HWC uint8, or floats in [0, 1]); images that are not files
        or bytes are sent as PNG. Batches larger than one request are split
        and streamed (``ExplainStream``); the results come back in input
        order, one :class:`Explanation` per image. An image the explainer
        cannot explain has its :attr:`~Explanation.error` set instead of
        failing the call.

        Args:
            model: ``name`` (its ``latest``), ``name@alias`` or ``name:version``.
            method: cam, gradcam, gradcam++, xgradcam, layercam, hirescam or
                scorecam (default: CAM where the head allows it at the last
                layer, else Grad-CAM; :attr:`Explanation.recipe` says which ran).
            target: the class to explain, an index or a class name (or one
                per image); default: the predicted class.
            top_k: maps per image (maps[0] is the target's).
            overlay: also return overlays (:attr:`Explanation.overlay`).
            colormap: magma, viridis, inferno or jet.
            alpha: overlay opacity in [0, 1].
            faithfulness: deletion, drop or road: score each map.
            upsampled: also return the maps upsampled to the input size.
            ids: one id per image (default: the file name, else the index).
            timeout: the deadline of the whole call (default: the client's).
            layers: the layer (``"layer3"``) or layers (fused, TorchCAM's way)
                to take the maps at; default: the last (``layer4``).
            aug_smooth: average each map over flipped and rescaled copies of
                the image (pytorch-grad-cam's aug_smooth; six times the work).
            baseline: what removed pixels become in the faithfulness scores:
                mean (ImageNet's mean colour, the default), black or blur.
        """
        options = ExplainOptions.parse(
            model, method, top_k, overlay, colormap, alpha, faithfulness, upsampled, layers, aug_smooth, baseline
        )
        inputs = image_inputs(images, ids, self._resolve_target(model, target))
        deadline = Deadline(timeout if timeout is not None else self.timeout)
        per_request = images_per_request(top_k, options.faithfulness, options.aug_smooth)
        results: list[Explanation] = []
        done = 0
        while done < len(inputs):
            remaining = inputs[done:]
            batches = plan_batches([len(i.data) for i in remaining], per_request)
            requests = [options.request(remaining[b.start : b.stop], str(n)) for n, b in enumerate(batches)]
            responses = self._explain_requests(requests, deadline)
            try:
                for response, batch in zip(responses, batches):
                    results.extend(explanations(response, len(batch)))
                    done += len(batch)
            except InvalidArgument as e:
                if per_request > 1 and too_large_for_one_request(e.message):
                    # Smaller requests, from the first image not answered.
                    per_request = max(1, min(per_request, len(inputs) - done) // 2)
                    continue
                raise
            finally:
                responses.close()
        return results

    def _explain_requests(self, requests: list[Any], deadline: Deadline) -> Generator[Any, None, None]:
        """The responses to ``requests``, in order: one ``Explain`` call for
        one request, else an ``ExplainStream`` (restarted from the first
        unanswered request when the explainer is busy or unavailable)."""
        server = self._explainer
        if len(requests) == 1:
            yield server.call(explainer_pb2_grpc.ExplainerStub, "Explain", requests[0], deadline)
            return
        stub = server.stub(explainer_pb2_grpc.ExplainerStub)
        answered = 0
        attempt = 0
        while answered < len(requests):
            attempt += 1
            call = stub.ExplainStream(iter(requests[answered:]), timeout=deadline.remaining(), metadata=server.metadata)
            try:
                for response in call:
                    answered += 1
                    attempt = 0
                    yield response
                if answered < len(requests):
                    raise CamshaftError(f"the explainer's stream ended after {answered} of {len(requests)} responses")
            except grpc.RpcError as e:
                err = server.error(e, "ExplainStream")
                if not server.policy.should_retry(err, max(attempt, 1)):
                    raise err from None
                time.sleep(deadline.sleep_for(server.policy.delay(err, max(attempt, 1))))
            finally:
                call.cancel()
