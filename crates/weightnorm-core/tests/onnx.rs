//! The ONNX front-end on PyTorch's exports (`scripts/gen_onnx_fixtures.py`): both exporters,
//! every model; the canonical and reconstituted models written back, read again and run with
//! the calculus against onnxruntime's outputs of the original (recorded by the script); the
//! same canonical form as the architecture-file path; byte-exact round trips; external data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weightnorm_core::canonical::{Agreement, Layer, Network, Real, canonicalize, reconstitute};
use weightnorm_core::formats::onnx::{CANONICAL_SCALE, OnnxModel, encode, proto, write_model};
use weightnorm_core::formats::{ArchNetwork, Checkpoint, from_arch};
use weightnorm_core::surgery::{FuseOptions, fuse};

const MODELS: [&str; 6] = [
    "zoo2d",
    "zoo1d",
    "mlp_residual",
    "resnet",
    "cnn_bn",
    "mlp_leaky",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn onnx_path(name: &str) -> PathBuf {
    fixtures().join("onnx").join(format!("{name}.onnx"))
}

/// The inputs `x` and onnxruntime's outputs of each export, one vector per sample.
fn io(name: &str) -> HashMap<String, Vec<Vec<f64>>> {
    let ck = Checkpoint::open(
        &fixtures()
            .join("onnx")
            .join(format!("{name}.io.safetensors")),
        None,
    )
    .unwrap();
    ck.tensors
        .iter()
        .map(|t| {
            let per: usize = t.shape[1..].iter().product();
            let v = t.values_f64().unwrap();
            (t.name.clone(), v.chunks(per).map(<[f64]>::to_vec).collect())
        })
        .collect()
}

/// The largest difference over the largest expected value.
fn rel(want: &[Vec<f64>], got: &[Vec<f64>]) -> f64 {
    Agreement::between(want, got).max_rel_error
}

fn initializer<'a>(m: &'a proto::ModelProto, name: &str) -> Option<&'a proto::TensorProto> {
    m.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
}

fn f32_values(t: &proto::TensorProto) -> Vec<f64> {
    t.raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect()
}

fn nodes(m: &proto::ModelProto) -> usize {
    m.graph.as_ref().unwrap().node.len()
}

/// Every layer with parameters of a network by position.
fn by_position<T: Real>(net: &Network<T>) -> HashMap<Vec<usize>, &Layer<T>> {
    net.parameter_layers()
        .into_iter()
        .map(|p| {
            let l = net.layer(&p).unwrap();
            (p, l)
        })
        .collect()
}

/// Must show 1, for one exporter: for every model, the graph as read computes onnxruntime's
/// outputs; the canonical model written (one `Mul` more) and read back does too, its layers
/// that carry no scale have unit rows, and `||canonical.scale||` is the global gain; the
/// reconstituted model (no node more) does too.
fn exports_canonicalize(exporter: &str) {
    for name in MODELS {
        let case = format!("{name}.{exporter}");
        let model = OnnxModel::open(&onnx_path(&case)).unwrap();
        let read = model
            .network::<f32>()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let io = io(name);
        let (x, want) = (&io["x"], &io[&format!("ort_{exporter}")]);
        let e = rel(want, &read.forward(x));
        assert!(e <= 1e-5, "{case}: the graph as read differs by {e:e}");

        let c = canonicalize(read.network.clone()).unwrap();
        let out = write_model(&model, &read.graph, c.network(), Some(c.scale())).unwrap();
        assert_eq!(nodes(&out), nodes(&model.proto) + 1, "{case}");
        let back = OnnxModel::decode(
            encode(&out).unwrap().into(),
            model.dir().map(Path::to_path_buf),
        )
        .unwrap();
        let reread = back.network::<f32>().unwrap();
        let e = rel(want, &reread.forward(x));
        assert!(e <= 1e-5, "{case}: the canonical model differs by {e:e}");
        // The scale written is the one canonicalize found: its norm is the global gain.
        let scale = f32_values(initializer(&out, CANONICAL_SCALE).unwrap());
        let norm = scale.iter().map(|s| s * s).sum::<f64>().sqrt();
        assert!(
            (norm - c.global_gain()).abs() <= 1e-6 * c.global_gain(),
            "{case}: ||canonical.scale|| = {norm}, global gain {}",
            c.global_gain()
        );
        // Unit rows, read back from the file.
        let layers = by_position(&reread.network);
        let mut unit = 0;
        for r in c.reports() {
            if r.carries.is_some() {
                continue;
            }
            let Some(Layer::Weighted(w)) = layers.get(&r.at) else {
                continue;
            };
            for (i, n) in w.w.row_norms().iter().enumerate() {
                assert!(
                    (n - 1.0).abs() <= 1e-6 || r.zero_rows.contains(&i),
                    "{case}: layer {:?} row {i} has norm {n}",
                    r.at
                );
            }
            unit += 1;
        }
        assert!(unit >= 1, "{case}: {unit} unit layers");

        let (plain, _) = reconstitute(c.network().clone(), c.scale()).unwrap();
        let out = write_model(&model, &read.graph, &plain, None).unwrap();
        assert_eq!(nodes(&out), nodes(&model.proto), "{case}");
        assert!(initializer(&out, CANONICAL_SCALE).is_none());
        let back = OnnxModel::decode(encode(&out).unwrap().into(), None).unwrap();
        let e = rel(want, &back.network::<f32>().unwrap().forward(x));
        assert!(
            e <= 1e-5,
            "{case}: the reconstituted model differs by {e:e}"
        );
    }
}

