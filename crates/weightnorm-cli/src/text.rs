//! Text from outside (tensor names, paths, library messages) made safe for a terminal: control
//! characters and invisible direction overrides escaped, long names shortened, errors on one
//! line.

use std::fmt::Write;

pub use weightnorm::weightnorm_core::files::{escape, hostile, shown};

/// The command line of a `compare` or `train` run from its `subcommand` and the options stored
/// with it (the global `--threads` among them, wherever it was given), as a shell would take it
/// back: `weightnorm compare --seeds 0,1 --out 'my runs'`.
pub fn command_line(subcommand: &str, argv: &[String]) -> String {
    let quote = |a: &str| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,/:=+@%".contains(c));
        if plain {
            a.to_string()
        } else {
            format!("'{}'", escape(a).replace('\'', "'\\''"))
        }
    };
    std::iter::once("weightnorm".to_string())
        .chain(std::iter::once(quote(subcommand)))
        .chain(argv.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` escaped and, if longer than `max` characters, cut to `max` with the middle replaced by
/// `…`, so that both ends of a long name stay visible.
pub fn shortened(s: &str, max: usize) -> String {
    let e = escape(s);
    let n = e.chars().count();
    if n <= max || max < 5 {
        return e;
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut out: String = e.chars().take(head).collect();
    out.push('…');
    out.extend(e.chars().skip(n - tail));
    out
}

/// An error and its causes on one line, as `main` prints it: each cause not already said by
/// the message before it is appended after `: `, and control characters are escaped, line
/// breaks included (`\n`: a message cannot tell a line break of its prose from one in a file
/// or tensor name it quotes, and the escape shows both faithfully).
pub fn one_line_error(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || said.contains(text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(text);
    }
    shorten_words(&escape(&said))
}

/// The width a word of an error line (a name, a path, a location: any run without spaces) is
/// shortened to, as `inspect` shortens names: both ends kept.
pub const WORD_WIDTH: usize = 80;

/// The most characters an error line keeps; the rest is counted, not shown.
pub const LINE_WIDTH: usize = 2000;

/// `line` with every word longer than [`WORD_WIDTH`] characters shortened (both ends kept)
/// and the whole cut after [`LINE_WIDTH`] characters, saying how many were left out: a
/// 64 KB tensor name or external-data location makes a line one can read.
pub fn shorten_words(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(LINE_WIDTH + 64));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().count() > WORD_WIDTH {
            out.push_str(&shortened(word, WORD_WIDTH));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    let n = out.chars().count();
    if n > LINE_WIDTH {
        let mut cut: String = out.chars().take(LINE_WIDTH).collect();
        let _ = write!(cut, "… ({} more characters)", n - LINE_WIDTH);
        return cut;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let argv: Vec<String> = ["--seeds", "0,1", "--out", "my runs", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = super::command_line("compare", &argv);
        assert!(
            c.ends_with(" --seeds 0,1 --out 'my runs' 'it'\\''s'"),
            "{c}"
        );
        assert!(c.starts_with("weightnorm compare "), "{c}");
    }

    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("a.weight"), "a.weight");
        assert_eq!(
            escape("a\nb\x1b[31mc\u{202e}é"),
            "a\\nb\\u{1b}[31mc\\u{202e}é"
        );
    }

    #[test]
    fn long_names_keep_both_ends() {
        let s = "a".repeat(50) + &"b".repeat(50);
        let t = shortened(&s, 21);
        assert_eq!(t.chars().count(), 21);
        assert!(
            t.starts_with("aaaaaaaaaa…") && t.ends_with("bbbbbbbbbb"),
            "{t}"
        );
        assert_eq!(shortened("short", 21), "short");
    }

    #[test]
    fn long_words_and_lines_are_shortened() {
        let name = "n".repeat(30) + &"x".repeat(70_000) + "tail";
        let line = one_line_error(&anyhow::anyhow!("tensor `{name}` is bad"));
        assert!(line.chars().count() < 200, "{}", line.len());
        assert!(
            line.starts_with("tensor `nnnn") && line.ends_with("tail` is bad"),
            "{line}"
        );
        let many = vec!["word"; 2000].join(" ");
        let line = shorten_words(&many);
        assert!(line.ends_with("more characters)"), "{line}");
        assert!(line.chars().count() < LINE_WIDTH + 40);
        assert_eq!(shorten_words("a b  c"), "a b  c");
    }

    #[test]
    fn errors_and_their_causes_make_one_line() {
        let io = std::io::Error::other("No space left on device");
        let e = anyhow::Error::new(io).context("cannot write x\ny");
        assert_eq!(
            one_line_error(&e),
            "cannot write x\\ny: No space left on device"
        );
        let e = anyhow::anyhow!("read failed: boom").context("read failed: boom");
        assert_eq!(one_line_error(&e), "read failed: boom");
    }
}
