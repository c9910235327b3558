"""Every file of the hostile corpora (the CLI's and the library's) through ``inspect`` and
``fuse_file``: a ``weightnorm.Error`` with the command line's message, no crash, no output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import weightnorm

ROOT = Path(__file__).resolve().parents[3]
CORPORA = [
    ROOT / "crates/weightnorm-cli/tests/corpus",
    ROOT / "crates/weightnorm/tests/fixtures/hostile",
]


def cases():
    out = []
    for d in CORPORA:
        for line in (d / "expected.tsv").read_text().splitlines():
            cols = line.split("\t")
            if len(cols) == 2:
                name, key, stage, fragment = cols[0], None, "any", cols[1]
            else:
                name, key, stage, fragment = cols
                key = None if key == "-" else key
            out.append(pytest.param(d / name, key, stage, fragment, id=f"{name}[{key}]"))
    return out


@pytest.mark.parametrize("path,key,stage,fragment", cases())
def test_hostile_file_raises_the_clis_message_and_writes_nothing(
    tmp_path, path, key, stage, fragment
):
    try:
        weightnorm.inspect(path, key=key)
    except weightnorm.Error as e:
        assert "\n" not in str(e)
        inspected = str(e)
    else:
        inspected = None
    if stage == "open":
        assert inspected is not None and fragment in inspected, inspected
    dst = tmp_path / "out.safetensors"
    with pytest.raises(weightnorm.Error) as e:
        weightnorm.fuse_file(path, dst, key=key)
    assert fragment in str(e.value), str(e.value)
    assert os.listdir(tmp_path) == []


ONNX = sorted((ROOT / "crates/weightnorm-cli/tests/corpus/onnx").glob("*.onnx"))


@pytest.mark.parametrize("path", ONNX, ids=[p.name for p in ONNX])
def test_hostile_onnx_models_inspect_or_raise_our_error(tmp_path, path):
    try:
        weightnorm.inspect(path)
    except weightnorm.Error as e:
        assert "\n" not in str(e)
    try:
        weightnorm.fuse_file(path, tmp_path / "out.onnx")
    except weightnorm.Error:
        assert os.listdir(tmp_path) == []
