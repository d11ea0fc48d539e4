"""The wire contract is strict, tested with a stock `pyarrow.flight` client: every action
body, ticket and command refuses a key it does not know with INVALID_ARGUMENT naming the key
and listing the accepted ones; aliases given with the same value are one key, with different
values an error naming both; a refused DoPut batch changes nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import Server

NS = "strict"
DIM = 4


@pytest.fixture(scope="module")
def conns(server: Server) -> Iterator[tuple[flight.FlightClient, flight.FlightClient]]:
    data = flight.connect(f"grpc://{server.host}:{server.data_port}")
    meta = flight.connect(f"grpc://{server.host}:{server.meta_port}")
    act(meta, "CreateNamespace", {"name": NS, "dim": DIM})
    put(data, NS, table(np.arange(10), tag=["a"] * 10))
    yield data, meta
    data.close()
    meta.close()


def act(meta: flight.FlightClient, name: str, body: Any) -> list[bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return [r.body.to_pybytes() for r in meta.do_action(flight.Action(name, raw))]


def table(ids: np.ndarray, dim: int = DIM, seed: int = 0, **payload: Any) -> pa.Table:
    v = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype("float32")
    cols: dict[str, Any] = {
        "id": pa.array(ids.astype("uint64")),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim),
    }
    cols.update(payload)
    return pa.table(cols)


def put(data: flight.FlightClient, ns: str, t: pa.Table) -> list[bytes]:
    writer, reader = data.do_put(flight.FlightDescriptor.for_path(ns), t.schema)
    acks = []
    try:
        for b in t.to_batches():
            writer.write_batch(b)
            acks.append(reader.read().to_pybytes())
        writer.done_writing()
    finally:
        writer.close()
    return acks


def query(dim: int = DIM) -> pa.Table:
    return pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(dim, "float32")), dim)})


def exchange(data: flight.FlightClient, cmd: bytes) -> pa.Table:
    writer, reader = data.do_exchange(flight.FlightDescriptor.for_command(cmd))
    try:
        q = query()
        writer.begin(q.schema)
        writer.write_table(q)
        writer.done_writing()
        return reader.read_all()
    finally:
        writer.close()


def ticket(data: flight.FlightClient, t: dict[str, Any]) -> pa.Table:
    return data.do_get(flight.Ticket(json.dumps(t).encode())).read_all()


def vector() -> list[float]:
    return [1.0] * DIM


Call = Callable[[flight.FlightClient, flight.FlightClient, dict[str, Any]], object]

# (what, a valid body, how to send it). Each body gets an unknown key added and must be refused.
CASES: list[tuple[str, dict[str, Any], Call]] = [
    ("CreateNamespace", {"name": "strict-new", "dim": DIM}, lambda d, m, b: act(m, "CreateNamespace", b)),
    ("DeleteNamespace", {"name": "strict-none"}, lambda d, m, b: act(m, "DeleteNamespace", b)),
    ("delete-dataset", {"dataset": "strict-none"}, lambda d, m, b: act(m, "delete-dataset", b)),
    ("ListNamespaces", {}, lambda d, m, b: act(m, "ListNamespaces", b)),
    ("GetTotalNamespaceCount", {}, lambda d, m, b: act(m, "GetTotalNamespaceCount", b)),
    ("GetNamespace", {"name": NS}, lambda d, m, b: act(m, "GetNamespace", b)),
    ("Delete", {"namespace": NS, "ids": [99]}, lambda d, m, b: act(m, "Delete", b)),
    ("VectorSearch", {"namespace": NS, "vector": vector()}, lambda d, m, b: act(m, "VectorSearch", b)),
    ("VectorSearchByID", {"namespace": NS, "id": 1}, lambda d, m, b: act(m, "VectorSearchByID", b)),
    ("check_readiness", {"namespace": NS}, lambda d, m, b: act(m, "check_readiness", b)),
    ("cluster-status", {}, lambda d, m, b: act(m, "cluster-status", b)),
    ("Snapshot", {"namespace": NS}, lambda d, m, b: act(m, "Snapshot", b)),
    ("ListSnapshots", {"namespace": NS}, lambda d, m, b: act(m, "ListSnapshots", b)),
    (
        "RestoreSnapshot",
        {"namespace": NS, "snapshot": "strict-none", "target": "strict-copy"},
        lambda d, m, b: act(m, "RestoreSnapshot", b),
    ),
    ("DeleteSnapshot", {"snapshot": "strict-none"}, lambda d, m, b: act(m, "DeleteSnapshot", b)),
    ("ForceSnapshot", {}, lambda d, m, b: act(m, "ForceSnapshot", b)),
    ("Checkpoint", {"namespace": NS}, lambda d, m, b: act(m, "Checkpoint", b)),
    (
        "AddCoordinator",
        {"node_id": 4, "address": "nowhere"},
        lambda d, m, b: act(m, "AddCoordinator", b),
    ),
    ("RemoveCoordinator", {"node_id": 99}, lambda d, m, b: act(m, "RemoveCoordinator", b)),
    ("DecommissionNode", {"node_id": 99}, lambda d, m, b: act(m, "DecommissionNode", b)),
    ("search ticket", {"namespace": NS, "vector": vector()}, lambda d, m, b: ticket(d, {"search": b})),
    ("get ticket", {"namespace": NS, "ids": [1]}, lambda d, m, b: ticket(d, {"get": b})),
    ("scan ticket", {"namespace": NS}, lambda d, m, b: ticket(d, {"scan": b})),
    ("ticket", {"name": NS, "limit": 1}, lambda d, m, b: ticket(d, b)),
    (
        "DoExchange search command",
        {"op": "search", "namespace": NS},
        lambda d, m, b: exchange(d, json.dumps(b).encode()),
    ),
    (
        "DoPut descriptor command",
        {"namespace": NS},
        lambda d, m, b: put_cmd(d, b),
    ),
    (
        "ListFlights criteria condition",
        {"field": "name", "op": "contains", "value": "s"},
        lambda d, m, b: list(m.list_flights(json.dumps(b).encode())),
    ),
    (
        "filter",
        {"field": "tag", "op": "=", "value": "a"},
        lambda d, m, b: ticket(d, {"scan": {"namespace": NS, "filter": b}}),
    ),
]


# Coordinator membership cannot change under `longbow local` (a group of one, no peer to add),
# and its shard nodes must stay: these base bodies are refused for what they say (a bad
# address, an unknown node id), which still shows the unknown key is refused before anything
# else is looked at.
REFUSED_HERE = {"AddCoordinator", "RemoveCoordinator", "DecommissionNode"}


def put_cmd(data: flight.FlightClient, body: dict[str, Any]) -> list[bytes]:
    t = table(np.arange(100, 102))
    writer, reader = data.do_put(flight.FlightDescriptor.for_command(json.dumps(body).encode()), t.schema)
    try:
        writer.write_table(t)
        writer.done_writing()
        return [reader.read().to_pybytes()]
    finally:
        writer.close()


@pytest.mark.parametrize(("what", "body", "call"), CASES, ids=[c[0] for c in CASES])
def test_a_valid_body_is_accepted_and_an_unknown_key_is_refused_by_name(
    conns: tuple[flight.FlightClient, flight.FlightClient], what: str, body: dict[str, Any], call: Call
) -> None:
    data, meta = conns
    if what in REFUSED_HERE:
        with pytest.raises(pa.ArrowInvalid) as base:
            call(data, meta, dict(body))
        assert "accepted keys" not in str(base.value), base.value
    else:
        # The base body is valid (a KeyError: valid, naming a namespace that does not exist).
        with contextlib.suppress(pa.ArrowKeyError):
            call(data, meta, dict(body))
    if what == "CreateNamespace":
        act(meta, "DeleteNamespace", {"name": "strict-new"})
    with pytest.raises(pa.ArrowInvalid) as info:
        call(data, meta, {**body, "bogus_key": 1})
    message = str(info.value)
    assert "bogus_key" in message, message
    if what != "filter":
        assert "accepted keys" in message, message


def test_every_action_listed_by_the_server_is_in_the_table(
    conns: tuple[flight.FlightClient, flight.FlightClient],
) -> None:
    _, meta = conns
    listed = {a.type for a in meta.list_actions()}
    covered = {c[0] for c in CASES}
    assert listed <= covered, listed - covered


def test_aliases_with_the_same_value_are_one_key_with_different_values_an_error(
    conns: tuple[flight.FlightClient, flight.FlightClient],
) -> None:
    _, meta = conns
    ok = json.loads(act(meta, "check_readiness", {"namespace": NS, "dataset": NS})[0])
    assert ok["status"] in ("READY", "BUSY")
    with pytest.raises(pa.ArrowInvalid) as info:
        act(meta, "check_readiness", {"namespace": NS, "dataset": "other"})
    assert "'namespace'" in str(info.value) and "'dataset'" in str(info.value)


def count(meta: flight.FlightClient, ns: str) -> int:
    return int(json.loads(act(meta, "GetNamespace", {"name": ns})[0])["count"])


def lsns(meta: flight.FlightClient, ns: str) -> list[int]:
    stats = json.loads(act(meta, "GetNamespace", {"name": ns})[0])
    return [s["replica"]["lsn"] for s in stats["per_shard"]]


def test_a_refused_batch_changes_nothing(conns: tuple[flight.FlightClient, flight.FlightClient]) -> None:
    data, meta = conns
    before, before_lsns = count(meta, NS), lsns(meta, NS)
    # 64 rows over both shards with a NaN in the last row only.
    v = np.random.default_rng(3).normal(size=(64, DIM)).astype("float32")
    v[63, 2] = np.nan
    bad = pa.table(
        {
            "id": pa.array(np.arange(1000, 1064, dtype="uint64")),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
        }
    )
    with pytest.raises(pa.ArrowInvalid, match=r"vector\[63\]"):
        put(data, NS, bad)
    assert count(meta, NS) == before
    assert lsns(meta, NS) == before_lsns


def test_a_refused_first_batch_creates_no_namespace(
    conns: tuple[flight.FlightClient, flight.FlightClient],
) -> None:
    data, meta = conns
    nulls = table(np.arange(3), tag=pa.array([None, None, None], type=pa.null()))
    with pytest.raises(pa.ArrowInvalid, match="tag"):
        put(data, "strict-never", nulls)
    names = json.loads(act(meta, "ListNamespaces", b"")[0])["namespaces"]
    assert "strict-never" not in names


def test_a_payload_column_named_score_is_stored_and_returned_beside_the_result_score(
    conns: tuple[flight.FlightClient, flight.FlightClient],
) -> None:
    data, _meta = conns
    t = table(
        np.arange(20),
        seed=5,
        score=pa.array(np.arange(20, dtype="float64")),
        text=[f"t{i}" for i in range(20)],
    )
    put(data, "strict-score", t)
    got = ticket(data, {"get": {"namespace": "strict-score", "ids": [3]}}).to_pylist()
    assert got[0]["score"] == 3.0 and got[0]["text"] == "t3"
    q = t.column("vector").combine_chunks()[3].values.to_pylist()
    hits = ticket(data, {"search": {"namespace": "strict-score", "vector": q, "k": 1, "columns": "*"}})
    assert hits.column_names[:4] == ["query_id", "id", "distance", "score"]
    row = hits.to_pylist()[0]
    assert row["id"] == 3 and row["payload.score"] == 3.0 and row["text"] == "t3"
