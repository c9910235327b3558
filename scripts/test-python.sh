#!/usr/bin/env bash
# The Python half of the README's test command: builds the Python package from this checkout
# (maturin, the workspace's target directory) into the environment scripts/setup-python.sh
# made, then runs its pytest suite against PyTorch. Arguments are passed to pytest (-k remove).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${WEIGHTNORM_VENV:-scripts/.venv}
# maturin's build backend runs the `maturin` of the environment: put it first on PATH.
PATH="$(cd "$venv/bin" && pwd):$PATH" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --no-build-isolation --force-reinstall --no-deps ./crates/weightnorm-py
"$venv/bin/python" -m pytest -q crates/weightnorm-py/tests "$@"
