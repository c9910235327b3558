#!/usr/bin/env python3
"""The cases of `weightnorm bench` in PyTorch, with the same names, shapes and JSON, so that the
two tables can be put side by side (`--table`, or scripts/bench_side_by_side.sh).

Cases (f32; medians of several runs after a warm-up run):

  For each weight: 4096x4096 (dim 0, per row; dim 1, per column; and the whole tensor, dim -1
  in torch._weight_norm), 512x256x3x3, 512x512x7 and 784x128 (dim 0):
    copy warm                  dst.copy_(v): a copy into an existing buffer
    copy fresh                 v.clone(): a copy into a fresh allocation
    fused forward              torch._weight_norm(v, g, dim), no autograd
    fused forward+backward     the same with v, g requiring grad, then
                               torch.autograd.grad(w, (v, g), dw)
    fused backward             the kernel that backward calls, alone:
                               aten._weight_norm_interface_backward with the forward's norms
                               (dims 0 and 1 only: the whole tensor has no fused kernel)
    composed forward           v * (g / torch.norm_except_dim(v, 2, dim)), no autograd
    composed forward+backward  the same through autograd
  train step plain bB, train step wn bB (B = 16, 128)
                               one step (zero_grad, forward, cross-entropy, backward, Adam) of an
                               MLP 784-1024-1024-10 (nn.Linear) on a cycle of 16 batches of
                               Gaussian noise, plain or with
                               torch.nn.utils.parametrizations.weight_norm on every Linear; the
                               two alternate in pairs as in `weightnorm bench`, the overhead is
                               the median of the pairs' ratios
  canonicalize 10M, canonicalize 100M
                               PyTorch has no canonical form: the same calculus on the same MLPs
                               (6 hidden layers of 1280 or 4096 units) written with torch tensor
                               ops, for scale: each layer's incoming scale multiplied into its
                               columns, its row norms taken out, the bias divided by them

bytes and GB/s as in `weightnorm bench`: 2x the weight for a copy and a forward, 5x for forward +
backward, 2x the parameters for canonicalization, none for the training steps.

The allocator: PyTorch as a user runs it is glibc malloc with its defaults. --same-allocator
re-executes this script with glibc's thresholds set as `weightnorm` sets them (environment
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, read by glibc at start-up), so both tables
come from the same allocator behaviour.

On a GPU (--device cuda[:N]): the weights and the training steps on that device, each run ended
by torch.cuda.synchronize(), as `weightnorm bench --device cuda` ends each with a device
synchronization; no `copy fresh` (PyTorch's caching allocator, like Burn's pool, reuses device
memory); canonicalization on the CPU, as `weightnorm` does it.

Usage:
  python scripts/bench_torch.py [--json] [--quick] [--threads N] [--runs N] [--filter TEXT]
                                [--same-allocator [BYTES]] [--device cpu|cuda[:N]]
  python scripts/bench_torch.py --table RUST.json TORCH.json [TORCH_SAME.json]
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time

# The thresholds `weightnorm` sets (crates/weightnorm-cli/src/malloc.rs, THRESHOLD): 1 GiB.
WEIGHTNORM_THRESHOLD = 1 << 30
SAME_MARK = "WEIGHTNORM_BENCH_SAME_ALLOCATOR"

WEIGHTS = [
    ("4096x4096 axis0", (4096, 4096), 0),
    ("4096x4096 axis1", (4096, 4096), 1),
    ("4096x4096 whole", (4096, 4096), -1),
    ("512x256x3x3 axis0", (512, 256, 3, 3), 0),
    ("512x512x7 axis0", (512, 512, 7), 0),
    ("784x128 axis0", (784, 128), 0),
]
MLP = [784, 1024, 1024, 10]
BUDGET_S, MIN_RUNS, MAX_RUNS = 3.0, 3, 15
# A fast case keeps running past MAX_RUNS until MIN_TIME_S is spent (up to MANY_RUNS runs), as in
# `weightnorm bench`.
MIN_TIME_S, MANY_RUNS = 0.25, 1001
# Rounds of the paired training steps, and the batches they cycle through (as `weightnorm bench`).
PAIRS, TRAIN_BATCHES = 61, 16


class Bench:
    def __init__(self, args, sync=lambda: None):
        self.sync = sync
        self.quick = args.quick
        self.runs = 1 if args.quick else (args.runs or MAX_RUNS)
        self.adaptive = not args.quick and args.runs is None
        self.filter = args.filter
        self.json = args.json
        self.cases = []
        self.overheads = []

    def wanted(self, name, shape):
        return self.filter is None or self.filter in "%s %s" % (name, shape)

    def case(self, name, shape, nbytes, run, setup=lambda: None):
        if not self.wanted(name, shape):
            return
        if not self.quick:
            run(setup())
            self.sync()
        times = []
        start = time.perf_counter()
        def more():
            made, spent = len(times), time.perf_counter() - start
            if not self.adaptive:
                return made < self.runs
            return (made < self.runs or (spent < MIN_TIME_S and made < MANY_RUNS)) and not (
                made >= MIN_RUNS and spent > BUDGET_S)

        while more():
            s = setup()
            t0 = time.perf_counter()
            run(s)
            self.sync()
            times.append((time.perf_counter() - t0) * 1e3)
        med = statistics.median(times)
        c = {
            "name": name,
            "shape": shape,
            "median_ms": med,
            "runs": len(times),
            "bytes": nbytes,
            "gbps": None if nbytes is None else nbytes / (med * 1e-3) / 1e9,
        }
        self.cases.append(c)
        if not self.json:
            print(row(c), flush=True)

    def pair(self, names, shape, batch, a, b):
        """Times `a` and `b` alternately (the order swapped every pair), as `weightnorm bench`
        times its training steps: both cases, and the median of the pairs' ratios b / a."""
        if not self.quick:
            a(None)
            b(None)
            self.sync()
        rounds = 1 if self.quick else (PAIRS if self.adaptive else self.runs)
        ta, tb, ratios = [], [], []
        start = time.perf_counter()

        def timed(f):
            t0 = time.perf_counter()
            f(None)
            self.sync()
            return (time.perf_counter() - t0) * 1e3

        while len(ta) < rounds and not (
            self.adaptive and len(ta) >= MIN_RUNS and time.perf_counter() - start > 2 * BUDGET_S
        ):
            if len(ta) % 2 == 0:
                x = timed(a)
                y = timed(b)
            else:
                y = timed(b)
                x = timed(a)
            ta.append(x)
            tb.append(y)
            ratios.append(y / x)
        for name, times in zip(names, (ta, tb)):
            c = {"name": name, "shape": shape, "median_ms": statistics.median(times),
                 "runs": len(times), "bytes": None, "gbps": None}
            self.cases.append(c)
            if not self.json:
                print(row(c), flush=True)
        self.overheads.append({"batch": batch, "percent": 100 * (statistics.median(ratios) - 1),
                               "pairs": len(ratios)})


