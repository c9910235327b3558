//! Atomic output: every file a command writes goes through here. A file is written under a
//! temporary name beside its target, flushed to disk (`fsync`) and renamed over the target only
//! when complete, so a target is either its old self or the whole new file, never a torn one.
//! On any error the temporary file is removed.
//!
//! As in the library's `write_safetensors`, setting the environment variable
//! `WEIGHTNORM_NO_FSYNC` skips the flush, for scratch outputs.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use weightnorm::torch::{Checkpoint, TensorEntry, TorchError};

use crate::Failure;

/// The library's `.safetensors` writer, atomic in the same way (temporary file, flush, rename).
pub use weightnorm::torch::write_safetensors;

/// The temporary name `path` is written under: a hidden file in the same directory (so the
/// rename stays on one file system) that keeps the target's extension, for writers that choose
/// the format by it (the PNG encoder does).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".partial-{}-{name}", std::process::id()))
}

fn fsync_wanted() -> bool {
    std::env::var_os("WEIGHTNORM_NO_FSYNC").is_none()
}

/// Flushes a written file to disk.
fn sync_file(path: &Path) -> Result<()> {
    if fsync_wanted() {
        File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot flush {} to disk", path.display()))?;
    }
    Ok(())
}

/// Flushes the directory holding `path`, so that the rename itself survives a crash. Best
/// effort: not every file system lets a directory be opened and synced.
fn sync_parent(path: &Path) {
    if fsync_wanted()
        && let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Writes `path` atomically with `write`, which is given the temporary path to create: the
/// temporary file is flushed and renamed over `path` when `write` succeeds, and removed when
/// anything fails.
///
/// # Errors
///
/// The error of `write`, or of flushing or renaming the file.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_path(path);
    let result = write(&tmp).and_then(|()| sync_file(&tmp)).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        sync_parent(path);
    }
    result
}

/// Writes `bytes` to `path` atomically.
///
/// # Errors
///
/// An I/O error, with the file's name.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        File::create(tmp)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Writes pretty JSON, with a final newline, to `path` atomically.
///
/// # Errors
///
/// An I/O error, with the file's name.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    write_bytes(
        path,
        (serde_json::to_string_pretty(value)? + "\n").as_bytes(),
    )
}

/// Writes tensors as a `.safetensors` file (atomically: the library's writer is) with the
/// metadata of the checkpoint they came from, if any. A failed write exits 1; a tensor that
/// cannot be written (bad input) exits 2.
///
/// # Errors
///
/// The library's error, as a [`Failure`] when the input is at fault.
pub fn write_checkpoint(
    path: &Path,
    tensors: &[TensorEntry],
    source: Option<&Checkpoint>,
) -> Result<()> {
    let metadata = source.and_then(|c| c.metadata.as_ref());
    write_safetensors(path, tensors, metadata).map_err(|e| match e {
        TorchError::Write { .. } => anyhow::Error::new(e),
        other => Failure::input(other).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_json(&path, &serde_json::json!({"x": 1})).unwrap();
        write_json(&path, &serde_json::json!({"x": 2})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"x\": 2\n}\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_bytes(&path, b"old").unwrap();
        let e = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("interrupted")
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "interrupted");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_temporary_keeps_the_extension_and_the_directory() {
        let tmp = temporary_path(Path::new("runs/x/curves.png"));
        assert_eq!(tmp.parent(), Some(Path::new("runs/x")));
        assert_eq!(tmp.extension().unwrap(), "png");
        assert_ne!(tmp.file_name().unwrap(), "curves.png");
    }
}
