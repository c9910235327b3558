//! `weightnorm._native`: the thin PyO3 layer between the Python package and
//! `weightnorm-core`. Python (`python/weightnorm/`) holds the public API; this module turns its
//! arguments into core calls and core results into Python values:
//!
//! - tensors cross in without a copy: Python hands over each tensor's address, byte length and
//!   owner (a contiguous CPU torch tensor or NumPy array), which the entry keeps alive
//!   ([`Borrowed`]);
//! - computed tensors (fused weights, split `g`s) come back as [`Owned`] buffers that NumPy
//!   wraps through `__array_interface__`, so the bytes the core computed are the array's;
//! - untouched and renamed tensors come back as the index of the input they are, so Python
//!   returns the very object it was given;
//! - every error is one [`NativeError`] `(kind, message, extra)`, which Python raises as the
//!   matching `weightnorm.Error` subclass.
//!
//! The work itself runs with the interpreter released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use safetensors::Dtype;
use weightnorm_core::files::{self, FileError, FileJob, Written};
use weightnorm_core::formats::onnx::{OnnxModel, WeightNormSubgraph};
use weightnorm_core::formats::{Checkpoint, Format, TensorEntry, TorchError};
use weightnorm_core::surgery::{
    FuseOptions, Pair, Scheme, SplitOptions, Stats, convert, detect_pairs, fuse, pair_stats, split,
};

pyo3::create_exception!(
    _native,
    NativeError,
    PyException,
    "An error of the native layer: args (kind, message, extra); `weightnorm` raises its own classes."
);

/// One error as Python receives it.
struct Failure {
    kind: &'static str,
    message: String,
    extra: Option<String>,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            extra: None,
        }
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        NativeError::new_err((f.kind, f.message, f.extra))
    }
}

impl From<TorchError> for Failure {
    fn from(e: TorchError) -> Self {
        let message = e.to_string();
        match e {
            TorchError::NotAStateDict { suggestion, .. } => Self {
                kind: "not_a_state_dict",
                message,
                extra: suggestion,
            },
            TorchError::WouldDrop { .. } => Self::new("would_drop", message),
            TorchError::Read { .. } => Self::new("read", message),
            TorchError::Write { .. } => Self::new("io", message),
            _ => Self::new("input", message),
        }
    }
}

impl From<FileError> for Failure {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Torch(t) => t.into(),
            FileError::Exists(p) => Self {
                kind: "exists",
                message: FileError::Exists(p.clone()).to_string(),
                extra: Some(p.to_string_lossy().into_owned()),
            },
            FileError::Input(m) => Self::new("input", m),
            FileError::Io(m) => Self::new("io", m),
        }
    }
}

/// Bytes that a Python object owns (a torch tensor's or NumPy array's storage), borrowed: the
/// object is kept alive by this value, so the address stays valid.
struct Borrowed {
    _owner: Py<PyAny>,
    addr: usize,
    len: usize,
}

impl AsRef<[u8]> for Borrowed {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: Python gave the address and length of a contiguous buffer of `_owner` (its
        // `data_ptr()` / `__array_interface__`), which lives as long as this value holds it.
        // Python's side promises not to resize or free it meanwhile (the documented contract of
        // every function that takes a state dict: the dict is not changed during the call).
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

/// A tensor computed here (a fused weight, a split `g`), handed to NumPy without a copy through
/// `__array_interface__` (NumPy keeps this object as the array's base).
#[pyclass(module = "weightnorm._native")]
struct Owned {
    data: Vec<u8>,
    typestr: &'static str,
    shape: Vec<usize>,
}

#[pymethods]
impl Owned {
    /// NumPy's array interface (version 3): the buffer, writable, C-contiguous.
    #[getter]
    fn __array_interface__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("data", (self.data.as_mut_ptr() as usize, false))?;
        d.set_item("strides", py.None())?;
        Ok(d)
    }

    /// The dtype as safetensors names it (`F32`, `F64`, `F16`, `BF16`); `BF16` arrives as
    /// NumPy `uint16` holding the bits.
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.typestr {
            "<f4" => "F32",
            "<f8" => "F64",
            "<f2" => "F16",
            _ => "BF16",
        }
    }
}

