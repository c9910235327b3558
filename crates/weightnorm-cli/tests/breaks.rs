//! The broken promises of the second outside review, each closed: checkpoints as people have
//! them (a training checkpoint refused without `--key` and processed whole, `.pt` outputs,
//! sharded checkpoints, weight-normed ONNX exports), runs that cannot destroy or mix their
//! outputs, damaged or inconsistent `checkpoint.bin` refused, `--threads` resumable, no input
//! that hangs (FIFOs, devices), short error lines and exit 2 for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ok, run};

const BIN: &str = env!("CARGO_BIN_EXE_weightnorm");

fn real(name: &str) -> String {
    format!("{}/tests/fixtures/real/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a command said, on stdout and stderr.
fn said(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(o)
}

/// Runs the binary, which must end within `limit` (it is killed otherwise, and the test fails:
/// an input that blocks the open or is read without end).
fn run_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{args:?} still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Exit 2 with one error line, the last, that contains `says` (a run may have announced its
/// data set before).
fn refused(o: &Output, says: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    assert_eq!(e.trim_end().lines().last(), Some(errors[0]), "{e}");
    assert!(errors[0].contains(says), "expected `{says}` in: {e}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// The tensors of a safetensors file as f32 vectors by name.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (t.shape().to_vec(), v))
        })
        .collect()
}

/// The tensors of any checkpoint the library reads (the state dict at `key`), as f32.
fn values(
    path: &Path,
    key: Option<&str>,
) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let ck = weightnorm::torch::Checkpoint::open(path, key).unwrap();
    ck.tensors
        .iter()
        .map(|t| {
            let v = t.values_f64().unwrap().iter().map(|&x| x as f32).collect();
            (t.name.clone(), (t.shape.clone(), v))
        })
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs() / x.abs().max(y.abs()).max(1e-30);
        assert!(d < 1e-6 || (x - y).abs() < 1e-12, "{what}: {x} vs {y}");
    }
}

// ---- 1. whole .pt files -------------------------------------------------------------------

#[test]
fn a_training_checkpoint_is_listed_and_refused_without_key() {
    let o = run(&["fuse", &real("hifigan_train.pt"), "-o", "/nonexistent/x.pt"]);
    refused(&o, "--key generator");
    for entry in ["generator", "discriminator", "optim_g", "steps"] {
        assert!(stderr(&o).contains(entry), "{}", stderr(&o));
    }
}

#[test]
fn a_training_checkpoint_is_fused_whole_into_pt_and_its_state_dict_matches_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("fused.pt");
    let o = ok(&[
        "fuse",
        &real("hifigan_train.pt"),
        "--key",
        "generator",
        "-o",
        s(&whole),
    ]);
    assert!(
        said(&o).contains("other entries carried over"),
        "{}",
        said(&o)
    );
    // The state dict fused in its place: read back with --key, no pair is left and its
    // weights are PyTorch's remove_weight_norm's.
    let o = ok(&["inspect", s(&whole), "--key", "generator", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["pairs"].as_array().map(Vec::len), Some(0), "{doc}");
    let ours = values(&whole, Some("generator"));
    let theirs = tensors(Path::new(&real("hifigan_generator_fused.safetensors")));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, (shape, v)) in &theirs {
        assert_eq!(&ours[name].0, shape, "{name}");
        assert_close(&ours[name].1, v, name);
    }
    // A safetensors output cannot hold the optimizer and the step counter: refused by name,
    // unless only the state dict is asked for.
    let st = tmp.path().join("whole.safetensors");
    let o = run(&[
        "fuse",
        &real("hifigan_train.pt"),
        "--key",
        "generator",
        "-o",
        s(&st),
    ]);
    refused(&o, "--state-dict-only");
    assert!(!st.exists());
    ok(&[
        "fuse",
        &real("hifigan_train.pt"),
        "--key",
        "generator",
        "--state-dict-only",
        "-o",
        s(&st),
    ]);
    assert_eq!(tensors(&st).len(), theirs.len());
}

// ---- 2. sharded checkpoints -----------------------------------------------------------------

