//! `weightnorm canonicalize`: on PyTorch-made fixtures, on a network trained by
//! `weightnorm train`, and on bad architecture files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weightnorm::torch::Checkpoint;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weightnorm"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../weightnorm-core/tests/fixtures/canonical")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn pytorch_fixtures_canonicalize_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["zoo2d", "zoo1d", "mlp_residual"] {
        let ckpt = fixtures().join(format!("{name}.safetensors"));
        let (out, report) = (
            tmp.path().join(format!("{name}.safetensors")),
            tmp.path().join(format!("{name}.json")),
        );
        let o = run(&[
            "canonicalize",
            s(&ckpt),
            "--arch",
            s(&fixtures().join(format!("{name}.arch.json"))),
            "-o",
            s(&out),
            "--report",
            s(&report),
            "--inputs",
            s(&fixtures().join(format!("{name}.io.safetensors"))),
        ]);
        ok(&o);
        let r = json(&report);
        assert!(r["max_rel_error"].as_f64().unwrap() <= 1e-5, "{name}: {r}");
        assert_eq!(r["verification"]["argmax_agreement"], 1.0);
        assert_eq!(r["verification"]["samples"], 12);
        assert_eq!(r["fused_weight_norm_pairs"], 1);
        let gain = r["global_gain"].as_f64().unwrap();
        let dir: Vec<f64> = r["gain_direction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!((dir.iter().map(|d| d * d).sum::<f64>() - 1.0).abs() < 1e-12);
        // OUT: the input's keys (the pair fused under its plain name) and the scale.
        let a = Checkpoint::open(&ckpt, None).unwrap();
        let b = Checkpoint::open(&out, None).unwrap();
        let scale = b.get("canonical.scale").unwrap().values_f64().unwrap();
        let norm = scale.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - gain).abs() <= 1e-6 * gain, "{name}");
        let plain = |k: &str| {
            k.replace(".parametrizations.weight.original0", ".weight")
                .replace(".parametrizations.weight.original1", ".weight")
                .replace(".weight_g", ".weight")
                .replace(".weight_v", ".weight")
        };
        let mut keys: Vec<String> = a.tensors.iter().map(|t| plain(&t.name)).collect();
        keys.push("canonical.scale".into());
        keys.sort();
        keys.dedup();
        let mut got: Vec<String> = b.tensors.iter().map(|t| t.name.clone()).collect();
        got.sort();
        assert_eq!(got, keys, "{name}");
        // Every layer that carries no scale has unit rows.
        for l in r["layers"].as_array().unwrap() {
            if l["carries"].is_null() {
                let after = l["row_norms_after"].as_array().unwrap();
                for v in after {
                    assert!((v.as_f64().unwrap() - 1.0).abs() < 1e-6, "{name}: {l}");
                }
            }
        }
    }
}

