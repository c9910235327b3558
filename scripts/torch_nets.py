"""PyTorch modules for weightnorm's architecture files (shared by the check scripts and the
fixture generator): mean-only batch norm, residual blocks, the WaveNet gate, the builder, and
the data sets' test splits as weightnorm reads them."""

import gzip
import os
import struct

import torch
import torch.nn as nn


class MeanOnlyBatchNorm(nn.Module):
    """Evaluation mode of weightnorm's mean-only batch norm: x - running_mean + bias."""

    def __init__(self, n):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))

    def forward(self, x):
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x - self.running_mean.view(shape) + self.bias.view(shape)


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


def network(arch, state, dtype=torch.float64):
    """The architecture file's network as an nn.Sequential holding `state` (strictly), in
    evaluation mode."""
    model = nn.Sequential(*build(arch["layers"], state, "", len(arch["input"])))
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


def weighted_keys(layers, prefix=""):
    for i, layer in enumerate(layers):
        key = layer.get("param", prefix + str(i))
        if layer["op"] in ("linear", "conv1d", "conv2d"):
            yield prefix + str(i), key
        elif layer["op"] == "residual":
            yield from weighted_keys(layer["body"], prefix + str(i) + ".body.")


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
