#!/usr/bin/env python3
"""One training step (forward, backward, Adam) of an MLP 784-1024-1024-10 in PyTorch, plain and
with weight norm (torch.nn.utils.parametrizations.weight_norm), at batch 16 and 128: the
side-by-side of `cargo bench -p weightnorm --bench train_step`.

Usage:  python scripts/bench_torch_train.py [--threads N]
"""

import argparse
import os
import statistics
import time

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm


def mlp(wn):
    layers = [nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)]
    if wn:
        layers = [weight_norm(m) if isinstance(m, nn.Linear) else m for m in layers]
    return nn.Sequential(*layers)


def median_ms(fn, seconds=4.0):
    for _ in range(5):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    loss_fn = nn.CrossEntropyLoss()
    for batch in [16, 128]:
        x = torch.randn(batch, 784)
        y = torch.arange(batch) % 10
        row = []
        for wn in [False, True]:
            torch.manual_seed(0)
            model = mlp(wn)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def fwd_bwd():
                model.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()

            def step():
                fwd_bwd()
                opt.step()

            row.append((median_ms(fwd_bwd), median_ms(step)))
        (pf, ps), (wf, ws) = row
        print("batch %3d  forward+backward: plain %.3f ms, weight norm %.3f ms (+%.0f%%)   "
              "step: plain %.3f ms, weight norm %.3f ms (+%.0f%%)"
              % (batch, pf, wf, 100 * (wf / pf - 1), ps, ws, 100 * (ws / ps - 1)))


if __name__ == "__main__":
    main()