impl Owned {
    fn from_entry(e: &TensorEntry) -> Result<Self, Failure> {
        let typestr = match e.dtype {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::F16 => "<f2",
            Dtype::BF16 => "<u2",
            d => {
                return Err(Failure::new(
                    "input",
                    format!("{}: a computed {d:?} tensor", e.name),
                ));
            }
        };
        Ok(Self {
            // A computed entry's bytes are produced as an owned vector: no copy here.
            data: e.bytes()?.into_owned(),
            typestr,
            shape: e.shape.clone(),
        })
    }
}

/// A tensor as Python passes it: name, dtype (safetensors' name), shape, address, byte length
/// and owner; no owner when its data is not needed (only its name and shape are).
type EntryArg = (String, String, Vec<usize>, usize, usize, Option<Py<PyAny>>);

fn dtype_of(s: &str) -> Option<Dtype> {
    Some(match s {
        "F64" => Dtype::F64,
        "F32" => Dtype::F32,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I64" => Dtype::I64,
        "I32" => Dtype::I32,
        "I16" => Dtype::I16,
        "I8" => Dtype::I8,
        "U8" => Dtype::U8,
        "U16" => Dtype::U16,
        "U32" => Dtype::U32,
        "U64" => Dtype::U64,
        "BOOL" => Dtype::BOOL,
        _ => return None,
    })
}

fn entries(args: Vec<EntryArg>) -> Result<Vec<TensorEntry>, Failure> {
    args.into_iter()
        .map(|(name, dtype, shape, addr, len, owner)| {
            let d = dtype_of(&dtype);
            match (d, owner) {
                (Some(d), Some(owner)) => Ok(TensorEntry::from_shared(
                    name,
                    d,
                    shape,
                    Arc::new(Borrowed {
                        _owner: owner,
                        addr,
                        len,
                    }),
                )?),
                // Passed through by name: a tensor whose data no operation reads here.
                (d, _) => {
                    let n = name.clone();
                    Ok(TensorEntry::lazy(
                        name,
                        d.unwrap_or(Dtype::U8),
                        shape,
                        move || {
                            Err(TorchError::DType {
                                name: n.clone(),
                                reason: format!(
                                    "a {dtype} tensor, which this operation cannot read"
                                ),
                            })
                        },
                    ))
                }
            }
        })
        .collect()
}

/// An operation on a state dict, from Python's arguments.
enum Op {
    Fuse(Option<Option<i64>>),
    Split {
        dim: Option<i64>,
        scheme: Scheme,
        include: Option<regex::Regex>,
    },
    Convert(Scheme),
    Inspect,
}

/// `dim` as Python gives it: `"infer"` (from g's shape), `None` (the whole tensor) or an int.
fn dim_arg(dim: &Bound<'_, PyAny>) -> PyResult<Option<Option<i64>>> {
    if dim.is_none() {
        return Ok(Some(None));
    }
    if let Ok(s) = dim.extract::<String>() {
        if s == "infer" {
            return Ok(None);
        }
        return Err(Failure::new(
            "input",
            format!("`{s}` is not a dim: give an integer, None (the whole tensor) or \"infer\""),
        )
        .into());
    }
    match dim.extract::<i64>() {
        Ok(d) => Ok(Some(Some(d))),
        Err(_) => Err(Failure::new(
            "input",
            "dim must be an integer, None (the whole tensor) or \"infer\"",
        )
        .into()),
    }
}

fn scheme_arg(s: &str) -> Result<Scheme, Failure> {
    s.parse::<Scheme>().map_err(|m| Failure::new("input", m))
}

fn include_arg(s: Option<&str>) -> Result<Option<regex::Regex>, Failure> {
    s.map(regex::Regex::new).transpose().map_err(|e| {
        Failure::new(
            "input",
            format!("include is not a valid regular expression: {e}"),
        )
    })
}

impl Op {
    fn parse(
        op: &str,
        dim: &Bound<'_, PyAny>,
        scheme: Option<&str>,
        include: Option<&str>,
    ) -> PyResult<Self> {
        Ok(match op {
            "fuse" => Self::Fuse(dim_arg(dim)?),
            "split" => Self::Split {
                dim: dim_arg(dim)?.unwrap_or(Some(0)),
                scheme: scheme_arg(scheme.unwrap_or("legacy"))?,
                include: include_arg(include)?,
            },
            "convert" => Self::Convert(scheme_arg(scheme.unwrap_or("parametrizations"))?),
            "inspect" => Self::Inspect,
            other => return Err(Failure::new("input", format!("no operation `{other}`")).into()),
        })
    }

