//! PyTorch checkpoints into Burn modules and back.
//!
//! Parameter paths are the same on both sides (`fc1.weight` is `fc1.weight`); the layouts differ
//! only for Linear weights, which Burn stores `[in, out]` and PyTorch `[out, in]`. A
//! weight-normalized parameter takes `v` and `g` from the checkpoint's pair (either scheme):
//! `v` in Burn's layout, `g` flattened to one value per slice, after checking that PyTorch's
//! `dim` is the axis the module normalizes. A pair in the checkpoint for a parameter without
//! weight norm is fused on load.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, Parameter};
use burn::tensor::{DType, Tensor, TensorData};
use weightnorm_core::formats::{Dtype, Result, TensorEntry, TorchError};
use weightnorm_core::surgery::{Scheme, detect_pairs, fuse_tensor, pair_keys};

use crate::axis::{LayerKind, NormAxis};
use crate::reparam::{ParamInfo, WeightNorm, survey};
use burn::module::Reparameterization;

fn burn_dtype(d: Dtype, name: &str) -> Result<DType> {
    Ok(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => {
            return Err(TorchError::DType {
                name: name.to_string(),
                reason: format!("{other:?} is not a floating-point type"),
            });
        }
    })
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        _ => Dtype::F32,
    }
}

/// The layer kind of a parameter that is a layer's weight (the layout table applies to it).
fn weight_kind(info: &ParamInfo) -> Option<LayerKind> {
    info.layer_kind()
        .filter(|_| info.path.rsplit('.').next() == Some("weight"))
}

/// Whether the checkpoint stores this parameter transposed relative to Burn.
fn transposed(info: &ParamInfo) -> bool {
    weight_kind(info).is_some_and(LayerKind::transposed_in_torch)
}

/// A weight's axis in the other library's layout (through the layout table).
fn torch_axis(info: &ParamInfo, axis: NormAxis) -> NormAxis {
    weight_kind(info).map_or(axis, |k| k.torch_axis(axis))
}

/// PyTorch's name of a Burn parameter: the same path, except batch norms' `gamma` and `beta`,
/// which PyTorch calls `weight` and `bias`.
fn torch_name(info: &ParamInfo) -> String {
    let (module, field) = info
        .path
        .rsplit_once('.')
        .unwrap_or(("", info.path.as_str()));
    let field = match (info.module.as_str(), field) {
        ("BatchNorm", "gamma") => super::field::WEIGHT,
        ("BatchNorm" | "MeanOnlyBatchNorm", "beta") => super::field::BIAS,
        (_, f) => f,
    };
    if module.is_empty() {
        field.to_string()
    } else {
        format!("{module}.{field}")
    }
}

/// PyTorch's batch-norm step counter beside a Burn `BatchNorm`'s running mean: written on save
/// (Burn keeps no counter, so 0) and accepted without a place on load.
fn batch_counter(info: &ParamInfo) -> Option<String> {
    (info.module == "BatchNorm")
        .then(|| info.path.rsplit_once('.'))
        .flatten()
        .filter(|(_, f)| *f == super::field::RUNNING_MEAN)
        .map(|(m, _)| super::field::key(m, super::field::NUM_BATCHES_TRACKED))
}

/// Data of a checkpoint tensor, transposed when `transpose` (a 2-D Linear weight).
fn data_of(t: &TensorEntry, transpose: bool) -> Result<TensorData> {
    let data = TensorData::from_bytes_vec(
        t.bytes()?.into_owned(),
        t.shape.clone(),
        burn_dtype(t.dtype, &t.name)?,
    );
    if !transpose {
        return Ok(data);
    }
    if t.shape.len() != 2 {
        return Err(TorchError::NotLinear {
            name: t.name.clone(),
            shape: t.shape.clone(),
        });
    }
    Ok(transpose_2d(data))
}

/// The transpose of a 2-D tensor's data, in its dtype (exact: values are only moved).
fn transpose_2d(data: TensorData) -> TensorData {
    let [r, c]: [usize; 2] = data.shape().to_vec().try_into().expect("2-D");
    let dtype = data.dtype();
    let vals = data
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("converted to f64");
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = vals[i * c + j];
        }
    }
    TensorData::new(out, vec![c, r]).convert_dtype(dtype)
}

/// Assigns values to float parameters by path.
struct Assign {
    values: BTreeMap<String, TensorData>,
    stack: Vec<String>,
    errors: Vec<TorchError>,
}

impl ModuleMapper for Assign {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.stack.join(".");
        let Some(data) = self.values.remove(&path) else {
            return param;
        };
        let shape = param.shape().to_vec();
        if data.shape().as_slice() != shape.as_slice() {
            self.errors.push(TorchError::ShapeDiffers {
                path,
                checkpoint: data.shape().to_vec(),
                module: shape,
            });
            return param;
        }
        param.map(|old| {
            let dtype = old.dtype();
            let new = Tensor::<D>::from_data(data.convert_dtype(dtype), (&old.device(), dtype));
            Parameter::set_require_grad(new, old.is_require_grad())
        })
    }
}

