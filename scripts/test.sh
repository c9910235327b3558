#!/usr/bin/env bash
# Every test, Rust and Python: the README's test command, and what .ci/run runs after the
# linters.
#   1. scripts/setup.sh: the Debian packages (Fashion-MNIST, Mesa's software Vulkan driver)
#   2. scripts/setup-python.sh: the Python environment (scripts/.venv), created once
#   3. the Rust suite: the workspace in release, with the GPU kernel's tests on wgpu
#   4. the Python package built from this checkout (maturin, the same target directory) and
#      installed into the environment, then its pytest suite against PyTorch
# Arguments are passed to pytest (e.g. -k remove).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${WEIGHTNORM_VENV:-scripts/.venv}
scripts/setup.sh
scripts/setup-python.sh
cargo test --workspace --release --locked --features weightnorm-cli/wgpu
# maturin's build backend runs the `maturin` of the environment: put it first on PATH.
PATH="$(cd "$venv/bin" && pwd):$PATH" "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
    --force-reinstall --no-deps ./crates/weightnorm-py
"$venv/bin/python" -m pytest -q crates/weightnorm-py/tests "$@"
