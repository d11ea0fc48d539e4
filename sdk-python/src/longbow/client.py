"""`LongbowClient`: one object over a coordinator's data and meta Flight ports."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from . import convert
from .errors import (
    LongbowError,
    LongbowNotFoundError,
    LongbowTimeoutError,
    LongbowValidationError,
    from_flight,
)
from .models import IndexStats, NamespaceInfo, Record, RecordId, SearchResult, check_k

T = TypeVar("T")
Output = Literal["models", "arrow", "pandas", "dask"]
_FIXED = ("query_id", "id", "distance", "score", "vector")


class _Connections:
    """A data and a meta Flight client to one coordinator."""

    def __init__(self, host: str, data_port: int, meta_port: int) -> None:
        self.data = flight.FlightClient(f"grpc://{host}:{data_port}")
        self.meta = flight.FlightClient(f"grpc://{host}:{meta_port}")

    def close(self) -> None:
        self.data.close()
        self.meta.close()


class ConnectionPool:
    """A thread-safe pool of connections; `lease()` hands one out for the duration of a call."""

    def __init__(self, factory: Callable[[], _Connections], size: int) -> None:
        if size < 1:
            raise LongbowValidationError("pool size must be at least 1")
        self._factory = factory
        self._free: queue.LifoQueue[_Connections] = queue.LifoQueue()
        self._all: list[_Connections] = []
        self._lock = threading.Lock()
        self._size = size
        self._closed = False

    @contextmanager
    def lease(self) -> Iterator[_Connections]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._free.put(conn)

    def _take(self) -> _Connections:
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


class LongbowClient:
    """A Longbow client. Thread-safe; use as a context manager or call `close()`.

    `retries` transient failures (unavailable, overloaded) of idempotent calls are retried
    with exponential backoff and jitter. `timeout` (seconds) bounds every call.
    """

    def __init__(
        self,
        host: str = "localhost",
        data_port: int = 3000,
        meta_port: int = 3001,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int = 3,
        pool_size: int = 8,
    ) -> None:
        if retries < 0:
            raise LongbowValidationError("retries must be >= 0")
        headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
        self._options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        self._retries = retries
        self._pool = ConnectionPool(lambda: _Connections(host, data_port, meta_port), pool_size)
        self._namespaces: dict[str, NamespaceInfo] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()

    def __enter__(self) -> LongbowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, fn: Callable[[_Connections], T], idempotent: bool = True) -> T:
        def once() -> T:
            try:
                with self._pool.lease() as conn:
                    return fn(conn)
            except LongbowError:
                raise
            except Exception as e:  # every pyarrow/Flight error becomes a LongbowError
                raise from_flight(e) from e

        if not idempotent or self._retries == 0:
            return once()
        retrying = Retrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            retry=retry_if_exception(lambda e: isinstance(e, LongbowError) and e.retryable),
            reraise=True,
        )
        return retrying(once)

    def _action(self, kind: str, body: dict[str, Any], idempotent: bool = True) -> Any:
        payload = json.dumps(body).encode()

        def run(conn: _Connections) -> Any:
            results = list(conn.meta.do_action(flight.Action(kind, payload), self._options))
            if not results:
                return None
            raw = results[0].body.to_pybytes()
            try:
                return json.loads(raw)
            except ValueError:
                return raw

        return self._call(run, idempotent)

    def _namespace(self, name: str, refresh: bool = False) -> NamespaceInfo | None:
        if refresh or name not in self._namespaces:
            for ns in self.list_namespaces():
                self._namespaces[ns.name] = ns
        return self._namespaces.get(name)

    # -- admin -----------------------------------------------------------------------------

    def create_namespace(self, name: str, dim: int, metric: str = "l2", **options: Any) -> NamespaceInfo:
        """Create a namespace. Options: `id_type`, `shards`, `replication_factor`, `m`,
        `ef_construction`, `ef_search`."""
        if metric not in ("l2", "cosine", "dot"):
            raise LongbowValidationError(f"metric must be l2, cosine or dot, got {metric!r}")
        if not isinstance(dim, int) or dim < 1:
            raise LongbowValidationError(f"dim must be a positive integer, got {dim!r}")
        index = {k: options.pop(k) for k in ("m", "ef_construction", "ef_search") if k in options}
        allowed = {"id_type", "shards", "replication_factor"}
        unknown = set(options) - allowed
        if unknown:
            raise LongbowValidationError(f"unknown options: {sorted(unknown)}")
        body: dict[str, Any] = {"name": name, "dim": dim, "metric": metric, **options}
        if index:
            body["index"] = index
        r = self._action("CreateNamespace", body, idempotent=False)
        info = NamespaceInfo(
            name=r["name"], dimension=r["dim"], metric=r["metric"], id_type=r["id_type"], shards=r["shards"]
        )
        self._namespaces[name] = info
        return info

    def list_namespaces(self) -> list[NamespaceInfo]:
        """Every namespace."""
        rows = self._action("ListNamespaces", {})
        return [
            NamespaceInfo(
                name=r["name"],
                dimension=r["dim"],
                metric=r["metric"],
                id_type=r["id_type"],
                shards=r["shards"],
            )
            for r in rows
        ]

    def get_info(self, name: str) -> IndexStats:
        """Statistics of a namespace."""
        r = self._action("GetNamespace", {"name": name})
        return IndexStats(
            name=r["name"],
            dimension=r["dim"],
            metric=r["metric"],
            id_type=r["id_type"],
            count=r["count"],
            deleted=r["deleted"],
            memory_bytes=r["memory_bytes"],
            disk_bytes=r["disk_bytes"],
            indexing_lag=r["indexing_lag"],
            shards=r["shards"],
            payload_columns=r.get("payload_columns", []),
        )

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and all its records."""
        self._action("DeleteNamespace", {"name": name}, idempotent=False)
        self._namespaces.pop(name, None)

    def snapshot(self, name: str) -> Any:
        """Snapshot a namespace (raises `LongbowQueryError` while the server lacks snapshots)."""
        return self._action("Snapshot", {"name": name}, idempotent=False)

    def cluster_status(self) -> dict[str, Any]:
        """Coordinator Raft state, shard nodes and their liveness."""
        status: dict[str, Any] = self._action("cluster-status", {})
        return status

    def wait_until_ready(self, name: str, timeout: float = 60.0, poll: float = 0.1) -> None:
        """Block until every acknowledged write of `name` is indexed."""
        deadline = time.monotonic() + timeout
        while True:
            r = self._action("check_readiness", {"namespace": name})
            if r["status"] == "READY":
                return
            if r["status"] == "NOT_FOUND":
                raise LongbowNotFoundError(f"namespace '{name}' not found")
            if time.monotonic() >= deadline:
                raise LongbowTimeoutError(f"namespace '{name}' not ready after {timeout}s: {r}")
            time.sleep(poll)

    # -- data ------------------------------------------------------------------------------

    def insert(
        self,
        namespace: str,
        data: Any,
        ids: Sequence[RecordId] | np.ndarray | None = None,
        batch_size: int = 10_000,
        parallelism: int = 1,
    ) -> int:
        """Insert (or replace) records; returns the rows acknowledged as durable.

        `data`: a dict, a list of dicts, a 2-D numpy array (with `ids=`), a pandas or Dask
        DataFrame (Dask partitions are streamed one at a time), or a pyarrow Table/RecordBatch.
        """
        if parallelism < 1:
            raise LongbowValidationError("parallelism must be at least 1")
        if convert.is_dask(data):
            if ids is not None:
                raise LongbowValidationError("ids: give ids as a column of the Dask DataFrame")
            return sum(
                self.insert(namespace, data.get_partition(i).compute(), None, batch_size, parallelism)
                for i in range(data.npartitions)
            )
        ns = self._namespace(namespace)
        table = convert.to_table(data, ids, ns.dimension if ns else None, ns.id_type if ns else None)
        chunks = list(convert.batches(table, batch_size))
        if parallelism == 1 or len(chunks) < 2:
            rows = self._put(namespace, chunks)
        else:
            groups = [chunks[i::parallelism] for i in range(parallelism)]
            with ThreadPoolExecutor(max_workers=parallelism) as pool:
                rows = sum(pool.map(lambda g: self._put(namespace, g), [g for g in groups if g]))
        if ns is None:
            self._namespace(namespace, refresh=True)
        return rows

    def _put(self, namespace: str, chunks: list[pa.RecordBatch]) -> int:
        # Upserts by id are idempotent, so a failed stream is safely retried whole.
        def run(conn: _Connections) -> int:
            descriptor = flight.FlightDescriptor.for_path(namespace)
            writer, reader = conn.data.do_put(descriptor, chunks[0].schema, self._options)
            rows = 0
            try:
                for b in chunks:
                    writer.write_batch(b)
                    ack = reader.read()
                    rows += int(json.loads(ack.to_pybytes())["rows"]) if ack is not None else 0
                writer.done_writing()
            finally:
                writer.close()
            return rows

        return self._call(run, idempotent=True)

    def search(
        self,
        namespace: str,
        vector: Any,
        k: int = 10,
        filter: dict[str, Any] | list[Any] | None = None,
        ef: int | None = None,
        columns: list[str] | None = None,
        output: Output = "models",
        include_vectors: bool = False,
    ) -> Any:
        """Nearest neighbours of one query (1-D) or many (2-D), over the binary path."""
        check_k(k)
        if ef is not None and (not isinstance(ef, int) or not 1 <= ef <= 10_000):
            raise LongbowValidationError(f"ef must be an integer in 1..10000, got {ef!r}")
        ns = self._namespace(namespace)
        if ns is None:
            raise LongbowNotFoundError(f"namespace '{namespace}' not found")
        single = np.asarray(vector).ndim == 1
        queries = convert.as_matrix(vector, ns.dimension)
        cmd: dict[str, Any] = {
            "op": "search",
            "namespace": namespace,
            "k": k,
            "include_vectors": include_vectors,
        }
        if ef is not None:
            cmd["ef"] = ef
        if filter is not None:
            cmd["filter"] = filter
        if columns:
            cmd["columns"] = columns
        table = self._call(lambda conn: self._exchange(conn, cmd, queries))
        return _shape(table, output, len(queries), single)

    def _exchange(self, conn: _Connections, cmd: dict[str, Any], queries: np.ndarray) -> pa.Table:
        descriptor = flight.FlightDescriptor.for_command(json.dumps(cmd).encode())
        writer, reader = conn.data.do_exchange(descriptor, self._options)
        try:
            q = pa.table({convert.VECTOR: convert.vector_array(queries)})
            writer.begin(q.schema)
            writer.write_table(q)
            writer.done_writing()
            return reader.read_all()
        finally:
            writer.close()

    def search_by_id(self, namespace: str, id: RecordId, k: int = 10, **kwargs: Any) -> list[SearchResult]:
        """Neighbours of a stored record (the record itself is left out)."""
        found = self.get(namespace, [id], include_vectors=True)
        if not found or found[0].vector is None:
            raise LongbowNotFoundError(f"record {id!r} not found in '{namespace}'")
        results: list[SearchResult] = self.search(namespace, found[0].vector, k=k + 1, **kwargs)
        return [r for r in results if r.id != id][:k]

    def get(self, namespace: str, ids: Sequence[RecordId], include_vectors: bool = True) -> list[Record]:
        """Records by id, in request order; missing ids are skipped."""
        ids = [Record(id=i).id for i in ids]
        ticket = flight.Ticket(
            json.dumps(
                {"get": {"namespace": namespace, "ids": ids, "include_vectors": include_vectors}}
            ).encode()
        )
        table = self._call(lambda conn: conn.data.do_get(ticket, self._options).read_all())
        out = []
        meta_cols = [c for c in table.column_names if c not in _FIXED]
        for row in table.to_pylist():
            out.append(
                Record(id=row["id"], vector=row.get("vector"), metadata={c: row[c] for c in meta_cols})
            )
        return out

    def delete(self, namespace: str, ids: Sequence[RecordId] | None = None, filter: Any = None) -> int:
        """Delete by ids and/or filter; returns rows deleted."""
        if ids is None and filter is None:
            raise LongbowValidationError("delete needs ids or a filter")
        body: dict[str, Any] = {"namespace": namespace}
        if ids is not None:
            body["ids"] = [Record(id=i).id for i in ids]
        if filter is not None:
            body["filter"] = filter
        return int(self._action("Delete", body)["deleted"])


def _shape(table: pa.Table, output: Output, queries: int, single: bool) -> Any:
    if output == "arrow":
        return table
    if output == "pandas":
        return table.to_pandas()
    if output == "dask":
        import dask.dataframe as dd

        return dd.from_pandas(table.to_pandas(), npartitions=1)  # type: ignore[no-untyped-call]
    if output != "models":
        raise LongbowValidationError(f"output must be models, arrow, pandas or dask, got {output!r}")
    meta_cols = [c for c in table.column_names if c not in _FIXED]
    per_query: list[list[SearchResult]] = [[] for _ in range(queries)]
    for row in table.to_pylist():
        per_query[row["query_id"]].append(
            SearchResult(
                id=row["id"],
                distance=row["distance"],
                score=row["score"],
                metadata={c: row[c] for c in meta_cols},
                vector=row.get("vector"),
            )
        )
    return per_query[0] if single else per_query
