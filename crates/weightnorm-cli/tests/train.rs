//! `train` and `compare` on the UCI digits (compiled in, so always available): outputs,
//! determinism, and bad input.

mod common;

use std::path::Path;

use common::{ok, run};

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn training_on_digits_writes_everything_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        ok(&[
            "train",
            "--dataset",
            "digits",
            "--param",
            "wn-mobn",
            "--epochs",
            "3",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ]);
        for f in [
            "metrics.json",
            "curves.png",
            "model.safetensors",
            "arch.json",
        ] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
    }
    let (ma, mb) = (metrics(&a), metrics(&b));
    // Same seed, same result.
    assert_eq!(ma["step_loss"], mb["step_loss"]);
    assert_eq!(ma["test_accuracy"], mb["test_accuracy"]);
    assert_eq!(
        ma["per_epoch"]["test_accuracy"].as_array().unwrap().len(),
        3
    );
    assert!(ma["mean_step_ms"].as_f64().unwrap() > 0.0);
    let acc = ma["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "3 epochs on digits reach {acc}");
    // The architecture names the mean-only batch norms the checkpoint holds.
    let arch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("arch.json")).unwrap()).unwrap();
    let ops: Vec<&str> = arch["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "linear",
            "mean_only_batch_norm",
            "relu",
            "linear",
            "mean_only_batch_norm",
            "relu",
            "linear"
        ]
    );
    let o = run(&[
        "inspect",
        a.join("model.safetensors").to_str().unwrap(),
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "1.bias",
            "1.running_mean",
            "3.weight",
            "4.bias",
            "4.running_mean",
            "6.bias",
            "6.weight"
        ]
    );
}

#[test]
fn a_different_seed_gives_a_different_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    for seed in ["1", "2"] {
        let dir = tmp.path().join(seed);
        ok(&[
            "train",
            "--dataset",
            "digits",
            "--param",
            "plain",
            "--epochs",
            "1",
            "--quiet",
            "--seed",
            seed,
            "--out",
            dir.to_str().unwrap(),
        ]);
        losses.push(metrics(&dir)["step_loss"].clone());
    }
    assert_ne!(losses[0], losses[1]);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let missing = tmp.path().join("nowhere");
    // A directory with a truncated IDX file.
    let trunc = tmp.path().join("trunc");
    std::fs::create_dir(&trunc).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut enc,
        &[0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2],
    )
    .unwrap();
    std::fs::write(
        trunc.join("train-images-idx3-ubyte.gz"),
        enc.finish().unwrap(),
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--dataset",
                "fashion-mnist",
                "--data",
                missing.to_str().unwrap(),
            ],
            "is not a directory with Fashion-MNIST",
        ),
        (
            vec![
                "--dataset",
                "fashion-mnist",
                "--data",
                trunc.to_str().unwrap(),
            ],
            "is truncated or padded",
        ),
        (
            vec!["--dataset", "digits", "--epochs", "0"],
            "--epochs and --batch-size must be positive",
        ),
    ];
    for (args, fragment) in cases {
        let mut all = vec!["train", "--quiet", "--out", out.to_str().unwrap()];
        all.extend(&args);
        let o = run(&all);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(fragment), "{args:?}: {err}");
    }
    // Unknown enumerated values are refused by clap, which names the option and lists the
    // possible values (a usage error, exit 2, one line, nothing trained or written).
    let unknown: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--dataset", "digits", "--param", "batchnorm"],
            "invalid value 'batchnorm' for '--param <PARAM>'",
            "[possible values: plain, plain-wd, wn, pcr, wn-mobn, bn]",
        ),
        (
            vec!["--dataset", "mnist"],
            "invalid value 'mnist' for '--dataset <DATASET>'",
            "[possible values: fashion-mnist, digits]",
        ),
        (
            vec!["--dataset", "digits", "--model", "rnn"],
            "invalid value 'rnn' for '--model <MODEL>'",
            "[possible values: mlp, cnn]",
        ),
        (
            vec!["--dataset", "digits", "--init", "xavier"],
            "invalid value 'xavier' for '--init <INIT>'",
            "[possible values: fp, ddi]",
        ),
    ];
    for (args, message, values) in unknown {
        let mut all = vec!["train", "--quiet", "--out", out.to_str().unwrap()];
        all.extend(&args);
        let o = run(&all);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(err.contains(values), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing written");
    }
}

