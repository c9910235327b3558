//! Graphs built here, node by node: what each op maps to (checked against the op's definition
//! computed by hand), how parameters are written back (in place, under fresh names, the old
//! scale of a canonical model), and the errors.

use bytes::Bytes;

use super::proto::*;
use super::*;
use crate::canonical::{Agreement, Layer, canonicalize};

mod faults;

fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::FLOAT),
        raw_data: Some(Bytes::from(
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(data_type::INT64),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn a_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(i),
        r#type: Some(attribute_type::INT),
        ..Default::default()
    }
}

fn a_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        f: Some(f),
        r#type: Some(attribute_type::FLOAT),
        ..Default::default()
    }
}

fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(attribute_type::INTS),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(name.into()),
        op_type: Some(op.into()),
        attribute: attrs,
        ..Default::default()
    }
}

fn value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(input: &[Option<i64>], nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> OnnxModel {
    let proto = model_proto(input, nodes, inits);
    OnnxModel::decode(Bytes::from(prost::Message::encode_to_vec(&proto)), None).unwrap()
}

fn model_proto(
    input: &[Option<i64>],
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: Some("g".into()),
            initializer: inits,
            input: vec![value("x", input)],
            output: vec![ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn samples(n: usize, len: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|s| {
            (0..len)
                .map(|i| ((i * 7 + s * 13) as f64 * 0.37).sin() * 2.0)
                .collect()
        })
        .collect()
}

/// `y = alpha * x @ W + beta * c`, written out.
fn gemm_by_hand(x: &[f64], w: &[f32], c: &[f32], alpha: f64, beta: f64) -> Vec<f64> {
    let (inp, out) = (x.len(), c.len());
    (0..out)
        .map(|o| {
            alpha
                * (0..inp)
                    .map(|k| x[k] * f64::from(w[k * out + o]))
                    .sum::<f64>()
                + beta * f64::from(c[o])
        })
        .collect()
}

#[test]
fn gemm_without_transposed_weight_with_alpha_and_beta() {
    let w: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).cos()).collect();
    let c = [0.5f32, -1.0, 2.0];
    let m = model(
        &[None, Some(4)],
        vec![
            node(
                "Gemm",
                "fc",
                &["x", "W", "C"],
                &["h"],
                vec![a_f("alpha", 2.0), a_f("beta", 0.5)],
            ),
            node("Relu", "relu", &["h"], &["y"], vec![]),
        ],
        vec![floats("W", &[4, 3], &w), floats("C", &[1, 3], &c)],
    );
    let r = m.network::<f64>().unwrap();
    let xs = samples(5, 4);
    let want: Vec<Vec<f64>> = xs
        .iter()
        .map(|x| {
            gemm_by_hand(x, &w, &c, 2.0, 0.5)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect()
        })
        .collect();
    assert!(Agreement::between(&want, &r.forward(&xs)).max_rel_error < 1e-12);
    assert_eq!(r.graph.bindings[0].node, "fc");
    assert_eq!(r.graph.bindings[0].param.as_deref(), Some("W"));
    // Written back in the layout and with the alpha and beta of the file: W stays [4, 3], and
    // the model computes the original outputs times nothing (the reconstituted form).
    let c_ = canonicalize(r.network.clone()).unwrap();
    let out = write::write_model(&m, &r.graph, c_.network(), Some(c_.scale())).unwrap();
    let g = out.graph.as_ref().unwrap();
    let w2 = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("W"))
        .unwrap();
    assert_eq!(w2.dims, vec![4, 3]);
    // W is used by this node alone: replaced in place; C keeps its name but not its shape
    // ([1, 3] has 3 values: in place too).
    assert_eq!(g.node[0].input, vec!["x", "W", "C"]);
    let back = OnnxModel::decode(Bytes::from(encode(&out).unwrap()), None).unwrap();
    let again = back.network::<f64>().unwrap();
    let a = Agreement::between(&want, &again.forward(&xs));
    assert!(a.max_rel_error < 1e-6, "{a:?}");
    // The scale is a multiplier after the relu: a layer that the calculus never folds.
    assert!(matches!(
        again.network.layers().last(),
        Some(Layer::Norm(n)) if n.kind == crate::canonical::NormKind::Scale
    ));
}

