"""Longbow: a Python client for the Longbow vector database (Arrow Flight)."""

from .async_client import AsyncLongbowClient
from .client import ConnectionPool, LongbowClient
from .errors import (
    LongbowAlreadyExistsError,
    LongbowAuthenticationError,
    LongbowConnectionError,
    LongbowError,
    LongbowNotFoundError,
    LongbowQueryError,
    LongbowResourceExhaustedError,
    LongbowTimeoutError,
    LongbowValidationError,
)
from .models import IndexStats, NamespaceInfo, Record, SearchResult, Vector

__version__ = "0.1.0"

__all__ = [
    "AsyncLongbowClient",
    "ConnectionPool",
    "IndexStats",
    "LongbowAlreadyExistsError",
    "LongbowAuthenticationError",
    "LongbowClient",
    "LongbowConnectionError",
    "LongbowError",
    "LongbowNotFoundError",
    "LongbowQueryError",
    "LongbowResourceExhaustedError",
    "LongbowTimeoutError",
    "LongbowValidationError",
    "NamespaceInfo",
    "Record",
    "SearchResult",
    "Vector",
]
