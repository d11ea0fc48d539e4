"""`AsyncLongbowClient`: the same methods as `LongbowClient`, for asyncio. Calls run on
worker threads over the sync client's thread-safe connection pool.

Every public method of `LongbowClient` has an async twin here with the same parameters
(`tests/test_async_parity.py` compares the signatures, so the two cannot drift apart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from .client import Columns, Consistency, LongbowClient
from .models import (
    IdType,
    IndexOptions,
    IndexStats,
    Metric,
    NamespaceInfo,
    Record,
    RecordId,
    SearchResult,
    SnapshotInfo,
)
from .pool import Coordinator
from .results import Output


class AsyncLongbowClient:
    """Asyncio client; use `async with` or `await close()`. Takes `LongbowClient`'s arguments."""

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
        self._sync = LongbowClient(
            host, data_port, meta_port, api_key, timeout, retries, pool_size, coordinators=coordinators
        )

    async def __aenter__(self) -> AsyncLongbowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.to_thread(self._sync.close)

    async def create_namespace(
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
        """See `LongbowClient.create_namespace`."""
        return await asyncio.to_thread(
            lambda: self._sync.create_namespace(
                name,
                dim,
                metric,
                id_type=id_type,
                shards=shards,
                replication_factor=replication_factor,
                index=index,
            )
        )

    async def list_namespaces(self) -> list[NamespaceInfo]:
        """See `LongbowClient.list_namespaces`."""
        return await asyncio.to_thread(self._sync.list_namespaces)

    async def get_info(self, name: str) -> IndexStats:
        """See `LongbowClient.get_info`."""
        return await asyncio.to_thread(self._sync.get_info, name)

    async def delete_namespace(self, name: str) -> None:
        """See `LongbowClient.delete_namespace`."""
        await asyncio.to_thread(self._sync.delete_namespace, name)

    async def snapshot(self, name: str) -> SnapshotInfo:
        """See `LongbowClient.snapshot`."""
        return await asyncio.to_thread(self._sync.snapshot, name)

    async def list_snapshots(self, name: str | None = None) -> list[SnapshotInfo]:
        """See `LongbowClient.list_snapshots`."""
        return await asyncio.to_thread(self._sync.list_snapshots, name)

    async def restore_snapshot(
        self, name: str, snapshot: str, target: str | None = None, replace: bool = False
    ) -> str:
        """See `LongbowClient.restore_snapshot`."""
        return await asyncio.to_thread(self._sync.restore_snapshot, name, snapshot, target, replace)

    async def delete_snapshot(self, snapshot: str, name: str | None = None) -> None:
        """See `LongbowClient.delete_snapshot`."""
        await asyncio.to_thread(self._sync.delete_snapshot, snapshot, name)

    async def checkpoint(self, name: str) -> dict[str, Any]:
        """See `LongbowClient.checkpoint`."""
        return await asyncio.to_thread(self._sync.checkpoint, name)

    async def cluster_status(self) -> dict[str, Any]:
        """See `LongbowClient.cluster_status`."""
        return await asyncio.to_thread(self._sync.cluster_status)

    async def wait_until_ready(
        self,
        name: str,
        timeout: float | None = None,
        poll: float = 0.2,
        stall_timeout: float = 60.0,
        progress: bool | None = None,
    ) -> None:
        """See `LongbowClient.wait_until_ready`."""
        await asyncio.to_thread(self._sync.wait_until_ready, name, timeout, poll, stall_timeout, progress)

    async def insert(
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
        """See `LongbowClient.insert`."""
        return await asyncio.to_thread(
            lambda: self._sync.insert(
                namespace, data, ids, batch_size, parallelism, create=create, progress=progress
            )
        )

    async def search(
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
        """See `LongbowClient.search`."""
        return await asyncio.to_thread(
            lambda: self._sync._search(
                namespace, vector, k, filter, ef, columns, output, include_vectors, allow_partial, consistency
            )
        )

    async def search_by_id(
        self,
        namespace: str,
        id: RecordId,
        k: int = 10,
        filter: dict[str, Any] | list[Any] | None = None,
        ef: int | None = None,
        columns: Columns = None,
    ) -> list[SearchResult]:
        """See `LongbowClient.search_by_id`."""
        return await asyncio.to_thread(self._sync.search_by_id, namespace, id, k, filter, ef, columns)

    async def get(
        self,
        namespace: str,
        ids: Sequence[RecordId],
        include_vectors: bool = True,
        columns: Columns = "*",
    ) -> list[Record]:
        """See `LongbowClient.get`."""
        return await asyncio.to_thread(self._sync.get, namespace, ids, include_vectors, columns)

    async def delete(self, namespace: str, ids: Sequence[RecordId] | None = None, filter: Any = None) -> int:
        """See `LongbowClient.delete`."""
        return await asyncio.to_thread(self._sync.delete, namespace, ids, filter)
