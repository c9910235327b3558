#!/usr/bin/env python3
"""Loads what `weightnorm train` wrote (model.safetensors + arch.json) into a PyTorch
nn.Sequential, strictly, and recomputes the test accuracy saved in metrics.json.

Usage:  python scripts/check_model.py RUN_DIR [--data /usr/share/datasets/fashion-mnist]
Exits 1 if the accuracy differs from metrics.json by more than --tol (default 1e-3, i.e. a
handful of borderline test images out of 10000).
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_nets import digits_test, idx, network  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    metrics = json.load(open(os.path.join(args.run, "metrics.json")))
    arch = json.load(open(os.path.join(args.run, "arch.json")))
    model = network(arch, load_file(os.path.join(args.run, "model.safetensors")), torch.float32)
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