#[test]
fn a_shared_initializer_is_written_under_a_fresh_name_for_each_node() {
    // Two layers share one bias tensor (as TorchScript's exporter deduplicates equal
    // constants), and the same zero tensor serves as shift and as bias.
    let w1: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let w2: Vec<f32> = (0..4).map(|i| 1.0 + i as f32).collect();
    let m = model(
        &[None, Some(3)],
        vec![
            node(
                "Gemm",
                "fc1",
                &["x", "W1", "B"],
                &["h"],
                vec![a_i("transB", 1)],
            ),
            node("Relu", "relu", &["h"], &["r"], vec![]),
            node(
                "Gemm",
                "fc2",
                &["r", "W2", "B"],
                &["y"],
                vec![a_i("transB", 1)],
            ),
        ],
        vec![
            floats("W1", &[2, 3], &w1),
            floats("W2", &[2, 2], &w2),
            floats("B", &[2], &[0.25, -0.5]),
        ],
    );
    let r = m.network::<f32>().unwrap();
    let c = canonicalize(r.network.clone()).unwrap();
    let out = write::write_model(&m, &r.graph, c.network(), Some(c.scale())).unwrap();
    let g = out.graph.as_ref().unwrap();
    assert_eq!(g.node[0].input[2], "B.fc1");
    assert_eq!(g.node[2].input[2], "B.fc2");
    // B is used by no node now: it is gone.
    let names: Vec<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    assert!(!names.contains(&"B"), "{names:?}");
    assert_eq!(g.node[3].op_type.as_deref(), Some("Mul"));
    assert_eq!(g.node[3].input, vec!["y.unscaled", CANONICAL_SCALE]);
    assert_eq!(g.node[3].output, vec!["y"]);
    assert_eq!(g.node[2].output, vec!["y.unscaled"]);
    let xs = samples(4, 3);
    let back = OnnxModel::decode(Bytes::from(encode(&out).unwrap()), None).unwrap();
    let got = back.network::<f32>().unwrap().forward(&xs);
    assert!(Agreement::between(&r.forward(&xs), &got).max_rel_error < 1e-6);

    // Canonicalizing the canonical model again: the old scale is a multiplier that absorbs the
    // new scale (rows of +-1), written under a fresh name; the new scale takes the name.
    let r2 = back.network::<f32>().unwrap();
    let c2 = canonicalize(r2.network.clone()).unwrap();
    assert!((c2.global_gain() - c.global_gain()).abs() <= 1e-6 * c.global_gain());
    let out2 = write::write_model(&back, &r2.graph, c2.network(), Some(c2.scale())).unwrap();
    let g2 = out2.graph.as_ref().unwrap();
    let scales = g2
        .initializer
        .iter()
        .filter(|t| t.name.as_deref() == Some(CANONICAL_SCALE))
        .count();
    assert_eq!(scales, 1);
    let back2 = OnnxModel::decode(Bytes::from(encode(&out2).unwrap()), None).unwrap();
    let got2 = back2.network::<f32>().unwrap().forward(&xs);
    assert!(Agreement::between(&r.forward(&xs), &got2).max_rel_error < 1e-6);
}

