#![no_main]
// The `.pt` writer reading back what it wrote: the input is a small program that builds a
// checkpoint tree (every kind of value a checkpoint holds: numbers of every width, floats of
// every bit pattern, strings, bytes, tensors of every dtype, containers nested, dicts with
// their state), which is written, read back and compared value for value, bit for bit. A tree
// the writer refuses is fine; one it writes must read back the same.
use std::cell::Cell;

use weightnorm_core::formats::{
    Dtype, PtDict, PtTensor, PtValue, TensorEntry, WriteOptions, read_pt, write_pt,
};

/// Reads the program's bytes.
struct Program<'a> {
    data: &'a [u8],
    at: Cell<usize>,
}

impl Program<'_> {
    fn byte(&self) -> u8 {
        let i = self.at.get();
        self.at.set(i + 1);
        self.data.get(i).copied().unwrap_or(0)
    }
    fn bytes(&self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    fn done(&self) -> bool {
        self.at.get() >= self.data.len()
    }
}

const DTYPES: [Dtype; 10] = [
    Dtype::F64,
    Dtype::F32,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I64,
    Dtype::I32,
    Dtype::I16,
    Dtype::I8,
    Dtype::U8,
    Dtype::BOOL,
];

fn size_of(d: Dtype) -> usize {
    match d {
        Dtype::F64 | Dtype::I64 => 8,
        Dtype::F32 | Dtype::I32 => 4,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
        _ => 1,
    }
}

fn value(p: &Program<'_>, depth: usize, count: &mut usize) -> PtValue {
    *count += 1;
    let op = p.byte();
    // Containers only while shallow and small.
    let leaf = depth >= 6 || *count > 400 || p.done();
    let op = if leaf { op % 11 } else { op % 17 };
    let items = |p: &Program<'_>, count: &mut usize| -> Vec<PtValue> {
        let n = usize::from(p.byte() % 6);
        (0..n).map(|_| value(p, depth + 1, count)).collect()
    };
    match op {
        0 => PtValue::None,
        1 => PtValue::Bool(p.byte() & 1 == 1),
        2 => PtValue::Int(i64::from_le_bytes(p.bytes(8).try_into().unwrap())),
        3 => PtValue::Int(i64::from(p.byte() as i8)),
        4 => PtValue::Float(f64::from_le_bytes(p.bytes(8).try_into().unwrap())),
        5 => {
            let n = usize::from(p.byte() % 24);
            PtValue::Str(String::from_utf8_lossy(&p.bytes(n)).into_owned())
        }
        6 => {
            let n = usize::from(p.byte() % 24);
            PtValue::Bytes(p.bytes(n))
        }
        7 => {
            // A minimal two's complement integer beyond i64: 9 to 12 bytes, its top byte
            // neither a sign extension of the one below nor zero padding.
            let n = 9 + usize::from(p.byte() % 4);
            let mut b = p.bytes(n);
            b[n - 1] = 0x01 + (b[n - 1] % 0x7e);
            if p.byte() & 1 == 1 {
                b[n - 1] |= 0x80;
                b[n - 1] = b[n - 1].min(0xfe);
            }
            PtValue::BigInt(b)
        }
        8 => PtValue::Global(
            ["torch.float32", "torch.bfloat16", "torch.int64"][usize::from(p.byte() % 3)].into(),
        ),
        9 => PtValue::Device(["cpu", "cuda:0", "cuda:7"][usize::from(p.byte() % 3)].into()),
        10 => {
            let dtype = DTYPES[usize::from(p.byte()) % DTYPES.len()];
            let rank = usize::from(p.byte() % 4);
            let shape: Vec<usize> = (0..rank).map(|_| usize::from(p.byte() % 5)).collect();
            let n: usize = shape.iter().product::<usize>() * size_of(dtype);
            let mut bytes = p.bytes(n);
            if dtype == Dtype::BOOL {
                bytes.iter_mut().for_each(|b| *b &= 1);
            }
            let flags = p.byte();
            PtValue::Tensor(PtTensor {
                entry: TensorEntry::from_bytes("t", dtype, shape, bytes).expect("sized"),
                requires_grad: flags & 1 == 1,
                parameter: flags & 2 == 2,
            })
        }
        11 => PtValue::List(items(p, count)),
        12 => PtValue::Tuple(items(p, count)),
        13 => PtValue::Set(items(p, count)),
        14 => PtValue::Size(
            (0..usize::from(p.byte() % 4))
                .map(|_| PtValue::Int(i64::from(p.byte())))
                .collect(),
        ),
        _ => {
            // A dict with distinct keys (Python keeps one value per key).
            let n = usize::from(p.byte() % 6);
            let entries = (0..n)
                .map(|i| {
                    let key = if p.byte() & 1 == 1 {
                        PtValue::Str(format!("k{i}"))
                    } else {
                        PtValue::Int(i as i64)
                    };
                    (key, value(p, depth + 1, count))
                })
                .collect();
            let flags = p.byte();
            let state = (flags & 2 == 2).then(|| {
                Box::new(PtValue::Dict(PtDict {
                    entries: vec![(PtValue::Str("_metadata".into()), value(p, depth + 1, count))],
                    ordered: false,
                    state: None,
                }))
            });
            PtValue::Dict(PtDict {
                entries,
                ordered: flags & 1 == 1 || state.is_some(),
                state,
            })
        }
    }
}

