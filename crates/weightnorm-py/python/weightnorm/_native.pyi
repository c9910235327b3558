"""Type stubs of the native layer (``crates/weightnorm-py/src/lib.rs``). Private: use the
functions of ``weightnorm``."""

from typing import Any

__version__: str

class NativeError(Exception):
    """``args == (kind, message, extra)``; ``weightnorm`` raises its own classes for it."""

class Owned:
    """A tensor computed by the core, wrapped by NumPy without a copy."""

    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    @property
    def dtype(self) -> str: ...

# name, dtype (safetensors' name), shape, address, byte length, owner (None: no data needed)
Entry = tuple[str, str, list[int], int, int, Any]

def data_keys(
    op: str,
    tensors: list[tuple[str, str, list[int]]],
    dim: int | None | str,
    scheme: str | None = None,
    include: str | None = None,
) -> list[str]: ...
def transform(
    op: str,
    tensors: list[Entry],
    dim: int | None | str,
    scheme: str | None = None,
    include: str | None = None,
) -> tuple[list[tuple[str, int | Owned, int]], list[dict[str, Any]]]: ...
def fuse_pair(g: Entry, v: Entry, dim: int | None) -> Owned: ...
def inspect_file(path: str, key: str | None = None) -> dict[str, Any]: ...
def fuse_file(
    src: str,
    dst: str,
    dim: int | None | str,
    key: str | None = None,
    force: bool = False,
    state_dict_only: bool = False,
) -> dict[str, Any]: ...
def split_file(
    src: str,
    dst: str,
    dim: int | None | str,
    scheme: str,
    include: str | None = None,
    key: str | None = None,
    force: bool = False,
    state_dict_only: bool = False,
) -> dict[str, Any]: ...
def convert_file(
    src: str,
    dst: str,
    scheme: str,
    key: str | None = None,
    force: bool = False,
    state_dict_only: bool = False,
) -> dict[str, Any]: ...
