#!/usr/bin/env python3
"""Two builds of Longbow's HNSW bench binary on the same data, in one run: did a change
move single-thread search speed?

Both binaries build the same index in `--serve` mode, then answer query passes that
alternate between them (7 rounds per ef, medians reported), so a slow spell on a shared
machine hits both. Uses the data files `bench/hnsw_vs_hnswlib.py` writes to bench/out/.

Usage:
  python3 bench/hnsw_vs_hnswlib.py --sets minilm-384     # once, to write bench/out/ data
  cargo bench -p longbow-shard --bench hnsw --no-run     # build each version, copy its
                                                         # target/release/deps/hnsw-* aside
  python3 bench/ab_builds.py OLD_EXE NEW_EXE [--set minilm-384] [--efs 16,32,64,128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
SETS = {"minilm-384": (384, "cosine"), "clustered-128": (128, "l2")}


class Serve:
    def __init__(self, exe: str, name: str) -> None:
        dim, metric = SETS[name]
        cmd = [exe, "--serve", "--dim", str(dim), "--metric", metric, "--m", "16",
               "--ef-construction", "200", "--k", "10"]
        for part in ("base", "queries", "truth"):
            cmd += [f"--{part}", str(OUT / f"{name}.{part}")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.head = self.read()

    def read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"bench binary exited with {self.proc.wait()}")

    def query(self, ef: int) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{ef}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--set", default="minilm-384", choices=sorted(SETS))
    ap.add_argument("--efs", default="16,32,64,128")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    efs = [int(e) for e in args.efs.split(",")]
    engines = {"old": Serve(args.old, args.set), "new": Serve(args.new, args.set)}
    print(f"{args.set}: build old {engines['old'].head['build_secs']:.2f} s, "
          f"new {engines['new'].head['build_secs']:.2f} s")
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for ef in efs:
            for name in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                runs.setdefault((name, ef), []).append(engines[name].query(ef))
    for e in engines.values():
        e.close()
    for ef in efs:
        qps = {n: statistics.median(x["qps"] for x in runs[(n, ef)]) for n in engines}
        rec = {n: runs[(n, ef)][0]["recall"] for n in engines}
        print(f"ef {ef}: old {qps['old']:.0f} QPS (recall {rec['old']:.4f}), "
              f"new {qps['new']:.0f} QPS (recall {rec['new']:.4f}), new/old {qps['new'] / qps['old']:.3f}")


if __name__ == "__main__":
    main()
