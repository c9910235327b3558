#!/usr/bin/env python3
"""Makes the corpus of malformed and hostile ONNX models for the CLI's tests (needs the `onnx`
package and numpy, not PyTorch): each must be refused by `weightnorm canonicalize` with exit
code 2, one line on stderr holding the fragment of expected.tsv, and nothing written.

Writes crates/weightnorm-cli/tests/corpus/onnx/*.onnx (and the external data files some of
them name) and expected.tsv (file, fragment of the error).

Usage:  python scripts/gen_onnx_malformed.py
"""

import glob
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "weightnorm-cli", "tests",
                   "corpus", "onnx")
rng = np.random.default_rng(3)


def inp(name="x", shape=("N", 4)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def outp(name="y"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def w(name, shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def model(nodes, inits=(), inputs=None, outputs=None, opset=17):
    g = helper.make_graph(nodes, "g", inputs if inputs is not None else [inp()],
                          outputs if outputs is not None else [outp()], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] if opset else [])
    m.ir_version = 8
    return m


def gemm(a="x", out="y", wshape=(3, 4), **attrs):
    return [helper.make_node("Gemm", [a, "W", "B"], [out], name="fc", transB=1, **attrs)], \
        [w("W", wshape), w("B", (wshape[0],))]


CASES = {}


def case(name, fragment):
    def deco(f):
        CASES[name] = (f, fragment)
        return f
    return deco


def save(name, m):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(m.SerializeToString() if not isinstance(m, bytes) else m)


@case("empty.onnx", "the model has no graph")
def _(name):
    save(name, b"")


@case("not_protobuf.onnx", "not an ONNX model")
def _(name):
    save(name, b"\xff\xff\xff\xff this is not a protobuf message at all\n")


@case("truncated.onnx", "not an ONNX model")
def _(name):
    n, i = gemm()
    save(name, model(n, i).SerializeToString()[:-20])


@case("deep_protobuf.onnx", "not an ONNX model")
def _(name):
    # Graphs nested in attributes past protobuf's recursion limit, encoded by hand (the
    # Python protobuf library refuses to build them).
    def varint(n):
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def field(tag, payload):
        return varint(tag << 3 | 2) + varint(len(payload)) + payload

    g = b""
    for _ in range(200):
        attribute = field(1, b"then_branch") + field(6, g)
        node = field(4, b"If") + field(5, attribute)
        g = field(1, node)
    save(name, varint(1 << 3) + varint(8) + field(7, g))


@case("no_opset.onnx", "imports no version of the default opset")
def _(name):
    n, i = gemm()
    save(name, model(n, i, opset=None))


@case("old_opset.onnx", "opset 7 or later is needed")
def _(name):
    n, i = gemm()
    save(name, model(n, i, opset=6))


@case("two_inputs.onnx", "2 graph inputs")
def _(name):
    n, i = gemm()
    save(name, model(n, i, inputs=[inp(), inp("z")]))


@case("two_outputs.onnx", "2 graph outputs")
def _(name):
    n, i = gemm()
    n.append(helper.make_node("Relu", ["y"], ["z"]))
    save(name, model(n, i, outputs=[outp(), outp("z")]))


@case("no_input_shape.onnx", "has no shape")
def _(name):
    n, i = gemm()
    save(name, model(n, i, inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]))


@case("unknown_feature_axis.onnx", "every axis but the batch must be a known size")
def _(name):
    n, i = gemm()
    save(name, model(n, i, inputs=[inp(shape=("N", "F"))]))


@case("integer_input.onnx", "is int64, not floating point")
def _(name):
    n, i = gemm()
    save(name, model(n, i, inputs=[helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 4])]))


@case("unsupported_op.onnx", "node sin (Sin): this op is not supported")
def _(name):
    n, i = gemm(out="h")
    n.append(helper.make_node("Sin", ["h"], ["y"], name="sin"))
    save(name, model(n, i))


