//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod models;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// The CPU (Flex) device, named rather than `Device::default()`, which picks a GPU when the
/// `wgpu` or `cuda` feature is compiled in: the tests run on the CPU either way.
pub fn device() -> Device {
    Device::flex()
}

pub fn ad_device() -> Device {
    Device::flex().autodiff()
}

pub fn fixtures_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(sub)
}

/// One fixture file: its tensors (dtype kept) and metadata.
pub struct Fixture {
    pub name: String,
    pub tensors: BTreeMap<String, TensorData>,
    pub meta: BTreeMap<String, String>,
}

impl Fixture {
    pub fn get(&self, key: &str) -> &TensorData {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
    }
    pub fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata {key}", self.name))
    }

    /// The weight's shape (metadata `shape`, as Python prints a list or tuple).
    #[allow(dead_code)]
    pub fn shape(&self) -> Vec<usize> {
        self.meta("shape")
            .trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')')
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| x.trim().parse().unwrap())
            .collect()
    }

    /// PyTorch's `dim` (metadata `dim`; `None` for the whole tensor).
    #[allow(dead_code)]
    pub fn torch_dim(&self) -> Option<i64> {
        match self.meta("dim") {
            "None" => None,
            d => Some(d.parse().unwrap()),
        }
    }

    /// The inputs `(v, dw)`: stored, or made by the formula `scripts/gen_fixtures.py`
    /// documents (f32).
    #[allow(dead_code)]
    pub fn inputs(&self) -> (TensorData, TensorData) {
        if self.meta("inputs") == "stored" {
            return (self.get("v").clone(), self.get("dw").clone());
        }
        let shape = self.shape();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n as i64)
            .map(|i| (((i * 7919) % 1001) - 500) as f32 / 256.0)
            .collect();
        let dw: Vec<f32> = (0..n as i64)
            .map(|i| (((i * 104729) % 997) - 498) as f32 / 128.0)
            .collect();
        (
            TensorData::new(v, shape.clone()),
            TensorData::new(dw, shape),
        )
    }
}

fn dtype_of(d: Dtype) -> DType {
    match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => panic!("unexpected dtype {other:?} in a fixture"),
    }
}

pub fn load_fixtures(sub: &str) -> Vec<Fixture> {
    let dir = fixtures_dir(sub);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
            let meta = header
                .metadata()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let tensors = st
                .tensors()
                .into_iter()
                .map(|(name, view)| {
                    let data = TensorData::from_bytes_vec(
                        view.data().to_vec(),
                        view.shape().to_vec(),
                        dtype_of(view.dtype()),
                    );
                    (name, data)
                })
                .collect();
            Fixture {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                tensors,
                meta,
            }
        })
        .collect()
}

/// A tensor of rank D with the data's own dtype, reshaped to `shape` (for PyTorch's 0-dim g).
pub fn tensor<const D: usize>(data: &TensorData, shape: &[usize], device: &Device) -> Tensor<D> {
    let dims: [usize; D] = shape.try_into().expect("rank");
    let data = TensorData::from_bytes_vec(data.as_bytes().to_vec(), dims.to_vec(), data.dtype());
    Tensor::from_data(data.clone(), (device, data.dtype()))
}

pub fn f64s(data: &TensorData) -> Vec<f64> {
    data.clone().convert::<f64>().try_to_vec::<f64>().unwrap()
}

pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    f64s(&t.to_data())
}

/// The norm-wise relative error `max_i |actual_i - expected_i| / max_i |expected_i|`.
///
/// Gradients such as `dv = (g/n) dw - (g s/n^3) v` cancel in some elements, where any two
/// correctly rounded implementations (PyTorch's included) differ by far more than 1e-6 of the
/// element itself; measured against the tensor's magnitude they agree to a few ulps.
pub fn rel_error(actual: &[f64], expected: &[f64]) -> f64 {
    error_at_scale(actual, expected, max_abs(expected))
}

/// The error of `actual` against `expected` relative to `scale`: `max_i |a_i - e_i| / scale`.
pub fn error_at_scale(actual: &[f64], expected: &[f64], scale: f64) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| if a == e { 0.0 } else { (a - e).abs() })
        .fold(0.0, f64::max);
    if worst == 0.0 { 0.0 } else { worst / scale }
}

/// The magnitude of the terms of `dv = (g/n) dw - (g s/n^3) v`: `max_i |g/n| |dw_i|`, with
/// `g/n` recovered as `w_i / v_i`. When the two terms cancel (a rank-1 weight, where every slice
/// is one element, has `dv = 0` exactly), errors are measured against this, not against `|dv|`.
pub fn dv_term_scale(v: &[f64], w: &[f64], dw: &[f64]) -> f64 {
    v.iter()
        .zip(w)
        .zip(dw)
        .filter(|((v, _), _)| **v != 0.0)
        .map(|((v, w), d)| (w / v * d).abs())
        .fold(0.0, f64::max)
}

/// The elementwise relative error `max_i |actual_i - expected_i| / |expected_i|`, for results
/// without cancellation (the forward `w = v * (g / n)`).
pub fn elementwise_rel_error(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| if a == e { 0.0 } else { (a - e).abs() / e.abs() })
        .fold(0.0, f64::max)
}

pub fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    let err = rel_error(actual, expected);
    assert!(err <= tol, "{what}: relative error {err:e} exceeds {tol:e}");
}

/// One unit in the last place of `x` in a format with `mantissa` stored bits and the given
/// smallest subnormal exponent.
pub fn ulp(x: f64, mantissa: i32, min_exp: i32) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 2f64.powi(min_exp);
    }
    let e = x.log2().floor() as i32;
    2f64.powi((e - mantissa).max(min_exp))
}

/// How many units in the last place of the exact value `exact` the value `actual` is off, in the
/// half format `dtype`.
pub fn ulps_off(actual: &[f64], exact: &[f64], dtype: DType) -> f64 {
    let (mantissa, min_exp) = match dtype {
        DType::F16 => (10, -24),
        DType::BF16 => (7, -133),
        other => panic!("not a half type: {other:?}"),
    };
    actual
        .iter()
        .zip(exact)
        .map(|(a, e)| (a - e).abs() / ulp(*e, mantissa, min_exp))
        .fold(0.0, f64::max)
}

/// The deterministic generator of test data (the core's SplitMix64), so tests need no RNG
/// crate.
#[allow(unused_imports)]
pub use weightnorm::weightnorm_core::rng::SplitMix64 as Rng;

/// A tensor of `shape` from f64 values, stored as `dtype`.
pub fn from_f64<const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    dtype: DType,
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(values, shape).convert_dtype(dtype),
        (device, dtype),
    )
}