fn same(a: &PtValue, b: &PtValue) {
    use PtValue as V;
    match (a, b) {
        (V::Tensor(x), V::Tensor(y)) => {
            assert_eq!(
                (x.entry.dtype, &x.entry.shape, x.requires_grad, x.parameter),
                (y.entry.dtype, &y.entry.shape, y.requires_grad, y.parameter)
            );
            assert_eq!(x.entry.bytes().unwrap(), y.entry.bytes().unwrap());
        }
        (V::Dict(x), V::Dict(y)) => {
            assert_eq!(x.ordered, y.ordered);
            assert_eq!(x.entries.len(), y.entries.len());
            for ((ka, va), (kb, vb)) in x.entries.iter().zip(&y.entries) {
                same(ka, kb);
                same(va, vb);
            }
            match (&x.state, &y.state) {
                (Some(p), Some(q)) => same(p, q),
                (None, None) => {}
                _ => panic!("state differs"),
            }
        }
        (V::List(x), V::List(y))
        | (V::Tuple(x), V::Tuple(y))
        | (V::Set(x), V::Set(y))
        | (V::FrozenSet(x), V::FrozenSet(y))
        | (V::Size(x), V::Size(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(p, q)| same(p, q));
        }
        (V::Float(x), V::Float(y)) => assert_eq!(x.to_bits(), y.to_bits()),
        (V::Int(x), V::Int(y)) => assert_eq!(x, y),
        (V::BigInt(x), V::BigInt(y)) => assert_eq!(x, y),
        (V::Str(x), V::Str(y)) | (V::Global(x), V::Global(y)) | (V::Device(x), V::Device(y)) => {
            assert_eq!(x, y)
        }
        (V::Bytes(x), V::Bytes(y)) => assert_eq!(x, y),
        (V::Bool(x), V::Bool(y)) => assert_eq!(x, y),
        (V::None, V::None) => {}
        _ => panic!("{} against {}", a.type_name(), b.type_name()),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let program = Program {
        data,
        at: Cell::new(0),
    };
    let root = value(&program, 0, &mut 0);
    let path = std::env::temp_dir().join(format!("weightnorm-fuzz-writer-{}.pt", std::process::id()));
    let options = WriteOptions { fsync: false };
    if write_pt(&path, &root, &options).is_err() {
        return;
    }
    let back = read_pt(&path).expect("what the writer wrote reads back");
    same(&root, &back);
});
