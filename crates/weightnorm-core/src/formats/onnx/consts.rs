//! Constants of a graph and the ops that compute them: the shape arithmetic exporters write
//! (`Shape`, `Gather`, `Unsqueeze`, `Concat`, `Slice`, `Reshape`, arithmetic, `Cast`) and the
//! reshaping of parameters (a PReLU slope unsqueezed to `[C, 1, 1]`). Integers may be unknown
//! (the batch size of a shape). What an op computes is bounded in size ([`MAX_CONST`]), so
//! that a hostile graph cannot make a constant huge; a tensor stored in the file is as large as
//! its data.

use super::OnnxError;
use super::fault::ConstFault;
use super::proto::{TensorProto, data_type};
use super::tensor::{External, float_values, int_values, is_float, numel};

/// The most elements a constant may have.
pub(crate) const MAX_CONST: usize = 1 << 24;

/// A constant's values: integers (possibly unknown, such as a batch size) or floats.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    /// Integers; `None` where the value is only known at run time.
    Int(Vec<Option<i64>>),
    /// Floating-point values.
    Float(Vec<f64>),
}

/// A constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Const {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Data,
    /// Its ONNX data type (floats are written back in it).
    pub dtype: i32,
}

/// A failure to evaluate, described for the node at fault.
pub(crate) type Eval<T> = Result<T, ConstFault>;

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// An axis in `[-rank, rank)` as an index.
pub(crate) fn axis(a: i64, rank: usize) -> Eval<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(ConstFault::Axis { axis: a, rank });
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// Axes in `[-rank, rank)` as indices, sorted.
pub(crate) fn sorted_axes(axes: &[i64], rank: usize) -> Eval<Vec<usize>> {
    let mut ax = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Eval<Vec<_>>>()?;
    ax.sort_unstable();
    Ok(ax)
}

impl Const {
    /// An integer vector.
    pub(crate) fn ints(values: Vec<Option<i64>>) -> Self {
        Self {
            shape: vec![values.len()],
            data: Data::Int(values),
            dtype: data_type::INT64,
        }
    }

    /// A tensor's values (of any size: its data is in the file, checked against its shape
    /// before anything is allocated).
    pub(crate) fn from_tensor(t: &TensorProto, ext: &External) -> Result<Self, OnnxError> {
        let dtype = t.data_type.unwrap_or(0);
        if is_float(dtype) {
            let (shape, v) = float_values::<f64>(t, ext)?;
            Ok(Self {
                shape,
                data: Data::Float(v),
                dtype,
            })
        } else {
            let (shape, v) = int_values(t, ext)?;
            Ok(Self {
                shape,
                data: Data::Int(v.into_iter().map(Some).collect()),
                dtype: data_type::INT64,
            })
        }
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        match &self.data {
            Data::Int(v) => v.len(),
            Data::Float(v) => v.len(),
        }
    }

    /// The values as integers (floats with an integer value included), unknowns as `None`.
    pub(crate) fn as_ints(&self) -> Eval<Vec<Option<i64>>> {
        match &self.data {
            Data::Int(v) => Ok(v.clone()),
            Data::Float(v) => v
                .iter()
                .map(|&x| {
                    (x.fract() == 0.0 && x.abs() < 9e15)
                        .then_some(Some(x as i64))
                        .ok_or_else(|| ConstFault::NotAnInteger(x.to_string()))
                })
                .collect(),
        }
    }

    /// The values as known integers.
    pub(crate) fn known_ints(&self) -> Eval<Vec<i64>> {
        self.as_ints()?
            .into_iter()
            .map(|x| x.ok_or(ConstFault::Unknown))
            .collect()
    }

    /// The values as floats (integers must be known).
    pub(crate) fn as_floats(&self) -> Eval<Vec<f64>> {
        match &self.data {
            Data::Float(v) => Ok(v.clone()),
            Data::Int(v) => v
                .iter()
                .map(|x| x.map(|i| i as f64).ok_or(ConstFault::Unknown))
                .collect(),
        }
    }

    fn with_data(&self, shape: Vec<usize>, data: Data) -> Self {
        Self {
            shape,
            data,
            dtype: self.dtype,
        }
    }

    /// Picks elements by flat index.
    fn pick(&self, shape: Vec<usize>, idx: impl Iterator<Item = usize>) -> Self {
        let data = match &self.data {
            Data::Int(v) => Data::Int(idx.map(|i| v[i]).collect()),
            Data::Float(v) => Data::Float(idx.map(|i| v[i]).collect()),
        };
        self.with_data(shape, data)
    }

