"""Reading ``google.rpc.Status`` from a failed call's ``grpc-status-details-bin``
trailer (what tonic-types and grpcio-status write), with the details the SDK
uses: ``BadRequest`` field violations, ``RetryInfo``, ``ErrorInfo``.

The vendored ``google/rpc`` protos (``clients/python/proto``) are compiled into
a descriptor set, ``_vendor/google_rpc.binpb``, and loaded here into a
descriptor pool of our own: generated ``_pb2`` modules would register
``google/rpc/status.proto`` in protobuf's default pool, which fails when
googleapis-common-protos (a dependency of many other packages) has registered
its fuller copy there first, or later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer holding a serialized ``google.rpc.Status``."""

_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(
    resources.files("camshaft").joinpath("_vendor/google_rpc.binpb").read_bytes()
).file:
    _pool.Add(_file)


def _message_class(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(name))


Status: Any = _message_class("google.rpc.Status")


@dataclass(frozen=True)
class StatusDetails:
    """What a ``google.rpc.Status`` trailer said."""

    code: int
    message: str
    #: Every detail that this SDK knows the type of, decoded (protobuf
    #: messages of ``google.rpc``: ``BadRequest``, ``RetryInfo``, ...).
    details: list[Message] = field(default_factory=list)
    #: ``(field, description)`` of each ``BadRequest`` field violation.
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    #: ``RetryInfo.retry_delay`` in seconds.
    retry_delay: float | None = None
    #: ``ErrorInfo`` as ``(reason, domain, metadata)``.
    error_info: tuple[str, str, dict[str, str]] | None = None


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def decode_status(data: bytes) -> StatusDetails | None:
    """Decodes a serialized ``google.rpc.Status``; ``None`` when it is not one.
    Details of types not vendored here are skipped."""
    try:
        status: Any = Status.FromString(data)
    except DecodeError:
        return None
    decoded: list[Message] = []
    violations: list[tuple[str, str]] = []
    retry_delay: float | None = None
    error_info: tuple[str, str, dict[str, str]] | None = None
    for detail in status.details:
        try:
            cls = _message_class(_type_name(detail.type_url))
        except KeyError:
            continue
        try:
            message: Any = cls.FromString(detail.value)
        except DecodeError:
            continue
        decoded.append(message)
        name = message.DESCRIPTOR.full_name
        if name == "google.rpc.BadRequest":
            violations.extend((v.field, v.description) for v in message.field_violations)
        elif name == "google.rpc.RetryInfo" and message.HasField("retry_delay"):
            delay = message.retry_delay
            retry_delay = max(0.0, delay.seconds + delay.nanos / 1e9)
        elif name == "google.rpc.ErrorInfo":
            error_info = (message.reason, message.domain, dict(message.metadata))
    return StatusDetails(
        code=status.code,
        message=status.message,
        details=decoded,
        field_violations=violations,
        retry_delay=retry_delay,
        error_info=error_info,
    )


def encode_status(
    code: int,
    message: str,
    *,
    field_violations: list[tuple[str, str]] = (),  # type: ignore[assignment]
    retry_delay: float | None = None,
    error_info: tuple[str, str, dict[str, str]] | None = None,
) -> bytes:
    """A serialized ``google.rpc.Status`` with these details (for tests and for
    Python servers of the Camshaft protocol)."""
    status: Any = Status()
    status.code = code
    status.message = message
    if field_violations:
        bad: Any = _message_class("google.rpc.BadRequest")()
        for name, description in field_violations:
            bad.field_violations.add(field=name, description=description)
        status.details.add(type_url="type.googleapis.com/google.rpc.BadRequest", value=bad.SerializeToString())
    if retry_delay is not None:
        info: Any = _message_class("google.rpc.RetryInfo")()
        info.retry_delay.seconds = int(retry_delay)
        info.retry_delay.nanos = int(round((retry_delay - int(retry_delay)) * 1e9))
        status.details.add(type_url="type.googleapis.com/google.rpc.RetryInfo", value=info.SerializeToString())
    if error_info is not None:
        ei: Any = _message_class("google.rpc.ErrorInfo")()
        ei.reason, ei.domain = error_info[0], error_info[1]
        ei.metadata.update(error_info[2])
        status.details.add(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=ei.SerializeToString())
    return bytes(status.SerializeToString())