#[test]
fn a_list_of_parameterizations_names_the_typo_and_suggests_the_nearest() {
    let o = run(&["compare", "--params", "plain, wnn", "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value 'wnn' for '--params <PARAMS>'"),
        "{err}"
    );
    assert!(err.contains("a similar value exists: 'wn'"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn compare_writes_a_report_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let o = ok(&[
        "compare",
        "--dataset",
        "digits",
        "--params",
        // Spaces after the commas are allowed.
        "plain, wn",
        "--seeds",
        "3,5",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let conclusion = report.lines().nth(2).unwrap();
    assert!(
        conclusion.starts_with("**Conclusion.** On digits (mlp model, 2 epochs, 2 seeds)")
            && conclusion.contains("Against plain: wn changes the test loss by"),
        "{report}"
    );
    // One row per parameterization with mean ± spread, one per run.
    assert!(
        report.contains("| plain | 0.") && report.contains(" ± "),
        "{report}"
    );
    assert!(report.contains("| wn | 5 | "), "{report}");
    assert!(report.contains("- seeds: 3, 5"), "{report}");
    // The step times say which allocator settings they were taken under: those the bench
    // reports on its first line.
    let bench = ok(&["bench", "--quick", "--filter", "fused forward 784x128"]);
    let first = String::from_utf8_lossy(&bench.stdout);
    let allocator = first
        .lines()
        .next()
        .and_then(|l| l.split("; allocator: ").nth(1))
        .and_then(|l| l.split("; ").next())
        .unwrap_or_else(|| panic!("no allocator in the bench's first line:\n{first}"));
    let line = format!(
        "- allocator (the step times were taken under it, as in `weightnorm bench`): {allocator}\n"
    );
    assert!(report.contains(&line), "{line}\n{report}");
    assert!(
        report.contains("- command: `weightnorm compare --dataset digits --params 'plain, wn'"),
        "{report}"
    );
    assert!(report.contains("**ECE** (expected calibration error)"));
    for f in [
        "loss.png",
        "test.png",
        "loss_time.png",
        "step_time.png",
        "plain/seed-3/metrics.json",
        "wn/seed-5/model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Each run is the run `train` makes with its seed.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("wn/seed-5/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["seed"], 5);
    assert!(m["seconds"].as_f64().unwrap() > 0.0, "the run's wall time");
    assert_eq!(m["step_ms"].as_array().unwrap().len(), 2 * 12); // 1437 examples, batch 128
    let single = tmp.path().join("single");
    ok(&[
        "train",
        "--dataset",
        "digits",
        "--param",
        "wn",
        "--seed",
        "5",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        single.to_str().unwrap(),
    ]);
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(single.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["step_loss"], t["step_loss"]);
    // The terminal gets the conclusion and an aligned table, not markdown.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("On digits"), "{stdout}");
    assert!(!stdout.contains('|') && !stdout.contains("**"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("parameterization  test accuracy")),
        "{stdout}"
    );
}

#[test]
fn options_that_cannot_apply_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "train",
                "--dataset",
                "digits",
                "--param",
                "plain",
                "--init",
                "ddi",
            ],
            "--init ddi initialises weight-normalized models",
        ),
        (
            vec!["compare", "--dataset", "digits", "--params", "wn,plain,wn"],
            "--params names wn twice",
        ),
        (
            vec!["compare", "--dataset", "digits", "--seeds", "1,2,1"],
            "--seeds names 1 twice",
        ),
        (
            vec!["train", "--dataset", "digits", "--device", "cuda"],
            "rebuild with `cargo build --release --features cuda`",
        ),
        (
            vec!["train", "--dataset", "digits", "--threads", "0"],
            "--threads must be at least 1",
        ),
        (
            vec!["train", "--data", "/nonexistent/fashion"],
            "--data /nonexistent/fashion is not a directory",
        ),
    ];
    for (args, message) in cases {
        let mut all = args.clone();
        all.extend(["--quiet", "--out", o]);
        let r = run(&all);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing written");
    }
}
