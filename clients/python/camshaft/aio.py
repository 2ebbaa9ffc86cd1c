"""The asyncio client (``grpc.aio``): the same methods as
:class:`camshaft.Client`, as coroutines, and async generators where the
synchronous client has iterators::

    import camshaft.aio

    async with camshaft.aio.Client() as cs:
        job = await cs.submit_job(dataset="synthetic", model="resnet18", epochs=1)
        async for row in job.watch():
            print(row.epoch, row.accuracy)
        out = await cs.explain("synthetic@latest", ["a.png"], overlay=True)

An :class:`AsyncJob`'s properties (``state``, ``history``, ...) are the job as
last fetched: ``await job.refresh()`` fetches it again (``watch`` and
``wait`` do at the end).
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

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
from .client import (
    LOG_IDLE_SECONDS,
    Deadline,
    chrome_trace,
    early_stop_of,
    explanations,
    import_header,
    import_requests,
    new_request_id,
    profiled_row,
    update_request,
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

__all__ = ["AsyncJob", "Client"]


class _AsyncServer:
    """One server over ``grpc.aio``: its channel (opened lazily, in the
    running loop), stubs, and calls with retries."""

    def __init__(self, ep: Endpoint, metadata: tuple[tuple[str, str], ...], policy: RetryPolicy) -> None:
        self.endpoint = ep
        self.metadata = metadata
        self.policy = policy
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[type, Any] = {}

    def stub(self, cls: type) -> Any:
        if self._channel is None:
            self._channel = secure_or_insecure(self.endpoint, aio=True)
        if cls not in self._stubs:
            self._stubs[cls] = cls(self._channel)
        return self._stubs[cls]

    def error(self, e: grpc.RpcError, method: str) -> CamshaftError:
        return from_rpc_error(e, f"{self.endpoint.role} at {self.endpoint.target}", method)

    async def call(self, stub_cls: type, method: str, request: Any, deadline: Deadline, idempotent: bool = True) -> Any:
        rpc = getattr(self.stub(stub_cls), method)
        attempt = 0
        while True:
            attempt += 1
            try:
                payload = request() if callable(request) else request
                return await rpc(payload, timeout=deadline.remaining(), metadata=self.metadata)
            except grpc.RpcError as e:
                err = self.error(e, method)
                if not self.policy.should_retry(err, attempt, idempotent):
                    raise err from None
                await asyncio.sleep(deadline.sleep_for(self.policy.delay(err, attempt)))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stubs.clear()


class AsyncJob:
    """A training job (see :class:`camshaft.Job`); its properties are the job
    as last fetched."""

    def __init__(self, client: Client, proto: Any) -> None:
        self._client = client
        self._proto = proto

    @property
    def id(self) -> str:
        return str(self._proto.id)

    @property
    def proto(self) -> Any:
        return self._proto

    async def refresh(self) -> AsyncJob:
        """Fetches the job again; returns itself."""
        self._proto = await self._client.jobs._get_proto(self.id)
        return self

    @property
    def state(self) -> str:
        return _names.short_name(_names.JobState, self._proto.state)

    @property
    def done(self) -> bool:
        return self.state in _names.TERMINAL_STATES

    @property
    def spec(self) -> dict[str, Any]:
        return message_to_dict(self._proto.spec)

    @property
    def info(self) -> dict[str, Any]:
        return message_to_dict(self._proto)

    @property
    def attempt(self) -> int:
        return int(self._proto.attempt)

    @property
    def error(self) -> str | None:
        return self._proto.error or None

    @property
    def model_version(self) -> str | None:
        return self._proto.model_version or None

    @property
    def early_stop(self) -> dict[str, Any] | None:
        """See :attr:`camshaft.Job.early_stop`."""
        return early_stop_of(self._proto)

    @property
    def rows(self) -> list[EpochRow]:
        return [EpochRow.from_proto(m) for m in self._proto.history]

    @property
    def history(self) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self.rows]

    def to_pandas(self) -> pandas.DataFrame:
        try:
            import pandas
        except ImportError as e:
            raise ImportError("AsyncJob.to_pandas() needs pandas: pip install pandas") from e
        return pandas.DataFrame([{k: v for k, v in r.items() if k != "step_profiles"} for r in self.history])

    async def events(self, include_logs: bool = False, after_sequence: int = 0) -> AsyncIterator[JobEvent]:
        async for event in self._client.jobs.watch(self.id, include_logs=include_logs, after_sequence=after_sequence):
            if event.terminal_state is not None:
                await self.refresh()
            yield event

    async def watch(self) -> AsyncIterator[EpochRow]:
        """The epoch table, row by row, until the job ends; reconnects by itself."""
        async for event in self.events():
            if event.kind == "epoch":
                yield event.data

    async def logs(self, follow: bool = False) -> AsyncIterator[LogLine]:
        idle = None if follow or self.done else LOG_IDLE_SECONDS
        async for event in self._client.jobs.watch(self.id, include_logs=True, idle=idle):
            if event.kind == "log":
                yield event.data

    async def wait(self, timeout: float | None = None, raise_on_failure: bool = True) -> AsyncJob:
        """Waits until the job ends; see :meth:`camshaft.Job.wait`."""
        await self.refresh()
        if not self.done:
            try:
                async for event in self._client.jobs.watch(self.id, deadline=Deadline(timeout)):
                    if event.terminal_state is not None:
                        break
            except DeadlineExceeded:
                await self.refresh()
                raise WaitTimeout(f"job {self.id} is still {self.state} after {timeout} s") from None
            await self.refresh()
        if raise_on_failure and self.state in ("failed", "cancelled"):
            verb = "was cancelled" if self.state == "cancelled" else "failed"
            reason = f": {self._proto.error}" if self._proto.error else ""
            raise JobFailed(f"job {self.id} {verb}{reason}", self)
        return self

    async def cancel(self, reason: str | None = None) -> AsyncJob:
        self._proto = await self._client.jobs._cancel_proto(self.id, reason)
        return self

    def trace(self, epoch: int | None = None) -> dict[str, Any]:
        row = profiled_row(self.id, self.rows, self._proto.epochs_done, epoch)
        return chrome_trace(self.id, row)

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, state={self.state!r}, epochs_done={self._proto.epochs_done})"


class AsyncJobs:
    """``cs.jobs`` of the asyncio client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _server(self) -> _AsyncServer:
        return self._client._coordinator

    async def submit(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> AsyncJob:
        spec_options = load_spec(spec) if spec is not None else {}
        job_spec = build_job_spec(merge_options(spec_options, options))
        request = coordinator_pb2.SubmitJobRequest(spec=job_spec, request_id=request_id or new_request_id())
        response = await self._server.call(
            coordinator_pb2_grpc.CoordinatorStub, "SubmitJob", request, Deadline(self._client.timeout)
        )
        return AsyncJob(self._client, response.job)

    async def _get_proto(self, job_id: str) -> Any:
        response = await self._server.call(
            coordinator_pb2_grpc.CoordinatorStub,
            "GetJob",
            coordinator_pb2.GetJobRequest(job_id=job_id),
            Deadline(self._client.timeout),
        )
        return response.job

    async def get(self, job_id: str) -> AsyncJob:
        return AsyncJob(self._client, await self._get_proto(job_id))

    async def list(self, states: str | Iterable[str] | None = None, limit: int | None = None) -> list[AsyncJob]:
        wanted = job_states(states)
        jobs: list[AsyncJob] = []
        token = ""
        while True:
            page = await self._server.call(
                coordinator_pb2_grpc.CoordinatorStub,
                "ListJobs",
                coordinator_pb2.ListJobsRequest(states=wanted, page_token=token),
                Deadline(self._client.timeout),
            )
            jobs.extend(AsyncJob(self._client, j) for j in page.jobs)
            if limit is not None and len(jobs) >= limit:
                return jobs[:limit]
            if not page.next_page_token or page.next_page_token == token:
                return jobs
            token = page.next_page_token

    async def _cancel_proto(self, job_id: str, reason: str | None) -> Any:
        response = await self._server.call(
            coordinator_pb2_grpc.CoordinatorStub,
            "CancelJob",
            coordinator_pb2.CancelJobRequest(job_id=job_id, reason=reason or ""),
            Deadline(self._client.timeout),
        )
        return response.job

    async def cancel(self, job_id: str, reason: str | None = None) -> AsyncJob:
        return AsyncJob(self._client, await self._cancel_proto(job_id, reason))

    async def watch(
        self,
        job_id: str,
        include_logs: bool = False,
        after_sequence: int = 0,
        *,
        deadline: Deadline | None = None,
        idle: float | None = None,
    ) -> AsyncIterator[JobEvent]:
        """A job's events; see :meth:`camshaft.client.Jobs.watch`."""
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
                await asyncio.sleep(deadline.sleep_for(watch_backoff(reconnects)))
                broke = None
            request = coordinator_pb2.WatchJobRequest(job_id=job_id, after_sequence=last, include_logs=include_logs)
            call = stub.WatchJob(request, timeout=deadline.remaining(), metadata=server.metadata)
            try:
                while True:
                    try:
                        message = await (asyncio.wait_for(call.read(), idle) if idle is not None else call.read())
                    except (TimeoutError, asyncio.TimeoutError):
                        return
                    if message is grpc.aio.EOF:
                        break
                    reconnects = 0
                    if message.sequence and message.sequence <= last:
                        continue
                    last = max(last, message.sequence)
                    event = JobEvent.from_proto(message)
                    yield event
                    if event.terminal_state is not None:
                        return
                broke = "the stream ended early"
            except grpc.RpcError as e:
                err = server.error(e, "WatchJob")
                if e.code() not in WATCH_RECONNECT_CODES:
                    raise err from None
                broke = str(err)
            finally:
                call.cancel()


class AsyncModels:
    """``cs.models`` of the asyncio client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _call(self, method: str, request: Any, idempotent: bool = True) -> Any:
        return await self._client._coordinator.call(
            coordinator_pb2_grpc.CoordinatorStub, method, request, Deadline(self._client.timeout), idempotent
        )

    async def list(self, name: str | None = None) -> list[ModelVersion]:
        versions: list[ModelVersion] = []
        token = ""
        while True:
            page = await self._call("ListModels", coordinator_pb2.ListModelsRequest(name=name or "", page_token=token))
            versions.extend(ModelVersion.from_proto(v) for v in page.versions)
            if not page.next_page_token or page.next_page_token == token:
                return versions
            token = page.next_page_token

    async def get(self, ref: str) -> ModelVersion:
        response = await self._call("GetModel", coordinator_pb2.GetModelRequest(model=ref))
        return ModelVersion.from_proto(response.version)

    async def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        request = coordinator_pb2.SetAliasRequest(name=name, alias=alias, version=version)
        return ModelVersion.from_proto((await self._call("SetAlias", request)).version)

    async def delete_alias(self, name: str, alias: str) -> int:
        response = await self._call("DeleteAlias", coordinator_pb2.DeleteAliasRequest(name=name, alias=alias))
        return int(response.previous_version)

    async def delete(self, name: str, version: int, force: bool = False) -> builtins.list[str]:
        request = coordinator_pb2.DeleteModelRequest(name=name, version=version, force=force)
        return list((await self._call("DeleteModel", request)).removed_aliases)

    async def import_weights(
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
        """See :meth:`camshaft.client.Models.import_weights`."""
        data, file_name = await asyncio.to_thread(to_safetensors, weights)
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
        response = await self._call("ImportModel", lambda: import_requests(header, data), idempotent=False)
        return ModelVersion.from_proto(response.version)

    async def watch(
        self,
        name: str | None = None,
        after_sequence: int = 0,
        *,
        replay_retained: bool = False,
        idle: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Registry changes; see :meth:`camshaft.client.Models.watch`."""
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
            try:
                while True:
                    try:
                        message = await (asyncio.wait_for(call.read(), idle) if idle is not None else call.read())
                    except (TimeoutError, asyncio.TimeoutError):
                        return
                    if message is grpc.aio.EOF:
                        return
                    reconnects = 0
                    last, stream_id = message.sequence, message.stream_id
                    yield message_to_dict(message)
            except grpc.RpcError as e:
                err = server.error(e, "WatchModels")
                reconnects += 1
                if e.code() not in WATCH_RECONNECT_CODES or reconnects > self._client.watch_retries:
                    raise err from None
                await asyncio.sleep(watch_backoff(reconnects))
            finally:
                call.cancel()

    async def history(self, name: str, alias: str | None = None) -> builtins.list[dict[str, Any]]:
        """See :meth:`camshaft.client.Models.history`."""
        changes: builtins.list[dict[str, Any]] = []
        token = ""
        while True:
            request = coordinator_pb2.GetAliasHistoryRequest(name=name, alias=alias or "", page_token=token)
            page = await self._call("GetAliasHistory", request)
            changes.extend(message_to_dict(c) for c in page.changes)
            if not page.next_page_token or page.next_page_token == token:
                return changes
            token = page.next_page_token

    async def update(
        self,
        name: str,
        version: int,
        *,
        tags: Mapping[str, str] | None = None,
        remove_tags: str | Sequence[str] = (),
        description: str | None = None,
    ) -> ModelVersion:
        """See :meth:`camshaft.client.Models.update`."""
        request = update_request(name, version, tags, remove_tags, description)
        return ModelVersion.from_proto((await self._call("UpdateModelVersion", request)).version)


class AsyncWorkers:
    """``cs.workers`` of the asyncio client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list(self, include_lost: bool = False) -> list[Worker]:
        response = await self._client._coordinator.call(
            coordinator_pb2_grpc.CoordinatorStub,
            "ListWorkers",
            coordinator_pb2.ListWorkersRequest(include_lost=include_lost),
            Deadline(self._client.timeout),
        )
        return [Worker.from_proto(w) for w in response.workers]


class Client:
    """The asyncio client; the arguments are :class:`camshaft.Client`'s.
    Use it as ``async with camshaft.aio.Client(...) as cs`` (or ``await
    cs.close()``) from inside a running event loop."""

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
        self._coordinator = _AsyncServer(
            endpoint("coordinator", coordinator, resolved_tls), metadata, self.retry_policy
        )
        self._explainer = _AsyncServer(endpoint("explainer", explainer, resolved_tls), metadata, self.retry_policy)
        self.jobs = AsyncJobs(self)
        self.models = AsyncModels(self)
        self.workers = AsyncWorkers(self)

    @property
    def coordinator(self) -> str:
        return self._coordinator.endpoint.target

    @property
    def explainer(self) -> str:
        return self._explainer.endpoint.target

    def __repr__(self) -> str:
        return f"camshaft.aio.Client(coordinator={self.coordinator!r}, explainer={self.explainer!r})"

    async def close(self) -> None:
        await self._coordinator.close()
        await self._explainer.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit_job(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> AsyncJob:
        return await self.jobs.submit(spec, request_id=request_id, **options)

    async def get_job(self, job_id: str) -> AsyncJob:
        return await self.jobs.get(job_id)

    async def list_jobs(self, states: str | Iterable[str] | None = None, limit: int | None = None) -> list[AsyncJob]:
        return await self.jobs.list(states, limit)

    async def server_info(self, server: str = "coordinator") -> ServerInfo:
        target = {"coordinator": self._coordinator, "explainer": self._explainer}.get(server)
        if target is None:
            raise InvalidArgument(f"server must be 'coordinator' or 'explainer', not {server!r}")
        response = await target.call(
            common_pb2_grpc.ServerInfoStub, "GetServerInfo", common_pb2.GetServerInfoRequest(), Deadline(self.timeout)
        )
        return ServerInfo.from_proto(response)

    async def status(self) -> dict[str, ServerInfo | CamshaftError]:
        out: dict[str, ServerInfo | CamshaftError] = {}
        for server in ("coordinator", "explainer"):
            try:
                out[server] = await self.server_info(server)
            except CamshaftError as e:
                out[server] = e
        return out

    async def _resolve_target(self, model: str, target: Any) -> Any:
        names: list[str] | None = None

        async def one(t: Any) -> int | None:
            nonlocal names
            if t is None or isinstance(t, int):
                return t
            text = str(t).strip()
            if text.lstrip("-").isdigit():
                return int(text)
            if names is None:
                names = (await self.models.get(model)).class_names
            if text not in names:
                raise InvalidArgument(f"target {text!r} is not a class of {model} (classes: {', '.join(names)})")
            return names.index(text)

        if isinstance(target, (list, tuple)):
            return [await one(t) for t in target]
        return await one(target)

    async def explain(
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
        """See :meth:`camshaft.Client.explain`."""
        options = ExplainOptions.parse(
            model, method, top_k, overlay, colormap, alpha, faithfulness, upsampled, layers, aug_smooth, baseline
        )
        targets = await self._resolve_target(model, target)
        inputs = await asyncio.to_thread(image_inputs, images, ids, targets)
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
                n = 0
                async for response in responses:
                    batch = batches[n]
                    n += 1
                    results.extend(explanations(response, len(batch)))
                    done += len(batch)
            except InvalidArgument as e:
                if per_request > 1 and too_large_for_one_request(e.message):
                    # Smaller requests, from the first image not answered.
                    per_request = max(1, min(per_request, len(inputs) - done) // 2)
                    continue
                raise
            finally:
                await responses.aclose()
        return results

    async def _explain_requests(self, requests: list[Any], deadline: Deadline) -> AsyncGenerator[Any, None]:
        server = self._explainer
        if len(requests) == 1:
            yield await server.call(explainer_pb2_grpc.ExplainerStub, "Explain", requests[0], deadline)
            return
        stub = server.stub(explainer_pb2_grpc.ExplainerStub)
        answered = 0
        attempt = 0
        while answered < len(requests):
            attempt += 1
            call = stub.ExplainStream(iter(requests[answered:]), timeout=deadline.remaining(), metadata=server.metadata)
            try:
                async for response in call:
                    answered += 1
                    attempt = 0
                    yield response
                if answered < len(requests):
                    raise CamshaftError(f"the explainer's stream ended after {answered} of {len(requests)} responses")
            except grpc.RpcError as e:
                err = server.error(e, "ExplainStream")
                if not server.policy.should_retry(err, max(attempt, 1)):
                    raise err from None
                await asyncio.sleep(deadline.sleep_for(server.policy.delay(err, max(attempt, 1))))
            finally:
                call.cancel()
