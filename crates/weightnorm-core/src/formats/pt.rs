//! PyTorch checkpoints: which container a file is, the state dict a key names, and the
//! tensors below it, each under one name.
//!
//! Both containers `torch.save` writes are read here from a memory map: the zip archive
//! ([`zipfile`](super::zipfile)) and the legacy stream ([`legacy`](super::legacy)), their
//! pickles by the restricted unpickler of [`pickle`](super::pickle), which calls nothing.
//! On top: format detection that does not mistake a legacy file for safetensors, dotted keys
//! through nested dicts, a refusal of two entries that flatten to one name, and tensors
//! checked to lie within their storages before anything is read.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;
use safetensors::Dtype;

use super::pickle::{Pickle, TensorRef, Value, element_size, unpickle};
use super::{PtError, Result, TorchError, legacy, zipfile};
/// How many leading bytes [`detect`] looks at.
pub(crate) const HEAD_LEN: usize = 512;

/// What a file's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// A zip archive, a legacy pickle stream or a tar archive written by `torch.save`.
    PyTorch,
    /// Anything else: read (and validated) as safetensors.
    SafeTensors,
}

/// The magic number 0x1950a86a20f9469cfc6c that opens a legacy `torch.save` stream, as
/// pickle protocols 2 and up write it (little-endian, inside a `LONG1`).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The same number as protocols 0 and 1 write it (decimal text of a `LONG`).
const LEGACY_MAGIC_TEXT: &[u8] = b"119547037146038801333356";
/// Where the magic number must start: protocol 4 puts a `PROTO` and a `FRAME` before it.
const LEGACY_MAGIC_WITHIN: usize = 64;
/// Where a tar header has its `ustar` magic.
const TAR_MAGIC_AT: usize = 257;

/// Recognises a PyTorch checkpoint by its first bytes (at most [`HEAD_LEN`]).
pub(crate) fn detect(head: &[u8]) -> Detected {
    let window = &head[..head.len().min(LEGACY_MAGIC_WITHIN)];
    let legacy = window
        .windows(LEGACY_MAGIC.len())
        .any(|w| w == LEGACY_MAGIC)
        || window
            .windows(LEGACY_MAGIC_TEXT.len())
            .any(|w| w == LEGACY_MAGIC_TEXT);
    let zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    let tar = head.get(TAR_MAGIC_AT..TAR_MAGIC_AT + 5) == Some(b"ustar");
    if zip || tar || (legacy && !starts_like_safetensors(head)) {
        Detected::PyTorch
    } else {
        Detected::SafeTensors
    }
}

/// Whether `head` opens as a safetensors file does: a little-endian header length within the
/// format's limit, then `{`. (A 128-byte header's length starts with `0x80`, pickle's `PROTO`.)
fn starts_like_safetensors(head: &[u8]) -> bool {
    head.first_chunk::<8>()
        .is_some_and(|b| u64::from_le_bytes(*b) <= 100_000_000 && head.get(8) == Some(&b'{'))
}

/// The bytes of one storage in the file.
pub(crate) struct StorageBytes {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
    /// The zip entry's name and CRC-32, checked once on first read.
    crc: Option<(String, u32)>,
    verified: OnceLock<bool>,
}

impl StorageBytes {
    fn bytes(&self) -> Result<&[u8], PtError> {
        let b = &self.map[self.start..self.start + self.len];
        if let Some((name, crc)) = &self.crc
            && !*self.verified.get_or_init(|| zipfile::crc32(b) == *crc)
        {
            return Err(PtError::Crc(name.clone()));
        }
        Ok(b)
    }

    pub(crate) fn release(&self) {
        let page = 4096;
        let from = self.start.div_ceil(page) * page;
        let end = self.start + self.len;
        if end > from {
            // SAFETY: the map is read-only and private to this process; dropping its pages
            // only makes later reads fault them in again from the file, which is unchanged.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    from,
                    end - from,
                )
            };
        }
    }
}

