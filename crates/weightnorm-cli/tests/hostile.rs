//! Hostile files and faulty disks against the binary: outputs that are inputs under other
//! names, symbolic links planted at temporary names, files appearing during a write, failed
//! writes, full disks, absurd names and sizes, degenerate data sets. Every hostile file is made
//! here.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use safetensors::Dtype;
use weightnorm::torch::{TensorEntry, write_safetensors};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weightnorm"));
    c.env("WEIGHTNORM_NO_FSYNC", "1");
    c
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn canonical_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../weightnorm-core/tests/fixtures/canonical")
        .join(name)
}

/// Waits for `child` at most `limit`, reading its output meanwhile, and kills it then: a hang
/// fails the test instead of blocking it.
fn wait_at_most(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(limit) {
        Ok(o) => o,
        Err(_) => {
            // SAFETY: killing our own child, which has not been waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what}: still running after {limit:?}");
        }
    }
}

fn run(args: &[&str]) -> Output {
    let child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_at_most(child, Duration::from_secs(120), &format!("{args:?}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed with `code`, one line on stderr holding `fragment`, no panic, and no
/// raw control character.
fn refused(o: &Output, code: i32, fragment: &str) {
    assert_eq!(stderr(o).lines().count(), 1, "not one line: {}", stderr(o));
    refused_after_progress(o, code, fragment);
}

/// As [`refused`], after lines of progress: the error is the last line, and the only one.
fn refused_after_progress(o: &Output, code: i32, fragment: &str) {
    let all = stderr(o);
    let err = all.lines().last().unwrap_or_default().to_string();
    assert_eq!(o.status.code(), Some(code), "{all}");
    assert!(err.starts_with("error: "), "{all}");
    assert_eq!(
        all.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{all}"
    );
    assert!(err.contains(fragment), "`{fragment}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !all.lines().any(|l| l.chars().any(char::is_control)),
        "a raw control character: {all:?}"
    );
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A copy of the `mlp_residual` fixture (checkpoint and architecture) in `dir`.
fn canonical_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let (ck, arch) = (dir.join("model.safetensors"), dir.join("arch.json"));
    std::fs::copy(canonical_fixture("mlp_residual.safetensors"), &ck).unwrap();
    std::fs::copy(canonical_fixture("mlp_residual.arch.json"), &arch).unwrap();
    (ck, arch)
}

#[test]
fn canonicalize_never_overwrites_an_input_or_an_existing_report() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (ck, arch) = canonical_inputs(d);
    let before = (std::fs::read(&ck).unwrap(), std::fs::read(&arch).unwrap());
    std::fs::hard_link(&ck, d.join("hard.safetensors")).unwrap();
    std::os::unix::fs::symlink(&arch, d.join("soft.json")).unwrap();
    let out = d.join("out.safetensors");
    let dotted = |name: &str| format!("{}/./{name}", s(d));
    let canon = |output: &str, report: &str, force: bool| {
        let mut a = vec!["canonicalize", s(&ck), "--arch", s(&arch), "-o", output];
        a.extend(["--report", report]);
        if force {
            a.push("--force");
        }
        run(&a)
    };
    for force in [false, true] {
        // The report is the checkpoint, the architecture or the output, spelled otherwise or
        // reached through a link.
        for report in [
            dotted("model.safetensors"),
            s(&d.join("hard.safetensors")).to_string(),
            dotted("arch.json"),
            s(&d.join("soft.json")).to_string(),
        ] {
            refused(&canon(s(&out), &report, force), 2, "is the input");
        }
        refused(
            &canon(s(&out), &dotted("out.safetensors"), force),
            2,
            "are the same file",
        );
        // The output is the checkpoint through a hard link.
        refused(
            &canon(s(&d.join("hard.safetensors")), s(&d.join("r.json")), force),
            2,
            "is the input",
        );
    }
    assert_eq!(std::fs::read(&ck).unwrap(), before.0);
    assert_eq!(std::fs::read(&arch).unwrap(), before.1);
    assert!(!out.exists());
    // An existing report is kept without --force, and so is the output then.
    let report = d.join("r.json");
    std::fs::write(&report, b"mine").unwrap();
    refused(
        &canon(s(&out), s(&report), false),
        2,
        "exists: pass --force",
    );
    assert_eq!(std::fs::read(&report).unwrap(), b"mine");
    assert!(!out.exists());
    let o = canon(s(&out), s(&report), true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(&report)
            .unwrap()
            .contains("global_gain")
    );
    assert_eq!(
        names(d),
        [
            "arch.json",
            "hard.safetensors",
            "model.safetensors",
            "out.safetensors",
            "r.json",
            "soft.json"
        ]
    );
}

#[test]
fn every_command_refuses_an_output_that_is_an_input_even_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = d.join("in.safetensors");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../weightnorm/tests/fixtures/interop/f32_legacy.safetensors"),
        &input,
    )
    .unwrap();
    let before = std::fs::read(&input).unwrap();
    std::fs::hard_link(&input, d.join("hard")).unwrap();
    std::os::unix::fs::symlink(&input, d.join("soft")).unwrap();
    // The same directory again, as another mount would show it.
    std::os::unix::fs::symlink(d, d.join("again")).unwrap();
    for output in [
        format!("{}/./in.safetensors", s(d)),
        s(&d.join("hard")).to_string(),
        s(&d.join("soft")).to_string(),
        s(&d.join("again/in.safetensors")).to_string(),
    ] {
        for cmd in [
            vec!["fuse"],
            vec!["split"],
            vec!["convert", "--scheme", "parametrizations"],
        ] {
            let mut a = cmd.clone();
            a.extend([s(&input), "-o", &output, "--force"]);
            refused(&run(&a), 2, "is the input");
        }
    }
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

/// The process ids the next few processes are likely to get (Linux hands them out in order).
fn next_pids() -> std::ops::Range<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(std::process::id());
    last + 1..last + 400
}