    fn split_options(&self) -> Option<SplitOptions<'_>> {
        match self {
            Self::Split {
                dim,
                scheme,
                include,
            } => {
                let mut o = SplitOptions {
                    dim: *dim,
                    scheme: *scheme,
                    ..Default::default()
                };
                if let Some(re) = include {
                    o.select = Box::new(move |name, _| re.is_match(name));
                }
                Some(o)
            }
            _ => None,
        }
    }
}

fn is_float(d: &str) -> bool {
    matches!(d, "F64" | "F32" | "F16" | "BF16")
}

/// The keys whose data `op` reads (the pairs' `g` and `v`, or the weights it splits): the
/// others cross as names and shapes alone.
#[pyfunction]
#[pyo3(signature = (op, tensors, dim, scheme=None, include=None))]
fn data_keys(
    op: &str,
    tensors: Vec<(String, String, Vec<usize>)>,
    dim: &Bound<'_, PyAny>,
    scheme: Option<&str>,
    include: Option<&str>,
) -> PyResult<Vec<String>> {
    let op = Op::parse(op, dim, scheme, include)?;
    let shapes: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(n, _, s)| (n.clone(), s.clone()))
        .collect();
    Ok(match &op {
        Op::Fuse(d) => keys_of(&detect_pairs(&shapes, *d).map_err(Failure::from)?),
        Op::Inspect => keys_of(&detect_pairs(&shapes, None).map_err(Failure::from)?),
        Op::Convert(_) => Vec::new(),
        Op::Split { .. } => {
            let o = op.split_options().expect("split");
            tensors
                .iter()
                .filter(|(n, d, s)| is_float(d) && (o.select)(n, s))
                .map(|(n, _, _)| n.clone())
                .collect()
        }
    })
}

fn keys_of(pairs: &[Pair]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|p| [p.g_key.clone(), p.v_key.clone()])
        .collect()
}

fn stats_dict<'py>(py: Python<'py>, s: Option<Stats>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match s {
        None => py.None().into_bound(py),
        Some(s) => {
            let d = PyDict::new(py);
            d.set_item("min", s.min)?;
            d.set_item("max", s.max)?;
            d.set_item("mean", s.mean)?;
            d.into_any()
        }
    })
}

/// A pair as Python sees it, with statistics when they were computed.
struct PairRow {
    pair: Pair,
    g_shape: Vec<usize>,
    v_shape: Vec<usize>,
    dtype: String,
    stats: Option<(Option<Stats>, Option<Stats>)>,
}

impl PairRow {
    fn of(pair: &Pair, tensors: &[TensorEntry]) -> Self {
        let find = |k: &str| tensors.iter().find(|t| t.name == k);
        let (g, v) = (find(&pair.g_key), find(&pair.v_key));
        Self {
            pair: pair.clone(),
            g_shape: g.map(|t| t.shape.clone()).unwrap_or_default(),
            v_shape: v.map(|t| t.shape.clone()).unwrap_or_default(),
            dtype: v.map(|t| format!("{:?}", t.dtype)).unwrap_or_default(),
            stats: None,
        }
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("name", &self.pair.name)?;
        d.set_item("scheme", self.pair.scheme.as_str())?;
        d.set_item("g_key", &self.pair.g_key)?;
        d.set_item("v_key", &self.pair.v_key)?;
        d.set_item("dim", self.pair.axis.to_torch())?;
        d.set_item("g_shape", PyTuple::new(py, &self.g_shape)?)?;
        d.set_item("v_shape", PyTuple::new(py, &self.v_shape)?)?;
        d.set_item("dtype", &self.dtype)?;
        if let Some((g, n)) = self.stats {
            d.set_item("g", stats_dict(py, g)?)?;
            d.set_item("v_norms", stats_dict(py, n)?)?;
        }
        Ok(d)
    }
}

/// The pairs of `tensors` with the statistics of `g` and of `v`'s slice norms.
fn inspect_rows(tensors: &[TensorEntry]) -> Result<Vec<PairRow>, Failure> {
    let shapes: Vec<_> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let pairs = detect_pairs(&shapes, None)?;
    let by: HashMap<&str, &TensorEntry> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    pairs
        .iter()
        .map(|p| {
            let mut row = PairRow::of(p, tensors);
            row.stats = Some(pair_stats(
                by[p.v_key.as_str()],
                by[p.g_key.as_str()],
                p.axis,
            )?);
            Ok(row)
        })
        .collect()
}

