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

use super::pickle::{Pickle, TensorRef, Value, element_size, unpickle};
use super::tree::{PtDict, PtTensor, PtValue, dedup_keys, key_name};
use super::{EntrySummary, PtError, Result, TensorEntry, TorchError, legacy, zipfile};
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
    /// The storage's key in the file.
    key: String,
    /// The file, for messages.
    file: Arc<str>,
}

impl StorageBytes {
    fn bytes(&self, tensor: &str) -> Result<&[u8]> {
        let b = &self.map[self.start..self.start + self.len];
        if let Some((name, crc)) = &self.crc
            && !*self.verified.get_or_init(|| zipfile::crc32(b) == *crc)
        {
            return Err(TorchError::Damaged {
                path: self.file.to_string(),
                tensor: tensor.to_string(),
                source: PtError::Crc(name.clone()),
            });
        }
        Ok(b)
    }

    /// The storage's key and its whole bytes (checked), for a writer that keeps views.
    pub(crate) fn whole(&self, tensor: &str) -> Result<(&str, &[u8])> {
        Ok((&self.key, self.bytes(tensor)?))
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
    /// The storage, the offset of the first element and the strides, in elements.
    pub(crate) fn view(&self) -> (&Arc<StorageBytes>, usize, &[usize]) {
        (&self.storage, self.offset, &self.stride)
    }

    /// The tensor's bytes, contiguous: borrowed from the map when the view is, else gathered.
    pub(crate) fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let s = self.storage.bytes(name)?;
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

/// A PyTorch checkpoint read whole: the tree, where its state dict is, and that state dict's
/// tensors by their dotted names below it.
pub(crate) struct PtFile {
    /// The whole file.
    pub root: PtValue,
    /// The dict keys leading to the state dict (empty: the top level).
    pub key: Vec<String>,
    /// The state dict's tensors, by name.
    pub tensors: BTreeMap<String, TensorEntry>,
}

/// How deep containers may nest.
const MAX_DEPTH: usize = 256;
/// How many values the tree of a pickle may hold, beyond its length times
/// [`VALUES_PER_BYTE`]: shared references are copied, so a small pickle could otherwise
/// stand for an exponentially large tree.
const VALUES_BASE: usize = 1 << 20;
const VALUES_PER_BYTE: usize = 4;

/// Where a storage key's bytes are: start, length, and the zip entry's name and CRC-32.
type Locate = dyn Fn(&str) -> Option<(usize, usize, Option<(String, u32)>)>;

/// Builds the owned tree of a pickle, tensors checked against their storages.
struct Builder<'a> {
    pickle: &'a Pickle,
    map: &'a Arc<Mmap>,
    locate: &'a Locate,
    storages: HashMap<String, Arc<StorageBytes>>,
    path: Vec<String>,
    values_left: usize,
    file: &'a str,
    file_arc: Arc<str>,
}

impl Builder<'_> {
    fn pt(&self, source: PtError) -> TorchError {
        TorchError::Pt {
            path: self.file.to_string(),
            source,
        }
    }