#[test]
fn symbolic_links_planted_at_temporary_names_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = d.join("in.safetensors");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../weightnorm/tests/fixtures/interop/f32_legacy.safetensors"),
        &input,
    )
    .unwrap();
    let before = std::fs::read(&input).unwrap();
    let elsewhere = d.join("elsewhere");
    std::fs::write(&elsewhere, b"not yours").unwrap();
    // Links at every name a predictable scheme would give the temporary of `out.safetensors`
    // (the process id in it), to the input and to an unrelated file.
    let mut planted = 0;
    for pid in next_pids() {
        for name in [
            format!(".partial-{pid}-out.safetensors"),
            format!(".out.safetensors.partial-{pid}"),
        ] {
            let target = if pid % 2 == 0 { &input } else { &elsewhere };
            std::os::unix::fs::symlink(target, d.join(name)).unwrap();
            planted += 1;
        }
    }
    let out = d.join("out.safetensors");
    let o = run(&["fuse", s(&input), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not yours");
    assert!(
        !std::fs::symlink_metadata(&out)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Nothing else was left: the input, the decoy, the output and the links.
    assert_eq!(names(d).len(), 3 + planted, "{:?}", names(d));
}

/// A checkpoint of one `[rows, 1000]` f32 weight of ones (4 KB a row).
fn ones_checkpoint(path: &Path, rows: usize) {
    let bytes: Vec<u8> = std::iter::repeat_n(1.0f32.to_le_bytes(), rows * 1000)
        .flatten()
        .collect();
    let t = TensorEntry::from_bytes("layer.weight", Dtype::F32, vec![rows, 1000], bytes).unwrap();
    write_safetensors(path, &[t], None).unwrap();
}

#[test]
fn a_file_that_appears_at_the_output_during_the_write_is_kept_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = d.join("in.safetensors");
    // Up to 256 MB of output: catch the write while it runs, stop the process there, and
    // create the output under it.
    for rows in [8_000, 32_000, 64_000] {
        ones_checkpoint(&input, rows);
        let out = d.join("out.safetensors");
        let mut child = Command::new(env!("CARGO_BIN_EXE_weightnorm"))
            .args(["split", s(&input), "-o", s(&out)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let caught = loop {
            if names(d).iter().any(|n| n.starts_with(".weightnorm-")) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
        };
        if caught {
            std::fs::write(&out, b"theirs").unwrap();
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        let o = wait_at_most(child, Duration::from_secs(120), "split");
        if !caught {
            std::fs::remove_file(&out).unwrap();
            continue;
        }
        refused(&o, 2, "exists: pass --force");
        assert_eq!(std::fs::read(&out).unwrap(), b"theirs");
        assert_eq!(names(d), ["in.safetensors", "out.safetensors"]);
        return;
    }
    panic!("the write was never caught while it ran");
}

#[test]
fn canonicalize_writes_nothing_when_the_report_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (ck, arch) = canonical_inputs(d);
    let out = d.join("out.safetensors");
    // The report's directory is missing, or is a file.
    std::fs::write(d.join("file"), b"").unwrap();
    for report in [d.join("missing/r.json"), d.join("file/r.json")] {
        let o = run(&[
            "canonicalize",
            s(&ck),
            "--arch",
            s(&arch),
            "-o",
            s(&out),
            "--report",
            s(&report),
        ]);
        refused(&o, 1, "cannot write");
        assert!(!out.exists(), "{report:?}");
        assert_eq!(names(d), ["arch.json", "file", "model.safetensors"]);
    }
}

/// Runs `train` on digits into `out`, with the size of any file it writes limited to `limit`
/// bytes (as a full disk would stop it).
fn train_with_file_size_limit(out: &Path, limit: u64) -> Output {
    let mut c = bin();
    c.args(["train", "--dataset", "digits", "--epochs", "1", "--quiet"])
        .args(["--out", s(out)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    wait_at_most(c.spawn().unwrap(), Duration::from_secs(120), "train")
}

#[test]
fn train_leaves_nothing_when_a_write_fails() {
    let tmp = tempfile::tempdir().unwrap();
    // 16 KB: the metrics and the architecture fit, the model does not.
    let out = tmp.path().join("run");
    let o = train_with_file_size_limit(&out, 16 << 10);
    refused_after_progress(&o, 1, "cannot write");
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    assert!(!out.exists(), "{:?}", names(&out));
    assert!(names(tmp.path()).is_empty());
    // An existing run's files are kept whole: a second run into it is refused (without
    // --force, which would replace them) before anything is written.
    let ok = train_with_file_size_limit(&out, 1 << 30);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let before: Vec<Vec<u8>> = names(&out)
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    assert_eq!(
        names(&out),
        [
            "arch.json",
            "checkpoint.bin",
            "curves.png",
            "metrics.json",
            "model.safetensors",
            "steps.jsonl"
        ]
    );
    let o = train_with_file_size_limit(&out, 16 << 10);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
    let after: Vec<Vec<u8>> = names(&out)
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn train_on_a_full_disk_leaves_nothing() {
    // A real full disk: a 96 KB tmpfs, where mounting is permitted (root); skipped elsewhere.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!(
            "cannot mount a tmpfs here: the full disk is simulated by the file size limit only"
        );
        return;
    }
    let out = mnt.join("run");
    let o = run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        s(&out),
    ]);
    let left = names(&mnt);
    let _ = Command::new("umount").arg(&mnt).status();
    refused_after_progress(&o, 1, "No space left on device");
    assert!(left.is_empty(), "{left:?}");
}

/// A `.safetensors` file in `dir` holding one small tensor under each of `names`.
fn named_tensors(path: &Path, names: &[String]) {
    let tensors: Vec<TensorEntry> = names
        .iter()
        .map(|n| {
            TensorEntry::from_bytes(n.clone(), Dtype::F32, vec![1], vec![0, 0, 128, 63]).unwrap()
        })
        .collect();
    write_safetensors(path, &tensors, None).unwrap();
}

#[test]
fn long_names_and_control_characters_never_reach_the_terminal_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("names.safetensors");
    let long = "x".repeat(200_000);
    let hostile = [
        long.clone(),
        "evil\n  forged.weight  F32  [1]".to_string(),
        "\x1b[2J\x1b[31mred\x07.weight".to_string(),
        "rtl\u{202e}thgiew.".to_string(),
        "del\u{7f}\u{9b}31m".to_string(),
    ];
    named_tensors(&ck, &hostile);
    let o = run(&["inspect", s(&ck)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    for line in text.lines() {
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.chars().count() < 200, "a line of {} chars", line.len());
    }
    assert!(!text.contains('\u{202e}'));
    assert!(
        text.contains("\\u{1b}[2J\\u{1b}[31mred\\u{7}.weight"),
        "{text}"
    );
    assert!(text.contains("evil\\n  forged.weight"), "{text}");
    assert_eq!(text.lines().count(), 1 + hostile.len(), "{text}");
    // The JSON keeps every name whole, escaped.
    let o = run(&["inspect", s(&ck), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let raw = String::from_utf8(o.stdout).unwrap();
    assert!(
        !raw.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters"
    );
    assert!(!raw.contains('\u{202e}'));
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mut got: Vec<String> = doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let mut want = hostile.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Paths with control characters in errors: escaped, one line.
    let odd = tmp.path().join("a\nb\x1b[31m.safetensors");
    refused(
        &run(&["inspect", s(&odd)]),
        2,
        "a\\nb\\u{1b}[31m.safetensors",
    );
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../weightnorm/tests/fixtures/interop/f32_legacy.safetensors");
    refused(
        &run(&["fuse", s(&legacy), "-o", s(&tmp.path().join("no\ndir/x"))]),
        1,
        "no\\ndir/x: No such file or directory",
    );
}

#[test]
fn absurd_sample_counts_and_shapes_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, arch) = canonical_inputs(tmp.path());
    let out = tmp.path().join("out.safetensors");
    for samples in [
        "0",
        "18446744073709551615",
        "9223372036854775807",
        "100000000",
        "65537",
    ] {
        let o = run(&[
            "canonicalize",
            s(&ck),
            "--arch",
            s(&arch),
            "-o",
            s(&out),
            "--samples",
            samples,
        ]);
        refused(&o, 2, "--samples must be 1 to 65536");
        assert!(!out.exists());
    }
    refused(&run(&["op", "--shape", "0"]), 2, "zero size");
    refused(&run(&["op", "--shape", "4,0,3"]), 2, "zero size");
    refused(
        &run(&["op", "--shape", "4294967296,4294967296"]),
        2,
        "more than 268435456 elements",
    );
    refused(
        &run(&["op", "--shape", "100000,100000"]),
        2,
        "more than 268435456 elements",
    );
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// IDX bytes: unsigned bytes with the given sizes, the data filled with `fill`.
fn idx(sizes: &[u32], fill: u8) -> Vec<u8> {
    let mut b = vec![0, 0, 8, sizes.len() as u8];
    for s in sizes {
        b.extend(s.to_be_bytes());
    }
    let n: usize = sizes.iter().map(|&s| s as usize).product();
    b.extend(std::iter::repeat_n(fill, n));
    b
}

/// An MNIST-layout directory: `(images, labels)` for training and test, as raw files.
fn mnist_dir(dir: &Path, files: [Vec<u8>; 4]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    .iter()
    .zip(files)
    {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn degenerate_data_sets_are_refused_in_one_line_and_never_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let set = |n_train: u32, n_labels: u32, h: u32, w: u32, label: u8| {
        [
            gz(&idx(&[n_train, h, w], 7)),
            gz(&idx(&[n_labels], label)),
            gz(&idx(&[2, h, w], 9)),
            gz(&idx(&[2], 1)),
        ]
    };
    let cases: Vec<(&str, [Vec<u8>; 4], &str, &str)> = vec![
        (
            "zero-size files",
            [Vec::new(), Vec::new(), Vec::new(), Vec::new()],
            "mlp",
            "train-images-idx3-ubyte.gz",
        ),
        (
            "no training images",
            set(0, 0, 28, 28, 1),
            "mlp",
            "the training split has no images",
        ),
        (
            "zero-pixel images",
            set(4, 4, 0, 28, 1),
            "mlp",
            "they need at least one",
        ),
        (
            "more labels than images",
            set(4, 5, 28, 28, 1),
            "mlp",
            "images and labels disagree",
        ),
        (
            "a label out of range",
            set(4, 4, 28, 28, 10),
            "mlp",
            "label 10 is not a class 0..9",
        ),
        (
            "1x1 images for the CNN",
            set(4, 4, 1, 1, 1),
            "cnn",
            "the CNN needs images of at least 4x4 pixels",
        ),
        (
            "6x6 images for the CNN",
            set(4, 4, 6, 6, 1),
            "cnn",
            "the CNN needs images of at least 4x4 pixels",
        ),
    ];
    for (what, files, model, fragment) in cases {
        let data = tmp.path().join(what.replace(' ', "_"));
        mnist_dir(&data, files);
        let out = tmp.path().join("out");
        for cmd in ["train", "compare"] {
            let o = run(&[
                cmd,
                "--dataset",
                "fashion-mnist",
                "--data",
                s(&data),
                "--model",
                model,
                "--epochs",
                "1",
                "--quiet",
                "--out",
                s(&out),
            ]);
            refused(&o, 2, fragment);
            assert!(!out.exists(), "{what}: {cmd} wrote something");
        }
    }
    // Constant images, one image per split, 1x1 pixels: trains (MLP), plots and ends.
    let data = tmp.path().join("tiny");
    mnist_dir(
        &data,
        [
            gz(&idx(&[1, 1, 1], 0)),
            gz(&idx(&[1], 3)),
            gz(&idx(&[1, 1, 1], 0)),
            gz(&idx(&[1], 3)),
        ],
    );
    let out = tmp.path().join("tiny-run");
    let o = run(&[
        "compare",
        "--dataset",
        "fashion-mnist",
        "--data",
        s(&data),
        "--params",
        "plain,wn",
        "--seeds",
        "0,1",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in [
        "loss.png",
        "test.png",
        "loss_time.png",
        "step_time.png",
        "plain/seed-0/curves.png",
        "wn/seed-1/curves.png",
    ] {
        let png = std::fs::read(out.join(f)).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{f}");
    }
}
