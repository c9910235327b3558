//! Writes the MLP of the `big_mlp` example (the same weights) as an ONNX model, for timing
//! `weightnorm canonicalize MODEL.onnx`:
//! `cargo run --release --example big_onnx -p weightnorm -- DIR [WIDTH] [HIDDEN_LAYERS] [external]`
//! (default 4096 and 6: 100.7M parameters, 403 MB). Writes `DIR/model.onnx`: `Gemm` (transB = 1)
//! and `Relu` nodes from an input `x` of shape `[batch, WIDTH]` to an output `y` of shape
//! `[batch, 10]`; with `external`, the weights go to `DIR/model.onnx.data` beside it. Then:
//!
//! ```text
//! /usr/bin/time -v weightnorm canonicalize DIR/model.onnx -o DIR/canonical.onnx --report DIR/canonical.json
//! ```

use std::io::Write;

use weightnorm::onnx::proto::{
    AttributeProto, DATA_LOCATION_EXTERNAL, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_type, data_type, tensor_shape_proto, type_proto,
};
use weightnorm::onnx::{Bytes, encode};

fn value(name: &str, features: i64) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    let dim = |v| Dimension {
        value: Some(v),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(Value::DimParam("batch".into())),
                        dim(Value::DimValue(features)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: big_onnx DIR [WIDTH] [HIDDEN_LAYERS] [external]";
    let dir = std::path::PathBuf::from(args.next().expect(usage));
    let width: usize = args.next().map_or(4096, |s| s.parse().expect("width"));
    let hidden: usize = args.next().map_or(6, |s| s.parse().expect("layers"));
    let external = args.next().is_some_and(|a| a == "external");
    std::fs::create_dir_all(&dir).expect("create DIR");
    let data_name = "model.onnx.data";
    let mut data = external.then(|| {
        std::io::BufWriter::new(std::fs::File::create(dir.join(data_name)).expect("create data"))
    });
    let mut offset = 0usize;
    let mut tensor = |name: String, dims: Vec<i64>, bytes: Vec<u8>| -> TensorProto {
        let mut t = TensorProto {
            name: Some(name),
            dims,
            data_type: Some(data_type::FLOAT),
            ..Default::default()
        };
        match &mut data {
            Some(f) => {
                f.write_all(&bytes).expect("write data");
                let entry = |k: &str, v: String| StringStringEntryProto {
                    key: Some(k.into()),
                    value: Some(v),
                };
                t.data_location = Some(DATA_LOCATION_EXTERNAL);
                t.external_data = vec![
                    entry("location", data_name.into()),
                    entry("offset", offset.to_string()),
                    entry("length", bytes.len().to_string()),
                ];
                offset += bytes.len();
            }
            None => t.raw_data = Some(Bytes::from(bytes)),
        }
        t
    };
    let (mut nodes, mut inits) = (Vec::new(), Vec::new());
    let mut params = 0usize;
    let mut x = "x".to_string();
    for l in 0..=hidden {
        let (out, inp) = (if l == hidden { 10 } else { width }, width);
        let seed = l as u32 + 1;
        // The weights of the big_mlp example: about +-1/sqrt(in), rows of different norms.
        let s = 1.0 / (inp as f32).sqrt();
        let w: Vec<u8> = (0..out * inp)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                ((v as f32 / (1u32 << 24) as f32) - 0.5)
                    * 3.0
                    * s
                    * (1.0 + (i / inp) as f32 / out as f32)
            })
            .flat_map(f32::to_le_bytes)
            .collect();
        let b: Vec<u8> = (0..out)
            .flat_map(|i| (0.01 * (i % 7) as f32).to_le_bytes())
            .collect();
        let key = 2 * l;
        inits.push(tensor(
            format!("{key}.weight"),
            vec![out as i64, inp as i64],
            w,
        ));
        inits.push(tensor(format!("{key}.bias"), vec![out as i64], b));
        params += out * inp + out;
        let h = if l == hidden {
            "y".to_string()
        } else {
            format!("h{l}")
        };
        nodes.push(NodeProto {
            input: vec![x.clone(), format!("{key}.weight"), format!("{key}.bias")],
            output: vec![h.clone()],
            name: Some(format!("/{key}/Gemm")),
            op_type: Some("Gemm".into()),
            attribute: vec![AttributeProto {
                name: Some("transB".into()),
                i: Some(1),
                r#type: Some(attribute_type::INT),
                ..Default::default()
            }],
            ..Default::default()
        });
        x = h;
        if l < hidden {
            let r = format!("r{l}");
            nodes.push(NodeProto {
                input: vec![x.clone()],
                output: vec![r.clone()],
                name: Some(format!("/{}/Relu", key + 1)),
                op_type: Some("Relu".into()),
                ..Default::default()
            });
            x = r;
        }
    }
    drop(data);
    let model = ModelProto {
        ir_version: Some(8),
        producer_name: Some("weightnorm big_onnx example".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: Some("big_mlp".into()),
            initializer: inits,
            input: vec![value("x", width as i64)],
            output: vec![value("y", 10)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = encode(&model).expect("under 2 GiB");
    std::fs::write(dir.join("model.onnx"), bytes).expect("write model.onnx");
    println!(
        "wrote {}: {params} parameters ({} MB){}",
        dir.join("model.onnx").display(),
        params * 4 / 1_000_000,
        if external {
            ", weights in model.onnx.data"
        } else {
            ""
        }
    );
}
