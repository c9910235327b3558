//! Opening a checkpoint: one file ([`Checkpoint::open_file`]: safetensors or PyTorch), or a
//! sharded checkpoint's index.
//!
//! Sharded checkpoints, as transformers' `save_pretrained(max_shard_size=...)` writes them: an
//! index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) whose `weight_map`
//! names, for every tensor, the shard file beside it that holds it. Read as one checkpoint, so
//! that a weight-norm pair split across two shards is a pair; written back sharded the same way
//! (each tensor in the shard of the tensor it was made from) with a new index.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use super::checkpoint::{Shard, Sharding, is_index};
use super::{Checkpoint, OpenOptions, Result, TorchError};

/// The most bytes an index file may have (transformers' indexes of the largest models are a
/// few megabytes).
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Whether `name` is a plain file name (no directory, no `..`): what an index may name.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name)
}

impl Checkpoint {
    /// Opens a checkpoint with the default [`OpenOptions`] and the given `key`: see
    /// [`open_with`](Self::open_with).
    ///
    /// # Errors
    ///
    /// As [`open_with`](Self::open_with).
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self> {
        Self::open_with(
            path,
            &OpenOptions {
                key: key.map(str::to_string),
                ..OpenOptions::default()
            },
        )
    }

    /// Opens a checkpoint: a sharded checkpoint's index (`*.index.json`) with its shards, read
    /// as one; or one file, its format recognised from its first bytes: a zip archive
    /// (`torch.save` since PyTorch 1.6), the legacy pickle stream (`torch.save` before 1.6, or
    /// with `_use_new_zipfile_serialization=False`) and the older tar archive are PyTorch
    /// checkpoints; anything else is read as safetensors.
    ///
    /// For a PyTorch checkpoint, `options.key` picks a nested state dict (`"model"`,
    /// `"state_dict"`, or a dotted path such as `"model.generator"`); without one, a file whose
    /// top level is a single dict under one key is opened at that key. Tensors in nested dicts
    /// and lists are named by their dotted path below the state dict.
    ///
    /// # Errors
    ///
    /// [`TorchError::Read`] when the file cannot be read, [`TorchError::Invalid`] when it is not a
    /// valid checkpoint (bad header, offsets out of bounds or overlapping, sizes that do not add
    /// up, an archive or pickle that does not parse), [`TorchError::Key`] for a missing key,
    /// [`TorchError::AmbiguousKey`] for a dotted key that names two places,
    /// [`TorchError::NotADict`] for a key that names something other than a dict,
    /// [`TorchError::DuplicateName`] when two entries of a nested checkpoint flatten to one
    /// name, [`TorchError::TooLarge`] for a tensor larger than `options.max_tensor_bytes`.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Self> {
        if !is_index(path) {
            return Self::open_file(path, options);
        }
        if let Some(key) = &options.key {
            return Err(TorchError::Index {
                path: path.display().to_string(),
                reason: format!(
                    "the shards of a sharded checkpoint are state dicts: the key `{}` does not apply",
                    super::shorten(key, super::NAME_WIDTH)
                ),
            });
        }
        open_index(path, options)
    }
}

/// Opens the sharded checkpoint whose index is `path`.
fn open_index(path: &Path, options: &OpenOptions) -> Result<Checkpoint> {
    let shown = path.display().to_string();
    let bad = |reason: String| TorchError::Index {
        path: shown.clone(),
        reason,
    };
    let read_err = |source| TorchError::Read {
        path: shown.clone(),
        source,
    };
    let file = super::open_regular(path).map_err(read_err)?;
    let mut text = Vec::new();
    file.take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_INDEX_BYTES {
        return Err(bad(format!(
            "the index is larger than {} MB",
            MAX_INDEX_BYTES >> 20
        )));
    }
    let doc: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("the index is not valid JSON ({e})")))?;
    let map = doc
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("the index has no `weight_map` object".into()))?;
    let index_metadata = match doc.get("metadata") {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad("the index's `metadata` is not an object".into())),
    };
    let mut files: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            bad(format!(
                "the shard of `{}` is not a file name",
                super::shorten(name, super::NAME_WIDTH)
            ))
        })?;
        if !plain_file_name(file) || is_index(Path::new(file)) {
            return Err(bad(format!(
                "the shard `{}` is not a plain file name beside the index",
                super::shorten(file, super::NAME_WIDTH)
            )));
        }
        files.entry(file).or_default().push(name);
    }
    if files.is_empty() {
        return Err(bad("the index names no shard".into()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tensors = Vec::new();
    let mut shards = Vec::new();
    let mut formats = Vec::new();
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (file, mut names) in files {
        let shard_path = dir.join(file);
        let ckpt = Checkpoint::open_file(
            &shard_path,
            &OpenOptions {
                key: None,
                max_tensor_bytes: options.max_tensor_bytes,
            },
        )?;
        if ckpt.sharding.is_some() || !ckpt.others().is_empty() {
            return Err(bad(format!(
                "the shard {file} holds more than a state dict of tensors"
            )));
        }
        names.sort_unstable();
        let held: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
        if let Some(missing) = names.iter().find(|n| ckpt.get(n).is_none()) {
            return Err(bad(format!(
                "the index puts `{}` in {file}, which does not hold it",
                super::shorten(missing, super::NAME_WIDTH)
            )));
        }
        if let Some(extra) = held.iter().find(|n| names.binary_search(n).is_err()) {
            return Err(bad(format!(
                "{file} holds `{}`, which the index puts elsewhere or nowhere",
                super::shorten(extra, super::NAME_WIDTH)
            )));
        }
        for t in &ckpt.tensors {
            if owner.insert(t.name.clone(), shards.len()).is_some() {
                return Err(bad(format!(
                    "`{}` is in two shards",
                    super::shorten(&t.name, super::NAME_WIDTH)
                )));
            }
        }
        formats.push(ckpt.format);
        shards.push(Shard {
            file: file.to_string(),
            tensors: held.iter().map(|s| s.to_string()).collect(),
            metadata: ckpt.metadata.clone(),
        });
        tensors.extend(ckpt.tensors);
    }
    let format = formats[0];
    if formats.iter().any(|f| *f != format) {
        return Err(bad("the shards are of different formats".into()));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    // Metadata shared by every shard (transformers writes `{"format": "pt"}` in each).
    let first = shards[0].metadata.clone();
    let metadata = if shards.iter().all(|s| s.metadata == first) {
        first
    } else {
        None
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format,
        key: None,
        tensors,
        metadata,
        root: None,
        key_path: Vec::new(),
        sharding: Some(Sharding {
            index: path.to_path_buf(),
            metadata: index_metadata,
            shards,
            format,
        }),
    })
}
