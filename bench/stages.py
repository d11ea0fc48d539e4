#!/usr/bin/env python3
"""Where a single-query search spends its time, layer by layer, in one run.

Starts `longbow local --shards 2` (release binary), loads a data set, and times the same
held-out queries, one query per call, through every layer a search crosses:

  flight floor    `list_actions` on the coordinator's data port: a pyarrow Flight round
                  trip with no work behind it
  shard direct    DoExchange straight to one shard node (its internal search API): shard
                  decode, HNSW search, encode, plus one Flight round trip
  coordinator     DoExchange to the coordinator: client decode, fan-out to both shards,
                  merge, encode (the stock pyarrow client)
  coordinator DoGet  the Longbow 0.1 form: the query as JSON in a DoGet ticket (default ef,
                  which is 64)
  sdk             `LongbowClient.search` (the SDK on top of the DoExchange call)
  hnswlib         one in-process `knn_query` per query (the engine floor of a peer)

The layers are interleaved query by query, so a slow spell of the noisy machine hits each
alike. The coordinator's own view comes from its /metrics: the mean fan-out time (all shard
calls of one search, as the coordinator waits for them) and the mean per-replica call time.
With `--perf`, `perf record` samples the server process during a further coordinator pass,
and the hottest symbols are printed.

Usage: python3 bench/stages.py [--set minilm-384|clustered-384] [--rows 50000] [--queries 1000]
                               [--ef 64] [--binary B] [--baseline B0] [--perf]
--baseline starts a second build beside the first and interleaves its layers with the
first's, query by query, so two builds are compared in one run.
Data: minilm-384 is the real 384-d sentence embeddings in ../shared/data when present;
otherwise (or with --set clustered-384) --rows clustered synthetic 384-d rows, normalised.
Needs: pip install numpy pyarrow hnswlib, and the SDK (pip install -e sdk-python)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hnsw_vs_hnswlib import SHARED, clustered  # noqa: E402
from lifecycle import Local, build, exchange, put_table, write_report  # noqa: E402
from lifecycle import vector_column as vectors  # noqa: E402

K = 10
NS = "stages"


def metric_sums(http: str, name: str) -> tuple[float, float]:
    """(sum, count) of histogram `name` over every label set, from /metrics at `http`."""
    text = urllib.request.urlopen(f"http://{http.removeprefix('http://')}/metrics", timeout=10).read().decode()
    total = count = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}_(sum|count)(\{{.*\}})? ([0-9.e+-]+)$", line)
        if m:
            if m.group(1) == "sum":
                total += float(m.group(3))
            else:
                count += float(m.group(3))
    return total, count


def load(local: Local, base: np.ndarray, metric: str) -> None:
    local.action("CreateNamespace", {"name": NS, "dim": base.shape[1], "metric": metric,
                                     "index": {"m": 16, "ef_construction": 200, "ef_search": 64}})
    table = pa.table({"id": pa.array(np.arange(len(base), dtype=np.uint64)), "vector": vectors(base)})
    put_table(local.data, NS, table)
    local.wait_ready(NS)


def layers(local: Local, ef: int, hnsw: object) -> dict[str, Callable[[np.ndarray, int], object]]:
    """One timed call per layer: each takes a query and its index."""
    from longbow import LongbowClient

    status = local.action("cluster-status", {})
    nodes = [fl.connect(f"grpc://{n['address'].removeprefix('grpc://')}") for n in status["shard_nodes"]]
    shards = int(local.action("GetNamespace", {"name": NS})["shards"])
    per_shard = [json.dumps({"op": "search", "namespace": NS, "shard": s, "k": K, "ef": ef}).encode()
                 for s in range(shards)]
    probe = pa.table({"vector": vectors(np.zeros((1, hnsw.dim), dtype=np.float32) + 0.1)})  # type: ignore[attr-defined]

    def holder(s: int) -> fl.FlightClient:
        for node in nodes:
            try:
                exchange(node, per_shard[s], probe)
                return node
            except (fl.FlightError, pa.ArrowException):
                continue
        raise RuntimeError(f"no shard node holds shard {s}")

    holders = [holder(s) for s in range(shards)]
    coord = json.dumps({"op": "search", "namespace": NS, "k": K, "ef": ef}).encode()
    host, data_port = local.data_uri.removeprefix("grpc://").rsplit(":", 1)
    meta_port = local.meta_uri.rsplit(":", 1)[1]
    sdk = LongbowClient(host, int(data_port), int(meta_port), retries=0)

    def shard_direct(q: np.ndarray, i: int) -> object:
        s = i % shards
        return exchange(holders[s], per_shard[s], pa.table({"vector": vectors(q[None, :])}))

    return {
        "flight floor": lambda q, i: list(local.data.list_actions()),
        "shard direct": shard_direct,
        "coordinator": lambda q, i: exchange(local.data, coord, pa.table({"vector": vectors(q[None, :])})),
        "coordinator DoGet": lambda q, i: local.data.do_get(fl.Ticket(json.dumps(
            {"search": {"dataset": NS, "vector": q.tolist(), "k": K}}).encode())).read_all(),
        "sdk": lambda q, i: sdk.search(NS, q, k=K, ef=ef),
        "hnswlib": lambda q, i: hnsw.knn_query(q, k=K),  # type: ignore[attr-defined]
    }


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def perf_top(pid: int, run: Callable[[], None], secs: int) -> str:
    """`perf record` on `pid` while `run` runs; the hottest symbols."""
    data = Path(tempfile.mkdtemp()) / "perf.data"
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", str(data), "-p", str(pid),
                            "--", "sleep", str(secs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run()
    rec.wait()
    rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "symbol",
                          "--stdio", "--percent-limit", "1", "-g", "none"],
                         capture_output=True, text=True).stdout
    lines = (re.sub(r"(\s+-)+\s*$", "", line).rstrip() for line in rep.splitlines())
    return "\n".join(line for line in lines if line.strip() and not line.startswith("#"))


def dataset(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Base rows, queries and a label for the set `args` names."""
    if args.set == "minilm-384" and SHARED.exists():
        d = np.load(SHARED).astype(np.float32)
        return d[:-1000], d[-1000:][: args.queries], "minilm-384 (real)"
    base, queries = clustered(args.rows, 1_000, 384)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return base, queries[: args.queries], "clustered-384 (synthetic)"


