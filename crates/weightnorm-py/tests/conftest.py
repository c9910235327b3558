"""Shared fixtures of the Python suite: PyTorch is the reference throughout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Scratch outputs need no flush to disk.
os.environ.setdefault("WEIGHTNORM_NO_FSYNC", "1")

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def root() -> Path:
    """The repository's root."""
    return ROOT


def rel_err(a, b) -> float:
    """max |a - b| / max |b| in f64 (0 when both are zero)."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff
