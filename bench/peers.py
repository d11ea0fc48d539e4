#!/usr/bin/env python3
"""Longbow end to end against its peers, in one go on the same data and machine.

Longbow (`longbow local --shards 2`, release build) is driven through the stock
`pyarrow.flight` client and through the SDK; hnswlib, faiss (IndexHNSWFlat) and usearch run
in this process with every core; embedded Milvus (PyPI `milvus` 2.3.5 with `pymilvus<2.4`)
runs from its own virtual environment (`--milvus-python`, see bench/milvus_peer.py). Every
index is HNSW with M 16 and ef_construction 200, cosine (inner product on normalised rows).

Figures:
  * build: Longbow's rows/s acknowledged durable through one DoPut stream (8 batches of
    5,000 ahead) and time to READY; the peers' build time; Milvus' time from the first insert
    until searchable (index built and loaded);
  * batch: all queries in batches of 100, over a sweep of ef, recall@10 and QPS; the QPS at
    equal recall (0.95, 0.97, 0.99): the best QPS of the ef settings reaching it, with ratios
    to Longbow;
  * single: one query per call, p50 / p99 at ef 64 (pyarrow DoExchange, SDK, each peer);
  * concurrent: 1, 4 and 8 client processes sending single queries (own connection each),
    QPS, and 8 clients as a share of the batch QPS at ef 64.

Longbow's searches are measured in steady state: once READY and the server's background
work (checkpoints, repair) is done, after one warm-up pass over the queries. The peers'
indexes are searched right after their build, hot from it.

Memory: Longbow's is the resident set of the `longbow local` process once READY; an
in-process peer's is how much this process's resident set grew while it built its index.

Usage: python3 bench/peers.py [--set minilm-384|clustered-128|clustered-384] [--rows N]
                              [--queries 1000] [--binary B] [--milvus-python PY]
                              [--systems longbow,hnswlib,faiss,usearch,milvus] [--shards 2]
--shards sets the Longbow namespace's shard count (all on this machine), to see what
searching every shard with the full ef costs at equal recall.
Needs: pip install numpy pyarrow hnswlib faiss-cpu usearch, the SDK (pip install -e sdk-python);
for Milvus: python3 -m venv V && V/bin/pip install "milvus==2.3.5" "pymilvus<2.4" "numpy<2" "pandas<2.3"
            "marshmallow<3.24" "environs<10"
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hnsw_vs_hnswlib import SHARED, clustered, ground_truth, recall, rss_bytes  # noqa: E402
from lifecycle import Local, build, exchange, put_table, vector_column, write_report  # noqa: E402

K = 10
EFS = [16, 24, 32, 48, 64, 96, 128, 192, 256]
TARGETS = [0.95, 0.97, 0.99]
CLIENTS = [1, 4, 8]
NS = "peers"

Curve = list[tuple[int, float, float]]  # (ef, recall, qps)


def data_set(name: str, rows: int, nq: int) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "minilm-384" and SHARED.exists():
        d = np.load(SHARED).astype(np.float32)
        return d[:-nq][:rows], d[-nq:], "cosine"
    dim = 128 if name == "clustered-128" else 384
    base, queries = clustered(rows, nq, dim)
    if dim == 128:
        return base, queries, "l2"
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return norm(base), norm(queries), "cosine"


def percentiles(ms: list[float]) -> tuple[float, float]:
    a = np.array(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def at_recall(curve: Curve, target: float) -> float | None:
    """The best QPS among the ef settings that reach `target` recall (None: none does)."""
    reached = [q for _, r, q in curve if r >= target]
    return max(reached) if reached else None


def _client(data_uri: str, cmd: bytes, queries: np.ndarray, barrier) -> None:
    """One client process: its own connection, a warm-up query, then `queries` one by one."""
    client = fl.connect(data_uri)
    exchange(client, cmd, pa.table({"vector": vector_column(queries[0])}))
    barrier.wait()
    for q in queries:
        exchange(client, cmd, pa.table({"vector": vector_column(q)}))


def concurrent_qps(data_uri: str, cmd: bytes, queries: np.ndarray, clients: int, per_client: int) -> float:
    """QPS of `clients` client processes (no shared interpreter lock) sending single queries."""
    # Not fork: gRPC threads of this process's own clients do not survive one.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    share = [queries[np.arange(i * per_client, (i + 1) * per_client) % len(queries)] for i in range(clients)]
    procs = [ctx.Process(target=_client, args=(data_uri, cmd, share[i], barrier)) for i in range(clients)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    return clients * per_client / (time.perf_counter() - t0)


def process_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, limit_s: float = 600.0) -> float:
    """Wait (bounded) until process `pid` uses under 5 % of a core for two seconds in a row;
    the time it became quiet (perf_counter)."""
    deadline = time.perf_counter() + limit_s
    calm = 0
    while time.perf_counter() < deadline and calm < 2:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        calm = calm + 1 if cpu_seconds(pid) - before < 0.05 else 0
    return time.perf_counter()


class LongbowSide:
    def __init__(self, binary: str, tmp: str, base: np.ndarray, metric: str, shards: int):
        self.local = Local(binary, tmp, {})
        self.local.action("CreateNamespace", {"name": NS, "dim": base.shape[1], "metric": metric,
                                              "shards": shards,
                                              "index": {"m": 16, "ef_construction": 200, "ef_search": 64}})
        table = pa.table({"id": pa.array(np.arange(len(base), dtype=np.uint64)), "vector": vector_column(base)})
        t = time.perf_counter()
        put_table(self.local.data, NS, table, 5_000, 8)
        self.acked = time.perf_counter() - t
        self.local.wait_ready(NS)
        self.ready = time.perf_counter() - t
        # Searches are measured in steady state: after READY the background work (checkpoints
        # sealing the new segments to files, reachability repair) still takes the cores for a
        # while, and the first pass over a fresh index pays its page faults.
        self.quiet = wait_quiet(self.local.proc.pid) - t
        self.rss = process_rss(self.local.proc.pid)

    def warm_up(self, queries: np.ndarray) -> None:
        for s in range(0, len(queries), 100):
            exchange(self.local.data, self.cmd(64), pa.table({"vector": vector_column(queries[s:s + 100])}))

    def cmd(self, ef: int) -> bytes:
        return json.dumps({"op": "search", "namespace": NS, "k": K, "ef": ef}).encode()

    def batch(self, queries: np.ndarray, truth: np.ndarray) -> Curve:
        out = []
        for ef in EFS:
            t = time.perf_counter()
            ids = [exchange(self.local.data, self.cmd(ef), pa.table({"vector": vector_column(queries[s:s + 100])}))
                   .column("id").to_numpy().reshape(-1, K) for s in range(0, len(queries), 100)]
            secs = time.perf_counter() - t
            out.append((ef, recall(np.vstack(ids), truth), len(queries) / secs))
        return out

    def single_caller(self) -> Callable[[np.ndarray], object]:
        client = fl.connect(self.local.data_uri)
        cmd = self.cmd(64)
        return lambda q: exchange(client, cmd, pa.table({"vector": vector_column(q)}))

    def sdk_caller(self) -> Callable[[np.ndarray], object]:
        from longbow import LongbowClient
        host, port = self.local.data_uri.removeprefix("grpc://").rsplit(":", 1)
        meta_port = int(self.local.meta_uri.rsplit(":", 1)[1])
        client = LongbowClient(host, int(port), meta_port)
        return lambda q: client.search(NS, q.tolist(), k=K, ef=64)


def hnswlib_side(base, queries, truth, metric):
    import hnswlib
    index = hnswlib.Index(space="l2" if metric == "l2" else "cosine", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=42)
    index.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)))
    built = time.perf_counter() - t
    curve = []
    for ef in EFS:
        index.set_ef(ef)
        t = time.perf_counter()
        labels, _ = index.knn_query(queries, k=K)
        curve.append((ef, recall(labels, truth), len(queries) / (time.perf_counter() - t)))
    index.set_ef(64)
    return built, curve, lambda q: index.knn_query(q, k=K, num_threads=1)


def faiss_side(base, queries, truth, metric):
    import faiss
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(base.shape[1], 16, mt)
    index.hnsw.efConstruction = 200
    t = time.perf_counter()
    index.add(base)
    built = time.perf_counter() - t
    curve = []
    for ef in EFS:
        index.hnsw.efSearch = ef
        t = time.perf_counter()
        _, labels = index.search(queries, K)
        curve.append((ef, recall(labels, truth), len(queries) / (time.perf_counter() - t)))
    index.hnsw.efSearch = 64
    return built, curve, lambda q: index.search(q[None, :], K)


def usearch_side(base, queries, truth, metric):
    from usearch.index import Index
    index = Index(ndim=base.shape[1], metric="l2sq" if metric == "l2" else "cos", dtype="f32",
                  connectivity=16, expansion_add=200, expansion_search=64)
    t = time.perf_counter()
    index.add(np.arange(len(base)), base, threads=os.cpu_count() or 1)
    built = time.perf_counter() - t
    curve = []
    for ef in EFS:
        index.expansion_search = ef
        t = time.perf_counter()
        found = index.search(queries, K, threads=os.cpu_count() or 1)
        curve.append((ef, recall(found.keys, truth), len(queries) / (time.perf_counter() - t)))
    index.expansion_search = 64
    return built, curve, lambda q: index.search(q, K, threads=1)


def milvus_side(python: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, metric: str,
                tmp: str) -> dict:
    np.save(f"{tmp}/base.npy", base)
    np.save(f"{tmp}/queries.npy", queries)
    np.save(f"{tmp}/truth.npy", truth)
    script = Path(__file__).resolve().parent / "milvus_peer.py"
    out = subprocess.run([python, str(script), tmp, metric, json.dumps(EFS)], check=True,
                         capture_output=True, text=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(x: float | None, unit: str = "") -> str:
    return "not reached" if x is None else f"{x:,.0f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="minilm-384", choices=["minilm-384", "clustered-128", "clustered-384"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--single", type=int, default=1_000, help="single queries per system")
    ap.add_argument("--binary")
    ap.add_argument("--milvus-python", default="/work/milvus-venv/bin/python")
    ap.add_argument("--systems", default="longbow,hnswlib,faiss,usearch,milvus")
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()
    systems = set(args.systems.split(","))
    base, queries, metric = data_set(args.set, args.rows, args.queries)
    truth = ground_truth(base, queries, "l2" if metric == "l2" else "dot")
    binary = args.binary or build()
    curves: dict[str, Curve] = {}
    singles: dict[str, tuple[float, float]] = {}
    builds: dict[str, str] = {}
    conc: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "longbow" in systems:
            longbow_figures(args, binary, f"{tmp}/longbow", base, queries, truth, metric,
                            builds, curves, singles, conc)
        for name, side in [("hnswlib", hnswlib_side), ("faiss", faiss_side), ("usearch", usearch_side)]:
            if name not in systems:
                continue
            before = rss_bytes()
            built, curve, single = side(base, queries, truth, metric)
            builds[name] = (f"built in {built:.1f} s ({os.cpu_count()} threads); "
                            f"memory {(rss_bytes() - before) / 2**20:,.0f} MiB")
            curves[name] = curve
            single(queries[0])
            singles[name] = percentiles([timed(lambda: single(q), 1)[0] for q in queries[:args.single]])
        if "milvus" in systems and Path(args.milvus_python).exists():
            m = milvus_side(args.milvus_python, base, queries, truth, metric, tmp)
            builds["Milvus 2.3.5 (embedded)"] = f"searchable {m['searchable']:.1f} s after the first insert"
            curves["Milvus 2.3.5 (embedded)"] = [tuple(p) for p in m["curve"]]
            singles["Milvus 2.3.5 (embedded)"] = (m["single_p50"], m["single_p99"])
    report(args, base, metric, builds, curves, singles, conc)


def longbow_figures(args, binary, tmp, base, queries, truth, metric, builds, curves, singles, conc) -> None:
    lb = LongbowSide(binary, tmp, base, metric, args.shards)
    try:
        builds["Longbow"] = (f"{len(base) / lb.acked:,.0f} rows/s acknowledged durable, "
                             f"READY after {lb.ready:.1f} s, background work done after {lb.quiet:.1f} s; "
                             f"process memory {lb.rss / 2**20:,.0f} MiB")
        lb.warm_up(queries)
        curves["Longbow"] = lb.batch(queries, truth)
        call, sdk = lb.single_caller(), lb.sdk_caller()
        call(queries[0]), sdk(queries[0])
        flight_ms, sdk_ms = [], []
        for q in queries[:args.single]:  # interleaved: a slow spell hits both alike
            flight_ms += timed(lambda: call(q), 1)
            sdk_ms += timed(lambda: sdk(q), 1)
        singles["Longbow, pyarrow DoExchange"] = percentiles(flight_ms)
        singles["Longbow, SDK"] = percentiles(sdk_ms)
        conc["Longbow"] = [concurrent_qps(lb.local.data_uri, lb.cmd(64), queries, c, 2_000 // c)
                           for c in CLIENTS]
    finally:
        lb.local.stop()


def report(args, base, metric, builds, curves, singles, conc) -> None:
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.set}: {len(base):,} x "
             f"{base.shape[1]} ({metric}), {args.queries:,} queries, k {K}; HNSW M 16, ef_construction "
             f"200; Longbow: longbow local --shards 2, namespace of {args.shards} shard(s), over Flight; "
             "peers in-process with every core", ""]
    lines += ["| system | build |", "|---|---|"] + [f"| {k} | {v} |" for k, v in builds.items()]
    ref = "Longbow" if "Longbow" in curves else next(iter(curves))
    lb = {t: at_recall(curves[ref], t) for t in TARGETS}
    lines += ["", "Batch QPS (batches of 100) at equal recall@10: the best of the ef settings reaching it; "
              "ratio = Longbow ÷ peer:", "",
              "| system | " + " | ".join(f"QPS @ {t}" for t in TARGETS) + " | " +
              " | ".join(f"Longbow ÷ it @ {t}" for t in TARGETS) + " |",
              "|---|" + "---|" * (2 * len(TARGETS))]
    for name, curve in curves.items():
        q = {t: at_recall(curve, t) for t in TARGETS}
        ratios = [("—" if name == ref else
                   (f"{lb[t] / q[t]:.2f}" if lb[t] and q[t] else "n/a")) for t in TARGETS]
        lines.append(f"| {name} | " + " | ".join(fmt(q[t]) for t in TARGETS) + " | " + " | ".join(ratios) + " |")
    lines += ["", "| system | " + " | ".join(f"ef {ef}" for ef in EFS) + " |", "|---|" + "---|" * len(EFS)]
    for name, curve in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{r:.3f} / {q:,.0f}" for _, r, q in curve) + " |")
    lines += ["", "(recall@10 / QPS per ef)", "", "Single query per call, ef 64:", "",
              "| system | p50 ms | p99 ms |", "|---|---|---|"]
    lines += [f"| {k} | {p50:.3f} | {p99:.3f} |" for k, (p50, p99) in singles.items()]
    if "Longbow" not in conc:
        write_report(f"peers-{args.set}-{len(base)}-{args.shards}sh.md", lines)
        return
    batch64 = next(q for ef, _, q in curves["Longbow"] if ef == 64)
    lines += ["", "Concurrent client processes sending single queries to Longbow (pyarrow, own connection each), ef 64:", "",
              "| clients | " + " | ".join(str(c) for c in CLIENTS) + " |", "|---|" + "---|" * len(CLIENTS),
              "| QPS | " + " | ".join(f"{q:,.0f}" for q in conc["Longbow"]) + " |",
              "", f"8 clients reach {conc['Longbow'][-1] / batch64:.0%} of the batch QPS at ef 64 ({batch64:,.0f})."]
    write_report(f"peers-{args.set}-{len(base)}-{args.shards}sh.md", lines)


if __name__ == "__main__":
    main()