/// One output of a transform: the index of the input it is, or the bytes computed for it.
enum Out {
    Input(usize),
    Computed(Owned),
}

/// Runs `op` on a state dict's tensors. Returns the output as `(name, index or Owned, index of
/// the input it came from)` in the input's order (each new tensor where the tensor it came from
/// was) and the pairs.
#[pyfunction]
#[pyo3(signature = (op, tensors, dim, scheme=None, include=None))]
fn transform<'py>(
    py: Python<'py>,
    op: &str,
    tensors: Vec<EntryArg>,
    dim: &Bound<'py, PyAny>,
    scheme: Option<&str>,
    include: Option<&str>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let op = Op::parse(op, dim, scheme, include)?;
    // The inputs passed by name and shape alone: lazy entries, but not computed ones.
    let opaque: std::collections::HashSet<String> = tensors
        .iter()
        .filter(|t| t.5.is_none())
        .map(|t| t.0.clone())
        .collect();
    let inputs = entries(tensors)?;
    let position: HashMap<String, usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let result = py.detach(|| -> Result<_, Failure> {
        let (out, rows) = match &op {
            Op::Fuse(d) => {
                let (out, pairs) = fuse(&inputs, &FuseOptions { dim: *d })?;
                let rows = pairs.iter().map(|p| PairRow::of(p, &inputs)).collect();
                (out, rows)
            }
            Op::Split { .. } => {
                let (out, pairs) = split(&inputs, &op.split_options().expect("split"))?;
                let rows = pairs.iter().map(|p| PairRow::of(p, &out)).collect();
                (out, rows)
            }
            Op::Convert(s) => {
                let (out, pairs) = convert(&inputs, *s)?;
                let rows = pairs.iter().map(|p| PairRow::of(p, &inputs)).collect();
                (out, rows)
            }
            Op::Inspect => (Vec::new(), inspect_rows(&inputs)?),
        };
        let mut placed = Vec::with_capacity(out.len());
        for t in &out {
            let from = t.origin().unwrap_or(&t.name);
            let at = *position.get(from).ok_or_else(|| {
                Failure::new(
                    "input",
                    format!("{from}: an output with no input behind it"),
                )
            })?;
            let value = if t.is_computed() && !opaque.contains(from) {
                Out::Computed(Owned::from_entry(t)?)
            } else {
                // Untouched or renamed: the data of the input it came from.
                Out::Input(at)
            };
            placed.push((at, t.name.clone(), value));
        }
        placed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok((placed, rows))
    })?;
    let (placed, rows) = result;
    let out = PyList::empty(py);
    for (at, name, value) in placed {
        let v: Bound<'py, PyAny> = match value {
            Out::Input(i) => i.into_pyobject(py)?.into_any(),
            Out::Computed(o) => Bound::new(py, o)?.into_any(),
        };
        out.append((name, v, at))?;
    }
    let pairs = PyList::empty(py);
    for r in &rows {
        pairs.append(r.to_py(py)?)?;
    }
    Ok((out, pairs))
}

/// `w = g * v / ||v||` for one module's pair (`remove_weight_norm`): `dim` is the module's own
/// (PyTorch's `-1` or `None` for the whole tensor).
#[pyfunction]
fn fuse_pair(py: Python<'_>, g: EntryArg, v: EntryArg, dim: Option<i64>) -> PyResult<Owned> {
    let mut both = entries(vec![g, v])?;
    let v = both.pop().expect("two").renamed("weight_v");
    let g = both.pop().expect("two").renamed("weight_g");
    // PyTorch's weight norm keeps no axis for dim -1 (`norm_except_dim`), not the last one.
    let dim = dim.filter(|&d| d != -1);
    py.detach(|| -> Result<Owned, Failure> {
        let (out, _) = fuse(&[g, v], &FuseOptions { dim: Some(dim) })?;
        Owned::from_entry(&out[0])
    })
    .map_err(Into::into)
}

