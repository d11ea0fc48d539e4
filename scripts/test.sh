#!/usr/bin/env bash
# Every check and every test of the project, in the order CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

echo "== python sdk: install (if needed), ruff, mypy, pytest"
if ! python3 -c "import longbow, pytest, mypy, ruff, dask.dataframe, pandas, tenacity" >/dev/null 2>&1; then
  python3 -m pip install -q -e "./sdk-python[pandas,dask,dev]"
fi
# Reuse the binary `cargo test` just built (a plain `cargo build` would rebuild dependencies
# with a different feature set).
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export LONGBOW_BIN="${LONGBOW_BIN:-$target_dir/debug/longbow}"
(
  cd sdk-python
  python3 -m ruff check .
  python3 -m ruff format --check .
  python3 -m mypy
  python3 -m pytest -q
)
