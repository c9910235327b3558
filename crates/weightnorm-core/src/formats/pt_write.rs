//! Writing PyTorch's zip format, as `torch.save` does and `torch.load(weights_only=True)`
//! reads: a `data.pkl` (pickle protocol 2, only the opcodes and globals PyTorch's
//! weights-only unpickler accepts) beside one stored (uncompressed) entry per storage, each
//! starting on a 64-byte boundary, and ZIP64 records where an offset or size needs them.
//!
//! Tensors read from a PyTorch file keep their storage and view: a storage shared by several
//! tensors (tied weights) is written once, and each tensor is the same view of it again. Other
//! tensors (computed, or read from safetensors) get a storage of their own. Storages are
//! written one at a time, each streamed from its memory map or produced and then released.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use safetensors::Dtype;

use super::pickle::element_size;
use super::tree::{PtTensor, PtValue};
use super::{Result, TensorEntry, TorchError};

/// Where each entry's data starts, as `torch.save` aligns it.
const ALIGNMENT: u64 = 64;
/// Items per `APPENDS` / `SETITEMS` batch, as Python's pickler batches them.
const BATCH: usize = 1000;
/// How deep a tree may nest before it is refused (the reader's bound).
const MAX_DEPTH: usize = 256;

/// The storage class `torch.save` names for a dtype.
fn storage_class(dtype: Dtype) -> Option<&'static str> {
    Some(match dtype {
        Dtype::F32 => "FloatStorage",
        Dtype::F64 => "DoubleStorage",
        Dtype::F16 => "HalfStorage",
        Dtype::BF16 => "BFloat16Storage",
        Dtype::I64 => "LongStorage",
        Dtype::I32 => "IntStorage",
        Dtype::I16 => "ShortStorage",
        Dtype::I8 => "CharStorage",
        Dtype::U8 => "ByteStorage",
        Dtype::BOOL => "BoolStorage",
        _ => return None,
    })
}

/// Whether ZIP64 records are written for every entry, not only where needed: a test knob
/// (`WEIGHTNORM_ZIP64=always`), so that the records a multi-gigabyte file needs are exercised
/// on small ones.
fn zip64_always() -> bool {
    std::env::var("WEIGHTNORM_ZIP64").is_ok_and(|v| v == "always")
}

/// What a storage's bytes come from.
enum StorageData<'a> {
    /// A whole storage of a PyTorch file (shared by the tensors that view it).
    Mapped(Arc<super::pt::StorageBytes>, &'a str),
    /// One tensor's bytes, contiguous.
    Tensor(&'a TensorEntry),
}

struct StorageOut<'a> {
    dtype: Dtype,
    numel: usize,
    bytes: u64,
    data: StorageData<'a>,
}

/// The pickle of a tree, and the storages it names, in key order.
struct Pickler<'a> {
    out: Vec<u8>,
    storages: Vec<StorageOut<'a>>,
    /// Keys of the input storages already named, by identity.
    shared: HashMap<*const super::pt::StorageBytes, usize>,
}

