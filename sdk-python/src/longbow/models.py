"""Pydantic models for everything the SDK takes or returns. Inputs validate themselves
before anything is sent (dimension, finiteness, id type, k bounds)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import LongbowValidationError

Metric = Literal["l2", "cosine", "dot"]
IdType = Literal["uint64", "int64", "string"]
RecordId = int | str

MAX_K = 10_000


class Vector(BaseModel):
    """A dense vector of finite floats."""

    model_config = ConfigDict(frozen=True)

    values: list[float] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        for i, x in enumerate(v):
            if not math.isfinite(x):
                raise ValueError(f"vector[{i}] is {x}; values must be finite")
        return v

    @property
    def dim(self) -> int:
        return len(self.values)


class Record(BaseModel):
    """A stored record: id, vector and payload columns."""

    id: RecordId
    vector: list[float] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("id must be an integer or a string, not a boolean")
        if isinstance(v, np.integer):
            v = int(v)
        if isinstance(v, int) and not -(2**63) <= v < 2**64:
            raise ValueError(f"integer id {v} is outside -2**63..2**64-1")
        return v


class SearchResult(BaseModel):
    """One neighbour of a query."""

    id: RecordId
    distance: float
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    vector: list[float] | None = None


class NamespaceInfo(BaseModel):
    """What a namespace is."""

    name: str
    dimension: int
    metric: Metric
    id_type: IdType = "uint64"
    shards: int = 1


class ReplicaPosition(BaseModel):
    """Where one member of a shard's replica set stands."""

    node: int
    lsn: int
    lag: int
    live: bool


class ShardReplicas(BaseModel):
    """A shard's replica set: its primary, backups, in-sync members and epoch."""

    shard: int
    primary: int
    backups: list[int] = Field(default_factory=list)
    in_sync: list[int] = Field(default_factory=list)
    epoch: int
    replicas: list[ReplicaPosition] = Field(default_factory=list)


class IndexStats(BaseModel):
    """Statistics of a namespace."""

    name: str
    dimension: int
    metric: Metric
    id_type: IdType = "uint64"
    count: int
    deleted: int
    memory_bytes: int
    disk_bytes: int
    indexing_lag: int
    shards: int
    payload_columns: list[str] = Field(default_factory=list)
    replication_factor: int = 1
    replica_sets: list[ShardReplicas] = Field(default_factory=list)


class SnapshotShard(BaseModel):
    """One shard's part of a snapshot."""

    shard: int
    node: int
    lsn: int
    rows: int
    disk_bytes: int


class SnapshotInfo(BaseModel):
    """A snapshot of a namespace: every shard at a checkpoint."""

    snapshot: str
    namespace: str
    created_ms: int
    rows: int
    disk_bytes: int
    shards: list[SnapshotShard] = Field(default_factory=list)

    @property
    def created_at(self) -> datetime:
        """When it was taken (UTC)."""
        return datetime.fromtimestamp(self.created_ms / 1000, tz=timezone.utc)


class IndexOptions(BaseModel):
    """HNSW parameters of a namespace (each optional; the server's defaults fill the rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    m: int | None = Field(default=None, ge=2, le=128, description="neighbours per node on upper layers")
    ef_construction: int | None = Field(default=None, ge=1, le=10_000, description="build beam width")
    ef_search: int | None = Field(default=None, ge=1, le=10_000, description="default search beam width")

    def body(self) -> dict[str, int]:
        """The `index` object of a `CreateNamespace` body."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def check_k(k: int) -> int:
    """Validate a search's k."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise LongbowValidationError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
    return k
