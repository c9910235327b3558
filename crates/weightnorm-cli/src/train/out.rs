//! A run's directory (`--out`), claimed for the run: created if missing, locked so that no
//! other run writes to it at the same time (an advisory lock on the directory itself, which the
//! system releases when the process ends, however it ends), refused when it holds a run
//! (unless `--force`); and after a failed run, cleared of what the run wrote, nothing else.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Failure;
use crate::text::shown;

/// The files a run or a comparison writes in its directory (and each run's directory of a
/// comparison): what `--force` replaces and what marks a directory as holding a run.
pub const RUN_FILES: &[&str] = &[
    "metrics.json",
    "arch.json",
    "model.safetensors",
    "curves.png",
    "steps.jsonl",
    super::checkpoint::FILE,
    "report.md",
    "loss.png",
    "test.png",
    "loss_time.png",
    "step_time.png",
    "gain.png",
    "pcr_loss.png",
    "accuracy.png",
    COMMAND_FILE,
];

/// Where a comparison keeps the options it was started with, for `--resume`.
pub const COMMAND_FILE: &str = "command.json";

/// A run directory held for the run (its lock is released when this is dropped).
#[derive(Debug)]
pub struct Claim {
    dir: PathBuf,
    /// Whether the run created the directory.
    created: bool,
    _lock: File,
}

fn bad(e: String) -> anyhow::Error {
    Failure::input(anyhow::anyhow!(e)).into()
}

/// Claims `out` for a run (`what`: "run" or "comparison"): a new run (`resume` false) needs it
/// missing or empty, or `force` (which removes the run files it holds, those of the runs under
/// it too, so that old and new never mix); a resumed one needs it to exist.
///
/// # Errors
///
/// A [`Failure`] (exit 2) when `out` is not a directory (a file, a device such as `/dev/null`,
/// a link to nothing), when another run holds it, or when it holds a run and neither `force`
/// nor `resume` is given; an I/O error when it cannot be created, read or locked.
pub fn claim(out: &Path, force: bool, what: &str, resume: bool) -> Result<Claim> {
    let flag = if resume { "--resume" } else { "--out" };
    let mut created = false;
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(out) {
            Ok(t) if t.is_dir() => {}
            Ok(t) => {
                return Err(bad(format!(
                    "{flag} {} is a link to {}, not a directory",
                    shown(out),
                    weightnorm::torch::file_kind(&t.file_type())
                )));
            }
            Err(e) => {
                let target = std::fs::read_link(out).unwrap_or_default();
                return Err(bad(format!(
                    "{flag} {} is a link to {}, which cannot be followed: {e}",
                    shown(out),
                    shown(&target)
                )));
            }
        },
        Ok(m) if !m.is_dir() => {
            return Err(bad(format!(
                "{flag} {} is {}, not a directory",
                shown(out),
                weightnorm::torch::file_kind(&m.file_type())
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !resume => {
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", shown(parent)))?;
            }
            match std::fs::create_dir(out) {
                Ok(()) => created = true,
                // Another process made it in the meantime: the lock decides below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(anyhow::anyhow!("cannot create {}: {e}", shown(out))),
            }
        }
        Err(e) => {
            return Err(bad(format!("{flag} {}: {e}", shown(out))));
        }
    }
    let lock = File::open(out).with_context(|| format!("cannot open {}", shown(out)))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(bad(format!(
                "{flag} {} is in use: another weightnorm run is writing to it (wait for it to end, or choose another --out)",
                shown(out)
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(anyhow::anyhow!("cannot lock {}: {e}", shown(out)));
        }
    }
    let claim = Claim {
        dir: out.to_path_buf(),
        created,
        _lock: lock,
    };
    if resume {
        return Ok(claim);
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("cannot read {}", shown(out)))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if entries.is_empty() {
        return Ok(claim);
    }
    if !force {
        return Err(bad(format!(
            "--out {} is not empty: use --force to replace its {what}, --resume {} to continue it, or another --out",
            shown(out),
            shown(out)
        )));
    }
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && super::is_run_name(name) {
            clear_param_dir(&path)?;
        } else if RUN_FILES.contains(&name) {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", shown(&path)))?;
        }
    }
    Ok(claim)
}

impl Claim {
    /// Removes what a failed run wrote (its checkpoints, step logs, a comparison's
    /// `command.json`: the outputs proper are put in place only at the end, and a failed run
    /// leaves none), then the directories it made that this leaves empty. Files it did not
    /// write stay, whoever put them there.
    pub fn clean_up(&self) {
        let _ = clear_run_files(&self.dir);
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for e in dir.flatten() {
                let name = e.file_name();
                let name = name.to_str().unwrap_or("");
                if e.path().is_dir() && super::is_run_name(name) {
                    let _ = clear_param_dir(&e.path());
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        if self.created {
            // Only when empty: `remove_dir` fails on a directory that holds anything.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Removes the run files in `dir`.
fn clear_run_files(dir: &Path) -> Result<()> {
    for name in RUN_FILES {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::anyhow!("cannot remove {}: {e}", shown(&path)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes the run files of a comparison's parameterization directory `dir`: its own (a
/// comparison of one seed before seeds had directories) and those of its `seed-<k>`
/// directories, which are removed when that leaves them empty.
fn clear_param_dir(dir: &Path) -> Result<()> {
    clear_run_files(dir)?;
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", shown(dir)))?
        .flatten()
    {
        let name = e.file_name();
        if e.path().is_dir() && name.to_str().is_some_and(|n| n.starts_with("seed-")) {
            clear_run_files(&e.path())?;
            let _ = std::fs::remove_dir(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_removes_only_what_it_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let claim = claim(&out, false, "run", false).unwrap();
        assert!(claim.created);
        // The run's files, and one someone else put there while it ran.
        for name in ["steps.jsonl", super::super::checkpoint::FILE] {
            std::fs::write(out.join(name), b"run").unwrap();
        }
        std::fs::create_dir_all(out.join("wn/seed-0")).unwrap();
        std::fs::write(out.join("wn/seed-0/steps.jsonl"), b"run").unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        claim.clean_up();
        let left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["notes.txt"]);
        // Without foreign files the directory it made goes too.
        std::fs::remove_file(out.join("notes.txt")).unwrap();
        claim.clean_up();
        assert!(!out.exists());
    }

    #[test]
    fn a_held_directory_is_refused_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let first = claim(&out, false, "run", false).unwrap();
        let e = claim(&out, false, "run", false).unwrap_err();
        assert!(e.downcast_ref::<Failure>().is_some());
        assert!(e.to_string().contains("is in use"), "{e}");
        // --resume and --force are refused as well while it is held.
        assert!(claim(&out, true, "run", false).is_err());
        assert!(claim(&out, false, "run", true).is_err());
        drop(first);
        claim(&out, false, "run", false).unwrap();
    }

    #[test]
    fn outs_that_are_not_directories_are_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
        for (out, says) in [
            (file.as_path(), "is a regular file, not a directory"),
            (
                Path::new("/dev/null"),
                "is a character device, not a directory",
            ),
            (link.as_path(), "which cannot be followed"),
        ] {
            let e = claim(out, false, "run", false).unwrap_err();
            assert!(e.downcast_ref::<Failure>().is_some(), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        assert!(!tmp.path().join("nowhere").exists());
    }
}