impl<'a> Pickler<'a> {
    fn op(&mut self, b: u8) {
        self.out.push(b);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out
            .extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, i: i64) {
        if let Ok(b) = u8::try_from(i) {
            self.out.extend_from_slice(&[b'K', b]);
        } else if let Ok(w) = u16::try_from(i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&w.to_le_bytes());
        } else if let Ok(w) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&w.to_le_bytes());
        } else {
            // LONG1: the shortest little-endian two's complement.
            let bytes = i.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let (top, next) = (bytes[n - 1], bytes[n - 2]);
                if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[0x8a, n as u8]);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    fn tuple(&mut self, items: &'a [PtValue], depth: usize) -> Result<()> {
        match items.len() {
            0 => self.op(b')'),
            n @ 1..=3 => {
                for x in items {
                    self.value(x, depth + 1)?;
                }
                self.op(0x84 + n as u8);
            }
            _ => {
                self.op(b'(');
                for x in items {
                    self.value(x, depth + 1)?;
                }
                self.op(b't');
            }
        }
        Ok(())
    }

    fn list(&mut self, items: &'a [PtValue], depth: usize) -> Result<()> {
        self.op(b']');
        for chunk in items.chunks(BATCH) {
            self.op(b'(');
            for x in chunk {
                self.value(x, depth + 1)?;
            }
            self.op(b'e');
        }
        Ok(())
    }

    /// `module.name(items)`: a set, frozenset or `torch.Size` from a list or tuple.
    fn call1(
        &mut self,
        module: &str,
        name: &str,
        items: &'a [PtValue],
        tuple: bool,
        depth: usize,
    ) -> Result<()> {
        self.global(module, name);
        if tuple {
            self.tuple(items, depth)?;
        } else {
            self.list(items, depth)?;
        }
        self.op(0x85);
        self.op(b'R');
        Ok(())
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }

    fn value(&mut self, v: &'a PtValue, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(TorchError::Unwritable {
                reason: format!("containers nest more than {MAX_DEPTH} deep"),
            });
        }
        match v {
            PtValue::None => self.op(b'N'),
            PtValue::Bool(true) => self.op(0x88),
            PtValue::Bool(false) => self.op(0x89),
            PtValue::Int(i) => self.int(*i),
            PtValue::BigInt(b) => {
                if let Ok(n) = u8::try_from(b.len()) {
                    self.out.extend_from_slice(&[0x8a, n]);
                } else {
                    self.op(0x8b);
                    let n = u32::try_from(b.len()).map_err(|_| TorchError::Unwritable {
                        reason: "an integer of more than 4 GB".into(),
                    })?;
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
                self.out.extend_from_slice(b);
            }
            PtValue::Float(x) => {
                self.op(b'G');
                self.out.extend_from_slice(&x.to_be_bytes());
            }
            PtValue::Str(s) => self.str(s),
            PtValue::Bytes(b) => {
                // Protocol 2's bytes, as Python writes them: `_codecs.encode(text, 'latin1')`.
                self.global("_codecs", "encode");
                let text: String = b.iter().map(|&c| char::from(c)).collect();
                self.str(&text);
                self.str("latin1");
                self.op(0x86);
                self.op(b'R');
            }
            PtValue::List(items) => self.list(items, depth)?,
            PtValue::Tuple(items) => self.tuple(items, depth)?,
            PtValue::Set(items) => self.call1("builtins", "set", items, false, depth)?,
            PtValue::FrozenSet(items) => {
                self.call1("builtins", "frozenset", items, false, depth)?
            }
            PtValue::Size(items) => self.call1("torch", "Size", items, true, depth)?,
            PtValue::Dict(d) => {
                if d.ordered {
                    self.empty_ordered_dict();
                } else {
                    self.op(b'}');
                }
                for chunk in d.entries.chunks(BATCH) {
                    self.op(b'(');
                    for (k, x) in chunk {
                        self.value(k, depth + 1)?;
                        self.value(x, depth + 1)?;
                    }
                    self.op(b'u');
                }
                if let Some(state) = &d.state {
                    self.value(state, depth + 1)?;
                    self.op(b'b');
                }
            }
            PtValue::Global(g) => {
                let (module, name) = g.rsplit_once('.').ok_or_else(|| TorchError::Unwritable {
                    reason: format!("the global `{g}` has no module"),
                })?;
                self.global(module, name);
            }
            PtValue::Device(d) => {
                self.global("torch", "device");
                self.str(d);
                self.op(0x85);
                self.op(b'R');
            }
            PtValue::Tensor(t) => self.tensor(t)?,
        }
        Ok(())
    }

    fn tensor(&mut self, t: &'a PtTensor) -> Result<()> {
        let e = &t.entry;
        let class = storage_class(e.dtype).ok_or_else(|| TorchError::DType {
            name: e.name.clone(),
            reason: format!("a {:?} tensor cannot be written to a PyTorch file", e.dtype),
        })?;
        let elem = element_size(e.dtype);
        // The storage: the input's own (kept shared), or the tensor's bytes alone.
        let (key, offset, stride) = match e.pt_view() {
            Some(stored) => {
                let (storage, offset, stride) = stored.view();
                let id = Arc::as_ptr(storage);
                let key = match self.shared.get(&id) {
                    Some(&k) => k,
                    None => {
                        let (_, bytes) = storage.whole(&e.name)?;
                        let k = self.storages.len();
                        self.storages.push(StorageOut {
                            dtype: e.dtype,
                            numel: bytes.len() / elem,
                            bytes: bytes.len() as u64,
                            data: StorageData::Mapped(Arc::clone(storage), &e.name),
                        });
                        self.shared.insert(id, k);
                        k
                    }
                };
                (key, offset, stride.to_vec())
            }
            None => {
                let k = self.storages.len();
                self.storages.push(StorageOut {
                    dtype: e.dtype,
                    numel: e.numel(),
                    bytes: e.byte_len() as u64,
                    data: StorageData::Tensor(e),
                });
                let mut stride = vec![1usize; e.shape.len()];
                for d in (0..e.shape.len().saturating_sub(1)).rev() {
                    stride[d] = stride[d + 1] * e.shape[d + 1];
                }
                (k, 0, stride)
            }
        };
        let numel = self.storages[key].numel;
        if t.parameter {
            self.global("torch._utils", "_rebuild_parameter");
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b'(');
        // The persistent id: ('storage', class, key, location, numel).
        self.op(b'(');
        self.str("storage");
        self.global("torch", class);
        self.str(&key.to_string());
        self.str("cpu");
        self.int(i64::try_from(numel).unwrap_or(i64::MAX));
        self.op(b't');
        self.op(b'Q');
        self.int(i64::try_from(offset).unwrap_or(i64::MAX));
        let ints = |xs: &[usize]| -> Vec<PtValue> {
            xs.iter()
                .map(|&x| PtValue::Int(i64::try_from(x).unwrap_or(i64::MAX)))
                .collect()
        };
        let (size, stride) = (ints(&e.shape), ints(&stride));
        self.tuple_owned(&size)?;
        self.tuple_owned(&stride)?;
        self.op(if t.requires_grad && !t.parameter {
            0x88
        } else {
            0x89
        });
        self.empty_ordered_dict();
        self.op(b't');
        self.op(b'R');
        if t.parameter {
            self.op(if t.requires_grad { 0x88 } else { 0x89 });
            self.empty_ordered_dict();
            self.op(0x87);
            self.op(b'R');
        }
        Ok(())
    }

    /// A tuple of integers (no borrow of the tree needed).
    fn tuple_owned(&mut self, items: &[PtValue]) -> Result<()> {
        self.op(b'(');
        for x in items {
            if let PtValue::Int(i) = x {
                self.int(*i);
            }
        }
        self.op(b't');
        Ok(())
    }
}