/// A tensor of a PyTorch checkpoint: a strided view of a storage, checked to lie within it.
#[derive(Clone)]
pub(crate) struct Stored {
    storage: Arc<StorageBytes>,
    elem: usize,
    /// The offset of the first element, in elements.
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl Stored {
    /// The tensor's bytes, contiguous: borrowed from the map when the view is, else gathered.
    pub(crate) fn bytes(&self) -> Result<Cow<'_, [u8]>, PtError> {
        let s = self.storage.bytes()?;
        let numel: usize = self.shape.iter().product();
        let e = self.elem;
        let mut expected = 1;
        let contiguous = self.shape.iter().zip(&self.stride).rev().all(|(&n, &st)| {
            let ok = n == 1 || st == expected;
            expected *= n;
            ok
        });
        if contiguous || numel == 0 {
            let from = self.offset * e;
            return Ok(Cow::Borrowed(&s[from..from + numel * e]));
        }
        let mut out = Vec::with_capacity(numel * e);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..numel {
            let at: usize = self.offset
                + index
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, st)| i * st)
                    .sum::<usize>();
            out.extend_from_slice(&s[at * e..(at + 1) * e]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(Cow::Owned(out))
    }

    pub(crate) fn release(&self) {
        self.storage.release();
    }
}

/// The tensors of a PyTorch checkpoint's state dict, by their dotted names below it.
pub(crate) struct PtTensors {
    /// The key of the state dict, as given or as picked (`None`: the whole file).
    pub key: Option<String>,
    /// The tensors, by name, with their dtype and shape.
    pub tensors: BTreeMap<String, (Dtype, Vec<usize>, Stored)>,
}

/// How deep containers may nest, and how many a walk may visit (shared references are
/// visited once per reference): a bound on work for hostile pickles.
const MAX_DEPTH: usize = 256;
const MAX_VISITS: usize = 1 << 22;

/// A dict key as a name: strings, and integers as Python prints them.
fn key_str(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The tensors below `v` by their dotted names (dicts by key, lists and tuples by index).
fn flatten(
    p: &Pickle,
    v: &Value,
    prefix: &mut Vec<String>,
    out: &mut Vec<(String, std::rc::Rc<TensorRef>)>,
    visits: &mut usize,
) -> Result<(), PtError> {
    *visits += 1;
    if prefix.len() > MAX_DEPTH || *visits > MAX_VISITS {
        return Err(PtError::TooDeep);
    }
    match v {
        Value::Dict(id) => {
            for (k, v) in p.map(*id) {
                if let Some(k) = key_str(k) {
                    prefix.push(k);
                    flatten(p, v, prefix, out, visits)?;
                    prefix.pop();
                }
            }
        }
        Value::List(id) | Value::Tuple(id) => {
            for (i, v) in p.seq(*id).iter().enumerate() {
                prefix.push(i.to_string());
                flatten(p, v, prefix, out, visits)?;
                prefix.pop();
            }
        }
        Value::Tensor(t) => out.push((prefix.join("."), t.clone())),
        _ => {}
    }
    Ok(())
}

/// Every way of reading `key` as a path of dict keys from `v` (a key may itself hold dots).
fn resolve(p: &Pickle, v: &Value, key: &str, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let Value::Dict(id) = v else { return };
    if path.len() > MAX_DEPTH {
        return;
    }
    for (k, child) in p.map(*id) {
        let Some(k) = key_str(k) else { continue };
        if k == key {
            path.push(k);
            found.push(path.clone());
            path.pop();
        } else if let Some(rest) = key
            .strip_prefix(k.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            path.push(k);
            resolve(p, child, rest, path, found);
            path.pop();
        }
    }
}

/// The child of dict `v` under `k` (the last entry of that name, as Python keeps it).
fn child<'a>(p: &'a Pickle, v: &Value, k: &str) -> Option<&'a Value> {
    let Value::Dict(id) = v else { return None };
    p.map(*id)
        .iter()
        .rev()
        .find(|(key, _)| key_str(key).as_deref() == Some(k))
        .map(|(_, v)| v)
}

/// The Python type a pickle value stands for, for error messages.
fn type_name(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(_) => "bool".into(),
        Value::Int(_) | Value::BigInt => "int".into(),
        Value::Float => "float".into(),
        Value::Str(_) => "str".into(),
        Value::Bytes => "bytes".into(),
        Value::Global(g) => g.to_string(),
        Value::Storage(_) => "torch.Storage".into(),
        Value::Tensor(_) => "torch.Tensor".into(),
        Value::Other(t) => (*t).into(),
        Value::List(_) => "list".into(),
        Value::Tuple(_) => "tuple".into(),
        Value::Dict(_) => "dict".into(),
    }
}

