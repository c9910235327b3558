"""Weight-norm checkpoint tools for PyTorch users, exact, on files and on state dicts.

``w = g * v / ||v||``: the weight normalization of Salimans and Kingma (2016) as PyTorch stores
it, in either key scheme (``torch.nn.utils.weight_norm``'s ``X_g``/``X_v``, or
``torch.nn.utils.parametrizations.weight_norm``'s ``parametrizations.X.original0/1``).

In memory (a state dict of torch tensors or NumPy arrays; results of the same kind)::

    weightnorm.inspect(state_dict)          # the pairs, their dims and statistics
    weightnorm.fuse(state_dict)             # every pair folded into its weight
    weightnorm.split(state_dict)            # every *.weight split into a pair
    weightnorm.convert(state_dict, "legacy")  # pairs renamed into the other scheme

On files (``.safetensors``, ``.pt``/``.bin`` zip or legacy, a sharded index, ``.onnx``), with
the command line's semantics (atomic, never over an input)::

    weightnorm.fuse_file("generator.pt", "generator.safetensors", key="generator")

Modules (needs PyTorch)::

    weightnorm.torch.remove_weight_norm(model)   # every weight norm folded, either scheme

Importing ``weightnorm`` needs NumPy only; the functions that touch torch import it when
called. Errors are ``weightnorm.Error`` subclasses (``InputError`` is a ``ValueError``;
``OutputExistsError``, ``ReadError`` and ``WriteError`` are ``OSError``\\ s).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from . import _native, _tensors
from ._errors import (
    Error,
    InputError,
    NotAStateDictError,
    OutputExistsError,
    ReadError,
    WriteError,
    translated,
)

if TYPE_CHECKING:
    from . import torch

__version__: str = _native.__version__

__all__ = [
    "Error",
    "InputError",
    "NotAStateDictError",
    "OutputExistsError",
    "Pair",
    "ReadError",
    "Stats",
    "WriteError",
    "convert",
    "convert_file",
    "fuse",
    "fuse_file",
    "inspect",
    "split",
    "split_file",
    "torch",
]

Scheme = Literal["legacy", "parametrizations"]
PathLike = str | os.PathLike[str]


class Stats(NamedTuple):
    """Minimum, maximum and mean of some values."""

    min: float
    max: float
    mean: float


@dataclass(frozen=True)
class Pair:
    """A weight-norm pair.

    Attributes:
        name: the parameter's plain name (``"conv.weight"``).
        scheme: ``"legacy"``, ``"parametrizations"``, or ``"onnx"`` for a subgraph of an ONNX
            model.
        g_key: the key of ``g`` (for ONNX: its initializer).
        v_key: the key of ``v``.
        dim: PyTorch's ``dim``: the axis that keeps one norm per index, ``None`` for the whole
            tensor.
        g_shape: ``g``'s shape (keep-dims, or ``()`` for the whole tensor).
        v_shape: ``v``'s shape (the weight's).
        dtype: ``v``'s dtype (``"F32"``, ``"F16"``, ``"BF16"``, ``"F64"``).
        g: statistics of ``g``'s values (``None`` when empty or not computed).
        v_norms: statistics of the norms of ``v``'s slices (``None`` when empty or not
            computed).
    """

    name: str
    scheme: str
    g_key: str
    v_key: str
    dim: int | None
    g_shape: tuple[int, ...] = ()
    v_shape: tuple[int, ...] = ()
    dtype: str = ""
    g: Stats | None = None
    v_norms: Stats | None = None


def _pair(d: dict) -> Pair:
    def stats(s: Any) -> Stats | None:
        return None if s is None else Stats(s["min"], s["max"], s["mean"])

    return Pair(
        name=d["name"],
        scheme=d["scheme"],
        g_key=d["g_key"],
        v_key=d["v_key"],
        dim=d["dim"],
        g_shape=tuple(d.get("g_shape", ())),
        v_shape=tuple(d.get("v_shape", ())),
        dtype=d.get("dtype", ""),
        g=stats(d.get("g")),
        v_norms=stats(d.get("v_norms")),
    )


def inspect(src: PathLike | Mapping[str, Any], key: str | None = None) -> list[Pair]:
    """The weight-norm pairs of a checkpoint file, an ONNX model or a state dict.

    Args:
        src: a path (``.safetensors``; a PyTorch file ``.pt``/``.pth``/``.bin``/``.ckpt``, zip
            or legacy; a sharded checkpoint's ``*.index.json``; an ``.onnx`` model, whose
            weight-norm subgraphs are listed) or a state dict (torch tensors or NumPy arrays).
        key: for a PyTorch file, the key of the state dict inside it (``"generator"``, or a
            dotted path such as ``"model.generator"``).

    Returns:
        The pairs, sorted by name, each with its scheme, ``dim``, shapes, and the statistics of
        ``g`` and of ``v``'s slice norms.

    Raises:
        NotAStateDictError: a training checkpoint without ``key`` (the message names it).
        InputError: a file or state dict that cannot be read as one, a lone ``g`` or ``v``.
        ReadError: the file cannot be read.
    """
    if isinstance(src, Mapping):
        if key is not None:
            raise InputError("key applies to checkpoint files, not to a state dict")
        _, pairs = _tensors.run("inspect", src)
        return [_pair(p) for p in pairs]
    with translated():
        doc = _native.inspect_file(os.fspath(src), key)
    return [_pair(p) for p in doc["pairs"]]


def fuse(state_dict: Mapping[str, Any], *, dim: int | None | str = "infer") -> dict[str, Any]:
    """Folds every weight-norm pair of a state dict into its weight, ``w = g * v / ||v||``.

    Both key schemes are recognised. The fused weight has ``v``'s dtype (f16 and bf16 computed
    in f32) and kind (torch in, torch out; NumPy in, NumPy out), and takes ``v``'s place; every
    other entry is passed through as the same object (no copy).

    Args:
        state_dict: names to tensors (other values are passed through).
        dim: ``"infer"`` (from ``g``'s shape), an int (PyTorch's ``dim`` for every pair), or
            ``None`` (norms over the whole tensor).

    Returns:
        A new mapping of the input's type (``OrderedDict`` stays one, ``_metadata`` kept).

    Raises:
        InputError: no pair, a lone ``g`` or ``v``, mismatched shapes or dtypes, NaN or
            infinity, a zero-norm slice of ``v`` (whose direction is undefined), a fused name
            that already exists.
    """
    return _tensors.run("fuse", state_dict, dim)[0]


def split(
    state_dict: Mapping[str, Any],
    include: str | None = None,
    dim: int | None = 0,
    *,
    scheme: Scheme = "legacy",
) -> dict[str, Any]:
    """Splits weights into weight-norm pairs: ``g = ||w||`` (over every axis but ``dim``),
    ``v = w`` (the same tensor object, no copy).

    Args:
        state_dict: names to tensors.
        include: a regular expression (searched in each name) choosing the float tensors to
            split; by default every ``*.weight`` of rank 2 or more.
        dim: PyTorch's ``dim`` (the default 0 is PyTorch's), ``None`` for the whole tensor.
        scheme: the key scheme of the output, ``"legacy"`` (``X_g``/``X_v``, the command
            line's default) or ``"parametrizations"``.

    Raises:
        InputError: nothing selected, a bad ``dim`` or regular expression, a zero-norm slice,
            an output key that already exists.
    """
    return _tensors.run("split", state_dict, dim, scheme, include)[0]


def convert(state_dict: Mapping[str, Any], scheme: Scheme = "parametrizations") -> dict[str, Any]:
    """Renames every weight-norm pair into ``scheme``; the tensors are the same objects.

    ``"parametrizations"`` gives the keys ``torch.nn.utils.parametrizations.weight_norm``
    expects (``conv.parametrizations.weight.original0``/``original1``), ``"legacy"`` those of
    ``torch.nn.utils.weight_norm`` (``conv.weight_g``/``conv.weight_v``): an old checkpoint
    loads into a new model, and back.

    Raises:
        InputError: no pair, an unknown scheme, a renamed key that already exists.
    """
    return _tensors.run("convert", state_dict, "infer", scheme)[0]


def fuse_file(
    src: PathLike,
    dst: PathLike,
    key: str | None = None,
    force: bool = False,
    *,
    dim: int | None | str = "infer",
    state_dict_only: bool = False,
) -> dict[str, Any]:
    """``weightnorm fuse``: a checkpoint file with every pair folded, written atomically.

    The input is memory-mapped and the output streamed one tensor at a time, so a checkpoint
    larger than memory fuses. The output's name chooses its format: ``.safetensors``; a PyTorch
    file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``), which keeps the input's nesting and the other
    entries of a training checkpoint; or, for a sharded input, an index with its shards beside
    it. An ``.onnx`` input has its weight-norm subgraphs folded into constants (``dst`` must be
    ``.onnx``).

    Args:
        src: the checkpoint (or index, or ONNX model).
        dst: where to write; never one of the inputs.
        key: for a PyTorch file, the key of the state dict inside it.
        force: replace ``dst`` (and an index's shards) if it exists.
        dim: as in :func:`fuse`.
        state_dict_only: leave out a training checkpoint's other entries.

    Returns:
        ``{"pairs": [...], "files": n, "tensors": n, "carried": n}`` (for ONNX: the folded
        weights' names and the largest difference from the graph's own computation).

    Raises:
        OutputExistsError: ``dst`` exists and ``force`` is false.
        InputError: as :func:`fuse`, or ``dst`` is an input, or a training checkpoint's other
            entries would be lost in a ``.safetensors`` output.
        ReadError, WriteError: the file system failed; nothing was left at ``dst``.
    """
    with translated():
        return _native.fuse_file(os.fspath(src), os.fspath(dst), dim, key, force, state_dict_only)


def split_file(
    src: PathLike,
    dst: PathLike,
    key: str | None = None,
    force: bool = False,
    *,
    include: str | None = None,
    dim: int | None = 0,
    scheme: Scheme = "legacy",
    state_dict_only: bool = False,
) -> dict[str, Any]:
    """``weightnorm split``: :func:`split` from file to file, with :func:`fuse_file`'s
    semantics (atomic, never over an input, formats by name)."""
    with translated():
        return _native.split_file(
            os.fspath(src), os.fspath(dst), dim, scheme, include, key, force, state_dict_only
        )


def convert_file(
    src: PathLike,
    dst: PathLike,
    scheme: Scheme = "parametrizations",
    key: str | None = None,
    force: bool = False,
    *,
    state_dict_only: bool = False,
) -> dict[str, Any]:
    """``weightnorm convert``: :func:`convert` from file to file, with :func:`fuse_file`'s
    semantics (atomic, never over an input, formats by name)."""
    with translated():
        return _native.convert_file(
            os.fspath(src), os.fspath(dst), scheme, key, force, state_dict_only
        )


def __getattr__(name: str) -> Any:
    # `weightnorm.torch` is imported on first use, so `import weightnorm` needs no torch.
    if name == "torch":
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'weightnorm' has no attribute {name!r}")