@case("custom_domain.onnx", "node custom (Swish): op of domain `com.example` is not supported")
def _(name):
    n, i = gemm(out="h")
    n.append(helper.make_node("Swish", ["h"], ["y"], name="custom", domain="com.example"))
    m = model(n, i)
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    save(name, m)


@case("trans_a.onnx", "node fc (Gemm): transA = 1 is not supported")
def _(name):
    n, i = gemm(transA=1)
    save(name, model(n, i))


@case("gemm_shape_mismatch.onnx", "node fc (Gemm): a weight `W` of shape [3, 5] for 4 input features")
def _(name):
    n, i = gemm(wshape=(3, 5))
    save(name, model(n, i))


@case("asymmetric_pads.onnx", "node conv (Conv): asymmetric padding [0, 0, 1, 1]")
def _(name):
    n = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[0, 0, 1, 1])]
    save(name, model(n, [w("W", (2, 3, 3, 3))], inputs=[inp(shape=("N", 3, 8, 8))]))


@case("conv3d.onnx", "has rank 5")
def _(name):
    n = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")]
    save(name, model(n, [w("W", (2, 3, 1, 1, 1))], inputs=[inp(shape=("N", 3, 4, 4, 4))]))


@case("conv_weight_rank.onnx", "node conv (Conv): a weight `W` of shape [2, 3, 1, 1, 1]: 1-D and 2-D convolutions are read")
def _(name):
    n = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")]
    save(name, model(n, [w("W", (2, 3, 1, 1, 1))], inputs=[inp(shape=("N", 3, 4, 4))]))


@case("weight_from_input.onnx", "is computed from the graph's input, not a constant")
def _(name):
    n, i = gemm(out="h")
    n.append(helper.make_node("Mul", ["h", "h"], ["y"], name="square"))
    save(name, model(n, i))


@case("out_of_order.onnx", "must be in topological order")
def _(name):
    n, i = gemm(out="h")
    n.insert(0, helper.make_node("Relu", ["h"], ["y"], name="relu"))
    save(name, model(n, i))


@case("cycle.onnx", "must be in topological order")
def _(name):
    n = [helper.make_node("Add", ["x", "y"], ["h"], name="loop"),
         helper.make_node("Gemm", ["h", "W", "B"], ["y"], name="fc", transB=1)]
    save(name, model(n, [w("W", (4, 4)), w("B", (4,))]))


@case("duplicate_value.onnx", "computes `h`, which is defined already")
def _(name):
    n, i = gemm(out="h")
    n.append(helper.make_node("Relu", ["h"], ["h"], name="again"))
    n.append(helper.make_node("Relu", ["h"], ["y"], name="relu"))
    save(name, model(n, i))


@case("nan_weight.onnx", "tensor `W`: holds NaN or infinity")
def _(name):
    n, i = gemm()
    a = numpy_helper.to_array(i[0]).copy()
    a[1, 2] = np.nan
    i[0] = numpy_helper.from_array(a, "W")
    save(name, model(n, i))


@case("integer_weight.onnx", "tensor `W`: int64, not floating point")
def _(name):
    n, i = gemm()
    i[0] = numpy_helper.from_array(np.ones((3, 4), dtype=np.int64), "W")
    save(name, model(n, i))


@case("raw_data_short.onnx", "tensor `W`: 40 bytes of data for 12 elements of float32")
def _(name):
    n, i = gemm()
    i[0].raw_data = i[0].raw_data[:40]
    save(name, model(n, i))


@case("typed_data_short.onnx", "tensor `W`: 5 values for a shape of 12 elements")
def _(name):
    n, i = gemm()
    t = helper.make_tensor("W", TensorProto.FLOAT, [3, 4], [1.0] * 12)
    del t.float_data[5:]
    i[0] = t
    save(name, model(n, i))


@case("negative_dim.onnx", "tensor `W`: a negative dimension in [-3, 4]")
def _(name):
    n, i = gemm()
    i[0].dims[0] = -3
    save(name, model(n, i))