/// Where a storage key's bytes are: start, length, and the zip entry's name and CRC-32.
type Locate = dyn Fn(&str) -> Option<(usize, usize, Option<(String, u32)>)>;

/// Reads the state dict under `key` (see [`OpenOptions::key`](super::OpenOptions::key)) from
/// the file mapped in `map`, which [`detect`] found to be a PyTorch checkpoint.
pub(crate) fn read(path: &str, map: Arc<Mmap>, key: Option<&str>) -> Result<PtTensors> {
    let pt = |source| TorchError::Pt {
        path: path.to_string(),
        source,
    };
    let d: &[u8] = &map;
    let mut pickle = Pickle::default();
    // Where each storage key's bytes are.
    let locate: Box<Locate>;
    let root = if d.starts_with(b"PK") {
        let archive = zipfile::read(d).map_err(pt)?;
        let root_dir = archive
            .entries
            .keys()
            .filter_map(|n| n.strip_suffix("data.pkl"))
            .filter(|r| r.is_empty() || r.ends_with('/'))
            .min_by_key(|r| (r.len(), r.to_string()))
            .map(str::to_string)
            .ok_or(pt(PtError::NoPickle))?;
        if let Some(e) = archive.entries.get(&format!("{root_dir}byteorder"))
            && d[e.start..e.start + e.len].trim_ascii() == b"big"
        {
            return Err(pt(PtError::BigEndian));
        }
        let e = archive.entries[&format!("{root_dir}data.pkl")];
        let bytes = &d[e.start..e.start + e.len];
        if zipfile::crc32(bytes) != e.crc {
            return Err(pt(PtError::Crc(format!("{root_dir}data.pkl"))));
        }
        let (root, _) = unpickle(bytes, &mut pickle, &mut |_| Ok(())).map_err(pt)?;
        let entries = archive.entries;
        locate = Box::new(move |k| {
            let name = format!("{root_dir}data/{k}");
            entries
                .get(&name)
                .map(|e| (e.start, e.len, Some((name, e.crc))))
        });
        root
    } else if d.get(TAR_MAGIC_AT..TAR_MAGIC_AT + 5) == Some(b"ustar") {
        return Err(pt(PtError::Tar));
    } else {
        let l = legacy::read(d).map_err(pt)?;
        pickle = l.pickle;
        let storages = l.storages;
        locate = Box::new(move |k| storages.get(k).map(|s| (s.start, s.len, None)));
        l.root
    };
    let top = match &root {
        v @ Value::Dict(_) => v,
        other => {
            return Err(TorchError::NotADict {
                path: path.to_string(),
                key: None,
                found: type_name(other),
            });
        }
    };
    let segments: Vec<String> = match key {
        Some(k) => {
            let mut found = Vec::new();
            resolve(&pickle, top, k, &mut Vec::new(), &mut found);
            found.sort();
            found.dedup();
            match found.len() {
                1 => found.pop().expect("one"),
                0 => {
                    let Value::Dict(id) = top else { unreachable!() };
                    let mut available: Vec<String> = pickle
                        .map(*id)
                        .iter()
                        .filter_map(|(k, _)| key_str(k))
                        .collect();
                    available.sort_unstable();
                    available.dedup();
                    return Err(TorchError::Key {
                        path: path.to_string(),
                        key: k.to_string(),
                        reason: format!("the top-level keys are {}", available.join(", ")),
                    });
                }
                _ => {
                    return Err(TorchError::AmbiguousKey {
                        path: path.to_string(),
                        key: k.to_string(),
                        first: found[0].clone(),
                        second: found[1].clone(),
                    });
                }
            }
        }
        None => {
            let Value::Dict(id) = top else { unreachable!() };
            match pickle.map(*id) {
                [(k, Value::Dict(_))] => key_str(k).into_iter().collect(),
                _ => Vec::new(),
            }
        }
    };
    let mut target = top;
    for s in &segments {
        target = child(&pickle, target, s).expect("resolved");
    }
    let key = (!segments.is_empty()).then(|| segments.join("."));
    if !matches!(target, Value::Dict(_)) {
        return Err(TorchError::NotADict {
            path: path.to_string(),
            key,
            found: type_name(target),
        });
    }
    let mut found = Vec::new();
    flatten(&pickle, target, &mut Vec::new(), &mut found, &mut 0).map_err(pt)?;
    let mut storages: HashMap<String, Arc<StorageBytes>> = HashMap::new();
    let mut tensors = BTreeMap::new();
    for (name, t) in found {
        let storage = match storages.get(&t.storage.key) {
            Some(s) => Arc::clone(s),
            None => {
                let (start, len, crc) = locate(&t.storage.key)
                    .ok_or_else(|| pt(PtError::MissingStorage(t.storage.key.clone())))?;
                let s = Arc::new(StorageBytes {
                    map: Arc::clone(&map),
                    start,
                    len,
                    crc,
                    verified: OnceLock::new(),
                });
                storages.insert(t.storage.key.clone(), Arc::clone(&s));
                s
            }
        };
        let elem = element_size(t.storage.dtype);
        let offset = t
            .offset
            .checked_add(t.storage.view_offset)
            .ok_or_else(|| pt(PtError::OutsideStorage(name.clone())))?;
        // The last element the view reaches must lie within the storage (and the file).
        let numel = t.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
        let reach = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(offset, |a, (&n, &s)| {
                a.checked_add(n.saturating_sub(1).checked_mul(s)?)
            });
        let fits = match (numel, reach) {
            (Some(0), _) => offset
                .checked_mul(elem)
                .is_some_and(|b| b <= len_of(&storage)),
            (Some(_), Some(last)) => last
                .checked_add(1)
                .and_then(|n| n.checked_mul(elem))
                .is_some_and(|b| b <= len_of(&storage)),
            _ => false,
        };
        if !fits {
            return Err(pt(PtError::OutsideStorage(name)));
        }
        let entry = (
            t.storage.dtype,
            t.shape.clone(),
            Stored {
                storage,
                elem,
                offset,
                shape: t.shape.clone(),
                stride: t.stride.clone(),
            },
        );
        if tensors.insert(name.clone(), entry).is_some() {
            return Err(TorchError::DuplicateName {
                path: path.to_string(),
                name,
            });
        }
    }
    Ok(PtTensors { key, tensors })
}

