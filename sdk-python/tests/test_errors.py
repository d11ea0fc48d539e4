"""Every error class against the real server: the SDK builds it from the server's error
metadata (`x-longbow-error-code`, `x-longbow-retryable`), never from message text, and each
carries `.code`, `.retryable` and `.status`."""

from __future__ import annotations

import json
import socket

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import Server

from longbow import (
    LongbowAlreadyExistsError,
    LongbowClient,
    LongbowConnectionError,
    LongbowDeadlineError,
    LongbowError,
    LongbowNotFoundError,
    LongbowResourceExhaustedError,
    LongbowUnimplementedError,
    LongbowValidationError,
)
from longbow.errors import from_flight

DIM = 4


def test_each_server_error_has_its_code_retry_flag_and_status(client: LongbowClient) -> None:
    client.create_namespace("err-codes", DIM)
    cases: list[tuple[type[LongbowError], str, bool, str, object]] = [
        (LongbowNotFoundError, "namespace_not_found", False, "NOT_FOUND", lambda: client.get_info("nope")),
        (
            LongbowAlreadyExistsError,
            "namespace_exists",
            False,
            "ALREADY_EXISTS",
            lambda: client.create_namespace("err-codes", DIM),
        ),
        (
            LongbowValidationError,
            "invalid_argument",
            False,
            "INVALID_ARGUMENT",
            lambda: client.insert("err-codes", {"id": 1, "vector": [1.0, 2.0]}),
        ),
        (
            LongbowUnimplementedError,
            "unimplemented",
            False,
            "UNIMPLEMENTED",
            lambda: client._action("NoSuchAction", {}),
        ),
    ]
    for cls, code, retryable, status, call in cases:
        with pytest.raises(cls) as info:
            call()  # type: ignore[operator]
        e = info.value
        assert (e.code, e.retryable, e.status) == (code, retryable, status), (cls, e)


def test_the_code_comes_from_metadata_not_from_the_message(server: Server) -> None:
    from longbow.errors import CallMetadata

    md = CallMetadata()
    md.code, md.retryable = "partial_write", True
    e = from_flight(flight.FlightUnavailableError("Flight returned not found error, with message: x"), md)
    assert isinstance(e, LongbowConnectionError)
    assert (e.code, e.retryable, e.status) == ("partial_write", True, "UNAVAILABLE")


def test_an_oversized_message_is_resource_exhausted(server: Server, client: LongbowClient) -> None:
    client.create_namespace("err-big", 256)
    rows = 70_000  # 70k x 256 float32 = 72 MB, over the 64 MiB message limit
    vectors = np.zeros((rows, 256), dtype="float32")
    table = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype="uint64")),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 256),
        }
    )
    with pytest.raises(LongbowResourceExhaustedError) as info:
        client.insert("err-big", table, batch_size=rows)
    assert info.value.retryable and info.value.code == "resource_exhausted"
    assert client.get_info("err-big").count == 0


def test_without_metadata_the_status_comes_from_the_exception_class() -> None:
    e = from_flight(flight.FlightTimedOutError("deadline"))
    assert isinstance(e, LongbowDeadlineError) and e.retryable and e.status == "DEADLINE_EXCEEDED"
    e = from_flight(
        pa.ArrowKeyError("Flight returned not found error, with message: namespace 'x' not found")
    )
    assert isinstance(e, LongbowNotFoundError) and str(e) == "namespace 'x' not found"


def test_no_server_is_a_retryable_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        LongbowClient("127.0.0.1", port, port, timeout=2, retries=0) as c,
        pytest.raises(LongbowConnectionError) as info,
    ):
        c.list_namespaces()
    assert info.value.retryable and info.value.status == "UNAVAILABLE"


def test_raw_flight_errors_carry_the_metadata_headers(server: Server) -> None:
    seen: list[dict[str, list[object]]] = []

    class Capture(flight.ClientMiddleware):  # type: ignore[misc]
        def received_headers(self, headers: dict[str, list[object]]) -> None:
            seen.append(headers)

    class Factory(flight.ClientMiddlewareFactory):  # type: ignore[misc]
        def start_call(self, info: object) -> Capture:
            return Capture()

    c = flight.FlightClient(f"grpc://{server.host}:{server.meta_port}", middleware=[Factory()])
    with pytest.raises(pa.ArrowKeyError) as info:
        list(c.do_action(flight.Action("GetNamespace", json.dumps({"name": "x" * 5000}).encode())))
    assert "5000 characters" in str(info.value) and len(str(info.value)) < 600
    merged = {k: v for h in seen for k, v in h.items()}
    assert merged["x-longbow-error-code"] == ["namespace_not_found"]
    assert merged["x-longbow-retryable"] == ["false"]
