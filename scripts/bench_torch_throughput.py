#!/usr/bin/env python3
"""Training throughput (examples/s) of the models of `weightnorm train` in PyTorch, on the same
machine and thread count: the MLP 784-256-128-10 and the CNN (3x3 convolutions of 32, 64, 128
channels, ReLU, two 2x2 max pools, the flatten head: Linear 6272 -> 128, Linear 10), plain and
weight-normalized, Adam, batch 128, on random Fashion-MNIST-shaped data.

Usage:  python scripts/bench_torch_throughput.py [--threads N] [--steps 200]
"""

import argparse
import os
import time

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def wn(model):
    for i, m in enumerate(model):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            model[i] = weight_norm(m)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("torch %s, %d threads, batch %d" % (torch.__version__, torch.get_num_threads(), args.batch))
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    loss_fn = nn.CrossEntropyLoss()
    for name, make in [("mlp", mlp), ("cnn", cnn)]:
        for param in ["plain", "wn"]:
            torch.manual_seed(0)
            model = make() if param == "plain" else wn(make())
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            steps = args.steps if name == "mlp" else max(args.steps // 5, 10)
            for i in range(steps + 5):
                if i == 5:
                    t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
            dt = time.perf_counter() - t0
            print("%s %-5s %8.0f examples/s (%.2f ms/step)" % (name, param, steps * args.batch / dt, dt / steps * 1e3))


if __name__ == "__main__":
    main()
