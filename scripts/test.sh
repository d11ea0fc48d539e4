#!/usr/bin/env bash
# Every check and every test of the project, in the order CI runs them.
#
# Python tools go into a virtual environment at ./.venv (created on first use; override with
# LONGBOW_VENV), never into the system Python.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

venv="${LONGBOW_VENV:-$PWD/.venv}"
echo "== python: virtual environment $venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import longbow, pytest, mypy, ruff, dask.dataframe, pandas, tenacity, tqdm, mkdocs, mkdocstrings, nbclient, ipykernel, build, check_jsonschema" >/dev/null 2>&1; then
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q -e "./sdk-python[pandas,dask,dev,docs]"
fi
# Reuse the binary `cargo test` just built (a plain `cargo build` would rebuild dependencies
# with a different feature set).
target_dir=$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export LONGBOW_BIN="${LONGBOW_BIN:-$target_dir/debug/longbow}"
(
  cd sdk-python
  echo "== python sdk: ruff, mypy, pytest (SDK and wire contract against longbow local)"
  "$py" -m ruff check .
  "$py" -m ruff format --check .
  "$py" -m mypy
  "$py" -m pytest -q
)
echo "== docs: mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 "$py" -m mkdocs build --strict --quiet
echo "== docs: the getting-started notebook against longbow local"
"$py" scripts/run_notebook.py "$LONGBOW_BIN" docs/notebooks/getting-started.ipynb
echo "== soak smoke: 2 minutes of mixed workload on 3 shard nodes, then the audit"
# Correctness is checked in full; two minutes are still warm-up for memory, so RSS gets a
# loose bound here (the recorded 30-minute run checks 10 % over its last 10 minutes).
cargo build --locked -p longbow-soak
"$target_dir/debug/longbow-soak" --binary "$LONGBOW_BIN" --out "$target_dir/soak-smoke" \
  --duration-secs 120 --shard-arg=--checkpoint-interval-secs=20 --max-rss-growth 0.5 >/dev/null \
  || { cat "$target_dir/soak-smoke/report.md"; exit 1; }
echo "soak smoke passed; report in $target_dir/soak-smoke"
echo "== chaos smoke: 6 faults on shard nodes and on a group of 3 coordinators (kill -9, SIGSTOP, partitions as root) under load, then the data and catalog audits"
cargo build --locked -p longbow-chaos
"$target_dir/debug/longbow-chaos" --binary "$LONGBOW_BIN" --out "$target_dir/chaos-smoke" \
  --trials 6 --initial-rows 2000 >/dev/null \
  || { cat "$target_dir/chaos-smoke/report.md"; exit 1; }
echo "chaos smoke passed; report in $target_dir/chaos-smoke"
echo "== packaging: SDK wheel and sdist, release workflow schema"
rm -rf "$target_dir/sdk-dist"
"$py" -m build --outdir "$target_dir/sdk-dist" sdk-python >/dev/null
ls "$target_dir/sdk-dist"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
