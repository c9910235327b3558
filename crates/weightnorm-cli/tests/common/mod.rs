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
