#!/usr/bin/env python3
"""Ingest through one DoPut stream of `longbow local --shards 2`, against hnswlib's build.

For each build (and `--baseline`, started beside it so both run on the same machine in one
go) and each ack window, a fresh namespace (cosine, M 16, ef_construction 200) gets the
whole data set through one DoPut stream in batches of `--batch` rows:

  window 1   the client waits for each batch's acknowledgement before sending the next;
  window 8   the client keeps sending while acknowledgements come back, at most 8 ahead
             (what the SDK does).

It reports rows/s to the last acknowledgement (every batch durable: fsynced on its shard)
and the time until READY (every row linked into the graphs), then builds hnswlib on the same
data in this process with all cores, and prints the ratio READY / hnswlib build.

With --search, it measures instead what a heavy ingest does to searches: single-query
latency (one query per DoExchange call, ef 64) on a READY namespace of the real embeddings
(or --rows clustered rows) while idle, then while one stream ingests --rows clustered 384-d
rows into another namespace, until that one is READY (writes and indexing both running).

Usage: python3 bench/ingest.py [--set minilm-384|clustered-384] [--rows 200000] [--batch 5000]
                               [--windows 1,8] [--binary B] [--baseline B0] [--repeat 2]
       python3 bench/ingest.py --search [--rows 200000] [--binary B] [--baseline B0]
Data: minilm-384 is the real 384-d sentence embeddings in ../shared/data when present;
otherwise (or with --set clustered-384) --rows clustered synthetic 384-d rows, normalised.
Needs: pip install numpy pyarrow hnswlib
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hnsw_vs_hnswlib import SHARED, clustered  # noqa: E402
from lifecycle import Local, build, put_table, search_ms, vector_column, write_report  # noqa: E402


def data_set(name: str, rows: int) -> np.ndarray:
    if name == "minilm-384" and SHARED.exists():
        return np.load(SHARED).astype(np.float32)[:rows]
    base, _ = clustered(rows, 1, 384)
    return (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)


def ingest(local: Local, ns: str, base: np.ndarray, batch: int, window: int) -> tuple[float, float]:
    """(seconds to the last ack, seconds to READY) of one DoPut stream of `base` into `ns`."""
    local.action("CreateNamespace", {"name": ns, "dim": base.shape[1], "metric": "cosine",
                                     "index": {"m": 16, "ef_construction": 200, "ef_search": 64}})
    table = pa.table({"id": pa.array(np.arange(len(base), dtype=np.uint64)), "vector": vector_column(base)})
    t = time.perf_counter()
    put_table(local.data, ns, table, batch, window)
    acked = time.perf_counter() - t
    local.wait_ready(ns)
    return acked, time.perf_counter() - t


def percentile(ms: list[float], p: float) -> float:
    return float(np.percentile(np.array(ms), p))


def search_under_ingest(local: Local, searched: np.ndarray, heavy: np.ndarray, batch: int,
                        tag: str) -> dict[str, float]:
    """Single-query latency on a READY namespace, idle and during a heavy ingest elsewhere."""
    ingest(local, f"{tag}_searched", searched, batch, 8)
    queries = searched[:2_000] + np.float32(0.01)
    idle = search_ms(local.data, f"{tag}_searched", queries[:1_000])
    done = threading.Event()
    result: dict[str, float] = {}

    def heavy_ingest() -> None:
        try:
            acked, ready = ingest(local, f"{tag}_heavy", heavy, batch, 8)
            result.update(acked=acked, ready=ready)
        finally:
            done.set()

    t = threading.Thread(target=heavy_ingest)
    t.start()
    busy: list[float] = []
    started = time.perf_counter()
    while not done.is_set() and time.perf_counter() - started < 600:
        busy += search_ms(local.data, f"{tag}_searched", queries[len(busy) % 1_000:][:50])
    t.join()
    return {"idle_p50": percentile(idle, 50), "idle_p99": percentile(idle, 99),
            "busy_p50": percentile(busy, 50), "busy_p99": percentile(busy, 99),
            "busy_n": len(busy), **result}


def hnswlib_build(base: np.ndarray) -> float:
    import hnswlib
    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=42)
    index.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="minilm-384", choices=["minilm-384", "clustered-384"])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--windows", default="1,8")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--binary")
    ap.add_argument("--baseline", help="a second build, measured beside the first in the same run")
    ap.add_argument("--search", action="store_true", help="search latency during a heavy ingest")
    args = ap.parse_args()
    if args.search:
        return search_main(args)
    base = data_set(args.set, args.rows)
    builds = [("this build", args.binary or build())]
    if args.baseline:
        builds.insert(0, ("baseline", args.baseline))
    windows = [int(w) for w in args.windows.split(",")]
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        locals_ = [(label, Local(binary, f"{tmp}/{i}", {})) for i, (label, binary) in enumerate(builds)]
        try:
            for rep in range(args.repeat):
                for window in windows:
                    for label, local in locals_:
                        acked, ready = ingest(local, f"ingest_{rep}_{window}", base, args.batch, window)
                        rows.append((label, window, acked, ready))
                        print(f"{label:>10} window {window}: {len(base) / acked:,.0f} rows/s acked, "
                              f"READY {ready:.2f} s", flush=True)
        finally:
            for _, local in locals_:
                local.stop()
    hl = hnswlib_build(base)
    report = [(f"machine: {platform.machine()}, {os.cpu_count()} cores; longbow local --shards 2; "
               f"{args.set}: {len(base):,} x {base.shape[1]} (cosine), M 16, ef_construction 200, "
               f"one DoPut stream in batches of {args.batch:,}"), "",
              "| build | ack window | rows/s to the last durable ack | to READY | READY ÷ hnswlib build |",
              "|---|---|---|---|---|"]
    for label, window, acked, ready in rows:
        report.append(f"| {label} | {window} | {len(base) / acked:,.0f} | {ready:.2f} s | {ready / hl:.2f} |")
    report += ["", f"hnswlib build in-process, {os.cpu_count()} threads, same run: {hl:.2f} s"]
    write_report(f"ingest-{args.set}.md", report)


def search_main(args: argparse.Namespace) -> None:
    searched = data_set("minilm-384", 50_000)
    heavy = data_set("clustered-384", args.rows)
    builds = [("this build", args.binary or build())]
    if args.baseline:
        builds.insert(0, ("baseline", args.baseline))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, binary) in enumerate(builds):
            # One build at a time: the other's background work would load the machine.
            local = Local(binary, f"{tmp}/{i}", {})
            try:
                r = search_under_ingest(local, searched, heavy, args.batch, f"s{i}")
            finally:
                local.stop()
            out.append((label, r))
            print(label, {k: round(v, 3) for k, v in r.items()}, flush=True)
    report = [(f"machine: {platform.machine()}, {os.cpu_count()} cores; longbow local --shards 2; "
               f"searched: {len(searched):,} x 384 real embeddings, READY; heavy ingest: one DoPut "
               f"stream (8 ahead) of {len(heavy):,} x 384 clustered rows into another namespace, "
               "until READY; single queries, ef 64"), "",
              ("| build | idle p50 | idle p99 | during ingest p50 | during ingest p99 | p99 ratio | "
               "queries during | ingest rows/s acked | to READY |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for label, r in out:
        report.append(f"| {label} | {r['idle_p50']:.2f} ms | {r['idle_p99']:.2f} ms | "
                      f"{r['busy_p50']:.2f} ms | {r['busy_p99']:.2f} ms | "
                      f"{r['busy_p99'] / r['idle_p99']:.2f} | {r['busy_n']:,} | "
                      f"{len(heavy) / r['acked']:,.0f} | {r['ready']:.1f} s |")
    write_report("search-under-ingest.md", report)


if __name__ == "__main__":
    main()
