//! The whole of a PyTorch checkpoint, as `torch.load(weights_only=True)` gives it: nested
//! dicts, lists and tuples of tensors, numbers, strings and the few other values a
//! checkpoint holds (devices, dtypes, sets, `torch.Size`s).
//!
//! A training checkpoint holds more than one state dict (`{'generator': ..., 'discriminator':
//! ..., 'optim_g': ..., 'steps': 1000}`): the tree keeps all of it, so that one state dict can
//! be rewritten while every other entry is carried over unchanged
//! ([`Checkpoint`](super::Checkpoint) with a `.pt` output). Values are owned: shared
//! references in the pickle are copied, within a budget proportional to the pickle's size,
//! and a container that contains itself is refused.

use std::collections::HashMap;

use super::TensorEntry;

/// A value of a PyTorch checkpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PtValue {
    /// `None`.
    None,
    /// A `bool`.
    Bool(bool),
    /// An `int` that fits an `i64`.
    Int(i64),
    /// A wider `int`: its little-endian two's complement bytes.
    BigInt(Vec<u8>),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// `bytes` (or a `bytearray`).
    Bytes(Vec<u8>),
    /// A tensor (or a `torch.nn.Parameter`).
    Tensor(PtTensor),
    /// A `list`.
    List(Vec<PtValue>),
    /// A `tuple`.
    Tuple(Vec<PtValue>),
    /// A `set`.
    Set(Vec<PtValue>),
    /// A `frozenset`.
    FrozenSet(Vec<PtValue>),
    /// A `torch.Size`.
    Size(Vec<PtValue>),
    /// A `dict` or `collections.OrderedDict`.
    Dict(PtDict),
    /// A class or dtype the checkpoint names, as `module.name` (`torch.float32`).
    Global(String),
    /// A `torch.device` (`cpu`, `cuda:0`).
    Device(String),
}

/// A dict of a PyTorch checkpoint.
#[derive(Clone, Debug, Default)]
pub struct PtDict {
    /// The entries, in insertion order, each key once (as Python keeps it: the last value
    /// given, at the first key's place).
    pub entries: Vec<(PtValue, PtValue)>,
    /// Whether it is a `collections.OrderedDict` (as `state_dict()` returns).
    pub ordered: bool,
    /// The state it was built with: an `OrderedDict`'s attributes (a state dict's `_metadata`).
    pub state: Option<Box<PtValue>>,
}

/// A tensor of a PyTorch checkpoint.
#[derive(Clone, Debug)]
pub struct PtTensor {
    /// Its dtype, shape and bytes (for a tensor read from a file, the view of its storage,
    /// which a `.pt` writer keeps, so that tensors sharing a storage still do).
    pub entry: TensorEntry,
    /// Whether it requires a gradient.
    pub requires_grad: bool,
    /// Whether it is a `torch.nn.Parameter`.
    pub parameter: bool,
}

