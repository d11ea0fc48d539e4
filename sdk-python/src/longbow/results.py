"""Turning server answers into what the SDK returns: namespace models and search results as
models, Arrow, pandas or Dask."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa

from . import convert
from .errors import LongbowValidationError
from .models import NamespaceInfo, SearchResult

Output = Literal["models", "arrow", "pandas", "dask"]
FIXED_COLUMNS = ("query_id", "id", "distance", "score", "vector")


def namespace_info(r: dict[str, Any]) -> NamespaceInfo:
    return NamespaceInfo(
        name=r["name"], dimension=r["dim"], metric=r["metric"], id_type=r["id_type"], shards=r["shards"]
    )


def row_count(data: Any) -> int | None:
    if convert.is_dask(data):
        return None
    if isinstance(data, dict):
        return 1
    try:
        return len(data)
    except TypeError:
        return None


def shape(table: pa.Table, output: Output, queries: int, single: bool) -> Any:
    if output == "arrow":
        return table
    if output == "pandas":
        return table.to_pandas()
    if output == "dask":
        import dask.dataframe as dd

        return dd.from_pandas(table.to_pandas(), npartitions=1)  # type: ignore[no-untyped-call]
    if output != "models":
        raise LongbowValidationError(f"output must be models, arrow, pandas or dask, got {output!r}")
    meta_cols = [c for c in table.column_names if c not in FIXED_COLUMNS]
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
