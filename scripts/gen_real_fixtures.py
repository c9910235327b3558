#!/usr/bin/env python3
"""Real-world-shaped weight-norm fixtures for the CLI's tests, made by real PyTorch, transformers
and both of PyTorch's ONNX exporters, with weight norm still attached. Written under
crates/weightnorm-cli/tests/fixtures/real/:

  sharded_st/                  a tiny transformers `EncodecModel` (weight norm on every
                               convolution, put there by transformers itself, in the
                               `parametrizations` scheme: `*.parametrizations.weight.original0/1`)
                               saved by `save_pretrained(max_shard_size=...)`:
                               `model.safetensors.index.json`, `model-0000k-of-0000N.safetensors`,
                               `config.json`; some pairs have g and v in different shards
  sharded_bin/                 the same shards as `torch.save` (zip) files with
                               `pytorch_model.bin.index.json`, in the layout transformers 4.x
                               wrote with `safe_serialization=False` (transformers 5 no longer
                               writes `.bin`: it ignores the flag, so this script writes them)
  sharded.io.safetensors       x [2, 1, 40] and y = decoder(encoder(x)) of the original model
  hifigan_train.pt             a HiFi-GAN/VITS-style training checkpoint:
                               {'generator', 'discriminator', 'optim_g', 'optim_d', 'steps',
                               'epoch', 'lr', 'note'}; the generator with the legacy
                               `torch.nn.utils.weight_norm` on every convolution, the
                               discriminator with `parametrizations.weight_norm`, AdamW states
                               after 2 steps
  hifigan_generator_fused.safetensors  the generator after PyTorch's own `remove_weight_norm`
  hifigan.io.safetensors       x (mel) [2, 8, 16] and y = generator(x)
  wn_*.onnx                    Conv1d(4->6,k3) LeakyReLU Conv1d(6->6,k3,dilation 2) ReLU Flatten
                               Linear(48->5), weight norm (dim 0) on every layer, exported without
                               removing it (ONNX_EXPORTS):
      wn_legacy_ts.onnx          legacy weight_norm, TorchScript exporter (dynamo=False)
      wn_param_ts.onnx           parametrizations, TorchScript exporter. Both TorchScript exports
                                 give Mul(Div(v, ReduceL2(v, axes)), g) (opset 17), exported with
                                 do_constant_folding=False: the default folds every weight norm
                                 into one initializer
      wn_param_dynamo.onnx       parametrizations, dynamo=True (optimize=True, the default): the
                                 optimizer folds the weight norm of these small layers, no pair left
      wn_param_dynamo_raw.onnx   parametrizations, dynamo=True, optimize=False:
                                 Mul(v, Div(g, ReduceL2(Cast(v), Reshape(axes)))) (Cast, no CastLike)
      wn_param_dynamo_mixed.onnx the same model 64 channels wide, dynamo=True (optimize=True): the
                                 middle convolution (12288 > 8192 elements) keeps its weight norm,
                                 the other two layers are folded
                               and for each `<name>.io.safetensors`: x [3, 4, 8] and PyTorch's y
  manifest.json                every fixture: what it is, its weight-norm pairs (keys, dim,
                               shapes; the shard of g and of v; for ONNX the g and v initializers,
                               the ops between them and the weight input, and that subgraph as
                               an expression), the op types of each ONNX graph, the versions

Everything is seeded: a rerun with the same package versions in the same checkout gives the same
bytes (checked: three runs, every file identical; `torch.save`'s `.data/serialization_id` is
derived from the data, not random). The dynamo exports embed the exporter's metadata, among it
each node's Python stack trace with the absolute paths of the installation
(`/.../site-packages/torch/nn/...`), so a rerun from another location or Python differs there
(in `metadata_props` only); other package versions may give other graphs.

Needs PyTorch, transformers, onnx, onnxruntime and onnxscript (see scripts/README.md):
  scripts/.venv/bin/python scripts/gen_real_fixtures.py
Checked against the `weightnorm` binary by scripts/check_real_files.py.
"""

