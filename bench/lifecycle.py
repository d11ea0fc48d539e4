#!/usr/bin/env python3
"""Data-lifecycle figures of `longbow local` (release binary, 2 shard nodes, loopback).

restart: ingest N x 128 clustered rows, wait until READY (every row linked) and, for a binary
  with checkpoints, until every replica's manifest covers its last LSN; SIGTERM (time to exit);
  start again and time (a) the ready line, (b) READY from check_readiness, and (c) single
  query latency right after the ready line.
churn: 5,000 ids upserted 300 times each (1.5M row versions, 128-d), then the index memory
  and disk bytes once compaction settled, against a fresh 5,000-row namespace.

Usage:
  python3 bench/lifecycle.py restart --rows 100000,1000000 [--binary B] [--before B0]
  python3 bench/lifecycle.py churn [--binary B]
Needs: pip install numpy pyarrow
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
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hnsw_vs_hnswlib import clustered  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DIM = 128


def build() -> str:
    subprocess.run(["cargo", "build", "--release", "--bin", "longbow"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_BUILD_JOBS="2"), capture_output=True)
    return str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "longbow")


class Local:
    def __init__(self, binary: str, data_dir: str, env: dict[str, str]):
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [binary, "local", "--data-dir", data_dir, "--shards", "2",
             "--data-port", "0", "--meta-port", "0", "--http-port", "0"],
            stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, LONGBOW_LOG="warn", **env))
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        self.started = time.perf_counter() - t
        self.data_uri = words[words.index("data") + 1]
        self.meta_uri = words[words.index("meta") + 1]
        self.http = words[words.index("http") + 1]
        self.data = fl.connect(self.data_uri)
        self.meta = fl.connect(self.meta_uri)

    def action(self, kind: str, body: dict) -> dict:
        res = next(self.meta.do_action(fl.Action(kind, json.dumps(body).encode())))
        return json.loads(res.body.to_pybytes())

    def stop(self) -> float:
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)
        return time.perf_counter() - t

    def wait_ready(self, ns: str, limit: float = 3600) -> float:
        t = time.perf_counter()
        while self.action("check_readiness", {"namespace": ns})["status"] != "READY":
            if time.perf_counter() - t > limit:
                raise TimeoutError(f"{ns} not READY after {limit} s")
            time.sleep(0.05)
        return time.perf_counter() - t

    def put(self, ns: str, ids: np.ndarray, vecs: np.ndarray, batch: int = 10_000) -> None:
        table = pa.table({"id": pa.array(ids.astype(np.uint64)), "vector": vector_column(vecs)})
        put_table(self.data, ns, table, batch)

    def search_ms(self, ns: str, queries: np.ndarray) -> list[float]:
        return search_ms(self.data, ns, queries)


def write_report(name: str, lines: list[str]) -> None:
    """Print a report and keep it as bench/out/`name`."""
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(text + "\n")


def vector_column(a: np.ndarray) -> pa.FixedSizeListArray:
    """Rows of `a` (one vector per row, or one 1-D vector) as a float32 vector column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel(), type=pa.float32()), a.shape[-1])


def put_table(data: fl.FlightClient, ns: str, table: pa.Table, batch: int = 5_000,
              window: int = 1) -> None:
    """One DoPut of `table` into `ns` in batches of `batch` rows, at most `window` sent ahead
    of their acks (1: wait for each ack before sending the next batch)."""
    writer, reader = data.do_put(fl.FlightDescriptor.for_path(ns), table.schema)
    sent = acked = 0
    for b in table.to_batches(max_chunksize=batch):
        writer.write_batch(b)
        sent += 1
        while sent - acked >= window:
            if reader.read() is None:
                raise RuntimeError("the server ended the DoPut stream early")
            acked += 1
    writer.done_writing()
    while acked < sent:
        if reader.read() is None:
            raise RuntimeError("the server ended the DoPut stream early")
        acked += 1
    writer.close()


def exchange(data: fl.FlightClient, cmd: bytes, table: pa.Table) -> pa.Table:
    """One DoExchange with descriptor command `cmd` sending `table`; its answer."""
    w, r = data.do_exchange(fl.FlightDescriptor.for_command(cmd))
    w.begin(table.schema)
    w.write_table(table)
    w.done_writing()
    out = r.read_all()
    w.close()
    return out


def search_ms(data: fl.FlightClient, ns: str, queries: np.ndarray, k: int = 10) -> list[float]:
    """Milliseconds of each single-query search (one DoExchange call per query) on `data`."""
    cmd = json.dumps({"op": "search", "namespace": ns, "k": k}).encode()
    out = []
    for q in queries:
        table = pa.table({"vector": vector_column(q)})
        t = time.perf_counter()
        exchange(data, cmd, table)
        out.append((time.perf_counter() - t) * 1000)
    return out


