//! `weightnorm bench`: the structure of its JSON (every case, positive figures), the thread
//! count and allocator settings it reports, and bad input. Timings are not checked.

mod common;

use common::{ok, run};

/// `WEIGHTNORM_STREAM_MIN_BYTES` switches the kernels' large outputs to streaming stores, and
/// the bench says so (in the JSON and on the table's first line); a value that is no size is
/// an input error.
#[test]
fn the_streaming_threshold_from_the_environment_is_reported() {
    let bench = |json: bool| {
        let mut args = vec!["bench", "--quick", "--filter", "fused forward 784x128"];
        if json {
            args.push("--json");
        }
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_weightnorm"))
            .args(&args)
            .env("WEIGHTNORM_STREAM_MIN_BYTES", "1048576")
            .output()
            .expect("the binary runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let v: serde_json::Value = serde_json::from_slice(&bench(true)).expect("JSON");
    assert_eq!(v["streaming_stores_from"], 1048576);
    let table = String::from_utf8(bench(false)).expect("UTF-8");
    let first = table.lines().next().unwrap_or_default();
    assert!(
        first.ends_with("streaming stores from 1048576 bytes"),
        "{first}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_weightnorm"))
        .args(["bench", "--quick", "--filter", "fused forward 784x128"])
        .env("WEIGHTNORM_STREAM_MIN_BYTES", "lots")
        .output()
        .expect("the binary runs");
    assert_eq!(bad.status.code(), Some(2), "an input error");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("WEIGHTNORM_STREAM_MIN_BYTES"), "{err}");
    let plain = ok(&["bench", "--quick", "--filter", "fused forward 784x128"]);
    let first = String::from_utf8_lossy(&plain.stdout);
    assert!(
        first
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("; plain stores"),
        "{first}"
    );
}