/// Statistics of a checkpoint file or ONNX model: the document `weightnorm.inspect` returns.
#[pyfunction]
#[pyo3(signature = (path, key=None))]
fn inspect_file<'py>(
    py: Python<'py>,
    path: PathBuf,
    key: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("file", path.to_string_lossy())?;
    if is_onnx(&path) {
        if key.is_some() {
            return Err(Failure::new(
                "input",
                format!(
                    "key applies to checkpoints, not to the ONNX model {}",
                    files::shown(&path)
                ),
            )
            .into());
        }
        let in_model = |e: weightnorm_core::formats::onnx::OnnxError| {
            Failure::new("input", format!("{}: {e}", files::shown(&path)))
        };
        let found: Vec<WeightNormSubgraph> = py.detach(|| -> Result<_, Failure> {
            let model = OnnxModel::open(&path).map_err(in_model)?;
            model.weight_norms().map_err(in_model)
        })?;
        d.set_item("format", "onnx")?;
        d.set_item("key", py.None())?;
        let pairs = PyList::empty(py);
        for s in &found {
            let p = PyDict::new(py);
            p.set_item("name", &s.weight)?;
            p.set_item("scheme", "onnx")?;
            p.set_item("g_key", &s.g)?;
            p.set_item("v_key", &s.v)?;
            p.set_item("dim", s.axis.to_torch())?;
            p.set_item("g_shape", PyTuple::new(py, s.axis.g_shape(&s.shape))?)?;
            p.set_item("v_shape", PyTuple::new(py, &s.shape)?)?;
            p.set_item("dtype", &s.dtype)?;
            p.set_item("g", stats_dict(py, stats_of(&s.g_values))?)?;
            p.set_item("v_norms", stats_dict(py, stats_of(&s.v_norms))?)?;
            p.set_item("consumers", &s.consumers)?;
            pairs.append(p)?;
        }
        d.set_item("pairs", pairs)?;
        d.set_item("tensors", PyList::empty(py))?;
        d.set_item("others", PyList::empty(py))?;
        return Ok(d);
    }
    let (ckpt, rows) = py.detach(|| -> Result<_, Failure> {
        let ckpt = Checkpoint::open(&path, key.as_deref())?;
        let rows = inspect_rows(&ckpt.tensors)?;
        Ok((ckpt, rows))
    })?;
    d.set_item(
        "format",
        match ckpt.format {
            Format::SafeTensors => "safetensors",
            Format::PyTorch => "pytorch",
        },
    )?;
    d.set_item("key", &ckpt.key)?;
    let tensors = PyList::empty(py);
    for t in &ckpt.tensors {
        tensors.append((
            &t.name,
            format!("{:?}", t.dtype),
            PyTuple::new(py, &t.shape)?,
        ))?;
    }
    d.set_item("tensors", tensors)?;
    let pairs = PyList::empty(py);
    for r in &rows {
        pairs.append(r.to_py(py)?)?;
    }
    d.set_item("pairs", pairs)?;
    let others = PyList::empty(py);
    for e in ckpt.others() {
        others.append((&e.name, &e.kind))?;
    }
    d.set_item("others", others)?;
    d.set_item(
        "shards",
        ckpt.sharding().map(|s| {
            s.shards
                .iter()
                .map(|sh| sh.file.clone())
                .collect::<Vec<_>>()
        }),
    )?;
    Ok(d)
}

fn stats_of(xs: &[f64]) -> Option<Stats> {
    (!xs.is_empty()).then(|| Stats {
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
    })
}

fn is_onnx(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// What a file operation did, for Python: the pairs, the files and tensors written.
fn written_dict<'py>(py: Python<'py>, pairs: &[Pair], w: Written) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let list = PyList::empty(py);
    for p in pairs {
        let row = PairRow {
            pair: p.clone(),
            g_shape: Vec::new(),
            v_shape: Vec::new(),
            dtype: String::new(),
            stats: None,
        }
        .to_py(py)?;
        for k in ["g_shape", "v_shape", "dtype"] {
            row.del_item(k)?;
        }
        list.append(row)?;
    }
    d.set_item("pairs", list)?;
    d.set_item("files", w.files)?;
    d.set_item("tensors", w.tensors)?;
    d.set_item("carried", w.carried)?;
    Ok(d)
}