import json
import os
import shutil
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "crates", "weightnorm-cli", "tests", "fixtures", "real"))

# The sharded checkpoint: shards of at most this many bytes (the model is 29760 bytes in all).
MAX_SHARD_SIZE = 6000

# name -> (weight-norm scheme of the model, exporter, optimize, width of the hidden layers)
ONNX_EXPORTS = {
    "wn_legacy_ts": ("legacy", "torchscript", None, 6),
    "wn_param_ts": ("parametrizations", "torchscript", None, 6),
    "wn_param_dynamo": ("parametrizations", "dynamo", True, 6),
    "wn_param_dynamo_raw": ("parametrizations", "dynamo", False, 6),
    # Not asked for by name: the dynamo optimizer folds only constants of at most 8192 elements
    # (onnxscript's DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT), so a real model keeps the weight-norm
    # subgraph of its larger layers. Here the middle convolution (64x64x3 = 12288) keeps it and
    # the two small layers are folded.
    "wn_param_dynamo_mixed": ("parametrizations", "dynamo", True, 64),
}
ONNX_LENGTH = 8  # L of the input [batch, 4, L]


def quiet():
    warnings.filterwarnings("ignore")
    import logging

    for name in ("transformers", "torch.onnx", "onnxscript", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


def rel_diff(a, b):
    """max |a - b| / max |b|, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---------------------------------------------------------------------------------------------
# Weight norm on modules: which pairs a module holds, switching schemes, removing it


def wn_pairs(module):
    """The weight-norm pairs of `module` as they appear in its state dict: one dict per pair
    (weight, scheme, g, v, dim), in module order."""
    from torch.nn.utils.parametrizations import _WeightNorm
    from torch.nn.utils.weight_norm import WeightNorm

    out = []
    for name, m in module.named_modules():
        prefix = name + "." if name else ""
        if parametrize.is_parametrized(m):
            for pname, plist in m.parametrizations.items():
                for p in plist:
                    if isinstance(p, _WeightNorm):
                        base = prefix + "parametrizations." + pname
                        out.append(dict(weight=prefix + pname, scheme="parametrizations", g=base + ".original0",
                                        v=base + ".original1", dim=p.dim))
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                out.append(dict(weight=prefix + hook.name, scheme="legacy", g=prefix + hook.name + "_g",
                                v=prefix + hook.name + "_v", dim=hook.dim))
    return out


def describe_pairs(module, state):
    pairs = wn_pairs(module)
    for p in pairs:
        p["g_shape"] = list(state[p["g"]].shape)
        p["v_shape"] = list(state[p["v"]].shape)
        p["dtype"] = str(state[p["v"]].dtype).replace("torch.", "")
    return pairs


def drop_compat_hook(m):
    """Removes the load_state_dict pre-hook that `parametrizations.weight_norm` leaves on a module
    (`_weight_norm_compat_hook`: it renames `weight_g`/`weight_v` in a state dict being loaded
    to `parametrizations.weight.original0/1`) and that `remove_parametrizations` does not remove;
    left there, a legacy state dict cannot be loaded into the module once it is legacy again."""
    for key, hook in list(m._load_state_dict_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_weight_norm_compat_hook":
            del m._load_state_dict_pre_hooks[key]


def remove_wn(module):
    """Removes every weight norm of `module` in place (either scheme), the weight left as
    PyTorch computes it: the model without weight norm, same keys as a fused checkpoint."""
    for p in wn_pairs(module):
        m = module.get_submodule(p["weight"].rpartition(".")[0]) if "." in p["weight"] else module
        name = p["weight"].rpartition(".")[2]
        # Not under no_grad: remove_parametrizations would leave the weight a buffer.
        if p["scheme"] == "legacy":
            nn.utils.remove_weight_norm(m, name)
        else:
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
            drop_compat_hook(m)
        assert isinstance(getattr(m, name), nn.Parameter)
    return module


def to_scheme(module, scheme):
    """Puts every weight norm of `module` in `scheme` ("legacy" or "parametrizations") in place,
    same dim, same values."""
    for p in wn_pairs(module):
        if p["scheme"] == scheme:
            continue
        m = module.get_submodule(p["weight"].rpartition(".")[0]) if "." in p["weight"] else module
        name = p["weight"].rpartition(".")[2]
        g = module.state_dict()[p["g"]].clone()
        v = module.state_dict()[p["v"]].clone()
        if p["scheme"] == "legacy":
            nn.utils.remove_weight_norm(m, name)
            nn.utils.parametrizations.weight_norm(m, name, dim=p["dim"])
            g_param, v_param = m.parametrizations[name].original0, m.parametrizations[name].original1
        else:
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
            drop_compat_hook(m)
            nn.utils.weight_norm(m, name, dim=p["dim"])
            g_param, v_param = getattr(m, name + "_g"), getattr(m, name + "_v")
        with torch.no_grad():
            g_param.copy_(g)
            v_param.copy_(v)
    return module


def spread_g(module, seed):
    """g times a random factor in [0.5, 1.5) per entry: g away from ||v||, so that fusing is not
    the identity."""
    gen = torch.Generator().manual_seed(seed)
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for p in wn_pairs(module):
            g = state[p["g"]]
            g.mul_(torch.rand(g.shape, generator=gen, dtype=g.dtype) + 0.5)


# ---------------------------------------------------------------------------------------------
# 1, 2. A transformers model in shards


def encodec_config():
    from transformers import EncodecConfig

    return EncodecConfig(hidden_size=8, num_filters=4, upsampling_ratios=[2, 2], num_residual_layers=1,
                         num_lstm_layers=1, codebook_size=8, target_bandwidths=[1.5], kernel_size=3,
                         last_kernel_size=3, residual_kernel_size=3, sampling_rate=800)


def encodec_model(config):
    from transformers import EncodecModel

    return EncodecModel(config).eval()


def encodec_forward(model, x):
    """The continuous path of the model (the quantizer's argmin is left out: it is not
    continuous, so a 1e-7 change of a weight could flip a code)."""
    with torch.no_grad():
        return model.decoder(model.encoder(x))


def load_sharded(index_path):
    """The state dict of a sharded checkpoint (`*.safetensors` or `torch.save` shards)."""
    with open(index_path) as f:
        index = json.load(f)
    folder = os.path.dirname(index_path)
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        path = os.path.join(folder, shard)
        part = load_file(path) if shard.endswith(".safetensors") else torch.load(path, weights_only=True)
        state.update(part)
    assert set(state) == set(index["weight_map"]), index_path
    return state


def sharded(manifest):
    torch.manual_seed(0)
    config = encodec_config()
    model = encodec_model(config)
    spread_g(model, 1)
    torch.manual_seed(2)
    x = torch.randn(2, 1, 40)
    y = encodec_forward(model, x)
    save_file({"x": x, "y": y}, os.path.join(OUT, "sharded.io.safetensors"))

    st_dir = os.path.join(OUT, "sharded_st")
    model.save_pretrained(st_dir, max_shard_size=MAX_SHARD_SIZE)
    st_index_path = os.path.join(st_dir, "model.safetensors.index.json")
    with open(st_index_path) as f:
        st_index = json.load(f)
    shards = sorted(set(st_index["weight_map"].values()))
    assert len(shards) >= 3, "save_pretrained wrote %d shards: lower MAX_SHARD_SIZE" % len(shards)

    # The same shards as torch.save files, as transformers 4.x wrote them with
    # safe_serialization=False: pytorch_model-0000k-of-0000N.bin and pytorch_model.bin.index.json
    # (json.dumps(index, indent=2, sort_keys=True) + "\n").
    bin_dir = os.path.join(OUT, "sharded_bin")
    os.makedirs(bin_dir)
    shutil.copy(os.path.join(st_dir, "config.json"), bin_dir)
    rename = {s: s.replace("model-", "pytorch_model-").replace(".safetensors", ".bin") for s in shards}
    for s in shards:
        part = load_file(os.path.join(st_dir, s))
        torch.save({k: v.clone() for k, v in part.items()}, os.path.join(bin_dir, rename[s]))
    bin_index = {"metadata": {"total_size": st_index["metadata"]["total_size"]},
                 "weight_map": {k: rename[s] for k, s in st_index["weight_map"].items()}}
    with open(os.path.join(bin_dir, "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps(bin_index, indent=2, sort_keys=True) + "\n")

    # Both load back strictly and compute the same.
    for index_path in (st_index_path, os.path.join(bin_dir, "pytorch_model.bin.index.json")):
        fresh = encodec_model(config)
        fresh.load_state_dict(load_sharded(index_path), strict=True)
        assert torch.equal(encodec_forward(fresh, x), y), index_path

    state = model.state_dict()
    pairs = describe_pairs(model, state)
    for p in pairs:
        p["g_shard"] = st_index["weight_map"][p["g"]]
        p["v_shard"] = st_index["weight_map"][p["v"]]
    split = [p["weight"] for p in pairs if p["g_shard"] != p["v_shard"]]
    assert split, "every pair has g and v in one shard: lower MAX_SHARD_SIZE"
    schemes = sorted({p["scheme"] for p in pairs})
    import transformers

    common = {
        "model": "transformers.EncodecModel",
        "config": "config.json beside the index (EncodecConfig, tiny)",
        "weight_norm_scheme": schemes,
        "scheme_note": ("transformers' Encodec puts `nn.utils.parametrizations.weight_norm` on every "
                        "convolution when it exists (torch %s: yes), so the state dict holds "
                        "`*.parametrizations.weight.original0` (g) / `original1` (v); save_pretrained of a "
                        "model built from a config writes those keys as they are (transformers %s reverts "
                        "`weight_g`/`weight_v` to the legacy names on save only for a model that "
                        "from_pretrained loaded from a legacy checkpoint)" % (torch.__version__,
                                                                                transformers.__version__)),
        "forward": "y = model.decoder(model.encoder(x)) with x, y in sharded.io.safetensors",
        "tensors": len(state),
        "shards": len(shards),
        "max_shard_size": MAX_SHARD_SIZE,
        "split_pairs": split,
        "pairs": pairs,
    }
    manifest["sharded_st"] = dict(common, what="save_pretrained(max_shard_size=%d), safetensors shards"
                                  % MAX_SHARD_SIZE, index="sharded_st/model.safetensors.index.json")
    bin_pairs = [dict(p, g_shard=rename[p["g_shard"]], v_shard=rename[p["v_shard"]]) for p in pairs]
    manifest["sharded_bin"] = dict(
        common, pairs=bin_pairs, index="sharded_bin/pytorch_model.bin.index.json",
        what=("the shards of sharded_st as torch.save (zip) files and pytorch_model.bin.index.json, the "
              "layout of transformers 4.x save_pretrained(safe_serialization=False); written by this "
              "script because transformers %s ignores safe_serialization and always writes safetensors"
              % transformers.__version__))
    manifest["sharded.io.safetensors"] = {"what": "x [2, 1, 40] and y = decoder(encoder(x)) of sharded_st's model"}
    print("sharded: %d tensors, %d pairs, %d shards, g and v apart in %d pairs (%s)"
          % (len(state), len(pairs), len(shards), len(split), ", ".join(split[:3]) + (", ..." if len(split) > 3 else "")))


# ---------------------------------------------------------------------------------------------
# 3. A HiFi-GAN training checkpoint


def _wn(module, norm):
    if norm == "legacy":
        return nn.utils.weight_norm(module)
    if norm == "parametrizations":
        return nn.utils.parametrizations.weight_norm(module)
    return module


class ResBlock(nn.Module):
    """HiFi-GAN's ResBlock1: dilated convolutions, each followed by a plain one, residual."""

    def __init__(self, ch, k=3, dilations=(1, 3, 5), norm="legacy"):
        super().__init__()
        self.convs1 = nn.ModuleList(
            _wn(nn.Conv1d(ch, ch, k, dilation=d, padding=d * (k - 1) // 2), norm) for d in dilations)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, padding=(k - 1) // 2), norm) for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class Generator(nn.Module):
    """A tiny HiFi-GAN generator: Conv1d in, ConvTranspose1d upsampling each followed by a
    residual block, LeakyReLU, Conv1d out, tanh. `norm`: "legacy", "parametrizations" or None."""

    def __init__(self, mels=8, ch=16, rates=(2, 2), norm="legacy"):
        super().__init__()
        self.conv_pre = _wn(nn.Conv1d(mels, ch, 7, padding=3), norm)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, r in enumerate(rates):
            c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
            self.ups.append(_wn(nn.ConvTranspose1d(c_in, c_out, 2 * r, r, padding=r // 2), norm))
            self.resblocks.append(ResBlock(c_out, norm=norm))
        self.conv_post = _wn(nn.Conv1d(c_out, 1, 7, padding=3), norm)

    def forward(self, x):
        x = self.conv_pre(x)
        for up, rb in zip(self.ups, self.resblocks):
            x = rb(up(F.leaky_relu(x, 0.1)))
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class Discriminator(nn.Module):
    """A tiny HiFi-GAN scale discriminator (DiscriminatorS): strided grouped convolutions."""

    def __init__(self, norm="parametrizations"):
        super().__init__()
        self.convs = nn.ModuleList([
            _wn(nn.Conv1d(1, 4, 15, 1, padding=7), norm),
            _wn(nn.Conv1d(4, 8, 41, 4, groups=4, padding=20), norm),
            _wn(nn.Conv1d(8, 16, 41, 4, groups=8, padding=20), norm),
            _wn(nn.Conv1d(16, 16, 5, 1, padding=2), norm),
        ])
        self.conv_post = _wn(nn.Conv1d(16, 1, 3, 1, padding=1), norm)

    def forward(self, x):
        for c in self.convs:
            x = F.leaky_relu(c(x), 0.1)
        return torch.flatten(self.conv_post(x), 1, -1)


HIFIGAN_KEYS = ["generator", "discriminator", "optim_g", "optim_d", "steps", "epoch", "lr", "note"]


def hifigan(manifest):
    torch.manual_seed(0)
    gen = Generator(norm="legacy")
    disc = Discriminator(norm="parametrizations")
    spread_g(gen, 1)
    spread_g(disc, 2)
    optim_g = torch.optim.AdamW(gen.parameters(), 2e-4, betas=(0.8, 0.99), eps=1e-9)
    optim_d = torch.optim.AdamW(disc.parameters(), 2e-4, betas=(0.8, 0.99), eps=1e-9)
    torch.manual_seed(3)
    for _ in range(2):
        mel = torch.randn(2, 8, 16)
        real = torch.randn(2, 1, 64) * 0.5
        fake = gen(mel)
        loss_d = ((disc(real) - 1) ** 2).mean() + (disc(fake.detach()) ** 2).mean()
        optim_d.zero_grad()
        loss_d.backward()
        optim_d.step()
        loss_g = ((disc(fake) - 1) ** 2).mean() + 45 * F.l1_loss(fake, real)
        optim_g.zero_grad()
        loss_g.backward()
        optim_g.step()
    gen.eval()
    sd = gen.state_dict()
    ckpt = {"generator": sd, "discriminator": disc.state_dict(), "optim_g": optim_g.state_dict(),
            "optim_d": optim_d.state_dict(), "steps": 1000, "epoch": 3, "lr": 2e-4, "note": "hifigan"}
    path = os.path.join(OUT, "hifigan_train.pt")
    torch.save(ckpt, path)
    back = torch.load(path, weights_only=True)
    assert list(back) == HIFIGAN_KEYS

    # PyTorch's own removal, on a copy (deepcopy refuses weight-normed modules).
    fused = Generator(norm="legacy")
    fused.load_state_dict(sd)
    for p in wn_pairs(fused):
        nn.utils.remove_weight_norm(fused.get_submodule(p["weight"].rpartition(".")[0]))
    assert not wn_pairs(fused)
    fused.eval()
    save_file({k: v.contiguous() for k, v in fused.state_dict().items()},
              os.path.join(OUT, "hifigan_generator_fused.safetensors"), metadata={"made_by": "torch " + torch.__version__})
    torch.manual_seed(4)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        y = gen(x)
        assert rel_diff(fused(x), y) < 1e-6
    save_file({"x": x, "y": y}, os.path.join(OUT, "hifigan.io.safetensors"))

    def summary(value):
        if isinstance(value, dict):
            return "dict of %d" % len(value)
        return repr(value)

    manifest["hifigan_train.pt"] = {
        "what": "torch.save (zip) of a HiFi-GAN/VITS-style training checkpoint; fuse with --key generator",
        "entries": {k: summary(v) for k, v in ckpt.items()},
        "generator": {"scheme": "legacy", "pairs": describe_pairs(gen, sd)},
        "discriminator": {"scheme": "parametrizations", "pairs": describe_pairs(disc, disc.state_dict())},
        "optimizers": "AdamW(lr=2e-4, betas=(0.8, 0.99), eps=1e-9) after 2 steps: state[i] = {step (0-d "
                      "float32 tensor), exp_avg, exp_avg_sq}; param_groups hold floats, bools, None, a tuple",
        "fused_reference": "hifigan_generator_fused.safetensors",
        "io": "hifigan.io.safetensors: x (mel) [2, 8, 16], y = generator(x) [2, 1, 64]",
    }
    manifest["hifigan_generator_fused.safetensors"] = {
        "what": "the generator of hifigan_train.pt after torch.nn.utils.remove_weight_norm on every layer "
                "(PyTorch's own fusing), keys <layer>.weight / <layer>.bias"}
    manifest["hifigan.io.safetensors"] = {"what": "x (mel) [2, 8, 16] and y = generator(x) of hifigan_train.pt"}
    print("hifigan: %d generator pairs (legacy), %d discriminator pairs (parametrizations), %d optimizer states"
          % (len(manifest["hifigan_train.pt"]["generator"]["pairs"]),
             len(manifest["hifigan_train.pt"]["discriminator"]["pairs"]), len(ckpt["optim_g"]["state"])))


# ---------------------------------------------------------------------------------------------
# 4. ONNX exports with weight norm attached


def onnx_model(scheme, width=6):
    """Conv1d(4->w, k3, pad 1), LeakyReLU(0.1), Conv1d(w->w, k3, pad 2, dilation 2), ReLU, flatten,
    Linear(w*L -> 5), each layer weight-normed (dim 0) in `scheme`, g spread from ||v||. The same
    weights for both schemes."""
    torch.manual_seed(0)
    layers = [nn.Conv1d(4, width, 3, padding=1), nn.Conv1d(width, width, 3, padding=2, dilation=2),
              nn.Linear(width * ONNX_LENGTH, 5)]
    wn = nn.utils.weight_norm if scheme == "legacy" else nn.utils.parametrizations.weight_norm
    layers = [wn(m, dim=0) for m in layers]
    model = nn.Sequential(layers[0], nn.LeakyReLU(0.1), layers[1], nn.ReLU(), nn.Flatten(), layers[2]).eval()
    spread_g(model, 1)
    return model


def onnx_input():
    torch.manual_seed(5)
    return torch.randn(3, 4, ONNX_LENGTH)


def export_onnx(model, x, path, exporter, optimize):
    if exporter == "dynamo":
        torch.onnx.export(model, (x,), path, dynamo=True, optimize=optimize, input_names=["x"], output_names=["y"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    else:
        # do_constant_folding=False: with the default (True) the TorchScript exporter folds the
        # weight norm of parameters into one initializer per layer, and nothing is left to fuse.
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, do_constant_folding=False)


def _attr_text(a):
    import onnx

    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, onnx.TensorProto):
        value = onnx.numpy_helper.to_array(value).tolist()
    if isinstance(value, list):
        value = [v.decode() if isinstance(v, bytes) else v for v in value]
    return "%s=%s" % (a.name, value)


def graph_facts(path, names):
    """Op types of the graph and, for each layer (Conv, ConvTranspose, Gemm, MatMul), where its
    weight comes from: an initializer, or a subgraph of the g and v initializers (its ops, in
    graph order, and the subgraph as an expression). `names` maps initializer name -> role
    ("g"/"v" of a pair, by the model's state-dict keys)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    order = {id(n): i for i, n in enumerate(graph.node)}

    def expr(name):
        if name in inits:
            t = inits[name]
            if name not in names and int(np.prod(t.dims)) <= 8:  # an axes list, a shape
                return "%s=%s" % (name, numpy_helper.to_array(t).tolist())
            return name
        node = producer.get(name)
        if node is None:
            return name  # a graph input
        if node.op_type == "Constant":
            return "Constant(%s)" % ", ".join(_attr_text(a) for a in node.attribute)
        args = [expr(i) for i in node.input if i] + [_attr_text(a) for a in node.attribute]
        return "%s(%s)" % (node.op_type, ", ".join(args))

    def subgraph(name):
        nodes, leaves, stack = {}, set(), [name]
        while stack:
            n = stack.pop()
            if n in inits:
                leaves.add(n)
            elif n in producer and id(producer[n]) not in nodes:
                nodes[id(producer[n])] = producer[n]
                stack.extend(i for i in producer[n].input if i)
        return sorted(nodes.values(), key=lambda n: order[id(n)]), leaves

    layers = []
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        w = node.input[1]
        entry = {"node": node.name, "op": node.op_type, "weight_input": w}
        if w in inits:
            entry["weight"] = "initializer %s %s" % (w, list(inits[w].dims))
        else:
            nodes, leaves = subgraph(w)
            g = [n for n in leaves if names.get(n, "").startswith("g")]
            v = [n for n in leaves if names.get(n, "").startswith("v")]
            entry.update({
                "g": g[0] if len(g) == 1 else g, "v": v[0] if len(v) == 1 else v,
                "g_shape": [list(inits[n].dims) for n in g][0] if len(g) == 1 else None,
                "v_shape": [list(inits[n].dims) for n in v][0] if len(v) == 1 else None,
                "ops_between": [n.op_type for n in nodes if n.op_type != "Constant"],
                "expression": expr(w),
            })
        layers.append(entry)
    ops = {}
    for n in graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": "%s %s" % (model.producer_name, model.producer_version),
        "op_types": sorted(ops),
        "op_counts": dict(sorted(ops.items())),
        "initializers": {t.name: list(t.dims) for t in graph.initializer},
        "layers": layers,
        "weight_norm_attached": any("g" in e for e in layers),
        "_arrays": {t.name: numpy_helper.to_array(t) for t in graph.initializer},
    }


def onnx_exports(manifest):
    import onnx
    import onnxruntime as ort

    x = onnx_input()
    for name, (scheme, exporter, optimize, width) in ONNX_EXPORTS.items():
        model = onnx_model(scheme, width)
        with torch.no_grad():
            y = model(x)
        state = model.state_dict()
        pairs = describe_pairs(model, state)
        roles = {}
        for k, p in enumerate(pairs):
            roles[p["g"]] = "g%d" % k
            roles[p["v"]] = "v%d" % k
        path = os.path.join(OUT, name + ".onnx")
        call = ("torch.onnx.export(dynamo=True, optimize=%s)" % optimize if exporter == "dynamo"
                else "torch.onnx.export(dynamo=False, opset_version=17, do_constant_folding=False)")
        entry = {"what": "Conv1d(4->%d,k3,pad1) LeakyReLU(0.1) Conv1d(%d->%d,k3,pad2,dil2) ReLU Flatten "
                         "Linear(%d->5), weight norm (%s, dim 0) on each layer, exported without removing it"
                         % (width, width, width, width * ONNX_LENGTH, scheme),
                 "scheme": scheme, "exporter": call, "input": "x [batch, 4, %d] (batch dynamic)" % ONNX_LENGTH,
                 "io": name + ".io.safetensors", "model_pairs": pairs}
        try:
            export_onnx(model, x, path, exporter, optimize)
            onnx.checker.check_model(onnx.load(path), full_check=True)
        except Exception as e:  # noqa: BLE001 - record what the exporter said and go on
            entry["export_failed"] = "%s: %s" % (type(e).__name__, str(e)[-2000:])
            manifest[name + ".onnx"] = entry
            if os.path.exists(path):
                os.remove(path)
            print("%s: export FAILED (%s)" % (name, type(e).__name__))
            continue
        facts = graph_facts(path, roles)
        arrays = facts.pop("_arrays")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x.numpy()})[0]
        err = rel_diff(got, y.numpy())
        assert err < 1e-5, (name, err)
        save_np({"x": x.numpy(), "y": y.numpy()}, os.path.join(OUT, name + ".io.safetensors"))
        # Name each pair in the graph; a layer whose weight the exporter folded: its initializer.
        onnx_pairs = []
        for layer in facts["layers"]:
            if "g" in layer:
                k = int(roles[layer["g"]][1:])
                assert roles[layer["v"]] == "v%d" % k
                onnx_pairs.append({"layer": layer["node"], "g": layer["g"], "v": layer["v"], "dim": pairs[k]["dim"],
                                   "g_shape": layer["g_shape"], "v_shape": layer["v_shape"],
                                   "ops_between": layer["ops_between"]})
        folded = [layer["weight_input"] for layer in facts["layers"] if "g" not in layer]
        for layer in facts["layers"]:
            if "g" not in layer:
                # Which layer of the model it is: the fused weight equals PyTorch's to rounding.
                w = arrays[layer["weight_input"]]
                matches = [p["weight"] for p in pairs if list(state[p["v"]].shape) == list(w.shape)
                           and rel_diff(w, torch._weight_norm(state[p["v"]], state[p["g"]], p["dim"]).detach().numpy()) < 1e-6]
                layer["folded_from"] = matches[0] if len(matches) == 1 else matches
        entry.update(facts)
        entry["pairs"] = onnx_pairs
        entry["folded_by_exporter"] = folded
        entry["cast_like"] = "CastLike" in facts["op_types"]
        entry["ort_vs_torch_rel"] = err
        manifest[name + ".onnx"] = entry
        manifest[name + ".io.safetensors"] = {"what": "x [3, 4, %d] and PyTorch's output y of %s.onnx's model"
                                              % (ONNX_LENGTH, name)}
        print("%s: %d bytes, %d pairs attached, %d layers folded by the exporter, ops %s"
              % (name, os.path.getsize(path), len(onnx_pairs), len(folded), " ".join(facts["op_types"])))


# ---------------------------------------------------------------------------------------------


def main():
    quiet()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    import onnx
    import onnxruntime
    import onnxscript
    import transformers

    fixtures = {}
    sharded(fixtures)
    hifigan(fixtures)
    onnx_exports(fixtures)
    manifest = {
        "made_by": "scripts/gen_real_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript.__version__},
        "dim": "PyTorch's dim of weight norm: the axis that keeps one norm per index (g's one non-1 axis)",
        "fixtures": fixtures,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        f.write(json.dumps(manifest, indent=1) + "\n")
    total = 0
    for root, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    assert total < 3 * 1024 * 1024, total
    print("wrote %d bytes to %s" % (total, OUT))


if __name__ == "__main__":
    main()