/// One entry of the central directory.
struct Central {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// A zip archive of stored entries, written in order.
struct ZipOut<W: Write + Seek> {
    w: W,
    pos: u64,
    central: Vec<Central>,
    zip64: bool,
}

impl<W: Write + Seek> ZipOut<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Writes one entry of `size` bytes, produced by `data` (called with a sink that hashes
    /// and writes); the CRC is patched into the local header afterwards.
    fn entry(
        &mut self,
        name: &str,
        size: u64,
        data: impl FnOnce(&mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<()>,
    ) -> Result<()> {
        let io = |source| TorchError::Write {
            path: name.to_string(),
            source,
        };
        let offset = self.pos;
        let big = self.zip64 || size >= 0xffff_ffff;
        let zip64_len = if big { 20 } else { 0 };
        let before = offset + 30 + name.len() as u64 + zip64_len;
        let mut pad = (ALIGNMENT - before % ALIGNMENT) % ALIGNMENT;
        if pad > 0 && pad < 4 {
            pad += ALIGNMENT;
        }
        let extra_len = zip64_len + pad;
        let mut h = Vec::with_capacity(30 + name.len() + extra_len as usize);
        h.extend_from_slice(b"PK\x03\x04");
        h.extend_from_slice(&(if big { 45u16 } else { 20u16 }).to_le_bytes());
        h.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&[0, 0, 0x21, 0]); // time, date: 1980-01-01
        let crc_at = offset + h.len() as u64;
        h.extend_from_slice(&0u32.to_le_bytes()); // CRC, patched below
        let small = if big { 0xffff_ffff } else { size as u32 };
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra_len as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        if big {
            h.extend_from_slice(&1u16.to_le_bytes());
            h.extend_from_slice(&16u16.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
        }
        if pad > 0 {
            // An extra field of padding (id "FB", as PyTorch's writer uses).
            h.extend_from_slice(b"FB");
            h.extend_from_slice(&((pad - 4) as u16).to_le_bytes());
            h.resize(h.len() + (pad - 4) as usize, b'Z');
        }
        self.put(&h).map_err(io)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut written = 0u64;
        {
            let w = &mut self.w;
            let mut sink = |b: &[u8]| -> std::io::Result<()> {
                hasher.update(b);
                written += b.len() as u64;
                w.write_all(b)
            };
            data(&mut sink)?;
        }
        if written != size {
            return Err(TorchError::Unwritable {
                reason: format!("the entry {name} came to {written} bytes, not {size}"),
            });
        }
        self.pos += written;
        let crc = hasher.finalize();
        self.w.seek(SeekFrom::Start(crc_at)).map_err(io)?;
        self.w.write_all(&crc.to_le_bytes()).map_err(io)?;
        self.w.seek(SeekFrom::Start(self.pos)).map_err(io)?;
        self.central.push(Central {
            name: name.to_string(),
            crc,
            size,
            offset,
        });
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        let cd_start = self.pos;
        let central = std::mem::take(&mut self.central);
        for c in &central {
            let big = self.zip64 || c.size >= 0xffff_ffff || c.offset >= 0xffff_ffff;
            let mut h = Vec::new();
            h.extend_from_slice(b"PK\x01\x02");
            let version = if big { 45u16 } else { 20u16 };
            h.extend_from_slice(&version.to_le_bytes()); // made by
            h.extend_from_slice(&version.to_le_bytes()); // needed
            h.extend_from_slice(&0x0800u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&[0, 0, 0x21, 0]);
            h.extend_from_slice(&c.crc.to_le_bytes());
            let small = |x: u64| if big { 0xffff_ffff } else { x as u32 };
            h.extend_from_slice(&small(c.size).to_le_bytes());
            h.extend_from_slice(&small(c.size).to_le_bytes());
            h.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(if big { 28u16 } else { 0 }).to_le_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]); // comment length, disk
            h.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // attributes
            h.extend_from_slice(&small(c.offset).to_le_bytes());
            h.extend_from_slice(c.name.as_bytes());
            if big {
                h.extend_from_slice(&1u16.to_le_bytes());
                h.extend_from_slice(&24u16.to_le_bytes());
                h.extend_from_slice(&c.size.to_le_bytes());
                h.extend_from_slice(&c.size.to_le_bytes());
                h.extend_from_slice(&c.offset.to_le_bytes());
            }
            self.put(&h)?;
        }
        let cd_size = self.pos - cd_start;
        let n = central.len() as u64;
        let big = self.zip64 || n >= 0xffff || cd_start >= 0xffff_ffff || cd_size >= 0xffff_ffff;
        if big {
            let eocd64 = self.pos;
            let mut r = Vec::new();
            r.extend_from_slice(b"PK\x06\x06");
            r.extend_from_slice(&44u64.to_le_bytes());
            r.extend_from_slice(&45u16.to_le_bytes());
            r.extend_from_slice(&45u16.to_le_bytes());
            r.extend_from_slice(&[0; 8]); // disks
            r.extend_from_slice(&n.to_le_bytes());
            r.extend_from_slice(&n.to_le_bytes());
            r.extend_from_slice(&cd_size.to_le_bytes());
            r.extend_from_slice(&cd_start.to_le_bytes());
            r.extend_from_slice(b"PK\x06\x07");
            r.extend_from_slice(&0u32.to_le_bytes());
            r.extend_from_slice(&eocd64.to_le_bytes());
            r.extend_from_slice(&1u32.to_le_bytes());
            self.put(&r)?;
        }
        let mut e = Vec::new();
        e.extend_from_slice(b"PK\x05\x06");
        e.extend_from_slice(&[0; 4]);
        let n16 = if big { 0xffff } else { n as u16 };
        e.extend_from_slice(&n16.to_le_bytes());
        e.extend_from_slice(&n16.to_le_bytes());
        let small = |x: u64| if big { 0xffff_ffff } else { x as u32 };
        e.extend_from_slice(&small(cd_size).to_le_bytes());
        e.extend_from_slice(&small(cd_start).to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        self.put(&e)?;
        Ok(self.w)
    }
}

/// The name of the archive's top folder for a file at `path`: its stem, as `torch.save`
/// names it, restricted to characters any zip reader takes.
fn archive_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "archive".into()
    } else {
        clean
    }
}