def row(c):
    gbps = "" if c["gbps"] is None else "%8.2f" % c["gbps"]
    return "%-28s %-24s %11.4f %8s %5d" % (c["name"], c["shape"], c["median_ms"], gbps, c["runs"])


def weight_cases(b, torch, label, dims, dim, copies, dev):
    names = ["copy warm", "copy fresh", "fused forward", "fused forward+backward",
             "fused backward", "composed forward", "composed forward+backward"]
    if not any(b.wanted(n, label) for n in names):
        return
    torch.manual_seed(0)
    v = (torch.rand(dims) * 2 - 1).to(dev)
    dw = (torch.rand(dims) * 2 - 1).to(dev)
    g = torch.norm_except_dim(v, 2, dim)
    size = v.numel() * 4
    if copies:
        short = label.split(" ")[0]
        dst = torch.empty_like(v)
        b.case("copy warm", short, 2 * size, lambda _: dst.copy_(v))
        if dev.type == "cpu":
            b.case("copy fresh", short, 2 * size, lambda _: v.clone())
    vr = v.clone().requires_grad_(True)
    gr = g.clone().requires_grad_(True)

    def fused():
        with torch.no_grad():
            return torch._weight_norm(v, g, dim)

    def fused_both():
        w = torch._weight_norm(vr, gr, dim)
        return torch.autograd.grad(w, (vr, gr), dw)

    def composed(v, g):
        return v * (g / torch.norm_except_dim(v, 2, dim))

    def composed_fwd():
        with torch.no_grad():
            return composed(v, g)

    def composed_both():
        return torch.autograd.grad(composed(vr, gr), (vr, gr), dw)

    b.case("fused forward", label, 2 * size, lambda _: fused())
    b.case("fused forward+backward", label, 5 * size, lambda _: fused_both())
    if dim in (0, v.dim() - 1):
        # The kernel autograd calls, with the norms the forward saved (torch._weight_norm takes
        # the composed path for the whole tensor, so there is no fused backward to time).
        _, norms = torch._weight_norm_interface(v, g, dim)
        backward = torch.ops.aten._weight_norm_interface_backward
        b.case("fused backward", label, 3 * size, lambda _: backward(dw, v, g, norms, dim))
    b.case("composed forward", label, 2 * size, lambda _: composed_fwd())
    b.case("composed forward+backward", label, 5 * size, lambda _: composed_both())


