#!/usr/bin/env python3
"""Makes the ONNX fixtures of `weightnorm canonicalize MODEL.onnx`, and checks its outputs.

Exports, with both of PyTorch's exporters (`dynamo=True`, the default one, which needs
onnxscript; and the TorchScript one, `dynamo=False`), each with a dynamic batch axis:

  zoo2d, zoo1d, mlp_residual   the project's own canonical fixtures (their committed
                               checkpoints and architecture files, weight-norm pairs fused)
  resnet                       a torchvision-style ResNet: BasicBlocks with batch norms and
                               projection shortcuts (1x1 convolution + batch norm, stride 2),
                               global average pooling, a classifier
  cnn_bn                       a CNN whose batch norms the exporters leave unfolded
                               (TorchScript: training=PRESERVE, do_constant_folding=False;
                               dynamo: optimize=False), with per-channel PReLU, a flatten by
                               `x.view(x.size(0), -1)` and a trailing LogSoftmax
  mlp_leaky                    an MLP with LeakyReLU and dropout, one layer as `x @ W + b`
                               (MatMul + Add), one as `torch.addmm(b, x, W, beta=.5,
                               alpha=2)` (Gemm, transB = 0), and a trailing Softmax

and writes under crates/weightnorm-core/tests/fixtures/onnx/:

  NAME.ts.onnx, NAME.dynamo.onnx   the two exports
  NAME.io.safetensors              x: inputs (float32), ort_ts / ort_dynamo: onnxruntime's
                                   outputs of each export on x (float32)
  mlp_leaky.external.onnx (+ .data) the TorchScript export of mlp_leaky with its weights as
                                   external data beside it

Usage:
  python scripts/gen_onnx_fixtures.py                 # write the fixtures
  python scripts/gen_onnx_fixtures.py --check BIN     # run BIN (the weightnorm binary)
      canonicalize on every fixture, and check each OUT: onnx.checker passes, onnxruntime's
      outputs from OUT equal the original's to 1e-5 relative, the layers the report does not
      say carry a scale have unit rows in OUT, ||canonical.scale|| equals the report's global
      gain; and the reconstituted form computes the original outputs without the extra node.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from onnx import numpy_helper
from safetensors.numpy import load_file, save_file as save_np
from safetensors.torch import load_file as load_torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_nets import fuse_pairs, network  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "weightnorm-core", "tests", "fixtures", "onnx")
CANONICAL = os.path.join(HERE, "..", "crates", "weightnorm-core", "tests", "fixtures", "canonical")
SAMPLES = 6


def randomize(model):
    """Random running statistics and affine parameters (what training leaves), and every
    parameter doubled, so that the canonical scales are not trivial."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n) * 0.5)
                m.running_var.copy_(torch.rand(n) * 2 + 0.2)
                m.weight.copy_(torch.randn(n))
                m.bias.copy_(torch.randn(n) * 0.3)
        for p in model.parameters():
            p.mul_(2.0)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convolutions with batch norms, a projection shortcut
    where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(4, 4, 1)
        self.layer2 = BasicBlock(4, 8, 2)
        self.layer3 = BasicBlock(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ViewFlatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


def cnn_bn():
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.PReLU(6), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
        ViewFlatten(), nn.Linear(8 * 2 * 2, 12), nn.LeakyReLU(0.2), nn.Linear(12, 5), nn.LogSoftmax(dim=1),
    )


class MatMulAdd(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.b = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x):
        return torch.matmul(x, self.w) + self.b


class AddMM(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.b = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x):
        return torch.addmm(self.b, x, self.w, beta=0.5, alpha=2.0)


def mlp_leaky():
    return nn.Sequential(
        nn.Linear(20, 32), nn.LeakyReLU(0.1), nn.Dropout(0.3), MatMulAdd(32, 24), nn.LeakyReLU(0.1),
        AddMM(24, 16), nn.LeakyReLU(0.1), nn.Linear(16, 6), nn.Softmax(dim=1),
    )


def project_fixture(name):
    state = load_torch(os.path.join(CANONICAL, name + ".safetensors"))
    with open(os.path.join(CANONICAL, name + ".arch.json")) as f:
        arch = json.load(f)
    return network(arch, fuse_pairs(state), torch.float32), arch["input"]


def models():
    """(name, model in evaluation mode, one sample's shape, unfold batch norms)."""
    out = []
    for name in ("zoo2d", "zoo1d", "mlp_residual"):
        model, shape = project_fixture(name)
        out.append((name, model, shape, False))
    torch.manual_seed(7)
    made = [("resnet", ResNet(), [3, 12, 12], False), ("cnn_bn", cnn_bn(), [2, 8, 8], True),
            ("mlp_leaky", mlp_leaky(), [20], False)]
    for name, model, shape, unfold in made:
        randomize(model)
        out.append((name, model.eval(), shape, unfold))
    return out