    fn seq(&mut self, items: &[Value]) -> Result<Vec<PtValue>> {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                self.path.push(i.to_string());
                let r = self.value(v);
                self.path.pop();
                r
            })
            .collect()
    }

    fn value(&mut self, v: &Value) -> Result<PtValue> {
        self.values_left = self
            .values_left
            .checked_sub(1)
            .ok_or_else(|| self.pt(PtError::TooDeep))?;
        if self.path.len() > MAX_DEPTH {
            return Err(self.pt(PtError::TooDeep));
        }
        let p = self.pickle;
        Ok(match v {
            Value::None => PtValue::None,
            Value::Bool(b) => PtValue::Bool(*b),
            Value::Int(i) => PtValue::Int(*i),
            Value::BigInt(b) => PtValue::BigInt(b.to_vec()),
            Value::Float(x) => PtValue::Float(*x),
            Value::Str(s) => PtValue::Str(s.to_string()),
            Value::Bytes(b) => PtValue::Bytes(b.to_vec()),
            Value::Global(g) => PtValue::Global(g.to_string()),
            Value::Device(d) => PtValue::Device(d.to_string()),
            Value::Storage(_) => {
                return Err(self.pt(PtError::PickleType("a storage outside a tensor")));
            }
            Value::Tensor(t) => PtValue::Tensor(self.tensor(t)?),
            Value::List(id) => PtValue::List(self.seq(p.seq(*id))?),
            Value::Tuple(id) => PtValue::Tuple(self.seq(p.seq(*id))?),
            Value::Set(id) => PtValue::Set(self.seq(p.seq(*id))?),
            Value::FrozenSet(id) => PtValue::FrozenSet(self.seq(p.seq(*id))?),
            Value::Size(id) => PtValue::Size(self.seq(p.seq(*id))?),
            Value::Dict(id) => {
                let m = p.dict(*id).expect("a dict");
                let mut entries = Vec::with_capacity(m.entries.len());
                for (k, v) in &m.entries {
                    let key = self.value(k)?;
                    self.path.push(key_name(&key).unwrap_or_else(|| "?".into()));
                    let value = self.value(v);
                    self.path.pop();
                    entries.push((key, value?));
                }
                let state = match &m.state {
                    Some(s) => Some(Box::new(self.value(s)?)),
                    None => None,
                };
                PtValue::Dict(PtDict {
                    entries: dedup_keys(entries),
                    ordered: m.ordered,
                    state,
                })
            }
        })
    }

    fn tensor(&mut self, t: &TensorRef) -> Result<PtTensor> {
        let name = self.path.join(".");
        let storage = match self.storages.get(&t.storage.key) {
            Some(s) => Arc::clone(s),
            None => {
                let (start, len, crc) = (self.locate)(&t.storage.key)
                    .ok_or_else(|| self.pt(PtError::MissingStorage(t.storage.key.clone())))?;
                let s = Arc::new(StorageBytes {
                    map: Arc::clone(self.map),
                    start,
                    len,
                    crc,
                    verified: OnceLock::new(),
                    key: t.storage.key.clone(),
                    file: Arc::clone(&self.file_arc),
                });
                self.storages.insert(t.storage.key.clone(), Arc::clone(&s));
                s
            }
        };
        let elem = element_size(t.storage.dtype);
        let offset = t
            .offset
            .checked_add(t.storage.view_offset)
            .ok_or_else(|| self.pt(PtError::OutsideStorage(name.clone())))?;
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
            (Some(0), _) => offset.checked_mul(elem).is_some_and(|b| b <= storage.len),
            (Some(_), Some(last)) => last
                .checked_add(1)
                .and_then(|n| n.checked_mul(elem))
                .is_some_and(|b| b <= storage.len),
            _ => false,
        };
        if !fits {
            return Err(self.pt(PtError::OutsideStorage(name)));
        }
        Ok(PtTensor {
            entry: TensorEntry::from_pt(
                name,
                t.storage.dtype,
                t.shape.clone(),
                Stored {
                    storage,
                    elem,
                    offset,
                    shape: t.shape.clone(),
                    stride: t.stride.clone(),
                },
            ),
            requires_grad: t.requires_grad,
            parameter: t.parameter,
        })
    }
}

/// Every way of reading `key` as a path of dict keys from `v` (a key may itself hold dots);
/// at most `limit` of them. Each value of the tree has one path from the root, so the search
/// visits each at most once.
fn resolve(
    v: &PtValue,
    key: &str,
    path: &mut Vec<String>,
    found: &mut Vec<Vec<String>>,
    limit: usize,
) {
    let PtValue::Dict(d) = v else { return };
    for (k, child) in &d.entries {
        if found.len() >= limit {
            return;
        }
        let Some(k) = key_name(k) else { continue };
        if k == key {
            path.push(k);
            found.push(path.clone());
            path.pop();
        } else if let Some(rest) = key
            .strip_prefix(k.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            path.push(k);
            resolve(child, rest, path, found, limit);
            path.pop();
        }
    }
}

/// How many weight-norm pairs the tensor names spell (a `_g` beside its `_v`, an `original0`
/// beside its `original1`), for the listing of a file that is not a state dict. The pairs
/// themselves, with their shapes checked, are [`crate::surgery::detect_pairs`]'s.
fn count_pairs(names: &[String]) -> usize {
    let set: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    names
        .iter()
        .filter(|n| {
            let partner = if let Some(base) = n.strip_suffix("_g") {
                format!("{base}_v")
            } else if let Some(base) = n.strip_suffix(".original0") {
                format!("{base}.original1")
            } else {
                return false;
            };
            set.contains(partner.as_str())
        })
        .count()
}

/// What one entry of a dict holds, for listings.
pub(crate) fn summary(name: String, v: &PtValue) -> EntrySummary {
    let names: Vec<String> = v.tensors().into_iter().map(|(n, _)| n).collect();
    EntrySummary {
        name,
        kind: v.type_name().to_string(),
        tensors: v.count_tensors(),
        pairs: count_pairs(&names),
        nameable: matches!(v, PtValue::Dict(_)),
    }
}

/// The listing of a dict that is not a state dict: each entry, what it holds.
fn summarize(d: &PtDict) -> Vec<EntrySummary> {
    d.entries
        .iter()
        .map(|(k, v)| {
            let mut e = summary(
                key_name(k).unwrap_or_else(|| format!("<a {} key>", k.type_name())),
                v,
            );
            e.nameable &= key_name(k).is_some();
            e
        })
        .collect()
}

