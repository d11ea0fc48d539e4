#!/usr/bin/env python3
"""What a Python user sees: the Longbow SDK against `longbow local`, side by side with
pymilvus on Milvus Lite, on the same 100,000 x 384 vectors.

Measures insert rows/s (Longbow: numpy, pandas and Dask inputs; Milvus: list of dicts, its
documented input), batched search QPS (1,000 queries in one call) and single-query QPS
(200 calls), with recall@10 against brute force.

Usage: python3 bench/sdk_vs_milvus_lite.py
Needs: pip install "./sdk-python[pandas,dask]" pymilvus milvus-lite
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_local import start_local  # noqa: E402

N, DIM, NQ, SINGLE, K = 100_000, 384, 1_000, 200, 10
OUT = Path(__file__).resolve().parent / "out"


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(200, DIM)).astype(np.float32)
    scale = (0.97 ** np.arange(DIM)).astype(np.float32)
    def draw(n: int) -> np.ndarray:
        x = centers[rng.integers(0, 200, n)] + rng.normal(size=(n, DIM)).astype(np.float32) * scale * 0.6
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return draw(N), draw(NQ)


def truth(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), K), dtype=np.int64)
    for s in range(0, len(q), 250):
        sims = q[s:s + 250] @ base.T
        idx = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.take_along_axis(-sims, idx, 1).argsort(1)
        out[s:s + 250] = np.take_along_axis(idx, order, 1)
    return out


def recall(found: list[list[int]], gt: np.ndarray) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found, gt.tolist())) / gt.size


def longbow_side(base, queries, gt, host, dport, mport) -> dict:
    from longbow import LongbowClient

    import dask
    import dask.dataframe as dd

    dask.config.set({"dataframe.convert-string": False})
    r: dict = {}
    with LongbowClient(host, dport, mport, timeout=600) as c:
        for kind in ("numpy", "pandas", "dask"):
            ns = f"bench_{kind}"
            c.create_namespace(ns, DIM, metric="cosine")
            ids = np.arange(N)
            if kind == "numpy":
                payload = base
            else:
                payload = pd.DataFrame({"id": ids, "vector": list(base)})
                if kind == "dask":
                    payload = dd.from_pandas(payload, npartitions=10)
            t = time.perf_counter()
            rows = c.insert(ns, payload, ids=ids if kind == "numpy" else None, batch_size=10_000, parallelism=2)
            r[f"insert_{kind}"] = rows / (time.perf_counter() - t)
            if kind != "numpy":
                c.delete_namespace(ns)
        c.wait_until_ready("bench_numpy", timeout=600)
        t = time.perf_counter()
        res = c.search("bench_numpy", queries, k=K, ef=64)
        r["batch_qps"] = NQ / (time.perf_counter() - t)
        r["batch_recall"] = recall([[h.id for h in hits] for hits in res], gt)
        t = time.perf_counter()
        single = [[h.id for h in c.search("bench_numpy", queries[i], k=K, ef=64)] for i in range(SINGLE)]
        r["single_qps"] = SINGLE / (time.perf_counter() - t)
        r["single_recall"] = recall(single, gt[:SINGLE])
    return r


def milvus_side(base, queries, gt, tmp) -> dict:
    from pymilvus import MilvusClient

    r: dict = {}
    c = MilvusClient(str(Path(tmp) / "milvus.db"))
    c.create_collection("bench", dimension=DIM, metric_type="COSINE")
    t = time.perf_counter()
    for s in range(0, N, 10_000):
        c.insert("bench", [{"id": int(i), "vector": base[i].tolist()} for i in range(s, min(N, s + 10_000))])
    r["insert_dicts"] = N / (time.perf_counter() - t)
    t = time.perf_counter()
    res = c.search("bench", data=queries.tolist(), limit=K)
    r["batch_qps"] = NQ / (time.perf_counter() - t)
    r["batch_recall"] = recall([[h["id"] for h in hits] for hits in res], gt)
    t = time.perf_counter()
    single = [[h["id"] for h in c.search("bench", data=[queries[i].tolist()], limit=K)[0]] for i in range(SINGLE)]
    r["single_qps"] = SINGLE / (time.perf_counter() - t)
    r["single_recall"] = recall(single, gt[:SINGLE])
    c.close()
    return r


def main() -> None:
    base, queries = data()
    gt = truth(base, queries)
    with tempfile.TemporaryDirectory() as tmp:
        proc, data_uri, meta_uri = start_local(tmp)
        try:
            host, dport = data_uri.removeprefix("grpc://").rsplit(":", 1)
            mport = meta_uri.rsplit(":", 1)[1]
            lb = longbow_side(base, queries, gt, host, int(dport), int(mport))
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        mv = milvus_side(base, queries, gt, tmp)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {N:,} x {DIM} cosine (clustered, normalised); "
        f"k={K}; Longbow: longbow local with 2 shard nodes, ef 64; Milvus Lite: pymilvus MilvusClient defaults",
        "",
        "| | Longbow SDK | pymilvus + Milvus Lite |",
        "|---|---|---|",
        f"| insert rows/s, numpy | {lb['insert_numpy']:,.0f} | {mv['insert_dicts']:,.0f} (list of dicts, its input form) |",
        f"| insert rows/s, pandas | {lb['insert_pandas']:,.0f} | — |",
        f"| insert rows/s, Dask (10 partitions) | {lb['insert_dask']:,.0f} | — |",
        f"| batched search QPS (1,000 queries, one call) | {lb['batch_qps']:,.0f} (recall {lb['batch_recall']:.3f}) "
        f"| {mv['batch_qps']:,.0f} (recall {mv['batch_recall']:.3f}) |",
        f"| single search QPS (200 calls) | {lb['single_qps']:,.0f} (recall {lb['single_recall']:.3f}) "
        f"| {mv['single_qps']:,.0f} (recall {mv['single_recall']:.3f}) |",
    ]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "sdk_vs_milvus_lite.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