/// Refuses checkpoint options given for an ONNX model.
fn no_checkpoint_options(path: &std::path::Path, given: &[(&str, bool)]) -> Result<(), Failure> {
    match given.iter().find(|(_, on)| *on) {
        Some((name, _)) => Err(Failure::new(
            "input",
            format!(
                "{name} applies to checkpoints, not to the ONNX model {}",
                files::shown(path)
            ),
        )),
        None => Ok(()),
    }
}

/// The arguments every file function shares.
struct Job<'a> {
    src: &'a std::path::Path,
    dst: &'a std::path::Path,
    key: Option<&'a str>,
    force: bool,
    state_dict_only: bool,
}

impl Job<'_> {
    /// Runs `f` on the core's job with the interpreter released; what it wrote, for Python.
    fn run<'py>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(&FileJob<'_>) -> files::Result<(Vec<Pair>, Written)> + Send,
    ) -> PyResult<Bound<'py, PyDict>> {
        let job = FileJob {
            input: self.src,
            key: self.key,
            output: self.dst,
            force: self.force,
            state_dict_only: self.state_dict_only,
        };
        let (pairs, w) = py.detach(|| f(&job)).map_err(Failure::from)?;
        written_dict(py, &pairs, w)
    }
}

/// `weightnorm.fuse_file`: the CLI's `fuse`.
#[pyfunction]
#[pyo3(signature = (src, dst, dim, key=None, force=false, state_dict_only=false))]
fn fuse_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    dim: &Bound<'py, PyAny>,
    key: Option<String>,
    force: bool,
    state_dict_only: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let dim = dim_arg(dim)?;
    if is_onnx(&src) {
        no_checkpoint_options(
            &src,
            &[
                ("key", key.is_some()),
                ("dim", dim.is_some()),
                ("state_dict_only", state_dict_only),
            ],
        )?;
        let found = py
            .detach(|| files::fuse_onnx_file(&src, &dst, force))
            .map_err(Failure::from)?;
        let d = PyDict::new(py);
        let names: Vec<&str> = found.iter().map(|s| s.weight.as_str()).collect();
        d.set_item("pairs", names)?;
        d.set_item("files", 1)?;
        d.set_item(
            "difference",
            found.iter().map(|s| s.difference).fold(0.0, f64::max),
        )?;
        return Ok(d);
    }
    let at = Job {
        src: &src,
        dst: &dst,
        key: key.as_deref(),
        force,
        state_dict_only,
    };
    at.run(py, |job| files::fuse_file(job, dim))
}

/// `weightnorm.split_file`: the CLI's `split`.
#[pyfunction]
#[pyo3(signature = (src, dst, dim, scheme, include=None, key=None, force=false, state_dict_only=false))]
#[allow(clippy::too_many_arguments)]
fn split_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    dim: &Bound<'py, PyAny>,
    scheme: &str,
    include: Option<&str>,
    key: Option<String>,
    force: bool,
    state_dict_only: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let dim = dim_arg(dim)?.unwrap_or(Some(0));
    let op = Op::Split {
        dim,
        scheme: scheme_arg(scheme)?,
        include: include_arg(include)?,
    };
    let at = Job {
        src: &src,
        dst: &dst,
        key: key.as_deref(),
        force,
        state_dict_only,
    };
    at.run(py, |job| {
        files::split_file(job, &op.split_options().expect("split"))
    })
}

/// `weightnorm.convert_file`: the CLI's `convert`.
#[pyfunction]
#[pyo3(signature = (src, dst, scheme, key=None, force=false, state_dict_only=false))]
fn convert_file<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    scheme: &str,
    key: Option<String>,
    force: bool,
    state_dict_only: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let scheme = scheme_arg(scheme)?;
    let at = Job {
        src: &src,
        dst: &dst,
        key: key.as_deref(),
        force,
        state_dict_only,
    };
    at.run(py, |job| files::convert_file(job, scheme))
}

/// The native layer of the `weightnorm` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_class::<Owned>()?;
    m.add_function(wrap_pyfunction!(data_keys, m)?)?;
    m.add_function(wrap_pyfunction!(transform, m)?)?;
    m.add_function(wrap_pyfunction!(fuse_pair, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_file, m)?)?;
    m.add_function(wrap_pyfunction!(fuse_file, m)?)?;
    m.add_function(wrap_pyfunction!(split_file, m)?)?;
    m.add_function(wrap_pyfunction!(convert_file, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
