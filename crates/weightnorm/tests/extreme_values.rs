//! Every finite weight gives the finite exact result (issue: "silently wrong numbers"): a v whose
//! squared norm overflows f32 does not fuse to zeros, a tiny v is not a zero-norm slice.

use burn::tensor::{Device, Tensor};
use weightnorm::NormAxis;
use weightnorm::ops::{check_norms, norm_except_dim, weight_norm};

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn huge_and_tiny_weights_fuse_to_unit_rows_times_g() {
    let device = Device::flex();
    for scale in [1e20f32, 1e30, -1e25, 1e-25, 1e-30, 1e-40] {
        let v = Tensor::<2>::from_data([[3.0 * scale, 4.0 * scale], [0.0, scale]], &device);
        for axis in [NormAxis::Keep(0), NormAxis::Whole] {
            check_norms(&v, axis, 0.0).unwrap_or_else(|e| panic!("{scale:e}: {e}"));
            let n = values(norm_except_dim(v.clone(), 2.0, axis).unwrap());
            assert!(
                n.iter().all(|x| x.is_finite() && *x > 0.0),
                "{scale:e}: {n:?}"
            );
        }
        let g = Tensor::<2>::from_data([[2.0], [3.0]], &device);
        let w = values(weight_norm(v.clone(), g, NormAxis::Keep(0)).unwrap());
        let s = scale.signum();
        let expected = [1.2 * s, 1.6 * s, 0.0, 3.0 * s];
        for (a, b) in w.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{scale:e}: {w:?}");
        }
    }
}
