//! Every file a command writes goes through the core's staged, atomic
//! [`Outputs`](weightnorm::weightnorm_core::files::Outputs) (the same one the Python package
//! uses): written in full under private temporaries, flushed, put in place together
//! (`RENAME_NOREPLACE` unless `--force`), never over an input, nothing left when anything fails.
//! This module adapts it to the command line: errors become `anyhow` errors, the input's faults
//! a [`Failure`] (exit 2), and an output that exists says `--force`.
//!
//! Setting the environment variable `WEIGHTNORM_NO_FSYNC` skips the flushes, for scratch
//! outputs.

use std::path::Path;

use anyhow::Result;
use weightnorm::torch::{TensorEntry, TorchError};
use weightnorm::weightnorm_core::files::{self, FileError};

use crate::Failure;
use crate::text::shown;

/// A core file error as the command line reports it: the input's faults exit 2, and the errors
/// that an option would mend name it (`--force`, `--key`, `--state-dict-only`).
pub fn lift(e: FileError) -> anyhow::Error {
    match e {
        FileError::Io(m) => anyhow::anyhow!(m),
        FileError::Exists(p) => Failure::input(anyhow::anyhow!(
            "{} exists: pass --force to overwrite it",
            shown(&p)
        ))
        .into(),
        FileError::Input(m) => Failure::input(anyhow::anyhow!(m)).into(),
        FileError::Torch(e) => Failure::input(torch_hint(e)).into(),
    }
}

/// A checkpoint error with the option that mends it, where one does.
pub fn torch_hint(e: TorchError) -> anyhow::Error {
    match &e {
        TorchError::NotAStateDict {
            suggestion: Some(k),
            ..
        } => anyhow::anyhow!("{e} (--key {})", shell_word(k)),
        TorchError::WouldDrop { .. } => anyhow::anyhow!(
            "{e} (an output named .pt keeps them; --state-dict-only leaves them out)"
        ),
        _ => e.into(),
    }
}

/// `s` as one shell word: quoted when it holds anything a shell would act on.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,/:=+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The outputs of one command (see the module's documentation).
#[derive(Default)]
pub struct Outputs(files::Outputs);

impl Outputs {
    /// Outputs of a command that reads `inputs` (paths that do not exist are ignored): no
    /// output may be one of them.
    pub fn new<P: AsRef<Path>>(inputs: impl IntoIterator<Item = P>) -> Self {
        Self(files::Outputs::new(inputs))
    }

    /// Checks `targets` before anything is computed: none is an input or another target, and
    /// none exists unless `force`.
    ///
    /// # Errors
    ///
    /// A [`Failure`] naming the target at fault.
    pub fn check(&self, targets: &[&Path], force: bool) -> Result<()> {
        self.0.check(targets, force).map_err(lift)
    }

    /// Creates the directory `dir` and its missing parents; the ones created are removed again
    /// (when empty) if the command fails.
    ///
    /// # Errors
    ///
    /// If a directory cannot be created.
    pub fn create_dir_all(&mut self, dir: &Path) -> Result<()> {
        self.0.create_dir_all(dir).map_err(lift)
    }

    /// Writes `bytes` as the output `target`.
    ///
    /// # Errors
    ///
    /// An I/O error, with the target's name.
    pub fn bytes(&mut self, target: &Path, replace: bool, bytes: &[u8]) -> Result<()> {
        self.0.bytes(target, replace, bytes).map_err(lift)
    }

    /// Writes pretty JSON, with a final newline, as the output `target`.
    ///
    /// # Errors
    ///
    /// An I/O error, with the target's name.
    pub fn json(&mut self, target: &Path, replace: bool, value: &serde_json::Value) -> Result<()> {
        self.0.json(target, replace, value).map_err(lift)
    }

    /// Writes tensors as a `.safetensors` output with `metadata`. A failed write exits 1; a
    /// tensor that cannot be written (bad input) exits 2.
    ///
    /// # Errors
    ///
    /// The library's error, as a [`Failure`] when the input is at fault.
    pub fn safetensors(
        &mut self,
        target: &Path,
        replace: bool,
        tensors: &[TensorEntry],
        metadata: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<()> {
        self.0
            .safetensors(target, replace, tensors, metadata)
            .map_err(lift)
    }

    /// Puts every output in place; if one cannot be, the ones before it are undone.
    ///
    /// # Errors
    ///
    /// A [`Failure`] for an output that is an input or exists without `--force`; an I/O error
    /// otherwise.
    pub fn commit(self) -> Result<()> {
        self.0.commit().map_err(lift)
    }
}

/// Writes `bytes` to `path` alone, atomically, replacing it if it exists (a run's checkpoint,
/// the options a comparison keeps for `--resume`).
///
/// # Errors
///
/// An I/O error, with the file's name.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    files::write_bytes(path, bytes).map_err(lift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_that_exists_names_force_and_exits_2() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("o.txt");
        std::fs::write(&target, b"theirs").unwrap();
        let out = Outputs::default();
        let e = out.check(&[&target], false).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("exists: pass --force to overwrite it"),
            "{e}"
        );
        assert!(e.downcast_ref::<Failure>().is_some());
    }
}
