"""``weightnorm`` on ``torch.nn`` modules (needs PyTorch, imported when a function is called).

:func:`remove_weight_norm` folds every weight norm of a module in place, whichever way it was
attached: the legacy hook of ``torch.nn.utils.weight_norm`` or the parametrization of
``torch.nn.utils.parametrizations.weight_norm``, on any parameter of any layer (``Linear``,
``ConvNd``, ``ConvTransposeNd`` with their ``dim=1``, positional convolutions with ``dim=2``,
``dim=None``), with the exact kernel of the rest of the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from . import _native, _tensors
from ._errors import InputError, translated

if TYPE_CHECKING:
    import torch as _torch_module

__all__ = ["remove_weight_norm"]

M = TypeVar("M", bound="_torch_module.nn.Module")


def _need_torch(what: str) -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the tests run with torch
        raise ImportError(f"weightnorm.torch.{what} needs PyTorch: pip install torch") from e
    return torch


def _fused(torch: Any, g: Any, v: Any, dim: int | None) -> Any:
    """``g * v / ||v||`` by the core's kernel, as a tensor of ``v``'s dtype and device."""
    with translated():
        owned = _native.fuse_pair(_tensors._entry("g", g, True), _tensors._entry("v", v, True), dim)
    return _tensors._as_like(owned, v)


def remove_weight_norm(module: M) -> M:
    """Folds every weight norm in ``module`` (and its submodules) in place and returns it.

    Each weight-normalized parameter becomes a plain ``Parameter`` holding
    ``w = g * v / ||v||`` in ``v``'s dtype and device, with ``v``'s ``requires_grad``; the
    hook or parametrization is removed, so the module computes what it computed before (to
    rounding: the fold is exact where PyTorch rounds its norm to the dtype first).

    Both schemes are handled, in any mix: ``torch.nn.utils.weight_norm`` (the forward pre-hook,
    parameters ``<name>_g``/``<name>_v``) and ``torch.nn.utils.parametrizations.weight_norm``
    (``parametrizations.<name>.original0``/``original1``), where PyTorch's own
    ``remove_weight_norm`` knows only the first.

    Raises:
        InputError: no weight norm anywhere in ``module``; a parametrization list that holds
            weight norm beside other parametrizations (removing one would change the others);
            a zero-norm slice or non-finite values in ``v`` or ``g``.
    """
    torch = _need_torch("remove_weight_norm")
    from torch.nn.utils import parametrize
    from torch.nn.utils.weight_norm import WeightNorm

    found = 0
    for path, m in list(module.named_modules()):
        where = path or type(module).__name__
        # The legacy hook: parameters <name>_g and <name>_v, the weight recomputed before
        # every forward.
        for hook_id, hook in list(m._forward_pre_hooks.items()):
            if not isinstance(hook, WeightNorm):
                continue
            name = hook.name
            g, v = getattr(m, name + "_g"), getattr(m, name + "_v")
            w = _fused(torch, g.detach(), v.detach(), hook.dim)
            del m._forward_pre_hooks[hook_id]
            if hasattr(m, name):
                delattr(m, name)
            del m._parameters[name + "_g"]
            del m._parameters[name + "_v"]
            m.register_parameter(name, torch.nn.Parameter(w, requires_grad=v.requires_grad))
            found += 1
        # The parametrization: parametrizations.<name>.original0 (g) and .original1 (v).
        if parametrize.is_parametrized(m):
            for name, plist in list(m.parametrizations.items()):
                kinds = [type(p).__name__ for p in plist]
                if "_WeightNorm" not in kinds:
                    continue
                if kinds != ["_WeightNorm"]:
                    raise InputError(
                        f"{where}.{name}: weight norm is one of the parametrizations "
                        f"{kinds}; remove the others first"
                    )
                g, v = plist.original0, plist.original1
                w = _fused(torch, g.detach(), v.detach(), plist[0].dim)
                requires_grad = v.requires_grad
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
                m._parameters[name] = torch.nn.Parameter(w, requires_grad=requires_grad)
                found += 1
    if found == 0:
        raise InputError(
            f"no weight norm in {type(module).__name__}: nothing to remove (neither "
            "torch.nn.utils.weight_norm nor parametrizations.weight_norm is applied)"
        )
    return module