def export(model, x, path, dynamo, unfold):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), path, dynamo=True, input_names=["x"], output_names=["y"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=not unfold,
                              external_data=False)
        else:
            extra = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False) if unfold else {}
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **extra)
    onnx.checker.check_model(onnx.load(path), full_check=True)


def run_ort(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def make():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "*")):
        os.remove(old)
    for k, (name, model, shape, unfold) in enumerate(models()):
        torch.manual_seed(1000 + k)
        x = torch.randn([SAMPLES] + shape)
        io = {"x": x.numpy()}
        for exporter in ("ts", "dynamo"):
            path = os.path.join(OUT, f"{name}.{exporter}.onnx")
            export(model, x, path, exporter == "dynamo", unfold)
            y = run_ort(path, x.numpy())
            with torch.no_grad():
                want = model(x).numpy()
            err = np.abs(y - want).max() / np.abs(want).max()
            assert err < 1e-5, (name, exporter, err)
            io["ort_" + exporter] = y
            ops = sorted({n.op_type for n in onnx.load(path).graph.node})
            print(f"{name}.{exporter}: {os.path.getsize(path)} bytes, ops {' '.join(ops)}")
        save_np(io, os.path.join(OUT, f"{name}.io.safetensors"))
    # External data: the TorchScript export of mlp_leaky, every initializer in a file beside it.
    m = onnx.load(os.path.join(OUT, "mlp_leaky.ts.onnx"))
    onnx.save_model(m, os.path.join(OUT, "mlp_leaky.external.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="mlp_leaky.external.onnx.data", size_threshold=0)
    y = run_ort(os.path.join(OUT, "mlp_leaky.external.onnx"), load_file(os.path.join(OUT, "mlp_leaky.io.safetensors"))["x"])
    assert np.array_equal(y, load_file(os.path.join(OUT, "mlp_leaky.io.safetensors"))["ort_ts"])
    total = sum(os.path.getsize(f) for f in glob.glob(os.path.join(OUT, "*")))
    print(f"{total} bytes in all")


def weight_rows(model, node_name):
    """The rows (one per output unit) of the weight of `node_name` in `model`, as the layer
    computes them (Gemm's alpha and transB, MatMul's [in, out] layout)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    w = inits[node.input[1]].astype(np.float64)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        w = w * attrs.get("alpha", 1.0)
        if not attrs.get("transB", 0):
            w = w.T
    elif node.op_type == "MatMul":
        w = w.T
    return w.reshape(w.shape[0], -1)


def check(binary):
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(glob.glob(os.path.join(OUT, "*.onnx"))):
            base = os.path.basename(path)[: -len(".onnx")]
            name, variant = base.split(".")
            io_path = os.path.join(OUT, name + ".io.safetensors")
            x = load_file(io_path)["x"]
            want = run_ort(path, x)
            for form in ("canonical", "reconstituted"):
                out = os.path.join(tmp, f"{base}.{form}.onnx")
                report = os.path.join(tmp, f"{base}.{form}.json")
                cmd = [binary, "canonicalize", path, "-o", out, "--report", report, "--inputs", io_path,
                       "--form", form]
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode != 0:
                    print(f"FAIL {base} {form}: {run.stderr.strip()}")
                    failures += 1
                    continue
                onnx.checker.check_model(onnx.load(out), full_check=True)
                got = run_ort(out, x)
                rel = float(np.abs(got - want).max() / np.abs(want).max())
                r = json.load(open(report))
                model = onnx.load(out)
                nodes = len(model.graph.node) - len(onnx.load(path).graph.node)
                line = f"{base} {form}: onnx.checker ok, onnxruntime rel error {rel:.2e}, {nodes} node(s) added"
                ok = rel <= 1e-5 and nodes == (1 if form == "canonical" else 0)
                if form == "canonical":
                    scale = next(numpy_helper.to_array(t) for t in model.graph.initializer
                                 if t.name == "canonical.scale").astype(np.float64)
                    gain_err = abs(np.linalg.norm(scale) - r["global_gain"]) / r["global_gain"]
                    worst = 0.0
                    for layer in r["layers"]:
                        if layer["carries"] is None and layer["op"] in ("Conv", "Gemm", "MatMul", "MatMul+Add"):
                            norms = np.linalg.norm(weight_rows(model, layer["layer"]), axis=1)
                            norms = norms[norms > 0]
                            worst = max(worst, float(np.abs(norms - 1).max()))
                    line += f", unit rows to {worst:.1e}, ||canonical.scale|| vs global gain {gain_err:.1e}"
                    ok = ok and worst < 1e-5 and gain_err < 1e-6
                print(("ok   " if ok else "FAIL ") + line)
                failures += not ok
    if failures:
        raise SystemExit(f"{failures} failure(s)")
    print("all fixtures check")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", metavar="BIN", help="check `BIN canonicalize` on the committed fixtures")
    args = ap.parse_args()
    if args.check:
        check(args.check)
    else:
        make()


if __name__ == "__main__":
    main()
