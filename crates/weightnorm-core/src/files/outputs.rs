//! Atomic, all-or-nothing output: every file the command line and the Python package write
//! goes through an [`Outputs`].
//!
//! Each file is written in full under a temporary name, flushed to disk (`fsync`) and only then,
//! when every output of the operation has been written, renamed into place
//! ([`Outputs::commit`]). A target is therefore either its old self or the whole new file, never
//! a torn one, and an operation that fails writes nothing: its temporaries are removed, and a
//! rename that fails part-way undoes the renames before it.
//!
//! Temporaries are hostile-proof: each lives in a private directory (mode 0700) created beside
//! its target under an unpredictable name (random bits from the kernel), which `mkdir` creates
//! exclusively and never through a symbolic link, and the files written here are opened with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`. Whether a target already exists is decided at the rename
//! itself (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the file system lacks it),
//! so a file that appears while a long write runs is not replaced unless replacing was asked
//! for. An output that is the same file (device and inode) as one of the operation's inputs,
//! reached through any path, link or mount, is refused, replacing or not.
//!
//! Setting the environment variable `WEIGHTNORM_NO_FSYNC` skips the flushes, for scratch
//! outputs.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{FileError, Result, shown};
use crate::formats::{Planned, TensorEntry, TorchError, WriteOptions};

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file `path` names, following symbolic links; `None` if there is none.
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// What `path` would name once written, to tell whether two outputs are one file: the file's
/// identity when it exists, else its directory's identity and its name.
fn target_key(path: &Path) -> Option<(FileId, Option<std::ffi::OsString>)> {
    if let Some(id) = FileId::of(path) {
        return Some((id, None));
    }
    let name = path.file_name()?.to_os_string();
    Some((FileId::of(parent_of(path))?, Some(name)))
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `n` random bytes from the kernel (`getrandom`, or `/dev/urandom`), as lowercase hex.
fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    // SAFETY: the buffer is valid for `n` bytes.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), n, 0) };
    if usize::try_from(got).ok() != Some(n) {
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| {
                FileError::Io(format!("cannot get random bytes for a temporary name: {e}"))
            })?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn fsync_wanted() -> bool {
    std::env::var_os("WEIGHTNORM_NO_FSYNC").is_none()
}

/// Flushes a written file to disk.
fn sync_file(path: &Path, target: &Path) -> Result<()> {
    if fsync_wanted() {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| FileError::Io(format!("cannot flush {} to disk: {e}", shown(target))))?;
    }
    Ok(())
}

/// Flushes a directory, so that renames in it survive a crash. Best effort: not every file
/// system lets a directory be opened and synced.
fn sync_dir(dir: &Path) {
    if fsync_wanted()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Creates `path` for writing, exclusively and never through a symbolic link.
///
/// # Errors
///
/// If it exists (as anything, a link included) or cannot be created.
pub fn create_exclusive(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o666)
        .open(path)
}

fn c_path(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(target_os = "linux")]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let (a, b) = (c_path(from)?, c_path(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn renameat2(_: &Path, _: &Path, _: u32) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(target_os = "linux")]
const NOREPLACE: libc::c_uint = libc::RENAME_NOREPLACE;
#[cfg(target_os = "linux")]
const EXCHANGE: libc::c_uint = libc::RENAME_EXCHANGE;
#[cfg(not(target_os = "linux"))]
const NOREPLACE: u32 = 1;
#[cfg(not(target_os = "linux"))]
const EXCHANGE: u32 = 2;

/// Renames `from` to `to` unless `to` exists, deciding atomically: `RENAME_NOREPLACE`, or a
/// hard link (which fails on an existing name) and an unlink where that is unsupported.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    match renameat2(from, to, NOREPLACE) {
        Err(e) if unsupported(&e) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        r => r,
    }
}

/// How a staged file was put in place, to undo it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    /// Not yet.
    No,
    /// Under a name that did not exist: undone by removing it.
    New,
    /// Exchanged with the old file, which now lies at the temporary name: undone by exchanging
    /// back.
    Exchanged,
    /// Renamed over the old file (where exchanging is unsupported): cannot be undone.
    Replaced,
}

/// One output: its private directory, its temporary file and its target.
struct Staged {
    dir: PathBuf,
    tmp: PathBuf,
    target: PathBuf,
    replace: bool,
    id: Option<FileId>,
    placed: Placed,
}

/// The outputs of one command, written to temporaries and put in place all together by
/// [`Outputs::commit`]; dropped without a commit, they leave nothing behind (directories they
/// created included).
#[derive(Default)]
pub struct Outputs {
    inputs: Vec<(PathBuf, FileId)>,
    staged: Vec<Staged>,
    created_dirs: Vec<PathBuf>,
}