impl PtValue {
    /// The Python type it stands for (`dict`, `int`, `torch.Tensor`, ...), for messages.
    pub fn type_name(&self) -> &str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "bool",
            Self::Int(_) | Self::BigInt(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::Bytes(_) => "bytes",
            Self::Tensor(t) if t.parameter => "torch.nn.Parameter",
            Self::Tensor(_) => "torch.Tensor",
            Self::List(_) => "list",
            Self::Tuple(_) => "tuple",
            Self::Set(_) => "set",
            Self::FrozenSet(_) => "frozenset",
            Self::Size(_) => "torch.Size",
            Self::Dict(d) if d.ordered => "OrderedDict",
            Self::Dict(_) => "dict",
            Self::Global(g) => g,
            Self::Device(_) => "torch.device",
        }
    }

    /// The containers' items (dict values, sequence items), for walks.
    fn children(&self) -> Box<dyn Iterator<Item = (Option<String>, &PtValue)> + '_> {
        match self {
            Self::Dict(d) => Box::new(d.entries.iter().map(|(k, v)| (key_name(k), v))),
            Self::List(v) | Self::Tuple(v) => {
                Box::new(v.iter().enumerate().map(|(i, x)| (Some(i.to_string()), x)))
            }
            Self::Set(v) | Self::FrozenSet(v) | Self::Size(v) => {
                Box::new(v.iter().map(|x| (None, x)))
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    /// How many tensors are below (or are) this value.
    pub fn count_tensors(&self) -> usize {
        match self {
            Self::Tensor(_) => 1,
            _ => self.children().map(|(_, v)| v.count_tensors()).sum(),
        }
    }

    /// Whether every leaf below this value is a tensor (dicts, lists and tuples of tensors):
    /// what a state dict is.
    pub fn only_tensors(&self) -> bool {
        match self {
            Self::Tensor(_) => true,
            Self::Dict(_) | Self::List(_) | Self::Tuple(_) => self
                .children()
                .all(|(k, v)| k.is_some() && v.only_tensors()),
            _ => false,
        }
    }

    /// The tensors below this value by their dotted names (dict keys, sequence indices).
    pub fn tensors(&self) -> Vec<(String, &PtTensor)> {
        let mut out = Vec::new();
        walk_tensors(self, &mut Vec::new(), &mut out);
        out
    }

    /// The dotted names of the leaves below this value that are not tensors (and of values
    /// below keys that no dotted name can spell): what a file of tensors cannot hold.
    pub fn non_tensors(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        walk_others(self, &mut Vec::new(), &mut out);
        out
    }

    /// The value under the dict keys `path`, each the last entry of that name.
    pub fn get(&self, path: &[String]) -> Option<&PtValue> {
        let mut at = self;
        for k in path {
            let Self::Dict(d) = at else { return None };
            at = d
                .entries
                .iter()
                .rev()
                .find(|(key, _)| key_name(key).as_deref() == Some(k.as_str()))
                .map(|(_, v)| v)?;
        }
        Some(at)
    }

    /// The value under the dict keys `path`, mutably.
    pub(crate) fn get_mut(&mut self, path: &[String]) -> Option<&mut PtValue> {
        let mut at = self;
        for k in path {
            let Self::Dict(d) = at else { return None };
            at = d
                .entries
                .iter_mut()
                .rev()
                .find(|(key, _)| key_name(key).as_deref() == Some(k.as_str()))
                .map(|(_, v)| v)?;
        }
        Some(at)
    }
}

/// A dict key as a name: strings, and integers as Python prints them.
pub(crate) fn key_name(k: &PtValue) -> Option<String> {
    match k {
        PtValue::Str(s) => Some(s.clone()),
        PtValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn walk_tensors<'a>(
    v: &'a PtValue,
    prefix: &mut Vec<String>,
    out: &mut Vec<(String, &'a PtTensor)>,
) {
    match v {
        PtValue::Tensor(t) => out.push((prefix.join("."), t)),
        PtValue::Dict(_) | PtValue::List(_) | PtValue::Tuple(_) => {
            for (k, child) in v.children() {
                if let Some(k) = k {
                    prefix.push(k);
                    walk_tensors(child, prefix, out);
                    prefix.pop();
                }
            }
        }
        _ => {}
    }
}

fn walk_others<'a>(v: &'a PtValue, prefix: &mut Vec<String>, out: &mut Vec<(String, &'a str)>) {
    match v {
        PtValue::Tensor(_) => {}
        PtValue::Dict(_) | PtValue::List(_) | PtValue::Tuple(_) => {
            for (k, child) in v.children() {
                match k {
                    Some(k) => {
                        prefix.push(k);
                        walk_others(child, prefix, out);
                        prefix.pop();
                    }
                    None => out.push((prefix.join("."), v.type_name())),
                }
            }
        }
        other => out.push((prefix.join("."), other.type_name())),
    }
}

/// Python's dict semantics for keys given twice: the last value, at the first key's place.
/// Keys that are not strings or integers are kept as given.
pub(crate) fn dedup_keys(entries: Vec<(PtValue, PtValue)>) -> Vec<(PtValue, PtValue)> {
    let mut at: HashMap<(bool, String), usize> = HashMap::new();
    let mut out: Vec<(PtValue, PtValue)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let id = match &k {
            PtValue::Str(s) => Some((true, s.clone())),
            PtValue::Int(i) => Some((false, i.to_string())),
            _ => None,
        };
        match id {
            Some(id) => match at.get(&id) {
                Some(&i) => out[i].1 = v,
                None => {
                    at.insert(id, out.len());
                    out.push((k, v));
                }
            },
            None => out.push((k, v)),
        }
    }
    out
}
