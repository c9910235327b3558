//! Writing a checkpoint's transformed state dict back in the input's shape: the same nesting
//! and every other entry of a PyTorch file (`.pt` output), the same sharding with a new index
//! (`*.index.json` output), or one file of tensors (safetensors), refusing what that file
//! cannot hold unless the caller says to leave it out.
//!
//! [`Checkpoint::plan`] decides the files; each [`Planned`] file is then written to a path the
//! caller chooses ([`Planned::write_to`]), so that a caller committing several outputs at once
//! (the command line) keeps its own atomicity; [`Checkpoint::save`] writes them each atomically
//! (a temporary beside the target, renamed over it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::checkpoint::{WriteOptions, write_safetensors_with};
use super::tree::{PtDict, PtTensor, PtValue, key_name};
use super::{Checkpoint, Result, TensorEntry, TorchError};

/// The file formats a checkpoint can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputFormat {
    /// `.safetensors`: tensors only.
    SafeTensors,
    /// PyTorch's zip format (`torch.save`): any nesting, numbers, strings beside the tensors.
    PyTorch,
}

impl OutputFormat {
    /// The format a file name asks for: `.pt`, `.pth`, `.bin` and `.ckpt` are PyTorch files,
    /// anything else safetensors.
    pub fn of(path: &Path) -> Self {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("pt" | "pth" | "bin" | "ckpt") => Self::PyTorch,
            _ => Self::SafeTensors,
        }
    }

    /// Its name in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SafeTensors => "a safetensors file",
            Self::PyTorch => "a PyTorch file",
        }
    }
}

/// Options of [`Checkpoint::plan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// The format, instead of the one the output's file name asks for ([`OutputFormat::of`]).
    pub format: Option<OutputFormat>,
    /// Write the state dict alone, leaving out whatever else the input holds (other entries of
    /// a training checkpoint, values in the state dict that are not tensors). Without it, a
    /// PyTorch output keeps them and a safetensors output is refused
    /// ([`TorchError::WouldDrop`]).
    pub state_dict_only: bool,
}

#[derive(Clone)]
enum Content {
    SafeTensors {
        tensors: Vec<TensorEntry>,
        metadata: Option<BTreeMap<String, String>>,
    },
    Pt {
        root: PtValue,
    },
    Json(Vec<u8>),
}

/// One file of a planned output: where it goes, and what it holds.
#[derive(Clone)]
pub struct Planned {
    path: PathBuf,
    content: Content,
}

impl core::fmt::Debug for Planned {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Planned").field("path", &self.path).finish()
    }
}

impl Planned {
    /// Where the file belongs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tensors it holds.
    pub fn tensor_count(&self) -> usize {
        match &self.content {
            Content::SafeTensors { tensors, .. } => tensors.len(),
            Content::Pt { root } => root.count_tensors(),
            Content::Json(_) => 0,
        }
    }

    /// Writes the file's content to `to`, a new file (for a safetensors file, through a
    /// temporary beside `to`); [`Planned::path`] is only used to name the archive inside a
    /// PyTorch file.
    ///
    /// # Errors
    ///
    /// [`TorchError::Write`] for I/O errors, or the error of producing a tensor.
    pub fn write_to(&self, to: &Path, options: &WriteOptions) -> Result<()> {
        match &self.content {
            Content::SafeTensors { tensors, metadata } => {
                write_safetensors_with(to, tensors, metadata.as_ref(), options)
            }
            Content::Pt { root } => super::pt_write::write_pt(to, &self.path, root, options.fsync),
            Content::Json(bytes) => {
                let werr = |source| TorchError::Write {
                    path: to.display().to_string(),
                    source,
                };
                let mut f = std::fs::File::create(to).map_err(werr)?;
                std::io::Write::write_all(&mut f, bytes).map_err(werr)?;
                if options.fsync {
                    f.sync_all().map_err(werr)?;
                }
                Ok(())
            }
        }
    }
}

/// `index.json`'s shard file names: `<base>-00001-of-00003<ext>`, as transformers names them.
fn shard_names(index: &Path, n: usize) -> Result<(String, Vec<String>)> {
    let name = index
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".index.json"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| TorchError::Index {
            path: index.display().to_string(),
            reason: "an index's name is `<name>.<format>.index.json`".into(),
        })?;
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) if !b.is_empty() => (b.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    let names = (1..=n)
        .map(|i| format!("{base}-{i:05}-of-{n:05}{ext}"))
        .collect();
    Ok((name.to_string(), names))
}

