"""Where the servers are and how to reach them: addresses, TLS, the bearer
token, channel options, and the retry policy shared by the synchronous and
the asyncio clients.

Defaults and environment variables are ``ctl``'s: ``CAMSHAFT_COORDINATOR``,
``CAMSHAFT_EXPLAINER``, ``CAMSHAFT_TOKEN_FILE``, ``CAMSHAFT_TLS_CA``,
``CAMSHAFT_TLS_CERT``, ``CAMSHAFT_TLS_KEY``, ``CAMSHAFT_TLS_SERVER_NAME``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import grpc

from ._version import __version__
from .errors import CamshaftError, InvalidArgument

DEFAULT_COORDINATOR = "127.0.0.1:50051"
"""The coordinator's address when none is given (``camshaft up``'s default)."""

DEFAULT_EXPLAINER = "127.0.0.1:50052"
"""The explainer's address when none is given (``camshaft up``'s default)."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The servers' gRPC message limit (``camshaft_proto::MAX_MESSAGE_BYTES``); the
SDK's channels send and receive up to it instead of gRPC's 4 MiB."""

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class TLS:
    """TLS settings of a client, as ``ctl``'s ``--tls-*`` flags (PEM files).

    ``TLS()`` trusts gRPC's default roots; ``ca`` trusts that bundle instead;
    ``cert`` and ``key`` present a client certificate (mutual TLS);
    ``server_name`` is the name to verify in the server's certificate when it
    is not the address's host.
    """

    ca: PathLike | None = None
    cert: PathLike | None = None
    key: PathLike | None = None
    server_name: str | None = None

    @staticmethod
    def from_env() -> TLS | None:
        """The settings of ``CAMSHAFT_TLS_*``; ``None`` when none is set."""
        values = {
            "ca": os.environ.get("CAMSHAFT_TLS_CA") or None,
            "cert": os.environ.get("CAMSHAFT_TLS_CERT") or None,
            "key": os.environ.get("CAMSHAFT_TLS_KEY") or None,
            "server_name": os.environ.get("CAMSHAFT_TLS_SERVER_NAME") or None,
        }
        if not any(values.values()):
            return None
        return TLS(**values)

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials of these settings."""
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("a client certificate needs both tls cert and key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read("TLS CA", self.ca),
            private_key=_read("TLS key", self.key),
            certificate_chain=_read("TLS certificate", self.cert),
        )


TLSOption = Union[bool, TLS, Mapping[str, Any], None]


def _read(what: str, path: PathLike | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read the {what} {os.fspath(path)}: {e}") from None


def resolve_tls(tls: TLSOption) -> TLS | None:
    """``tls=`` as the client takes it: ``True`` (default roots), ``False``
    (plaintext, whatever the environment says), a :class:`TLS`, a dict of its
    fields, or ``None`` (``CAMSHAFT_TLS_*``, else plaintext)."""
    if tls is None:
        return TLS.from_env()
    if tls is True:
        return TLS()
    if tls is False:
        return None
    if isinstance(tls, TLS):
        return tls
    if isinstance(tls, Mapping):
        unknown = set(tls) - {"ca", "cert", "key", "server_name"}
        if unknown:
            raise InvalidArgument(f"unknown tls setting(s) {sorted(unknown)}; expected ca, cert, key, server_name")
        return TLS(**tls)
    raise InvalidArgument(f"tls must be True, False, a camshaft.TLS or a dict, not {tls!r}")


def read_token(token: str | None, token_file: PathLike | None) -> str | None:
    """The bearer token: ``token``, else the contents of ``token_file`` (else of
    ``CAMSHAFT_TOKEN_FILE``), surrounding whitespace trimmed. Empty, or with
    characters an HTTP header cannot carry, is an error."""
    if token is not None and token_file is not None:
        raise InvalidArgument("pass token= or token_file=, not both")
    source = "token"
    if token is None:
        path = token_file if token_file is not None else (os.environ.get("CAMSHAFT_TOKEN_FILE") or None)
        if path is None:
            return None
        source = f"the token file {os.fspath(path)}"
        try:
            token = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"cannot read {source}: {e}") from None
    token = token.strip()
    if not token:
        raise InvalidArgument(f"{source}: the bearer token is empty")
    if any(not (0x20 <= ord(c) < 0x7F) for c in token):
        raise InvalidArgument(f"{source}: the bearer token has characters an HTTP header cannot carry")
    return token


