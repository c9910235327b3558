#!/usr/bin/env python3
"""Hostile and unusual checkpoints for the library's tests (crates/weightnorm/tests/hostile.rs),
written to crates/weightnorm/tests/fixtures/hostile/ with `expected.tsv` (file, key or `-`,
stage `open` or `fuse`, a fragment of the one-line error), and copied into the fuzz corpora
(fuzz/corpus/<target>/). Also writes the valid archives that used to be refused:

  interop/root_of_21_characters.pt   a torch.save zip whose root folder name has 21 characters
  interop/legacy.pt                  the f32 legacy-scheme fixture saved in the legacy
                                     (non-zip) format, nested two levels: {"model": {"net": sd}}

Needs PyTorch (see scripts/README.md):  scripts/.venv/bin/python scripts/gen_hostile.py
"""

import io
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "crates", "weightnorm", "tests", "fixtures")
OUT = os.path.join(FIX, "hostile")
FUZZ = os.path.join(HERE, "..", "fuzz", "corpus")


def legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []

    def add(name, key, stage, expect):
        cases.append((name, key or "-", stage, expect))

    g = torch.tensor([[1.0], [2.0]])
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])

    # 1. One layer in both weight-norm key schemes (the fuse would write `x.weight` twice).
    save_file(
        {
            "x.weight_g": g,
            "x.weight_v": v,
            "x.parametrizations.weight.original0": g * 3,
            "x.parametrizations.weight.original1": v + 1,
            "x.bias": torch.zeros(2),
        },
        os.path.join(OUT, "both_schemes.safetensors"),
    )
    add("both_schemes.safetensors", None, "fuse", "has a weight-norm pair in both schemes")

    # 2. Two spellings that flatten to one name, at the top and below a key, zip and legacy.
    torch.save({"a.b": v, "a": {"b": v + 1}}, os.path.join(OUT, "flatten_collision.pt"))
    add("flatten_collision.pt", None, "open", "two entries are both named `a.b`")
    legacy({"model": {"l.weight": v, "l": {"weight": v * 2}}}, os.path.join(OUT, "flatten_collision_legacy.pt"))
    add("flatten_collision_legacy.pt", "model", "open", "two entries are both named `l.weight`")

    # 3. A few hundred bytes whose stride-0 view declares 4 GiB: refused, never allocated.
    big = torch.zeros(1).expand(1 << 30)
    torch.save({"w": big}, os.path.join(OUT, "stride0_gigabytes.pt"))
    add("stride0_gigabytes.pt", None, "open", "would hold more than")
    legacy({"w": big}, os.path.join(OUT, "stride0_gigabytes_legacy.pt"))
    add("stride0_gigabytes_legacy.pt", None, "open", "would hold more than")

    # 4. Broken legacy streams.
    buf = io.BytesIO()
    legacy({"l.weight_g": g, "l.weight_v": v}, buf)
    good = buf.getvalue()
    with open(os.path.join(OUT, "truncated_legacy.pt"), "wb") as f:
        f.write(good[: len(good) - 10])
    add("truncated_legacy.pt", None, "open", "not a valid PyTorch checkpoint")
    with open(os.path.join(OUT, "legacy_header_only.pt"), "wb") as f:
        f.write(good[:140])
    add("legacy_header_only.pt", None, "open", "not a valid PyTorch checkpoint")
    # The saved object replaced by a call of os.system: refused, never run.
    magic_and_headers = good[: good.index(b"\x80\x02}q\x00(X\n")]
    evil = b"\x80\x02cos\nsystem\nX\x08\x00\x00\x00touch /x\x85R."
    with open(os.path.join(OUT, "legacy_code_execution.pt"), "wb") as f:
        f.write(magic_and_headers + evil + b"\x80\x02]q\x00.")
    add("legacy_code_execution.pt", None, "open", "found os.system")

    # 5. A zip archive whose storage bytes were damaged on disk (CRC mismatch).
    buf = io.BytesIO()
    torch.save({"l.weight_g": g, "l.weight_v": v}, buf)
    data = bytearray(buf.getvalue())
    at = data.index(v.numpy().tobytes())
    data[at] ^= 0x40
    with open(os.path.join(OUT, "damaged_storage.pt"), "wb") as f:
        f.write(bytes(data))
    add("damaged_storage.pt", None, "read", "does not match its CRC-32")

    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        for row in cases:
            f.write("\t".join(row) + "\n")

    # Valid files that used to be refused.
    interop = os.path.join(FIX, "interop")
    sd = load_file(os.path.join(interop, "f32_legacy.safetensors"))
    torch.save(sd, os.path.join(interop, "root_of_21_characters.pt"))
    legacy({"model": {"net": sd}, "step": 5}, os.path.join(interop, "legacy.pt"))

    # Seeds for the fuzzers.
    for target, names in {
        "pt_reader": ["flatten_collision.pt", "stride0_gigabytes.pt", "damaged_storage.pt"],
        "pt_legacy": [n for n, *_ in cases if "legacy" in n],
    }.items():
        d = os.path.join(FUZZ, target)
        os.makedirs(d, exist_ok=True)
        for n in names:
            shutil.copy(os.path.join(OUT, n), os.path.join(d, n))
    shutil.copy(os.path.join(interop, "root_of_21_characters.pt"), os.path.join(FUZZ, "pt_reader"))
    shutil.copy(os.path.join(interop, "legacy.pt"), os.path.join(FUZZ, "pt_legacy"))
    print("wrote %d hostile files to %s" % (len(cases), os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
