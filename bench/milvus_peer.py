#!/usr/bin/env python3
"""Embedded Milvus 2.3.5 on the data bench/peers.py saved, run from Milvus' own virtual
environment (it pins its own pymilvus and numpy). Prints one JSON line: the time from the
first insert until searchable (HNSW built, collection loaded), the batch curve over the ef
sweep and single-query p50 / p99 at ef 64.

Usage (by bench/peers.py): V/bin/python bench/milvus_peer.py DIR METRIC '[16, 32, ...]'
Needs: python3 -m venv V && V/bin/pip install "milvus==2.3.5" "pymilvus<2.4" "numpy<2" "pandas<2.3" \
       "marshmallow<3.24" "environs<10"   (newer ones break pymilvus 2.3 on import)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

K = 10


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth.tolist())) / truth.size


def main() -> None:
    folder, metric, efs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    base = np.load(f"{folder}/base.npy")
    queries = np.load(f"{folder}/queries.npy")
    truth = np.load(f"{folder}/truth.npy")
    from milvus import default_server
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

    default_server.set_base_dir(f"{folder}/milvus")
    default_server.start()
    try:
        connections.connect(host="127.0.0.1", port=default_server.listen_port)
        mt = "L2" if metric == "l2" else "IP"
        schema = CollectionSchema([
            FieldSchema("id", DataType.INT64, is_primary=True),
            FieldSchema("vector", DataType.FLOAT_VECTOR, dim=base.shape[1]),
        ])
        col = Collection("peers", schema)
        t = time.perf_counter()
        for s in range(0, len(base), 10_000):
            col.insert([list(range(s, min(s + 10_000, len(base)))), base[s:s + 10_000]])
        col.flush()
        col.create_index("vector", {"index_type": "HNSW", "metric_type": mt,
                                    "params": {"M": 16, "efConstruction": 200}})
        utility.wait_for_index_building_complete("peers")
        col.load()
        searchable = time.perf_counter() - t

        def search(q: np.ndarray, ef: int) -> list[list[int]]:
            res = col.search(q, "vector", {"metric_type": mt, "params": {"ef": ef}}, limit=K)
            return [list(hits.ids) for hits in res]

        curve = []
        for ef in efs:
            t = time.perf_counter()
            found = []
            for s in range(0, len(queries), 100):
                found += search(queries[s:s + 100], ef)
            curve.append((ef, recall(found, truth), len(queries) / (time.perf_counter() - t)))
        search(queries[:1], 64)
        ms = []
        for q in queries:
            t = time.perf_counter()
            search(q[None, :], 64)
            ms.append((time.perf_counter() - t) * 1000)
        print(json.dumps({"searchable": searchable, "curve": curve,
                          "single_p50": float(np.percentile(ms, 50)),
                          "single_p99": float(np.percentile(ms, 99))}))
    finally:
        default_server.stop()


if __name__ == "__main__":
    main()
