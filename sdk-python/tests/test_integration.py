"""The SDK against the real `longbow local`: lifecycle with every input and output kind,
error mapping against the server and against no server."""

from __future__ import annotations

import asyncio
import socket
import threading

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from longbow import (
    AsyncLongbowClient,
    IndexOptions,
    LongbowAlreadyExistsError,
    LongbowClient,
    LongbowConnectionError,
    LongbowNotFoundError,
    LongbowValidationError,
    SearchResult,
)

DIM = 8


def vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype("float32")


def test_lifecycle_with_every_input_and_output_kind(client: LongbowClient) -> None:
    ns = "life"
    info = client.create_namespace(
        ns, DIM, metric="l2", shards=2, index=IndexOptions(m=16, ef_construction=100)
    )
    assert info.dimension == DIM and info.shards == 2
    assert any(n.name == ns for n in client.list_namespaces())

    base = vecs(600, 1)
    total = 0
    total += client.insert(ns, {"id": 0, "vector": base[0].tolist(), "tag": "dict"})
    total += client.insert(ns, [{"id": i, "vector": base[i].tolist(), "tag": "list"} for i in range(1, 100)])
    total += client.insert(ns, base[100:200], ids=np.arange(100, 200))
    total += client.insert(
        ns, pd.DataFrame({"id": np.arange(200, 300), "vector": list(base[200:300]), "tag": "pandas"})
    )
    dask.config.set({"dataframe.convert-string": False})  # keep vectors as arrays
    ddf = dd.from_pandas(
        pd.DataFrame({"id": np.arange(300, 400), "vector": list(base[300:400]), "tag": "dask"}), npartitions=4
    )
    total += client.insert(ns, ddf)
    arrow = pa.table(
        {
            "id": pa.array(np.arange(400, 600, dtype="uint64")),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(base[400:600].ravel()), DIM),
            "tag": pa.array(["arrow"] * 200),
        }
    )
    total += client.insert(ns, arrow, batch_size=50, parallelism=3)
    assert total == 600
    client.wait_until_ready(ns, timeout=60)
    stats = client.get_info(ns)
    assert stats.count == 600 and stats.dimension == DIM and stats.shards == 2

    # models: 1-D gives one list, 2-D one list per query
    hits = client.search(ns, base[5], k=3, columns=["tag"])
    assert isinstance(hits[0], SearchResult)
    assert hits[0].id == 5 and hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert hits[0].metadata == {"tag": "list"}
    many = client.search(ns, base[[150, 250]], k=2)
    assert [m[0].id for m in many] == [150, 250]
    table = client.search(ns, base[[350, 450]], k=2, output="arrow")
    assert table.column("query_id").to_pylist() == [0, 0, 1, 1]
    df = client.search(ns, base[[350]], k=2, output="pandas")
    assert df["id"].iloc[0] == 350
    ddf_out = client.search(ns, base[[451]], k=2, output="dask")
    assert ddf_out.compute()["id"].iloc[0] == 451
    filtered = client.search(
        ns, base[5], k=5, filter={"field": "tag", "op": "=", "value": "dask"}, columns=["tag"]
    )
    assert len(filtered) == 5 and all(h.metadata["tag"] == "dask" for h in filtered)

    neighbours = client.search_by_id(ns, 42, k=4)
    assert len(neighbours) == 4 and all(n.id != 42 for n in neighbours)

    everything = client.search(ns, base[5], k=1, columns="*")
    assert everything[0].metadata == {"tag": "list"}
    assert client.search(ns, base[5], k=1, allow_partial=True)[0].id == 5

    records = client.get(ns, [7, 599, 12345])
    assert [r.id for r in records] == [7, 599]
    assert records[0].vector == pytest.approx(base[7].tolist())
    assert records[1].metadata["tag"] == "arrow"

    assert client.delete(ns, ids=[7, 8]) == 2
    assert client.delete(ns, filter={"field": "tag", "op": "=", "value": "pandas"}) == 100
    assert client.get(ns, [7]) == []
    assert all(h.id != 7 for h in client.search(ns, base[7], k=5))
    assert client.get_info(ns).count == 498

    client.delete_namespace(ns)
    with pytest.raises(LongbowNotFoundError):
        client.get_info(ns)


def test_errors_from_the_server_are_mapped(client: LongbowClient) -> None:
    client.create_namespace("errs", DIM)
    with pytest.raises(LongbowAlreadyExistsError):
        client.create_namespace("errs", DIM)
    with pytest.raises(LongbowNotFoundError):
        client.get_info("missing")
    with pytest.raises(LongbowValidationError, match="dimension 3, expected 8"):
        client.insert("errs", {"id": 1, "vector": [1, 2, 3]})
    with pytest.raises(LongbowValidationError, match="filter"):
        client.insert("errs", {"id": 1, "vector": vecs(1, 2)[0].tolist(), "tag": "a"})
        client.search("errs", vecs(1, 3)[0], filter={"field": "tag", "op": "~", "value": 1})
    with pytest.raises(LongbowValidationError):
        client.search("errs", vecs(1, 3)[0], k=0)
    with pytest.raises(LongbowNotFoundError, match="snapshot"):
        client.restore_snapshot("errs", "no-such-snapshot", target="errs-copy")
    with pytest.raises(LongbowNotFoundError, match="create=True"):
        client.insert("errs-typo", {"id": 1, "vector": vecs(1, 2)[0].tolist()})
    assert client.insert("errs-new", {"id": 1, "vector": vecs(1, 2)[0].tolist()}, create=True) == 1
    assert client.get_info("errs-new").dimension == DIM
    assert client.cluster_status()["coordinator"]["raft_leader"] == 1


