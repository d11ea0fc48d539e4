#!/usr/bin/env python3
"""Hedged replica searches: search latency while one of two replicas is slowed.

Two clusters run side by side on loopback (release binary, real processes): each one
coordinator and two shard nodes holding both replicas of one shard (replication factor 2).
One coordinator hedges (default flags, p90 of the replica's recent latency), the other does
not (`--hedge-percentile 0`); both order replicas by load. Conditions:

  healthy   both replicas answer
  slowed    one replica is stopped (SIGSTOP) for --stop-ms out of every --period-ms

Single-query searches (k 10, one query per DoExchange call, one client) are measured in
rounds that alternate cluster and condition, so machine noise falls on every cell alike.
Prints p50/p99/p99.9/max per cell, the hedges each coordinator sent and won, and the
ratio the issue asks for: slowed p99 with hedging over healthy p99.

Usage:
  python3 bench/hedging.py [--rows 20000] [--queries 500] [--rounds 8] [--stop-ms 50]
                           [--period-ms 200] [--binary B]
Data: the real 384-d sentence embeddings in ../shared/data when present, else clustered
synthetic 384-d rows. Needs: pip install numpy pyarrow
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hnsw_vs_hnswlib import SHARED, clustered  # noqa: E402
from lifecycle import OUT, build, put_table, search_ms, vector_column  # noqa: E402

NS = "hedge"


def first_line(cmd: list[str]) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start `cmd`; its process and the address words of its ready line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, LONGBOW_LOG="warn"))
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    if not words:
        raise RuntimeError(f"{cmd[1]} exited before its ready line")
    return proc, {w: words[i + 1] for i, w in enumerate(words[:-1])}


class Cluster:
    """One coordinator (with `flags`) and two shard nodes under `root`."""

    def __init__(self, binary: str, root: Path, flags: list[str]):
        self.coordinator, words = first_line(
            [binary, "coordinator", "--data-dir", str(root / "coordinator"), "--data-port", "0",
             "--meta-port", "0", "--internal-port", "0", "--http-port", "0", *flags])
        self.http = words["http"]
        self.nodes = [first_line(
            [binary, "shard", "--data-dir", str(root / f"shard-{i}"), "--listen", "127.0.0.1:0",
             "--http-port", "0", "--coordinator", words["internal"]])[0] for i in range(2)]
        self.data = fl.connect(f"grpc://{words['data']}")
        self.meta = fl.connect(f"grpc://{words['meta']}")

    def action(self, kind: str, body: dict) -> dict:
        res = next(self.meta.do_action(fl.Action(kind, json.dumps(body).encode())))
        return json.loads(res.body.to_pybytes())

    def retry(self, kind: str, body: dict, limit: float = 60) -> dict:
        """`action`, retried while the cluster is still forming (nodes not live yet)."""
        deadline = time.perf_counter() + limit
        while True:
            try:
                return self.action(kind, body)
            except fl.FlightError:
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.2)

    def load(self, base: np.ndarray) -> None:
        self.retry("CreateNamespace", {"name": NS, "dim": base.shape[1], "metric": "cosine",
                                       "shards": 1, "replication_factor": 2})
        table = pa.table({"id": pa.array(np.arange(len(base), dtype=np.uint64)),
                          "vector": vector_column(base)})
        put_table(self.data, NS, table)

    def ready(self, limit: float = 1800) -> None:
        deadline = time.perf_counter() + limit
        while self.action("check_readiness", {"namespace": NS})["status"] != "READY":
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{NS} not READY after {limit} s")
            time.sleep(0.2)

    def search_ms(self, queries: np.ndarray) -> list[float]:
        return search_ms(self.data, NS, queries)

    def counter(self, name: str) -> int:
        text = urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
        raise KeyError(name)

    def stop(self) -> None:
        for p in [*self.nodes, self.coordinator]:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
        for p in [*self.nodes, self.coordinator]:
            p.wait(timeout=120)


class Bursts:
    """SIGSTOP bursts on one process while running: stopped `stop_ms` of every `period_ms`."""

    def __init__(self, proc: subprocess.Popen, stop_ms: float, period_ms: float):
        self.proc, self.stop_s, self.period_s = proc, stop_ms / 1000, period_ms / 1000
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running.wait():
            time.sleep(self.period_s - self.stop_s)
            if not self.running.is_set():
                continue
            self.proc.send_signal(signal.SIGSTOP)
            time.sleep(self.stop_s)
            self.proc.send_signal(signal.SIGCONT)


def data(rows: int, nq: int) -> tuple[np.ndarray, np.ndarray, str]:
    if SHARED.exists():
        allv = np.load(SHARED).astype(np.float32)
        return allv[:rows], allv[-nq:], "minilm-384 (real sentence embeddings)"
    base, queries = clustered(rows, nq, 384)
    return base, queries, "clustered-384 (synthetic)"


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=500, help="queries per cell and round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--stop-ms", type=float, default=50)
    ap.add_argument("--period-ms", type=float, default=200)
    ap.add_argument("--binary")
    args = ap.parse_args()
    binary = args.binary or build()
    base, queries, name = data(args.rows, args.queries)
    configs = {"hedging on": [], "hedging off": ["--hedge-percentile", "0"]}
    lat: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        clusters: dict[str, Cluster] = {}
        try:
            for c, f in configs.items():
                clusters[c] = Cluster(binary, Path(tmp) / c.replace(" ", "-"), f)
            for c in clusters.values():
                c.load(base)
            for c in clusters.values():
                c.ready()
                c.search_ms(queries[:200])  # warm-up: fills the latency histograms
            time.sleep(11)  # one hedge histogram period (10 s) completes ...
            for c in clusters.values():
                c.search_ms(queries[:50])  # ... and rotates in, with the warm-up in it
            bursts = {c: Bursts(cl.nodes[0], args.stop_ms, args.period_ms) for c, cl in clusters.items()}
            hedges0 = {c: (cl.counter("longbow_search_hedges_sent_total"),
                           cl.counter("longbow_search_hedges_won_total")) for c, cl in clusters.items()}
            for _ in range(args.rounds):
                for condition in ("healthy", "slowed"):
                    for c, cl in clusters.items():
                        if condition == "slowed":
                            bursts[c].running.set()
                        lat.setdefault((c, condition), []).extend(cl.search_ms(queries))
                        bursts[c].running.clear()
                        time.sleep(args.period_ms / 1000)  # a burst in progress ends
            hedges = {c: (cl.counter("longbow_search_hedges_sent_total") - hedges0[c][0],
                          cl.counter("longbow_search_hedges_won_total") - hedges0[c][1])
                      for c, cl in clusters.items()}
        finally:
            for cl in clusters.values():
                cl.stop()
    cells = {f"{c}, {cond}": {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99), "p999_ms": pct(v, 99.9),
                              "max_ms": max(v), "n": len(v)} for (c, cond), v in lat.items()}
    result = {
        "data": name, "rows": args.rows, "stop_ms": args.stop_ms, "period_ms": args.period_ms,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "cells": cells,
        "hedges": {c: {"sent": s, "won": w, "searches": len(lat[(c, "healthy")]) * 2}
                   for c, (s, w) in hedges.items()},
        "slowed_hedged_p99_over_healthy_p99":
            cells["hedging on, slowed"]["p99_ms"] / cells["hedging on, healthy"]["p99_ms"],
        "slowed_unhedged_p99_over_healthy_p99":
            cells["hedging off, slowed"]["p99_ms"] / cells["hedging off, healthy"]["p99_ms"],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hedging.json").write_text(json.dumps(result, indent=2))
    print(f"{name}, {args.rows} rows; slowed: replica stopped {args.stop_ms:g} ms of every "
          f"{args.period_ms:g} ms")
    print("| cluster, condition | p50 ms | p99 ms | p99.9 ms | max ms | searches |")
    print("|---|---|---|---|---|---|")
    for k, v in cells.items():
        print(f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['p999_ms']:.2f} | "
              f"{v['max_ms']:.1f} | {v['n']} |")
    for c, h in result["hedges"].items():
        print(f"{c}: {h['sent']} hedges sent, {h['won']} won, of {h['searches']} searches")
    print(f"slowed p99 / healthy p99: hedged {result['slowed_hedged_p99_over_healthy_p99']:.2f}x, "
          f"not hedged {result['slowed_unhedged_p99_over_healthy_p99']:.2f}x")


if __name__ == "__main__":
    main()
