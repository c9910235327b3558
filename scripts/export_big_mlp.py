#!/usr/bin/env python3
"""Exports a plain ReLU MLP of about 100M parameters from PyTorch to ONNX, for timing
`weightnorm canonicalize MODEL.onnx` on a real export (issue: the time and peak memory to
canonicalize an ONNX export of a 100M-parameter MLP).

The MLP: WIDTH inputs, HIDDEN layers Linear(WIDTH, WIDTH) + ReLU, then Linear(WIDTH, 10)
(default 4096 and 6: 100,728,842 parameters, 403 MB in f32), random weights (seed 0),
exported with the TorchScript exporter (dynamo=False; --dynamo for the default exporter).

Usage:  python scripts/export_big_mlp.py DIR [--width 4096] [--hidden 6] [--dynamo]
Then:   /usr/bin/time -v weightnorm canonicalize DIR/model.onnx -o DIR/canonical.onnx \
            --report DIR/canonical.json
"""

import argparse
import os

import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=6)
    ap.add_argument("--dynamo", action="store_true", help="PyTorch's default (dynamo) exporter")
    args = ap.parse_args()
    torch.manual_seed(0)
    layers = []
    for _ in range(args.hidden):
        layers += [nn.Linear(args.width, args.width), nn.ReLU()]
    layers.append(nn.Linear(args.width, 10))
    model = nn.Sequential(*layers).eval()
    params = sum(p.numel() for p in model.parameters())
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "model.onnx")
    x = torch.randn(2, args.width)
    torch.onnx.export(
        model,
        (x,),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes=None if args.dynamo else {"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=args.dynamo,
    )
    print("wrote %s: %d parameters (%d MB)" % (path, params, os.path.getsize(path) // 10**6))


if __name__ == "__main__":
    main()