def test_no_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        LongbowClient("127.0.0.1", port, port, timeout=2, retries=1) as c,
        pytest.raises(LongbowConnectionError),
    ):
        c.list_namespaces()


def test_client_is_safe_to_share_across_threads(client: LongbowClient) -> None:
    client.create_namespace("threads", DIM)
    base = vecs(400, 5)
    errors: list[BaseException] = []

    def work(lo: int) -> None:
        try:
            client.insert("threads", base[lo : lo + 100], ids=np.arange(lo, lo + 100))
            assert client.search("threads", base[lo], k=1)[0].id == lo
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(lo,)) for lo in range(0, 400, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert client.get_info("threads").count == 400


def test_async_client_has_the_same_methods(server: object) -> None:
    srv = server  # the session fixture

    async def run() -> None:
        async with AsyncLongbowClient(srv.host, srv.data_port, srv.meta_port) as c:  # type: ignore[attr-defined]
            await c.create_namespace("async", DIM)
            base = vecs(50, 9)
            assert await c.insert("async", base, ids=np.arange(50)) == 50
            hits = await c.search("async", base[3], k=1)
            assert hits[0].id == 3
            assert [r.id for r in await c.get("async", [3])] == [3]
            assert await c.delete("async", ids=[3]) == 1

    asyncio.run(run())


def test_a_snapshot_restores_exactly_its_records(client: LongbowClient) -> None:
    client.create_namespace("snap", DIM, shards=2)
    v = vecs(300, 11)
    client.insert("snap", [{"id": i, "vector": v[i].tolist(), "tag": "old"} for i in range(200)])
    snap = client.snapshot("snap")
    assert (snap.namespace, snap.rows, len(snap.shards)) == ("snap", 200, 2)
    assert snap.created_at.year >= 2024
    # After the snapshot: new records, replaced records, deleted records.
    client.insert("snap", [{"id": i, "vector": v[i].tolist(), "tag": "new"} for i in range(100, 300)])
    client.delete("snap", ids=list(range(10)))
    assert [s.snapshot for s in client.list_snapshots("snap")] == [snap.snapshot]
    assert client.restore_snapshot("snap", snap.snapshot, target="snap-copy") == "snap-copy"
    restored = client.get("snap-copy", list(range(300)))
    assert sorted(r.id for r in restored) == list(range(200))
    assert {r.metadata["tag"] for r in restored} == {"old"}
    with pytest.raises(LongbowAlreadyExistsError):
        client.restore_snapshot("snap", snap.snapshot)
    client.restore_snapshot("snap", snap.snapshot, replace=True)
    assert client.get_info("snap").count == 200
    assert client.checkpoint("snap")["namespace"] == "snap"
    client.delete_snapshot(snap.snapshot, "snap")
    assert client.list_snapshots("snap") == []
    assert client.get_info("snap-copy").count == 200


def test_stats_show_each_shards_replica_set(client: LongbowClient) -> None:
    client.create_namespace("replica-sets", 4, shards=2, replication_factor=1)
    client.insert("replica-sets", [{"id": i, "vector": [float(i), 0.0, 0.0, 1.0]} for i in range(20)])
    stats = client.get_info("replica-sets")
    assert stats.replication_factor == 1
    assert [s.shard for s in stats.replica_sets] == [0, 1]
    for s in stats.replica_sets:
        assert s.in_sync == [s.primary] and s.backups == [] and s.epoch >= 1
        assert [(r.node, r.lag, r.live) for r in s.replicas] == [(s.primary, 0, True)]
    with pytest.raises(LongbowValidationError, match="replication_factor"):
        client.create_namespace("too-many", 4, replication_factor=9)
    client.delete_namespace("replica-sets")


def test_a_replicated_namespace_answers_from_any_in_sync_replica_or_from_the_primary(
    client: LongbowClient,
) -> None:
    client.create_namespace("replicated", 4, shards=2, replication_factor=2)
    client.insert("replicated", [{"id": i, "vector": [float(i), 1.0, 0.0, 1.0]} for i in range(50)])
    stats = client.get_info("replicated")
    assert stats.replication_factor == 2
    for s in stats.replica_sets:
        assert len(s.backups) == 1 and sorted(s.in_sync) == sorted([s.primary, *s.backups])
    for consistency in ("any", "primary"):
        for _ in range(4):  # "any" rotates over the replicas: each of them answers
            hits = client.search("replicated", [7.0, 1.0, 0.0, 1.0], k=1, consistency=consistency)
            assert hits[0].id == 7
    with pytest.raises(LongbowValidationError, match="consistency"):
        client.search("replicated", [7.0, 1.0, 0.0, 1.0], consistency="nearest")  # type: ignore[arg-type]
    client.delete_namespace("replicated")


def test_one_insert_sends_batches_ahead_and_the_server_applies_them_in_order(
    client: LongbowClient,
) -> None:
    # 20 batches of the same 50 ids, sent up to 8 ahead of their acknowledgements: every id
    # ends with the last batch's version, and every batch counts once.
    client.create_namespace("ordered", DIM, shards=2)
    v = vecs(50, 3)
    rounds = 20
    rows = [{"id": i, "vector": v[i].tolist(), "round": r} for r in range(rounds) for i in range(50)]
    assert client.insert("ordered", rows, batch_size=50) == 50 * rounds
    got = client.get("ordered", list(range(50)))
    assert sorted(r.id for r in got) == list(range(50))
    assert {r.metadata["round"] for r in got} == {rounds - 1}
    assert client.get_info("ordered").count == 50