#[test]
fn a_trained_network_keeps_its_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    ok(&run(&[
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--param",
        "wn-mobn",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        s(&run_dir),
    ]));
    let (out, report) = (tmp.path().join("c.safetensors"), tmp.path().join("r.json"));
    for form in ["canonical", "reconstituted"] {
        let o = run(&[
            "canonicalize",
            s(&run_dir.join("model.safetensors")),
            "--arch",
            s(&run_dir.join("arch.json")),
            "-o",
            s(&out),
            "--force",
            "--report",
            s(&report),
            "--dataset",
            "digits",
            "--form",
            form,
        ]);
        ok(&o);
        let r = json(&report);
        let v = &r["verification"];
        assert!(v["max_rel_error"].as_f64().unwrap() <= 1e-5, "{r}");
        assert_eq!(v["argmax_agreement"], 1.0, "{form}");
        assert_eq!(v["samples"], 360);
        assert_eq!(v["accuracy_original"], v["accuracy_canonical"]);
        let trained = json(&run_dir.join("metrics.json"))["test_accuracy"]
            .as_f64()
            .unwrap();
        assert!((v["accuracy_original"].as_f64().unwrap() - trained).abs() < 1e-9);
        let has_scale = Checkpoint::open(&out, None)
            .unwrap()
            .get("canonical.scale")
            .is_some();
        assert_eq!(has_scale, form == "canonical");
        // `train` recorded the same global gain.
        let metrics = json(&run_dir.join("metrics.json"));
        let recorded = metrics["final_global_gain"].as_f64().unwrap();
        // ... and at the end of the last epoch, the same again.
        let last = metrics["global_gain"].as_array().unwrap().last().unwrap()[1]
            .as_f64()
            .unwrap();
        assert_eq!(last, recorded);
        let gain = r["global_gain"].as_f64().unwrap();
        assert!(
            (recorded - gain).abs() <= 1e-12 * gain,
            "{recorded} vs {gain}"
        );
        // The mean-only batch norms were folded: said in the report.
        assert_eq!(r["notes"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn bad_architecture_files_exit_2_naming_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = fixtures().join("zoo2d.safetensors");
    let base = json(&fixtures().join("zoo2d.arch.json"));
    let out = tmp.path().join("out.safetensors");
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown op",
            Box::new(|a| a["layers"][2]["op"] = "swish".into()),
            "layer 2 (swish): unknown op `swish`",
        ),
        (
            "missing tensor",
            Box::new(|a| a["layers"][9]["param"] = "99".into()),
            "layer 9 (linear): the checkpoint has no tensor `99.weight`",
        ),
        (
            "shape mismatch",
            Box::new(|a| a["layers"][4]["padding"] = 0.into()),
            "layer 9 (linear): takes 32 inputs, receives 8",
        ),
        (
            "pooling kernel 0",
            Box::new(|a| a["layers"][7]["kernel"] = 0.into()),
            "layer 7 (max_pool2d): a pooling kernel [0, 0]",
        ),
        (
            "residual branches",
            Box::new(|a| a["layers"][3]["body"][3]["op"] = "conv1d".into()),
            "layer 3.body.3 (conv1d)",
        ),
        (
            "residual shapes",
            Box::new(|a| {
                a["layers"][3]["body"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"op": "max_pool2d", "kernel": 2}))
            }),
            "layer 3 (residual): the body produces shape [6, 4, 4] but the skip path carries [6, 9, 9]",
        ),
        (
            "linear after conv",
            Box::new(|a| a["layers"][8]["op"] = "identity".into()),
            "layer 9 (linear): takes a flat input",
        ),
        (
            "huge input",
            Box::new(|a| a["input"] = serde_json::json!([3, 100000, 100000])),
            "architecture: an input of shape [3, 100000, 100000]",
        ),
        (
            "huge dilation",
            Box::new(|a| a["layers"][0]["dilation"] = serde_json::json!(1u64 << 62)),
            "layer 0 (conv2d): the kernel",
        ),
        (
            "groups that do not divide",
            Box::new(|a| a["layers"][0]["groups"] = 4.into()),
            "layer 0 (conv2d): 6 output channels do not split into 4 groups",
        ),
        (
            "not a list",
            Box::new(|a| a["layers"] = 3.into()),
            "architecture: `layers` must be a list",
        ),
    ];
    for (what, edit, message) in cases {
        let mut arch = base.clone();
        edit(&mut arch);
        let path = tmp.path().join("arch.json");
        std::fs::write(&path, arch.to_string()).unwrap();
        let o = run(&["canonicalize", s(&ckpt), "--arch", s(&path), "-o", s(&out)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(message), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(!out.exists(), "{what}: nothing written");
    }
    // Not JSON, and an output that is the input.
    std::fs::write(tmp.path().join("bad.json"), "{").unwrap();
    let o = run(&[
        "canonicalize",
        s(&ckpt),
        "--arch",
        s(&tmp.path().join("bad.json")),
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not JSON"));
    let o = run(&[
        "canonicalize",
        s(&ckpt),
        "--arch",
        s(&fixtures().join("zoo2d.arch.json")),
        "-o",
        s(&ckpt),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn verification_inputs_from_a_file() {
    use safetensors::Dtype;
    use weightnorm::torch::{TensorEntry, write_safetensors};
    let tmp = tempfile::tempdir().unwrap();
    let io = Checkpoint::open(&fixtures().join("mlp_residual.io.safetensors"), None).unwrap();
    let x = io.get("x").unwrap().clone();
    let labels: Vec<i64> = (0..12).map(|i| i % 5).collect();
    let y = TensorEntry::from_bytes(
        "y",
        Dtype::I64,
        vec![12],
        labels.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
    .unwrap();
    let inputs = tmp.path().join("x.safetensors");
    write_safetensors(&inputs, &[x, y], None).unwrap();
    let (out, report) = (tmp.path().join("o.safetensors"), tmp.path().join("r.json"));
    let args = |inputs: &Path| {
        run(&[
            "canonicalize",
            s(&fixtures().join("mlp_residual.safetensors")),
            "--arch",
            s(&fixtures().join("mlp_residual.arch.json")),
            "-o",
            s(&out),
            "--force",
            "--report",
            s(&report),
            "--inputs",
            s(inputs),
        ])
    };
    ok(&args(&inputs));
    let v = &json(&report)["verification"];
    assert_eq!(v["samples"], 12);
    // Labels give accuracies, equal for both forms of the network.
    assert!(v["accuracy_original"].is_f64());
    assert_eq!(v["accuracy_original"], v["accuracy_canonical"]);
    // Inputs of the wrong shape (zoo1d's, for an MLP of 10 inputs): exit 2, nothing written.
    std::fs::remove_file(&out).unwrap();
    let o = args(&fixtures().join("zoo1d.io.safetensors"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("expected [N, 10]"), "{err}");
    assert!(!out.exists());
}
