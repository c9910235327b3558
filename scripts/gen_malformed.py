#!/usr/bin/env python3
"""The corpus of malformed and hostile checkpoints for the CLI tests, written to
crates/weightnorm-cli/tests/corpus/ with `expected.tsv`: file, then a fragment of the one-line
error `weightnorm fuse` must print (exit code 2, no output file).

Pure Python (no PyTorch): each file is a small valid checkpoint broken in one way.
Usage:  python3 scripts/gen_malformed.py
"""

import json
import os
import struct
import zipfile

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "weightnorm-cli", "tests", "corpus")
PT = os.path.join(os.path.dirname(__file__), "..", "crates", "weightnorm", "tests", "fixtures", "interop", "nested.pt")


def st(tensors, header_patch=None, data_patch=None, raw_header=None):
    """A safetensors file from {name: (dtype, shape, bytes)}."""
    header, data, off = {}, b"", 0
    for name, (dtype, shape, buf) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(buf)]}
        data += buf
        off += len(buf)
    if header_patch:
        header_patch(header)
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    if data_patch:
        data = data_patch(data)
    return struct.pack("<Q", len(h)) + h + data


def f32(*xs):
    return struct.pack("<%df" % len(xs), *xs)


GOOD = {
    "l.weight_g": ("F32", [2, 1], f32(1.0, 2.0)),
    "l.weight_v": ("F32", [2, 3], f32(1, 2, 3, 4, 5, 6)),
    "l.bias": ("F32", [2], f32(0.5, -0.5)),
}


def with_(name, value):
    t = dict(GOOD)
    t[name] = value
    return t


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []

    def add(name, content, expect):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(content)
        cases.append((name, expect))

    good = st(GOOD)
    add("empty.safetensors", b"", "too small to hold a header")
    add("short_header_length.safetensors", b"\x10\x00\x00", "too small to hold a header")
    add("header_length_absurd.safetensors", struct.pack("<Q", 1 << 60) + b"{}", "larger than the limit")
    add("header_length_past_end.safetensors", struct.pack("<Q", 4096) + b'{"a":1}', "runs past the end of the file")
    add("header_not_json.safetensors", st({}, raw_header=b"{not json at all"), "not valid JSON")
    add("header_not_utf8.safetensors", st({}, raw_header=b'{"\xff\xfe": 1}'), "not valid UTF-8")
    add("header_not_object.safetensors", st({}, raw_header=b"[1, 2, 3]"), "the header is not valid JSON")
    add("truncated_data.safetensors", good[:-7], "shorter or longer than the header says")

    def oob(h):
        h["l.bias"]["data_offsets"] = [32, 4000]
    add("offsets_out_of_bounds.safetensors", st(GOOD, header_patch=oob), "do not match its byte range")

    def overlap(h):
        h["l.bias"]["data_offsets"] = [0, 8]
    add("offsets_overlap.safetensors", st(GOOD, header_patch=overlap), "out of order, overlap or leave gaps")

    def bad_shape(h):
        h["l.weight_v"]["shape"] = [2, 2]
    add("shape_disagrees_with_offsets.safetensors", st(GOOD, header_patch=bad_shape), "do not match its byte range")

    def bad_dtype(h):
        h["l.bias"]["dtype"] = "F128"
    add("unknown_dtype.safetensors", st(GOOD, header_patch=bad_dtype), "unknown variant `F128`")

    def absurd(h):
        h["l.bias"]["shape"] = [1 << 40, 1 << 40]
    add("absurd_shape.safetensors", st(GOOD, header_patch=absurd), "overflows")

    add("nan_in_g.safetensors", st(with_("l.weight_g", ("F32", [2, 1], f32(1.0, float("nan"))))), "`l.weight (g)` holds NaN or infinite values")
    add("inf_in_v.safetensors", st(with_("l.weight_v", ("F32", [2, 3], f32(1, 2, float("inf"), 4, 5, 6)))), "`l.weight (v)` holds NaN or infinite values")
    add("zero_norm_slice.safetensors", st(with_("l.weight_v", ("F32", [2, 3], f32(0, 0, 0, 4, 5, 6)))), "zero-norm slice (index 0 of axis 0)")
    missing = dict(GOOD)
    del missing["l.weight_v"]
    add("missing_partner.safetensors", st(missing), "`l.weight_g` has no partner: `l.weight_v` is missing")
    add("g_v_shapes_disagree.safetensors", st(with_("l.weight_g", ("F32", [3, 1], f32(1, 2, 3)))), "fits no axis of v")
    add("integer_pair.safetensors", st(with_("l.weight_g", ("I32", [2, 1], struct.pack("<2i", 1, 2)))), "floating point of one dtype")
    add("no_pairs.safetensors", st({"l.bias": GOOD["l.bias"]}), "no weight-norm pair")

    with open(PT, "rb") as f:
        pt = f.read()
    add("truncated.pt", pt[: len(pt) // 2], "not a valid PyTorch checkpoint")
    # A zip archive whose pickle is garbage.
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02\xff\xff\xff garbage")
        z.writestr("archive/version", b"3\n")
    add("garbage_pickle.pt", buf.getvalue(), "not a valid PyTorch checkpoint")
    # A pickle that asks for code (os.system): refused, never run.
    evil = b"\x80\x02cos\nsystem\nX\x08\x00\x00\x00touch /x\x85R."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", evil)
        z.writestr("archive/version", b"3\n")
    add("code_execution.pt", buf.getvalue(), "found os.system")

    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        for name, expect in cases:
            f.write("%s\t%s\n" % (name, expect))
    print("wrote %d files to %s" % (len(cases), os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
