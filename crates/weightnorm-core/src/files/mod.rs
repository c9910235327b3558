//! Checkpoint surgery on files, as the command line and the Python package do it: the input
//! read (memory-mapped), the output written atomically through [`Outputs`], never over an input,
//! and nothing left behind when anything fails.
//!
//! | function | does |
//! |---|---|
//! | [`fuse_file`] | every weight-norm pair of a checkpoint fused into its weight |
//! | [`split_file`] | the selected weights split into weight-norm pairs |
//! | [`convert_file`] | every pair renamed into the other key scheme |
//! | [`fuse_onnx_file`] | every weight-norm subgraph of an ONNX model folded into a constant |
//!
//! Errors are [`FileError`]s: the input's fault ([`FileError::is_input`]: the command line's exit
//! 2, Python's `ValueError`), or a failed read or write of the file system. Each front-end adds
//! its own spelling of the option that would help (`--key` on the command line, `key=` in
//! Python) to the errors that name one: [`FileError::Exists`], and a
//! [`TorchError::NotAStateDict`] or [`TorchError::WouldDrop`] inside [`FileError::Torch`].

mod outputs;
mod surgery;
#[cfg(test)]
mod tests;

use std::fmt::Write;
use std::path::{Path, PathBuf};

pub use outputs::{FileId, Outputs, create_exclusive, write_bytes};
pub use surgery::{FileJob, Written, convert_file, fuse_file, fuse_onnx_file, rewrite, split_file};

use crate::formats::TorchError;

/// What went wrong with a file operation.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The input is at fault (a file that cannot be used, an output that is an input).
    #[error("{0}")]
    Input(String),
    /// The checkpoint (or an option about it) is at fault.
    #[error(transparent)]
    Torch(TorchError),
    /// An output exists and replacing it was not asked for.
    #[error("{} exists", shown(.0))]
    Exists(PathBuf),
    /// Reading or writing failed (the message names the file).
    #[error("{0}")]
    Io(String),
}

impl FileError {
    /// Whether the input (a file or an option) is at fault, rather than the file system.
    pub fn is_input(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// The result of a file operation.
pub type Result<T, E = FileError> = core::result::Result<T, E>;

/// Whether `c` must not reach a terminal as it is: control characters (newlines and escape
/// sequences included) and the invisible bidirectional overrides that reorder what is shown.
pub fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character written as an escape (`\n`, `\t`, `\r`, `\u{1b}`), as Rust's
/// `{:?}` writes them, and everything else as it is; a backslash stays a backslash.
pub fn escape(s: &str) -> String {
    if !s.chars().any(hostile) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if hostile(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A path as messages show it: lossy UTF-8, control characters escaped.
pub fn shown(p: &Path) -> String {
    escape(&p.to_string_lossy())
}
