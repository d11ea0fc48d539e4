#!/usr/bin/env python3
"""Longbow's HNSW segment against hnswlib on the same data, in one run.

For each data set both engines index the same vectors with the same M and ef_construction,
on all cores; then each answers the same held-out queries single-threaded across a sweep of
ef. The report gives build time, index memory, and queries/s at recall@10 of exactly 0.90,
0.95 and 0.99, interpolated between the swept ef values that bracket each target.

The machine is shared and noisy, so both indexes stay loaded and the query passes alternate:
for every ef, each engine runs `--rounds` passes, interleaved with the other's, and the median
is reported. A slow spell then hits both engines instead of one.

Data sets:
  clustered-128  100,000 x 128 synthetic: 100 Gaussian clusters, anisotropic (decaying
                 variance along a random rotation), queries drawn from the same mixture.
  minilm-384     the 50,000 real sentence embeddings in ../shared/data (last 1,000 rows are
                 the queries), cosine.

Usage: python3 bench/hnsw_vs_hnswlib.py [--sets clustered-128,minilm-384] [--m 16] [--efc 200] [--rounds 5]
Needs: pip install numpy hnswlib
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
SHARED = ROOT.parent / "shared" / "data" / "minilm-384d-50k.f16.npy"
EFS = [10, 12, 16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 128, 192, 256, 384, 512]
K = 10


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def clustered(n: int, nq: int, dim: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = 100
    centers = rng.normal(0, 1.0, (clusters, dim)).astype(np.float32) * 2.0
    rot, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scale = (0.96 ** np.arange(dim)).astype(np.float32) * 1.5
    def draw(count: int) -> np.ndarray:
        which = rng.integers(0, clusters, count)
        noise = rng.normal(size=(count, dim)).astype(np.float32) * scale
        return (centers[which] + noise @ rot.T.astype(np.float32)).astype(np.float32)
    return draw(n), draw(nq)


def ground_truth(base: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    out = np.empty((len(queries), K), dtype=np.uint32)
    base_sq = (base * base).sum(1)
    for s in range(0, len(queries), 200):
        q = queries[s : s + 200]
        if metric == "l2":
            d = base_sq[None, :] - 2 * q @ base.T
        else:
            d = -(q @ base.T)
        idx = np.argpartition(d, K, axis=1)[:, :K]
        order = np.take_along_axis(d, idx, 1).argsort(1)
        out[s : s + 200] = np.take_along_axis(idx, order, 1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
    return hits / truth.size


def build_longbow() -> Path:
    env = dict(os.environ, CARGO_BUILD_JOBS="2")
    out = subprocess.run(
        ["cargo", "bench", "-p", "longbow-shard", "--bench", "hnsw", "--no-run", "--message-format=json"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "hnsw" and msg.get("executable"):
            return Path(msg["executable"])
    sys.exit("could not find the hnsw bench executable")


class LongbowServe:
    """The Longbow bench binary in `--serve` mode: builds once, then one query pass per ef."""

    def __init__(self, exe: Path, files: dict[str, Path], dim: int, metric: str, m: int, efc: int):
        cmd = [
            str(exe), "--serve", "--base", str(files["base"]), "--queries", str(files["queries"]),
            "--truth", str(files["truth"]), "--dim", str(dim), "--metric", metric,
            "--m", str(m), "--ef-construction", str(efc), "--k", str(K),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.head = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        sys.exit(f"longbow bench exited with {self.proc.wait()}")

    def query(self, ef: int) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{ef}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare(exe, files, base, queries, truth, metric, m, efc, rounds):
    """Build both engines (one after the other, each with the machine to itself), then run
    `rounds` rounds of query passes over the ef sweep, alternating which engine goes first at
    each ef. Returns both engines' build, memory and per-ef median QPS."""
    import hnswlib

    lb = LongbowServe(exe, files, base.shape[1], metric, m, efc)
    space = {"l2": "l2", "cosine": "cosine", "dot": "ip"}[metric]
    rss0 = rss_bytes()
    index = hnswlib.Index(space=space, dim=base.shape[1])
    index.init_index(max_elements=len(base), M=m, ef_construction=efc, random_seed=42)
    index.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)))
    hl_build = time.perf_counter() - t
    hl_mem = rss_bytes() - rss0
    index.set_num_threads(1)

    def hnswlib_pass(ef: int) -> dict:
        index.set_ef(max(ef, K))
        t = time.perf_counter()
        labels, _ = index.knn_query(queries, k=K)
        secs = time.perf_counter() - t
        return {"ef": ef, "recall": recall(labels, truth), "qps": len(queries) / secs}

    runs: dict[str, dict[int, list[dict]]] = {"hnswlib": {}, "longbow": {}}
    for r in range(rounds):
        for i, ef in enumerate(EFS):
            order = ["hnswlib", "longbow"] if (r + i) % 2 == 0 else ["longbow", "hnswlib"]
            for engine in order:
                row = hnswlib_pass(ef) if engine == "hnswlib" else lb.query(ef)
                runs[engine].setdefault(ef, []).append(row)
    lb.close()
    del index

    def sweep(engine: str) -> list[dict]:
        out = []
        for ef in EFS:
            rows = runs[engine][ef]
            out.append({"ef": ef, "recall": rows[0]["recall"], "qps": statistics.median(r["qps"] for r in rows)})
        return out

    return (
        {"build_secs": hl_build, "memory_bytes": hl_mem, "sweep": sweep("hnswlib")},
        {"build_secs": lb.head["build_secs"], "memory_bytes": lb.head["rss_delta_bytes"],
         "isa": lb.head["isa"], "sweep": sweep("longbow")},
    )


