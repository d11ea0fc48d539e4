#!/usr/bin/env python3
"""Many namespaces on `longbow local --shards 2` (release binary, loopback).

Creates N namespaces (8-d, l2, 2 shards each) and writes a few rows into each, then reports:
create latency (p50, p99), the process's threads and RSS, ListFlights and ListNamespaces
time, restart-to-ready time with all of them, then deletes them all and reports delete
latency and the catalog store's size (the coordinator directory: Raft log and snapshot)
before and after.

Usage:
  python3 bench/many_namespaces.py [--count 2000] [--rows 10] [--binary B] [--before B0]
Needs: pip install numpy pyarrow
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.flight as fl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lifecycle import OUT, Local, build  # noqa: E402

DIM = 8


def proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MiB) of process `pid`."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def du(path: Path) -> float:
    """MiB of the files under `path` but the full-disk ballast (a fixed reserve)."""
    files = [f for f in path.rglob("*") if f.is_file() and f.name != "BALLAST"]
    return sum(f.stat().st_size for f in files) / 2**20


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p)) if xs else float("nan")


def run(binary: str, count: int, rows: int, label: str) -> dict:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        local = Local(binary, tmp, {})
        threads0, rss0 = proc_status(local.proc.pid)
        create_ms, put_ms = [], []
        for i in range(count):
            ns = f"ns-{i:05d}"
            t = time.perf_counter()
            local.action("CreateNamespace", {"name": ns, "dim": DIM, "metric": "l2"})
            create_ms.append((time.perf_counter() - t) * 1000)
            if rows:
                t = time.perf_counter()
                local.put(ns, np.arange(rows), rng.random((rows, DIM), dtype=np.float32))
                put_ms.append((time.perf_counter() - t) * 1000)
        time.sleep(2)
        threads, rss = proc_status(local.proc.pid)
        t = time.perf_counter()
        flights = list(local.meta.list_flights())
        list_flights_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        listed = local.action("ListNamespaces", {})
        list_ns_ms = (time.perf_counter() - t) * 1000
        store_full = du(Path(tmp) / "coordinator")
        stop_s = local.stop()
        local = Local(binary, tmp, {})
        restart_s = local.started
        threads_restart, rss_restart = proc_status(local.proc.pid)
        delete_ms = []
        for i in range(count):
            t = time.perf_counter()
            local.action("DeleteNamespace", {"name": f"ns-{i:05d}"})
            delete_ms.append((time.perf_counter() - t) * 1000)
        time.sleep(2)
        store_empty = du(Path(tmp) / "coordinator")
        threads_empty, rss_empty = proc_status(local.proc.pid)
        local.stop()
    return {
        "label": label,
        "namespaces": count,
        "rows_per_namespace": rows,
        "listed": len(flights),
        "list_namespaces_details": len(listed.get("details", [])),
        "threads_idle": threads0,
        "threads": threads,
        "threads_after_restart": threads_restart,
        "threads_after_delete": threads_empty,
        "rss_idle_mib": round(rss0, 1),
        "rss_mib": round(rss, 1),
        "rss_after_restart_mib": round(rss_restart, 1),
        "rss_after_delete_mib": round(rss_empty, 1),
        "create_p50_ms": round(pct(create_ms, 50), 2),
        "create_p99_ms": round(pct(create_ms, 99), 2),
        "create_last100_p50_ms": round(pct(create_ms[-100:], 50), 2),
        "put_p50_ms": round(pct(put_ms, 50), 2),
        "delete_p50_ms": round(pct(delete_ms, 50), 2),
        "list_flights_ms": round(list_flights_ms, 1),
        "list_namespaces_ms": round(list_ns_ms, 1),
        "stop_s": round(stop_s, 2),
        "restart_ready_line_s": round(restart_s, 2),
        "catalog_store_mib": round(store_full, 2),
        "catalog_store_after_delete_mib": round(store_empty, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--binary")
    ap.add_argument("--before", help="an older binary to measure in the same run")
    args = ap.parse_args()
    binary = args.binary or build()
    results = []
    if args.before:
        results.append(run(args.before, args.count, args.rows, "before"))
    results.append(run(binary, args.count, args.rows, "after"))
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "results": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "many_namespaces.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
