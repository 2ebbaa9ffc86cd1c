"""Typed errors: one class per kind of failure, mapped once from gRPC status
codes as the servers send them (``camshaft_proto::ErrorKind``).

Every error the SDK raises for a server's answer is a :class:`CamshaftError`;
catch a subclass for one kind::

    try:
        cs.models.get("pets@prod")
    except camshaft.NotFound:
        ...

Details come from the standard ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer when the server sends one
(``BadRequest`` field violations, ``RetryInfo``, ``ErrorInfo``), and from the
``retry-after-ms`` / ``grpc-retry-pushback-ms`` metadata otherwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc

from ._status import STATUS_DETAILS_KEY, decode_status

RETRY_AFTER_KEYS = ("retry-after-ms", "grpc-retry-pushback-ms")
"""Metadata keys with a retry hint in whole milliseconds, in the order read."""


class FieldViolation(NamedTuple):
    """One bad field of a request: its path (``spec.epochs``) and why."""

    field: str
    description: str


class ErrorInfo(NamedTuple):
    """``google.rpc.ErrorInfo``: a machine-readable reason and its domain."""

    reason: str
    domain: str
    metadata: dict[str, str]


class CamshaftError(Exception):
    """Base class of the SDK's errors.

    Attributes:
        code: the gRPC status code, or ``None`` for an error found by the client.
        message: the server's message (or the client's).
        server: ``"coordinator"`` or ``"explainer"``, when a server answered.
        method: the RPC, e.g. ``"SubmitJob"``.
        retry_after: seconds the server asked to wait before retrying, if it said.
        field_violations: the request's bad fields (``google.rpc.BadRequest``).
        error_info: ``google.rpc.ErrorInfo``, if the server sent one.
        details: every ``google.rpc`` detail message the server sent that this
            SDK can decode.
    """

    code: grpc.StatusCode | None = None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        server: str | None = None,
        method: str | None = None,
        retry_after: float | None = None,
        field_violations: list[FieldViolation] | None = None,
        error_info: ErrorInfo | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.server = server
        self.method = method
        self.retry_after = retry_after
        self.field_violations: list[FieldViolation] = list(field_violations or [])
        self.error_info = error_info
        self.details: list[Any] = list(details or [])

    def __str__(self) -> str:
        where = " ".join(p for p in (self.server, self.method) if p)
        # Errors the client found itself (no server, no method) are just their message.
        code = self.code.name if self.code is not None and where else None
        prefix = ": ".join(p for p in (where, code) if p)
        text = f"{prefix}: {self.message}" if prefix else self.message
        if self.field_violations and not all(v.description in self.message for v in self.field_violations):
            text += " (" + "; ".join(f"{v.field}: {v.description}" for v in self.field_violations) + ")"
        return text

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again later."""
        return self.code in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.ABORTED,
        )


class InvalidArgument(CamshaftError, ValueError):
    """The request is wrong and will stay wrong (INVALID_ARGUMENT, OUT_OF_RANGE):
    a bad job spec, a malformed model reference, an option out of range. Also
    raised by the client for arguments it can check itself. See
    :attr:`field_violations`."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CamshaftError, LookupError):
    """No such job, model, version, alias or worker (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CamshaftError):
    """The thing to create exists already (ALREADY_EXISTS)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CamshaftError):
    """Valid, but not in the current state (FAILED_PRECONDITION): cancelling a
    finished job, deleting an aliased version, CAM of a head without one."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(CamshaftError):
    """A queue, quota or budget is full (RESOURCE_EXHAUSTED); retry after
    :attr:`retry_after` seconds (the SDK does, ``retries`` times)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CamshaftError, ConnectionError):
    """The server, the store or the model is not available now (UNAVAILABLE,
    ABORTED); retry with backoff (the SDK does, ``retries`` times)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CamshaftError, TimeoutError):
    """The call ran past its deadline (the client's ``timeout``)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(CamshaftError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(CamshaftError):
    """No valid credential where one is needed (UNAUTHENTICATED): pass
    ``token=`` or ``token_file=``."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CamshaftError):
    """The credential's role may not make this call (PERMISSION_DENIED), e.g.
    a viewer submitting a job."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(CamshaftError):
    """The server does not know this call (UNIMPLEMENTED): an older server."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CamshaftError):
    """A bug or corrupt data on the server (INTERNAL, UNKNOWN, DATA_LOSS)."""

    code = grpc.StatusCode.INTERNAL


class JobFailed(CamshaftError):
    """:meth:`Job.wait` saw the job end FAILED or CANCELLED; :attr:`job` is it."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


class WaitTimeout(CamshaftError, TimeoutError):
    """:meth:`Job.wait` ran out of time before the job ended."""


_BY_CODE: dict[grpc.StatusCode, type[CamshaftError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.ABORTED: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def error_class(code: grpc.StatusCode | None) -> type[CamshaftError]:
    """The error class of a status code (:class:`Internal` for the rest)."""
    if code is None:
        return CamshaftError
    return _BY_CODE.get(code, Internal)


def _metadata_pairs(call: Any, which: str) -> list[tuple[str, Any]]:
    try:
        metadata = getattr(call, which)()
    except Exception:  # a call object without that metadata (never sent)
        return []
    if not metadata:
        return []
    return [(str(k).lower(), v) for k, v in metadata]


def from_rpc_error(error: Any, server: str | None = None, method: str | None = None) -> CamshaftError:
    """The typed error of a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    message = error.details() if callable(getattr(error, "details", None)) else None
    message = message or (code.name if code is not None else str(error))
    pairs = _metadata_pairs(error, "trailing_metadata") + _metadata_pairs(error, "initial_metadata")
    status = None
    retry_after: float | None = None
    for key, value in pairs:
        if key == STATUS_DETAILS_KEY and status is None and isinstance(value, (bytes, bytearray)):
            status = decode_status(bytes(value))
    if status is not None and status.retry_delay is not None:
        retry_after = status.retry_delay
    for wanted in RETRY_AFTER_KEYS:
        if retry_after is not None:
            break
        for key, value in pairs:
            if key == wanted:
                try:
                    text = value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
                    retry_after = max(0.0, int(text.strip()) / 1000.0)
                except ValueError:
                    continue
                break
    cls = error_class(code)
    return cls(
        message,
        code=code,
        server=server,
        method=method,
        retry_after=retry_after,
        field_violations=[FieldViolation(f, d) for f, d in status.field_violations] if status else None,
        error_info=ErrorInfo(*status.error_info) if status and status.error_info else None,
        details=status.details if status else None,
    )
