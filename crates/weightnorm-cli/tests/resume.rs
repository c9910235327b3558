//! Runs people can trust: a run killed (SIGKILL) or interrupted (SIGINT) mid-epoch and resumed
//! from its checkpoint gives exactly the step losses and metrics of an uninterrupted run; an
//! existing run is never overwritten without `--force`; the step log grows while training.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json, lines, ok, run, whole_and_resumed, with_out};

const BIN: &str = env!("CARGO_BIN_EXE_weightnorm");

/// A digits run long enough to be stopped mid-epoch (90 steps an epoch).
fn args(out: &Path) -> Vec<String> {
    with_out(
        &[
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--checkpoint-every",
            "7",
            "--quiet",
            "--out",
        ],
        out,
    )
}

/// Starts a run and waits until its step log holds `steps` lines (the run is then mid-epoch
/// 2, past at least one checkpoint).
fn start_and_wait(out: &Path, steps: usize) -> Child {
    let mut child = Command::new(BIN)
        .args(args(out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while lines(&out.join("steps.jsonl")) < steps {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be stopped"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn same_run(resumed: &Path, whole: &Path) {
    let (a, b) = (
        json(&resumed.join("metrics.json")),
        json(&whole.join("metrics.json")),
    );
    assert_eq!(
        a["step_loss"], b["step_loss"],
        "every step loss, bit for bit"
    );
    assert_eq!(a["step_loss"].as_array().unwrap().len(), 360);
    assert_eq!(a["per_epoch"], b["per_epoch"]);
    assert_eq!(a["global_gain"], b["global_gain"]);
    let log = |dir: &Path| -> Vec<f64> {
        std::fs::read_to_string(dir.join("steps.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        log(resumed),
        log(whole),
        "the step log holds the whole run once"
    );
    assert_eq!(
        std::fs::read(resumed.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap()
    );
}

#[test]
fn a_killed_or_interrupted_run_resumes_to_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let a: Vec<String> = args(&whole);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // SIGKILL mid-epoch 2: the last checkpoint (every 7 steps) is where it resumes.
    let killed = tmp.path().join("killed");
    let mut child = start_and_wait(&killed, 130);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("metrics.json").exists(),
        "killed before the end"
    );
    let o = ok(&["train", "--resume", killed.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("epoch 4:"), "{err}");
    same_run(&killed, &whole);

    // Ctrl-C: a checkpoint after the step in progress, exit 130, then the same.
    let stopped = tmp.path().join("stopped");
    let child = start_and_wait(&stopped, 100);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    ok(&["train", "--resume", stopped.to_str().unwrap()]);
    same_run(&stopped, &whole);
}

/// Every file of `dir` with its bytes, by name.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn an_existing_run_is_kept_unless_forced_and_epochs_are_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out_s = out.to_str().unwrap();
    let first = ok(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--out",
        out_s,
    ]);
    // Not a terminal: no bar, but one line per epoch.
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(err.matches(" epoch ").count(), 2, "{err}");
    assert_eq!(lines(&out.join("steps.jsonl")), 2 * 12, "one line per step");
    let before = contents(&out);

    let again = run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        out_s,
    ]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not empty: use --force"), "{err}");
    assert_eq!(contents(&out), before, "nothing changed");

    // --force replaces the run's files: nothing of the first run is left.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    ok(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        out_s,
        "--force",
    ]);
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["epochs"], 1);
    assert_eq!(lines(&out.join("steps.jsonl")), 12);
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );

    // --resume takes no other options.
    let o = run(&["train", "--resume", out_s, "--epochs", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give no others"));
    // Nor a damaged checkpoint: one line, exit 2.
    let ck = out.join("checkpoint.bin");
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["train", "--resume", out_s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is not a whole weightnorm checkpoint"),
        "{err}"
    );
    // Nor a directory without a checkpoint.
    let o = run(&["train", "--resume", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

/// A comparison of two parameterizations over two seeds on the digits.
fn compare_args(out: &Path) -> Vec<String> {
    with_out(
        &[
            "compare",
            "--dataset",
            "digits",
            "--params",
            "plain,wn",
            "--seeds",
            "0,1",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--checkpoint-every",
            "5",
            "--quiet",
            "--out",
        ],
        out,
    )
}

#[test]
fn a_killed_comparison_resumes_to_the_uninterrupted_one() {
    // SIGKILL in the third run (plain, seed 1), mid-epoch 1.
    let r = whole_and_resumed(
        compare_args,
        "plain/seed-1/steps.jsonl",
        40,
        Duration::from_secs(120),
        |killed| assert!(!killed.join("report.md").exists()),
    );
    let (killed, whole) = (r.killed.clone(), r.whole.clone());
    assert!(String::from_utf8_lossy(&r.resume.stdout).contains("parameterization"));
    for run in ["plain/seed-0", "wn/seed-0", "plain/seed-1", "wn/seed-1"] {
        let (a, b) = (
            json(&killed.join(run).join("metrics.json")),
            json(&whole.join(run).join("metrics.json")),
        );
        assert_eq!(a["step_loss"], b["step_loss"], "{run}");
        assert_eq!(a["per_epoch"], b["per_epoch"], "{run}");
    }
    // The reports agree on everything but the timings.
    let table = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("| plain | ") || l.starts_with("| wn | "))
            .map(|l| l.split(" | ").take(4).collect::<Vec<_>>().join("|"))
            .collect()
    };
    assert_eq!(table(&killed), table(&whole));
    assert_eq!(table(&whole).len(), 6);
}

/// Where the Debian package `dataset-fashion-mnist` puts the data set (`scripts/setup.sh`
/// installs it).
const FASHION: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn a_killed_fashion_mnist_run_resumes_to_the_uninterrupted_one() {
    assert!(
        Path::new(FASHION)
            .join("train-images-idx3-ubyte.gz")
            .is_file(),
        "Fashion-MNIST is missing from {FASHION}: run scripts/setup.sh (it installs the Debian \
         package dataset-fashion-mnist)"
    );
    let args = |out: &Path| -> Vec<String> {
        with_out(
            &[
                "train",
                "--dataset",
                "fashion-mnist",
                "--epochs",
                "1",
                "--checkpoint-every",
                "40",
                "--quiet",
                "--out",
            ],
            out,
        )
    };
    let r = whole_and_resumed(args, "steps.jsonl", 150, Duration::from_secs(300), |_| {});
    let (killed, whole) = (r.killed.clone(), r.whole.clone());
    let (a, b) = (
        json(&killed.join("metrics.json")),
        json(&whole.join("metrics.json")),
    );
    assert_eq!(a["dataset"], "fashion-mnist");
    assert_eq!(a["step_loss"].as_array().unwrap().len(), 469);
    assert_eq!(
        a["step_loss"], b["step_loss"],
        "every step loss, bit for bit"
    );
    assert_eq!(a["per_epoch"], b["per_epoch"]);
    assert_eq!(
        std::fs::read(killed.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap()
    );
}
