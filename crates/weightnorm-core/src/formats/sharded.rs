//! Sharded checkpoints, as transformers' `save_pretrained(max_shard_size=...)` writes them: an
//! index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) whose `weight_map`
//! names, for every tensor, the shard file beside it that holds it. Read as one checkpoint, so
//! that a weight-norm pair split across two shards is a pair; written back sharded the same way
//! (each tensor in the shard of the tensor it was made from) with a new index.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::checkpoint::Format;
use super::{Checkpoint, OpenOptions, Result, TorchError};

/// The most bytes an index file may have (transformers' indexes of the largest models are a
/// few megabytes).
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// One shard of a sharded checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its file name, beside the index.
    pub file: String,
    /// The tensors it holds, by name.
    pub tensors: Vec<String>,
    /// Its safetensors `__metadata__`, if any.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The index and shards of a sharded checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Sharding {
    /// The index file.
    pub index: PathBuf,
    /// The index's `metadata` object as it was (its `total_size` is recomputed when written).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The shards, in the order of their file names.
    pub shards: Vec<Shard>,
    /// The shards' format.
    pub format: Format,
}

impl Sharding {
    /// The index of the shard holding the tensor `name`.
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.shards
            .iter()
            .position(|s| s.tensors.iter().any(|t| t == name))
    }
}

/// Whether `path` names a sharded checkpoint's index (`*.index.json`).
pub(crate) fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
}

/// Whether `name` is a plain file name (no directory, no `..`): what an index may name.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name)
}

/// Opens the sharded checkpoint whose index is `path`.
pub(crate) fn open(path: &Path, options: &OpenOptions) -> Result<Checkpoint> {
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
        let ckpt = Checkpoint::open_with(
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
