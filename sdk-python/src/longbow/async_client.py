"""`AsyncLongbowClient`: the same methods as `LongbowClient`, for asyncio. Calls run on
worker threads over the sync client's thread-safe connection pool."""

from __future__ import annotations

import asyncio
from typing import Any

from .client import LongbowClient
from .models import IndexStats, NamespaceInfo, Record, SearchResult


class AsyncLongbowClient:
    """Asyncio client; use `async with` or `await close()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sync = LongbowClient(*args, **kwargs)

    async def __aenter__(self) -> AsyncLongbowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)

    async def create_namespace(
        self, name: str, dim: int, metric: str = "l2", **options: Any
    ) -> NamespaceInfo:
        return await asyncio.to_thread(self._sync.create_namespace, name, dim, metric, **options)

    async def list_namespaces(self) -> list[NamespaceInfo]:
        return await asyncio.to_thread(self._sync.list_namespaces)

    async def get_info(self, name: str) -> IndexStats:
        return await asyncio.to_thread(self._sync.get_info, name)

    async def delete_namespace(self, name: str) -> None:
        await asyncio.to_thread(self._sync.delete_namespace, name)

    async def snapshot(self, name: str) -> Any:
        return await asyncio.to_thread(self._sync.snapshot, name)

    async def cluster_status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._sync.cluster_status)

    async def wait_until_ready(self, name: str, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self._sync.wait_until_ready, name, timeout)

    async def insert(self, namespace: str, data: Any, **kwargs: Any) -> int:
        return await asyncio.to_thread(self._sync.insert, namespace, data, **kwargs)

    async def search(self, namespace: str, vector: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._sync.search, namespace, vector, **kwargs)

    async def search_by_id(
        self, namespace: str, id: int | str, k: int = 10, **kwargs: Any
    ) -> list[SearchResult]:
        return await asyncio.to_thread(self._sync.search_by_id, namespace, id, k, **kwargs)

    async def get(self, namespace: str, ids: list[int | str]) -> list[Record]:
        return await asyncio.to_thread(self._sync.get, namespace, ids)

    async def delete(self, namespace: str, ids: list[int | str] | None = None, filter: Any = None) -> int:
        return await asyncio.to_thread(self._sync.delete, namespace, ids, filter)
