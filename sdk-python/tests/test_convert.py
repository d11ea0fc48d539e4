"""Conversion and validation, without a server."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from longbow import LongbowValidationError, Record, Vector
from longbow.convert import as_matrix, to_table
from longbow.errors import (
    LongbowConnectionError,
    LongbowNotFoundError,
    from_flight,
)
from longbow.models import check_k


def test_list_of_dicts_becomes_id_vector_and_payload_columns() -> None:
    t = to_table([{"id": 1, "vector": [1, 2], "tag": "a"}, {"id": 2, "vector": [3, 4], "price": 2.5}])
    assert t.column_names == ["id", "vector", "tag", "price"]
    assert t.schema.field("vector").type == pa.list_(pa.float32(), 2)
    assert t.column("id").type == pa.uint64()
    assert t.column("tag").to_pylist() == ["a", None]


def test_numpy_needs_ids_and_matching_lengths() -> None:
    with pytest.raises(LongbowValidationError, match="ids"):
        to_table(np.zeros((2, 3)))
    with pytest.raises(LongbowValidationError, match="2 ids for 3 vectors"):
        to_table(np.zeros((3, 3)), ids=[1, 2])
    t = to_table(np.ones((3, 3)), ids=np.array([5, 6, 7]))
    assert t.column("id").to_pylist() == [5, 6, 7]


def test_pandas_and_arrow_inputs_are_normalised() -> None:
    df = pd.DataFrame({"id": ["a", "b"], "vector": [np.ones(2), np.zeros(2)], "n": [1, 2]})
    t = to_table(df)
    assert t.column("id").type == pa.string()
    assert t.column("n").to_pylist() == [1, 2]
    arrow = pa.table(
        {"id": pa.array([1], pa.int64()), "vector": pa.array([[1.0, 2.0]], pa.list_(pa.float64()))}
    )
    assert to_table(arrow).schema.field("vector").type == pa.list_(pa.float32(), 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected_with_their_row(bad: float) -> None:
    with pytest.raises(LongbowValidationError, match=r"vector\[1\]"):
        to_table([{"id": 1, "vector": [1, 1]}, {"id": 2, "vector": [bad, 1]}])
    with pytest.raises(ValueError):
        Vector(values=[1.0, bad])


def test_dimension_and_id_type_are_checked_against_the_namespace() -> None:
    with pytest.raises(LongbowValidationError, match="dimension 2, expected 3"):
        to_table([{"id": 1, "vector": [1, 2]}], dim=3)
    with pytest.raises(LongbowValidationError, match="string ids"):
        to_table([{"id": 1, "vector": [1, 2]}], id_type="string")
    with pytest.raises(LongbowValidationError, match="uint64 ids"):
        to_table([{"id": "x", "vector": [1, 2]}], id_type="uint64")
    with pytest.raises(LongbowValidationError, match="negative ids need an int64 namespace"):
        to_table(np.ones((1, 2)), ids=np.array([-1]), id_type="uint64")
    assert to_table(np.ones((1, 2)), ids=np.array([-1])).column("id").type == pa.int64()
    assert to_table([{"id": -5, "vector": [1, 2]}], id_type="int64").column("id").to_pylist() == [-5]


def test_k_bounds_and_record_ids() -> None:
    for bad in (0, 10_001, True, 2.5):
        with pytest.raises(ValueError):
            check_k(bad)  # type: ignore[arg-type]
    assert check_k(10) == 10
    assert Record(id=-1).id == -1  # int64 namespaces take negative ids
    with pytest.raises(ValueError):
        Record(id=2**64)
    with pytest.raises(ValueError):
        Record(id=True)
    assert as_matrix([1, 2, 3]).shape == (1, 3)


def test_flight_errors_map_to_the_hierarchy() -> None:
    def text(code: str) -> str:
        return (
            f"Flight returned {code} error, with message: namespace 'x' bad. gRPC client debug context: ..."
        )

    assert isinstance(from_flight(pa.ArrowKeyError(text("not found"))), LongbowNotFoundError)
    assert isinstance(from_flight(pa.ArrowInvalid(text("invalid argument"))), LongbowValidationError)
    err = from_flight(flight.FlightUnavailableError(text("unavailable")))
    assert isinstance(err, LongbowConnectionError) and err.retryable
    assert str(from_flight(pa.ArrowKeyError(text("not found")))) == "namespace 'x' bad"
