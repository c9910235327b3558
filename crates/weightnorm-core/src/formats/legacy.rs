//! The legacy `torch.save` stream (PyTorch 0.1.10 to 1.5, and later versions with
//! `_use_new_zipfile_serialization=False`): five pickles back to back (the magic number, the
//! protocol version 1001, the system info, the saved object with storages as persistent ids,
//! the list of storage keys) and then, for each key in that order, the storage's element
//! count as a little-endian `i64` followed by its bytes.

use std::collections::HashMap;

use super::PtError;
use super::pickle::{Pickle, StorageRef, Value, element_size, unpickle};

/// Where one storage's bytes are in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// The first byte.
    pub start: usize,
    /// The length in bytes.
    pub len: usize,
}

/// A parsed legacy file: the saved object and where each storage is.
pub(crate) struct Legacy {
    /// The arena of the saved object.
    pub pickle: Pickle,
    /// The saved object.
    pub root: Value,
    /// The storages by key.
    pub storages: HashMap<String, Span>,
    /// The length of the saved object's pickle.
    pub pickle_len: usize,
}

fn header(d: &[u8], pos: &mut usize) -> Result<(Value, Pickle), PtError> {
    let mut p = Pickle::default();
    let (v, n) = unpickle(&d[*pos..], &mut p, &mut |_: &StorageRef| {
        Err(PtError::Legacy("a persistent id in a header pickle"))
    })?;
    *pos += n;
    Ok((v, p))
}

/// Parses a legacy stream held in `d`.
pub(crate) fn read(d: &[u8]) -> Result<Legacy, PtError> {
    let mut pos = 0;
    let (magic, _) = header(d, &mut pos)?;
    if !matches!(magic, Value::BigInt(_)) {
        return Err(PtError::Legacy("the first pickle is not the magic number"));
    }
    let (protocol, _) = header(d, &mut pos)?;
    if !matches!(protocol, Value::Int(1001)) {
        return Err(PtError::Legacy("the protocol version is not 1001"));
    }
    let (info, p) = header(d, &mut pos)?;
    let Value::Dict(id) = info else {
        return Err(PtError::Legacy("the system info is not a dict"));
    };
    for (k, v) in p.map(id) {
        if matches!(k, Value::Str(s) if &**s == "little_endian") && !matches!(v, Value::Bool(true))
        {
            return Err(PtError::BigEndian);
        }
    }
    let mut pickle = Pickle::default();
    let mut elem: HashMap<String, usize> = HashMap::new();
    let (root, n) = unpickle(&d[pos..], &mut pickle, &mut |s: &StorageRef| {
        elem.entry(s.key.clone())
            .or_insert_with(|| element_size(s.dtype));
        Ok(())
    })?;
    pos += n;
    let pickle_len = n;
    let (keys, p) = header(d, &mut pos)?;
    let Value::List(id) = keys else {
        return Err(PtError::Legacy("the storage keys are not a list"));
    };
    let mut storages = HashMap::new();
    for k in p.seq(id) {
        let Value::Str(key) = k else {
            return Err(PtError::Legacy("a storage key is not a string"));
        };
        let size = *elem
            .get(&**key)
            .ok_or_else(|| PtError::UnknownStorage(key.to_string()))?;
        let count = d
            .get(pos..pos + 8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8")))
            .ok_or(PtError::Legacy("the storages end before their keys do"))?;
        pos += 8;
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(size))
            .filter(|&l| l <= d.len() - pos)
            .ok_or_else(|| PtError::StorageTruncated(key.to_string()))?;
        if storages
            .insert(key.to_string(), Span { start: pos, len })
            .is_some()
        {
            return Err(PtError::DuplicateEntry(key.to_string()));
        }
        pos += len;
    }
    Ok(Legacy {
        pickle,
        root,
        storages,
        pickle_len,
    })
}