#[test]
fn a_sharded_checkpoint_is_fused_into_shards_like_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, index) in [
        ("sharded_st", "model.safetensors.index.json"),
        ("sharded_bin", "pytorch_model.bin.index.json"),
    ] {
        let input = real(&format!("{dir}/{index}"));
        let o = ok(&["inspect", &input, "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let pairs = doc["pairs"].as_array().unwrap().len();
        assert!(pairs > 2, "{doc}");
        let out = tmp.path().join(dir);
        let out_index = out.join(index);
        std::fs::create_dir(&out).unwrap();
        ok(&["fuse", &input, "-o", s(&out_index)]);
        let shards = std::fs::read_dir(&out).unwrap().count() - 1;
        assert_eq!(shards, 7, "{dir}: one output shard per input shard");
        // One file where the user asks: the same tensors.
        let one = tmp.path().join(format!("{dir}.safetensors"));
        ok(&["fuse", &input, "-o", s(&one)]);
        // The shards read back as one: the same tensors.
        assert_eq!(tensors(&one), values(&out_index, None), "{dir}");
        // Converting to the scheme the pairs are in says so.
        let copy = tmp.path().join(format!("{dir}-copy.safetensors"));
        let o = ok(&[
            "convert",
            &input,
            "--scheme",
            "parametrizations",
            "-o",
            s(&copy),
        ]);
        assert!(
            said(&o).contains(
                "nothing to rename: the 20 pairs are already in the parametrizations scheme"
            ),
            "{}",
            said(&o)
        );
        let o = ok(&["inspect", s(&out_index), "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["pairs"].as_array().map(Vec::len), Some(0), "{doc}");
    }
}

// ---- 3. weight-normed ONNX exports ----------------------------------------------------------

#[test]
fn weight_normed_onnx_exports_are_inspected_folded_and_canonicalized() {
    let tmp = tempfile::tempdir().unwrap();
    // The subgraphs each export holds (the manifest's count: dynamo's optimizer folds them
    // itself; with optimize=False they stay, once mixed with CastLike).
    for (name, pairs) in [
        ("wn_param_ts", 3),
        ("wn_legacy_ts", 3),
        ("wn_param_dynamo", 0),
        ("wn_param_dynamo_raw", 3),
        ("wn_param_dynamo_mixed", 1),
    ] {
        let model = real(&format!("{name}.onnx"));
        let o = ok(&["inspect", &model, "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            doc["pairs"].as_array().unwrap().len(),
            pairs,
            "{name}: {doc}"
        );
        let canon = tmp.path().join(format!("{name}.canonical.onnx"));
        // Canonicalize takes the export as it is (folding first).
        let o = ok(&["canonicalize", &model, "-o", s(&canon)]);
        if pairs == 0 {
            continue;
        }
        assert!(said(&o).contains("weight-norm subgraph"), "{}", said(&o));
        let fused = tmp.path().join(format!("{name}.fused.onnx"));
        ok(&["fuse", &model, "-o", s(&fused)]);
        let o = ok(&["inspect", s(&fused), "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["pairs"].as_array().map(Vec::len), Some(0), "{name}");
        // A fused output must be an ONNX file.
        let o = run(&["fuse", &model, "-o", s(&tmp.path().join("x.safetensors"))]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    }
}

// ---- 4. runs: claimed atomically, cleaned up exactly ----------------------------------------

fn digits_run(out: &Path, epochs: &str, batch: &str) -> Vec<String> {
    [
        "train",
        "--dataset",
        "digits",
        "--epochs",
        epochs,
        "--batch-size",
        batch,
        "--quiet",
        "--out",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

#[test]
fn two_runs_started_together_on_one_out_do_not_both_write_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = digits_run(&out, "2", "32");
    let spawn = || {
        Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "{} | {}", stderr(&a), stderr(&b));
    let loser = if a.status.code() == Some(2) { &a } else { &b };
    let e = stderr(loser);
    assert!(e.contains("in use") || e.contains("is not empty"), "{e}");
    // The winner's run is whole: every step logged once.
    let steps = std::fs::read_to_string(out.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 2 * 1437usize.div_ceil(32));
}

#[test]
fn outs_that_are_not_directories_and_absurd_threads_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("dangling");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
    for (out, says) in [
        (
            Path::new("/dev/null"),
            "is a character device, not a directory",
        ),
        (link.as_path(), "cannot be followed"),
    ] {
        let o = run_within(
            &digits_run(out, "1", "64")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            Duration::from_secs(60),
        );
        refused(&o, says);
    }
    // Refused by the check that runs before any thread is started (its message), not by a
    // failed start after spawning thousands.
    let o = run(&["--threads", "100000", "inspect", &real("hifigan_train.pt")]);
    refused(&o, "--threads 100000 is more than the 1024 threads");
}

// ---- 5. checkpoint.bin: checksums, validated state, --threads --------------------------------

/// A finished digits run of one epoch (23 steps of 64) in `out`, started with `extra` options.
fn finished_run(out: &Path, extra: &[&str]) {
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    args.extend(digits_run(out, "1", "64"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
}

#[test]
fn every_flipped_bit_of_a_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    finished_run(&out, &[]);
    let file = out.join("checkpoint.bin");
    let good = std::fs::read(&file).unwrap();
    // The magic, every length and checksum field, and positions spread over the sections.
    let mut at: Vec<usize> = vec![0, 7];
    let mut pos = 8;
    for _ in 0..3 {
        let len = u64::from_le_bytes(good[pos..pos + 8].try_into().unwrap()) as usize;
        at.extend([
            pos,
            pos + 7,
            pos + 8,
            pos + 11,
            pos + 12,
            pos + 12 + len / 2,
        ]);
        at.push(pos + 12 + len - 1);
        pos += 12 + len;
    }
    assert_eq!(pos, good.len(), "three sections and nothing after");
    at.extend((0..13).map(|k| 8 + k * (good.len() - 9) / 12));
    at.sort_unstable();
    at.dedup();
    assert!(at.len() >= 30, "{} positions", at.len());
    for (n, &i) in at.iter().enumerate() {
        let mut bad = good.clone();
        bad[i] ^= 1 << (n % 8);
        std::fs::write(&file, &bad).unwrap();
        let o = run(&["train", "--resume", s(&out)]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "byte {i}: {e}");
        assert!(
            e.contains("is not a whole weightnorm checkpoint"),
            "byte {i}: {e}"
        );
    }
    std::fs::write(&file, &good).unwrap();
    ok(&["train", "--resume", s(&out)]);
}

/// Rewrites the state section of the checkpoint in `out` with `edit`, checksums included.
fn edit_state(out: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let file = out.join("checkpoint.bin");
    let bytes = std::fs::read(&file).unwrap();
    let mut pos = 8;
    for _ in 0..2 {
        let len = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap()) as usize;
        pos += 12 + len;
    }
    let mut state: serde_json::Value = serde_json::from_slice(&bytes[pos + 12..]).unwrap();
    edit(&mut state);
    let state = serde_json::to_vec(&state).unwrap();
    let mut out_bytes = bytes[..pos].to_vec();
    let len = state.len() as u64;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&state);
    out_bytes.extend_from_slice(&len.to_le_bytes());
    out_bytes.extend_from_slice(&h.finalize().to_le_bytes());
    out_bytes.extend_from_slice(&state);
    std::fs::write(&file, out_bytes).unwrap();
}

#[test]
fn an_inconsistent_checkpoint_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("run");
    finished_run(&base, &[]);
    let copy = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(&base).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        dir
    };
    // The round trip of the editor itself resumes.
    let same = copy("same");
    edit_state(&same, |_| {});
    ok(&["train", "--resume", s(&same)]);
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: [(&str, Edit, &str); 4] = [
        (
            "step-beyond-epoch",
            Box::new(|v| v["step_in_epoch"] = 500.into()),
            "does not fit its run",
        ),
        (
            "epoch-beyond-run",
            Box::new(|v| v["epoch"] = 3.into()),
            "beyond the run's 1 epochs",
        ),
        (
            "batch-size-edited",
            Box::new(|v| {
                let argv = v["argv"].as_array_mut().unwrap();
                let i = argv.iter().position(|a| a == "--batch-size").unwrap();
                argv[i + 1] = "32".into();
            }),
            "does not fit its run",
        ),
        (
            "a-step-dropped",
            Box::new(|v| {
                v["steps"].as_array_mut().unwrap().pop();
            }),
            "records 22 steps",
        ),
    ];
    for (name, edit, says) in cases {
        let dir = copy(name);
        edit_state(&dir, edit);
        let o = run(&["train", "--resume", s(&dir)]);
        refused(&o, says);
    }
}

#[test]
fn runs_started_with_threads_resume_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    // Before and after the subcommand.
    let before = tmp.path().join("before");
    finished_run(&before, &["--threads", "1"]);
    ok(&["train", "--resume", s(&before)]);
    ok(&["--threads", "1", "train", "--resume", s(&before)]);
    let o = run(&["--threads", "2", "train", "--resume", s(&before)]);
    refused(&o, "started with --threads 1");
    let after = tmp.path().join("after");
    let mut args = digits_run(&after, "1", "64");
    args.extend(["--threads".to_string(), "1".to_string()]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&["train", "--resume", s(&after)]);
    // A comparison too.
    let cmp = tmp.path().join("cmp");
    ok(&[
        "--threads",
        "1",
        "compare",
        "--dataset",
        "digits",
        "--params",
        "plain",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--quiet",
        "--out",
        s(&cmp),
    ]);
    ok(&["compare", "--resume", s(&cmp)]);
    // The report's command line is the one given, runnable again.
    let report = std::fs::read_to_string(cmp.join("report.md")).unwrap();
    assert!(
        report.contains("weightnorm compare --threads 1 --dataset digits --params plain"),
        "{report}"
    );
}

// ---- 6. inputs that are not regular files ---------------------------------------------------

#[test]
fn fifos_and_devices_as_inputs_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fifo = t.join("fifo");
    mkfifo(&fifo);
    let limit = Duration::from_secs(60);
    // A trained model and its architecture file, for canonicalize.
    let run_dir = t.join("run");
    finished_run(&run_dir, &[]);
    let model = run_dir.join("model.safetensors");
    let arch = run_dir.join("arch.json");
    let out = t.join("c.safetensors");
    for (args, says) in [
        (vec!["inspect", s(&fifo)], "FIFO"),
        (vec!["fuse", s(&fifo), "-o", s(&out)], "FIFO"),
        (vec!["inspect", "/dev/zero"], "character device"),
        (
            vec!["canonicalize", s(&model), "--arch", s(&fifo), "-o", s(&out)],
            "FIFO",
        ),
        (
            vec![
                "canonicalize",
                s(&model),
                "--arch",
                s(&arch),
                "--inputs",
                s(&fifo),
                "-o",
                s(&out),
            ],
            "FIFO",
        ),
    ] {
        let o = run_within(&args, limit);
        refused(&o, says);
    }
    // Fashion-MNIST files that are FIFOs.
    let data = t.join("data");
    std::fs::create_dir(&data).unwrap();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        mkfifo(&data.join(f));
    }
    let o = run_within(
        &[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data",
            s(&data),
            "--out",
            s(&t.join("fashion")),
        ],
        limit,
    );
    refused(&o, "FIFO");
    // A checkpoint that is a FIFO, or a link to /dev/zero.
    for (name, make) in [
        (
            "fifo-ckpt",
            Box::new(|p: &Path| mkfifo(p)) as Box<dyn Fn(&Path)>,
        ),
        (
            "zero-ckpt",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
        ),
    ] {
        let dir = t.join(name);
        std::fs::create_dir(&dir).unwrap();
        make(&dir.join("checkpoint.bin"));
        let o = run_within(&["train", "--resume", s(&dir)], limit);
        refused(&o, "not a regular file");
    }
}

// ---- 7. one short line ----------------------------------------------------------------------

#[test]
fn an_error_about_a_huge_name_is_one_short_line() {
    let tmp = tempfile::tempdir().unwrap();
    // A pair whose g and v disagree, named with 70,000 characters: the error names it.
    let name = "w".repeat(70_000);
    let header = format!(
        r#"{{"{name}_g":{{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}},"{name}_v":{{"dtype":"F32","shape":[3,1],"data_offsets":[8,20]}}}}"#
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0x3f; 20]);
    let path = tmp.path().join("long.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let o = run(&["fuse", s(&path), "-o", s(&tmp.path().join("o.safetensors"))]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}", &e[..e.len().min(300)]);
    assert_eq!(e.trim_end().lines().count(), 1);
    assert!(e.len() < 2500, "{} bytes", e.len());
    assert!(e.contains("wwww…www"), "{e}");
}
