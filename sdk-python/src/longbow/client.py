"""`LongbowClient`: one object over a coordinator's data and meta Flight ports."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd
import pyarrow.flight as flight
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from . import convert
from .errors import (
    LongbowConnectionError,
    LongbowError,
    LongbowNotFoundError,
    LongbowTimeoutError,
    LongbowValidationError,
    begin_call,
    from_flight,
)
from .models import (
    IdType,
    IndexOptions,
    IndexStats,
    Metric,
    NamespaceInfo,
    Record,
    RecordId,
    SearchResult,
    ShardReplicas,
    SnapshotInfo,
    check_k,
)
from .pool import ConnectionPool, Connections, Coordinator, coordinator_addresses
from .progress import Progress
from .results import FIXED_COLUMNS, Output, namespace_info, row_count, shape

T = TypeVar("T")
Columns = list[str] | Literal["*"] | None
#: Backoff before retry n: 0.05 s x 2^(n-1) plus up to 1 s of jitter, at most 2 s. The first
#: attempt runs outside tenacity, so its loop waits from the second retry on.
_FIRST_BACKOFF = wait_exponential_jitter(multiplier=0.05, max=2.0)
_LATER_BACKOFF = wait_exponential_jitter(multiplier=0.1, max=2.0)
#: Batches one write stream sends ahead of their acknowledgements (the server keeps as many in
#: flight); a failed stream resumes from the first unacknowledged batch.
_PUT_WINDOW = 8
#: Which replica of each shard answers a search: any in-sync one (the default) or the primary.
Consistency = Literal["any", "primary"]


class LongbowClient:
    """A Longbow client. Thread-safe; use as a context manager or call `close()`.

    `retries` transient failures (unavailable, overloaded) of idempotent calls are retried
    with exponential backoff and jitter. `timeout` (seconds) bounds every call.

    A cluster with several coordinators is given as `coordinators`: every one takes every
    call, so after a call fails with a retryable error the client moves on to the next one,
    and its retries go there. Each entry is a host name (served on `data_port` and
    `meta_port`, as in a Kubernetes StatefulSet) or a `(host, data_port, meta_port)` tuple.
    """

    def __init__(
        self,
        host: str | None = None,
        data_port: int = 3000,
        meta_port: int = 3001,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int = 3,
        pool_size: int = 8,
        *,
        coordinators: Sequence[str | Coordinator] | None = None,
    ) -> None:
        if retries < 0:
            raise LongbowValidationError("retries must be >= 0")
        headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
        self._options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        self._retries = retries
        self._pools = [
            ConnectionPool(functools.partial(Connections, h, d, m), pool_size)
            for h, d, m in coordinator_addresses(host, data_port, meta_port, coordinators)
        ]
        # The coordinator calls go to; moved on after a retryable failure.
        self._at = 0
        self._at_lock = threading.Lock()
        self._namespaces: dict[str, NamespaceInfo] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection."""
        for pool in self._pools:
            pool.close()

    def __enter__(self) -> LongbowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _once(self, fn: Callable[[Connections], T]) -> T:
        at = self._at
        md = begin_call()
        try:
            with self._pools[at].lease() as conn:
                return fn(conn)
        except LongbowError as e:
            self._after_failure(at, e)
            raise
        except Exception as e:  # every pyarrow/Flight error becomes a LongbowError
            err = from_flight(e, md)
            self._after_failure(at, err)
            raise err from e

    def _after_failure(self, at: int, e: LongbowError) -> None:
        """Move on from coordinator `at` when its failure may be its own (gone, hung, cut
        off): the next call, and the retry of this one, go to the next coordinator. Only
        the first of several calls failing on `at` at once moves the client on."""
        if e.retryable and len(self._pools) > 1:
            with self._at_lock:
                if self._at == at:
                    self._at = (at + 1) % len(self._pools)

    @staticmethod
    def _may_resend(e: BaseException, idempotent: bool) -> bool:
        return isinstance(e, LongbowError) and e.retryable and (idempotent or not e.sent)

    def _retrying(self, idempotent: bool, attempts: int) -> Retrying:
        """`attempts` more tries after a failed first one, while a retry may help; the
        first waits the backoff the failed attempt earned, each later one twice the last."""

        def after_first_failure(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                time.sleep(_FIRST_BACKOFF(state))

        return Retrying(
            stop=stop_after_attempt(attempts),
            wait=_LATER_BACKOFF,
            retry=retry_if_exception(lambda e: self._may_resend(e, idempotent)),
            before=after_first_failure,
            reraise=True,
        )

    def _call(self, fn: Callable[[Connections], T], idempotent: bool = True) -> T:
        """Run `fn` on a pooled connection, retried while a retry may help: any retryable
        failure of an idempotent call, and of any call that was never sent. The first
        attempt runs outside tenacity, which costs tens of microseconds per call."""
        try:
            return self._once(fn)
        except LongbowError as e:
            if self._retries == 0 or not self._may_resend(e, idempotent):
                raise
        retrying = self._retrying(idempotent, self._retries)
        return retrying(lambda: self._once(fn))

    def _action(self, kind: str, body: dict[str, Any], idempotent: bool = True) -> Any:
        payload = json.dumps(body).encode()

        def run(conn: Connections) -> Any:
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

    def create_namespace(
        self,
        name: str,
        dim: int,
        metric: Metric = "l2",
        *,
        id_type: IdType = "uint64",
        shards: int | None = None,
        replication_factor: int | None = None,
        index: IndexOptions | None = None,
    ) -> NamespaceInfo:
        """Create a namespace of `dim`-dimensional vectors.

        Args:
            name: the namespace name (1-128 characters of A-Z a-z 0-9 _ - .).
            dim: vector dimension.
            metric: `l2`, `cosine` or `dot`.
            id_type: `uint64`, `int64` or `string`.
            shards: shard count (the server's default when `None`).
            replication_factor: replicas per shard.
            index: HNSW parameters (`IndexOptions(m=16, ef_construction=200, ef_search=64)`).
        """
        if metric not in ("l2", "cosine", "dot"):
            raise LongbowValidationError(f"metric must be l2, cosine or dot, got {metric!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise LongbowValidationError(f"dim must be a positive integer, got {dim!r}")
        if index is not None and not isinstance(index, IndexOptions):
            raise LongbowValidationError("index must be an IndexOptions")
        body: dict[str, Any] = {"name": name, "dim": dim, "metric": metric, "id_type": id_type}
        if shards is not None:
            body["shards"] = shards
        if replication_factor is not None:
            body["replication_factor"] = replication_factor
        if index is not None and index.body():
            body["index"] = index.body()
        r = self._action("CreateNamespace", body, idempotent=False)
        info = namespace_info(r)
        self._namespaces[name] = info
        return info

    def list_namespaces(self) -> list[NamespaceInfo]:
        """Every namespace."""
        r = self._action("ListNamespaces", {})
        return [namespace_info(d) for d in r["details"]]

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
            replication_factor=r.get("replication_factor", 1),
            replica_sets=[ShardReplicas.model_validate(s) for s in r.get("per_shard", [])],
        )

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and all its records."""
        self._action("DeleteNamespace", {"name": name}, idempotent=False)
        self._namespaces.pop(name, None)

    def snapshot(self, name: str) -> SnapshotInfo:
        """Snapshot a namespace: every shard checkpoints and keeps its files at that point.
        Restore it later with `restore_snapshot`, also after the namespace was deleted."""
        return SnapshotInfo.model_validate(self._action("Snapshot", {"namespace": name}, idempotent=False))

    def list_snapshots(self, name: str | None = None) -> list[SnapshotInfo]:
        """Complete snapshots of one namespace, or of all, oldest first."""
        body = {} if name is None else {"namespace": name}
        return [SnapshotInfo.model_validate(s) for s in self._action("ListSnapshots", body)["snapshots"]]

    def restore_snapshot(
        self, name: str, snapshot: str, target: str | None = None, replace: bool = False
    ) -> str:
        """Restore `snapshot` of namespace `name` into `target` (default: `name`); an existing
        target is replaced only with `replace=True`. Returns the restored namespace's name."""
        body: dict[str, Any] = {"namespace": name, "snapshot": snapshot, "replace": replace}
        if target is not None:
            body["target"] = target
        restored: str = self._action("RestoreSnapshot", body, idempotent=False)["restored"]
        self._namespaces.pop(restored, None)
        return restored

    def delete_snapshot(self, snapshot: str, name: str | None = None) -> None:
        """Delete a snapshot and its files (when `name` is given, it must be a snapshot of it)."""
        body: dict[str, Any] = {"snapshot": snapshot}
        if name is not None:
            body["namespace"] = name
        self._action("DeleteSnapshot", body, idempotent=False)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """Seal and checkpoint every shard of a namespace now (a restart then replays nothing
        written before this call)."""
        result: dict[str, Any] = self._action("Checkpoint", {"namespace": name})
        return result

    def cluster_status(self) -> dict[str, Any]:
        """Coordinator Raft state, shard nodes and their liveness."""
        status: dict[str, Any] = self._action("cluster-status", {})
        return status

    def wait_until_ready(
        self,
        name: str,
        timeout: float | None = None,
        poll: float = 0.2,
        stall_timeout: float = 60.0,
        progress: bool | None = None,
    ) -> None:
        """Block until every acknowledged write of `name` is indexed.

        It follows the indexing: it waits as long as the backlog keeps shrinking, and gives up
        (`LongbowTimeoutError`) once it has not shrunk for `stall_timeout` seconds, or after
        `timeout` seconds in all when that is given. `progress` shows a bar (default: in
        notebooks).
        """
        started = time.monotonic()
        best: int | None = None
        last_progress = started
        bar: Progress | None = None
        try:
            while True:
                r = self._action("check_readiness", {"namespace": name})
                if r["status"] == "NOT_FOUND":
                    raise LongbowNotFoundError(f"namespace '{name}' not found", code="namespace_not_found")
                lag = int(r.get("indexing_lag", 0))
                if bar is None and r["status"] != "READY":
                    bar = Progress(progress, total=lag, desc=f"indexing {name}", unit="rows")
                if bar is not None and best is not None:
                    bar.update(max(0, best - lag))
                if r["status"] == "READY":
                    return
                now = time.monotonic()
                if best is None or lag < best:
                    best, last_progress = lag, now
                if now - last_progress >= stall_timeout:
                    raise LongbowTimeoutError(
                        f"namespace '{name}' made no indexing progress for {stall_timeout}s: {r}"
                    )
                if timeout is not None and now - started >= timeout:
                    raise LongbowTimeoutError(f"namespace '{name}' not ready after {timeout}s: {r}")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()

    # -- data ------------------------------------------------------------------------------

    def insert(
        self,
        namespace: str,
        data: Any,
        ids: Sequence[RecordId] | np.ndarray | None = None,
        batch_size: int = 10_000,
        parallelism: int = 1,
        *,
        create: bool = False,
        progress: bool | None = None,
    ) -> int:
        """Insert (or replace) records; returns the rows acknowledged as durable.

        `data`: a dict, a list of dicts, a 2-D numpy array (with `ids=`), a pandas or Dask
        DataFrame (Dask partitions are streamed one at a time), or a pyarrow Table/RecordBatch.
        Inserting into a namespace that does not exist raises `LongbowNotFoundError` unless
        `create=True`, which creates it from the data (dimension, id type). A batch that fails
        with a retryable error is sent again (writes are upserts by id, so this is safe).
        `progress` shows a bar (default: in notebooks).
        """
        if parallelism < 1:
            raise LongbowValidationError("parallelism must be at least 1")
        ns = self._namespace(namespace)
        if ns is None:
            ns = self._namespace(namespace, refresh=True)
        if ns is None and not create:
            raise LongbowNotFoundError(
                f"namespace '{namespace}' not found; create it with create_namespace() "
                "or pass create=True to create it from the data",
                code="namespace_not_found",
            )
        with Progress(progress, total=row_count(data), desc=f"insert {namespace}", unit="rows") as bar:
            if convert.is_dask(data):
                if ids is not None:
                    raise LongbowValidationError("ids: give ids as a column of the Dask DataFrame")
                return sum(
                    self._insert_table(
                        namespace, data.get_partition(i).compute(), None, batch_size, parallelism, bar
                    )
                    for i in range(data.npartitions)
                )
            return self._insert_table(namespace, data, ids, batch_size, parallelism, bar)

    def _insert_table(
        self,
        namespace: str,
        data: Any,
        ids: Sequence[RecordId] | np.ndarray | None,
        batch_size: int,
        parallelism: int,
        bar: Progress,
    ) -> int:
        ns = self._namespace(namespace)
        table = convert.to_table(data, ids, ns.dimension if ns else None, ns.id_type if ns else None)
        chunks = list(convert.batches(table, batch_size))
        if not chunks:
            return 0
        if parallelism == 1 or len(chunks) < 2 or ns is None:
            # The first write to a new namespace goes alone: it creates the namespace.
            rows = self._put(namespace, chunks[:1], bar)
            if ns is None:
                self._namespace(namespace, refresh=True)
            chunks = chunks[1:]
            if parallelism == 1:
                return rows + (self._put(namespace, chunks, bar) if chunks else 0)
        else:
            rows = 0
        groups = [g for g in (chunks[i::parallelism] for i in range(parallelism)) if g]
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            return rows + sum(pool.map(lambda g: self._put(namespace, g, bar), groups))

    def _put(self, namespace: str, chunks: list[pa.RecordBatch], bar: Progress) -> int:
        """Stream `chunks`, up to `_PUT_WINDOW` ahead of their acknowledgements; on a
        retryable failure resume from the first unacknowledged one."""
        acked = 0
        rows = 0

        def run(conn: Connections) -> None:
            nonlocal acked, rows
            if acked >= len(chunks):
                return
            descriptor = flight.FlightDescriptor.for_path(namespace)
            writer, reader = conn.data.do_put(descriptor, chunks[acked].schema, self._options)

            def read_ack() -> bool:
                nonlocal acked, rows
                ack = reader.read()
                if ack is None:
                    return False  # the server ended the stream: close() raises its error
                n = int(json.loads(ack.to_pybytes())["rows"])
                rows += n
                acked += 1
                bar.update(n)
                return True

            try:
                sent = acked
                ended = False
                for b in chunks[acked:]:
                    writer.write_batch(b)
                    sent += 1
                    if sent - acked > _PUT_WINDOW and not read_ack():
                        ended = True
                        break
                if not ended:
                    writer.done_writing()
                    while acked < sent and read_ack():
                        pass
            finally:
                writer.close()
            if acked < len(chunks):
                raise LongbowConnectionError(
                    "the server ended the write stream without acknowledging every batch"
                )

        self._call(run)  # resumes from the first unacknowledged batch
        return rows

    @overload
    def search(
        self,
        namespace: str,
        vector: Sequence[float],
        k: int = ...,
        filter: dict[str, Any] | list[Any] | None = ...,
        ef: int | None = ...,
        columns: Columns = ...,
        output: Literal["models"] = ...,
        include_vectors: bool = ...,
        allow_partial: bool = ...,
        consistency: Consistency = ...,
    ) -> list[SearchResult]: ...

    @overload
    def search(
        self,
        namespace: str,
        vector: Sequence[Sequence[float]],
        k: int = ...,
        filter: dict[str, Any] | list[Any] | None = ...,
        ef: int | None = ...,
        columns: Columns = ...,
        output: Literal["models"] = ...,
        include_vectors: bool = ...,
        allow_partial: bool = ...,
        consistency: Consistency = ...,
    ) -> list[list[SearchResult]]: ...

    @overload
    def search(
        self,
        namespace: str,
        vector: np.ndarray,
        k: int = ...,
        filter: dict[str, Any] | list[Any] | None = ...,
        ef: int | None = ...,
        columns: Columns = ...,
        output: Literal["models"] = ...,
        include_vectors: bool = ...,
        allow_partial: bool = ...,
        consistency: Consistency = ...,
    ) -> list[SearchResult] | list[list[SearchResult]]: ...

    @overload
    def search(
        self,
        namespace: str,
        vector: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        k: int = ...,
        filter: dict[str, Any] | list[Any] | None = ...,
        ef: int | None = ...,
        columns: Columns = ...,
        *,
        output: Literal["arrow"],
        include_vectors: bool = ...,
        allow_partial: bool = ...,
        consistency: Consistency = ...,
    ) -> pa.Table: ...

    @overload
    def search(
        self,
        namespace: str,
        vector: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        k: int = ...,
        filter: dict[str, Any] | list[Any] | None = ...,
        ef: int | None = ...,
        columns: Columns = ...,
        *,
        output: Literal["pandas"],
        include_vectors: bool = ...,
        allow_partial: bool = ...,
        consistency: Consistency = ...,
    ) -> pd.DataFrame: ...

    @overload
    def search(
        self,
        namespace: str,
        vector: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        k: int = ...,
        filter: dict[str, Any] | list[Any] | None = ...,
        ef: int | None = ...,
        columns: Columns = ...,
        *,
        output: Literal["dask"],
        include_vectors: bool = ...,
        allow_partial: bool = ...,
        consistency: Consistency = ...,
    ) -> dd.DataFrame: ...

    def search(
        self,
        namespace: str,
        vector: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        k: int = 10,
        filter: dict[str, Any] | list[Any] | None = None,
        ef: int | None = None,
        columns: Columns = None,
        output: Output = "models",
        include_vectors: bool = False,
        allow_partial: bool = False,
        consistency: Consistency = "any",
    ) -> Any:
        """Nearest neighbours of one query (1-D: a list of results) or many (2-D: a list of
        lists), over the binary path.

        Args:
            columns: payload columns to return, or `"*"` for all of them.
            output: `models` (the default), `arrow`, `pandas` or `dask`.
            allow_partial: answer from the shards that respond when some are unavailable; the
                Arrow result then has schema metadata `longbow.partial = true`.
            consistency: `"any"` lets any in-sync replica of each shard answer (each has every
                acknowledged write); `"primary"` asks the primaries only.
        """
        return self._search(
            namespace, vector, k, filter, ef, columns, output, include_vectors, allow_partial, consistency
        )

    def _search(
        self,
        namespace: str,
        vector: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        k: int,
        filter: dict[str, Any] | list[Any] | None,
        ef: int | None,
        columns: Columns,
        output: Output,
        include_vectors: bool,
        allow_partial: bool,
        consistency: Consistency = "any",
    ) -> Any:
        check_k(k)
        if consistency not in ("any", "primary"):
            raise LongbowValidationError(f'consistency must be "any" or "primary", got {consistency!r}')
        if ef is not None and (not isinstance(ef, int) or not 1 <= ef <= 10_000):
            raise LongbowValidationError(f"ef must be an integer in 1..10000, got {ef!r}")
        if columns is not None and columns != "*" and not isinstance(columns, list):
            raise LongbowValidationError('columns must be a list of names or "*"')
        ns = self._namespace(namespace)
        if ns is None:
            raise LongbowNotFoundError(f"namespace '{namespace}' not found", code="namespace_not_found")
        single = np.asarray(vector).ndim == 1
        queries = convert.as_matrix(vector, ns.dimension or None)
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
        if allow_partial:
            cmd["allow_partial"] = True
        if consistency != "any":
            cmd["consistency"] = consistency
        table = self._call(lambda conn: self._exchange(conn, cmd, queries))
        return shape(table, output, len(queries), single)

    def _exchange(self, conn: Connections, cmd: dict[str, Any], queries: np.ndarray) -> pa.Table:
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

    def search_by_id(
        self,
        namespace: str,
        id: RecordId,
        k: int = 10,
        filter: dict[str, Any] | list[Any] | None = None,
        ef: int | None = None,
        columns: Columns = None,
    ) -> list[SearchResult]:
        """Neighbours of a stored record (the record itself is left out)."""
        check_k(k)
        found = self.get(namespace, [id], include_vectors=True)
        if not found or found[0].vector is None:
            raise LongbowNotFoundError(f"record {id!r} not found in '{namespace}'", code="record_not_found")
        results = self.search(
            namespace, found[0].vector, k=min(k + 1, 10_000), filter=filter, ef=ef, columns=columns
        )
        return [r for r in results if r.id != id][:k]

    def get(
        self,
        namespace: str,
        ids: Sequence[RecordId],
        include_vectors: bool = True,
        columns: Columns = "*",
    ) -> list[Record]:
        """Records by id, in request order; missing ids are skipped. `columns`: the payload
        columns to return (`"*"`, the default, for all)."""
        body: dict[str, Any] = {
            "namespace": namespace,
            "ids": [Record(id=i).id for i in ids],
            "include_vectors": include_vectors,
        }
        if columns is not None:
            body["columns"] = columns
        ticket = flight.Ticket(json.dumps({"get": body}).encode())
        table = self._call(lambda conn: conn.data.do_get(ticket, self._options).read_all())
        out = []
        meta_cols = [c for c in table.column_names if c not in FIXED_COLUMNS]
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