#[test]
fn conv_batch_norm_and_a_residual_block_with_a_computed_flatten() {
    // x -> Conv(pad 1) -> BN -> (+ Conv 1x1 branch) -> Relu -> GlobalAveragePool -> Reshape
    // [Shape(.)[0], -1] -> Gemm, against the same network built by hand.
    let wc: Vec<f32> = (0..2 * 2 * 9)
        .map(|i| ((i * 5) as f32 * 0.3).sin())
        .collect();
    let w1: Vec<f32> = (0..4).map(|i| 0.5 - i as f32 * 0.3).collect();
    let wf: Vec<f32> = (0..6).map(|i| i as f32 * 0.2 - 0.4).collect();
    let m = model(
        &[None, Some(2), Some(4), Some(4)],
        vec![
            node(
                "Conv",
                "conv",
                &["x", "Wc"],
                &["c"],
                vec![a_ints("pads", &[1, 1, 1, 1])],
            ),
            node(
                "BatchNormalization",
                "bn",
                &["c", "s", "b", "mean", "var"],
                &["n"],
                vec![a_f("epsilon", 1e-3)],
            ),
            node("Conv", "branch", &["n", "W1"], &["p"], vec![]),
            node("Add", "add", &["n", "p"], &["a"], vec![]),
            node("Relu", "relu", &["a"], &["r"], vec![]),
            node("GlobalAveragePool", "gap", &["r"], &["g"], vec![]),
            node("Shape", "shape", &["g"], &["sh"], vec![]),
            node(
                "Gather",
                "gather",
                &["sh", "zero"],
                &["batch"],
                vec![a_i("axis", 0)],
            ),
            node("Unsqueeze", "unsq", &["batch", "axes"], &["b1"], vec![]),
            node(
                "Concat",
                "concat",
                &["b1", "minus1"],
                &["target"],
                vec![a_i("axis", 0)],
            ),
            node("Reshape", "flat", &["g", "target"], &["f"], vec![]),
            node("Gemm", "fc", &["f", "Wf"], &["y"], vec![a_i("transB", 1)]),
        ],
        vec![
            floats("Wc", &[2, 2, 3, 3], &wc),
            floats("s", &[2], &[1.5, -0.5]),
            floats("b", &[2], &[0.1, 0.2]),
            floats("mean", &[2], &[0.3, -0.3]),
            floats("var", &[2], &[2.0, 0.5]),
            floats("W1", &[2, 2, 1, 1], &w1),
            floats("Wf", &[3, 2], &wf),
            TensorProto {
                dims: vec![],
                ..ints("zero", &[0])
            },
            ints("axes", &[0]),
            ints("minus1", &[-1]),
        ],
    );
    let r = m.network::<f64>().unwrap();
    let ops: Vec<&str> = r.network.layers().iter().map(Layer::op).collect();
    assert_eq!(
        ops,
        [
            "conv2d",
            "batch_norm",
            "residual",
            "relu",
            "avg_pool2d",
            "flatten",
            "linear"
        ]
    );
    // By hand: conv, then the batch norm, then x + conv1x1(x), relu, the mean per channel.
    let xs = samples(3, 32);
    let conv = |x: &[f64]| -> Vec<f64> {
        let mut y = vec![0.0; 32];
        for o in 0..2 {
            for i in 0..4 {
                for j in 0..4 {
                    let mut s = 0.0;
                    for c in 0..2 {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (yy, xx) =
                                    (i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                                if (0..4).contains(&yy) && (0..4).contains(&xx) {
                                    s += f64::from(wc[((o * 2 + c) * 3 + ky) * 3 + kx])
                                        * x[c * 16 + yy as usize * 4 + xx as usize];
                                }
                            }
                        }
                    }
                    y[o * 16 + i * 4 + j] = s;
                }
            }
        }
        y
    };
    let want: Vec<Vec<f64>> = xs
        .iter()
        .map(|x| {
            let c = conv(x);
            let (s, b, mean, var) = ([1.5, -0.5], [0.1, 0.2], [0.3, -0.3], [2.0, 0.5]);
            let n: Vec<f64> = (0..32)
                .map(|k| {
                    let ch = k / 16;
                    s[ch] * (c[k] - mean[ch]) / (var[ch] + 1e-3f32 as f64).sqrt() + b[ch]
                })
                .collect();
            let g: Vec<f64> = (0..2)
                .map(|o| {
                    (0..16)
                        .map(|p| {
                            let branch: f64 = (0..2)
                                .map(|c| f64::from(w1[o * 2 + c]) * n[c * 16 + p])
                                .sum();
                            (n[o * 16 + p] + branch).max(0.0)
                        })
                        .sum::<f64>()
                        / 16.0
                })
                .collect();
            (0..3)
                .map(|u| (0..2).map(|k| f64::from(wf[u * 2 + k]) * g[k]).sum())
                .collect()
        })
        .collect();
    let a = Agreement::between(&want, &r.forward(&xs));
    assert!(a.max_rel_error < 1e-6, "{a:?}");
    let c = canonicalize(r.network.clone()).unwrap();
    let out = write::write_model(&m, &r.graph, c.network(), Some(c.scale())).unwrap();
    let back = OnnxModel::decode(Bytes::from(encode(&out).unwrap()), None).unwrap();
    let got = back.network::<f64>().unwrap().forward(&xs);
    assert!(Agreement::between(&want, &got).max_rel_error < 1e-6);
    // The batch norm folded into the conv is written as a shift: scale 1, mean 0, var 1 - eps.
    let g = out.graph.as_ref().unwrap();
    let var = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("var"))
        .unwrap();
    let v: Vec<f32> = var
        .raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v, vec![(1.0 - 1e-3f32 as f64) as f32; 2]);
}