/// Must show 3: the TorchScript exporter (`dynamo=False`) ...
#[test]
fn torchscript_exports_canonicalize() {
    exports_canonicalize("ts");
}

/// ... and PyTorch's default exporter (`dynamo=True`).
#[test]
fn dynamo_exports_canonicalize() {
    exports_canonicalize("dynamo");
}

/// The exporters are what the file names say: the two paths through PyTorch differ in the
/// graphs they write (the dynamo exporter names nodes `node_*` and writes IR version 10).
#[test]
fn the_fixtures_come_from_both_exporters() {
    for name in MODELS {
        let ts = OnnxModel::open(&onnx_path(&format!("{name}.ts"))).unwrap();
        let dy = OnnxModel::open(&onnx_path(&format!("{name}.dynamo"))).unwrap();
        let first = |m: &OnnxModel| {
            m.proto.graph.as_ref().unwrap().node[0]
                .name
                .clone()
                .unwrap()
        };
        assert!(!first(&ts).starts_with("node_"), "{name}");
        assert!(first(&dy).starts_with("node_"), "{name}");
        assert!(ts.proto.ir_version < dy.proto.ir_version, "{name}");
    }
}

/// Must show 2: the architecture file with the checkpoint, and the ONNX export of the same
/// network, give the same canonical weights and scale (to 1e-6), and canonical networks that
/// compute the same.
#[test]
fn the_arch_file_and_the_onnx_export_give_the_same_canonical_form() {
    for name in ["zoo2d", "zoo1d", "mlp_residual"] {
        let dir = fixtures().join("canonical");
        let ck = Checkpoint::open(&dir.join(format!("{name}.safetensors")), None).unwrap();
        let (tensors, _) = fuse(&ck.tensors, &FuseOptions::default()).unwrap();
        let arch: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.arch.json"))).unwrap(),
        )
        .unwrap();
        let a: ArchNetwork<f64> = from_arch(&arch, &tensors).unwrap();
        let ca = canonicalize(a.network).unwrap();
        let weighted = |net: &Network<f64>| -> Vec<Vec<f64>> {
            net.parameter_layers()
                .iter()
                .filter_map(|p| match net.layer(p) {
                    Some(Layer::Weighted(w)) => Some(w.w.data.clone()),
                    _ => None,
                })
                .collect()
        };
        let xs = &io(name)["x"];
        for exporter in ["ts", "dynamo"] {
            let case = format!("{name}.{exporter}");
            let read = OnnxModel::open(&onnx_path(&case))
                .unwrap()
                .network::<f64>()
                .unwrap();
            let co = canonicalize(read.network).unwrap();
            assert_eq!(ca.scale().len(), co.scale().len(), "{case}");
            for (p, q) in ca.scale().iter().zip(co.scale()) {
                assert!((p - q).abs() <= 1e-6 * p.abs(), "{case}: scale {p} vs {q}");
            }
            let (wa, wo) = (weighted(ca.network()), weighted(co.network()));
            assert_eq!(wa.len(), wo.len(), "{case}");
            for (k, (p, q)) in wa.iter().zip(&wo).enumerate() {
                let big = p.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let diff = p
                    .iter()
                    .zip(q)
                    .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    diff <= 1e-6 * big.max(1.0),
                    "{case}: weighted layer {k} differs by {diff:e}"
                );
            }
            // Biases and shifts may sit in other places (a batch norm folded by the exporter,
            // a mean-only norm exported as Sub and Add): the canonical networks compute the same.
            let e = rel(&ca.network().forward(xs), &co.network().forward(xs));
            assert!(e <= 1e-6, "{case}: the canonical networks differ by {e:e}");
        }
    }
}

/// Nothing the schema defines is lost: every export decodes and encodes to the same bytes.
#[test]
fn every_export_round_trips_byte_for_byte() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures().join("onnx")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            let bytes = std::fs::read(&path).unwrap();
            let m = OnnxModel::open(&path).unwrap();
            assert!(encode(&m.proto).unwrap() == bytes, "{}", path.display());
            n += 1;
        }
    }
    assert_eq!(n, 2 * MODELS.len() + 1);
}

/// Weights beside the graph are read, and give the same network as the same weights inline.
#[test]
fn external_data_is_read() {
    let ext = OnnxModel::open(&onnx_path("mlp_leaky.external")).unwrap();
    let files = ext.external_files().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("mlp_leaky.external.onnx.data"));
    let g = ext.proto.graph.as_ref().unwrap();
    assert!(g.initializer.iter().all(|t| t.raw_data.is_none()));
    let a = ext.network::<f32>().unwrap();
    let b = OnnxModel::open(&onnx_path("mlp_leaky.ts"))
        .unwrap()
        .network::<f32>()
        .unwrap();
    assert_eq!(a.network, b.network);
    // Written back, the weights are inline: the file stands on its own.
    let c = canonicalize(a.network.clone()).unwrap();
    let out = write_model(&ext, &a.graph, c.network(), Some(c.scale())).unwrap();
    let inline = OnnxModel::decode(encode(&out).unwrap().into(), None).unwrap();
    assert!(inline.external_files().unwrap().is_empty());
    let x = &io("mlp_leaky")["x"];
    let e = rel(
        &io("mlp_leaky")["ort_ts"],
        &inline.network::<f32>().unwrap().forward(x),
    );
    assert!(e <= 1e-5, "{e:e}");
}
