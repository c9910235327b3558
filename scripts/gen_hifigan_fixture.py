#!/usr/bin/env python3
"""A real-shaped checkpoint for the library's tests (crates/weightnorm/tests/hostile.rs): a
small HiFi-GAN-style generator (a Conv1d in, ConvTranspose1d upsampling, residual blocks of
dilated Conv1d, a Conv1d out), every convolution with `torch.nn.utils.weight_norm`, saved in
the legacy (non-zip) format nested under `generator` beside training state, and the weights
PyTorch's own `remove_weight_norm` gives, as safetensors.

  fixtures/hifigan/generator_legacy.pt       {"generator": sd, "steps": 1200, "epoch": 3}
  fixtures/hifigan/generator_nested.pt       {"model": {"generator": sd}, "steps": 1200} (zip)
  fixtures/hifigan/generator.fused.safetensors

Needs PyTorch (see scripts/README.md):  scripts/.venv/bin/python scripts/gen_hifigan_fixture.py
"""

import os

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.nn.utils import remove_weight_norm, weight_norm

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "weightnorm", "tests", "fixtures", "hifigan")


class ResBlock(nn.Module):
    def __init__(self, ch, k=3, dilations=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(ch, ch, k, dilation=d, padding=d * (k - 1) // 2)) for d in dilations
        )
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(ch, ch, k, padding=(k - 1) // 2)) for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class Generator(nn.Module):
    def __init__(self, mels=8, ch=16, rates=(2, 2)):
        super().__init__()
        self.conv_pre = weight_norm(nn.Conv1d(mels, ch, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, r in enumerate(rates):
            c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, c_out, 2 * r, r, padding=r // 2)))
            self.resblocks.append(ResBlock(c_out))
        self.conv_post = weight_norm(nn.Conv1d(c_out, 1, 7, padding=3))

    def forward(self, x):
        x = self.conv_pre(x)
        for up, rb in zip(self.ups, self.resblocks):
            x = rb(up(F.leaky_relu(x, 0.1)))
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def main():
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    gen = Generator()
    # Move g away from ||v|| so that fusing is not the identity.
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.rand_like(p) + 0.5)
    sd = gen.state_dict()
    torch.save({"generator": sd, "steps": 1200, "epoch": 3}, os.path.join(OUT, "generator_legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save({"model": {"generator": sd}, "steps": 1200}, os.path.join(OUT, "generator_nested.pt"))
    # A copy (deepcopy refuses weight-normed modules), then PyTorch's own removal.
    fused = Generator()
    fused.load_state_dict(sd)
    for m in fused.modules():
        if hasattr(m, "weight_g"):
            remove_weight_norm(m)
    assert not any(k.endswith("_g") for k in fused.state_dict())
    x = torch.randn(1, 8, 10)
    assert torch.allclose(gen(x), fused(x), atol=1e-6)
    save_file({k: v.contiguous() for k, v in fused.state_dict().items()},
              os.path.join(OUT, "generator.fused.safetensors"), metadata={"made_by": "torch " + torch.__version__})
    print("wrote %d tensors (%d fused) to %s" % (len(sd), sum(k.endswith("_g") for k in sd), os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