impl Checkpoint {
    /// The files that writing `tensors` (this checkpoint's state dict, transformed: each new
    /// tensor's [`origin`](TensorEntry::origin) naming the input tensor it was made from) to
    /// `output` makes:
    ///
    /// - `output` named `*.index.json`: sharded as the input is (each tensor in the shard of
    ///   the tensor it was made from, shards named `<name>-00001-of-0000N.<ext>` beside the
    ///   index, in the format the index's name ends with), and the index, its `total_size`
    ///   recomputed;
    /// - a PyTorch file: the whole input with the state dict replaced (the same nesting,
    ///   every other entry unchanged; new tensors where the tensors they were made from were),
    ///   or a dict of the tensors alone for a safetensors input or with `state_dict_only`;
    /// - a safetensors file: the tensors, with the input's metadata.
    ///
    /// # Errors
    ///
    /// [`TorchError::WouldDrop`] when the output cannot hold what else the input holds;
    /// [`TorchError::Index`] for an index output of an input that is not sharded or a badly
    /// named index.
    pub fn plan(
        &self,
        tensors: Vec<TensorEntry>,
        output: &Path,
        options: &SaveOptions,
    ) -> Result<Vec<Planned>> {
        if super::checkpoint::is_index(output) {
            return self.plan_sharded(tensors, output);
        }
        let format = options.format.unwrap_or_else(|| OutputFormat::of(output));
        let others = self.others();
        if !others.is_empty() && !options.state_dict_only && format == OutputFormat::SafeTensors {
            return Err(TorchError::WouldDrop {
                path: self.path.display().to_string(),
                format: format.as_str(),
                entries: others,
            });
        }
        let content = match (format, &self.root) {
            (OutputFormat::PyTorch, Some(root)) if !options.state_dict_only => Content::Pt {
                root: replace_state_dict(root, &self.key_path, &tensors)?,
            },
            // A state dict as `state_dict()` returns it: an `OrderedDict`.
            (OutputFormat::PyTorch, _) => Content::Pt {
                root: state_dict_tree(tensors, true),
            },
            (_, _) => Content::SafeTensors {
                tensors,
                metadata: self.metadata.clone(),
            },
        };
        Ok(vec![Planned {
            path: output.to_path_buf(),
            content,
        }])
    }

    fn plan_sharded(&self, tensors: Vec<TensorEntry>, output: &Path) -> Result<Vec<Planned>> {
        let Some(sharding) = &self.sharding else {
            return Err(TorchError::Index {
                path: output.display().to_string(),
                reason: format!(
                    "an index is written for a sharded input, and {} is one file",
                    self.path.display()
                ),
            });
        };
        // Each tensor in the shard of its own name, or of the tensor it was made from.
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, s) in sharding.shards.iter().enumerate() {
            for t in &s.tensors {
                owner.insert(t, i);
            }
        }
        let mut groups: Vec<Vec<TensorEntry>> = vec![Vec::new(); sharding.shards.len()];
        for t in tensors {
            let i = owner
                .get(t.name.as_str())
                .or_else(|| t.origin().and_then(|o| owner.get(o)))
                .copied()
                .unwrap_or(0);
            groups[i].push(t);
        }
        let kept: Vec<(usize, Vec<TensorEntry>)> = groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect();
        let (inner, names) = shard_names(output, kept.len())?;
        let format = OutputFormat::of(Path::new(&inner));
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut weight_map = serde_json::Map::new();
        let mut total = 0u64;
        let mut planned = Vec::new();
        for ((i, group), name) in kept.into_iter().zip(names) {
            for t in &group {
                weight_map.insert(t.name.clone(), serde_json::Value::String(name.clone()));
                total += t.byte_len() as u64;
            }
            let content = match format {
                // A shard as transformers saves it: a plain dict.
                OutputFormat::PyTorch => Content::Pt {
                    root: state_dict_tree(group, false),
                },
                OutputFormat::SafeTensors => Content::SafeTensors {
                    tensors: group,
                    metadata: sharding.shards[i].metadata.clone(),
                },
            };
            planned.push(Planned {
                path: dir.join(name),
                content,
            });
        }
        let mut metadata = sharding.metadata.clone();
        metadata.insert("total_size".into(), serde_json::Value::from(total));
        let mut sorted: Vec<(String, serde_json::Value)> = weight_map.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let doc = serde_json::json!({
            "metadata": metadata,
            "weight_map": serde_json::Map::from_iter(sorted),
        });
        let mut json = serde_json::to_vec_pretty(&doc).expect("JSON of strings and numbers");
        json.push(b'\n');
        planned.push(Planned {
            path: output.to_path_buf(),
            content: Content::Json(json),
        });
        Ok(planned)
    }

    /// Writes `tensors` to `output` as [`plan`](Self::plan) decides, each file atomically (a
    /// temporary beside it, renamed over it when complete); returns the files written.
    ///
    /// # Errors
    ///
    /// As [`plan`](Self::plan), and [`TorchError::Write`] for I/O errors. Files already
    /// renamed into place when a later one fails stay written.
    pub fn save(
        &self,
        tensors: Vec<TensorEntry>,
        output: &Path,
        options: &SaveOptions,
        write: &WriteOptions,
    ) -> Result<Vec<PathBuf>> {
        let planned = self.plan(tensors, output, options)?;
        let mut done = Vec::new();
        for p in &planned {
            let tmp = temporary(p.path());
            let r = p.write_to(&tmp, write).and_then(|()| {
                std::fs::rename(&tmp, p.path()).map_err(|source| TorchError::Write {
                    path: p.path().display().to_string(),
                    source,
                })
            });
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r?;
            done.push(p.path().to_path_buf());
        }
        Ok(done)
    }
}

