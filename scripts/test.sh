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
(
  cd sdk-python
  python3 -m ruff check .
  python3 -m ruff format --check .
  python3 -m mypy
  python3 -m pytest -q
)