#[test]
fn heads_softmax_and_log_softmax() {
    let head = Head {
        log: false,
        axes: 0..1,
        node: "s".into(),
    };
    let mut y = vec![1.0, 2.0, 3.0];
    head.apply(&mut y, &[3]);
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
    let s: f64 = e.iter().sum();
    for (a, b) in y.iter().zip(&e) {
        assert!((a - b / s).abs() < 1e-15);
    }
    // Over the channels of [2, 2] (per position), in log form.
    let head = Head {
        log: true,
        axes: 0..1,
        node: "s".into(),
    };
    let mut y = vec![0.0, 1.0, 0.0, 3.0];
    head.apply(&mut y, &[2, 2]);
    assert!((y[0] - (-(2f64).ln())).abs() < 1e-15);
    assert!((y[1] - (1.0 - (1f64.exp() + 3f64.exp()).ln())).abs() < 1e-14);
}

#[test]
fn what_cannot_be_read_is_named() {
    let w = floats("W", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let err = |nodes: Vec<NodeProto>, inits: Vec<TensorProto>| {
        model(&[None, Some(2)], nodes, inits)
            .network::<f32>()
            .unwrap_err()
            .to_string()
    };
    let e = err(
        vec![
            node("Gemm", "fc", &["x", "W"], &["h"], vec![]),
            node("Cos", "cos", &["h"], &["y"], vec![]),
        ],
        vec![w.clone()],
    );
    assert!(
        e.starts_with("node cos (Cos): this op is not supported"),
        "{e}"
    );
    // A node without a name is named by its op and position.
    let mut n = node("Gemm", "", &["x", "W"], &["y"], vec![a_i("transA", 1)]);
    n.name = None;
    let e = err(vec![n], vec![w.clone()]);
    assert!(e.starts_with("node Gemm#0 (Gemm): transA = 1"), "{e}");
    // An elementwise cluster that is not a barrier the calculus knows (x * sigmoid(x)).
    let e = err(
        vec![
            node("Gemm", "fc", &["x", "W"], &["h"], vec![]),
            node("Sigmoid", "sig", &["h"], &["s"], vec![]),
            node("Mul", "silu", &["h", "s"], &["y"], vec![]),
        ],
        vec![w.clone()],
    );
    assert!(
        e.contains("node silu (Mul)") || e.contains("node sig (Sigmoid)"),
        "{e}"
    );
    // The Erf form of GELU is one.
    let half = TensorProto {
        dims: vec![],
        ..floats("half", &[1], &[0.5])
    };
    let root2 = TensorProto {
        dims: vec![],
        ..floats("root2", &[1], &[std::f32::consts::SQRT_2])
    };
    let one = TensorProto {
        dims: vec![],
        ..floats("one", &[1], &[1.0])
    };
    let m = model(
        &[None, Some(2)],
        vec![
            node("Gemm", "fc", &["x", "W"], &["h"], vec![]),
            node("Div", "div", &["h", "root2"], &["d"], vec![]),
            node("Erf", "erf", &["d"], &["e"], vec![]),
            node("Add", "add", &["e", "one"], &["a"], vec![]),
            node("Mul", "mul", &["h", "a"], &["m"], vec![]),
            node("Mul", "half", &["m", "half"], &["g"], vec![]),
            node("Gemm", "fc2", &["g", "W"], &["y"], vec![]),
        ],
        vec![w.clone(), half, root2, one],
    );
    let r = m.network::<f64>().unwrap();
    let ops: Vec<&str> = r.network.layers().iter().map(Layer::op).collect();
    assert_eq!(ops, ["linear", "gelu", "linear"]);
}

#[test]
fn external_data_stays_under_the_models_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = floats("W", &[2, 2], &[0.0; 4]);
    t.raw_data = None;
    t.data_location = Some(DATA_LOCATION_EXTERNAL);
    let at = |loc: &str| {
        let mut t = t.clone();
        t.external_data = vec![StringStringEntryProto {
            key: Some("location".into()),
            value: Some(loc.into()),
        }];
        let ext = tensor::External::new(Some(dir.path().to_path_buf()));
        ext.location(&t)
    };
    assert!(at("w.bin").unwrap().unwrap().ends_with("w.bin"));
    assert!(at("sub/./w.bin").is_ok());
    for bad in ["../w.bin", "/etc/passwd", "a/../../w.bin", ""] {
        let e = at(bad).unwrap_err().to_string();
        assert!(
            e.contains("relative path under the model's directory"),
            "{bad}: {e}"
        );
    }
    // A link out of the directory is refused too.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        let e = at("out/hostname").unwrap_err().to_string();
        assert!(e.contains("leads out of the model's directory"), "{e}");
    }
    // Without a directory, nothing is read.
    let ext = tensor::External::new(None);
    let mut t2 = t.clone();
    t2.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some("w.bin".into()),
    }];
    assert!(ext.location(&t2).is_err());
}