def train_cases(b, torch, dev):
    nn = torch.nn
    from torch.nn.utils.parametrizations import weight_norm

    shape = "mlp " + "-".join(map(str, MLP))
    for batch in (16, 128):
        names = ["train step %s b%d" % (param, batch) for param in ("plain", "wn")]
        wanted = [b.wanted(n, shape) for n in names]
        if not any(wanted):
            continue
        # A cycle of batches, as in `weightnorm bench` (one batch over and over is memorized,
        # and its gradients fall into the subnormals).
        torch.manual_seed(1)
        batches = [(torch.randn(batch, MLP[0]).to(dev), ((torch.arange(batch) + 3 * k) % 10).to(dev))
                   for k in range(TRAIN_BATCHES)]
        loss_fn = nn.CrossEntropyLoss()
        steps = []
        for param in ("plain", "wn"):
            torch.manual_seed(0)
            layers = []
            for i in range(len(MLP) - 1):
                lin = nn.Linear(MLP[i], MLP[i + 1])
                layers.append(weight_norm(lin) if param == "wn" else lin)
                if i < len(MLP) - 2:
                    layers.append(nn.ReLU())
            model = nn.Sequential(*layers).to(dev)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(_, model=model, opt=opt, turn=itertools.cycle(batches)):
                x, y = next(turn)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()

            steps.append(step)
        if all(wanted):
            b.pair(names, shape, batch, steps[0], steps[1])
        else:
            k = wanted.index(True)
            b.case(names[k], shape, None, steps[k])


def canonicalize_cases(b, torch):
    for name, width in (("canonicalize 10M", 1280), ("canonicalize 100M", 4096)):
        hidden = 6
        if not b.wanted(name, "mlp %dx%d" % (hidden, width)):
            continue
        torch.manual_seed(0)
        layers, params = [], 0
        for l in range(hidden + 1):
            out = 10 if l == hidden else width
            s = 1.7 / width ** 0.5
            w = (torch.rand(out, width) * 2 - 1) * s * (1 + torch.arange(out).unsqueeze(1) / out)
            bias = 0.01 * (torch.arange(out) % 7).float()
            layers.append((w, bias))
            params += w.numel() + bias.numel()

        def canon(_):
            scale = None
            result = []
            with torch.no_grad():
                for w, bias in layers:
                    wt = w if scale is None else w * scale.unsqueeze(0)
                    g = torch.linalg.vector_norm(wt.double(), dim=1)
                    safe = torch.where(g > 0, g, torch.ones_like(g))
                    result.append(((wt.double() / safe.unsqueeze(1)).float(), (bias / safe).float()))
                    scale = safe.float()
            return result, scale

        shape = "mlp %dx%d (%.1fM)" % (hidden, width, params / 1e6)
        b.case(name, shape, 2 * 4 * params, canon)


def allocator_settings():
    mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if mmap is None and trim is None:
        return {"kind": "default", "mmap_threshold": None, "trim_threshold": None,
                "text": "glibc malloc defaults (PyTorch as a user runs it)"}
    return {"kind": "tuned", "mmap_threshold": int(mmap or 0), "trim_threshold": int(trim or 0),
            "text": "glibc malloc, mmap_threshold %s and trim_threshold %s bytes (environment)"
            % (mmap, trim)}