fn len_of(s: &StorageBytes) -> usize {
    s.len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        let mut legacy = vec![0x80, 0x02, 0x8a, 0x0a];
        legacy.extend_from_slice(&LEGACY_MAGIC);
        assert_eq!(detect(&legacy), Detected::PyTorch);
        assert_eq!(detect(b"PK\x03\x04rest"), Detected::PyTorch);
        assert_eq!(detect(b""), Detected::SafeTensors);
        // A safetensors file whose 128-byte header length starts like a pickle.
        let mut st = 128u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":");
        assert_eq!(detect(&st), Detected::SafeTensors);
    }

    #[test]
    fn dotted_keys_resolve_every_way() {
        // {"model": {"generator": {"w": 1}}, "model.generator": {}}
        let mut p = Pickle::default();
        p.nodes.push(super::super::pickle::Node::Map(vec![(
            Value::Str("w".into()),
            Value::Int(1),
        )]));
        p.nodes.push(super::super::pickle::Node::Map(vec![(
            Value::Str("generator".into()),
            Value::Dict(0),
        )]));
        p.nodes.push(super::super::pickle::Node::Map(vec![]));
        p.nodes.push(super::super::pickle::Node::Map(vec![
            (Value::Str("model".into()), Value::Dict(1)),
            (Value::Str("model.generator".into()), Value::Dict(2)),
        ]));
        let mut found = Vec::new();
        resolve(
            &p,
            &Value::Dict(3),
            "model.generator",
            &mut Vec::new(),
            &mut found,
        );
        found.sort();
        assert_eq!(
            found,
            vec![
                vec!["model".to_string(), "generator".to_string()],
                vec!["model.generator".to_string()],
            ]
        );
    }
}
