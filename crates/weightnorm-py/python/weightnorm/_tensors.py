"""State dicts across the native boundary: tensors in without a copy, results out as arrays
that own the bytes the core computed."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _native
from ._errors import InputError, translated

_NUMPY = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("i", 2): "I16",
    ("i", 1): "I8",
    ("u", 8): "U64",
    ("u", 4): "U32",
    ("u", 2): "U16",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}

_TORCH_NAMES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}


def _torch() -> Any:
    """The torch module if it is already imported (a torch tensor can only exist then)."""
    return sys.modules.get("torch")


def _is_torch(x: Any) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _dtype_name(x: Any) -> str:
    if _is_torch(x):
        return _TORCH_NAMES.get(str(x.dtype).removeprefix("torch."), str(x.dtype))
    dt = x.dtype
    if dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big"):
        return f"big-endian {dt}"
    return _NUMPY.get((dt.kind, dt.itemsize), str(dt))


def _describe(name: str, x: Any) -> tuple[str, str, list[int]]:
    return (name, _dtype_name(x), [int(d) for d in x.shape])


def _host(x: Any) -> Any:
    """``x`` as a contiguous array in this process's memory: itself when it is one (no copy),
    else a contiguous CPU copy."""
    if _is_torch(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        return t.resolve_conj().resolve_neg()
    return np.ascontiguousarray(x)


def _entry(name: str, x: Any, with_data: bool) -> tuple:
    dtype = _dtype_name(x)
    shape = [int(d) for d in x.shape]
    if not with_data:
        return (name, dtype, shape, 0, 0, None)
    h = _host(x)
    if _is_torch(h):
        return (name, dtype, shape, h.data_ptr(), h.numel() * h.element_size(), h)
    return (name, dtype, shape, h.__array_interface__["data"][0], h.nbytes, h)


def _is_tensor(x: Any) -> bool:
    return isinstance(x, np.ndarray) or _is_torch(x)


def _as_like(owned: Any, like: Any) -> Any:
    """A computed buffer as the kind of tensor ``like`` is: NumPy over the buffer, or a torch
    tensor over the same memory (moved to ``like``'s device when that is not the CPU)."""
    arr = np.asarray(owned)
    if not _is_torch(like):
        return arr
    torch = _torch()
    t = torch.from_numpy(arr)
    if owned.dtype == "BF16":
        t = t.view(torch.bfloat16)
    if like.device.type != "cpu":
        t = t.to(like.device)
    return t


def _check_mapping(state_dict: Any) -> None:
    if not isinstance(state_dict, Mapping):
        raise InputError(
            "expected a state dict (a mapping of names to tensors), "
            f"not {type(state_dict).__name__}"
        )
    for k in state_dict:
        if not isinstance(k, str):
            raise InputError(f"a state dict's keys are strings: {k!r} is a {type(k).__name__}")


def run(
    op: str,
    state_dict: Mapping[str, Any],
    dim: Any = "infer",
    scheme: str | None = None,
    include: str | None = None,
) -> tuple[dict, list[dict]]:
    """Runs ``op`` on a state dict; returns the new dict (same mapping type) and the pairs."""
    _check_mapping(state_dict)
    names = [k for k, v in state_dict.items() if _is_tensor(v)]
    values = [state_dict[k] for k in names]
    with translated():
        wanted = set(
            _native.data_keys(
                op,
                [_describe(n, v) for n, v in zip(names, values, strict=True)],
                dim,
                scheme,
                include,
            )
        )
        # The data of the tensors the operation reads; names and shapes of the others.
        entries = [_entry(n, v, n in wanted) for n, v in zip(names, values, strict=True)]
        out, pairs = _native.transform(op, entries, dim, scheme, include)
    if op == "inspect":
        return {}, pairs
    # Every entry at the place of the input it came from; the dict's other values (not
    # tensors) keep theirs.
    place = {k: i for i, k in enumerate(state_dict)}
    tensor_keys = set(names)
    rows = [(place[k], 0, k, v) for k, v in state_dict.items() if k not in tensor_keys]
    for j, (name, value, at) in enumerate(out):
        if isinstance(value, int):
            tensor = values[value]
        else:
            # A computed tensor takes the kind of the tensor it came from.
            tensor = _as_like(value, values[at])
        rows.append((place[names[at]], j, name, tensor))
    rows.sort(key=lambda r: (r[0], r[1]))
    result = _new_like(state_dict)
    for _, _, k, v in rows:
        result[k] = v
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        try:
            result._metadata = meta
        except AttributeError:
            pass
    return result, pairs


def _new_like(d: Mapping) -> dict:
    """An empty mapping of ``d``'s type when that is a dict type (``OrderedDict``), else a
    ``dict``."""
    try:
        new = type(d)()
        if isinstance(new, dict):
            return new
    except TypeError:
        pass
    return {}
