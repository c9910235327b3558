//! A restricted unpickler for what `torch.save` writes: containers, numbers, strings, and
//! tensors rebuilt from storages named by persistent ids. It calls nothing: the few callables
//! a checkpoint names (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, ...) are
//! interpreted, and any other global is refused, as `torch.load(weights_only=True)` does.
//!
//! Containers live in an arena and values refer to them by index, so shared and even cyclic
//! references cost nothing to copy and nothing to drop; every length the input declares is
//! checked against the bytes that remain, and every copy a callable makes (an `OrderedDict` of
//! a list of pairs, a `set` of a list) is charged to a budget proportional to the pickle's
//! length ([`WORK_PER_BYTE`]), so what a pickle makes us allocate and do is bounded by a small
//! multiple of its own length. Calls nest at most [`MAX_CALL_DEPTH`] deep (a rebuild whose
//! arguments contain itself is refused, not followed until the stack overflows).
//!
//! Nothing a checkpoint holds is dropped: numbers (floats and integers of any width), strings,
//! bytes, devices, dtypes, sets and `torch.Size`s, a dict's kind (plain or `OrderedDict`) and
//! the state an `OrderedDict` is built with (a state dict's `_metadata`) are all kept, so that
//! [`super::tree`] can give the whole file and [`super::pt_write`] write it back.
//!
//! Size: about 900 lines of code and 100 of tests: the opcode loop and the callables it
//! interprets share the arena and the work budget, which must be charged in one place.

use std::collections::HashMap;
use std::rc::Rc;

use safetensors::Dtype;

use super::PtError;

/// An index into [`Pickle::nodes`].
pub(crate) type Id = usize;

/// A storage named by a persistent id: `('storage', <dtype>Storage, key, location, numel[, view])`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StorageRef {
    /// The storage's key in the container.
    pub key: String,
    /// The element type the storage is read as.
    pub dtype: Dtype,
    /// The number of elements the pickle declares for it.
    pub numel: usize,
    /// For a legacy storage view: the offset in elements into the root storage.
    pub view_offset: usize,
}

/// A tensor: a strided view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    /// The storage.
    pub storage: Rc<StorageRef>,
    /// The offset in elements of the first element.
    pub offset: usize,
    /// The shape.
    pub shape: Vec<usize>,
    /// The strides in elements.
    pub stride: Vec<usize>,
    /// Whether it requires a gradient.
    pub requires_grad: bool,
    /// Whether it was saved as a `torch.nn.Parameter`.
    pub parameter: bool,
}

/// A pickled value. Containers are in the arena.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for an `i64` (the legacy magic number): its little-endian two's
    /// complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// A global the unpickler knows (a class or a dtype), as `module.name`.
    Global(Rc<str>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// A `torch.device`, as `torch.device(...)` prints its type and index (`cpu`, `cuda:0`).
    Device(Rc<str>),
    List(Id),
    Tuple(Id),
    /// A `set` (`builtins.set`).
    Set(Id),
    /// A `frozenset`.
    FrozenSet(Id),
    /// A `torch.Size`.
    Size(Id),
    Dict(Id),
}

/// A dict: its entries in insertion order, whether it is an `OrderedDict`, and the state it
/// was built with (`BUILD`: an `OrderedDict`'s attributes, a state dict's `_metadata`).
#[derive(Debug, Default)]
pub(crate) struct Map {
    pub entries: Vec<(Value, Value)>,
    pub ordered: bool,
    pub state: Option<Value>,
}

/// A container.
#[derive(Debug)]
pub(crate) enum Node {
    /// A list, tuple, set or `torch.Size`.
    Seq(Vec<Value>),
    /// A dict.
    Map(Map),
}

/// The globals a checkpoint may name.
const ALLOWED: &[&str] = &[
    "collections.OrderedDict",
    "_codecs.encode",
    "builtins.bytearray",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Tensor",
    "torch.Size",
    "torch.device",
    "builtins.set",
    "builtins.frozenset",
    "__builtin__.set",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.float64",
    "torch.float32",
    "torch.float16",
    "torch.bfloat16",
    "torch.int64",
    "torch.int32",
    "torch.int16",
    "torch.int8",
    "torch.uint8",
    "torch.bool",
];