impl Outputs {
    /// Outputs of a command that reads `inputs` (paths that do not exist are ignored): no
    /// output may be one of them.
    pub fn new<P: AsRef<Path>>(inputs: impl IntoIterator<Item = P>) -> Self {
        let mut out = Self::default();
        out.inputs = inputs
            .into_iter()
            .filter_map(|p| {
                let p = p.as_ref();
                FileId::of(p).map(|id| (p.to_path_buf(), id))
            })
            .collect();
        out
    }

    /// Adds inputs known only once the first one is read (a sharded checkpoint's shards).
    pub fn add_inputs<P: AsRef<Path>>(&mut self, inputs: impl IntoIterator<Item = P>) {
        for p in inputs {
            let p = p.as_ref();
            if let Some(id) = FileId::of(p) {
                self.inputs.push((p.to_path_buf(), id));
            }
        }
    }

    /// The input that `target` is the same file as, if any.
    fn input_at(&self, target: &Path) -> Option<&Path> {
        let id = FileId::of(target)?;
        self.inputs
            .iter()
            .find(|(_, i)| *i == id)
            .map(|(p, _)| p.as_path())
    }

    /// Checks `targets` before anything is computed: none is an input or another target, and
    /// none exists unless `force`. (The same is decided again when the files are put in place.)
    ///
    /// # Errors
    ///
    /// [`FileError::Input`] or [`FileError::Exists`] naming the target at fault.
    pub fn check(&self, targets: &[&Path], force: bool) -> Result<()> {
        for (i, t) in targets.iter().enumerate() {
            self.check_not_input(t)?;
            for u in &targets[..i] {
                if target_key(t).is_some() && target_key(t) == target_key(u) {
                    return Err(FileError::Input(format!(
                        "{} and {} are the same file: give each output its own name",
                        shown(u),
                        shown(t)
                    )));
                }
            }
            if !force && std::fs::symlink_metadata(t).is_ok() {
                return Err(FileError::Exists(t.to_path_buf()));
            }
        }
        Ok(())
    }

    fn check_not_input(&self, target: &Path) -> Result<()> {
        if let Some(input) = self.input_at(target) {
            return Err(FileError::Input(format!(
                "the output {} is the input {}: write to another file",
                shown(target),
                shown(input)
            )));
        }
        Ok(())
    }