@case("absurd_dims.onnx", "tensor `W`: the shape [1099511627776, 1099511627776] overflows")
def _(name):
    n, i = gemm()
    del i[0].dims[:]
    i[0].dims.extend([1 << 40, 1 << 40])
    save(name, model(n, i))


def external(name, location, length=None, data=None):
    n, i = gemm()
    t = i[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": "0"}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    if data is not None:
        with open(os.path.join(OUT, location), "wb") as f:
            f.write(data)
    save(name, model(n, i))


@case("external_escape.onnx", "must be a relative path under the model's directory")
def _(name):
    external(name, "../corpus/expected.tsv")


@case("external_absolute.onnx", "must be a relative path under the model's directory")
def _(name):
    external(name, "/etc/hostname")


@case("external_missing.onnx", "cannot read")
def _(name):
    external(name, "external_missing.data")


@case("external_short.onnx", "runs past the end of")
def _(name):
    external(name, "external_short.onnx.data", data=b"\0" * 20)


@case("external_wrong_length.onnx", "external data of 8 bytes for a tensor of 48 bytes")
def _(name):
    external(name, "external_wrong_length.onnx.data", length=8, data=b"\0" * 48)


@case("reshape_not_flatten.onnx", "is not a flatten")
def _(name):
    n = [helper.make_node("Reshape", ["x", "S"], ["h"], name="reshape"),
         helper.make_node("Gemm", ["h", "W"], ["y"], name="fc", transB=1)]
    save(name, model(n, [numpy_helper.from_array(np.array([-1, 2, 2], dtype=np.int64), "S"), w("W", (3, 2))]))


@case("three_branches.onnx", "is used by 3 nodes")
def _(name):
    n, i = gemm(out="h")
    n += [helper.make_node("Relu", ["h"], ["a"]), helper.make_node("Relu", ["h"], ["b"]),
          helper.make_node("Sum", ["h", "a", "b"], ["y"], name="sum")]
    save(name, model(n, i))


@case("no_weights.onnx", "no layer with weights")
def _(name):
    save(name, model([helper.make_node("Relu", ["x"], ["y"])], []))


@case("deep_nesting.onnx", "residual blocks nested more than 64 deep")
def _(name):
    nodes, k = [], [0]

    def fresh():
        k[0] += 1
        return f"v{k[0]}"

    def nest(v, d):
        a = fresh()
        nodes.append(helper.make_node("Relu", [v], [a]))
        inner = a if d == 0 else nest(a, d - 1)
        out = fresh()
        nodes.append(helper.make_node("Add", [v, inner], [out]))
        return out

    n, i = gemm(out="h")
    last = nest("h", 100)
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    # Topological order: nest() appends a node before the nodes that use it.
    save(name, model(n + nodes, i))


@case("gate_reversed.onnx", "not as WaveNet's gate")
def _(name):
    n, i = gemm(out="h", wshape=(4, 4))
    n += [helper.make_node("Split", ["h"], ["a", "b"], name="split", axis=1),
          helper.make_node("Sigmoid", ["a"], ["sa"]), helper.make_node("Tanh", ["b"], ["tb"]),
          helper.make_node("Mul", ["sa", "tb"], ["y"])]
    save(name, model(n, i))


@case("softmax_inside.onnx", "a softmax inside the network is read on a flat activation only")
def _(name):
    n = [helper.make_node("Conv", ["x", "W"], ["h"], name="conv"),
         helper.make_node("Softmax", ["h"], ["s"], name="softmax", axis=1),
         helper.make_node("Conv", ["s", "W2"], ["y"], name="conv2")]
    save(name, model(n, [w("W", (2, 3, 1, 1)), w("W2", (2, 2, 1, 1))], inputs=[inp(shape=("N", 3, 4, 4))]))


@case("training_batch_norm.onnx", "in training mode")
def _(name):
    n, i = gemm(out="h")
    n.append(helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1))
    i += [w("s", (3,)), w("b", (3,)), w("m", (3,)),
          numpy_helper.from_array(np.ones(3, dtype=np.float32), "v")]
    save(name, model(n, i))


