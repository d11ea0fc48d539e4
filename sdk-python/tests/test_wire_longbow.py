"""Longbow 0.1's wire forms (the "Longbow 0.1 compatibility" table of `docs/client-api.md`),
each sent by a stock `pyarrow.flight` client exactly as Longbow 0.1 clients send them. The
test needs nothing outside the repository: it builds every request itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import Server

DS = "lb01"
N = 60
DIM = 4
HEADERS = flight.FlightCallOptions(headers=[(b"x-longbow-key", b"k1"), (b"x-longbow-global", b"true")])


def vectors() -> np.ndarray:
    return np.random.default_rng(11).normal(size=(N, DIM)).astype("float32")


@pytest.fixture(scope="module")
def conns(server: Server) -> Iterator[tuple[flight.FlightClient, flight.FlightClient]]:
    data = flight.connect(f"grpc://{server.host}:{server.data_port}")
    meta = flight.connect(f"grpc://{server.host}:{server.meta_port}")
    # Longbow's CreateNamespace carries no dim: the first DoPut fixes it.
    assert act(meta, "CreateNamespace", {"name": DS})["status"] == "created"
    v = vectors()
    t = pa.table(
        {
            "id": pa.array(np.arange(-30, 30, dtype="int64")),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
            "timestamp": pa.array(np.arange(N, dtype="int64"), type=pa.timestamp("ns")),
            "score": pa.array(np.arange(N, dtype="float64")),
            "text": [f"doc {i}" for i in range(N)],
            "price": pa.array(np.arange(N, dtype="int64")),
        }
    ).replace_schema_metadata({"longbow.metric": "euclidean"})
    writer, reader = data.do_put(flight.FlightDescriptor.for_path(DS), t.schema, HEADERS)
    writer.write_table(t)
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["rows"] == N
    writer.close()
    yield data, meta
    data.close()
    meta.close()


def act(meta: flight.FlightClient, name: str, body: Any = None) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    out = [r.body.to_pybytes() for r in meta.do_action(flight.Action(name, raw), HEADERS)]
    assert len(out) == 1, out
    return json.loads(out[0]) if out[0][:1] in (b"{", b"[") else out[0]


def get(data: flight.FlightClient, t: Any) -> pa.Table:
    raw = t if isinstance(t, bytes) else json.dumps(t).encode()
    return data.do_get(flight.Ticket(raw), HEADERS).read_all()


def test_put_with_embedding_int64_ids_and_metadata_columns(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    info = next(d for d in act(meta, "ListNamespaces")["details"] if d["name"] == DS)
    assert (info["dim"], info["id_type"], info["metric"]) == (DIM, "int64", "l2")


def test_scan_forms_return_stored_columns_with_vector(conns: tuple[Any, Any]) -> None:
    data, _ = conns
    plain = get(data, DS.encode())
    assert plain.num_rows == N and "vector" in plain.column_names and "score" in plain.column_names
    limited = get(data, {"name": DS, "limit": 5})
    assert limited.num_rows == 5
    f = get(data, {"dataset": DS, "filters": [{"field": "price", "operator": ">=", "value": "50"}]})
    assert sorted(f.column("price").to_pylist()) == list(range(50, 60))
    by_id = get(data, {"name": DS, "filters": [{"field": "id", "op": "<", "value": "-27"}]})
    assert sorted(by_id.column("id").to_pylist()) == [-30, -29, -28]


def test_filter_operators_and_logic(conns: tuple[Any, Any]) -> None:
    data, _ = conns
    f = [
        {
            "logic": "or",
            "filters": [
                {"field": "text", "op": "LIKE", "value": "doc 1"},
                {"field": "price", "op": "in", "value": [40, 41]},
            ],
        },
        {"field": "price", "op": "not in", "value": ["10"]},
    ]
    rows = get(data, {"name": DS, "filters": f}).column("price").to_pylist()
    assert sorted(rows) == [1, 11, 12, 13, 14, 15, 16, 17, 18, 19, 40, 41]


def test_search_ticket_answers_id_and_score(conns: tuple[Any, Any]) -> None:
    data, _ = conns
    v = vectors()
    t = get(data, {"search": {"dataset": DS, "vector": v[7].tolist(), "k": 3, "local_only": True}})
    assert t.column_names == ["id", "score"]
    assert t.column("id")[0].as_py() == -23
    with_vec = get(
        data, {"search": {"dataset": DS, "vector": v[7].tolist(), "k": 2, "include_vectors": True}}
    )
    assert with_vec.column_names == ["id", "score", "vector"]
    filtered = get(
        data,
        {
            "search": {
                "dataset": DS,
                "vector": v[7].tolist(),
                "k": 5,
                "filters": [{"field": "price", "op": ">", "value": 40}],
            }
        },
    )
    assert all(i >= 11 for i in filtered.column("id").to_pylist())


def test_hybrid_search_is_refused_not_answered_densely(conns: tuple[Any, Any]) -> None:
    data, _ = conns
    for extra in ({"text_query": "doc"}, {"alpha": 0.5}, {"graph_alpha": 0.3}):
        with pytest.raises(pa.ArrowNotImplementedError, match="hybrid"):
            get(data, {"search": {"dataset": DS, "vector": [0.0] * DIM, "k": 3, **extra}})


def test_vector_search_action_gives_one_result_per_query(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    v = vectors()
    body = {"dataset": DS, "vectors": [v[1].tolist(), v[2].tolist()], "k": 2}
    results = [
        r.body.to_pybytes() for r in meta.do_action(flight.Action("VectorSearch", json.dumps(body).encode()))
    ]
    tables = [pa.ipc.open_stream(r).read_all() for r in results]
    assert [t.column_names for t in tables] == [["id", "score"], ["id", "score"]]
    assert [t.column("id")[0].as_py() for t in tables] == [-29, -28]


def test_vector_search_by_id_with_a_string_id(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    r = act(meta, "VectorSearchByID", {"dataset": DS, "id": "-20", "k": 3})
    assert len(r["ids"]) == 3 and len(r["scores"]) == 3 and "-20" not in r["ids"]


def test_delete_action_deletes_and_refuses_an_unknown_id(conns: tuple[Any, Any]) -> None:
    data, meta = conns
    assert act(meta, "delete", {"dataset": DS, "id": "29"}) == b"deleted"
    assert get(data, {"get": {"namespace": DS, "ids": [29]}}).num_rows == 0
    with pytest.raises(pa.ArrowKeyError, match="29"):
        act(meta, "Delete", {"dataset": DS, "id": "29"})
    v = vectors()
    hits = get(data, {"search": {"dataset": DS, "vector": v[59].tolist(), "k": 5}})
    assert 29 not in hits.column("id").to_pylist()


def test_namespace_listing_counting_and_readiness(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    listed = act(meta, "ListNamespaces")
    assert DS in listed["namespaces"] and listed["count"] == len(listed["namespaces"])
    assert act(meta, "GetTotalNamespaceCount")["count"] == listed["count"]
    one = act(meta, "check_readiness", {"dataset": DS})
    assert one["status"] in ("READY", "BUSY")
    every = act(meta, "check_readiness")
    assert DS in every["namespaces"] and every["status"] in ("READY", "BUSY")
    assert act(meta, "check_readiness", {"dataset": "lb01-none"})["status"] == "NOT_FOUND"


def test_cluster_status_lists_members(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    s = act(meta, "cluster-status")
    assert s["self"]["Status"] == 0 and s["count"] == len(s["members"]) >= 3
    for m in s["members"]:
        assert {"ID", "Addr", "GRPCAddr", "MetaAddr", "Status"} <= set(m)


def test_do_exchange_vector_search_command(conns: tuple[Any, Any]) -> None:
    data, _ = conns
    v = vectors()
    q = pa.table(
        {
            "dataset": [DS],
            "k": pa.array([2], type=pa.int32()),
            "ef": pa.array([32], type=pa.int32()),
            "query_vector": pa.FixedSizeListArray.from_arrays(pa.array(v[4]), DIM),
        }
    )
    writer, reader = data.do_exchange(flight.FlightDescriptor.for_command(b"VectorSearch"))
    writer.begin(q.schema)
    writer.write_table(q)
    writer.done_writing()
    out = reader.read_all()
    writer.close()
    assert out.column_names == ["id", "score"] and out.column("id")[0].as_py() == -26


def test_do_exchange_ingest_acks_each_batch(conns: tuple[Any, Any]) -> None:
    data, _meta = conns
    v = np.random.default_rng(2).normal(size=(20, DIM)).astype("float32")
    t = pa.table(
        {
            "id": pa.array(np.arange(1000, 1020, dtype="int64")),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM),
        }
    )
    writer, reader = data.do_exchange(flight.FlightDescriptor.for_path("ingest", DS))
    writer.begin(t.schema)
    acks = []
    for b in t.to_batches(max_chunksize=10):
        writer.write_batch(b)
        chunk = reader.read_chunk()
        acks.append(json.loads(chunk.app_metadata.to_pybytes()))
    writer.done_writing()
    writer.close()
    assert acks == [
        {"status": "acked", "batch_id": 0, "rows": 10},
        {"status": "acked", "batch_id": 1, "rows": 10},
    ]
    assert get(data, {"get": {"namespace": DS, "ids": [1019]}}).num_rows == 1


def test_list_flights_criteria_and_flight_info(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    by_name = [
        f.descriptor.path[0].decode()
        for f in meta.list_flights(json.dumps({"field": "name", "op": "contains", "value": "lb0"}).encode())
    ]
    assert by_name == [DS]
    big = [
        f.descriptor.path[0].decode()
        for f in meta.list_flights(json.dumps({"field": "rows", "op": ">", "value": "50"}).encode())
    ]
    assert DS in big
    none = list(meta.list_flights(json.dumps({"field": "rows", "op": "<=", "value": "0"}).encode()))
    assert all(f.descriptor.path[0].decode() != DS for f in none)
    info = meta.get_flight_info(flight.FlightDescriptor.for_path(DS))
    assert info.total_records >= N - 1


def test_vector_element_types_and_complex_vectors(conns: tuple[Any, Any]) -> None:
    data, _meta = conns
    ints = pa.table(
        {
            "id": pa.array(["a", "b"]),
            "vector": pa.array([[1, 2, 3, 4], [4, 3, 2, 1]], type=pa.list_(pa.int8())),
        }
    ).replace_schema_metadata({"longbow.vector_type": "int8", "longbow.metric": "dot_product"})
    writer, reader = data.do_put(flight.FlightDescriptor.for_path("lb01-int8"), ints.schema)
    writer.write_table(ints)
    writer.done_writing()
    reader.read()
    writer.close()
    hit = get(data, {"search": {"dataset": "lb01-int8", "vector": [1, 2, 3, 4], "k": 1}})
    assert hit.column("id")[0].as_py() == "a"
    lying = ints.replace_schema_metadata({"longbow.vector_type": "float32"})
    writer, reader = data.do_put(flight.FlightDescriptor.for_path("lb01-int8"), lying.schema)
    with pytest.raises(pa.ArrowInvalid, match=r"longbow\.vector_type"):
        writer.write_table(lying)
        writer.done_writing()
        reader.read()
        writer.close()
    c = pa.table(
        {
            "id": pa.array([1], type=pa.uint64()),
            "vector": pa.array([[1.0, 0.5, 2.0, -1.0]], type=pa.list_(pa.float32())),
        }
    ).replace_schema_metadata({"longbow.complex": "true"})
    writer, reader = data.do_put(flight.FlightDescriptor.for_path("lb01-complex"), c.schema)
    writer.write_table(c)
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["rows"] == 1
    writer.close()


def test_delete_dataset_and_delete_namespace(conns: tuple[Any, Any]) -> None:
    data, meta = conns
    for name in ("lb01-a", "lb01-b"):
        act(meta, "CreateNamespace", {"name": name, "dim": 2})
    assert act(meta, "delete-dataset", {"dataset": "lb01-a"}) == b"deleted"
    # DeleteNamespace with {"dataset"} on the data port.
    out = [
        r.body.to_pybytes()
        for r in data.do_action(flight.Action("DeleteNamespace", json.dumps({"dataset": "lb01-b"}).encode()))
    ]
    assert json.loads(out[0])["status"] == "deleted"
    assert not {"lb01-a", "lb01-b"} & set(act(meta, "ListNamespaces")["namespaces"])


def test_force_snapshot_snapshots_every_namespace(conns: tuple[Any, Any]) -> None:
    _, meta = conns
    act(meta, "CreateNamespace", {"name": "lb01-snap", "dim": 2})
    out = act(meta, "ForceSnapshot")
    assert out["status"] == "snapshot created"
    listed = act(meta, "ListSnapshots", {"namespace": "lb01-snap"})
    assert listed["count"] == 1 and listed["snapshots"][0]["snapshot"] in out["snapshots"]
