"""Real weight-norm models from transformers, built from small configs (no downloads), and a
HiFi-GAN-style generator: ``fuse`` and ``remove_weight_norm`` against PyTorch's own removal,
``convert`` round trips loaded strictly."""

from __future__ import annotations

import warnings

import pytest
import torch
import weightnorm
import weightnorm.torch as wnt
from conftest import rel_err
from torch import nn
from torch.nn.utils import parametrizations, parametrize

transformers = pytest.importorskip("transformers")


def perturb_g(model: nn.Module) -> nn.Module:
    """Moves every g away from ||v|| (its value at initialisation), so that g matters."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("original0", "weight_g")):
                p.mul_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
    return model


def encodec():
    cfg = transformers.EncodecConfig(
        target_bandwidths=[1.5],
        sampling_rate=8000,
        audio_channels=1,
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[2, 2],
        codebook_size=16,
        num_lstm_layers=1,
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
    )
    model = transformers.EncodecModel(cfg).eval()
    x = torch.randn(1, 1, 64)

    def run(m):
        emb = m.encoder(x)
        return torch.cat([emb.flatten(), m.decoder(emb).flatten()])

    return model, run


def dac():
    cfg = transformers.DacConfig(
        encoder_hidden_size=4,
        downsampling_ratios=[2, 2],
        decoder_hidden_size=16,
        n_codebooks=2,
        codebook_size=16,
        codebook_dim=4,
        hidden_size=16,
    )
    model = transformers.DacModel(cfg).eval()
    model.apply_weight_norm()
    x = torch.randn(1, 1, 64)

    def run(m):
        z = m.encoder(x)
        return torch.cat([z.flatten(), m.decoder(z).flatten()])

    return model, run


def hifigan():
    cfg = transformers.SpeechT5HifiGanConfig(
        model_in_dim=8,
        upsample_initial_channel=16,
        upsample_rates=[2, 2],
        upsample_kernel_sizes=[4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
    )
    model = transformers.SpeechT5HifiGan(cfg).eval()
    model.apply_weight_norm()
    x = torch.randn(10, 8)
    return model, lambda m: m(x)


def wav2vec2():
    cfg = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=8,
    )
    model = transformers.Wav2Vec2Model(cfg).eval()
    x = torch.randn(1, 400)
    return model, lambda m: m(x).last_hidden_state


class ResBlock(nn.Module):
    def __init__(self, ch: int, wn) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [wn(nn.Conv1d(ch, ch, 3, dilation=d, padding=d)) for d in (1, 3)]
        )

    def forward(self, x):
        for c in self.convs:
            x = x + c(nn.functional.leaky_relu(x, 0.1))
        return x


class Generator(nn.Module):
    """HiFi-GAN's generator in miniature: pre-conv, transposed upsampling, residual blocks."""

    def __init__(self, scheme: str) -> None:
        super().__init__()

        def wn(m):
            if scheme == "parametrizations":
                return parametrizations.weight_norm(m)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return nn.utils.weight_norm(m)

        self.conv_pre = wn(nn.Conv1d(8, 16, 7, padding=3))
        self.ups = nn.ModuleList(
            [wn(nn.ConvTranspose1d(16 >> i, 8 >> i, 4, 2, padding=1)) for i in range(2)]
        )
        self.resblocks = nn.ModuleList([ResBlock(8 >> i, wn) for i in range(2)])
        self.conv_post = wn(nn.Conv1d(4, 1, 7, padding=3))

    def forward(self, x):
        x = self.conv_pre(x)
        for up, rb in zip(self.ups, self.resblocks, strict=True):
            x = rb(up(nn.functional.leaky_relu(x, 0.1)))
        return torch.tanh(self.conv_post(nn.functional.leaky_relu(x)))


def generator():
    x = torch.randn(1, 8, 12)
    return Generator("legacy").eval(), lambda m: m(x)


MODELS = {
    "EnCodec": encodec,
    "DAC": dac,
    "SpeechT5HifiGan": hifigan,
    "Wav2Vec2": wav2vec2,
    "HiFi-GAN-style": generator,
}


def build(name: str):
    torch.manual_seed(0)
    model, run = MODELS[name]()
    return perturb_g(model), run


def pytorch_removal(model: nn.Module) -> nn.Module:
    """PyTorch's own removal, module by module, whichever scheme each uses."""
    found = 0
    for m in model.modules():
        if parametrize.is_parametrized(m) and "weight" in m.parametrizations:
            parametrize.remove_parametrizations(m, "weight")
            found += 1
        elif any(k.endswith("weight_g") for k, _ in m.named_parameters(recurse=False)):
            nn.utils.remove_weight_norm(m)
            found += 1
    assert found > 0
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_remove_weight_norm_and_fuse_match_pytorchs_removal(name):
    model, run = build(name)
    pairs = weightnorm.inspect(model.state_dict())
    assert pairs, name
    with torch.no_grad():
        before = run(model)
        reference, _ = build(name)
        reference = pytorch_removal(reference)
        theirs = run(reference)
        # In memory, on the state dict: loads into the plain model strictly.
        fused = weightnorm.fuse(model.state_dict())
        plain, _ = build(name)
        plain = pytorch_removal(plain)
        plain.load_state_dict(fused, strict=True)
        from_fused = run(plain)
        # On the module itself.
        wnt.remove_weight_norm(model)
        ours = run(model)
    assert rel_err(theirs, before) <= 1e-5  # PyTorch's own removal, for scale
    assert rel_err(ours, theirs) <= 1e-6, rel_err(ours, theirs)
    assert rel_err(from_fused, theirs) <= 1e-6, rel_err(from_fused, theirs)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_convert_round_trip_loads_strictly(name):
    model, run = build(name)
    sd = model.state_dict()
    scheme = weightnorm.inspect(sd)[0].scheme
    other = "legacy" if scheme == "parametrizations" else "parametrizations"
    there = weightnorm.convert(sd, other)
    assert all(p.scheme == other for p in weightnorm.inspect(there))
    back = weightnorm.convert(there, scheme)
    assert sorted(back) == sorted(sd)
    fresh, _ = build(name)
    fresh.load_state_dict(back, strict=True)
    with torch.no_grad():
        assert torch.equal(run(fresh), run(model))


def test_generator_loads_across_schemes_both_ways():
    torch.manual_seed(0)
    old = perturb_g(Generator("legacy").eval())
    new = Generator("parametrizations").eval()
    x = torch.randn(1, 8, 12)
    new.load_state_dict(weightnorm.convert(old.state_dict(), "parametrizations"), strict=True)
    back = Generator("legacy").eval()
    back.load_state_dict(weightnorm.convert(new.state_dict(), "legacy"), strict=True)
    with torch.no_grad():
        assert torch.equal(new(x), old(x)) and torch.equal(back(x), old(x))
