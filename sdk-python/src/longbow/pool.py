"""Connections to one coordinator: a data and a meta Flight client, and a thread-safe pool
of them. Every client carries the middleware that records Longbow's error metadata."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow.flight as flight

from .errors import ErrorMetadata, LongbowError, LongbowValidationError

_MIDDLEWARE = [ErrorMetadata()]


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
