"""The exceptions the SDK raises. No raw pyarrow error escapes a public call.

Every Longbow server error carries a stable machine-readable code and a retry flag in its
response metadata (`x-longbow-error-code`, `x-longbow-retryable`). The SDK reads them through
a Flight client middleware ([`ErrorMetadata`]) and builds its exception from them, never from
message text: each error has `.code`, `.retryable` and `.status` (the gRPC status name). Errors
raised before anything reaches a server (validation in the SDK, no server at all) get their
code from the SDK itself.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

CODE_HEADER = "x-longbow-error-code"
RETRYABLE_HEADER = "x-longbow-retryable"
# The gRPC error detail, which Longbow fills with JSON {"code", "retryable", "status"}.
DETAIL_HEADER = "grpc-status-details-bin"


class LongbowError(Exception):
    """Base class of every Longbow error.

    Attributes:
        code: the stable machine-readable code (for example `namespace_not_found`).
        retryable: whether the same request may succeed when sent again.
        status: the gRPC status name (for example `NOT_FOUND`).
        sent: `False` when the request certainly never reached a server (the connection
            could not be made), so sending it again, even a call that is not idempotent,
            cannot apply it twice.
    """

    default_code = "unknown"
    default_status = "UNKNOWN"
    default_retryable = False

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        retryable: bool | None = None,
        status: str | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = code or self.default_code
        self.retryable: bool = self.default_retryable if retryable is None else retryable
        self.status: str = status or self.default_status
        self.sent = sent


class LongbowConnectionError(LongbowError):
    """The server could not be reached, or is temporarily unavailable (retryable)."""

    default_code = "unavailable"
    default_status = "UNAVAILABLE"
    default_retryable = True


class LongbowDeadlineError(LongbowConnectionError):
    """The request ran out of time on the server or on the way (retryable)."""

    default_code = "deadline_exceeded"
    default_status = "DEADLINE_EXCEEDED"


class LongbowValidationError(LongbowError, ValueError):
    """The request is invalid: rejected by the SDK before sending, or by the server."""

    default_code = "invalid_argument"
    default_status = "INVALID_ARGUMENT"


class LongbowQueryError(LongbowError):
    """The server failed to answer the request (internal error)."""

    default_code = "internal"
    default_status = "INTERNAL"


class LongbowUnimplementedError(LongbowQueryError):
    """The server does not support this operation."""

    default_code = "unimplemented"
    default_status = "UNIMPLEMENTED"


class LongbowNotFoundError(LongbowError, KeyError):
    """The namespace or record does not exist."""

    default_code = "not_found"
    default_status = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return self.message


class LongbowAlreadyExistsError(LongbowError):
    """The namespace already exists."""

    default_code = "already_exists"
    default_status = "ALREADY_EXISTS"


class LongbowAuthenticationError(LongbowError):
    """The credentials were refused."""

    default_code = "unauthenticated"
    default_status = "UNAUTHENTICATED"


class LongbowResourceExhaustedError(LongbowError):
    """The server is overloaded or the message too large; retry later or send less."""

    default_code = "resource_exhausted"
    default_status = "RESOURCE_EXHAUSTED"
    default_retryable = True


class LongbowTimeoutError(LongbowError, TimeoutError):
    """A wait (such as `wait_until_ready`) ran out of time."""

    default_code = "timeout"
    default_status = "DEADLINE_EXCEEDED"


_BY_STATUS: dict[str, type[LongbowError]] = {
    "INVALID_ARGUMENT": LongbowValidationError,
    "OUT_OF_RANGE": LongbowValidationError,
    "NOT_FOUND": LongbowNotFoundError,
    "ALREADY_EXISTS": LongbowAlreadyExistsError,
    "UNAUTHENTICATED": LongbowAuthenticationError,
    "PERMISSION_DENIED": LongbowAuthenticationError,
    "RESOURCE_EXHAUSTED": LongbowResourceExhaustedError,
    "UNAVAILABLE": LongbowConnectionError,
    "CANCELLED": LongbowConnectionError,
    "DEADLINE_EXCEEDED": LongbowDeadlineError,
    "UNIMPLEMENTED": LongbowUnimplementedError,
    "INTERNAL": LongbowQueryError,
    "UNKNOWN": LongbowQueryError,
}

# The gRPC status a pyarrow exception class stands for (used only when the server sent no
# Longbow metadata: no server at all, or a proxy in between).
_STATUS_OF_EXCEPTION: list[tuple[type[BaseException], str]] = [
    (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
    (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
    (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
    (flight.FlightCancelledError, "CANCELLED"),
    (flight.FlightUnavailableError, "UNAVAILABLE"),
    (flight.FlightInternalError, "INTERNAL"),
    (flight.FlightServerError, "INTERNAL"),
    (pa.ArrowInvalid, "INVALID_ARGUMENT"),
    (pa.ArrowKeyError, "NOT_FOUND"),
    (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
]


class CallMetadata:
    """The error metadata of the last call made on this thread (filled by the middleware)."""

    def __init__(self) -> None:
        self.code: str | None = None
        self.retryable: bool | None = None
        self.status: str | None = None


_current = threading.local()


def begin_call() -> CallMetadata:
    """Start capturing the metadata of the calls this thread makes next."""
    md = CallMetadata()
    _current.metadata = md
    return md


class _Capture(flight.ClientMiddleware):  # type: ignore[misc]
    def __init__(self, into: CallMetadata | None) -> None:
        self._into = into

    def received_headers(self, headers: dict[str, list[Any]]) -> None:
        if self._into is None:
            return
        detail = headers.get(DETAIL_HEADER)
        if detail:
            try:
                parsed = json.loads(detail[-1])
                self._into.status = str(parsed["status"])
            except (ValueError, KeyError, TypeError):
                pass
        code = headers.get(CODE_HEADER)
        if code:
            value = code[-1]
            self._into.code = value.decode() if isinstance(value, bytes) else str(value)
        retry = headers.get(RETRYABLE_HEADER)
        if retry:
            value = retry[-1]
            text = value.decode() if isinstance(value, bytes) else str(value)
            self._into.retryable = text == "true"

    def call_completed(self, exception: BaseException | None) -> None:
        return None


class ErrorMetadata(flight.ClientMiddlewareFactory):  # type: ignore[misc]
    """Middleware that records each call's Longbow error metadata (initial headers and
    trailers) into the thread's current [`CallMetadata`]."""

    def start_call(self, info: Any) -> _Capture:
        return _Capture(getattr(_current, "metadata", None))


def _server_message(text: str) -> str:
    m = re.search(r"with message: (.*?)(?:\. gRPC client debug context|\. Detail:|$)", text, re.DOTALL)
    return (m.group(1) if m else text).strip()


def _status_of(exc: BaseException) -> str | None:
    for cls, status in _STATUS_OF_EXCEPTION:
        if isinstance(exc, cls):
            return status
    return None


def from_flight(exc: BaseException, md: CallMetadata | None = None) -> LongbowError:
    """Translate a pyarrow / Flight exception into the matching Longbow error, from the
    call's error metadata when the server sent it."""
    if isinstance(exc, LongbowError):
        return exc
    message = _server_message(str(exc))
    status = (md.status if md else None) or _status_of(exc)
    code = md.code if md else None
    retryable = md.retryable if md else None
    # gRPC's words when no connection could be made, so nothing was sent.
    unsent = code is None and "failed to connect" in str(exc).lower()
    if status is None:
        status = "UNAVAILABLE" if isinstance(exc, ConnectionError | OSError) or unsent else "UNKNOWN"
    cls = _BY_STATUS.get(status, LongbowQueryError)
    return cls(message, code=code, retryable=retryable, status=status, sent=not unsent)
