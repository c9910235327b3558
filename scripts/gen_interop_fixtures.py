#!/usr/bin/env python3
"""Checkpoint fixtures for `weightnorm fuse/split/convert/inspect`, made by real PyTorch.

For each dtype (f32, f64, f16, bf16) and scheme (legacy `weight_norm`, `parametrizations`), one
model holding Linear(4,5), Conv1d(3,6,5), ConvTranspose1d(4,6,3) and Conv2d(3,6,3) under weight
norm with every valid `dim` (0, 1, 2, None, -1), written to crates/weightnorm/tests/fixtures/interop/:

    <dtype>_<scheme>.safetensors        the weight-normalized state dict
    <dtype>_<scheme>.fused.safetensors  the state dict after PyTorch's own removal
                                        (remove_weight_norm / remove_parametrizations)
    <dtype>_exact.safetensors           (f16, bf16) the fused weights computed in f64 from the
                                        same g and v: the exact values PyTorch's results round

and two PyTorch checkpoints of the f32 legacy model:

    nested.pt   {"state_dict": ..., "epoch": 7}   (needs --key state_dict)
    single.pt   {"model": ...}                     (the key is picked automatically)

Usage:  python scripts/gen_interop_fixtures.py
"""

import os
import warnings

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch.nn.utils import parametrize

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "weightnorm", "tests", "fixtures", "interop")

LAYERS = [
    ("linear", lambda: nn.Linear(4, 5), [0, 1, None, -1]),
    ("conv1d", lambda: nn.Conv1d(3, 6, 5), [0, 1, 2, None, -1]),
    ("convt1d", lambda: nn.ConvTranspose1d(4, 6, 3), [0, 1, 2, None]),
    ("conv2d", lambda: nn.Conv2d(3, 6, 3), [0, 1, None, -1]),
]

DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}


def tag(dim):
    return "none" if dim is None else ("m1" if dim == -1 else str(dim))


def build(scheme, dtype, seed):
    torch.manual_seed(seed)
    mods = nn.ModuleDict()
    for name, make, dims in LAYERS:
        for dim in dims:
            m = make().to(torch.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if scheme == "legacy":
                    m = nn.utils.weight_norm(m, dim=dim)
                else:
                    m = nn.utils.parametrizations.weight_norm(m, dim=dim)
            # Move g away from ||v|| so that fusing is not the identity.
            with torch.no_grad():
                g = m.weight_g if scheme == "legacy" else m.parametrizations.weight.original0
                g.mul_(torch.rand(g.shape, dtype=g.dtype) + 0.5)
            mods["%s_d%s" % (name, tag(dim))] = m.to(dtype)
    return mods


def remove(mods, scheme):
    for m in mods.values():
        if scheme == "legacy":
            nn.utils.remove_weight_norm(m)
        else:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return mods


def state(mods):
    return {k: v.detach().contiguous() for k, v in mods.state_dict().items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {"made_by": "scripts/gen_interop_fixtures.py", "torch": torch.__version__}
    for seed, (dname, dtype) in enumerate(DTYPES.items()):
        for scheme in ["legacy", "parametrizations"]:
            mods = build(scheme, dtype, seed)
            sd = state(mods)
            save_file(sd, os.path.join(OUT, "%s_%s.safetensors" % (dname, scheme)), metadata=meta)
            if dname in ("f16", "bf16") and scheme == "legacy":
                exact = {}
                for name, m in mods.items():
                    dim = getattr(m, "_forward_pre_hooks")
                    hook = next(h for h in dim.values() if h.__class__.__name__ == "WeightNorm")
                    w = torch._weight_norm(m.weight_v.double(), m.weight_g.double(), hook.dim)
                    exact["%s.weight" % name] = w.detach().contiguous()
                save_file(exact, os.path.join(OUT, "%s_exact.safetensors" % dname))
            with torch.no_grad():
                fused = state(remove(mods, scheme))
            save_file(fused, os.path.join(OUT, "%s_%s.fused.safetensors" % (dname, scheme)), metadata=meta)
            if dname == "f32" and scheme == "legacy":
                torch.save({"state_dict": sd, "epoch": 7}, os.path.join(OUT, "nested.pt"))
                torch.save({"model": sd}, os.path.join(OUT, "single.pt"))
    print("wrote fixtures to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
