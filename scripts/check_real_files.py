#!/usr/bin/env python3
"""Checks the `weightnorm` binary on the real-world fixtures of scripts/gen_real_fixtures.py
(crates/weightnorm-cli/tests/fixtures/real/, described by its manifest.json), in PyTorch and
onnxruntime. One line per check, `ok` or `FAIL`, with the measured figure; the exit status is 1
if any check failed.

  a. `BIN fuse <dir>/<index> -o OUT/<index>` for the safetensors and the `.bin` shards: the fused
     shards load strictly into the transformers model built from config.json with its weight
     norm removed; its output against the original (weight-normed) model's, max relative
     difference <= 1e-6; each fused weight against torch._weight_norm(v, g, dim) <= 1e-6.
  b. `BIN convert <index> -o OUT/<index> --scheme legacy|parametrizations` (both indexes): the
     keys are those of the model with weight norm in that scheme (checked by name: a
     parametrizations model also loads legacy keys, through the pre-hook PyTorch registers),
     it loads strictly, and its output equals the original's exactly.
  c. `BIN fuse hifigan_train.pt --key generator -o OUT/hifigan_fused.pt`: torch.load(...,
     weights_only=True) reads it; `generator` equals hifigan_generator_fused.safetensors to 1e-6
     relative, loads strictly into a generator without weight norm and computes y to 1e-6; every
     other entry (discriminator, optimizer states, steps, epoch, lr, note) and the top-level
     key order identical to the input's (tensors bit for bit, containers with their types).
  d. every ONNX export: `BIN inspect M.onnx --json` runs and prints JSON (with `pairs`: as many
     as the manifest lists); `BIN fuse M.onnx -o OUT/M.fused.onnx`: onnx.checker passes, no
     ReduceL2/ReduceSum/ReduceSumSquare/Pow/Sqrt/Div/Mul node remains, every Conv/Gemm weight is
     an initializer (equal to g v / ||v|| to 1e-6), onnxruntime on x against PyTorch's y <= 1e-5
     relative; `BIN canonicalize M.onnx -o OUT/M.canonical.onnx`: exits 0, onnx.checker passes,
     onnxruntime on x against y <= 1e-5 relative. A graph whose weight norm the exporter already
     folded (no pair) may be fused as a copy or refused with one line: both are ok.

Usage:
  scripts/.venv/bin/python scripts/check_real_files.py BIN [--keep DIR]
      BIN   the weightnorm binary (e.g. target/release/weightnorm)
      --keep DIR   write the outputs under DIR (a new directory) instead of a temporary one
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file as load_torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_real_fixtures import (  # noqa: E402
    OUT as FIX, Generator, encodec_forward, encodec_model, load_sharded, quiet, rel_diff, remove_wn, to_scheme,
    wn_pairs)

INDEXES = {"st": ("sharded_st", "model.safetensors.index.json"), "bin": ("sharded_bin", "pytorch_model.bin.index.json")}
WN_OPS = {"ReduceL2", "ReduceSum", "ReduceSumSquare", "Pow", "Sqrt", "Div", "Mul"}
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class Checks:
    def __init__(self, binary, out):
        self.binary = binary
        self.out = out
        self.failures = 0
        self.count = 0

    def report(self, ok, what, figure=""):
        self.count += 1
        self.failures += not ok
        print(("ok   " if ok else "FAIL ") + what + (": " + figure if figure else ""), flush=True)
        return ok

    def run(self, what, args):
        """Runs BIN with `args` (check=True); the completed process, or None after a FAIL line
        with what it printed."""
        cmd = [self.binary] + [str(a) for a in args]
        print("$ " + " ".join(cmd), flush=True)
        try:
            return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        except subprocess.CalledProcessError as e:
            self.report(False, what, "exit %d: %s" % (e.returncode, (e.stderr or e.stdout or "").strip()[-800:]))
        except (OSError, subprocess.TimeoutExpired) as e:
            self.report(False, what, "%s: %s" % (type(e).__name__, e))
        return None

    def path(self, *parts):
        p = os.path.join(self.out, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def attempt(self, what, fn):
        """fn() -> (ok, figure); an exception is a FAIL with its text."""
        try:
            ok, figure = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported and the checks go on
            return self.report(False, what, "%s: %s" % (type(e).__name__, str(e).strip()[-800:]))
        return self.report(ok, what, figure)


def manifest():
    with open(os.path.join(FIX, "manifest.json")) as f:
        return json.load(f)["fixtures"]


# ---------------------------------------------------------------------------------------------
# a, b. Sharded checkpoints


def encodec_config():
    from transformers import EncodecConfig

    return EncodecConfig.from_pretrained(os.path.join(FIX, "sharded_st"))


def exact_weight(v, g, dim):
    """g v / ||v|| in float64, ||v|| over every axis but `dim` (PyTorch's dim; -1/None: whole)."""
    v = v.double()
    g = g.double()
    if dim is None or dim == -1:
        return v * (g / v.norm())
    axes = [a for a in range(v.dim()) if a != dim % v.dim()]
    return v * (g / v.norm(dim=axes, keepdim=True))


def check_sharded(c):
    config = encodec_config()
    io = load_torch(os.path.join(FIX, "sharded.io.safetensors"))
    x, y = io["x"], io["y"]
    original = load_sharded(os.path.join(FIX, "sharded_st", "model.safetensors.index.json"))
    reference = encodec_model(config)
    pairs = wn_pairs(reference)
    reference.load_state_dict(original, strict=True)
    y0 = encodec_forward(reference, x)
    c.report(torch.equal(y0, y), "sharded: the original model reproduces sharded.io.safetensors' y",
             "max |diff| %.1e" % (y0 - y).abs().max().item())

    for kind, (folder, index) in INDEXES.items():
        # a. fuse
        what = "a. fuse %s/%s" % (folder, index)
        out = c.path("fuse_" + kind, index)
        if c.run(what, ["fuse", os.path.join(FIX, folder, index), "-o", out]) is not None:
            def fused_check(out=out):
                state = load_sharded(out)
                with open(out) as f:
                    shards = len(set(json.load(f)["weight_map"].values()))
                plain = remove_wn(encodec_model(config))
                plain.load_state_dict(state, strict=True)
                worst = max(rel_diff(state[p["weight"]], exact_weight(original[p["v"]], original[p["g"]], p["dim"]))
                            for p in pairs)
                err = rel_diff(encodec_forward(plain, x), y0)
                return (err <= 1e-6 and worst <= 1e-6,
                        "%d pairs fused into %d shards, strict load ok; output vs original max rel %.2e (<= 1e-6); "
                        "weights vs exact g v/||v|| max rel %.2e (<= 1e-6)" % (len(pairs), shards, err, worst))

            c.attempt(what, fused_check)
        # b. convert to both schemes
        for scheme in ("legacy", "parametrizations"):
            what = "b. convert %s/%s --scheme %s" % (folder, index, scheme)
            out = c.path("convert_%s_%s" % (kind, scheme), index)
            if c.run(what, ["convert", os.path.join(FIX, folder, index), "-o", out, "--scheme", scheme]) is None:
                continue

            def convert_check(out=out, scheme=scheme):
                state = load_sharded(out)
                model = to_scheme(encodec_model(config), scheme)
                # The key set first: a parametrizations model would also load legacy keys
                # strictly (parametrizations.weight_norm renames weight_g/weight_v on load).
                want = set(model.state_dict())
                if set(state) != want:
                    return False, "keys: %d not expected (e.g. %s), %d missing (e.g. %s)" % (
                        len(set(state) - want), sorted(set(state) - want)[:2], len(want - set(state)),
                        sorted(want - set(state))[:2])
                model.load_state_dict(state, strict=True)
                diff = (encodec_forward(model, x) - y0).abs().max().item()
                return diff == 0, "%s keys as expected; strict load into the %s-scheme model ok; output max |diff| %.1e (== 0)" % (
                    len(state), scheme, diff)

            c.attempt(what, convert_check)


# ---------------------------------------------------------------------------------------------
# c. The HiFi-GAN training checkpoint


def difference(a, b, path):
    """The first way b differs from a (types, keys and their order, tensors bit for bit, the
    `_metadata` of state dicts), or None."""
    if type(a) is not type(b):
        return "%s: %s vs %s" % (path, type(a).__name__, type(b).__name__)
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return "%s: %s%s vs %s%s" % (path, a.dtype, list(a.shape), b.dtype, list(b.shape))
        if not torch.equal(a.reshape(-1).contiguous().view(torch.uint8), b.reshape(-1).contiguous().view(torch.uint8)):
            return "%s: values differ" % path
        return None
    if isinstance(a, dict):
        if list(a) != list(b):
            return "%s: keys %s vs %s" % (path, list(a)[:8], list(b)[:8])
        if getattr(a, "_metadata", None) != getattr(b, "_metadata", None):
            return "%s: _metadata differs" % path
        for k in a:
            d = difference(a[k], b[k], "%s[%r]" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return "%s: length %d vs %d" % (path, len(a), len(b))
        for k, (u, w) in enumerate(zip(a, b)):
            d = difference(u, w, "%s[%d]" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, float) and a != a and b != b:
        return None
    return None if a == b else "%s: %r vs %r" % (path, a, b)


def check_hifigan(c):
    src = os.path.join(FIX, "hifigan_train.pt")
    out = c.path("hifigan_fused.pt")
    what = "c. fuse hifigan_train.pt --key generator"
    if c.run(what, ["fuse", src, "--key", "generator", "-o", out]) is None:
        return
    before = torch.load(src, weights_only=True)
    try:
        after = torch.load(out, weights_only=True)
    except Exception as e:  # noqa: BLE001
        c.report(False, "c. torch.load(hifigan_fused.pt, weights_only=True)", "%s: %s" % (type(e).__name__, e))
        return
    c.report(True, "c. torch.load(hifigan_fused.pt, weights_only=True)", "%s with keys %s" % (type(after).__name__, list(after)))
    c.report(isinstance(after, dict) and list(after) == list(before), "c. top-level keys and their order",
             "%s (input %s)" % (list(after) if isinstance(after, dict) else type(after).__name__, list(before)))
    if not isinstance(after, dict) or "generator" not in after:
        return
    reference = load_torch(os.path.join(FIX, "hifigan_generator_fused.safetensors"))
    gen = after["generator"]

    def generator_check():
        if set(gen) != set(reference):
            return False, "keys differ: only in output %s, only in PyTorch's %s" % (
                sorted(set(gen) - set(reference))[:4], sorted(set(reference) - set(gen))[:4])
        worst, where = 0.0, ""
        for k, want in reference.items():
            if gen[k].dtype != want.dtype or gen[k].shape != want.shape:
                return False, "%s: %s%s vs PyTorch's %s%s" % (k, gen[k].dtype, list(gen[k].shape), want.dtype, list(want.shape))
            err = rel_diff(gen[k], want)
            if err >= worst:
                worst, where = err, k
        return worst <= 1e-6, "%d tensors, max rel vs remove_weight_norm's %.2e at %s (<= 1e-6)" % (len(reference), worst, where)

    c.attempt("c. generator vs hifigan_generator_fused.safetensors", generator_check)

    def load_check():
        io = load_torch(os.path.join(FIX, "hifigan.io.safetensors"))
        plain = Generator(norm=None).eval()
        plain.load_state_dict(gen, strict=True)
        with torch.no_grad():
            err = rel_diff(plain(io["x"]), io["y"])
        return err <= 1e-6, "strict load into Generator(norm=None) ok; output vs weight-normed y max rel %.2e (<= 1e-6)" % err

    c.attempt("c. generator loads without weight norm", load_check)
    for key in before:
        if key == "generator":
            continue
        if key not in after:
            c.report(False, "c. %s unchanged" % key, "missing from the output")
            continue
        d = difference(before[key], after[key], key)
        c.report(d is None, "c. %s unchanged" % key, d or "identical (%s)" % (
            "%d tensors" % len(before[key]) if isinstance(before[key], dict) else repr(before[key])))


# ---------------------------------------------------------------------------------------------
# d. ONNX exports


def ort_run(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def check_onnx(c, name, entry):
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    path = os.path.join(FIX, name)
    base = name[: -len(".onnx")]
    io = load_file(os.path.join(FIX, entry["io"]))
    x, y = io["x"], io["y"]
    pairs = entry["pairs"]

    # inspect --json
    what = "d. inspect %s --json" % name
    run = c.run(what, ["inspect", path, "--json"])
    if run is not None:
        def inspect_check():
            doc = json.loads(run.stdout)
            if isinstance(doc, dict) and isinstance(doc.get("pairs"), list):
                n = len(doc["pairs"])
                return n == len(pairs), "valid JSON, %d pairs (manifest: %d)" % (n, len(pairs))
            return True, "valid JSON (%s)" % (", ".join(sorted(doc)) if isinstance(doc, dict) else type(doc).__name__)

        c.attempt(what, inspect_check)

    # fuse
    what = "d. fuse %s" % name
    out = c.path(base + ".fused.onnx")
    cmd = [c.binary, "fuse", path, "-o", out]
    print("$ " + " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        c.report(False, what, "%s: %s" % (type(e).__name__, e))
        proc = None
    if proc is not None and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        lines = message.count("\n") + 1
        if not pairs and proc.returncode == 2 and lines == 1:
            c.report(True, what, "no pair in this graph (the exporter folded them); refused in one line: %s" % message)
        else:
            c.report(False, what, "exit %d: %s" % (proc.returncode, message[-800:]))
    elif proc is not None:
        original = onnx.load(path)
        orig_inits = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}

        def fused_check():
            model = onnx.load(out)
            onnx.checker.check_model(model, full_check=True)
            inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
            left = sorted({n.op_type for n in model.graph.node} & WN_OPS)
            not_init = [n.name for n in model.graph.node if n.op_type in LAYER_OPS and n.input[1] not in inits]
            worst, compared = 0.0, 0
            for p in pairs:
                node = next((n for n in model.graph.node if n.name == p["layer"]), None)
                if node is None or node.input[1] not in inits:
                    continue
                want = exact_weight(torch.from_numpy(orig_inits[p["v"]]), torch.from_numpy(orig_inits[p["g"]]), p["dim"])
                worst = max(worst, rel_diff(inits[node.input[1]], want.numpy()))
                compared += 1
            err = rel_diff(ort_run(out, x), y)
            ok = not left and not not_init and err <= 1e-5 and worst <= 1e-6
            if compared:
                weights = "%d fused weights (layers found by node name) vs exact g v/||v|| max rel %.2e (<= 1e-6)" % (
                    compared, worst)
            else:
                weights = "no fused weight compared (%s)" % ("no pair" if not pairs else "layer names changed")
            return ok, ("onnx.checker ok; weight-norm ops left: %s; layers whose weight is not an initializer: %s; "
                        "%s; onnxruntime vs PyTorch y max rel %.2e (<= 1e-5); %d -> %d nodes, %d -> %d initializers"
                        % (left or "none", not_init or "none", weights, err, len(original.graph.node),
                           len(model.graph.node), len(original.graph.initializer), len(model.graph.initializer)))

        c.attempt(what + " (%d pairs)" % len(pairs), fused_check)

    # canonicalize
    what = "d. canonicalize %s" % name
    out = c.path(base + ".canonical.onnx")
    if c.run(what, ["canonicalize", path, "-o", out]) is not None:
        def canonical_check():
            onnx.checker.check_model(onnx.load(out), full_check=True)
            err = rel_diff(ort_run(out, x), y)
            return err <= 1e-5, "onnx.checker ok; onnxruntime vs PyTorch y max rel %.2e (<= 1e-5)" % err

        c.attempt(what, canonical_check)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", metavar="BIN", help="the weightnorm binary")
    ap.add_argument("--keep", metavar="DIR", help="write the outputs under DIR (must not exist)")
    args = ap.parse_args()
    quiet()
    binary = os.path.abspath(args.binary) if os.path.sep in args.binary else args.binary
    fixtures = manifest()

    def go(out):
        c = Checks(binary, out)
        check_sharded(c)
        check_hifigan(c)
        for name, entry in fixtures.items():
            if not name.endswith(".onnx"):
                continue
            if "export_failed" in entry:
                print("skip %s: the export failed when the fixtures were made (%s)" % (name, entry["export_failed"][:200]))
                continue
            check_onnx(c, name, entry)
        return c

    if args.keep:
        os.makedirs(args.keep)
        c = go(os.path.abspath(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="check_real_") as tmp:
            c = go(tmp)
    print("%d checks, %d failed" % (c.count, c.failures))
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
