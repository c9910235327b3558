#!/bin/sh
# `weightnorm bench` and `scripts/bench_torch.py` in one run, printed side by side: ours, PyTorch
# as a user runs it (glibc's default allocator settings), and PyTorch under the allocator
# settings `weightnorm` runs with (read from its JSON).
#
# Usage: scripts/bench_side_by_side.sh [--threads N] [--runs N | --quick] [--filter TEXT]
#   (the options go to both benchmarks)
# Environment: PYTHON (default python3, with torch), WEIGHTNORM (the binary; default
# ${CARGO_TARGET_DIR:-target}/release/weightnorm, built if missing), BENCH_OUT (a directory to
# keep the three JSON files in).
set -eu
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
wn=${WEIGHTNORM:-${CARGO_TARGET_DIR:-target}/release/weightnorm}
if [ ! -x "$wn" ]; then
    cargo build --release -p weightnorm-cli
fi
if [ -n "${BENCH_OUT:-}" ]; then
    out=$BENCH_OUT
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
"$wn" bench --json "$@" > "$out/weightnorm.json"
"$py" scripts/bench_torch.py --json "$@" > "$out/torch.json"
threshold=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["allocator"]["mmap_threshold"] or "")' "$out/weightnorm.json")
if [ -n "$threshold" ]; then
    "$py" scripts/bench_torch.py --json --same-allocator "$threshold" "$@" > "$out/torch_same.json"
    "$py" scripts/bench_torch.py --table "$out/weightnorm.json" "$out/torch.json" "$out/torch_same.json"
else
    echo "weightnorm ran with the allocator as it was: no third table" >&2
    "$py" scripts/bench_torch.py --table "$out/weightnorm.json" "$out/torch.json"
fi
