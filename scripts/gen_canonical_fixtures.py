#!/usr/bin/env python3
"""Makes the canonical-form fixtures: small PyTorch networks using every op of the
architecture format, with their checkpoints, architecture files, inputs and PyTorch's outputs.

For each network NAME, writes under crates/weightnorm-core/tests/fixtures/canonical/:
  NAME.safetensors      the state dict (float32; some layers as weight-norm pairs, in both
                        key schemes; batch norms with random running statistics)
  NAME.arch.json        the architecture file
  NAME.io.safetensors   x: a batch of inputs (float64), expected: PyTorch's outputs in float64
                        (the float32 weights cast to float64), for `weightnorm canonicalize
                        --inputs` and the library's tests

Usage:  python scripts/gen_canonical_fixtures.py
"""

import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_nets import Gate, MeanOnlyBatchNorm, Residual  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "weightnorm-core", "tests", "fixtures", "canonical")


def randomize(model):
    """Random running statistics and affine parameters for every normalization, random
    mean-only biases: what a trained model would have."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n) * 0.5)
            m.running_var.copy_(torch.rand(n) * 2 + 0.2)
            if m.affine:
                m.weight.data.copy_(torch.randn(n))
                m.bias.data.copy_(torch.randn(n) * 0.3)
            m.num_batches_tracked.fill_(17)
        if isinstance(m, MeanOnlyBatchNorm):
            m.running_mean.copy_(torch.randn(m.bias.shape[0]) * 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape[0]) * 0.3)


def zoo2d():
    arch = {"input": [3, 9, 9], "layers": [
        {"op": "conv2d", "padding": 1},
        {"op": "batch_norm", "eps": 1e-5},
        {"op": "leaky_relu", "negative_slope": 0.1},
        {"op": "residual", "body": [
            {"op": "conv2d", "padding": 2, "dilation": 2, "groups": 2},
            {"op": "batch_norm"},
            {"op": "relu"},
            {"op": "conv2d"},
        ]},
        {"op": "avg_pool2d", "kernel": 2, "stride": 2, "padding": 1},
        {"op": "conv2d", "stride": [1, 2]},
        {"op": "gelu"},
        {"op": "max_pool2d", "kernel": [2, 1], "stride": 1},
        {"op": "flatten"},
        {"op": "linear"},
        {"op": "dropout", "p": 0.5},
        {"op": "relu"},
        {"op": "mean_only_batch_norm"},
        {"op": "linear"},
        {"op": "tanh"},
        {"op": "linear"},
    ]}
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.LeakyReLU(0.1),
        Residual([nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=2), nn.BatchNorm2d(6), nn.ReLU(),
                  nn.Conv2d(6, 6, 1)]),
        nn.AvgPool2d(2, 2, 1),
        nn.utils.weight_norm(nn.Conv2d(6, 8, 3, stride=(1, 2))),
        nn.GELU(),
        nn.MaxPool2d((2, 1), 1),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 16),
        nn.Dropout(0.5),
        nn.ReLU(),
        MeanOnlyBatchNorm(16),
        nn.Linear(16, 8),
        nn.Tanh(),
        nn.Linear(8, 10),
    )
    return model, arch, [3, 9, 9]


def zoo1d():
    arch = {"input": [4, 20], "layers": [
        {"op": "conv1d", "stride": 2, "padding": 2},
        {"op": "gate"},
        {"op": "conv1d"},
        {"op": "sigmoid"},
        {"op": "conv1d"},
        {"op": "relu"},
        {"op": "residual", "body": [{"op": "tanh"}, {"op": "conv1d", "padding": 1}]},
        {"op": "identity"},
        {"op": "flatten"},
        {"op": "linear"},
    ]}
    model = nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 8, 5, stride=2, padding=2)),
        Gate(),
        nn.Conv1d(4, 6, 3),
        nn.Sigmoid(),
        nn.Conv1d(6, 6, 1, bias=False),
        nn.ReLU(),
        Residual([nn.Tanh(), nn.Conv1d(6, 6, 3, padding=1)]),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(6 * 8, 5),
    )
    return model, arch, [4, 20]


def mlp_residual():
    arch = {"input": [10], "layers": [
        {"op": "linear"},
        {"op": "batch_norm"},
        {"op": "relu"},
        {"op": "residual", "body": [{"op": "linear"}, {"op": "relu"}, {"op": "linear"}]},
        {"op": "residual", "body": [{"op": "relu"}]},
        {"op": "residual", "body": [
            {"op": "linear"}, {"op": "relu"},
            {"op": "residual", "body": [{"op": "linear"}, {"op": "leaky_relu", "negative_slope": -0.5}, {"op": "linear"}]},
            {"op": "linear"},
        ]},
        {"op": "linear"},
    ]}
    model = nn.Sequential(
        nn.Linear(10, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        Residual([nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 12)]),
        Residual([nn.ReLU()]),
        Residual([nn.Linear(12, 7), nn.ReLU(),
                  Residual([nn.Linear(7, 7), nn.LeakyReLU(-0.5), nn.Linear(7, 7)]),
                  nn.Linear(7, 12)]),
        nn.utils.weight_norm(nn.Linear(12, 5)),
    )
    return model, arch, [10]


def main():
    os.makedirs(OUT, exist_ok=True)
    for seed, make in enumerate([zoo2d, zoo1d, mlp_residual]):
        torch.manual_seed(100 + seed)
        model, arch, shape = make()
        with torch.no_grad():
            randomize(model)
            for p in model.parameters():
                p.mul_(2.0)  # magnitudes away from 1, so that the scales are not trivial
        model.eval()
        name = make.__name__
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(OUT, name + ".safetensors"))
        with open(os.path.join(OUT, name + ".arch.json"), "w") as f:
            json.dump(arch, f, indent=1)
        x = torch.randn([12] + shape, dtype=torch.float64)
        with torch.no_grad():
            y = model.double()(x)
        save_file({"x": x.contiguous(), "expected": y.contiguous()}, os.path.join(OUT, name + ".io.safetensors"))
        print(name, sum(v.numel() for v in state.values()), "values,", list(y.shape), "outputs")


if __name__ == "__main__":
    main()