/// A `Constant` node's tensor may keep its data in a file beside the model, as initializers
/// do: that file is one of the model's inputs (a command must never write over it), and a model
/// written back holds the data inline.
#[test]
fn a_constant_nodes_external_data_is_an_input_and_inlined_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = floats("C", &[2, 2], &[0.0; 4]);
    c.raw_data = None;
    c.data_location = Some(DATA_LOCATION_EXTERNAL);
    c.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some("c.bin".into()),
    }];
    let constant = node(
        "Constant",
        "const",
        &[],
        &["W"],
        vec![AttributeProto {
            name: Some("value".into()),
            r#type: Some(4),
            t: Some(c),
            ..Default::default()
        }],
    );
    let m = model_proto(
        &[None, Some(2)],
        vec![constant, node("Gemm", "fc", &["x", "W"], &["y"], vec![])],
        vec![],
    );
    let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("c.bin"), &bytes).unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, encode(&m).unwrap()).unwrap();
    let opened = OnnxModel::open(&path).unwrap();
    let files = opened.external_files().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("c.bin"));
    let inline = opened.standalone(opened.proto.clone()).unwrap();
    let t = inline.graph.as_ref().unwrap().node[0].attribute[0]
        .t
        .clone()
        .unwrap();
    assert_eq!(t.raw_data.as_deref(), Some(&bytes[..]));
    assert!(t.external_data.is_empty() && t.data_location != Some(DATA_LOCATION_EXTERNAL));
}