    /// Creates the directory `dir` and its missing parents; the ones created are removed again
    /// (when empty) if the command fails.
    ///
    /// # Errors
    ///
    /// If a directory cannot be created.
    pub fn create_dir_all(&mut self, dir: &Path) -> Result<()> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| std::fs::symlink_metadata(a).is_err())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir)
            .map_err(|e| FileError::Io(format!("cannot create {}: {e}", shown(dir))))?;
        self.created_dirs.extend(missing.into_iter().rev());
        Ok(())
    }

    /// Writes the output `target` with `write`, which is given the temporary path to create
    /// (in a private directory, under the target's own file name, so that writers choosing a
    /// format by the extension still can); it is put in place by [`Outputs::commit`], replacing
    /// an existing file only if `replace`.
    ///
    /// # Errors
    ///
    /// The error of `write`, or of creating the private directory or flushing the file.
    pub fn write_with(
        &mut self,
        target: &Path,
        replace: bool,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let name = target
            .file_name()
            .filter(|n| !n.is_empty() && *n != ".." && *n != ".")
            .ok_or_else(|| FileError::Input(format!("{} is not a file name", shown(target))))?;
        let dir = parent_of(target).join(format!(".weightnorm-{}", random_hex(8)?));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| FileError::Io(format!("cannot write {}: {e}", shown(target))))?;
        let tmp = dir.join(name);
        self.staged.push(Staged {
            dir,
            tmp: tmp.clone(),
            target: target.to_path_buf(),
            replace,
            id: None,
            placed: Placed::No,
        });
        write(&tmp)?;
        sync_file(&tmp, target)?;
        let meta = std::fs::symlink_metadata(&tmp)
            .map_err(|e| FileError::Io(format!("cannot write {}: {e}", shown(target))))?;
        if !meta.file_type().is_file() {
            return Err(FileError::Io(format!(
                "cannot write {}: the temporary is not a file",
                shown(target)
            )));
        }
        self.staged.last_mut().expect("pushed").id = Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        });
        Ok(())
    }

    /// Writes `bytes` as the output `target`.
    ///
    /// # Errors
    ///
    /// An I/O error, with the target's name.
    pub fn bytes(&mut self, target: &Path, replace: bool, bytes: &[u8]) -> Result<()> {
        self.write_with(target, replace, |tmp| {
            create_exclusive(tmp)
                .and_then(|mut f| f.write_all(bytes))
                .map_err(|e| FileError::Io(format!("cannot write {}: {e}", shown(target))))
        })
    }

    /// Writes pretty JSON, with a final newline, as the output `target`.
    ///
    /// # Errors
    ///
    /// An I/O error, with the target's name.
    pub fn json(&mut self, target: &Path, replace: bool, value: &serde_json::Value) -> Result<()> {
        self.bytes(
            target,
            replace,
            (serde_json::to_string_pretty(value)
                .map_err(|e| FileError::Input(format!("cannot write {}: {e}", shown(target))))?
                + "\n")
                .as_bytes(),
        )
    }

    /// Writes tensors as a `.safetensors` output with `metadata`. A failed write exits 1; a
    /// tensor that cannot be written (bad input) exits 2.
    ///
    /// # Errors
    ///
    /// [`FileError::Io`] when writing fails, [`FileError::Torch`] when a tensor cannot be
    /// written (the input is at fault).
    pub fn safetensors(
        &mut self,
        target: &Path,
        replace: bool,
        tensors: &[TensorEntry],
        metadata: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<()> {
        self.write_with(target, replace, |tmp| {
            // The library's writer uses its own temporary beside `tmp`: inside the private
            // directory, where nothing else can be planted.
            let options = WriteOptions {
                fsync: fsync_wanted(),
            };
            crate::formats::write_safetensors_with(tmp, tensors, metadata, &options)
                .map_err(|e| written(e, target))
        })
    }

    /// Writes one planned file of a checkpoint (safetensors, PyTorch or an index) as the output
    /// at its path. A failed write exits 1; a tensor that cannot be written (bad input) exits 2.
    ///
    /// # Errors
    ///
    /// [`FileError::Io`] when writing fails, [`FileError::Torch`] when a tensor cannot be
    /// written (the input is at fault).
    pub fn planned(&mut self, planned: &Planned, replace: bool) -> Result<()> {
        let target = planned.path().to_path_buf();
        self.write_with(&target, replace, |tmp| {
            let options = WriteOptions {
                fsync: fsync_wanted(),
            };
            planned
                .write_to(tmp, &options)
                .map_err(|e| written(e, &target))
        })
    }

    /// Puts every output in place, in the order written; if one cannot be (it is an input, it
    /// exists and may not be replaced, or the rename fails), the ones before it are undone and
    /// nothing is left.
    ///
    /// # Errors
    ///
    /// [`FileError::Input`] for an output that is an input, [`FileError::Exists`] for one that
    /// exists and may not be replaced, [`FileError::Io`] otherwise.
    pub fn commit(mut self) -> Result<()> {
        for i in 0..self.staged.len() {
            if let Err(e) = self.place(i) {
                self.undo();
                return Err(e);
            }
        }
        let dirs: Vec<PathBuf> = self
            .staged
            .drain(..)
            .map(|s| {
                let _ = std::fs::remove_dir_all(&s.dir);
                parent_of(&s.target).to_path_buf()
            })
            .collect();
        for d in dirs {
            sync_dir(&d);
        }
        self.created_dirs.clear();
        Ok(())
    }

    fn place(&mut self, i: usize) -> Result<()> {
        let target = self.staged[i].target.clone();
        self.check_not_input(&target)?;
        let s = &mut self.staged[i];
        let fail =
            |e: std::io::Error| FileError::Io(format!("cannot write {}: {e}", shown(&target)));
        match rename_noreplace(&s.tmp, &target) {
            Ok(()) => s.placed = Placed::New,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !s.replace {
                    return Err(FileError::Exists(target));
                }
                match renameat2(&s.tmp, &target, EXCHANGE) {
                    Ok(()) => s.placed = Placed::Exchanged,
                    Err(e) if unsupported(&e) => {
                        std::fs::rename(&s.tmp, &target).map_err(fail)?;
                        s.placed = Placed::Replaced;
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            Err(e) => return Err(fail(e)),
        }
        Ok(())
    }

    /// Undoes the renames done, newest first: new files are removed (if they are still the
    /// ones written), exchanged ones exchanged back.
    fn undo(&mut self) {
        for s in self.staged.iter_mut().rev() {
            let ours = s.id.is_some() && FileId::of(&s.target) == s.id;
            match s.placed {
                Placed::New if ours => {
                    let _ = std::fs::remove_file(&s.target);
                }
                Placed::Exchanged if ours => {
                    let _ = renameat2(&s.tmp, &s.target, EXCHANGE);
                }
                _ => {}
            }
            s.placed = Placed::No;
        }
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for s in &self.staged {
            let _ = std::fs::remove_dir_all(&s.dir);
        }
        for d in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A writer's error: a failed write is [`FileError::Io`] naming the target; any other (a tensor
/// that cannot be written) is the input's fault.
fn written(e: TorchError, target: &Path) -> FileError {
    match e {
        TorchError::Write { source, .. } => {
            FileError::Io(format!("cannot write {}: {source}", shown(target)))
        }
        other => FileError::Torch(other),
    }
}

/// Writes `bytes` to `path` alone, atomically, replacing it if it exists.
///
/// # Errors
///
/// An I/O error, with the file's name.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = Outputs::default();
    out.bytes(path, true, bytes)?;
    out.commit()
}
