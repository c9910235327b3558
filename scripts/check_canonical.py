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
import torch.nn as nn
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from check_model import MeanOnlyBatchNorm, digits_test, idx  # noqa: E402


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x):
        return x + self.body(x)


class Gate(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)


def fuse_pairs(state):
    """Weight-norm pairs (either key scheme) to plain weights, per output unit (dim 0)."""
    out = {}
    for k, v in state.items():
        for g_key, v_key, base in ((".weight_g", ".weight_v", ".weight"),
                                   (".parametrizations.weight.original0", ".parametrizations.weight.original1", ".weight")):
            if k.endswith(v_key):
                g = state[k[: -len(v_key)] + g_key]
                dims = [d for d in range(v.dim()) if g.shape[d] == 1]
                out[k[: -len(v_key)] + base] = g * v / v.pow(2).sum(dim=dims, keepdim=True).sqrt()
                break
            if k.endswith(g_key):
                break
        else:
            out[k] = v
    return out


def build(layers, state, prefix, rank):
    mods = []
    for i, layer in enumerate(layers):
        op = layer["op"]
        key = layer.get("param", prefix + str(i))
        if op == "linear":
            o, n = state[key + ".weight"].shape
            mods.append(nn.Linear(n, o, bias=(key + ".bias") in state))
            rank = 1
        elif op in ("conv1d", "conv2d"):
            w = state[key + ".weight"]
            g = layer.get("groups", 1)
            conv = nn.Conv1d if op == "conv1d" else nn.Conv2d
            mods.append(conv(w.shape[1] * g, w.shape[0], tuple(w.shape[2:]), stride=layer.get("stride", 1),
                             padding=layer.get("padding", 0), dilation=layer.get("dilation", 1), groups=g,
                             bias=(key + ".bias") in state))
        elif op == "relu":
            mods.append(nn.ReLU())
        elif op == "leaky_relu":
            mods.append(nn.LeakyReLU(layer.get("negative_slope", 0.01)))
        elif op in ("identity", "dropout"):
            mods.append(nn.Identity())
        elif op == "tanh":
            mods.append(nn.Tanh())
        elif op == "sigmoid":
            mods.append(nn.Sigmoid())
        elif op == "gelu":
            mods.append(nn.GELU())
        elif op == "gate":
            mods.append(Gate())
        elif op in ("max_pool2d", "avg_pool2d"):
            pool = nn.MaxPool2d if op == "max_pool2d" else nn.AvgPool2d
            k = layer["kernel"]
            mods.append(pool(k, layer.get("stride", k), layer.get("padding", 0)))
        elif op == "flatten":
            mods.append(nn.Flatten())
            rank = 1
        elif op == "batch_norm":
            n = state[key + ".running_mean"].shape[0]
            bn = nn.BatchNorm2d if rank == 3 else nn.BatchNorm1d
            mods.append(bn(n, eps=layer.get("eps", 1e-5), affine=(key + ".weight") in state))
        elif op == "mean_only_batch_norm":
            mods.append(MeanOnlyBatchNorm(state[key + ".running_mean"].shape[0]))
        elif op == "residual":
            mods.append(Residual(build(layer["body"], state, prefix + str(i) + ".body.", rank)))
        else:
            raise SystemExit("unknown op %s" % op)
    return mods


def network(arch, state):
    model = nn.Sequential(*build(arch["layers"], state, "", len(arch["input"])))
    model.load_state_dict(state, strict=True)
    return model.double().eval()


def weighted_keys(layers, prefix=""):
    for i, layer in enumerate(layers):
        key = layer.get("param", prefix + str(i))
        if layer["op"] in ("linear", "conv1d", "conv2d"):
            yield prefix + str(i), key
        elif layer["op"] == "residual":
            yield from weighted_keys(layer["body"], prefix + str(i) + ".body.")


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
            train_mean_std = None
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
