//! What the CLI's integration tests share: running the built binary.

use std::process::{Command, Output};

/// Runs the `weightnorm` binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weightnorm"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs the binary and checks that it succeeded.
pub fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A JSON file, parsed.
#[allow(dead_code)]
pub fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The number of lines of a file (0 while it does not exist).
#[allow(dead_code)]
pub fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// `args` followed by `out`, as owned strings.
#[allow(dead_code)]
pub fn with_out(args: &[&str], out: &std::path::Path) -> Vec<String> {
    args.iter()
        .map(|s| s.to_string())
        .chain([out.to_str().unwrap().to_string()])
        .collect()
}

/// Starts the binary with `args`, waits until the step log `log` holds `steps` lines (the run
/// must not end first, and must get there within `limit`), and kills it (SIGKILL: no
/// handler runs, as after a crash or a power cut).
#[allow(dead_code)]
pub fn kill_at(args: &[String], log: &std::path::Path, steps: usize, limit: std::time::Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weightnorm"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while lines(log) < steps {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be stopped"
        );
        assert!(t0.elapsed() < limit, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A run to its end and the same run killed and resumed, side by side (see [`whole_and_resumed`]).
#[allow(dead_code)]
pub struct Resumed {
    /// Holds both runs' directories.
    _tmp: tempfile::TempDir,
    /// The run that went to its end.
    pub whole: std::path::PathBuf,
    /// The run that was killed, then resumed.
    pub killed: std::path::PathBuf,
    /// The output of the resume.
    pub resume: Output,
}

/// Runs `args(dir)` (a command and its options, ending with `--out dir`) to its end in one
/// directory; runs it again in another, killed with [`kill_at`] once the step log `log` (a path
/// in the run's directory) holds `steps` lines; calls `killed_state` on that directory; then
/// resumes it with `<command> --resume <dir> --quiet`.
#[allow(dead_code)]
pub fn whole_and_resumed(
    args: impl Fn(&std::path::Path) -> Vec<String>,
    log: &str,
    steps: usize,
    limit: std::time::Duration,
    killed_state: impl FnOnce(&std::path::Path),
) -> Resumed {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    ok(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    let killed = tmp.path().join("killed");
    let killed_args = args(&killed);
    kill_at(&killed_args, &killed.join(log), steps, limit);
    killed_state(&killed);
    let resume = ok(&[
        killed_args[0].as_str(),
        "--resume",
        killed.to_str().unwrap(),
        "--quiet",
    ]);
    Resumed {
        _tmp: tmp,
        whole,
        killed,
        resume,
    }
}
