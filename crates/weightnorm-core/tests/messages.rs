//! What the libraries say to users never names a command-line flag or command: their messages
//! are shown by the CLI, the Python package and users' own programs alike. This scans every
//! string literal in the sources of `weightnorm-core` and `weightnorm` (comments and doc
//! comments left out) for a flag (`--` and a letter) or the `weightnorm` command.

use std::path::{Path, PathBuf};

/// The string literals of a Rust source, outside comments (plain and raw strings; escapes are
/// kept as written, which is enough to find the words looked for).
fn literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let (mut i, mut out) = (0, Vec::new());
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'\'' => {
                // A char literal ('"', '\\') or a lifetime: skip a char literal whole.
                if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    i += 1;
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let start = j + 1;
                let mut k = start;
                while k < b.len() && !b[k..].starts_with(&close) {
                    k += 1;
                }
                out.push(String::from_utf8_lossy(&b[start..k.min(b.len())]).into_owned());
                i = k + close.len();
            }
            b'"' => {
                let start = i + 1;
                let mut k = start;
                while k < b.len() && b[k] != b'"' {
                    k += if b[k] == b'\\' { 2 } else { 1 };
                }
                out.push(String::from_utf8_lossy(&b[start..k.min(b.len())]).into_owned());
                i = k + 1;
            }
            _ => i += 1,
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `--` followed by a letter: a long flag.
fn names_a_flag(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'-' && w[1] == b'-' && w[2].is_ascii_alphabetic())
}

/// The command `weightnorm` followed by a space (a subcommand or an argument).
fn names_the_command(s: &str) -> bool {
    s.match_indices("weightnorm ")
        .any(|(at, _)| at == 0 || !matches!(s.as_bytes()[at - 1], b'_' | b'-' | b'/' | b'.' | b':'))
}

#[test]
fn the_scanner_finds_literals_and_skips_comments() {
    let src = "// \"--flag in a comment\"\n/// weightnorm fuse in a doc\nlet a = \"plain\";\nlet b = r#\"raw \"quoted\" --raw\"#; let c = '\"'; let d = \"esc \\\" --esc\";";
    assert_eq!(
        literals(src),
        ["plain", "raw \"quoted\" --raw", "esc \\\" --esc"]
    );
    assert!(names_a_flag("use --pcr-transport reset") && !names_a_flag("a -- b"));
    assert!(names_the_command("see `weightnorm canonicalize --help`"));
    assert!(
        !names_the_command("weightnorm_core::kernels")
            && !names_the_command("the weightnorm.form key")
    );
}

#[test]
fn no_library_message_names_a_flag_or_the_command() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("../weightnorm/src"), &mut files);
    let mut seen = 0;
    let mut bad = Vec::new();
    for f in &files {
        for lit in literals(&std::fs::read_to_string(f).unwrap()) {
            seen += 1;
            if names_a_flag(&lit) || names_the_command(&lit) {
                bad.push(format!("{}: {lit:?}", f.display()));
            }
        }
    }
    // Both crates' sources were read: hundreds of messages.
    assert!(
        files.len() > 40 && seen > 1000,
        "{} files, {seen} literals",
        files.len()
    );
    assert!(
        bad.is_empty(),
        "messages naming the CLI:\n{}",
        bad.join("\n")
    );
}