/// Writes `root` as a PyTorch zip file at `path` (a new file: the caller makes it atomic),
/// named inside after `name_like`'s stem. Flushed to disk when `fsync`.
pub(crate) fn write_pt(path: &Path, name_like: &Path, root: &PtValue, fsync: bool) -> Result<()> {
    let werr = |source| TorchError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut p = Pickler {
        out: vec![0x80, 2],
        storages: Vec::new(),
        shared: HashMap::new(),
    };
    p.value(root, 0)?;
    p.op(b'.');
    let Pickler {
        out: pickle,
        storages,
        ..
    } = p;
    let dir = archive_name(name_like);
    let file = File::create(path).map_err(werr)?;
    let mut zip = ZipOut {
        w: BufWriter::with_capacity(1 << 22, file),
        pos: 0,
        central: Vec::new(),
        zip64: zip64_always(),
    };
    let small = |zip: &mut ZipOut<_>, name: String, bytes: &[u8]| {
        zip.entry(&name, bytes.len() as u64, |sink| sink(bytes).map_err(werr))
    };
    small(&mut zip, format!("{dir}/data.pkl"), &pickle)?;
    small(&mut zip, format!("{dir}/.format_version"), b"1")?;
    small(&mut zip, format!("{dir}/.storage_alignment"), b"64")?;
    small(&mut zip, format!("{dir}/byteorder"), b"little")?;
    for (k, s) in storages.iter().enumerate() {
        debug_assert_eq!(s.numel * element_size(s.dtype), s.bytes as usize);
        zip.entry(&format!("{dir}/data/{k}"), s.bytes, |sink| match &s.data {
            StorageData::Mapped(storage, tensor) => {
                let (_, bytes) = storage.whole(tensor)?;
                sink(bytes).map_err(werr)?;
                storage.release();
                Ok(())
            }
            StorageData::Tensor(t) => {
                let bytes = t.bytes()?;
                sink(&bytes).map_err(werr)?;
                drop(bytes);
                t.release();
                Ok(())
            }
        })?;
    }
    small(&mut zip, format!("{dir}/version"), b"3\n")?;
    let w = zip.finish().map_err(werr)?;
    let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
    if fsync {
        file.sync_all().map_err(werr)?;
    }
    Ok(())
}
