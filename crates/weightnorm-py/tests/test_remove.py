"""``weightnorm.torch.remove_weight_norm`` against PyTorch's own removal, both schemes."""

from __future__ import annotations

import warnings

import pytest
import torch
import weightnorm
import weightnorm.torch as wnt
from conftest import rel_err
from torch import nn
from torch.nn.utils import parametrizations, parametrize


def legacy(module, name="weight", dim=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module, name=name, dim=dim)


LAYERS = [
    # (layer, dim, input shape): PyTorch's default dim 0, ConvTranspose's output axis 1, the
    # positional convolutions of wav2vec2 (dim=2), and the whole tensor.
    (lambda: nn.Linear(6, 5), 0, (3, 6)),
    (lambda: nn.Linear(6, 5), None, (3, 6)),
    (lambda: nn.Conv1d(4, 6, 3, padding=1), 0, (2, 4, 9)),
    (lambda: nn.Conv2d(3, 4, 3), 0, (2, 3, 7, 7)),
    (lambda: nn.ConvTranspose1d(4, 3, 4, stride=2), 1, (2, 4, 5)),
    (lambda: nn.ConvTranspose1d(4, 3, 4, stride=2), 0, (2, 4, 5)),
    (lambda: nn.Conv1d(8, 8, 5, padding=2, groups=4), 2, (2, 8, 11)),
]


def wrap(make, scheme, dim, dtype):
    torch.manual_seed(11)
    m = make().to(dtype)
    m = legacy(m, dim=dim) if scheme == "legacy" else parametrizations.weight_norm(m, dim=dim)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(("weight_g", "original0")):
                p.mul_(torch.rand_like(p.float()).to(dtype) + 0.5)
    return m


def pytorch_removal(m, scheme):
    # On a module of its own: a deep copy of a parametrized module shares its generated class,
    # whose properties PyTorch's removal deletes.
    if scheme == "legacy":
        nn.utils.remove_weight_norm(m)
    else:
        parametrize.remove_parametrizations(m, "weight")
    return m


@pytest.mark.parametrize("scheme", ["legacy", "parametrizations"])
@pytest.mark.parametrize("case", range(len(LAYERS)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_outputs_match_pytorchs_removal(scheme, case, dtype):
    make, dim, shape = LAYERS[case]
    m = wrap(make, scheme, dim, dtype)
    x = torch.randn(shape, dtype=dtype)
    with torch.no_grad():
        before = m(x)
        theirs = pytorch_removal(wrap(make, scheme, dim, dtype), scheme)(x)
        ours_module = wnt.remove_weight_norm(m)
        assert ours_module is m
        ours = m(x)
    assert [n for n, _ in m.named_parameters()] in (["weight", "bias"], ["bias", "weight"])
    assert isinstance(m.weight, nn.Parameter) and m.weight.requires_grad
    assert not parametrize.is_parametrized(m) and not m._forward_pre_hooks
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert rel_err(ours, theirs) <= tol
    assert rel_err(ours, before) <= tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_keep_dtype(dtype):
    m = wrap(lambda: nn.Conv1d(4, 6, 3), "parametrizations", 0, dtype)
    expected = torch._weight_norm(
        m.parametrizations.weight.original1.detach().float(),
        m.parametrizations.weight.original0.detach().float(),
        0,
    ).to(dtype)
    wnt.remove_weight_norm(m)
    assert m.weight.dtype == dtype
    assert rel_err(m.weight.detach(), expected) <= (1e-3 if dtype == torch.float16 else 8e-3)


def test_a_whole_model_with_both_schemes_and_another_parameter_name():
    torch.manual_seed(2)
    net = nn.Sequential(
        legacy(nn.Conv1d(2, 4, 3)),
        nn.ReLU(),
        parametrizations.weight_norm(nn.Conv1d(4, 4, 3)),
        nn.ReLU(),
    )
    rnn = legacy(nn.GRU(4, 3, batch_first=True), name="weight_hh_l0")
    x = torch.randn(2, 2, 9)
    with torch.no_grad():
        h = net(x).transpose(1, 2)
        before = rnn(h)[0]
        wnt.remove_weight_norm(net)
        wnt.remove_weight_norm(rnn)
        assert rel_err(net(x).transpose(1, 2), h) <= 1e-6
        assert rel_err(rnn(h)[0], before) <= 1e-6
    assert "weight_hh_l0" in dict(rnn.named_parameters())


def test_transformers_remove_fails_where_ours_works():
    # The failure the issue quotes: PyTorch's legacy removal on a parametrized module.
    m = parametrizations.weight_norm(nn.Conv1d(2, 2, 3))
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found"):
        nn.utils.remove_weight_norm(parametrizations.weight_norm(nn.Conv1d(2, 2, 3)))
    wnt.remove_weight_norm(m)
    assert not parametrize.is_parametrized(m)


def test_nothing_to_remove_and_mixed_parametrizations_are_refused():
    with pytest.raises(weightnorm.InputError, match="no weight norm in Linear"):
        wnt.remove_weight_norm(nn.Linear(2, 2))

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    m = parametrizations.weight_norm(nn.Linear(3, 3))
    parametrize.register_parametrization(m, "weight", Double())
    with pytest.raises(weightnorm.InputError, match="one of the parametrizations"):
        wnt.remove_weight_norm(m)


def test_zero_norm_slice_is_refused_where_pytorch_gives_nan():
    m = legacy(nn.Linear(3, 2))
    with torch.no_grad():
        m.weight_v[0].zero_()
    with pytest.raises(weightnorm.InputError, match="zero-norm slice"):
        wnt.remove_weight_norm(m)
    # Refused before anything changed.
    assert m._forward_pre_hooks