/// Writes `root` as a PyTorch file (the zip format of `torch.save`, which
/// `torch.load(weights_only=True)` reads) at `path`, atomically: a temporary beside it, renamed
/// over it when complete (flushed to disk first if `options.fsync`).
///
/// # Errors
///
/// [`TorchError::Unwritable`] for a value PyTorch's format cannot hold as given (a dtype
/// without a storage class, containers nested too deep), [`TorchError::Write`] for I/O errors,
/// or the error of producing a tensor.
pub fn write_pt(path: &Path, root: &PtValue, options: &WriteOptions) -> Result<()> {
    let tmp = temporary(path);
    let r = super::pt_write::write_pt(&tmp, path, root, options.fsync).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| TorchError::Write {
            path: path.display().to_string(),
            source,
        })
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Reads a PyTorch file (zip or legacy) whole, whatever it holds: the tree
/// `torch.load(weights_only=True)` would give.
///
/// # Errors
///
/// [`TorchError::Read`] when it cannot be read, [`TorchError::Pt`] when it is not a valid
/// PyTorch file.
pub fn read_pt(path: &Path) -> Result<PtValue> {
    let shown = path.display().to_string();
    let read_err = |source| TorchError::Read {
        path: shown.clone(),
        source,
    };
    let file = super::open_regular(path).map_err(read_err)?;
    // SAFETY: the map is read-only; a file changed underneath while it is open can give
    // wrong bytes but not unsafety in this process beyond what reading it would.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    let head = &map[..map.len().min(super::pt::HEAD_LEN)];
    if super::pt::detect(head) != super::pt::Detected::PyTorch {
        return Err(TorchError::Invalid {
            path: shown,
            format: "PyTorch",
            reason: "it is neither a zip archive nor a legacy torch.save stream".into(),
        });
    }
    super::pt::read_root(&shown, &std::sync::Arc::new(map))
}

/// A temporary name beside `path`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// New tensors not yet placed, each with the tensor it was made from.
type Pending<'a> = Vec<(&'a TensorEntry, Option<PtTensor>)>;

/// What to do where the input's state dict is rebuilt.
struct Rebuild<'a> {
    /// The output's tensors by name.
    out: HashMap<&'a str, &'a TensorEntry>,
    /// New tensors (names the input lacks) to put before the input tensor they were made
    /// from, by that tensor's name.
    before: HashMap<&'a str, Vec<&'a TensorEntry>>,
    /// New tensors placed somewhere already.
    placed: BTreeSet<&'a str>,
}

/// A copy of `root` whose state dict (under `key_path`) holds `tensors`: each tensor the input
/// had stays where it was; each new one goes beside the tensor it was made from (in the same
/// dict, under its name relative to that dict, just before it); tensors the output lacks are
/// removed, and dicts that held only them with them. Everything that is not a tensor stays.
pub(crate) fn replace_state_dict(
    root: &PtValue,
    key_path: &[String],
    tensors: &[TensorEntry],
) -> Result<PtValue> {
    let sd = root.get(key_path).ok_or_else(|| TorchError::Unwritable {
        reason: "the state dict is not where it was read".into(),
    })?;
    let input: BTreeSet<String> = sd.tensors().into_iter().map(|(n, _)| n).collect();
    let mut plan = Rebuild {
        out: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
        before: HashMap::new(),
        placed: BTreeSet::new(),
    };
    for t in tensors {
        if !input.contains(&t.name)
            && let Some(o) = t.origin()
            && input.contains(o)
        {
            plan.before.entry(o).or_default().push(t);
        }
    }
    let (new_sd, _) = rebuild(sd, "", &mut plan)?;
    let mut new_sd = new_sd.unwrap_or(PtValue::Dict(PtDict {
        ordered: true,
        ..PtDict::default()
    }));
    // New tensors with no input tensor to stand beside: at the state dict's top level.
    let PtValue::Dict(top) = &mut new_sd else {
        return Err(TorchError::Unwritable {
            reason: "the state dict is not a dict".into(),
        });
    };
    for t in tensors {
        if !input.contains(&t.name) && !plan.placed.contains(t.name.as_str()) {
            top.entries
                .push((PtValue::Str(t.name.clone()), new_tensor(t, None)));
        }
    }
    // The rebuilt state dict must spell exactly the output's names.
    let mut got: Vec<String> = new_sd.tensors().into_iter().map(|(n, _)| n).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    want.sort_unstable();
    if got.len() != want.len() || got.iter().zip(&want).any(|(a, b)| a != b) {
        return Err(TorchError::Unwritable {
            reason: "the state dict's tensors cannot be put back in its nesting (a new name \
                     collides with a nested one)"
                .into(),
        });
    }
    let mut root = root.clone();
    *root.get_mut(key_path).expect("found above") = new_sd;
    Ok(root)
}

