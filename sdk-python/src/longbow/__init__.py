"""Longbow: a Python client for the Longbow vector database (Arrow Flight)."""

from .async_client import AsyncLongbowClient
from .client import LongbowClient
from .errors import (
    LongbowAlreadyExistsError,
    LongbowAuthenticationError,
    LongbowConnectionError,
    LongbowDeadlineError,
    LongbowError,
    LongbowNotFoundError,
    LongbowQueryError,
    LongbowResourceExhaustedError,
    LongbowTimeoutError,
    LongbowUnimplementedError,
    LongbowValidationError,
)
from .models import (
    IndexOptions,
    IndexStats,
    NamespaceInfo,
    Record,
    ReplicaPosition,
    SearchResult,
    ShardReplicas,
    SnapshotInfo,
    SnapshotShard,
    Vector,
)
from .pool import ConnectionPool, Coordinator

__version__ = "0.1.0"

__all__ = [
    "AsyncLongbowClient",
    "ConnectionPool",
    "Coordinator",
    "IndexOptions",
    "IndexStats",
    "LongbowAlreadyExistsError",
    "LongbowAuthenticationError",
    "LongbowClient",
    "LongbowConnectionError",
    "LongbowDeadlineError",
    "LongbowError",
    "LongbowNotFoundError",
    "LongbowQueryError",
    "LongbowResourceExhaustedError",
    "LongbowTimeoutError",
    "LongbowUnimplementedError",
    "LongbowValidationError",
    "NamespaceInfo",
    "Record",
    "ReplicaPosition",
    "SearchResult",
    "ShardReplicas",
    "SnapshotInfo",
    "SnapshotShard",
    "Vector",
]
