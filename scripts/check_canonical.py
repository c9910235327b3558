#!/usr/bin/env python3
"""Checks the output of `weightnorm canonicalize` independently, in PyTorch.

Builds the architecture file's network twice as PyTorch modules (nn.Sequential naming,
residual blocks as `<i>.body.<j>`), loads the original checkpoint into one and the canonical
checkpoint (OUT, without `canonical.scale`) into the other, strictly, and checks that

  - original(x) == canonical(x) * canonical.scale (per output channel), relative to the largest
    output, within --tol;
  - the argmax of both is the same on every input;
  - every weighted layer's rows (one output unit or channel each) have unit norm, except the
    layers the report (--report) says carry a scale;
  - ||canonical.scale|| is the report's global gain.

Inputs: the UCI digits test split or Fashion-MNIST's (--dataset, standardized as weightnorm
does), or random normal samples of the architecture's input shape.

Usage:
  python scripts/check_canonical.py ORIGINAL.safetensors OUT.safetensors ARCH.json \
      [--report R.json] [--dataset digits|fashion-mnist] [--metrics RUN/metrics.json]
Exits 1 if a check fails.
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_nets import digits_test, fuse_pairs, idx, network, weighted_keys  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("original")
    ap.add_argument("canonical")
    ap.add_argument("arch")
    ap.add_argument("--report")
    ap.add_argument("--dataset", choices=["digits", "fashion-mnist"])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--metrics", help="metrics.json of the run (input_mean/input_std); else recomputed")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    arch = json.load(open(args.arch))
    original = fuse_pairs(load_file(args.original))
    canon = load_file(args.canonical)
    scale = canon.pop("canonical.scale").double()
    m0, m1 = network(arch, original), network(arch, canon)

    shape = arch["input"]
    if args.dataset:
        if args.dataset == "digits":
            x, y = digits_test()
        else:
            x = idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz")).float().unsqueeze(1) / 255.0
            y = idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz")).long()
        if args.metrics:
            m = json.load(open(args.metrics))
            mean, std = m["input_mean"], m["input_std"]
        else:
            raise SystemExit("--dataset needs --metrics (the run's input_mean and input_std)")
        x = ((x - mean) / std).reshape([-1] + shape).double()
    else:
        torch.manual_seed(0)
        x, y = torch.randn([args.samples] + shape, dtype=torch.float64), None

    with torch.no_grad():
        a = m0(x)
        z = m1(x)
    b = z * scale.view([1, -1] + [1] * (z.dim() - 2))
    rel = ((a - b).abs().max() / a.abs().max()).item()
    same = (a.argmax(1) == b.argmax(1)).float().mean().item() if a.dim() == 2 and a.shape[1] > 1 else 1.0
    ok = rel <= args.tol and same == 1.0
    print("PyTorch: max |original - canonical * scale| / max |original| = %.3e (tol %.0e); argmax agreement %.6f on %d inputs"
          % (rel, args.tol, same, x.shape[0]))
    if y is not None:
        print("accuracy: original %.4f, canonical %.4f" % ((a.argmax(1) == y).float().mean().item(),
                                                            (b.argmax(1) == y).float().mean().item()))

    carried = set()
    if args.report:
        report = json.load(open(args.report))
        carried = {l["layer"] for l in report["layers"] if l["carries"]}
        gain = scale.norm().item()
        print("||canonical.scale|| = %.9g, report global_gain = %.9g" % (gain, report["global_gain"]))
        ok &= abs(gain - report["global_gain"]) <= 1e-6 * max(1.0, gain)
    worst = 0.0
    for layer, key in weighted_keys(arch["layers"]):
        if layer in carried:
            continue
        w = canon[key + ".weight"].double()
        n = w.reshape(w.shape[0], -1).norm(dim=1)
        n = n[n > 0]
        if n.numel():
            worst = max(worst, (n - 1).abs().max().item())
    print("unit rows: max | ||row|| - 1 | = %.3e over the layers that carry no scale" % worst)
    ok &= worst <= 1e-6
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
