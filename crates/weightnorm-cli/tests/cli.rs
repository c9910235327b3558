//! The `weightnorm` binary end to end: malformed and hostile inputs, output safety, `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weightnorm"))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../weightnorm/tests/fixtures/interop")
        .join(name)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_malformed_file_exits_2_with_one_line_and_no_output() {
    let expected = std::fs::read_to_string(corpus().join("expected.tsv")).unwrap();
    let cases: Vec<(&str, &str)> = expected
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .collect();
    assert!(cases.len() >= 15, "only {} malformed files", cases.len());
    for (file, fragment) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.safetensors");
        let input = corpus().join(file);
        let before = std::fs::read(&input).unwrap();
        let o = run(&[
            "fuse".as_ref(),
            input.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "{file}: not one line: {err}");
        assert!(err.starts_with("error: "), "{file}: {err}");
        assert!(err.contains(fragment), "{file}: `{fragment}` not in: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        // No output and no temporary file; the input is untouched.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "{file}");
        assert_eq!(std::fs::read(&input).unwrap(), before, "{file}");
        // inspect refuses it the same way (or, for data errors, still reads the file).
        let o = run(&["inspect".as_ref(), input.as_os_str()]);
        assert!(matches!(o.status.code(), Some(0) | Some(2)), "{file}");
        assert!(!stderr(&o).contains("panicked"), "{file}");
    }
}

#[test]
fn outputs_are_never_overwritten_without_force_and_never_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.safetensors");
    std::fs::copy(fixture("f32_legacy.safetensors"), &input).unwrap();
    let out = tmp.path().join("out.safetensors");
    let args = |force: bool| {
        let mut a: Vec<&std::ffi::OsStr> = vec![
            "fuse".as_ref(),
            input.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ];
        if force {
            a.push("--force".as_ref());
        }
        a
    };
    assert_eq!(run(&args(false)).status.code(), Some(0));
    let first = std::fs::read(&out).unwrap();
    let o = run(&args(false));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exists: pass --force to overwrite it"));
    assert_eq!(run(&args(true)).status.code(), Some(0));
    assert_eq!(std::fs::read(&out).unwrap(), first, "deterministic output");
    // The input itself is refused as an output, even with --force.
    let before = std::fs::read(&input).unwrap();
    let o = run(&[
        "convert".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        input.as_os_str(),
        "--scheme".as_ref(),
        "parametrizations".as_ref(),
        "--force".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is the input"));
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn fuse_split_convert_round_trip_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let plain = fixture("f32_legacy.fused.safetensors");
    let ok = |args: &[&std::ffi::OsStr]| {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    ok(&[
        "split".as_ref(),
        plain.as_os_str(),
        "-o".as_ref(),
        p("split.safetensors").as_os_str(),
        "--scheme".as_ref(),
        "parametrizations".as_ref(),
        "--include".as_ref(),
        r"^conv.*\.weight$".as_ref(),
    ]);
    ok(&[
        "convert".as_ref(),
        p("split.safetensors").as_os_str(),
        "-o".as_ref(),
        p("legacy.safetensors").as_os_str(),
        "--scheme".as_ref(),
        "legacy".as_ref(),
    ]);
    ok(&[
        "fuse".as_ref(),
        p("legacy.safetensors").as_os_str(),
        "-o".as_ref(),
        p("back.safetensors").as_os_str(),
    ]);
    let json = run(&[
        "inspect".as_ref(),
        p("legacy.safetensors").as_os_str(),
        "--json".as_ref(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let pairs = doc["pairs"].as_array().unwrap();
    // Only the convolution weights were selected (13 of 17 weights), split with dim 0.
    assert_eq!(pairs.len(), 13);
    assert!(
        pairs
            .iter()
            .all(|p| p["scheme"] == "legacy" && p["dim"] == 0)
    );
    assert!(
        pairs
            .iter()
            .all(|p| p["name"].as_str().unwrap().starts_with("conv"))
    );
    let back = run(&[
        "inspect".as_ref(),
        p("back.safetensors").as_os_str(),
        "--json".as_ref(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(doc["pairs"].as_array().unwrap().len(), 0);
    assert_eq!(doc["tensors"].as_array().unwrap().len(), 34);
}

#[test]
fn inspect_reports_dims_in_pytorch_numbering() {
    let o = run(&[
        "inspect".as_ref(),
        fixture("nested.pt").as_os_str(),
        "--key".as_ref(),
        "state_dict".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for p in doc["pairs"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let tag = name.split("_d").nth(1).unwrap().trim_end_matches(".weight");
        match tag {
            "none" | "m1" => assert!(p["dim"].is_null(), "{name}"),
            d => assert_eq!(p["dim"].as_i64(), Some(d.parse().unwrap()), "{name}"),
        }
        assert!(p["g"]["min"].as_f64().unwrap() > 0.0);
        assert!(p["v_norms"]["max"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn every_subcommand_explains_itself() {
    for cmd in [
        "op",
        "inspect",
        "fuse",
        "split",
        "convert",
        "train",
        "compare",
        "canonicalize",
    ] {
        let o = bin().args([cmd, "--help"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            help.contains("Example"),
            "{cmd} --help has no example:\n{help}"
        );
        assert!(help.contains("Usage: weightnorm"), "{cmd}");
    }
    let o = bin().args(["fuse"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing arguments are a usage error"
    );
}

/// `op --device cpu` runs the fused CPU kernel against the composition and says how far apart
/// they are; a GPU backend this binary was built without is refused in one line that names the
/// cargo feature, with exit code 2.
#[test]
fn op_runs_on_the_named_device_and_refuses_a_missing_backend() {
    let o = bin()
        .args(["op", "--shape", "33,70", "--dim", "1", "--device", "cpu"])
        .args(["--repeats", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("on cpu"), "{out}");
    let gap: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("max |fused - composed| = "))
        .unwrap_or_else(|| panic!("no agreement line in:\n{out}"))
        .parse()
        .unwrap();
    assert!(gap < 1e-5, "fused and composed differ by {gap}");
    for line in [
        "forward: fused ",
        "forward + backward: fused ",
        "a copy of the same bytes: ",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }

    refuses_missing_backends(&["op", "--shape", "4,4"]);
}

/// `args` with `--device NAME`, for each GPU backend this binary was built without: exit code
/// 2 and one line naming the cargo feature.
fn refuses_missing_backends(args: &[&str]) {
    let compiled = [
        ("cuda", cfg!(feature = "cuda")),
        ("wgpu", cfg!(feature = "wgpu")),
    ];
    for (name, _) in compiled.iter().filter(|(_, on)| !on) {
        let o = bin().args(args).args(["--device", name]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?} {name}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("--features {name}")), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `bench --device` names its device (the JSON says which), and refuses a GPU backend this
/// binary was built without in one line naming the cargo feature, with exit code 2.
#[test]
fn bench_takes_a_device_and_refuses_a_missing_backend() {
    let o = bin()
        .args(["bench", "--quick", "--json", "--device", "cpu"])
        .args(["--filter", "784x128 axis0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench --json is JSON");
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["cases"].as_array().map(Vec::len), Some(5));

    refuses_missing_backends(&["bench", "--quick"]);
}