@case("batch_norm_overflow.onnx", "node bn (BatchNormalization): the multiplier or shift of channel 1 exceeds the range of its type")
def _(name):
    # Found by the fuzzer: a running mean near the largest float32 times a multiplier above 1.
    n, i = gemm(out="h")
    n.append(helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"], name="bn"))
    i += [numpy_helper.from_array(np.array([1.0, 3.0, 1.0], dtype=np.float32), "s"), w("b", (3,)),
          numpy_helper.from_array(np.array([0.0, -3.19e38, 0.0], dtype=np.float32), "m"),
          numpy_helper.from_array(np.full(3, 0.6, dtype=np.float32), "v")]
    save(name, model(n, i))


@case("scale_overflow.onnx", "node div (Div): a parameter (times alpha, beta, or inverted) exceeds the range of its type")
def _(name):
    n, i = gemm(out="h")
    n.append(helper.make_node("Div", ["h", "d"], ["y"], name="div"))
    i.append(numpy_helper.from_array(np.array([1.0, 1e-45, 1.0], dtype=np.float32), "d"))
    save(name, model(n, i))


@case("huge_constant.onnx", "0 bytes of data for 1073741824 elements of int64")
def _(name):
    shape = TensorProto(name="S", data_type=TensorProto.INT64, dims=[1 << 30], raw_data=b"")
    n = [helper.make_node("Constant", [], ["S"], value=shape),
         helper.make_node("Reshape", ["x", "S"], ["h"], name="reshape"),
         helper.make_node("Gemm", ["h", "W"], ["y"], name="fc", transB=1)]
    save(name, model(n, [w("W", (3, 4))]))


@case("huge_computed_constant.onnx", "is more than 16777216 elements")
def _(name):
    # 16 zeros squared by broadcasting, three times over: 16^2, 256^2, then 65536^2 elements,
    # which the evaluator refuses before allocating them.
    i64 = lambda v, n: numpy_helper.from_array(np.array(v, dtype=np.int64), n)  # noqa: E731
    n, v = [], "Z"
    for k in range(3):
        n += [helper.make_node("Unsqueeze", [v, "ax1"], [f"a{k}"]),
              helper.make_node("Unsqueeze", [v, "ax0"], [f"b{k}"]),
              helper.make_node("Add", [f"a{k}", f"b{k}"], [f"s{k}"]),
              helper.make_node("Reshape", [f"s{k}", "flat"], [f"f{k}"])]
        v = f"f{k}"
    n += [helper.make_node("Reshape", ["x", v], ["h"], name="reshape"),
          helper.make_node("Gemm", ["h", "W"], ["y"], name="fc", transB=1)]
    save(name, model(n, [i64(np.zeros(16), "Z"), i64([0], "ax0"), i64([1], "ax1"), i64([-1], "flat"),
                         w("W", (3, 4))]))


@case("output_used_inside.onnx", "it must be the last value")
def _(name):
    n, i = gemm(out="y", wshape=(4, 4))
    n.append(helper.make_node("Relu", ["y"], ["z"], name="after"))
    n.append(helper.make_node("Gemm", ["z", "W"], ["unused"], name="fc2", transB=1))
    save(name, model(n, i))


@case("avg_pool_without_padding_count.onnx", "count_include_pad = 0 with padding is not supported")
def _(name):
    n = [helper.make_node("AveragePool", ["x"], ["h"], name="pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["h", "W"], ["y"], name="conv")]
    save(name, model(n, [w("W", (2, 3, 1, 1))], inputs=[inp(shape=("N", 3, 4, 4))]))


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "*")):
        os.remove(old)
    rows = []
    for name, (make, fragment) in CASES.items():
        make(name)
        rows.append(f"{name}\t{fragment}\n")
    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        f.writelines(rows)
    print(len(CASES), "malformed models")


if __name__ == "__main__":
    main()