    /// `Unsqueeze`.
    pub(crate) fn unsqueeze(&self, axes: &[i64]) -> Eval<Self> {
        let rank = self.shape.len() + axes.len();
        let mut ax: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<Eval<_>>()?;
        ax.sort_unstable();
        if ax.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConstFault::RepeatedAxes(axes.to_vec()));
        }
        let mut shape = self.shape.clone();
        for a in ax {
            shape.insert(a, 1);
        }
        Ok(self.with_data(shape, self.data.clone()))
    }

    /// `Squeeze` (all axes of size 1 when `axes` is empty).
    pub(crate) fn squeeze(&self, axes: &[i64]) -> Eval<Self> {
        let rank = self.shape.len();
        let ax: Vec<usize> = if axes.is_empty() {
            (0..rank).filter(|&i| self.shape[i] == 1).collect()
        } else {
            axes.iter().map(|&a| axis(a, rank)).collect::<Eval<_>>()?
        };
        if let Some(&a) = ax.iter().find(|&&a| self.shape[a] != 1) {
            return Err(ConstFault::NotSqueezable {
                axis: a,
                shape: self.shape.clone(),
            });
        }
        let shape = (0..rank)
            .filter(|i| !ax.contains(i))
            .map(|i| self.shape[i])
            .collect();
        Ok(self.with_data(shape, self.data.clone()))
    }

    /// `Reshape` (0 copies an axis unless `allowzero`, -1 is inferred).
    pub(crate) fn reshape(&self, target: &[i64], allowzero: bool) -> Eval<Self> {
        let shape = resolve_reshape(&self.shape, target, allowzero)?;
        Ok(self.with_data(shape, self.data.clone()))
    }

    /// `Concat` along `axis`.
    pub(crate) fn concat(parts: &[Self], axis_: i64) -> Eval<Self> {
        let first = parts.first().ok_or(ConstFault::EmptyConcat)?;
        let rank = first.shape.len();
        let a = axis(axis_, rank)?;
        let floats = parts.iter().any(|p| matches!(p.data, Data::Float(_)));
        for p in parts {
            if p.shape.len() != rank || (0..rank).any(|i| i != a && p.shape[i] != first.shape[i]) {
                return Err(ConstFault::Concat {
                    a: first.shape.clone(),
                    b: p.shape.clone(),
                    axis: a,
                });
            }
        }
        let outer: usize = first.shape[..a].iter().product();
        let inner: usize = first.shape[a + 1..].iter().product();
        let mut shape = first.shape.clone();
        shape[a] = parts.iter().map(|p| p.shape[a]).sum();
        check_size(&shape)?;
        let mut ints = Vec::new();
        let mut fl = Vec::new();
        for o in 0..outer {
            for p in parts {
                let block = p.shape[a] * inner;
                if floats {
                    fl.extend_from_slice(&p.as_floats()?[o * block..(o + 1) * block]);
                } else {
                    ints.extend_from_slice(&p.as_ints()?[o * block..(o + 1) * block]);
                }
            }
        }
        let data = if floats {
            Data::Float(fl)
        } else {
            Data::Int(ints)
        };
        let dtype = if floats {
            parts
                .iter()
                .find(|p| matches!(p.data, Data::Float(_)))
                .map_or(data_type::FLOAT, |p| p.dtype)
        } else {
            data_type::INT64
        };
        Ok(Self { shape, data, dtype })
    }

    /// `Gather` along `axis`.
    pub(crate) fn gather(&self, indices: &Self, axis_: i64) -> Eval<Self> {
        let rank = self.shape.len();
        let a = axis(axis_, rank)?;
        let n = self.shape[a] as i64;
        let idx: Vec<usize> = indices
            .known_ints()?
            .into_iter()
            .map(|i| {
                let j = if i < 0 { i + n } else { i };
                (0..n)
                    .contains(&j)
                    .then_some(j as usize)
                    .ok_or(ConstFault::Index { index: i, len: n })
            })
            .collect::<Eval<_>>()?;
        let mut shape: Vec<usize> = self.shape[..a].to_vec();
        shape.extend(&indices.shape);
        shape.extend(&self.shape[a + 1..]);
        check_size(&shape)?;
        let outer: usize = self.shape[..a].iter().product();
        let inner: usize = self.shape[a + 1..].iter().product();
        let len = self.shape[a];
        let flat = (0..outer).flat_map(|o| {
            idx.iter()
                .flat_map(move |&i| (0..inner).map(move |k| (o * len + i) * inner + k))
        });
        Ok(self.pick(shape, flat.collect::<Vec<_>>().into_iter()))
    }

    /// `Slice` with known starts, ends, axes and steps.
    pub(crate) fn slice(
        &self,
        starts: &[i64],
        ends: &[i64],
        axes: Option<&[i64]>,
        steps: Option<&[i64]>,
    ) -> Eval<Self> {
        let rank = self.shape.len();
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&x| axis(x, rank)).collect::<Eval<_>>()?,
            None => (0..starts.len()).collect(),
        };
        if starts.len() != axes.len() || ends.len() != axes.len() {
            return Err(ConstFault::SliceLengths);
        }
        let mut ranges: Vec<Vec<usize>> = self.shape.iter().map(|&d| (0..d).collect()).collect();
        for (k, &a) in axes.iter().enumerate() {
            let step = steps.map_or(1, |s| s.get(k).copied().unwrap_or(1));
            ranges[a] = slice_range(self.shape[a], starts[k], ends[k], step)?;
        }
        let shape: Vec<usize> = ranges.iter().map(Vec::len).collect();
        check_size(&shape)?;
        let st = strides(&self.shape);
        let mut flat = vec![0usize];
        for (a, r) in ranges.iter().enumerate() {
            let step = st[a];
            flat = flat
                .iter()
                .flat_map(|&base| r.iter().map(move |&i| base + i * step))
                .collect();
        }
        Ok(self.pick(shape, flat.into_iter()))
    }

    /// Elementwise `Add`, `Sub`, `Mul`, `Div` (integer division truncates), with broadcasting;
    /// an unknown integer stays unknown.
    pub(crate) fn binary(&self, other: &Self, op: &str) -> Eval<Self> {
        let shape = broadcast(&self.shape, &other.shape)?;
        let a_idx = broadcast_index(&self.shape, &shape);
        let b_idx = broadcast_index(&other.shape, &shape);
        let floats = matches!(self.data, Data::Float(_)) || matches!(other.data, Data::Float(_));
        if floats {
            let (a, b) = (self.as_floats()?, other.as_floats()?);
            let f = |x: f64, y: f64| match op {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                _ => x / y,
            };
            let v = a_idx
                .iter()
                .zip(&b_idx)
                .map(|(&i, &j)| f(a[i], b[j]))
                .collect();
            let dtype = if matches!(self.data, Data::Float(_)) {
                self.dtype
            } else {
                other.dtype
            };
            return Ok(Self {
                shape,
                data: Data::Float(v),
                dtype,
            });
        }
        let (a, b) = (self.as_ints()?, other.as_ints()?);
        let f = |x: Option<i64>, y: Option<i64>| -> Option<i64> {
            let (x, y) = (x?, y?);
            match op {
                "Add" => x.checked_add(y),
                "Sub" => x.checked_sub(y),
                "Mul" => x.checked_mul(y),
                _ => x.checked_div(y),
            }
        };
        let v = a_idx
            .iter()
            .zip(&b_idx)
            .map(|(&i, &j)| f(a[i], b[j]))
            .collect();
        Ok(Self {
            shape,
            data: Data::Int(v),
            dtype: data_type::INT64,
        })
    }

    /// `Cast` to an ONNX data type.
    pub(crate) fn cast(&self, to: i32) -> Eval<Self> {
        if is_float(to) {
            Ok(Self {
                shape: self.shape.clone(),
                data: Data::Float(self.as_floats()?),
                dtype: to,
            })
        } else {
            let data = match &self.data {
                Data::Int(v) => v.clone(),
                Data::Float(v) => v.iter().map(|&x| Some(x.trunc() as i64)).collect(),
            };
            Ok(Self {
                shape: self.shape.clone(),
                data: Data::Int(data),
                dtype: data_type::INT64,
            })
        }
    }
}