/// Reads the file mapped in `map` (which [`detect`] found to be a PyTorch checkpoint) whole.
pub(crate) fn read_root(path: &str, map: &Arc<Mmap>) -> Result<PtValue> {
    let pt = |source| TorchError::Pt {
        path: path.to_string(),
        source,
    };
    let d: &[u8] = map;
    let mut pickle = Pickle::default();
    // Where each storage key's bytes are.
    let locate: Box<Locate>;
    let pickle_len;
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
        pickle_len = bytes.len();
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
        pickle_len = l.pickle_len;
        let storages = l.storages;
        locate = Box::new(move |k| storages.get(k).map(|s| (s.start, s.len, None)));
        l.root
    };
    let mut builder = Builder {
        pickle: &pickle,
        map,
        locate: &*locate,
        storages: HashMap::new(),
        path: Vec::new(),
        values_left: pickle_len
            .saturating_mul(VALUES_PER_BYTE)
            .saturating_add(VALUES_BASE),
        file: path,
        file_arc: Arc::from(path),
    };
    builder.value(&root)
}

/// Reads the file mapped in `map` (which [`detect`] found to be a PyTorch checkpoint) whole,
/// and finds its state dict: the one `key` names (see
/// [`OpenOptions::key`](super::OpenOptions::key)), or, without a key, the top level (or the one
/// dict it holds, as far down as each level holds just one dict), which must then hold only
/// tensors.
pub(crate) fn read(path: &str, map: Arc<Mmap>, key: Option<&str>) -> Result<PtFile> {
    let root = read_root(path, &map)?;
    if !matches!(root, PtValue::Dict(_)) {
        return Err(TorchError::NotADict {
            path: path.to_string(),
            key: None,
            found: root.type_name().to_string(),
        });
    }
    let segments: Vec<String> = match key {
        Some(k) => {
            let mut found = Vec::new();
            resolve(&root, k, &mut Vec::new(), &mut found, 2);
            match found.len() {
                1 => found.pop().expect("one"),
                0 => {
                    let PtValue::Dict(top) = &root else {
                        unreachable!()
                    };
                    let mut available: Vec<String> = top
                        .entries
                        .iter()
                        .filter_map(|(k, _)| key_name(k))
                        .collect();
                    available.sort_unstable();
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
            // Down through levels that hold a single dict and nothing else.
            let mut at = Vec::new();
            while let Some(PtValue::Dict(d)) = root.get(&at)
                && let [(k, PtValue::Dict(_))] = d.entries.as_slice()
                && let Some(k) = key_name(k)
            {
                at.push(k);
            }
            at
        }
    };
    let target = root.get(&segments).expect("resolved");
    let joined = (!segments.is_empty()).then(|| segments.join("."));
    let PtValue::Dict(dict) = target else {
        return Err(TorchError::NotADict {
            path: path.to_string(),
            key: joined,
            found: target.type_name().to_string(),
        });
    };
    if key.is_none() && !target.only_tensors() {
        let entries = summarize(dict);
        let suggestion = entries
            .iter()
            .filter(|e| e.nameable && e.tensors > 0)
            .max_by_key(|e| (e.pairs, e.tensors))
            .map(|e| match &joined {
                Some(j) => format!("{j}.{}", e.name),
                None => e.name.clone(),
            });
        return Err(TorchError::NotAStateDict {
            path: path.to_string(),
            at: joined,
            entries,
            suggestion,
        });
    }
    let mut tensors = BTreeMap::new();
    for (name, t) in target.tensors() {
        let mut entry = t.entry.clone();
        entry.name.clone_from(&name);
        if tensors.insert(name.clone(), entry).is_some() {
            return Err(TorchError::DuplicateName {
                path: path.to_string(),
                name,
            });
        }
    }
    Ok(PtFile {
        root,
        key: segments,
        tensors,
    })
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

    fn dict(entries: Vec<(&str, PtValue)>) -> PtValue {
        PtValue::Dict(PtDict {
            entries: entries
                .into_iter()
                .map(|(k, v)| (PtValue::Str(k.into()), v))
                .collect(),
            ordered: false,
            state: None,
        })
    }

    #[test]
    fn dotted_keys_resolve_every_way() {
        // {"model": {"generator": {"w": 1}}, "model.generator": {}}
        let root = dict(vec![
            (
                "model",
                dict(vec![("generator", dict(vec![("w", PtValue::Int(1))]))]),
            ),
            ("model.generator", dict(vec![])),
        ]);
        let mut found = Vec::new();
        resolve(&root, "model.generator", &mut Vec::new(), &mut found, 10);
        found.sort();
        assert_eq!(
            found,
            vec![
                vec!["model".to_string(), "generator".to_string()],
                vec!["model.generator".to_string()],
            ]
        );
    }

    #[test]
    fn resolving_stops_at_the_second_reading() {
        // Keys "a", "a.a", "a.a.a", ... each holding the same shape again: many readings of
        // "a.a.a.a.a.a", but the search stops once two are found.
        let mut level = dict(vec![]);
        for _ in 0..6 {
            level = dict(vec![
                ("a", level.clone()),
                ("a.a", level.clone()),
                ("a.a.a", level),
            ]);
        }
        let mut found = Vec::new();
        resolve(&level, "a.a.a.a.a.a", &mut Vec::new(), &mut found, 2);
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn counts_pairs_by_name() {
        let names: Vec<String> = [
            "a_g",
            "a_v",
            "b_g",
            "c.original0",
            "c.original1",
            "d.original1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(count_pairs(&names), 2);
    }
}
