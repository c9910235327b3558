//! Every way a node can be refused, one small graph each: the table names the case, builds the
//! graph that must hit exactly that path, and says which typed reason it must give.
//!
//! Size: one row per refusal (about a hundred), kept in one table on purpose.

use super::*;
use crate::formats::onnx::fault::{ConstFault, NodeFault};

fn a_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        s: Some(s.as_bytes().to_vec()),
        r#type: Some(attribute_type::STRING),
        ..Default::default()
    }
}

/// A 4x4 weight, a 4-channel bias, a 3x3 kernel of 4 to 4 channels.
fn w44() -> TensorProto {
    floats("W", &[4, 4], &[0.5; 16])
}

fn kernel() -> TensorProto {
    floats("K", &[4, 4, 3, 3], &[0.25; 144])
}

const FLAT: [Option<i64>; 2] = [None, Some(4)];
const IMAGE: [Option<i64>; 4] = [None, Some(4), Some(6), Some(6)];

/// `x -> Gemm(W) -> h`, then `nodes`, ending at `y`.
fn after_gemm(mut nodes: Vec<NodeProto>, mut inits: Vec<TensorProto>) -> OnnxModel {
    nodes.insert(0, node("Gemm", "fc", &["x", "W"], &["h"], vec![]));
    inits.push(w44());
    model(&FLAT, nodes, inits)
}

/// `x -> Conv(K, pads 1) -> h` on 4x6x6 images, then `nodes`, ending at `y`.
fn after_conv(mut nodes: Vec<NodeProto>, mut inits: Vec<TensorProto>) -> OnnxModel {
    nodes.insert(
        0,
        node(
            "Conv",
            "conv",
            &["x", "K"],
            &["h"],
            vec![a_ints("pads", &[1, 1, 1, 1])],
        ),
    );
    inits.push(kernel());
    model(&IMAGE, nodes, inits)
}

