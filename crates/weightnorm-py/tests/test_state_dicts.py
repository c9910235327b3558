"""In-memory fuse, split, convert and inspect against PyTorch's own weight norm."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
import weightnorm
from conftest import rel_err
from torch import nn
from torch.nn.utils import parametrizations, parametrize

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Tolerance of a fused weight against PyTorch's `_weight_norm` in each dtype: one rounding of
# the result (f16/bf16 are computed in f32 here and in PyTorch).
TOL = {torch.float32: 1e-6, torch.float64: 1e-14, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def legacy(module: nn.Module, dim=0) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module, dim=dim)


class Net(nn.Module):
    """A conv, a transposed conv and a linear layer: dims 0, 1 and the whole tensor."""

    def __init__(self, scheme: str, dtype=torch.float32) -> None:
        super().__init__()
        wn = legacy if scheme == "legacy" else parametrizations.weight_norm
        self.conv = wn(nn.Conv1d(3, 4, 3), dim=0)
        self.up = wn(nn.ConvTranspose1d(4, 2, 4, stride=2), dim=1)
        self.head = wn(nn.Linear(28, 5), dim=None)
        self.to(dtype)

    def forward(self, x):
        return self.head(self.up(torch.relu(self.conv(x))).flatten(1))


def fresh(scheme: str, dtype=torch.float32, seed=0) -> Net:
    torch.manual_seed(seed)
    net = Net(scheme, dtype)
    # Away from initialisation (g = ||v||), so that g matters.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("_g", "original0")):
                p.mul_(torch.rand_like(p.float()).to(p.dtype) + 0.5)
    return net


def torch_removed(net: Net, scheme: str) -> Net:
    """``net`` with every weight norm removed by PyTorch itself."""
    for m in (net.conv, net.up, net.head):
        if scheme == "legacy":
            nn.utils.remove_weight_norm(m)
        else:
            parametrize.remove_parametrizations(m, "weight")
    return net


@pytest.mark.parametrize("scheme", ["legacy", "parametrizations"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fuse_equals_pytorchs_removal(scheme, dtype):
    net = fresh(scheme, dtype)
    fused = weightnorm.fuse(net.state_dict())
    expected = torch_removed(net, scheme).state_dict()
    assert list(fused) == list(expected) or sorted(fused) == sorted(expected)
    for k, v in expected.items():
        assert fused[k].dtype == v.dtype, k
        assert fused[k].shape == v.shape, k
        assert rel_err(fused[k], v) <= TOL[dtype], (k, rel_err(fused[k], v))


@pytest.mark.parametrize("scheme", ["legacy", "parametrizations"])
def test_fused_dict_loads_strictly_into_the_plain_model(scheme):
    net = fresh(scheme)
    x = torch.randn(2, 3, 8)
    y = net(x)
    plain = torch_removed(fresh(scheme, seed=1), scheme)
    plain.load_state_dict(weightnorm.fuse(net.state_dict()), strict=True)
    assert rel_err(plain(x).detach(), y.detach()) <= 1e-6


def test_untouched_tensors_are_the_same_objects_and_memory():
    net = fresh("parametrizations")
    sd = net.state_dict()
    fused = weightnorm.fuse(sd)
    for k in ("conv.bias", "up.bias", "head.bias"):
        assert fused[k] is sd[k]
    # The fused weight owns the bytes the core computed: no second tensor behind it.
    w = fused["conv.weight"]
    assert w.is_contiguous() and w.untyped_storage().nbytes() == w.numel() * 4
    converted = weightnorm.convert(sd, "legacy")
    assert converted["conv.weight_v"] is sd["conv.parametrizations.weight.original1"]
    assert (
        converted["conv.weight_v"].data_ptr()
        == sd["conv.parametrizations.weight.original1"].data_ptr()
    )
    split = weightnorm.split(fused)
    assert split["conv.weight_v"] is fused["conv.weight"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_convert_round_trips_load_strictly_in_both_schemes(dtype):
    old = fresh("legacy", dtype)
    new = fresh("parametrizations", dtype, seed=1)
    x = torch.randn(2, 3, 8, dtype=dtype)
    new.load_state_dict(weightnorm.convert(old.state_dict(), "parametrizations"), strict=True)
    assert torch.equal(new(x), old(x))
    back = fresh("legacy", dtype, seed=2)
    back.load_state_dict(weightnorm.convert(new.state_dict(), "legacy"), strict=True)
    assert torch.equal(back(x), old(x))


@pytest.mark.parametrize("scheme", ["legacy", "parametrizations"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_split_gives_pytorchs_g_and_loads_strictly(scheme, dtype):
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 1)).to(dtype)
    sd = plain.state_dict()
    split = weightnorm.split(sd, scheme=scheme)
    wn = legacy if scheme == "legacy" else parametrizations.weight_norm
    target = nn.Sequential(wn(nn.Conv1d(3, 4, 3)), nn.ReLU(), wn(nn.Conv1d(4, 2, 1))).to(dtype)
    target.load_state_dict(split, strict=True)
    x = torch.randn(2, 3, 8, dtype=dtype)
    assert rel_err(target(x).detach(), plain(x).detach()) <= 10 * TOL[dtype]
    g_key = "0.weight_g" if scheme == "legacy" else "0.parametrizations.weight.original0"
    # PyTorch's g at split is the norm itself.
    expected_g = torch.linalg.vector_norm(sd["0.weight"].double(), dim=(1, 2), keepdim=True)
    assert rel_err(split[g_key], expected_g) <= TOL[dtype]


def test_split_options():
    sd = {"a.weight": torch.randn(4, 3), "b.weight": torch.randn(4, 3), "c": torch.randn(2, 2)}
    s = weightnorm.split(sd, include=r"^a\.", dim=1)
    assert sorted(s) == ["a.weight_g", "a.weight_v", "b.weight", "c"]
    assert s["a.weight_g"].shape == (1, 3)
    whole = weightnorm.split(sd, include="weight", dim=None)
    assert whole["b.weight_g"].shape == ()
    with pytest.raises(weightnorm.InputError, match="not a valid regular expression"):
        weightnorm.split(sd, include="(")
    with pytest.raises(weightnorm.InputError, match="no tensor selected to split"):
        weightnorm.split({"c": torch.randn(2)})


def test_numpy_in_numpy_out():
    net = fresh("legacy")
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    fused = weightnorm.fuse(sd)
    assert all(isinstance(v, np.ndarray) for v in fused.values())
    assert fused["conv.bias"] is sd["conv.bias"]
    expected = torch_removed(net, "legacy").state_dict()
    for k, v in expected.items():
        assert rel_err(torch.from_numpy(fused[k]), v) <= 1e-6
    # A computed array owns its memory through the native buffer and is writable.
    fused["conv.weight"][...] = 0
    pairs = weightnorm.inspect(sd)
    assert [p.name for p in pairs] == ["conv.weight", "head.weight", "up.weight"]


def test_non_tensor_entries_order_and_metadata_are_kept():
    net = fresh("parametrizations")
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict) and hasattr(sd, "_metadata")
    mixed = OrderedDict(sd)
    mixed["step"] = 7
    mixed.move_to_end("step", last=False)
    mixed._metadata = sd._metadata
    fused = weightnorm.fuse(mixed)
    assert isinstance(fused, OrderedDict)
    assert list(fused)[0] == "step" and fused["step"] == 7
    assert fused._metadata is sd._metadata
    # Each fused weight takes the place of its pair.
    assert list(fused) == [
        "step",
        "conv.bias",
        "conv.weight",
        "up.bias",
        "up.weight",
        "head.bias",
        "head.weight",
    ]


def test_inspect_reports_dims_shapes_and_statistics():
    net = fresh("parametrizations")
    pairs = {p.name: p for p in weightnorm.inspect(net.state_dict())}
    assert pairs["conv.weight"].dim == 0 and pairs["up.weight"].dim == 1
    assert pairs["head.weight"].dim is None and pairs["head.weight"].g_shape == ()
    v = net.conv.parametrizations.weight.original1.detach().double()
    norms = torch.linalg.vector_norm(v, dim=(1, 2))
    s = pairs["conv.weight"].v_norms
    assert s.min == pytest.approx(norms.min().item(), rel=1e-6)
    assert s.max == pytest.approx(norms.max().item(), rel=1e-6)
    g = net.conv.parametrizations.weight.original0.detach().double()
    assert pairs["conv.weight"].g.mean == pytest.approx(g.mean().item(), rel=1e-6)
    assert pairs["conv.weight"].scheme == "parametrizations"


def test_bad_inputs_raise_one_error_class():
    with pytest.raises(weightnorm.InputError, match="no weight-norm pair"):
        weightnorm.fuse({"a": torch.zeros(3)})
    with pytest.raises(weightnorm.InputError, match="has no partner"):
        weightnorm.fuse({"l.weight_g": torch.ones(2, 1), "l.weight": torch.ones(2, 2)})
    zero = {"l.weight_g": torch.ones(2, 1), "l.weight_v": torch.zeros(2, 3)}
    with pytest.raises(weightnorm.InputError, match="zero-norm slice"):
        weightnorm.fuse(zero)
    nan = {"l.weight_g": torch.tensor([[float("nan")], [1.0]]), "l.weight_v": torch.ones(2, 3)}
    with pytest.raises(weightnorm.InputError, match="NaN"):
        weightnorm.fuse(nan)
    with pytest.raises(weightnorm.InputError, match="unknown scheme"):
        weightnorm.convert(zero, "new")
    with pytest.raises(weightnorm.InputError, match="not a dim"):
        weightnorm.fuse(zero, dim="first")
    with pytest.raises(weightnorm.InputError, match="state dict"):
        weightnorm.fuse([1, 2])
    assert issubclass(weightnorm.InputError, ValueError)
    assert issubclass(weightnorm.OutputExistsError, OSError)


def test_non_contiguous_and_grad_tensors_are_read_correctly():
    torch.manual_seed(5)
    v = torch.randn(3, 4).t()  # not contiguous: read through a contiguous copy
    g = torch.rand(4, 1, requires_grad=True)
    fused = weightnorm.fuse({"l.weight_g": g, "l.weight_v": v})
    expected = torch._weight_norm(v, g.detach(), 0)
    assert rel_err(fused["l.weight"], expected) <= 1e-6


def test_import_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, weightnorm; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
