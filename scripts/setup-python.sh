#!/usr/bin/env bash
# Creates the Python environment the Python tests and the PyTorch scripts need, once, at
# scripts/.venv (or $WEIGHTNORM_VENV): numpy, torch, transformers, safetensors, onnx,
# onnxruntime, maturin, pytest and ruff at the versions in scripts/requirements.txt. An
# environment that already holds exactly these is reused as it is (nothing is downloaded);
# one made from another requirements file is brought up to date. Needs python3 (3.10 or newer)
# with its venv module; the torch wheel brings CUDA libraries (several GB).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${WEIGHTNORM_VENV:-scripts/.venv}
req=scripts/requirements.txt
stamp=$venv/.requirements

if [ -f "$stamp" ] && cmp -s "$stamp" "$req" && "$venv/bin/python" -c 'import torch, numpy' 2> /dev/null; then
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "scripts/setup-python.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi
echo "scripts/setup-python.sh: installing $req into $venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