def checkpointed(data_dir: Path, local: Local, ns: str) -> bool:
    """Every replica's manifest covers the replica's last LSN."""
    stats = local.action("GetNamespace", {"name": ns})
    want = {int(s["shard"]): int(s.get("lsn", s.get("replica", {}).get("lsn", -1)))
            for s in stats["per_shard"]}
    found = {}
    for m in data_dir.glob(f"**/replicas/{ns}/*/manifest.json"):
        found[int(m.parent.name)] = json.loads(m.read_text())["checkpoint_lsn"]
    return all(found.get(s) == lsn for s, lsn in want.items())


def restart(binary: str, rows: int, label: str) -> dict:
    base, queries = clustered(rows, 50, DIM)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        env = {"LONGBOW_CHECKPOINT_INTERVAL_SECS": "5"}
        local = Local(binary, tmp, env)
        local.action("CreateNamespace", {"name": "r", "dim": DIM, "metric": "l2"})
        t = time.perf_counter()
        local.put("r", np.arange(rows), base)
        local.wait_ready("r")
        build_s = time.perf_counter() - t
        has_checkpoints = "--checkpoint-interval-secs" in subprocess.run(
            [binary, "local", "--help"], capture_output=True, text=True).stdout
        if has_checkpoints:
            deadline = time.perf_counter() + 600
            while not checkpointed(Path(tmp), local, "r"):
                if time.perf_counter() > deadline:
                    raise TimeoutError("no checkpoint")
                time.sleep(0.2)
        stop_s = local.stop()
        t = time.perf_counter()
        local = Local(binary, tmp, env)
        started = local.started
        lat = local.search_ms("r", queries[:20])
        local.wait_ready("r")
        ready = time.perf_counter() - t
        local.stop()
    return {"label": label, "rows": rows, "build_s": build_s, "stop_s": stop_s,
            "ready_line_s": started, "ready_s": ready,
            "first_queries_p50_ms": float(np.percentile(lat, 50)),
            "first_queries_max_ms": float(max(lat))}


def churn(binary: str) -> dict:
    ids, versions, dim = 5_000, 300, DIM
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        local = Local(binary, tmp, {"LONGBOW_CHECKPOINT_INTERVAL_SECS": "5"})
        for ns in ("fresh", "churn"):
            local.action("CreateNamespace", {"name": ns, "dim": dim, "metric": "l2"})
        local.put("fresh", np.arange(ids), rng.normal(size=(ids, dim)).astype(np.float32))
        local.wait_ready("fresh")
        t = time.perf_counter()
        for _ in range(versions):
            local.put("churn", np.arange(ids), rng.normal(size=(ids, dim)).astype(np.float32))
        written = time.perf_counter() - t
        peak = local.action("GetNamespace", {"name": "churn"})
        # Compaction settles once checkpoints have rewritten every dead-heavy segment.
        deadline = time.perf_counter() + 900
        while True:
            s = local.action("GetNamespace", {"name": "churn"})
            if s["deleted"] <= ids or time.perf_counter() > deadline:
                break
            time.sleep(1)
        time.sleep(6)
        settled = local.action("GetNamespace", {"name": "churn"})
        fresh = local.action("GetNamespace", {"name": "fresh"})
        local.stop()
    return {"versions": ids * versions, "write_s": written, "peak": peak, "settled": settled,
            "fresh": fresh}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["restart", "churn"])
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--binary", help="the longbow binary (default: build this tree's release binary)")
    ap.add_argument("--before", help="an older longbow binary to compare (restart only)")
    args = ap.parse_args()
    binary = args.binary or build()
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores; longbow local, 2 shard nodes", ""]
    if args.what == "restart":
        lines += ["| build | rows | ingest to READY | SIGTERM to exit | restart to ready line | "
                  "restart to READY | first 20 queries p50 / max |", "|---|---|---|---|---|---|---|"]
        for rows in [int(r) for r in args.rows.split(",")]:
            for label, b in ([("before", args.before)] if args.before else []) + [("after", binary)]:
                r = restart(b, rows, label)
                lines.append(f"| {label} | {rows:,} | {r['build_s']:.1f} s | {r['stop_s']:.2f} s | "
                             f"{r['ready_line_s']:.2f} s | {r['ready_s']:.2f} s | "
                             f"{r['first_queries_p50_ms']:.1f} / {r['first_queries_max_ms']:.1f} ms |")
                print(lines[-1], flush=True)
    else:
        r = churn(binary)
        mib = 1 << 20
        lines += [f"{r['versions']:,} row versions written in {r['write_s']:.1f} s", "",
                  "| namespace | live rows | dead versions kept | index memory | disk |", "|---|---|---|---|---|"]
        for name in ("peak", "settled", "fresh"):
            s = r[name]
            lines.append(f"| {name} | {s['count']:,} | {s['deleted']:,} | {s['memory_bytes'] / mib:.1f} MiB | "
                         f"{s['disk_bytes'] / mib:.1f} MiB |")
        print("\n".join(lines), flush=True)
    out = OUT / f"lifecycle-{args.what}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"report written to {out}")


if __name__ == "__main__":
    main()