def measure(
    servers: list[tuple[str, Local]], calls: dict[str, Callable[[np.ndarray, int], object]], queries: np.ndarray
) -> tuple[dict[str, list[float]], dict[str, tuple[float, float]]]:
    """Milliseconds of every call per query, interleaved; and per server the coordinator's
    mean fan-out and mean shard-call time (ms) over the pass."""
    for i, q in enumerate(queries[:50]):  # warm connections and caches
        for call in calls.values():
            call(q, i)
    names = ("longbow_search_fanout_duration_seconds", "longbow_search_replica_duration_seconds")
    before = {tag: [metric_sums(local.http, n) for n in names] for tag, local in servers}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i, q in enumerate(queries):
        for name, call in calls.items():
            t = time.perf_counter()
            call(q, i)
            times[name].append((time.perf_counter() - t) * 1000)
    means = {}
    for tag, local in servers:
        after = [metric_sums(local.http, n) for n in names]
        fan, rep = ((a[0] - b[0]) / max(1.0, a[1] - b[1]) * 1000 for a, b in zip(after, before[tag]))
        means[tag] = (fan, rep)
    return times, means


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="minilm-384")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=50_000, help="rows of the synthetic set")
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--binary")
    ap.add_argument("--baseline", help="a second build, measured in the same run, query by query")
    ap.add_argument("--perf", action="store_true")
    args = ap.parse_args()
    base, queries, label = dataset(args)
    import hnswlib

    hnsw = hnswlib.Index(space="cosine", dim=base.shape[1])
    hnsw.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=42)
    hnsw.add_items(base, np.arange(len(base)))
    hnsw.set_ef(args.ef)
    hnsw.set_num_threads(1)

    builds = [("", args.binary or build())] + ([("baseline: ", args.baseline)] if args.baseline else [])
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers: list[tuple[str, Local]] = []
        calls: dict[str, Callable[[np.ndarray, int], object]] = {}
        for n, (tag, binary) in enumerate(builds):
            local = Local(binary, f"{tmp}/{n}", {})
            stack.callback(local.stop)
            load(local, base, "cosine")
            servers.append((tag, local))
            for name, call in layers(local, args.ef, hnsw).items():
                if not tag or name not in ("flight floor", "hnswlib"):
                    calls[tag + name] = call
        times, means = measure(servers, calls, queries)
        perf = ""
        if args.perf:
            coordinator = calls["coordinator"]
            tiled = np.tile(queries, (5, 1))
            perf = perf_top(servers[0][1].proc.pid, lambda: [coordinator(q, i) for i, q in enumerate(tiled)], 8)
    lines = [f"{label}, {len(base):,} rows x {base.shape[1]}, {len(queries):,} queries one per call, "
             f"k {K}, ef {args.ef}, longbow local --shards 2; {platform.machine()}, {os.cpu_count()} cores",
             "", "| layer | p50 ms | p99 ms | mean ms |", "|---|---|---|---|"]
    for name, xs in times.items():
        lines.append(f"| {name} | {statistics.median(xs):.3f} | {pct(xs, 99):.3f} | {statistics.fmean(xs):.3f} |")
    lines.append("")
    for tag, (fan, rep) in means.items():
        lines.append(f"{tag}coordinator /metrics: mean fan-out {fan:.3f} ms per search (both shard calls "
                     f"in parallel), mean shard call {rep:.3f} ms")
    if perf:
        lines += ["", "perf, server process, coordinator passes (self time, symbols >= 1 %):", "```", perf, "```"]
    write_report("stages.md", lines)


if __name__ == "__main__":
    main()