/// The element type of a storage class.
fn storage_dtype(class: &str) -> Option<Dtype> {
    Some(match class {
        "torch.FloatStorage" => Dtype::F32,
        "torch.DoubleStorage" => Dtype::F64,
        "torch.HalfStorage" => Dtype::F16,
        "torch.BFloat16Storage" => Dtype::BF16,
        "torch.LongStorage" => Dtype::I64,
        "torch.IntStorage" => Dtype::I32,
        "torch.ShortStorage" => Dtype::I16,
        "torch.CharStorage" => Dtype::I8,
        "torch.ByteStorage" => Dtype::U8,
        "torch.BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

/// The size in bytes of one element of `dtype`.
pub(crate) fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

/// The result of unpickling: the root value and the arena it refers into.
#[derive(Debug, Default)]
pub(crate) struct Pickle {
    /// The containers.
    pub nodes: Vec<Node>,
}

impl Pickle {
    /// The items of a list or tuple.
    pub fn seq(&self, id: Id) -> &[Value] {
        match &self.nodes[id] {
            Node::Seq(v) => v,
            Node::Map(_) => &[],
        }
    }

    /// The entries of a dict.
    pub fn map(&self, id: Id) -> &[(Value, Value)] {
        match &self.nodes[id] {
            Node::Map(m) => &m.entries,
            Node::Seq(_) => &[],
        }
    }

    /// A dict's kind and state.
    pub fn dict(&self, id: Id) -> Option<&Map> {
        match &self.nodes[id] {
            Node::Map(m) => Some(m),
            Node::Seq(_) => None,
        }
    }
}

/// How many units of work (elements copied by a callable) each byte of a pickle may cost,
/// beyond [`WORK_BASE`]: a bound proportional to the input on what a hostile pickle can make
/// us allocate (`OrderedDict` applied again and again to one long list of pairs).
pub(crate) const WORK_PER_BYTE: usize = 16;
/// The work any pickle may cost, however short.
pub(crate) const WORK_BASE: usize = 1 << 16;
/// How deeply interpreted calls may nest (`_rebuild_from_type_v2` calls the function it is
/// given; a legitimate checkpoint nests two deep).
pub(crate) const MAX_CALL_DEPTH: usize = 8;

struct Unpickler<'a, 'p> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    out: &'p mut Pickle,
    /// Work left (see [`WORK_PER_BYTE`]).
    work: usize,
}

type R<T> = Result<T, PtError>;

/// Parses one pickle from the start of `data`; returns its value and the number of bytes it
/// took. Persistent ids must be storage tuples; each is recorded by `on_storage`, which
/// may refuse it.
pub(crate) fn unpickle(
    data: &[u8],
    out: &mut Pickle,
    on_storage: &mut dyn FnMut(&StorageRef) -> R<()>,
) -> R<(Value, usize)> {
    let mut u = Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        out,
        work: data
            .len()
            .saturating_mul(WORK_PER_BYTE)
            .saturating_add(WORK_BASE),
    };
    let v = u.run(on_storage)?;
    Ok((v, u.pos))
}

impl Unpickler<'_, '_> {
    fn take(&mut self, n: usize) -> R<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PtError::PickleTruncated)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn line(&mut self) -> R<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PtError::PickleTruncated)?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn len(&mut self, n: u64) -> R<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or(PtError::PickleTruncated)
    }

    fn text(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| PtError::PickleBadString)?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn pop(&mut self) -> R<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(PtError::PickleStackUnderflow);
        }
        self.stack.pop().ok_or(PtError::PickleStackUnderflow)
    }

    fn top(&mut self) -> R<&mut Value> {
        self.stack.last_mut().ok_or(PtError::PickleStackUnderflow)
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let m = self.marks.pop().ok_or(PtError::PickleStackUnderflow)?;
        if m > self.stack.len() {
            return Err(PtError::PickleStackUnderflow);
        }
        Ok(self.stack.split_off(m))
    }

    /// Charges `n` units of work.
    fn charge(&mut self, n: usize) -> R<()> {
        self.work = self.work.checked_sub(n).ok_or(PtError::TooMuchWork)?;
        Ok(())
    }

    fn node(&mut self, n: Node) -> Id {
        self.out.nodes.push(n);
        self.out.nodes.len() - 1
    }

    fn push_seq(&mut self, items: Vec<Value>, tuple: bool) {
        let id = self.node(Node::Seq(items));
        self.stack.push(if tuple {
            Value::Tuple(id)
        } else {
            Value::List(id)
        });
    }

    fn global(&mut self, module: &str, name: &str) -> R<Value> {
        let full = format!("{module}.{name}");
        if !ALLOWED.contains(&full.as_str()) {
            return Err(PtError::Global(full));
        }
        Ok(Value::Global(Rc::from(full)))
    }

    fn extend_list(&mut self, target: &Value, items: Vec<Value>) -> R<()> {
        match target {
            Value::List(id) => match &mut self.out.nodes[*id] {
                Node::Seq(v) => {
                    v.extend(items);
                    Ok(())
                }
                Node::Map(_) => Err(PtError::PickleType("append to a non-list")),
            },
            _ => Err(PtError::PickleType("append to a non-list")),
        }
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>) -> R<()> {
        if !items.len().is_multiple_of(2) {
            return Err(PtError::PickleType("an odd number of dict items"));
        }
        let Value::Dict(id) = target else {
            return Err(PtError::PickleType("set an item of a non-dict"));
        };
        let Node::Map(m) = &mut self.out.nodes[*id] else {
            return Err(PtError::PickleType("set an item of a non-dict"));
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            m.entries.push((k, v));
        }
        Ok(())
    }

    fn int_of(&self, v: &Value, what: &'static str) -> R<usize> {
        match v {
            Value::Int(i) => usize::try_from(*i).map_err(|_| PtError::PickleType(what)),
            Value::Bool(b) => Ok(usize::from(*b)),
            _ => Err(PtError::PickleType(what)),
        }
    }

    fn ints_of(&self, v: &Value, what: &'static str) -> R<Vec<usize>> {
        match v {
            Value::Tuple(id) | Value::List(id) => self
                .out
                .seq(*id)
                .iter()
                .map(|x| self.int_of(x, what))
                .collect(),
            _ => Err(PtError::PickleType(what)),
        }
    }

    /// The items of a tuple or list, copied (and charged for).
    fn args(&mut self, v: &Value) -> R<Vec<Value>> {
        match v {
            Value::Tuple(id) | Value::List(id) => {
                self.charge(self.out.seq(*id).len())?;
                Ok(self.out.seq(*id).to_vec())
            }
            _ => Err(PtError::PickleType("call arguments that are not a tuple")),
        }
    }

    fn bool_of(v: Option<&Value>) -> bool {
        matches!(v, Some(Value::Bool(true)))
    }

    fn rebuild_tensor(&self, args: &[Value]) -> R<Value> {
        let [storage, offset, size, stride, rest @ ..] = args else {
            return Err(PtError::PickleType("tensor rebuilt from too few arguments"));
        };
        let Value::Storage(storage) = storage else {
            return Err(PtError::PickleType("tensor rebuilt from a non-storage"));
        };
        let offset = self.int_of(offset, "a tensor offset that is not an integer")?;
        let shape = self.ints_of(size, "a tensor size that is not integers")?;
        let stride = self.ints_of(stride, "a tensor stride that is not integers")?;
        if shape.len() != stride.len() {
            return Err(PtError::PickleType(
                "a tensor's size and stride differ in rank",
            ));
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: Rc::clone(storage),
            offset,
            shape,
            stride,
            // `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)`.
            requires_grad: Self::bool_of(rest.first()),
            parameter: false,
        })))
    }

    /// Interprets `callable(*args)` for the allowed callables.
    fn call(&mut self, callable: &Value, args: &Value, depth: usize) -> R<Value> {
        let Value::Global(name) = callable else {
            return Err(PtError::PickleType(
                "a call of something that is not a global",
            ));
        };
        if depth > MAX_CALL_DEPTH {
            return Err(PtError::TooDeep);
        }
        let args = self.args(args)?;
        Ok(match &**name {
            "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" => {
                self.rebuild_tensor(&args)?
            }
            "torch._utils._rebuild_parameter"
            | "torch._utils._rebuild_parameter_with_state"
            | "torch.nn.parameter.Parameter" => match args.first() {
                // `(data, requires_grad, ...)`; a Parameter requires grad by default.
                Some(Value::Tensor(t)) => Value::Tensor(Rc::new(TensorRef {
                    requires_grad: args.get(1).is_none_or(|r| matches!(r, Value::Bool(true))),
                    parameter: true,
                    ..(**t).clone()
                })),
                _ => return Err(PtError::PickleType("a parameter without a tensor")),
            },
            "_codecs.encode" => match args.as_slice() {
                // Protocol 2's bytes: `_codecs.encode(text, 'latin1')`, one char a byte.
                [Value::Str(text), Value::Str(enc)] if &**enc == "latin1" => {
                    let bytes: Option<Vec<u8>> =
                        text.chars().map(|c| u8::try_from(c).ok()).collect();
                    Value::Bytes(
                        bytes
                            .ok_or(PtError::PickleType("latin1 text beyond latin1"))?
                            .into(),
                    )
                }
                _ => {
                    return Err(PtError::PickleType(
                        "_codecs.encode of other than latin1 text",
                    ));
                }
            },
            "builtins.bytearray" => match args.as_slice() {
                [] => Value::Bytes(Rc::from(&[][..])),
                [b @ Value::Bytes(_)] => b.clone(),
                _ => return Err(PtError::PickleType("a bytearray of other than bytes")),
            },
            "torch._tensor._rebuild_from_type_v2" => {
                // (func, type, args, state): the tensor is func(*args); the subclass and its
                // state are not kept.
                let [func, _, inner, ..] = args.as_slice() else {
                    return Err(PtError::PickleType(
                        "_rebuild_from_type_v2 without arguments",
                    ));
                };
                self.call(func, inner, depth + 1)?
            }
            "collections.OrderedDict" => {
                let mut entries = Vec::new();
                if let Some(items) = args.first() {
                    for pair in self.args(items)? {
                        match self.args(&pair)?.as_slice() {
                            [k, v] => entries.push((k.clone(), v.clone())),
                            _ => return Err(PtError::PickleType("OrderedDict items not pairs")),
                        }
                    }
                }
                Value::Dict(self.node(Node::Map(Map {
                    entries,
                    ordered: true,
                    state: None,
                })))
            }
            "builtins.set" | "builtins.frozenset" | "__builtin__.set" | "torch.Size" => {
                let items = match args.first() {
                    Some(v) => self.args(v)?,
                    None => Vec::new(),
                };
                let id = self.node(Node::Seq(items));
                match &**name {
                    "torch.Size" => Value::Size(id),
                    "builtins.frozenset" => Value::FrozenSet(id),
                    _ => Value::Set(id),
                }
            }
            "torch.device" => match args.as_slice() {
                [Value::Str(kind)] => Value::Device(Rc::clone(kind)),
                [Value::Str(kind), Value::Int(i)] => Value::Device(Rc::from(format!("{kind}:{i}"))),
                _ => return Err(PtError::PickleType("a torch.device of other than a name")),
            },
            _ => {
                return Err(PtError::PickleType(
                    "a call of a class that is not callable",
                ));
            }
        })
    }

    fn persistent(
        &mut self,
        pid: Value,
        on_storage: &mut dyn FnMut(&StorageRef) -> R<()>,
    ) -> R<Value> {
        let items = self.args(&pid)?;
        let bad = PtError::PickleType("a persistent id that is not a storage");
        let [
            Value::Str(kind),
            Value::Global(class),
            Value::Str(key),
            _location,
            numel,
            rest @ ..,
        ] = items.as_slice()
        else {
            return Err(bad);
        };
        if &**kind != "storage" {
            return Err(bad);
        }
        let dtype = storage_dtype(class).ok_or(bad)?;
        let numel = self.int_of(numel, "a storage size that is not an integer")?;
        let (key, view_offset) = match rest.first() {
            None | Some(Value::None) => (key.to_string(), 0),
            // A legacy view: (view_key, offset, size) into the root storage `key`.
            Some(view) => {
                let v = self.args(view)?;
                let [_, off, size] = v.as_slice() else {
                    return Err(PtError::PickleType("a storage view that is not a triple"));
                };
                let off = self.int_of(off, "a storage view offset")?;
                let size = self.int_of(size, "a storage view size")?;
                if off.checked_add(size).is_none_or(|e| e > numel) {
                    return Err(PtError::PickleType("a storage view past its storage"));
                }
                (key.to_string(), off)
            }
        };
        let s = StorageRef {
            key,
            dtype,
            numel,
            view_offset,
        };
        on_storage(&s)?;
        Ok(Value::Storage(Rc::new(s)))
    }

    fn run(&mut self, on_storage: &mut dyn FnMut(&StorageRef) -> R<()>) -> R<Value> {
        loop {
            let op = self.byte()?;
            match op {
                0x80 => {
                    let p = self.byte()?;
                    if p > 5 {
                        return Err(PtError::PickleProtocol(p));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only.
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.byte()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.byte()?)
                    } else {
                        let n = u64::from(self.u32()?);
                        self.len(n)?
                    };
                    let b = self.take(n)?;
                    let v = if n <= 8 {
                        let mut buf = [if b.last().is_some_and(|&x| x & 0x80 != 0) {
                            0xff
                        } else {
                            0
                        }; 8];
                        buf[..n].copy_from_slice(b);
                        Value::Int(i64::from_le_bytes(buf))
                    } else {
                        Value::BigInt(Rc::from(b))
                    };
                    self.stack.push(v);
                }
                b'I' | b'L' => {
                    let l = self.line()?;
                    let t = l.trim_end_matches('L');
                    let v = match t {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => match t.parse::<i64>() {
                            Ok(i) => Value::Int(i),
                            Err(_)
                                if !t.trim_start_matches('-').is_empty()
                                    && t.strip_prefix('-')
                                        .unwrap_or(t)
                                        .bytes()
                                        .all(|c| c.is_ascii_digit()) =>
                            {
                                Value::BigInt(decimal_to_le(t))
                            }
                            Err(_) => return Err(PtError::PickleType("a malformed integer")),
                        },
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l
                        .parse::<f64>()
                        .map_err(|_| PtError::PickleType("a malformed float"))?;
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = u64::from(self.u32()?);
                    let n = self.len(n)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = usize::from(self.byte()?);
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'U' | b'C' => {
                    let n = usize::from(self.byte()?);
                    let b = self.take(n)?;
                    let v = match std::str::from_utf8(b) {
                        Ok(s) if op == b'U' => Value::Str(Rc::from(s)),
                        _ => Value::Bytes(Rc::from(b)),
                    };
                    self.stack.push(v);
                }
                b'T' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'T' | b'B' => u64::from(self.u32()?),
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let b = self.take(n)?;
                    let v = match std::str::from_utf8(b) {
                        Ok(s) if op == b'T' => Value::Str(Rc::from(s)),
                        _ => Value::Bytes(Rc::from(b)),
                    };
                    self.stack.push(v);
                }
                b'}' => {
                    let id = self.node(Node::Map(Map::default()));
                    self.stack.push(Value::Dict(id));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let id = self.node(Node::Map(Map::default()));
                    self.set_items(&Value::Dict(id), items)?;
                    self.stack.push(Value::Dict(id));
                }
                b']' => self.push_seq(Vec::new(), false),
                b')' => self.push_seq(Vec::new(), true),
                0x8f => {
                    let id = self.node(Node::Seq(Vec::new()));
                    self.stack.push(Value::Set(id));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_seq(items, false);
                }
                b't' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push_seq(items, true);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_seq(items, true);
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?.clone();
                    self.extend_list(&list, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?.clone();
                    self.extend_list(&list, items)?;
                }
                0x90 => {
                    // ADDITEMS: into a set.
                    let items = self.pop_mark()?;
                    let Value::Set(id) = self.top()?.clone() else {
                        return Err(PtError::PickleType("add items to a non-set"));
                    };
                    if let Node::Seq(v) = &mut self.out.nodes[id] {
                        v.extend(items);
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?.clone();
                    self.set_items(&d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?.clone();
                    self.set_items(&d, items)?;
                }
                b'q' | b'r' | 0x94 | b'p' => {
                    let idx = match op {
                        b'q' => u32::from(self.byte()?),
                        b'r' => self.u32()?,
                        b'p' => self
                            .line()?
                            .parse::<u32>()
                            .map_err(|_| PtError::PickleType("a malformed memo index"))?,
                        _ => u32::try_from(self.memo.len())
                            .map_err(|_| PtError::PickleType("too many memo entries"))?,
                    };
                    let v = self.top()?.clone();
                    self.memo.insert(idx, v);
                }
                b'h' | b'j' | b'g' => {
                    let idx = match op {
                        b'h' => u32::from(self.byte()?),
                        b'j' => self.u32()?,
                        _ => self
                            .line()?
                            .parse::<u32>()
                            .map_err(|_| PtError::PickleType("a malformed memo index"))?,
                    };
                    let v = self
                        .memo
                        .get(&idx)
                        .cloned()
                        .ok_or(PtError::PickleMemo(idx))?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.global(&module, &name)?;
                    self.stack.push(v);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (module, name) else {
                        return Err(PtError::PickleType("STACK_GLOBAL of non-strings"));
                    };
                    let v = self.global(&m, &n)?;
                    self.stack.push(v);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.call(&callable, &args, 0)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.call(&callable, &args, 0)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: set an object's state. A dict keeps it (an OrderedDict's
                    // attributes: a state dict's `_metadata`); a tensor's (its Python
                    // attributes, hooks) is not kept.
                    let state = self.pop()?;
                    if let Value::Dict(id) = self.top()?.clone()
                        && let Node::Map(m) = &mut self.out.nodes[id]
                    {
                        m.state = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid, on_storage)?;
                    self.stack.push(v);
                }
                other => return Err(PtError::PickleOpcode(other)),
            }
        }
    }
}

/// The little-endian two's complement bytes of a decimal integer (protocol 0's `LONG`).
fn decimal_to_le(t: &str) -> Rc<[u8]> {
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t),
    };
    // Magnitude, little-endian base 256.
    let mut mag: Vec<u8> = Vec::new();
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for b in &mut mag {
            let x = u32::from(*b) * 10 + carry;
            *b = x as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            mag.push(carry as u8);
            carry >>= 8;
        }
    }
    mag.push(0); // room for the sign bit
    if neg {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for b in &mut mag {
            let x = u16::from(!*b) + carry;
            *b = x as u8;
            carry = x >> 8;
        }
    }
    // The shortest form: drop a top byte that only repeats the sign of the one below it.
    while let [.., next, top] = mag[..]
        && ((top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0))
    {
        mag.pop();
    }
    Rc::from(mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> R<(Value, Pickle)> {
        let mut p = Pickle::default();
        let (v, _) = unpickle(data, &mut p, &mut |_| Ok(()))?;
        Ok((v, p))
    }

    #[test]
    fn refuses_code() {
        let evil = b"\x80\x02cos\nsystem\nX\x08\x00\x00\x00touch /x\x85R.";
        let err = run(evil).unwrap_err();
        assert!(err.to_string().contains("found os.system"), "{err}");
    }

    #[test]
    fn truncated_lengths_are_refused_before_allocating() {
        assert!(matches!(
            run(b"\x80\x02X\xff\xff\xff\xff").unwrap_err(),
            PtError::PickleTruncated
        ));
        assert!(matches!(
            run(b"\x80\x02\x8b\xff\xff\xff\x7f").unwrap_err(),
            PtError::PickleTruncated
        ));
    }

    #[test]
    fn shared_and_cyclic_references_are_cheap() {
        // A list appended to itself a thousand times, through the memo.
        let mut data = b"\x80\x02]q\x00".to_vec();
        for _ in 0..1000 {
            data.extend_from_slice(b"h\x00a");
        }
        data.push(b'.');
        let (v, p) = run(&data).unwrap();
        let Value::List(id) = v else { panic!() };
        assert_eq!(p.seq(id).len(), 1000);
    }

    #[test]
    fn ordered_dicts_of_one_long_list_exhaust_a_budget_proportional_to_the_file() {
        // OrderedDict applied 2,000 times to one list of 20,000 pairs (52 KB): 40 million
        // entries copied without a budget.
        let mut d = b"\x80\x02ccollections\nOrderedDict\nq\x010]q\x00(K\x01K\x02\x86q\x02".to_vec();
        for _ in 1..20_000 {
            d.extend_from_slice(b"h\x02");
        }
        d.extend_from_slice(b"e0");
        for _ in 0..2_000 {
            d.extend_from_slice(b"h\x01h\x00\x85R0");
        }
        d.extend_from_slice(b"N.");
        assert!(d.len() < 60_000);
        assert!(matches!(run(&d).unwrap_err(), PtError::TooMuchWork));
        // One OrderedDict of the same list is fine.
        let mut one =
            b"\x80\x02ccollections\nOrderedDict\nq\x010]q\x00(K\x01K\x02\x86q\x02".to_vec();
        for _ in 1..20_000 {
            one.extend_from_slice(b"h\x02");
        }
        one.extend_from_slice(b"e0h\x01h\x00\x85R.");
        let (v, p) = run(&one).unwrap();
        let Value::Dict(id) = v else { panic!() };
        assert_eq!(p.map(id).len(), 20_000);
    }

    #[test]
    fn a_rebuild_whose_arguments_contain_itself_is_refused_not_followed() {
        // L = [_rebuild_from_type_v2, None, L, None]; _rebuild_from_type_v2(*L) calls itself
        // with L again, forever.
        let d = b"\x80\x02]q\x00(ctorch._tensor\n_rebuild_from_type_v2\nq\x01Nh\x00Ne0h\x01h\x00R.";
        assert!(matches!(run(d).unwrap_err(), PtError::TooDeep));
    }

    #[test]
    fn every_value_is_kept() {
        // 0.5, b"\xff", a big integer, a device, a set, a torch.Size, an OrderedDict with state.
        let d = b"\x80\x02(G?\xe0\x00\x00\x00\x00\x00\x00C\x01\xff\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09ctorch\ndevice\nX\x06\x00\x00\x00cuda:1\x85Rcbuiltins\nset\n]K\x07a\x85Rctorch\nSize\nK\x02K\x03\x86\x85Rccollections\nOrderedDict\n)R}X\x01\x00\x00\x00kK\x05sbt.";
        let (v, p) = run(d).unwrap();
        let Value::Tuple(id) = v else { panic!("{v:?}") };
        let items = p.seq(id);
        assert!(matches!(items[0], Value::Float(x) if x == 0.5));
        assert!(matches!(&items[1], Value::Bytes(b) if b[..] == [0xff]));
        assert!(matches!(&items[2], Value::BigInt(b) if b.len() == 9 && b[8] == 9));
        assert!(matches!(&items[3], Value::Device(d) if &**d == "cuda:1"));
        assert!(matches!(&items[4], Value::Set(_)));
        assert!(matches!(&items[5], Value::Size(_)));
        let Value::Dict(od) = &items[6] else { panic!() };
        let m = p.dict(*od).unwrap();
        assert!(m.ordered && m.state.is_some());
    }

    #[test]
    fn decimal_integers_become_twos_complement() {
        assert_eq!(&*decimal_to_le("300"), &[0x2c, 0x01]);
        assert_eq!(&*decimal_to_le("128"), &[0x80, 0x00]);
        assert_eq!(&*decimal_to_le("-128"), &[0x80]);
        assert_eq!(&*decimal_to_le("-1"), &[0xff]);
        assert_eq!(&*decimal_to_le("-256"), &[0x00, 0xff]);
        // The legacy magic number.
        assert_eq!(
            &decimal_to_le("119547037146038801333356")[..10],
            &[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]
        );
    }
}