fn check_size(shape: &[usize]) -> Eval<()> {
    match numel(shape) {
        Some(n) if n <= MAX_CONST => Ok(()),
        _ => Err(ConstFault::TooLarge {
            shape: shape.to_vec(),
            limit: MAX_CONST,
        }),
    }
}

/// The indices `Slice` takes on an axis of length `n`.
fn slice_range(n: usize, start: i64, end: i64, step: i64) -> Eval<Vec<usize>> {
    if step == 0 {
        return Err(ConstFault::SliceStep);
    }
    let n = n as i64;
    let clamp = |x: i64, lo: i64, hi: i64| x.clamp(lo, hi);
    let norm = |x: i64| if x < 0 { x.saturating_add(n) } else { x };
    let mut out = Vec::new();
    if step > 0 {
        let (s, e) = (clamp(norm(start), 0, n), clamp(norm(end), 0, n));
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (s, e) = (clamp(norm(start), -1, n - 1), clamp(norm(end), -1, n - 1));
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    Ok(out)
}

/// The shape `Reshape` gives `shape` for `target`.
pub(crate) fn resolve_reshape(
    shape: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Eval<Vec<usize>> {
    let total = numel(shape).ok_or(ConstFault::Overflow)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*shape.get(i).ok_or(ConstFault::ZeroCopiesMissing)?),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(ConstFault::ReshapeTarget(target.to_vec())),
        }
    }
    let known = numel(&out).ok_or(ConstFault::Overflow)?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(ConstFault::Reshape {
                shape: shape.to_vec(),
                target: target.to_vec(),
            });
        }
        out[i] = total / known;
    } else if known != total {
        return Err(ConstFault::Reshape {
            shape: shape.to_vec(),
            target: target.to_vec(),
        });
    }
    Ok(out)
}

