"""Turning user data (dicts, lists of dicts, numpy, pandas, pyarrow) into Arrow batches of
`id`, `vector` (FixedSizeList<float32>) and payload columns, with validation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import LongbowValidationError
from .models import IdType

VECTOR = "vector"
ID = "id"


def _fail(msg: str) -> LongbowValidationError:
    return LongbowValidationError(msg)


def as_matrix(vectors: Any, dim: int | None = None, name: str = "vector") -> np.ndarray:
    """A 2-D float32 array of finite values; `dim` is checked when given."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise _fail(f"{name}: not a numeric array ({e})") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise _fail(f"{name}: expected a 1-D or 2-D array of floats, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise _fail(f"{name}: has dimension {arr.shape[1]}, expected {dim}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise _fail(f"{name}[{row}]: contains NaN or infinity")
    return arr


def vector_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A FixedSizeList<float32> column from a 2-D array."""
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def _id_array(ids: Sequence[Any] | np.ndarray, id_type: IdType | None) -> pa.Array:
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        if id_type == "string":
            raise _fail("id: this namespace has string ids, got integers")
        if id_type == "int64" or (id_type is None and arr.dtype.kind == "i" and (arr < 0).any()):
            if arr.dtype.kind == "u" and (arr > np.iinfo(np.int64).max).any():
                raise _fail("id: an int64 namespace takes ids up to 2**63-1")
            return pa.array(arr.astype(np.int64), type=pa.int64())
        if arr.dtype.kind == "i" and (arr < 0).any():
            raise _fail("id: this namespace has uint64 ids; negative ids need an int64 namespace")
        return pa.array(arr.astype(np.uint64), type=pa.uint64())
    values = list(ids)
    if all(isinstance(v, str) for v in values):
        if id_type in ("uint64", "int64"):
            raise _fail(f"id: this namespace has {id_type} ids, got strings")
        return pa.array(values, type=pa.string())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        negative = any(v < 0 for v in values)
        dtype = np.int64 if negative or id_type == "int64" else np.uint64
        try:
            return _id_array(np.asarray(values, dtype=dtype), id_type)
        except OverflowError:
            raise _fail("id: an integer id does not fit 64 bits") from None
    raise _fail("id: ids must be all integers or all strings, without nulls")


def _normalise_table(table: pa.Table, dim: int | None, id_type: IdType | None) -> pa.Table:
    names = table.column_names
    if ID not in names:
        raise _fail("id: column is missing")
    if VECTOR not in names:
        raise _fail("vector: column is missing")
    col = table.column(VECTOR).combine_chunks()
    if (
        pa.types.is_fixed_size_list(col.type)
        or pa.types.is_list(col.type)
        or pa.types.is_large_list(col.type)
    ):
        if col.null_count:
            raise _fail("vector: contains null vectors")
        matrix = as_matrix(
            col.to_numpy(zero_copy_only=False).tolist()
            if not pa.types.is_fixed_size_list(col.type)
            else col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1),
            dim,
        )
    else:
        raise _fail(f"vector: column type {col.type} is not a list of floats")
    ids = table.column(ID).combine_chunks()
    if ids.null_count:
        raise _fail("id: contains nulls")
    id_arr = _id_array(ids.to_numpy(zero_copy_only=False), id_type)
    table = table.set_column(names.index(ID), ID, id_arr)
    table = table.set_column(table.column_names.index(VECTOR), VECTOR, vector_array(matrix))
    return table


def to_table(data: Any, ids: Any = None, dim: int | None = None, id_type: IdType | None = None) -> pa.Table:
    """Convert any supported input to a validated Arrow table."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return _normalise_table(data, dim, id_type)
    if isinstance(data, np.ndarray):
        if ids is None:
            raise _fail("ids: required when data is a numpy array")
        matrix = as_matrix(data, dim)
        if len(ids) != len(matrix):
            raise _fail(f"ids: {len(ids)} ids for {len(matrix)} vectors")
        return pa.table({ID: _id_array(ids, id_type), VECTOR: vector_array(matrix)})
    if isinstance(data, Mapping):
        data = [data]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        rows = list(data)
        if not rows:
            raise _fail("data: nothing to insert")
        if not all(isinstance(r, Mapping) for r in rows):
            raise _fail("data: expected dicts with 'id' and 'vector' keys")
        for i, r in enumerate(rows):
            if ID not in r or VECTOR not in r:
                raise _fail(f"data[{i}]: needs 'id' and 'vector'")
        matrix = as_matrix([r[VECTOR] for r in rows], dim)
        columns: dict[str, Any] = {
            ID: _id_array([r[ID] for r in rows], id_type),
            VECTOR: vector_array(matrix),
        }
        keys: list[str] = []
        for r in rows:
            for k in r:
                if k not in (ID, VECTOR) and k not in keys:
                    keys.append(k)
        for k in keys:
            try:
                columns[k] = pa.array([r.get(k) for r in rows])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise _fail(f"column '{k}': mixed or unsupported values ({e})") from None
        return pa.table(columns)
    if _is_pandas(data):
        if VECTOR not in data.columns or ID not in data.columns:
            raise _fail("DataFrame needs 'id' and 'vector' columns")
        if len(data) and isinstance(data[VECTOR].iloc[0], str):
            raise _fail(
                "vector: the column holds strings, not arrays (Dask converts object columns to strings "
                "unless dask.config.set({'dataframe.convert-string': False}))"
            )
        matrix = as_matrix(np.stack([np.asarray(v, dtype=np.float32) for v in data[VECTOR]]), dim)
        rest = data.drop(columns=[ID, VECTOR])
        table = pa.Table.from_pandas(rest, preserve_index=False) if len(rest.columns) else None
        cols: dict[str, Any] = {ID: _id_array(data[ID].to_numpy(), id_type), VECTOR: vector_array(matrix)}
        if table is not None:
            for name in table.column_names:
                cols[name] = table.column(name)
        return pa.table(cols)
    raise _fail(f"data: unsupported type {type(data).__name__}")


def _is_pandas(data: Any) -> bool:
    """Whether `data` is a pandas DataFrame (pandas is an optional dependency)."""
    return type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame"


def batches(table: pa.Table, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Slices of at most `batch_size` rows."""
    if batch_size < 1:
        raise _fail("batch_size must be at least 1")
    yield from table.to_batches(max_chunksize=batch_size)


def is_dask(data: Any) -> bool:
    """Whether `data` is a Dask DataFrame (without importing dask unless it is loaded)."""
    mod = type(data).__module__
    return mod.startswith("dask") and hasattr(data, "npartitions")
