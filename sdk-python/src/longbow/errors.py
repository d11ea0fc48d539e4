"""The exceptions the SDK raises. No raw pyarrow error escapes a public call."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.flight as flight


class LongbowError(Exception):
    """Base class of every Longbow error."""

    retryable: bool = False


class LongbowConnectionError(LongbowError):
    """The server could not be reached, or is temporarily unavailable (retryable)."""

    retryable = True


class LongbowValidationError(LongbowError, ValueError):
    """The request is invalid: rejected by the SDK before sending, or by the server."""


class LongbowQueryError(LongbowError):
    """The server failed to answer the request (internal error, unsupported operation)."""


class LongbowNotFoundError(LongbowError, KeyError):
    """The namespace or record does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class LongbowAlreadyExistsError(LongbowError):
    """The namespace already exists."""


class LongbowAuthenticationError(LongbowError):
    """The credentials were refused."""


class LongbowResourceExhaustedError(LongbowError):
    """The server is overloaded or the message too large; retry later or send less."""

    retryable = True


_CODE = re.compile(r"Flight returned ([a-z ]+?) error", re.IGNORECASE)

_BY_CODE: dict[str, type[LongbowError]] = {
    "invalid argument": LongbowValidationError,
    "not found": LongbowNotFoundError,
    "already exists": LongbowAlreadyExistsError,
    "unauthenticated": LongbowAuthenticationError,
    "unauthorized": LongbowAuthenticationError,
    "permission denied": LongbowAuthenticationError,
    "resource exhausted": LongbowResourceExhaustedError,
    "unavailable": LongbowConnectionError,
    "timed out": LongbowConnectionError,
    "deadline exceeded": LongbowConnectionError,
    "cancelled": LongbowConnectionError,
    "unimplemented": LongbowQueryError,
    "not implemented": LongbowQueryError,
    "internal": LongbowQueryError,
    "unknown": LongbowQueryError,
}


def _server_message(text: str) -> str:
    m = re.search(r"with message: (.*?)(?:\. gRPC client debug context|\. Detail:|$)", text, re.DOTALL)
    return (m.group(1) if m else text).strip()


def from_flight(exc: BaseException) -> LongbowError:
    """Translate a pyarrow / Flight exception into the matching Longbow error."""
    if isinstance(exc, LongbowError):
        return exc
    text = str(exc)
    message = _server_message(text)
    if isinstance(
        exc, flight.FlightUnavailableError | flight.FlightTimedOutError | flight.FlightCancelledError
    ):
        return LongbowConnectionError(message)
    if isinstance(exc, flight.FlightUnauthenticatedError | flight.FlightUnauthorizedError):
        return LongbowAuthenticationError(message)
    m = _CODE.search(text)
    if m:
        cls = _BY_CODE.get(m.group(1).lower())
        if cls is not None:
            return cls(message)
    if isinstance(exc, pa.ArrowInvalid):
        return LongbowValidationError(message)
    if isinstance(exc, pa.ArrowNotImplementedError):
        return LongbowQueryError(message)
    if isinstance(exc, ConnectionError | OSError) or "failed to connect" in text.lower():
        return LongbowConnectionError(message)
    return LongbowQueryError(message)


class LongbowTimeoutError(LongbowError, TimeoutError):
    """A wait (such as `wait_until_ready`) ran out of time."""
