//! PyTorch's shape table (recorded from `torch.nn.utils.weight_norm` by the fixture script) and
//! every kind of bad input, with the messages users see.

mod common;

use burn::tensor::{DType, Tensor};
use common::*;
use weightnorm::ops::{
    check_norms, norm_except_dim, weight_norm, weight_norm_checked, weight_norm_composed,
    weight_norm_eps,
};
use weightnorm::{Error, NormAxis};

fn table() -> serde_json::Value {
    let path = fixtures_dir("").join("g_shapes.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn g_shape_of<const D: usize>(weight: &[usize], axis: NormAxis) -> Vec<usize> {
    let device = device();
    let dims: [usize; D] = weight.try_into().unwrap();
    let v = Tensor::<D>::ones(dims, &device);
    norm_except_dim(v, 2.0, axis).unwrap().dims().to_vec()
}

#[test]
fn g_shapes_match_pytorch_for_every_layer_and_dim() {
    let table = table();
    let rows = table["rows"].as_array().unwrap();
    assert!(rows.len() >= 30);
    for row in rows {
        let weight: Vec<usize> = row["weight_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let dim = row["dim"].as_i64();
        let rank = weight.len();
        let ours = NormAxis::from_torch(dim, rank);
        let label = format!("{} dim={:?}", row["layer"], dim);
        if row.get("error").is_some() {
            let err = ours.expect_err(&label);
            assert!(matches!(err, Error::DimOutOfRange { .. }), "{label}: {err}");
            assert!(err.to_string().contains("out of range"), "{label}: {err}");
            continue;
        }
        let axis = ours.unwrap_or_else(|e| panic!("{label}: {e}"));
        let torch: Vec<usize> = row["g_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        // PyTorch's whole-tensor g is 0-dim; ours keeps the rank with size 1 everywhere.
        let expected = if torch.is_empty() {
            vec![1; rank]
        } else {
            torch
        };
        assert_eq!(axis.g_shape(&weight), expected, "{label}");
        let computed = match rank {
            2 => g_shape_of::<2>(&weight, axis),
            3 => g_shape_of::<3>(&weight, axis),
            4 => g_shape_of::<4>(&weight, axis),
            r => panic!("rank {r}"),
        };
        assert_eq!(computed, expected, "{label}: norm_except_dim's shape");
    }
}

#[test]
fn minus_one_is_the_whole_tensor() {
    assert_eq!(NormAxis::from_torch(Some(-1), 4), Ok(NormAxis::Whole));
    assert_eq!(NormAxis::from_torch(None, 4), Ok(NormAxis::Whole));
}

#[test]
fn norm_except_dim_orders() {
    let device = device();
    // The overview's example: a 5x5x5 tensor of ones, dim 0: p = 2 gives 5, p = 3 gives 25^(1/3).
    let ones = Tensor::<3>::ones([5, 5, 5], &device);
    let n2 = values(&norm_except_dim(ones.clone(), 2.0, NormAxis::Keep(0)).unwrap());
    assert!(n2.iter().all(|x| (x - 5.0).abs() < 1e-6));
    let n3 = norm_except_dim(ones.clone(), 3.0, NormAxis::Keep(0)).unwrap();
    assert_eq!(n3.dims(), [5, 1, 1]);
    assert!(
        values(&n3)
            .iter()
            .all(|x| (x - 25f64.powf(1.0 / 3.0)).abs() < 1e-5)
    );
    let n_last = norm_except_dim(ones.clone(), 2.0, NormAxis::Keep(2)).unwrap();
    assert_eq!(n_last.dims(), [1, 1, 5]);
    let whole = norm_except_dim(ones, 2.0, NormAxis::Whole).unwrap();
    assert_eq!(whole.dims(), [1, 1, 1]);
    assert!((values(&whole)[0] - 125f64.sqrt()).abs() < 1e-5);
    // Max norm and L1 on signed values.
    let v = Tensor::<2>::from_data([[-3.0, 1.0], [2.0, -0.5]], &device);
    let inf = values(&norm_except_dim(v.clone(), f64::INFINITY, NormAxis::Keep(1)).unwrap());
    assert_eq!(inf, vec![3.0, 1.0]);
    let l1 = values(&norm_except_dim(v, 1.0, NormAxis::Keep(0)).unwrap());
    assert_eq!(l1, vec![4.0, 2.5]);
}

#[test]
fn half_norms_accumulate_in_f32() {
    let device = device();
    // 4096 values of 1.0 in f16: a running f16 sum stalls at 2048, so the norm would be wrong.
    let v = from_f64::<1>(vec![1.0; 4096], [4096], DType::F16, &device);
    let n = norm_except_dim(v, 2.0, NormAxis::Whole).unwrap();
    assert_eq!(n.dtype(), DType::F16);
    assert_eq!(values(&n), vec![64.0]);
}

#[test]
fn a_wrong_g_shape_is_an_error_that_names_both_shapes() {
    let device = device();
    let v = Tensor::<2>::ones([5, 4], &device);
    let g = Tensor::<2>::ones([4, 1], &device);
    let err = weight_norm(v.clone(), g.clone(), NormAxis::Keep(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "g has shape [4, 1], but v of shape [5, 4] normalized per slice of axis 0 needs g of \
         shape [5, 1] (the kept axis's size there, 1 elsewhere)"
    );
    assert!(weight_norm_composed(v.clone(), g, NormAxis::Keep(0), 0.0).is_err());
    let g_whole = Tensor::<2>::ones([5, 1], &device);
    let err = weight_norm(v, g_whole, NormAxis::Whole).unwrap_err();
    assert!(err.to_string().contains("over the whole tensor"), "{err}");
}

#[test]
fn a_zero_norm_slice_is_refused_by_the_checked_entry_point() {
    let device = device();
    let v = Tensor::<2>::from_data([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]], &device);
    let g = Tensor::<2>::ones([3, 1], &device);
    let err = weight_norm_checked(v.clone(), g.clone(), NormAxis::Keep(0), 0.0).unwrap_err();
    assert_eq!(
        err,
        Error::ZeroNorm {
            kept: Some(0),
            index: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "v has a zero-norm slice (index 1 of axis 0): its direction is undefined, so \
         w = g * v / ||v|| would be NaN; give that slice a non-zero value or opt into an epsilon"
    );
    // The unchecked path gives NaN there, as PyTorch does.
    let w = values(&weight_norm(v.clone(), g.clone(), NormAxis::Keep(0)).unwrap());
    assert!(w[2].is_nan() && w[3].is_nan());
    assert!(w[0].is_finite() && w[5].is_finite());
    // With an epsilon the zero slice is accepted and stays zero.
    let w = values(&weight_norm_checked(v, g, NormAxis::Keep(0), 1e-8).unwrap());
    assert_eq!(&w[2..4], &[0.0, 0.0]);
}

#[test]
fn non_finite_norms_are_refused() {
    let device = device();
    let v = Tensor::<1>::from_data([1.0, f32::NAN], &device);
    let err = check_norms(&v, NormAxis::Whole, 0.0).unwrap_err();
    assert_eq!(
        err,
        Error::NonFiniteNorm {
            kept: None,
            index: 0
        }
    );
}

#[test]
fn rank_six_is_refused() {
    let device = device();
    let v = Tensor::<6>::ones([2, 1, 1, 1, 1, 2], &device);
    let g = Tensor::<6>::ones([2, 1, 1, 1, 1, 1], &device);
    let err = weight_norm(v.clone(), g, NormAxis::Keep(0)).unwrap_err();
    assert_eq!(err, Error::UnsupportedRank { rank: 6 });
    assert_eq!(
        err.to_string(),
        "rank 6 is not supported: weight normalization works on tensors of rank 1 to 5"
    );
    assert!(norm_except_dim(v, 2.0, NormAxis::Whole).is_err());
}

#[test]
fn bad_axis_order_epsilon_and_dtype_are_refused() {
    let device = device();
    let v = Tensor::<2>::ones([3, 2], &device);
    let g = Tensor::<2>::ones([3, 1], &device);
    let err = weight_norm(v.clone(), g.clone(), NormAxis::Keep(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "axis 2 is out of range for a rank-2 tensor: valid axes are 0..2"
    );
    let err = norm_except_dim(v.clone(), 0.5, NormAxis::Keep(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p = 0.5 is not a norm order: p must be at least 1 (infinity for the max norm)"
    );
    let err = weight_norm_eps(v.clone(), g.clone(), NormAxis::Keep(0), -1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "epsilon must be finite and at least 0, got -1"
    );
    let g64 = g.cast(DType::F64);
    let err = weight_norm(v, g64, NormAxis::Keep(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "v and g must be float tensors of one dtype, got v: f32 and g: f64"
    );
}

#[test]
fn empty_tensors_do_not_crash() {
    for device in [device(), ad_device()] {
        for (shape, axis) in [
            ([0usize, 4], NormAxis::Keep(0)),
            ([5, 0], NormAxis::Keep(0)),
            ([0, 4], NormAxis::Keep(1)),
            ([0, 0], NormAxis::Whole),
            ([3, 0], NormAxis::Keep(1)),
        ] {
            let (mut v, mut g) = (
                Tensor::<2>::zeros(shape, &device),
                Tensor::<2>::ones(axis.g_shape(&shape), &device),
            );
            if device.is_autodiff() {
                (v, g) = (v.require_grad(), g.require_grad());
            }
            let w = weight_norm(v.clone(), g.clone(), axis).unwrap();
            assert_eq!(w.dims(), shape);
            let wc = weight_norm_composed(v.clone(), g.clone(), axis, 0.0).unwrap();
            assert_eq!(wc.dims(), shape);
            check_norms(&v, axis, 0.0).unwrap();
            let n = norm_except_dim(v.clone(), f64::INFINITY, axis).unwrap();
            assert_eq!(n.dims().to_vec(), axis.g_shape(&shape));
            if device.is_autodiff() {
                let grads = w.sum().backward();
                if let Some(dg) = g.grad(&grads) {
                    // No element depends on g: its gradient is zero, not NaN.
                    assert!(values(&dg).iter().all(|x| *x == 0.0), "{shape:?} {axis}");
                }
            }
        }
    }
}