def same_allocator(value):
    """Re-executes this script with glibc's thresholds set to `value`, unless already done."""
    if os.environ.get(SAME_MARK) == str(value):
        return
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(value)
    env["MALLOC_TRIM_THRESHOLD_"] = str(value)
    env[SAME_MARK] = str(value)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def table(paths):
    runs = [json.load(open(p)) for p in paths]
    titles = ["weightnorm"] + ["torch (%s)" % r.get("allocator", {}).get("kind", "?") for r in runs[1:]]
    index = [{(c["name"], c["shape"]): c for c in r["cases"]} for r in runs]
    print("threads: " + ", ".join("%s %s" % (t, r["threads"]) for t, r in zip(titles, runs)))
    for t, r in zip(titles, runs):
        print("allocator, %s: %s" % (t, r.get("allocator", {}).get("text", "?")))
    stream = runs[0].get("streaming_stores_from")
    print("stores, weightnorm: %s" % ("plain" if stream is None else "streaming from %d bytes" % stream))
    head = "%-27s %-24s" % ("case", "shape") + "".join("%18s" % t for t in titles)
    if len(runs) > 1:
        head += "%12s" % "torch/ours"
    print(head)
    print("-" * len(head))
    for c in runs[0]["cases"]:
        key = (c["name"], c["shape"])
        line = "%-27s %-24s" % key
        ms = []
        for ix in index:
            other = ix.get(key)
            ms.append(other["median_ms"] if other else None)
            line += "%18s" % ("-" if other is None else "%.4f ms" % other["median_ms"])
        if len(ms) > 1 and ms[1]:
            line += "%12.2f" % (ms[1] / ms[0])
        print(line)
    print()
    # The figures the issue asks for.
    ours = index[0]

    def get(ix, name, shape):
        c = ix.get((name, shape))
        return None if c is None else c["median_ms"]

    copy = get(ours, "copy warm", "4096x4096")
    for shape in ("4096x4096 axis0", "4096x4096 axis1", "4096x4096 whole"):
        f, fb = get(ours, "fused forward", shape), get(ours, "fused forward+backward", shape)
        if copy and f and fb:
            print("%s: fused forward %.2fx the warm copy, forward+backward %.2fx" % (shape, f / copy, fb / copy))
    for t, ix, r in zip(titles, index, runs):
        # `kind` is absent from PyTorch's table (one weight-normalized step, "wn"); ours also
        # has "wn-linear", the paper-form layer.
        paired = {}
        for o in r.get("train_overheads", []):
            paired.setdefault(o["batch"], []).append(o)
        for b in (16, 128):
            if b in paired:
                for o in paired[b]:
                    what = "weight-norm" if o.get("kind", "wn") == "wn" else "paper-form WnLinear"
                    print("%s: %s training-step overhead at batch %d: %+.1f%% (median of %d rounds of steps)"
                          % (t, what, b, o["percent"], o["pairs"]))
                continue
            p = get(ix, "train step plain b%d" % b, "mlp 784-1024-1024-10")
            w = get(ix, "train step wn b%d" % b, "mlp 784-1024-1024-10")
            if p and w:
                print("%s: weight-norm training-step overhead at batch %d: %+.1f%% (from the medians)"
                      % (t, b, 100 * (w / p - 1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--quick", action="store_true", help="one run per case, no warm-up")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: one per core, as rayon)")
    ap.add_argument("--runs", type=int, default=None, help="exactly this many runs per case")
    ap.add_argument("--filter", default=None, help="only cases whose 'NAME SHAPE' contains this")
    ap.add_argument("--same-allocator", nargs="?", const=WEIGHTNORM_THRESHOLD, type=int, default=None,
                    metavar="BYTES", help="re-execute with glibc's mmap and trim thresholds at BYTES "
                    "(default %d, what weightnorm sets)" % WEIGHTNORM_THRESHOLD)
    ap.add_argument("--device", default="cpu",
                    help="where the weights and the training steps live: cpu (default) or cuda[:N]")
    ap.add_argument("--table", nargs="+", metavar="JSON",
                    help="print the side-by-side table of a weightnorm bench JSON and torch JSONs")
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return
    if args.same_allocator is not None:
        same_allocator(args.same_allocator)
    import torch

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        sys.exit("bench_torch.py: --device takes cpu or cuda[:N], not %r" % args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_torch.py: --device %s, but this PyTorch sees no CUDA device" % args.device)
    b = Bench(args, (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None))
    on = "cpu" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    alloc = allocator_settings()
    if not args.json:
        print("torch %s on %s: %d threads; allocator: %s"
              % (torch.__version__, on, torch.get_num_threads(), alloc["text"]))
        print("%-28s %-24s %11s %8s %5s" % ("case", "shape", "median ms", "GB/s", "runs"))
    for i, (label, dims, dim) in enumerate(WEIGHTS):
        copies = all(d != dims for _, d, _ in WEIGHTS[:i])
        weight_cases(b, torch, label, dims, dim, copies, dev)
    train_cases(b, torch, dev)
    canonicalize_cases(b, torch)
    if not args.json:
        for o in b.overheads:
            print("weight-norm training-step overhead at batch %d: %+.1f%% (median of %d pairs of steps)"
                  % (o["batch"], o["percent"], o["pairs"]))
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "device": on,
                          "allocator": alloc, "cases": b.cases, "train_overheads": b.overheads}, indent=2))


if __name__ == "__main__":
    main()
