#!/usr/bin/env python3
"""Times torch._weight_norm on the shapes of `cargo bench -p weightnorm --bench weight_norm`.

forward:           w = torch._weight_norm(v, g, dim)           (no autograd)
forward+backward:  the same with v, g requiring grad, then torch.autograd.grad(w, (v, g), dw)
copy:              v.clone(), the memory-copy baseline

Usage:  python scripts/bench_torch.py [--threads N]   (default: all cores, as rayon uses)
Prints one line per measurement: the median of the repeats, in milliseconds.
"""

import argparse
import os
import statistics
import time

import torch

CASES = [
    ("4096x4096/axis0", (4096, 4096), 0),
    ("4096x4096/whole", (4096, 4096), -1),  # -1: the whole tensor in _weight_norm
    ("512x256x3x3/axis0", (512, 256, 3, 3), 0),
    ("512x512x7/axis0", (512, 512, 7), 0),
]


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    for name, shape, dim in CASES:
        torch.manual_seed(0)
        v = torch.randn(shape)
        dw = torch.randn(shape)
        g = torch.norm_except_dim(v, 2, dim)
        with torch.no_grad():
            fwd = median_ms(lambda: torch._weight_norm(v, g, dim), args.repeats)
            copy = median_ms(lambda: v.clone(), args.repeats)
        vr = v.clone().requires_grad_(True)
        gr = g.clone().requires_grad_(True)

        def fwd_bwd():
            w = torch._weight_norm(vr, gr, dim)
            return torch.autograd.grad(w, (vr, gr), dw)

        both = median_ms(fwd_bwd, args.repeats)
        print("%-20s copy %8.3f ms   forward %8.3f ms   forward+backward %8.3f ms" % (name, copy, fwd, both))


if __name__ == "__main__":
    main()