/// NumPy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Eval<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    let out: Vec<usize> = (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(ConstFault::Broadcast {
                a: a.to_vec(),
                b: b.to_vec(),
            }),
        })
        .collect::<Eval<_>>()?;
    check_size(&out)?;
    Ok(out)
}

/// For every element of `out`, the flat index of the element of `shape` broadcast to it.
fn broadcast_index(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let st = strides(shape);
    let n: usize = out.iter().product();
    let ost = strides(out);
    (0..n)
        .map(|flat| {
            let mut idx = 0;
            for d in 0..r {
                let coord = (flat / ost[d]) % out[d].max(1);
                if d + shape.len() >= r {
                    let k = d + shape.len() - r;
                    if shape[k] != 1 {
                        idx += coord * st[k];
                    }
                }
            }
            idx
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(shape: Vec<usize>, v: &[i64]) -> Const {
        Const {
            shape,
            data: Data::Int(v.iter().map(|&x| Some(x)).collect()),
            dtype: data_type::INT64,
        }
    }

    #[test]
    fn shape_arithmetic_as_exporters_write_it() {
        // Shape -> Gather(0) -> Unsqueeze -> Concat with [-1]: a flatten's target.
        let shape = Const::ints(vec![None, Some(4), Some(3), Some(3)]);
        let batch = shape.gather(&ints(vec![], &[0]), 0).unwrap();
        assert_eq!(batch.shape, Vec::<usize>::new());
        let b1 = batch.unsqueeze(&[0]).unwrap();
        let target = Const::concat(&[b1, ints(vec![1], &[-1])], 0).unwrap();
        assert_eq!(target.as_ints().unwrap(), vec![None, Some(-1)]);
        // The channel count halved: Gather(1), Add 1, Div 2.
        let c = shape.gather(&ints(vec![], &[1]), 0).unwrap();
        let half = c
            .binary(&ints(vec![], &[1]), "Add")
            .unwrap()
            .binary(&ints(vec![], &[2]), "Div")
            .unwrap();
        assert_eq!(half.known_ints().unwrap(), vec![2]);
        // Unknowns stay unknown through arithmetic.
        let unknown = batch.binary(&ints(vec![], &[2]), "Mul").unwrap();
        assert_eq!(unknown.as_ints().unwrap(), vec![None]);
    }

    #[test]
    fn slices_gathers_and_broadcasts() {
        let m = ints(vec![2, 3], &[0, 1, 2, 3, 4, 5]);
        let s = m.slice(&[1], &[i64::MAX], Some(&[1]), None).unwrap();
        assert_eq!(s.shape, vec![2, 2]);
        assert_eq!(s.known_ints().unwrap(), vec![1, 2, 4, 5]);
        let r = m.slice(&[-1], &[-4], Some(&[1]), Some(&[-1])).unwrap();
        assert_eq!(r.known_ints().unwrap(), vec![2, 1, 0, 5, 4, 3]);
        let g = m.gather(&ints(vec![2], &[2, -3]), 1).unwrap();
        assert_eq!(g.known_ints().unwrap(), vec![2, 0, 5, 3]);
        let col = ints(vec![2, 1], &[10, 20]);
        let sum = m.binary(&col, "Add").unwrap();
        assert_eq!(sum.known_ints().unwrap(), vec![10, 11, 12, 23, 24, 25]);
        assert!(m.gather(&ints(vec![], &[3]), 1).is_err());
        assert!(broadcast(&[2, 3], &[4]).is_err());
        assert_eq!(
            resolve_reshape(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert!(resolve_reshape(&[2, 3, 4], &[5, -1], false).is_err());
        let u = m.unsqueeze(&[0, -1]).unwrap();
        assert_eq!(u.shape, vec![1, 2, 3, 1]);
        assert_eq!(u.squeeze(&[]).unwrap().shape, vec![2, 3]);
    }
}
