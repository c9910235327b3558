//! Periodic Canonical Regularization from the command line: every canonicalization under the
//! penalty `none` keeps the batch loss and the global gain (MLP and CNN), `cap` caps the gain,
//! `soft` lowers it, a killed PCR run resumes to the uninterrupted one, and `compare` reports
//! PCR per transport policy.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{json, ok, run, whole_and_resumed, with_out};

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap()
}

/// `train --param pcr` on the digits with `extra` options; returns its metrics.
fn pcr_run(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train",
        "--dataset",
        "digits",
        "--param",
        "pcr",
        "--batch-size",
        "32",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    ok(&args);
    json(&out.join("metrics.json"))
}

#[test]
fn without_a_penalty_every_canonicalization_keeps_the_batch_loss_and_the_gain() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["mlp", "cnn"] {
        let m = pcr_run(
            &tmp.path().join(model),
            &[
                "--model",
                model,
                "--epochs",
                "2",
                "--pcr-every",
                "7",
                "--pcr-penalty",
                "none",
            ],
        );
        let steps = m["step_loss"].as_array().unwrap().len();
        let events = m["pcr_events"].as_array().unwrap();
        assert_eq!(events.len(), steps / 7, "{model}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["step"], 7 * (i + 1), "{model}");
            let (g0, g1) = (f(&e["gain_before"]), f(&e["gain_after"]));
            let (l0, l1) = (f(&e["loss_before"]), f(&e["loss_after"]));
            assert!(g0 > 0.0 && ((g1 - g0) / g0).abs() <= 1e-5, "{model} {e}");
            assert!(((l1 - l0) / l0).abs() <= 1e-5, "{model} {e}");
        }
        // The gain over training: before every canonicalization, and at every epoch's end.
        let gains = m["global_gain"].as_array().unwrap();
        assert_eq!(gains.len(), events.len() + 2, "{model}");
        assert_eq!(m["pcr"], "every 7 steps, penalty none, transport covariant");
    }
}

#[test]
fn cap_caps_the_gain_and_soft_lowers_it() {
    let tmp = tempfile::tempdir().unwrap();
    let none = pcr_run(
        &tmp.path().join("none"),
        &[
            "--epochs",
            "3",
            "--pcr-every",
            "10",
            "--pcr-penalty",
            "none",
        ],
    );
    let cap = 0.5;
    let capped = pcr_run(
        &tmp.path().join("cap"),
        &[
            "--epochs",
            "3",
            "--pcr-every",
            "10",
            "--pcr-penalty",
            "cap:0.5",
        ],
    );
    let events = capped["pcr_events"].as_array().unwrap();
    assert!(!events.is_empty());
    let mut capped_once = false;
    for e in events {
        let (g0, g1) = (f(&e["gain_before"]), f(&e["gain_after"]));
        assert!((g1 - g0.min(cap)).abs() <= 1e-9 * g0, "{e}");
        capped_once |= g0 > cap;
    }
    assert!(capped_once, "the gain exceeded the cap at least once");
    let soft = pcr_run(
        &tmp.path().join("soft"),
        &[
            "--epochs",
            "3",
            "--pcr-every",
            "10",
            "--pcr-penalty",
            "soft:0.05",
        ],
    );
    let last = |m: &serde_json::Value| f(&m["final_global_gain"]);
    assert!(
        last(&soft) < last(&none),
        "soft {} vs none {}",
        last(&soft),
        last(&none)
    );
    // Soft's canonicalizations keep the gain.
    for e in soft["pcr_events"].as_array().unwrap() {
        let (g0, g1) = (f(&e["gain_before"]), f(&e["gain_after"]));
        assert!(((g1 - g0) / g0).abs() <= 1e-5, "{e}");
    }
}

#[test]
fn bad_pcr_options_are_one_line_errors() {
    for (args, message) in [
        (
            vec!["--pcr-penalty", "cap:-1"],
            "invalid value 'cap:-1' for '--pcr-penalty",
        ),
        (
            vec!["--pcr-penalty", "hard:2"],
            "expected none, cap:G (G > 0) or soft:L",
        ),
        (
            vec!["--pcr-transport", "covariant,reset"],
            "train takes one --pcr-transport",
        ),
        (vec!["--pcr-every", "0"], "--pcr-every must be at least 1"),
        (
            vec!["--pcr-transport", "covarient"],
            "possible values: covariant, weight-scaled, reset, keep",
        ),
    ] {
        let mut all = vec![
            "train",
            "--dataset",
            "digits",
            "--param",
            "pcr",
            "--out",
            "/nonexistent/x",
        ];
        all.extend(&args);
        let o = run(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn a_killed_pcr_run_resumes_with_its_schedule_and_optimizer_state() {
    let args = |out: &Path| {
        with_out(
            &[
                "train",
                "--dataset",
                "digits",
                "--param",
                "pcr",
                "--epochs",
                "3",
                "--batch-size",
                "16",
                "--pcr-every",
                "9",
                "--pcr-transport",
                "weight-scaled",
                "--checkpoint-every",
                "4",
                "--quiet",
                "--out",
            ],
            out,
        )
    };
    // Mid-epoch 2 (90 steps an epoch), between two canonicalizations.
    let r = whole_and_resumed(args, "steps.jsonl", 131, Duration::from_secs(120), |_| {});
    let (killed, whole) = (r.killed.clone(), r.whole.clone());
    let (a, b) = (
        json(&killed.join("metrics.json")),
        json(&whole.join("metrics.json")),
    );
    assert_eq!(
        a["step_loss"], b["step_loss"],
        "every step loss, bit for bit"
    );
    assert_eq!(a["pcr_events"], b["pcr_events"]);
    assert_eq!(a["global_gain"], b["global_gain"]);
    assert_eq!(a["pcr_events"].as_array().unwrap().len(), 270 / 9);
}

#[test]
fn compare_trains_pcr_once_per_transport_policy_and_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    ok(&[
        "compare",
        "--dataset",
        "digits",
        "--params",
        "plain-wd,pcr",
        "--pcr-transport",
        "covariant,reset",
        "--pcr-every",
        "5",
        "--seeds",
        "0,1",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    for d in [
        "plain-wd/seed-1",
        "pcr-covariant/seed-0",
        "pcr-reset/seed-1",
    ] {
        assert!(out.join(d).join("metrics.json").is_file(), "{d}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Periodic Canonical Regularization"),
        "{report}"
    );
    assert!(report.contains("| pcr-reset | "), "{report}");
    assert!(
        report.contains("Against plain-wd: pcr-covariant: test loss"),
        "{report}"
    );
    for f in ["pcr_loss.png", "gain.png"] {
        assert!(
            std::fs::read(out.join(f)).unwrap().starts_with(b"\x89PNG"),
            "{f}"
        );
    }
    // --force clears the PCR runs' directories too.
    ok(&[
        "compare",
        "--dataset",
        "digits",
        "--params",
        "plain",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--quiet",
        "--force",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!out.join("pcr-reset/seed-1/metrics.json").exists());
}