/// Loads a PyTorch state dict into `module`, which must already have weight norm (through
/// [`apply_weight_norm`](crate::apply_weight_norm)) exactly where the checkpoint has pairs it
/// should keep as pairs. Linear weights are transposed; each pair's `g` is checked to
/// normalize the axis the module's weight norm uses.
///
/// # Errors
///
/// A module parameter the checkpoint lacks, a checkpoint tensor the module has no place for
/// (as PyTorch's strict loading), shapes that disagree, a weight-norm parameter whose pair is
/// missing or normalizes another axis, and the errors of fusing pairs.
pub fn load_into_module<M: Module>(module: M, tensors: &[TensorEntry]) -> Result<M> {
    let by_name: BTreeMap<&str, &TensorEntry> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let shapes: Vec<_> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let pairs: BTreeMap<String, _> = detect_pairs(&shapes, None)?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let axes = collect_axes(&module);
    let mut used = std::collections::BTreeSet::new();
    let mut values = BTreeMap::new();
    for info in survey(&module) {
        let transpose = transposed(&info);
        let wn = info.reparameterization.as_deref() == Some(WeightNorm::NAME);
        if let Some(counter) = batch_counter(&info) {
            used.insert(counter);
        }
        if let Some(pair) = pairs.get(&info.path) {
            let (g, v) = (by_name[pair.g_key.as_str()], by_name[pair.v_key.as_str()]);
            used.insert(pair.g_key.clone());
            used.insert(pair.v_key.clone());
            if wn {
                let axis = torch_axis(&info, pair.axis);
                let g_len = info
                    .reparameterization_params
                    .iter()
                    .find(|(n, _)| n == "g")
                    .map(|(_, s)| s.iter().product::<usize>())
                    .unwrap_or(0);
                let expected = match axis {
                    NormAxis::Keep(k) => info.shape.get(k).copied().unwrap_or(0),
                    NormAxis::Whole => 1,
                };
                // Equal lengths are not enough: a square weight has two axes of one size.
                let same_slices = axes
                    .get(&info.path)
                    .is_none_or(|k| k.g_shape(&info.shape) == axis.g_shape(&info.shape));
                if g_len != expected || !same_slices {
                    return Err(TorchError::AxisDiffers {
                        path: info.path.clone(),
                        dim: pair.axis.to_torch(),
                        norms: expected,
                        kept: g_len,
                    });
                }
                values.insert(info.path.clone(), data_of(v, transpose)?);
                let g_data = data_of(g, false)?;
                let n = g_data.num_elements();
                values.insert(
                    format!("{}.{}.g", info.path, WeightNorm::NAME),
                    TensorData::from_bytes_vec(
                        g_data.into_bytes().to_vec(),
                        vec![n],
                        burn_dtype(g.dtype, &g.name)?,
                    ),
                );
            } else {
                let w = fuse_tensor(&info.path, v, g, pair.axis)?;
                values.insert(info.path.clone(), data_of(&w, transpose)?);
            }
            continue;
        }
        if wn {
            let (g_key, v_key) = pair_keys(&info.path, Scheme::Legacy);
            return Err(TorchError::MissingPair {
                path: info.path.clone(),
                g_key,
                v_key,
            });
        }
        let name = torch_name(&info);
        let Some(t) = by_name.get(name.as_str()) else {
            return Err(TorchError::MissingTensor { name });
        };
        used.insert(name);
        values.insert(info.path.clone(), data_of(t, transpose)?);
    }
    let unused: Vec<&str> = tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !used.contains(*n))
        .collect();
    if !unused.is_empty() {
        return Err(TorchError::UnusedTensors {
            names: unused.into_iter().map(String::from).collect(),
        });
    }
    let mut assign = Assign {
        values,
        stack: Vec::new(),
        errors: Vec::new(),
    };
    let module = module.map(&mut assign);
    match assign.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// The norm axis of every weight-normalized parameter, by path (in Burn's layout).