/// The output tensor `t` as a tree value, with the flags of the tensor it replaces or was
/// made from.
fn new_tensor(t: &TensorEntry, like: Option<&PtTensor>) -> PtValue {
    PtValue::Tensor(PtTensor {
        entry: t.clone(),
        requires_grad: like.is_some_and(|l| l.requires_grad),
        parameter: like.is_some_and(|l| l.parameter),
    })
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

/// `v` rebuilt (see [`replace_state_dict`]); `None` when it held tensors and none is left.
/// Also returns the new tensors made from tensors below `v` that could not be placed in it
/// (their names are not below `prefix`), for an enclosing dict to place.
fn rebuild<'a>(
    v: &PtValue,
    prefix: &str,
    plan: &mut Rebuild<'a>,
) -> Result<(Option<PtValue>, Pending<'a>)> {
    match v {
        PtValue::Tensor(t) => {
            let pending = plan
                .before
                .remove(prefix)
                .unwrap_or_default()
                .into_iter()
                .map(|n| (n, Some(t.clone())))
                .collect();
            Ok((
                plan.out.get(prefix).map(|e| new_tensor(e, Some(t))),
                pending,
            ))
        }
        PtValue::Dict(d) => {
            let mut entries = Vec::with_capacity(d.entries.len());
            let mut removed = false;
            let mut unplaced = Vec::new();
            let taken: BTreeSet<String> =
                d.entries.iter().filter_map(|(k, _)| key_name(k)).collect();
            for (k, child) in &d.entries {
                let Some(name) = key_name(k) else {
                    entries.push((k.clone(), child.clone()));
                    continue;
                };
                let (rebuilt, pending) = rebuild(child, &join(prefix, &name), plan)?;
                // New tensors go just before the entry they came from, if their names are
                // below this dict and their keys are free in it.
                for (n, like) in pending {
                    let key = if prefix.is_empty() {
                        Some(n.name.as_str())
                    } else {
                        n.name
                            .strip_prefix(prefix)
                            .and_then(|r| r.strip_prefix('.'))
                    };
                    match key {
                        Some(key) if !taken.contains(key) => {
                            plan.placed.insert(n.name.as_str());
                            entries.push((
                                PtValue::Str(key.to_string()),
                                new_tensor(n, like.as_ref()),
                            ));
                        }
                        _ => unplaced.push((n, like)),
                    }
                }
                match rebuilt {
                    Some(c) => entries.push((k.clone(), c)),
                    None => removed = true,
                }
            }
            let value = if removed && entries.is_empty() {
                None
            } else {
                Some(PtValue::Dict(PtDict {
                    entries,
                    ordered: d.ordered,
                    state: d.state.clone(),
                }))
            };
            Ok((value, unplaced))
        }
        PtValue::List(items) | PtValue::Tuple(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut unplaced = Vec::new();
            for (i, x) in items.iter().enumerate() {
                let at = join(prefix, &i.to_string());
                let (rebuilt, pending) = rebuild(x, &at, plan)?;
                unplaced.extend(pending);
                match rebuilt {
                    Some(c) => out.push(c),
                    None => {
                        return Err(TorchError::Unwritable {
                            reason: format!(
                                "`{at}` is in a list, and removing it would renumber the rest"
                            ),
                        });
                    }
                }
            }
            let value = match v {
                PtValue::List(_) => PtValue::List(out),
                _ => PtValue::Tuple(out),
            };
            Ok((Some(value), unplaced))
        }
        other => Ok((Some(other.clone()), Vec::new())),
    }
}

/// `tensors` as a dict of tensors by name (an `OrderedDict` when `ordered`), in their order.
fn state_dict_tree(tensors: Vec<TensorEntry>, ordered: bool) -> PtValue {
    PtValue::Dict(PtDict {
        entries: tensors
            .into_iter()
            .map(|t| {
                (
                    PtValue::Str(t.name.clone()),
                    PtValue::Tensor(PtTensor {
                        entry: t,
                        requires_grad: false,
                        parameter: false,
                    }),
                )
            })
            .collect(),
        ordered,
        state: None,
    })
}