@dataclass(frozen=True)
class Endpoint:
    """A server as the SDK dials it."""

    role: str
    """``coordinator`` or ``explainer``."""
    address: str
    """As the user gave it."""
    target: str
    """``host:port`` for gRPC."""
    tls: TLS | None

    def channel_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", f"camshaft-python/{__version__}"),
        ]
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return options


def endpoint(role: str, address: str | None, tls: TLS | None) -> Endpoint:
    """Parses ``address`` (``host:port``, ``http://host:port``,
    ``https://host[:port]``; ``None``: ``CAMSHAFT_<ROLE>``, else the default).
    ``https://`` speaks TLS (with ``tls``' settings, or the default roots)."""
    if address is None:
        address = os.environ.get(f"CAMSHAFT_{role.upper()}") or (
            DEFAULT_COORDINATOR if role == "coordinator" else DEFAULT_EXPLAINER
        )
    text = address.strip()
    if not text or any(c.isspace() for c in text):
        raise InvalidArgument(f"{role} address {address!r} is empty or contains whitespace")
    scheme = None
    if "://" in text:
        scheme, text = text.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidArgument(f"{role} address {address!r} has scheme {scheme!r}; expected http or https")
    text = text.rstrip("/")
    if not text or "/" in text:
        raise InvalidArgument(f"{role} address {address!r} is not host:port")
    has_port = text.rsplit(":", 1)[-1].isdigit() and (not text.startswith("[") or "]:" in text)
    if not has_port:
        text += ":443" if scheme == "https" else ":80"
    if scheme == "https" and tls is None:
        tls = TLS()
    return Endpoint(role=role, address=address, target=text, tls=tls)


def secure_or_insecure(ep: Endpoint, aio: bool = False) -> Any:
    """A new gRPC channel (``grpc.aio`` with ``aio``) to ``ep``."""
    module: Any = grpc.aio if aio else grpc
    if ep.tls is not None:
        return module.secure_channel(ep.target, ep.tls.credentials(), options=ep.channel_options())
    return module.insecure_channel(ep.target, options=ep.channel_options())


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of calls the server refused for now.

    A call failing with RESOURCE_EXHAUSTED is retried after the server's hint
    (:attr:`CamshaftError.retry_after`) when it gave one; one failing with
    UNAVAILABLE or ABORTED (or RESOURCE_EXHAUSTED without a hint) after an
    exponential backoff with jitter: a random pause between half and all of
    ``initial_backoff * multiplier ** (attempt - 1)``, at most ``max_backoff``.
    Calls that are not idempotent (``ImportModel``) are retried only on
    RESOURCE_EXHAUSTED, which the server answers before doing anything.
    ``SubmitJob`` carries an idempotency key, so its retries are safe.
    """

    retries: int = 5
    initial_backoff: float = 0.25
    multiplier: float = 2.0
    max_backoff: float = 5.0
    max_retry_after: float = 60.0

    def should_retry(self, error: CamshaftError, attempt: int, idempotent: bool = True) -> bool:
        """Whether to retry after ``attempt`` (1-based) calls failed, the last with ``error``."""
        if attempt > self.retries:
            return False
        if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return True
        return idempotent and error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)

    def backoff(self, attempt: int) -> float:
        """The pause before retry ``attempt`` (1-based) without a server hint."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        return float(random.uniform(ceiling / 2, ceiling))

    def delay(self, error: CamshaftError, attempt: int) -> float:
        """The pause before retry ``attempt`` after ``error``: the server's hint
        (plus up to 10% jitter, so a crowd of clients does not come back at
        once), else :meth:`backoff`."""
        if error.retry_after is not None:
            hint = min(error.retry_after, self.max_retry_after)
            return float(hint + random.uniform(0, 0.1 * max(hint, 0.05)))
        return self.backoff(attempt)


def watch_backoff(attempt: int) -> float:
    """``ctl``'s pause before reconnect ``attempt`` of a watch: 0.5 s doubling, at most 5 s."""
    return min(5.0, 0.5 * 2.0 ** min(max(attempt - 1, 0), 10))


WATCH_RECONNECT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED)
"""Codes after which a broken watch is reopened (as ``ctl`` does: UNKNOWN and
ABORTED are what a torn HTTP/2 connection tends to surface as)."""
