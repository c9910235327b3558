"""The exceptions of ``weightnorm``: one hierarchy, messages the same as the command line's."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from . import _native

__all__ = [
    "Error",
    "InputError",
    "NotAStateDictError",
    "OutputExistsError",
    "ReadError",
    "WriteError",
]


class Error(Exception):
    """Base class of every error ``weightnorm`` raises."""


class InputError(Error, ValueError):
    """The input is at fault: a checkpoint or state dict that cannot be used as asked, an
    option with a bad value, an output that is one of the inputs."""


class NotAStateDictError(InputError):
    """A PyTorch file that is not a state dict (a training checkpoint, say) was given without
    ``key``. ``suggestion`` is the key that holds one, when exactly one does."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.suggestion = suggestion


class OutputExistsError(Error, FileExistsError):
    """The output exists and ``force=True`` was not given. ``filename`` is the output,
    ``errno`` is ``EEXIST``."""

    def __str__(self) -> str:
        return str(self.strerror)


class ReadError(Error, OSError):
    """An input file could not be read."""


class WriteError(Error, OSError):
    """An output could not be written (nothing was left in its place)."""


for _cls in (Error, InputError, NotAStateDictError, OutputExistsError, ReadError, WriteError):
    _cls.__module__ = "weightnorm"


def _raise(kind: str, message: str, extra: str | None) -> None:
    if kind == "not_a_state_dict":
        if extra is not None:
            message = f"{message} (key={extra!r})"
        raise NotAStateDictError(message, extra) from None
    if kind == "would_drop":
        raise InputError(
            f"{message} (an output named .pt keeps them; state_dict_only=True leaves them out)"
        ) from None
    if kind == "exists":
        raise OutputExistsError(
            errno.EEXIST, f"{message}: pass force=True to overwrite it", extra
        ) from None
    if kind == "read":
        raise ReadError(message) from None
    if kind == "io":
        raise WriteError(message) from None
    raise InputError(message) from None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raises the native layer's errors as ``weightnorm.Error`` subclasses."""
    try:
        yield
    except _native.NativeError as e:
        kind, message, extra = e.args
        _raise(kind, message, extra)