///
/// Burn's visitors hand a parameter over without its reparameterization, so
/// [`WeightNorm::kept_axis`] cannot be read directly; it is read from what the
/// reparameterization computes instead. The candidates are the axes of `v` as long as `g`
/// (and the whole tensor for one `g`); where there are several (a square weight), the one whose
/// `g * v / ||v||` is the weight the module computes ([`Module::materialize`]) is taken. Axes
/// that give the same weight are equivalent; the output axis is preferred among them.
fn collect_axes<M: Module>(module: &M) -> BTreeMap<String, NormAxis> {
    let mut base = Collect::default();
    module.visit(&mut base);
    let mut effective: Option<Collect> = None;
    let mut axes = BTreeMap::new();
    for info in survey(module) {
        if info.reparameterization.as_deref() != Some(WeightNorm::NAME) {
            continue;
        }
        let Some(g) = base
            .values
            .get(&format!("{}.{}.g", info.path, WeightNorm::NAME))
        else {
            continue;
        };
        let n = g.num_elements();
        let output = info.layer_kind().map(|k| k.unit_axes().output);
        let mut candidates: Vec<NormAxis> = output
            .filter(|&k| info.shape.get(k) == Some(&n))
            .map(NormAxis::Keep)
            .into_iter()
            .chain(
                (0..info.shape.len())
                    .filter(|&k| info.shape[k] == n && Some(k) != output)
                    .map(NormAxis::Keep),
            )
            .collect();
        if n == 1 {
            candidates.push(NormAxis::Whole);
        }
        let axis = if candidates.len() <= 1 {
            candidates.first().copied()
        } else {
            let w = effective.get_or_insert_with(|| {
                let mut c = Collect::default();
                module.clone().materialize().visit(&mut c);
                c
            });
            let vals = |d: &TensorData| -> Vec<f64> {
                d.clone()
                    .convert::<f64>()
                    .try_to_vec::<f64>()
                    .unwrap_or_default()
            };
            let (v, g, w) = (
                vals(&base.values[&info.path]),
                vals(g),
                w.values.get(&info.path).map(vals).unwrap_or_default(),
            );
            let scale = w.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
            let mut best: Option<(f64, NormAxis)> = None;
            for &axis in &candidates {
                let err = fused_error(&v, &g, &w, &info.shape, axis) / scale;
                // Within rounding of the best so far: equivalent, keep the preferred one.
                if best.is_none_or(|(e, _)| err < e - 1e-6) {
                    best = Some((err, axis));
                }
            }
            best.map(|(_, a)| a)
        };
        if let Some(axis) = axis {
            axes.insert(info.path, axis);
        }
    }
    axes
}

/// The largest difference between `g * v / ||v||` along `axis` and `w` (row-major values).
fn fused_error(v: &[f64], g: &[f64], w: &[f64], shape: &[usize], axis: NormAxis) -> f64 {
    if v.len() != w.len() {
        return f64::INFINITY;
    }
    let [_, kept, inner] = axis.split_shape(shape);
    let slice = |i: usize| match axis {
        NormAxis::Whole => 0,
        NormAxis::Keep(_) => (i / inner) % kept,
    };
    let mut norms = vec![0.0f64; g.len()];
    for (i, x) in v.iter().enumerate() {
        norms[slice(i)] += x * x;
    }
    v.iter()
        .zip(w)
        .enumerate()
        .map(|(i, (x, y))| {
            let j = slice(i);
            let pred = if norms[j] > 0.0 {
                g[j] * x / norms[j].sqrt()
            } else {
                0.0
            };
            (pred - y).abs()
        })
        .fold(0.0, f64::max)
}

/// Collects every float parameter's value by path (reparameterization parameters too).
#[derive(Default)]
struct Collect {
    stack: Vec<String>,
    values: BTreeMap<String, TensorData>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.values
            .insert(self.stack.join("."), param.val().to_data());
    }
}

fn entry(name: String, data: TensorData, shape: Vec<usize>) -> Result<TensorEntry> {
    let data = match data.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => data,
        _ => data.convert::<f32>(),
    };
    let dtype = st_dtype(data.dtype());
    TensorEntry::from_bytes(name, dtype, shape, data.into_bytes().to_vec())
}

/// The module's parameters as a PyTorch state dict: PyTorch's names and layouts (Linear weights
/// transposed, batch norms' `gamma`/`beta` as `weight`/`bias` with a `num_batches_tracked`),
/// each weight-normalized parameter as a pair in `scheme` with `g` shaped as PyTorch shapes it
/// (0-dim for the whole tensor).
///
/// The kept axis of each pair is the one its [`WeightNorm`] keeps (translated to PyTorch's
/// layout), so a square weight normalized along its input axis is saved as such.
///
/// # Errors
///
/// The errors of building the tensors (none for a module's own float parameters).
pub fn save_module<M: Module>(module: &M, scheme: Scheme) -> Result<Vec<TensorEntry>> {
    let mut collect = Collect::default();
    module.visit(&mut collect);
    let axes = collect_axes(module);
    let mut out = Vec::new();
    for info in survey(module) {
        let transpose = transposed(&info);
        let data = collect.values.remove(&info.path).expect("visited");
        let v = if transpose { transpose_2d(data) } else { data };
        let v_shape = v.shape().to_vec();
        if info.reparameterization.as_deref() != Some(WeightNorm::NAME) {
            if let Some(counter) = batch_counter(&info) {
                out.push(TensorEntry::from_bytes(
                    counter,
                    Dtype::I64,
                    vec![],
                    0i64.to_le_bytes().to_vec(),
                )?);
            }
            out.push(entry(torch_name(&info), v, v_shape)?);
            continue;
        }
        let g = collect
            .values
            .remove(&format!("{}.{}.g", info.path, WeightNorm::NAME))
            .expect("weight norm has g");
        let burn_axis = axes[&info.path];
        let axis = torch_axis(&info, burn_axis);
        let g_shape = match axis {
            NormAxis::Whole => Vec::new(),
            k => k.g_shape(&v_shape),
        };
        let (g_key, v_key) = pair_keys(&info.path, scheme);
        out.push(entry(g_key, g, g_shape)?);
        out.push(entry(v_key, v, v_shape)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
