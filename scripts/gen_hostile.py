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


def zip_with_pickle(pkl, path):
    """A torch.save zip archive whose data.pkl is `pkl` (its other records as torch writes them)."""
    import zipfile

    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = pkl if info.filename.endswith("/data.pkl") else src.read(info)
            out.writestr(info.filename, data)


def legacy_with_pickle(pkl, path):
    """A legacy (non-zip) torch.save stream whose main pickle is `pkl`."""
    import pickle

    with open(path, "wb") as f:
        for head in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            f.write(pickle.dumps(head, protocol=2))
        f.write(pkl)
        f.write(pickle.dumps([], protocol=2))


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

    # 6. Pickles made by hand (the second outside review): bytes no torch.save writes.
    # A rebuild whose arguments contain themselves: L = [_rebuild_from_type_v2, None, L, None],
    # _rebuild_from_type_v2(*L) would call itself with L forever (the stack overflowed).
    self_rebuild = b"\x80\x02]q\x00(ctorch._tensor\n_rebuild_from_type_v2\nq\x01Nh\x00Ne0h\x01h\x00R."
    zip_with_pickle(self_rebuild, os.path.join(OUT, "self_rebuild.pt"))
    add("self_rebuild.pt", None, "open", "nests containers too deeply")
    legacy_with_pickle(self_rebuild, os.path.join(OUT, "self_rebuild_legacy.pt"))
    add("self_rebuild_legacy.pt", None, "open", "nests containers too deeply")
    # OrderedDict applied 2,000 times to one list of 20,000 pairs: 54 KB that asked 1.9 GB.
    square = bytearray(b"\x80\x02ccollections\nOrderedDict\nq\x010]q\x00(K\x01K\x02\x86q\x02")
    square += b"h\x02" * 19_999 + b"e0" + b"h\x01h\x00\x85R0" * 2_000 + b"N."
    zip_with_pickle(bytes(square), os.path.join(OUT, "ordered_dict_square.pt"))
    add("ordered_dict_square.pt", None, "open", "more work than a file of its size can need")
    # A dict of 2,000 entries named `a`, each the dict itself: `--key a.a.a` grew past 20 GB.
    self_dict = b"\x80\x02}q\x00(" + b"X\x01\x00\x00\x00ah\x00" * 2_000 + b"u."
    zip_with_pickle(self_dict, os.path.join(OUT, "self_dict.pt"))
    add("self_dict.pt", "a.a.a", "open", "nests containers too deeply")
    add("self_dict.pt", None, "open", "nests containers too deeply")
    # A training checkpoint without --key: listed and refused, never flattened.
    torch.save({"generator": {"l.weight_g": g, "l.weight_v": v}, "steps": 1000}, os.path.join(OUT, "training_no_key.pt"))
    add("training_no_key.pt", None, "open", "not a state dict of tensors alone")

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
        "pt_reader": ["flatten_collision.pt", "stride0_gigabytes.pt", "damaged_storage.pt",
                      "self_rebuild.pt", "self_dict.pt", "training_no_key.pt"],
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