#[test]
fn quick_json_names_every_case_with_positive_figures() {
    let o = ok(&["bench", "--quick", "--json", "--threads", "1"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench --json is JSON");
    assert_eq!(v["threads"], 1);
    assert!(
        v["allocator"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        v["streaming_stores_from"].is_null(),
        "plain stores by default"
    );
    let cases = v["cases"].as_array().expect("cases");
    let find = |name: &str, shape: &str| {
        cases
            .iter()
            .find(|c| {
                c["name"] == name && c["shape"].as_str().is_some_and(|s| s.starts_with(shape))
            })
            .unwrap_or_else(|| panic!("no case `{name}` for `{shape}`"))
    };
    let weights = [
        "4096x4096 axis0",
        "4096x4096 axis1",
        "4096x4096 whole",
        "512x256x3x3 axis0",
        "512x512x7 axis0",
        "784x128 axis0",
    ];
    for shape in weights {
        for name in [
            "fused forward",
            "fused forward+backward",
            "fused backward",
            "composed forward",
            "composed forward+backward",
        ] {
            let c = find(name, shape);
            // forward: v read and w written; backward: v, dw read and dv written; forward+backward:
            // both.
            let elements: u64 = shape
                .split(' ')
                .next()
                .unwrap()
                .split('x')
                .map(|d| d.parse::<u64>().unwrap())
                .product();
            let passes = match name {
                "fused backward" => 3,
                n if n.ends_with("backward") => 5,
                _ => 2,
            };
            assert_eq!(c["bytes"], passes * 4 * elements, "{name} {shape}");
        }
    }
    for shape in ["4096x4096", "512x256x3x3", "512x512x7", "784x128"] {
        find("copy warm", shape);
        find("copy fresh", shape);
    }
    for b in [16, 128] {
        for p in ["plain", "wn", "wn-linear"] {
            let c = find(&format!("train step {p} b{b}"), "mlp 784-1024-1024-10");
            assert!(c["bytes"].is_null() && c["gbps"].is_null());
        }
    }
    // The plain and weight-normalized steps are timed in rounds: one overhead per batch and
    // weight-normalized kind.
    let overheads = v["train_overheads"].as_array().expect("train_overheads");
    assert_eq!(overheads.len(), 4);
    let expected = [
        (16, "wn"),
        (16, "wn-linear"),
        (128, "wn"),
        (128, "wn-linear"),
    ];
    for (o, (b, kind)) in overheads.iter().zip(expected) {
        assert_eq!(o["batch"], b);
        assert_eq!(o["kind"], kind);
        assert_eq!(o["pairs"], 1);
        assert!(
            o["percent"]
                .as_f64()
                .is_some_and(|p| p.is_finite() && p > -100.0)
        );
    }
    find("canonicalize 10M", "mlp 6x1280");
    find("canonicalize 100M", "mlp 6x4096");
    assert_eq!(cases.len(), 6 * 5 + 4 * 2 + 6 + 2);
    for c in cases {
        let what = format!("{} {}", c["name"], c["shape"]);
        assert!(c["median_ms"].as_f64().is_some_and(|t| t > 0.0), "{what}");
        assert_eq!(c["runs"], 1, "{what}");
        if !c["bytes"].is_null() {
            assert!(c["bytes"].as_u64().is_some_and(|b| b > 0), "{what}");
            assert!(c["gbps"].as_f64().is_some_and(|g| g > 0.0), "{what}");
        }
    }
}

#[test]
fn the_table_says_threads_and_allocator() {
    let o = ok(&["bench", "--quick", "--threads", "2", "--filter", "784x128"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let first = out.lines().next().unwrap();
    assert!(first.contains("2 threads"), "{first}");
    assert!(first.contains("allocator: "), "{first}");
    assert!(out.contains("fused forward+backward"), "{out}");
    assert!(!out.contains("4096x4096"), "{out}");
}

#[test]
fn training_steps_are_timed_in_pairs_only_when_both_are_asked_for() {
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&ok(args).stdout).expect("bench --json is JSON")
    };
    let both = json(&[
        "bench",
        "--json",
        "--threads",
        "1",
        "--runs",
        "3",
        "--filter",
        "train step",
    ]);
    let cases = both["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    assert!(cases.iter().all(|c| c["runs"] == 3), "{cases:?}");
    let o = &both["train_overheads"];
    assert_eq!(o.as_array().map(Vec::len), Some(4), "{o}");
    // Every step of each batch ran as many times as the rounds counted.
    for (k, b) in [16, 16, 128, 128].into_iter().enumerate() {
        let ms = |p: &str| {
            cases
                .iter()
                .find(|c| c["name"] == format!("train step {p} b{b}"))
                .and_then(|c| c["median_ms"].as_f64())
                .unwrap()
        };
        assert!(ms("plain") > 0.0 && ms("wn") > 0.0 && ms("wn-linear") > 0.0);
        assert_eq!(o[k]["pairs"], 3);
        assert!(o[k]["percent"].as_f64().unwrap().is_finite());
    }
    // One of the two: timed alone, no overhead.
    let one = json(&[
        "bench",
        "--json",
        "--threads",
        "1",
        "--quick",
        "--filter",
        "train step wn b16",
    ]);
    assert_eq!(one["cases"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["cases"][0]["name"], "train step wn b16");
    assert_eq!(one["train_overheads"], serde_json::json!([]));
    // The table ends with the overheads.
    let table = ok(&[
        "bench",
        "--quick",
        "--threads",
        "1",
        "--filter",
        "train step",
    ]);
    let out = String::from_utf8_lossy(&table.stdout);
    for b in [16, 128] {
        for what in ["weight-norm", "paper-form WnLinear"] {
            assert!(
                out.contains(&format!("{what} training-step overhead at batch {b}: ")),
                "{out}"
            );
        }
    }
}

#[test]
fn bad_options_exit_2_with_one_line() {
    for args in [
        &["bench", "--threads", "0"][..],
        &["bench", "--filter", "no such case"],
        &["bench", "--runs", "0"],
        &["bench", "--quick", "--runs", "3"],
    ] {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