/// `h` flattened by a `Reshape` whose target is the constant value `target`, then a Gemm to `y`.
fn reshape_of(target: &str, nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> OnnxModel {
    let mut all = nodes;
    all.push(node("Reshape", "reshape", &["h", target], &["r"], vec![]));
    all.push(node("Gemm", "out", &["r", "W"], &["y"], vec![]));
    after_gemm(all, inits)
}

/// The typed reason a model is refused with: it must be a node's.
fn fault_of(m: &OnnxModel) -> (String, NodeFault) {
    match m.network::<f32>() {
        Err(OnnxError::Node { node, reason, .. }) => (node, *reason),
        Err(e) => panic!("not a node's error: {e}"),
        Ok(_) => panic!("read without an error"),
    }
}

type Check = fn(&NodeFault) -> bool;

macro_rules! case {
    ($name:expr, $node:expr, $model:expr, $($pattern:tt)+) => {
        (
            $name,
            $node,
            $model,
            (|f: &NodeFault| matches!(f, $($pattern)+)) as Check,
        )
    };
}

#[test]
fn every_node_fault_is_reached_by_its_own_graph() {
    let relu = |i: &str, o: &str| node("Relu", "relu", &[i], &[o], vec![]);
    let mut identities: Vec<NodeProto> = vec![node(
        "Constant",
        "c0",
        &[],
        &["s0"],
        vec![AttributeProto {
            name: Some("value".into()),
            t: Some(ints("", &[-1, 4])),
            r#type: Some(attribute_type::TENSOR),
            ..Default::default()
        }],
    )];
    for k in 1..=70 {
        identities.push(node(
            "Identity",
            &format!("id{k}"),
            &[&format!("s{}", k - 1)],
            &[&format!("s{k}")],
            vec![],
        ));
    }
    // A vector doubled eleven times by Concat: 2 million elements from a 1,024-element one.
    let mut doublings: Vec<NodeProto> = vec![node(
        "Constant",
        "c1024",
        &[],
        &["d0"],
        vec![AttributeProto {
            name: Some("value_ints".into()),
            ints: vec![1; 1024],
            r#type: Some(attribute_type::INTS),
            ..Default::default()
        }],
    )];
    for k in 1..=11 {
        let prev = format!("d{}", k - 1);
        doublings.push(node(
            "Concat",
            &format!("cat{k}"),
            &[&prev, &prev],
            &[&format!("d{k}")],
            vec![a_i("axis", 0)],
        ));
    }
    let dropout_training = node("Dropout", "drop", &["h", "", "on"], &["y"], vec![]);
    let mut custom = node("Swish", "swish", &["h"], &["y"], vec![]);
    custom.domain = Some("com.example".into());
    let two_outputs = node("Identity", "pair", &["t"], &["a", "b"], vec![]);
    let cases: Vec<(&str, &str, OnnxModel, Check)> = vec![
        // The graph, node by node.
        case!(
            "a value used before it is computed",
            "relu",
            model(
                &FLAT,
                vec![
                    relu("h", "y"),
                    node("Gemm", "fc", &["x", "W"], &["h"], vec![])
                ],
                vec![w44()]
            ),
            NodeFault::UsedBeforeComputed(v) if v == "h"
        ),
        case!(
            "a value computed twice",
            "again",
            after_gemm(
                vec![node("Relu", "again", &["x"], &["h"], vec![]), relu("h", "y")],
                vec![]
            ),
            NodeFault::Redefined(v) if v == "h"
        ),
        case!(
            "a second output used",
            "drop",
            after_gemm(
                vec![
                    node("Dropout", "drop", &["h"], &["d", "mask"], vec![]),
                    node("Identity", "keep", &["mask"], &["m"], vec![]),
                    node("Gemm", "out", &["d", "W"], &["y"], vec![]),
                ],
                vec![]
            ),
            NodeFault::ExtraOutputUsed(v) if v == "mask"
        ),
        case!(
            "an op of another domain",
            "swish",
            after_gemm(vec![custom], vec![]),
            NodeFault::Domain(d) if d == "com.example"
        ),
        case!(
            "an op the calculus does not map",
            "cos",
            after_gemm(vec![node("Cos", "cos", &["h"], &["y"], vec![])], vec![]),
            NodeFault::Unsupported
        ),
        // Constants.
        case!(
            "constants computed from constants too deep",
            "id5",
            reshape_of("s70", identities, vec![]),
            NodeFault::ConstantsTooDeep
        ),
        case!(
            "computed constants beyond the graph's total",
            "cat10",
            reshape_of("d11", doublings, vec![]),
            NodeFault::ConstantsTooLarge
        ),
        case!(
            "an input a constant needs is absent",
            "cat",
            reshape_of(
                "t",
                vec![node(
                    "Concat",
                    "cat",
                    &["c", ""],
                    &["t"],
                    vec![a_i("axis", 0)]
                )],
                vec![ints("c", &[-1, 4])]
            ),
            NodeFault::MissingInput(1)
        ),
        case!(
            "the shape of a value the walk has not reached",
            "shape",
            reshape_of(
                "t",
                vec![node("Shape", "shape", &["W"], &["t"], vec![])],
                vec![]
            ),
            NodeFault::ShapeUnknown(v) if v == "W"
        ),
        case!(
            "a second output of a node computing constants",
            "pair",
            reshape_of("b", vec![two_outputs], vec![ints("t", &[-1, 4])]),
            NodeFault::ConstantOutput(1)
        ),
        case!(
            "an op not evaluated on constants",
            "cos",
            reshape_of(
                "t",
                vec![node("Cos", "cos", &["c"], &["t"], vec![])],
                vec![floats("c", &[2], &[-1.0, 4.0])]
            ),
            NodeFault::NotEvaluated(op) if op == "Cos"
        ),
        case!(
            "a Constant without a value",
            "c",
            reshape_of(
                "t",
                vec![node("Constant", "c", &[], &["t"], vec![])],
                vec![]
            ),
            NodeFault::ConstantWithoutValue
        ),
        case!(
            "a Constant `value` without a tensor",
            "c",
            reshape_of(
                "t",
                vec![node(
                    "Constant",
                    "c",
                    &[],
                    &["t"],
                    vec![AttributeProto {
                        name: Some("value".into()),
                        ..Default::default()
                    }]
                )],
                vec![]
            ),
            NodeFault::ValueWithoutTensor
        ),
        case!(
            "a Constant of too many values",
            "c",
            reshape_of(
                "t",
                vec![node(
                    "Constant",
                    "c",
                    &[],
                    &["t"],
                    vec![AttributeProto {
                        name: Some("value_floats".into()),
                        floats: vec![0.0; (1 << 24) + 1],
                        r#type: Some(attribute_type::FLOATS),
                        ..Default::default()
                    }]
                )],
                vec![]
            ),
            NodeFault::TooManyValues
        ),
        case!(
            "a kind of Constant this reader does not read",
            "c",
            reshape_of(
                "t",
                vec![node("Constant", "c", &[], &["t"], vec![a_s("value_string", "4")])],
                vec![]
            ),
            NodeFault::ConstantKind(k) if k == "value_string"
        ),
        case!(
            "constant arithmetic: an axis out of range",
            "gather",
            reshape_of(
                "t",
                vec![node(
                    "Gather",
                    "gather",
                    &["c", "i"],
                    &["t"],
                    vec![a_i("axis", 3)]
                )],
                vec![ints("c", &[-1, 4]), ints("i", &[0, 1])]
            ),
            NodeFault::Const(ConstFault::Axis { axis: 3, rank: 1 })
        ),
        case!(
            "constant arithmetic: an index out of range",
            "gather",
            reshape_of(
                "t",
                vec![node("Gather", "gather", &["c", "i"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("i", &[0, 9])]
            ),
            NodeFault::Const(ConstFault::Index { index: 9, len: 2 })
        ),
        case!(
            "constant arithmetic: repeated axes",
            "unsq",
            reshape_of(
                "t",
                vec![node("Unsqueeze", "unsq", &["c", "a"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("a", &[0, 0])]
            ),
            NodeFault::Const(ConstFault::RepeatedAxes(_))
        ),
        case!(
            "constant arithmetic: squeezing an axis that is not 1",
            "sq",
            reshape_of(
                "t",
                vec![node("Squeeze", "sq", &["c", "a"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("a", &[0])]
            ),
            NodeFault::Const(ConstFault::NotSqueezable { axis: 0, .. })
        ),
        case!(
            "constant arithmetic: shapes that do not concatenate",
            "cat",
            reshape_of(
                "t",
                vec![node(
                    "Concat",
                    "cat",
                    &["c", "m"],
                    &["t"],
                    vec![a_i("axis", 0)]
                )],
                vec![ints("c", &[-1, 4]), floats("m", &[1, 1], &[1.0])]
            ),
            NodeFault::Const(ConstFault::Concat { .. })
        ),
        case!(
            "constant arithmetic: a slice step of 0",
            "slice",
            reshape_of(
                "t",
                vec![node(
                    "Slice",
                    "slice",
                    &["c", "s", "e", "a", "st"],
                    &["t"],
                    vec![]
                )],
                vec![
                    ints("c", &[-1, 4]),
                    ints("s", &[0]),
                    ints("e", &[2]),
                    ints("a", &[0]),
                    ints("st", &[0])
                ]
            ),
            NodeFault::Const(ConstFault::SliceStep)
        ),
        case!(
            "constant arithmetic: starts and ends of different lengths",
            "slice",
            reshape_of(
                "t",
                vec![node("Slice", "slice", &["c", "s", "e"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("s", &[0]), ints("e", &[2, 2])]
            ),
            NodeFault::Const(ConstFault::SliceLengths)
        ),
        case!(
            "constant arithmetic: shapes that do not broadcast",
            "add",
            reshape_of(
                "t",
                vec![node("Add", "add", &["c", "d"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("d", &[1, 2, 3])]
            ),
            NodeFault::Const(ConstFault::Broadcast { .. })
        ),
        case!(
            "constant arithmetic: a reshape target entry below -1",
            "re",
            reshape_of(
                "t",
                vec![node("Reshape", "re", &["c", "z"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("z", &[-2])]
            ),
            NodeFault::Const(ConstFault::ReshapeTarget(_))
        ),
        case!(
            "constant arithmetic: sizes that do not reshape",
            "re",
            reshape_of(
                "t",
                vec![node("Reshape", "re", &["c", "z"], &["t"], vec![])],
                vec![ints("c", &[-1, 4]), ints("z", &[3])]
            ),
            NodeFault::Const(ConstFault::Reshape { .. })
        ),
        case!(
            "constant arithmetic: a non-integer reshape target",
            "reshape",
            reshape_of("t", vec![], vec![floats("t", &[2], &[-1.0, 2.5])]),
            NodeFault::Const(ConstFault::NotAnInteger(_))
        ),
        // Parameters.
        case!(
            "a weight input that is absent",
            "fc",
            model(
                &FLAT,
                vec![node("Gemm", "fc", &["x", ""], &["y"], vec![])],
                vec![]
            ),
            NodeFault::NoParam("weight")
        ),
        case!(
            "a weight computed from the input",
            "fc2",
            after_gemm(
                vec![node("MatMul", "fc2", &["h", "h"], &["y"], vec![])],
                vec![]
            ),
            NodeFault::ParamFromData { what: "weight", .. }
        ),
        case!(
            "a weight that is not floating point",
            "fc2",
            after_gemm(
                vec![
                    node(
                        "Cast",
                        "cast",
                        &["W2"],
                        &["Wi"],
                        vec![a_i("to", i64::from(data_type::INT64))]
                    ),
                    node("Gemm", "fc2", &["h", "Wi"], &["y"], vec![]),
                ],
                vec![floats("W2", &[4, 4], &[1.0; 16])]
            ),
            NodeFault::ParamNotFloat { what: "weight", .. }
        ),
        case!(
            "a shift that is not one value per channel",
            "add",
            after_gemm(
                vec![node("Add", "add", &["h", "c"], &["y"], vec![])],
                vec![floats("c", &[3], &[1.0; 3])]
            ),
            NodeFault::NotPerChannel {
                what: "constant",
                ..
            }
        ),
        case!(
            "batch norm statistics of another length",
            "bn",
            after_conv(
                vec![node(
                    "BatchNormalization",
                    "bn",
                    &["h", "s", "b", "m", "v"],
                    &["y"],
                    vec![]
                )],
                vec![
                    floats("s", &[3], &[1.0; 3]),
                    floats("b", &[4], &[0.0; 4]),
                    floats("m", &[4], &[0.0; 4]),
                    floats("v", &[4], &[1.0; 4]),
                ]
            ),
            NodeFault::NormLength {
                what: "scale",
                got: 3,
                channels: 4,
                ..
            }
        ),
        case!(
            "batch norm statistics that define no normalization",
            "bn",
            after_conv(
                vec![node(
                    "BatchNormalization",
                    "bn",
                    &["h", "s", "b", "m", "v"],
                    &["y"],
                    vec![]
                )],
                vec![
                    floats("s", &[4], &[1.0; 4]),
                    floats("b", &[4], &[0.0; 4]),
                    floats("m", &[4], &[0.0; 4]),
                    floats("v", &[4], &[-1.0; 4]),
                ]
            ),
            NodeFault::Norm(_)
        ),
        // Ops.
        case!(
            "dropout in training mode",
            "drop",
            after_gemm(
                vec![dropout_training],
                vec![TensorProto {
                    name: Some("on".into()),
                    data_type: Some(data_type::BOOL),
                    int32_data: vec![1],
                    ..Default::default()
                }]
            ),
            NodeFault::Training
        ),
        case!(
            "batch norm in training mode",
            "bn",
            after_conv(
                vec![node(
                    "BatchNormalization",
                    "bn",
                    &["h", "s", "b", "m", "v"],
                    &["y"],
                    vec![a_i("training_mode", 1)]
                )],
                vec![
                    floats("s", &[4], &[1.0; 4]),
                    floats("b", &[4], &[0.0; 4]),
                    floats("m", &[4], &[0.0; 4]),
                    floats("v", &[4], &[1.0; 4]),
                ]
            ),
            NodeFault::NormTraining
        ),
        case!(
            "a PReLU whose slope is the data",
            "prelu",
            after_gemm(
                vec![node("PRelu", "prelu", &["c", "h"], &["y"], vec![])],
                vec![floats("c", &[4], &[0.1; 4])]
            ),
            NodeFault::SlopeIsData
        ),
        case!(
            "the tanh approximation of GELU",
            "gelu",
            after_gemm(
                vec![node("Gelu", "gelu", &["h"], &["y"], vec![a_s("approximate", "tanh")])],
                vec![]
            ),
            NodeFault::ApproximateGelu(a) if a == "tanh"
        ),
        case!(
            "a softmax inside on more than one axis",
            "sm",
            after_conv(
                vec![
                    node("Softmax", "sm", &["h"], &["s"], vec![a_i("axis", 1)]),
                    node("Relu", "relu", &["s"], &["y"], vec![]),
                ],
                vec![]
            ),
            NodeFault::SoftmaxNotFlat
        ),
        case!(
            "a trailing softmax over the batch",
            "sm",
            after_gemm(
                vec![node("Softmax", "sm", &["h"], &["y"], vec![a_i("axis", 0)])],
                vec![]
            ),
            NodeFault::SoftmaxOverBatch
        ),
        case!(
            "pooling a flat activation",
            "gap",
            after_gemm(
                vec![node("GlobalAveragePool", "gap", &["h"], &["y"], vec![])],
                vec![]
            ),
            NodeFault::Pool2d(s) if s == &[4]
        ),
        case!(
            "a mean over the channels",
            "mean",
            after_conv(
                vec![node(
                    "ReduceMean",
                    "mean",
                    &["h"],
                    &["y"],
                    vec![a_ints("axes", &[1])]
                )],
                vec![]
            ),
            NodeFault::MeanAxes
        ),
        case!(
            "a flatten from axis 2",
            "flat",
            after_conv(
                vec![node(
                    "Flatten",
                    "flat",
                    &["h"],
                    &["y"],
                    vec![a_i("axis", 2)]
                )],
                vec![]
            ),
            NodeFault::FlattenAxis(2)
        ),
        case!(
            "a reshape that is not a flatten",
            "reshape",
            reshape_of("t", vec![], vec![ints("t", &[-1, 2, 2])]),
            NodeFault::NotAFlatten { total: 4, .. }
        ),
        case!(
            "a squeeze of the channels",
            "sq",
            after_conv(
                vec![node("Squeeze", "sq", &["h", "a"], &["y"], vec![])],
                vec![ints("a", &[1])]
            ),
            NodeFault::SqueezeNotFlatten
        ),
        case!(
            "a constant minus the activation",
            "sub",
            after_gemm(
                vec![node("Sub", "sub", &["c", "h"], &["y"], vec![])],
                vec![floats("c", &[4], &[1.0; 4])]
            ),
            NodeFault::NotHomogeneous { minus: true }
        ),
        case!(
            "a constant divided by the activation",
            "div",
            after_gemm(
                vec![node("Div", "div", &["c", "h"], &["y"], vec![])],
                vec![floats("c", &[4], &[1.0; 4])]
            ),
            NodeFault::NotHomogeneous { minus: false }
        ),
        case!(
            "a division by zero",
            "div",
            after_gemm(
                vec![node("Div", "div", &["h", "c"], &["y"], vec![])],
                vec![floats("c", &[4], &[1.0, 0.0, 1.0, 1.0])]
            ),
            NodeFault::DivisionByZero
        ),
        case!(
            "the activation second in a matrix product",
            "mm",
            after_gemm(
                vec![node("MatMul", "mm", &["W", "h"], &["y"], vec![])],
                vec![]
            ),
            NodeFault::ActivationNotFirst
        ),
        case!(
            "a matrix product of an image",
            "fc",
            after_conv(
                vec![node("Gemm", "fc", &["h", "W"], &["y"], vec![])],
                vec![w44()]
            ),
            NodeFault::NotFlat(_)
        ),
        case!(
            "transA",
            "fc",
            model(
                &FLAT,
                vec![node(
                    "Gemm",
                    "fc",
                    &["x", "W"],
                    &["y"],
                    vec![a_i("transA", 1)]
                )],
                vec![w44()]
            ),
            NodeFault::TransA
        ),
        case!(
            "alpha zero",
            "fc",
            model(
                &FLAT,
                vec![node(
                    "Gemm",
                    "fc",
                    &["x", "W"],
                    &["y"],
                    vec![a_f("alpha", 0.0)]
                )],
                vec![w44()]
            ),
            NodeFault::GemmScalars { .. }
        ),
        case!(
            "a weight that is not a matrix",
            "fc",
            model(
                &FLAT,
                vec![node("Gemm", "fc", &["x", "V"], &["y"], vec![])],
                vec![floats("V", &[4], &[1.0; 4])]
            ),
            NodeFault::NotAMatrix { .. }
        ),
        case!(
            "a weight for another number of features",
            "fc",
            model(
                &FLAT,
                vec![node("Gemm", "fc", &["x", "V"], &["y"], vec![])],
                vec![floats("V", &[3, 5], &[1.0; 15])]
            ),
            NodeFault::WeightInputs { features: 4, .. }
        ),
        case!(
            "a 3-D convolution's weight",
            "conv",
            model(
                &IMAGE,
                vec![node("Conv", "conv", &["x", "K"], &["y"], vec![])],
                vec![floats("K", &[4, 4, 1, 1, 1], &[1.0; 16])]
            ),
            NodeFault::ConvWeight { .. }
        ),
        case!(
            "a 2-D convolution of a 1-D activation",
            "conv",
            model(
                &[None, Some(4), Some(6)],
                vec![node("Conv", "conv", &["x", "K"], &["y"], vec![])],
                vec![kernel()]
            ),
            NodeFault::ConvInput { spatial: 2, .. }
        ),
        case!(
            "a stride of zero",
            "conv",
            model(
                &IMAGE,
                vec![node(
                    "Conv",
                    "conv",
                    &["x", "K"],
                    &["y"],
                    vec![a_ints("strides", &[0, 1])]
                )],
                vec![kernel()]
            ),
            NodeFault::Attribute {
                name: "strides",
                ..
            }
        ),
        case!(
            "a kernel_shape other than the weight's",
            "conv",
            model(
                &IMAGE,
                vec![node(
                    "Conv",
                    "conv",
                    &["x", "K"],
                    &["y"],
                    vec![a_ints("kernel_shape", &[5, 5])]
                )],
                vec![kernel()]
            ),
            NodeFault::KernelShape { .. }
        ),
        case!(
            "groups that do not divide the output channels",
            "conv",
            model(
                &IMAGE,
                vec![node(
                    "Conv",
                    "conv",
                    &["x", "K"],
                    &["y"],
                    vec![a_i("group", 3)]
                )],
                vec![kernel()]
            ),
            NodeFault::Groups { groups: 3, out: 4 }
        ),
        case!(
            "a convolution's bias of another length",
            "conv",
            model(
                &IMAGE,
                vec![node("Conv", "conv", &["x", "K", "B"], &["y"], vec![])],
                vec![kernel(), floats("B", &[3], &[0.0; 3])]
            ),
            NodeFault::BiasShape { out: 4, .. }
        ),
        case!(
            "pads for one spatial axis",
            "conv",
            model(
                &IMAGE,
                vec![node(
                    "Conv",
                    "conv",
                    &["x", "K"],
                    &["y"],
                    vec![a_ints("pads", &[1, 1])]
                )],
                vec![kernel()]
            ),
            NodeFault::Pads { spatial: 2, .. }
        ),
        case!(
            "asymmetric pads",
            "conv",
            model(
                &IMAGE,
                vec![node(
                    "Conv",
                    "conv",
                    &["x", "K"],
                    &["y"],
                    vec![a_ints("pads", &[0, 0, 1, 1])]
                )],
                vec![kernel()]
            ),
            NodeFault::AsymmetricPads(_)
        ),
        case!(
            "SAME padding that is uneven",
            "pool",
            after_conv(
                vec![node(
                    "MaxPool",
                    "pool",
                    &["h"],
                    &["y"],
                    vec![
                        a_ints("kernel_shape", &[2, 2]),
                        a_s("auto_pad", "SAME_UPPER")
                    ]
                )],
                vec![]
            ),
            NodeFault::SameUneven(m) if m == "SAME_UPPER"
        ),
        case!(
            "an unknown auto_pad",
            "conv",
            model(
                &IMAGE,
                vec![node("Conv", "conv", &["x", "K"], &["y"], vec![a_s("auto_pad", "WIDE")])],
                vec![kernel()]
            ),
            NodeFault::AutoPad(m) if m == "WIDE"
        ),
        case!(
            "pooling without a kernel",
            "pool",
            after_conv(
                vec![node("MaxPool", "pool", &["h"], &["y"], vec![])],
                vec![]
            ),
            NodeFault::PoolKernel
        ),
        case!(
            "dilated pooling",
            "pool",
            after_conv(
                vec![node(
                    "MaxPool",
                    "pool",
                    &["h"],
                    &["y"],
                    vec![
                        a_ints("kernel_shape", &[2, 2]),
                        a_ints("dilations", &[2, 2])
                    ]
                )],
                vec![]
            ),
            NodeFault::DilatedPool
        ),
        case!(
            "pooling in ceil mode",
            "pool",
            after_conv(
                vec![node(
                    "MaxPool",
                    "pool",
                    &["h"],
                    &["y"],
                    vec![a_ints("kernel_shape", &[2, 2]), a_i("ceil_mode", 1)]
                )],
                vec![]
            ),
            NodeFault::CeilMode
        ),
        case!(
            "pooling strides of another rank",
            "pool",
            after_conv(
                vec![node(
                    "MaxPool",
                    "pool",
                    &["h"],
                    &["y"],
                    vec![a_ints("kernel_shape", &[2, 2]), a_ints("strides", &[2])]
                )],
                vec![]
            ),
            NodeFault::Attribute {
                name: "strides",
                ..
            }
        ),
        case!(
            "average pooling that leaves the padding out of the count",
            "pool",
            after_conv(
                vec![node(
                    "AveragePool",
                    "pool",
                    &["h"],
                    &["y"],
                    vec![
                        a_ints("kernel_shape", &[3, 3]),
                        a_ints("pads", &[1, 1, 1, 1])
                    ]
                )],
                vec![]
            ),
            NodeFault::CountIncludePad
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (name, at, m, check) in &cases {
        let (node, fault) = fault_of(m);
        assert!(check(&fault), "{name}: got {fault:?}");
        assert_eq!(&node, at, "{name}: the error names node {node}");
        // The message is the typed reason's, after the node.
        let text = m.network::<f32>().unwrap_err().to_string();
        assert!(text.ends_with(&fault.to_string()), "{name}: {text}");
        seen.insert(std::mem::discriminant(&fault));
    }
    // Every reason of a node but the constants' arithmetic has its own case.
    assert_eq!(seen.len(), 55, "distinct reasons reached");
}
