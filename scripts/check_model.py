#!/usr/bin/env python3
"""Loads what `weightnorm train` wrote (model.safetensors + arch.json) into a PyTorch
nn.Sequential, strictly, and recomputes the test accuracy saved in metrics.json.

Usage:  python scripts/check_model.py RUN_DIR [--data /usr/share/datasets/fashion-mnist]
Exits 1 if the accuracy differs from metrics.json by more than --tol (default 1e-3, i.e. a
handful of borderline test images out of 10000).
"""

import argparse
import gzip
import json
import os
import struct
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file


class MeanOnlyBatchNorm(nn.Module):
    """Evaluation mode of weightnorm's mean-only batch norm: x - running_mean + bias."""

    def __init__(self, n):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))

    def forward(self, x):
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x - self.running_mean.view(shape) + self.bias.view(shape)


def build(arch, state):
    layers = []
    for i, layer in enumerate(arch["layers"]):
        op, key = layer["op"], layer.get("param", str(i))
        if op == "linear":
            out_f, in_f = state[key + ".weight"].shape
            layers.append(nn.Linear(in_f, out_f, bias=(key + ".bias") in state))
        elif op == "conv2d":
            o, c, kh, kw = state[key + ".weight"].shape
            layers.append(nn.Conv2d(c * layer.get("groups", 1), o, (kh, kw), stride=layer["stride"],
                                    padding=layer["padding"], dilation=layer["dilation"], groups=layer.get("groups", 1),
                                    bias=(key + ".bias") in state))
        elif op == "relu":
            layers.append(nn.ReLU())
        elif op == "max_pool2d":
            layers.append(nn.MaxPool2d(layer["kernel"], layer["stride"], layer["padding"]))
        elif op == "avg_pool2d":
            layers.append(nn.AvgPool2d(layer["kernel"], layer["stride"], layer["padding"]))
        elif op == "flatten":
            layers.append(nn.Flatten())
        elif op == "batch_norm":
            n = state[key + ".weight"].shape[0]
            spatial = any(l["op"] == "conv2d" for l in arch["layers"][:i]) and not any(
                l["op"] == "flatten" for l in arch["layers"][:i])
            bn = nn.BatchNorm2d if spatial else nn.BatchNorm1d
            layers.append(bn(n, eps=layer.get("eps", 1e-5)))
        elif op == "mean_only_batch_norm":
            layers.append(MeanOnlyBatchNorm(state[key + ".bias"].shape[0]))
        else:
            raise SystemExit("unknown op %s" % op)
        assert key == str(i), "arch.json param keys are nn.Sequential indices"
    model = nn.Sequential(*layers)
    model.load_state_dict(state, strict=True)
    return model.eval()


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    sizes = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(raw[4 + 4 * dims:]), dtype=torch.uint8).reshape(sizes)


def digits_test():
    """The UCI digits test split of weightnorm (the same SplitMix64 shuffle)."""
    path = os.path.join(os.path.dirname(__file__), "..", "crates", "weightnorm-cli", "data", "uci-digits.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = [[int(v) for v in line.split(",")] for line in f.read().splitlines()]
    order = list(range(len(rows)))
    state, mask = 0x5EED, (1 << 64) - 1
    for i in range(len(order) - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        j = z % (i + 1)
        order[i], order[j] = order[j], order[i]
    test = [rows[i] for i in order[:360]]
    x = torch.tensor([r[:64] for r in test], dtype=torch.float32) / 16.0
    y = torch.tensor([r[64] for r in test])
    return x.reshape(-1, 1, 8, 8), y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    metrics = json.load(open(os.path.join(args.run, "metrics.json")))
    arch = json.load(open(os.path.join(args.run, "arch.json")))
    model = build(arch, load_file(os.path.join(args.run, "model.safetensors")))
    if metrics["dataset"] == "digits":
        x, y = digits_test()
    else:
        x = idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz")).float().unsqueeze(1) / 255.0
        y = idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz")).long()
    # The inputs were standardized with the training pixels' mean and standard deviation.
    x = (x - metrics["input_mean"]) / metrics["input_std"]
    if len(arch["input"]) == 1:
        x = x.flatten(1)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    saved = metrics["test_accuracy"]
    print("PyTorch test accuracy %.4f, saved by weightnorm %.4f (difference %.1e)" % (acc, saved, acc - saved))
    sys.exit(0 if abs(acc - saved) <= args.tol else 1)


if __name__ == "__main__":
    main()