def at_recall(sweep, target):
    """QPS at exactly `target` recall, interpolated (in log QPS) between the two swept ef
    values that bracket it; the ef grid is coarse, so reading the first point above the
    target would compare engines at different recalls."""
    prev = None
    for row in sweep:
        if row["recall"] >= target:
            if prev is None or row["recall"] == prev["recall"]:
                return dict(row)
            t = (target - prev["recall"]) / (row["recall"] - prev["recall"])
            qps = math.exp(math.log(prev["qps"]) + t * (math.log(row["qps"]) - math.log(prev["qps"])))
            return {"ef": f"{prev['ef']}-{row['ef']}", "recall": target, "qps": qps}
        prev = row
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="clustered-128,minilm-384")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--efs", default=",".join(map(str, EFS)), help="comma-separated ef sweep")
    ap.add_argument("--rounds", type=int, default=5, help="query passes per engine and ef (median reported)")
    args = ap.parse_args()
    EFS[:] = [int(e) for e in args.efs.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    exe = build_longbow()
    report = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"M={args.m} ef_construction={args.efc} k={K}; build on all cores, queries single-threaded; "
        f"QPS is the median of {args.rounds} alternating passes per engine and ef",
        "",
    ]
    for name in args.sets.split(","):
        if name == "clustered-128":
            base, queries = clustered(100_000, 1_000, 128)
            metric = "l2"
        elif name == "minilm-384":
            if not SHARED.exists():
                print(f"skipping {name}: {SHARED} not found", file=sys.stderr)
                continue
            data = np.load(SHARED).astype(np.float32)
            base, queries = data[:-1000], data[-1000:]
            metric = "cosine"
        else:
            sys.exit(f"unknown set {name}")
        truth = ground_truth(base, queries, "l2" if metric == "l2" else "dot")
        files = {k: OUT / f"{name}.{k}" for k in ("base", "queries", "truth")}
        base.astype("<f4").tofile(files["base"])
        queries.astype("<f4").tofile(files["queries"])
        truth.astype("<u4").tofile(files["truth"])
        hl, lb = compare(exe, files, base, queries, truth, metric, args.m, args.efc, args.rounds)
        report.append(f"### {name}: {len(base):,} x {base.shape[1]} ({metric}), {len(queries):,} queries, Longbow kernels: {lb['isa']}")
        report.append("")
        report.append("| | hnswlib | Longbow | Longbow / hnswlib |")
        report.append("|---|---|---|---|")
        report.append(f"| build (s) | {hl['build_secs']:.2f} | {lb['build_secs']:.2f} | {hl['build_secs'] / lb['build_secs']:.2f}x faster |")
        report.append(f"| index memory (MiB, RSS growth) | {hl['memory_bytes'] / 2**20:.0f} | {lb['memory_bytes'] / 2**20:.0f} | |")
        for target in (0.90, 0.95, 0.99):
            h, l = at_recall(hl["sweep"], target), at_recall(lb["sweep"], target)
            if h is None or l is None:
                hq = "n/a" if h is None else f"{h['qps']:.0f}"
                lq = "n/a" if l is None else f"{l['qps']:.0f}"
                report.append(f"| QPS @ recall {target} | {hq} | {lq} | |")
                continue
            report.append(
                f"| QPS @ recall {target} | {h['qps']:.0f} (ef {h['ef']}, r {h['recall']:.3f}) "
                f"| {l['qps']:.0f} (ef {l['ef']}, r {l['recall']:.3f}) | {l['qps'] / h['qps']:.2f}x |"
            )
        report.append("")
        report.append("ef sweep (recall / QPS): " + "; ".join(
            f"ef {a['ef']}: hnswlib {a['recall']:.3f}/{a['qps']:.0f}, Longbow {b['recall']:.3f}/{b['qps']:.0f}"
            for a, b in zip(hl["sweep"], lb["sweep"])))
        report.append("")
        print("\n".join(report[-12:]), flush=True)
    text = "\n".join(report)
    (OUT / "hnsw_vs_hnswlib.md").write_text(text + "\n")
    print(f"\nreport written to {OUT / 'hnsw_vs_hnswlib.md'}")


if __name__ == "__main__":
    main()
