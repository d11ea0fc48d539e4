"""Connections to one coordinator: a data and a meta Flight client, and a thread-safe pool
of them; and the coordinator addresses a client is given. Every Flight client carries the
middleware that records Longbow's error metadata."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pyarrow.flight as flight

from .errors import ErrorMetadata, LongbowError, LongbowValidationError

_MIDDLEWARE = [ErrorMetadata()]

#: One coordinator's client ports: `(host, data_port, meta_port)`.
Coordinator = tuple[str, int, int]


def _port(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise LongbowValidationError(f"{field} must be a port number (1-65535), got {value!r}")
    return value


def coordinator_addresses(
    host: str | None,
    data_port: int,
    meta_port: int,
    coordinators: Sequence[str | Coordinator] | None,
) -> list[Coordinator]:
    """The coordinators a client talks to: `host` alone (`localhost` when neither is given),
    or every entry of `coordinators`, a host name on `data_port` and `meta_port` or a
    `(host, data_port, meta_port)` tuple."""
    _port(data_port, "data_port")
    _port(meta_port, "meta_port")
    if coordinators is None:
        return [(host or "localhost", data_port, meta_port)]
    if host is not None:
        raise LongbowValidationError("give host or coordinators, not both")
    if isinstance(coordinators, str) or not coordinators:
        raise LongbowValidationError("coordinators must be a non-empty list of addresses")
    out: list[Coordinator] = []
    for i, c in enumerate(coordinators):
        if isinstance(c, str) and c:
            out.append((c, data_port, meta_port))
        elif isinstance(c, tuple) and len(c) == 3 and isinstance(c[0], str) and c[0]:
            out.append((c[0], _port(c[1], f"coordinators[{i}][1]"), _port(c[2], f"coordinators[{i}][2]")))
        else:
            raise LongbowValidationError(
                f"coordinators[{i}] must be a host name or a (host, data_port, meta_port) tuple, got {c!r}"
            )
    return out


class Connections:
    """A data and a meta Flight client to one coordinator."""

    def __init__(self, host: str, data_port: int, meta_port: int) -> None:
        self.data = flight.FlightClient(f"grpc://{host}:{data_port}", middleware=_MIDDLEWARE)
        self.meta = flight.FlightClient(f"grpc://{host}:{meta_port}", middleware=_MIDDLEWARE)

    def close(self) -> None:
        self.data.close()
        self.meta.close()


class ConnectionPool:
    """A thread-safe pool of connections; `lease()` hands one out for the duration of a call."""

    def __init__(self, factory: Callable[[], Connections], size: int) -> None:
        if size < 1:
            raise LongbowValidationError("pool size must be at least 1")
        self._factory = factory
        self._free: queue.LifoQueue[Connections] = queue.LifoQueue()
        self._all: list[Connections] = []
        self._lock = threading.Lock()
        self._size = size
        self._closed = False

    @contextmanager
    def lease(self) -> Iterator[Connections]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._free.put(conn)

    def _take(self) -> Connections:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise LongbowError("the client is closed")
            if len(self._all) < self._size:
                conn = self._factory()
                self._all.append(conn)
                return conn
        return self._free.get()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for c in self._all:
                c.close()
            self._all.clear()
