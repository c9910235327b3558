"""Fusing a 1B-parameter sharded checkpoint: ``weightnorm.fuse_file`` against the PyTorch way.

Makes (once, under --dir) a sharded safetensors checkpoint of 64 weight-normalized 4096x4096
linear layers in the legacy scheme (``weight_g``/``weight_v``, f32: 1.07e9 parameters, 4.3 GB),
then runs each way in a fresh process and reports its wall time and peak resident memory
(``ru_maxrss`` of the child):

- weightnorm: ``weightnorm.fuse_file(index, out_index)``, the input memory-mapped, the output
  written shard by shard;
- PyTorch: the model built on the meta device, the shards loaded with safetensors and assigned
  (no second copy of the parameters), ``torch.nn.utils.remove_weight_norm`` on every layer, the
  fused state dict saved with safetensors in shards of the same size.

Both read the input from the page cache (it is read once before the timed runs). The fused
tensors of the two are compared at the end (max relative difference).

    scripts/.venv/bin/python scripts/bench_fuse_file.py --dir /tmp/wn-1b
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LAYERS, WIDTH, PER_SHARD = 64, 4096, 8

MAKE = """
import json, sys, torch
from safetensors.torch import save_file
d, layers, width, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
gen = torch.Generator().manual_seed(0)
weight_map, shards = {}, (layers + per - 1) // per
for s in range(shards):
    name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    part = {}
    for i in range(s * per, min(layers, (s + 1) * per)):
        v = torch.randn(width, width, generator=gen)
        part[f"layers.{i}.weight_v"] = v
        part[f"layers.{i}.weight_g"] = torch.rand(width, 1, generator=gen) + 0.5
        part[f"layers.{i}.bias"] = torch.zeros(width)
    save_file(part, f"{d}/{name}")
    weight_map.update({k: name for k in part})
json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{d}/model.safetensors.index.json", "w"))
"""

OURS = """
import sys, weightnorm
weightnorm.fuse_file(sys.argv[1], sys.argv[2], force=True)
"""

PYTORCH = """
import json, sys, warnings, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst, layers, width, per = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
warnings.simplefilter("ignore", FutureWarning)
with torch.device("meta"):
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(
        torch.nn.utils.weight_norm(torch.nn.Linear(width, width)) for _ in range(layers))
index = json.load(open(src))
sd = {}
for f in sorted(set(index["weight_map"].values())):
    sd.update(load_file(Path(src).parent / f))
model.load_state_dict(sd, assign=True)
del sd
for layer in model.layers:
    torch.nn.utils.remove_weight_norm(layer)
out = model.state_dict()
names = sorted(out)
shards = (layers + per - 1) // per
weight_map = {}
for s in range(shards):
    keys = [k for k in names if per * s <= int(k.split(".")[1]) < per * (s + 1)]
    name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    save_file({k: out[k].contiguous() for k in keys}, Path(dst).parent / name)
    weight_map.update({k: name for k in keys})
json.dump({"metadata": {}, "weight_map": weight_map}, open(dst, "w"))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="where the checkpoints go")
    args = ap.parse_args()
    src = args.dir / "in"
    index = src / "model.safetensors.index.json"
    if not index.exists():
        src.mkdir(parents=True, exist_ok=True)
        print(f"making {LAYERS} layers of {WIDTH}x{WIDTH} in {src}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-c",
                MAKE,
                str(src),
                str(LAYERS),
                str(WIDTH),
                str(PER_SHARD),
            ],
            check=True,
        )
    size = sum(f.stat().st_size for f in src.iterdir())
    for f in src.iterdir():
        f.read_bytes()  # into the page cache, for both
    outs = {}
    results = {}
    # Each way in its own runner process, whose children's peak RSS is that way's alone.
    for name, code in (("pytorch", PYTORCH), ("weightnorm", OURS)):
        out = args.dir / f"out-{name}"
        out.mkdir(exist_ok=True)
        outs[name] = out / "model.safetensors.index.json"
        extra = [str(LAYERS), str(WIDTH), str(PER_SHARD)] if name == "pytorch" else []
        runner = (
            "import resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], check=True)\n"
            "w = time.perf_counter() - t\n"
            "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        )
        line = subprocess.run(
            [sys.executable, "-c", runner, code, str(index), str(outs[name]), *extra],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        results[name] = (float(line[0]), int(line[1]) / 2**20)
        print(
            f"{name:>10}: {results[name][0]:6.1f} s wall, peak RSS {results[name][1]:5.2f} GiB",
            flush=True,
        )
    check = (
        "import json, sys, torch\n"
        "from pathlib import Path\n"
        "from safetensors import safe_open\n"
        "a, b = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "ia, ib = json.load(open(a)), json.load(open(b))\n"
        "assert sorted(ia['weight_map']) == sorted(ib['weight_map'])\n"
        "worst = 0.0\n"
        "for k, f in ia['weight_map'].items():\n"
        "    with safe_open(a.parent / f, 'pt') as x, "
        "safe_open(b.parent / ib['weight_map'][k], 'pt') as y:\n"
        "        p, q = x.get_tensor(k).double(), y.get_tensor(k).double()\n"
        "        s = q.abs().max().item()\n"
        "        worst = max(worst, ((p - q).abs().max().item() / s) if s else 0.0)\n"
        "print(worst)\n"
    )
    diff = subprocess.run(
        [sys.executable, "-c", check, str(outs["weightnorm"]), str(outs["pytorch"])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        json.dumps(
            {
                "parameters": LAYERS * (WIDTH * WIDTH + 2 * WIDTH),
                "input_bytes": size,
                "weightnorm": {
                    "wall_s": results["weightnorm"][0],
                    "peak_rss_gib": results["weightnorm"][1],
                },
                "pytorch": {
                    "wall_s": results["pytorch"][0],
                    "peak_rss_gib": results["pytorch"][1],
                },
                "max_relative_difference": float(diff),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
