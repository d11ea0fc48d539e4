#!/usr/bin/env python3
"""End-to-end figures of `longbow local` through Arrow Flight, against hnswlib in-process.

Starts the release binary with 2 shard nodes on free ports, then for each data set:
  * ingest rate: DoPut in batches of 5,000 rows, time to the last acknowledgement (durable)
    and to READY (every row linked into the graphs);
  * batch search: all queries in one DoExchange, recall@10 and queries/s for a few ef;
  * hnswlib in this process on the same data, M and ef_construction, queried with all
    cores (knn_query on the whole query set), same ef.

Usage: python3 bench/e2e_local.py [--sets clustered-128,minilm-384] [--binary PATH]
Needs: pip install numpy pyarrow hnswlib
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hnsw_vs_hnswlib import SHARED, clustered, ground_truth, recall  # noqa: E402
from lifecycle import exchange, put_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
K = 10
EFS = [32, 64, 128]


def start_local(data_dir: str, binary: str | None) -> tuple[subprocess.Popen, str, str]:
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--bin", "longbow"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_BUILD_JOBS="2"), capture_output=True)
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        binary = str(target / "release" / "longbow")
    proc = subprocess.Popen(
        [binary, "local", "--data-dir", data_dir, "--shards", "2",
         "--data-port", "0", "--meta-port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, LONGBOW_LOG="warn"))
    line = proc.stdout.readline()
    words = line.split()
    data = words[words.index("data") + 1]
    meta = words[words.index("meta") + 1]
    return proc, data, meta


def action(client: fl.FlightClient, kind: str, body: dict) -> dict:
    res = next(client.do_action(fl.Action(kind, json.dumps(body).encode())))
    return json.loads(res.body.to_pybytes())


def vectors(a: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel(), type=pa.float32()), a.shape[1])


def run_set(name, base, queries, metric, data_uri, meta_uri, m, efc):
    data, meta = fl.connect(data_uri), fl.connect(meta_uri)
    action(meta, "CreateNamespace", {"name": name, "dim": base.shape[1], "metric": metric,
                                     "index": {"m": m, "ef_construction": efc, "ef_search": 64}})
    n = len(base)
    table = pa.table({"id": pa.array(np.arange(n, dtype=np.uint64)), "vector": vectors(base),
                      "group": pa.array(np.arange(n) % 100, type=pa.int64())})
    t0 = time.perf_counter()
    put_table(data, name, table)
    acked = time.perf_counter() - t0
    while action(meta, "check_readiness", {"namespace": name})["status"] != "READY":
        time.sleep(0.05)
    ready = time.perf_counter() - t0
    truth = ground_truth(base, queries, "l2" if metric == "l2" else "dot")
    q = pa.table({"vector": vectors(queries)})
    rows = []
    for ef in EFS:
        cmd = json.dumps({"op": "search", "namespace": name, "k": K, "ef": ef}).encode()
        t = time.perf_counter()
        res = exchange(data, cmd, q)
        secs = time.perf_counter() - t
        ids = res.column("id").to_numpy().reshape(len(queries), K)
        rows.append({"ef": ef, "recall": recall(ids, truth), "qps": len(queries) / secs})
    import hnswlib
    index = hnswlib.Index(space={"l2": "l2", "cosine": "cosine", "dot": "ip"}[metric], dim=base.shape[1])
    index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=42)
    index.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index.add_items(base, np.arange(n))
    hl_build = time.perf_counter() - t
    hl = []
    for ef in EFS:
        index.set_ef(ef)
        t = time.perf_counter()
        labels, _ = index.knn_query(queries, k=K)
        secs = time.perf_counter() - t
        hl.append({"ef": ef, "recall": recall(labels, truth), "qps": len(queries) / secs})
    return {"n": n, "dim": base.shape[1], "metric": metric, "acked": acked, "ready": ready,
            "longbow": rows, "hnswlib": hl, "hnswlib_build": hl_build}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="clustered-128,minilm-384")
    ap.add_argument("--binary", help="a built longbow binary (default: build this tree's release binary)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    report = [f"machine: {platform.machine()}, {os.cpu_count()} cores; longbow local with 2 shard nodes; "
              f"M=16 ef_construction=200 k={K}; queries sent as one batch", ""]
    with tempfile.TemporaryDirectory() as tmp:
        proc, data_uri, meta_uri = start_local(tmp, args.binary)
        try:
            for name in args.sets.split(","):
                if name == "clustered-128":
                    base, queries = clustered(100_000, 1_000, 128)
                    metric = "l2"
                else:
                    if not SHARED.exists():
                        continue
                    d = np.load(SHARED).astype(np.float32)
                    base, queries, metric = d[:-1000], d[-1000:], "cosine"
                r = run_set(name.replace("-", "_"), base, queries, metric, data_uri, meta_uri, 16, 200)
                report.append(f"### {name}: {r['n']:,} x {r['dim']} ({metric}), {len(queries):,} queries")
                report.append("")
                report.append(f"- ingest through DoPut (5,000-row batches): {r['n'] / r['acked']:,.0f} rows/s to the last "
                              f"durable ack ({r['acked']:.2f} s); {r['n'] / r['ready']:,.0f} rows/s to READY ({r['ready']:.2f} s); "
                              f"hnswlib in-process build: {r['hnswlib_build']:.2f} s")
                report.append("")
                report.append("| ef | Longbow recall@10 | Longbow QPS (batch, over Flight) | hnswlib recall@10 | hnswlib QPS (in-process, all cores) |")
                report.append("|---|---|---|---|---|")
                for a, b in zip(r["longbow"], r["hnswlib"]):
                    report.append(f"| {a['ef']} | {a['recall']:.3f} | {a['qps']:,.0f} | {b['recall']:.3f} | {b['qps']:,.0f} |")
                report.append("")
                print("\n".join(report[-8:]), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    (OUT / "e2e_local.md").write_text("\n".join(report) + "\n")
    print(f"report written to {OUT / 'e2e_local.md'}")


if __name__ == "__main__":
    main()
