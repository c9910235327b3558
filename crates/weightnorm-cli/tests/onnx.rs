//! `weightnorm canonicalize MODEL.onnx`: PyTorch's exports (`scripts/gen_onnx_fixtures.py`)
//! through the binary in both forms, checked against onnxruntime's outputs recorded by the
//! script; the corpus of malformed models (`scripts/gen_onnx_malformed.py`): exit 2, one line,
//! nothing written; the options that do not apply to a model.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::{ok, run};
use weightnorm::canonical::Agreement;
use weightnorm::onnx::{CANONICAL_SCALE, OnnxModel};
use weightnorm::torch::Checkpoint;

const MODELS: [&str; 6] = [
    "zoo2d",
    "zoo1d",
    "mlp_residual",
    "resnet",
    "cnn_bn",
    "mlp_leaky",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../weightnorm-core/tests/fixtures/onnx")
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/onnx")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn samples(path: &Path, name: &str) -> Vec<Vec<f64>> {
    let ck = Checkpoint::open(path, None).unwrap();
    let t = ck.get(name).unwrap();
    let per: usize = t.shape[1..].iter().product();
    t.values_f64()
        .unwrap()
        .chunks(per)
        .map(<[f64]>::to_vec)
        .collect()
}

#[test]
fn every_export_canonicalizes_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    for name in MODELS {
        let io = fixtures().join(format!("{name}.io.safetensors"));
        let x = samples(&io, "x");
        for exporter in ["ts", "dynamo"] {
            let model = fixtures().join(format!("{name}.{exporter}.onnx"));
            let want = samples(&io, &format!("ort_{exporter}"));
            let original = OnnxModel::open(&model).unwrap();
            let node_names: HashSet<String> = original
                .proto
                .graph
                .as_ref()
                .unwrap()
                .node
                .iter()
                .filter_map(|n| n.name.clone())
                .collect();
            for form in ["canonical", "reconstituted"] {
                let case = format!("{name}.{exporter} {form}");
                let out = tmp.path().join(format!("{name}.{exporter}.{form}.onnx"));
                let report = tmp.path().join(format!("{name}.{exporter}.{form}.json"));
                let o = ok(&[
                    "canonicalize",
                    s(&model),
                    "-o",
                    s(&out),
                    "--report",
                    s(&report),
                    "--inputs",
                    s(&io),
                    "--form",
                    form,
                ]);
                let stdout = String::from_utf8_lossy(&o.stdout);
                assert!(
                    stdout.trim_end().ends_with(&format!("wrote {}", s(&out))),
                    "{stdout}"
                );
                let r: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
                assert!(r["max_rel_error"].as_f64().unwrap() <= 1e-5, "{case}: {r}");
                assert_eq!(r["verification"]["passed"], true);
                assert_eq!(r["verification"]["samples"], 6);
                // The report speaks of the graph's nodes.
                for l in r["layers"].as_array().unwrap() {
                    let node = l["layer"].as_str().unwrap();
                    assert!(node_names.contains(node), "{case}: {node} is not a node");
                    assert!(l["param"].is_string(), "{case}: {l}");
                }
                // OUT, read and run here, gives onnxruntime's outputs of the original.
                let m = OnnxModel::open(&out).unwrap();
                let got = m.network::<f32>().unwrap().forward(&x);
                let e = Agreement::between(&want, &got).max_rel_error;
                assert!(e <= 1e-5, "{case}: {e:e}");
                let scale = m
                    .proto
                    .graph
                    .as_ref()
                    .unwrap()
                    .initializer
                    .iter()
                    .find(|t| t.name.as_deref() == Some(CANONICAL_SCALE));
                if form == "canonical" {
                    let v: Vec<f64> = scale
                        .unwrap()
                        .raw_data
                        .as_ref()
                        .unwrap()
                        .chunks_exact(4)
                        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                        .collect();
                    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let gain = r["global_gain"].as_f64().unwrap();
                    assert!(
                        (norm - gain).abs() <= 1e-6 * gain,
                        "{case}: {norm} vs {gain}"
                    );
                } else {
                    assert!(scale.is_none(), "{case}");
                }
            }
        }
    }
}

#[test]
fn malformed_models_are_refused_in_one_line_and_nothing_is_written() {
    let expected = std::fs::read_to_string(corpus().join("expected.tsv")).unwrap();
    let mut n = 0;
    for line in expected.lines() {
        let (file, fragment) = line.split_once('\t').unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (out, report) = (tmp.path().join("out.onnx"), tmp.path().join("r.json"));
        let o = run(&[
            "canonicalize",
            s(&corpus().join(file)),
            "-o",
            s(&out),
            "--report",
            s(&report),
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "{file}: {err}");
        assert!(err.starts_with("error: "), "{file}: {err}");
        assert!(err.contains(fragment), "{file}: `{fragment}` not in {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{file}: something was written"
        );
        n += 1;
    }
    assert!(n >= 40, "{n} cases");
}

#[test]
fn options_that_do_not_apply_to_a_model_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("mlp_leaky.ts.onnx");
    let out = tmp.path().join("out.onnx");
    let refused = |args: &[&str], fragment: &str| {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(fragment), "{}", stderr(&o));
        assert!(!out.exists());
    };
    refused(
        &["canonicalize", s(&model), "--arch", "a.json", "-o", s(&out)],
        "carries its own graph: drop --arch",
    );
    refused(
        &["canonicalize", s(&model), "--key", "model", "-o", s(&out)],
        "--key selects a state dict",
    );
    let ckpt = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../weightnorm-core/tests/fixtures/canonical/zoo2d.safetensors");
    refused(
        &["canonicalize", s(&ckpt), "-o", s(&out)],
        "--arch ARCH.json is required for the checkpoint",
    );
    // The weights beside a model are an input: no output may be them, even with --force.
    for f in ["mlp_leaky.external.onnx", "mlp_leaky.external.onnx.data"] {
        std::fs::copy(fixtures().join(f), tmp.path().join(f)).unwrap();
    }
    let data = tmp.path().join("mlp_leaky.external.onnx.data");
    let before = std::fs::read(&data).unwrap();
    let o = run(&[
        "canonicalize",
        s(&tmp.path().join("mlp_leaky.external.onnx")),
        "-o",
        s(&data),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is the input"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&data).unwrap(), before);
}
