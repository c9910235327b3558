//! The paper-form linear layer `y = (x v) * (g / ||v||) + b` ([`weight_norm_linear`],
//! [`WnLinear`]): its outputs and gradients against the reparameterized path
//! `linear(x, weight_norm(v, g), b)` (itself checked against PyTorch's fixtures) and against
//! central finite differences in f64; the epsilon's clamp; the fused CPU kernels on sizes that
//! take the threaded schedules; the errors; and the module's conversions.

mod common;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, Tensor};
use common::*;
use weightnorm::nn::{WnLinear, WnLinearConfig};
use weightnorm::ops::{weight_norm_eps, weight_norm_linear};
use weightnorm::{Error, NormAxis};

/// The operands of one case, as f64 host values.
struct Case<const D: usize> {
    x_shape: [usize; D],
    d_out: usize,
    x: Vec<f64>,
    v: Vec<f64>,
    g: Vec<f64>,
    b: Vec<f64>,
    /// The weights of the loss `sum(y * r)`.
    r: Vec<f64>,
}

impl<const D: usize> Case<D> {
    fn new(rng: &mut Rng, x_shape: [usize; D], d_out: usize) -> Self {
        let d_in = x_shape[D - 1];
        let rows: usize = x_shape[..D - 1].iter().product();
        Self {
            x_shape,
            d_out,
            x: rng.vec(rows * d_in),
            v: rng.vec(d_in * d_out),
            g: rng.vec(d_out).iter().map(|g| 0.5 + g.abs()).collect(),
            b: rng.vec(d_out),
            r: rng.vec(rows * d_out),
        }
    }

    fn d_in(&self) -> usize {
        self.x_shape[D - 1]
    }

    fn y_shape(&self) -> [usize; D] {
        let mut s = self.x_shape;
        s[D - 1] = self.d_out;
        s
    }
}

/// Which computation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// `weight_norm_linear`, the paper's form.
    Paper,
    /// `x w + b` with `w = weight_norm(v, g)`, the reparameterization's form.
    Reparam,
}

/// `(y, dx, dv, dg, db)` of the loss `sum(y * r)`, on the autodiff device in `dtype`.
#[allow(clippy::type_complexity)]
fn run<const D: usize>(
    case: &Case<D>,
    path: Path,
    eps: f64,
    dtype: DType,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let ad = ad_device();
    let (d_in, d_out) = (case.d_in(), case.d_out);
    let x = from_f64(case.x.clone(), case.x_shape, dtype, &ad).require_grad();
    let v = from_f64(case.v.clone(), [d_in, d_out], dtype, &ad).require_grad();
    let g = from_f64(case.g.clone(), [d_out], dtype, &ad).require_grad();
    let b = from_f64(case.b.clone(), [d_out], dtype, &ad).require_grad();
    let y = forward(path, x.clone(), v.clone(), g.clone(), b.clone(), eps);
    let r = from_f64(case.r.clone(), case.y_shape(), dtype, &ad);
    let grads = (y.clone() * r).sum().backward();
    (
        values(&y),
        values(&x.grad(&grads).unwrap()),
        values(&v.grad(&grads).unwrap()),
        values(&g.grad(&grads).unwrap()),
        values(&b.grad(&grads).unwrap()),
    )
}

fn forward<const D: usize>(
    path: Path,
    x: Tensor<D>,
    v: Tensor<2>,
    g: Tensor<1>,
    b: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    match path {
        Path::Paper => weight_norm_linear(x, v, g, Some(b), eps).unwrap(),
        Path::Reparam => {
            let [_, d_out] = v.dims();
            let w = weight_norm_eps(v, g.reshape([1, d_out]), NormAxis::Keep(1), eps).unwrap();
            burn::tensor::module::linear(x, w, Some(b))
        }
    }
}

/// The loss `sum(y * r)` of the paper's form without autodiff, in f64.
fn loss<const D: usize>(case: &Case<D>, eps: f64, device: &Device) -> f64 {
    let (d_in, d_out) = (case.d_in(), case.d_out);
    let t = |v: &Vec<f64>, shape: [usize; 2]| from_f64(v.clone(), shape, DType::F64, device);
    let x = from_f64(case.x.clone(), case.x_shape, DType::F64, device);
    let g = from_f64(case.g.clone(), [d_out], DType::F64, device);
    let b = from_f64(case.b.clone(), [d_out], DType::F64, device);
    let y = weight_norm_linear(x, t(&case.v, [d_in, d_out]), g, Some(b), eps).unwrap();
    values(&y).iter().zip(&case.r).map(|(y, r)| y * r).sum()
}

#[test]
fn equals_the_reparameterized_linear_in_f64() {
    let mut rng = Rng(11);
    let two = Case::new(&mut rng, [5, 7], 4);
    let three = Case::new(&mut rng, [2, 3, 6], 9);
    let one = Case::new(&mut rng, [8], 3);
    for (name, paper, reparam) in [
        (
            "x [5, 7]",
            run(&two, Path::Paper, 0.0, DType::F64),
            run(&two, Path::Reparam, 0.0, DType::F64),
        ),
        (
            "x [2, 3, 6]",
            run(&three, Path::Paper, 0.0, DType::F64),
            run(&three, Path::Reparam, 0.0, DType::F64),
        ),
        (
            "x [8]",
            run(&one, Path::Paper, 0.0, DType::F64),
            run(&one, Path::Reparam, 0.0, DType::F64),
        ),
    ] {
        assert_close(&format!("{name}: y"), &paper.0, &reparam.0, 1e-13);
        assert_close(&format!("{name}: dx"), &paper.1, &reparam.1, 1e-13);
        assert_close(&format!("{name}: dv"), &paper.2, &reparam.2, 1e-13);
        assert_close(&format!("{name}: dg"), &paper.3, &reparam.3, 1e-13);
        assert_close(&format!("{name}: db"), &paper.4, &reparam.4, 1e-13);
    }
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    let mut rng = Rng(5);
    let device = device();
    for eps in [0.0, 0.3] {
        let mut case = Case::new(&mut rng, [4, 5], 3);
        // Column 1 small enough to be clamped by eps = 0.3.
        for i in 0..5 {
            case.v[i * 3 + 1] *= 0.05;
        }
        let (_, dx, dv, dg, db) = run(&case, Path::Paper, eps, DType::F64);
        let h = 1e-6;
        let mut check = |what: &str, get: fn(&mut Case<2>) -> &mut Vec<f64>, analytic: &[f64]| {
            let mut fd = Vec::new();
            for i in 0..analytic.len() {
                let x0 = get(&mut case)[i];
                get(&mut case)[i] = x0 + h;
                let up = loss(&case, eps, &device);
                get(&mut case)[i] = x0 - h;
                let down = loss(&case, eps, &device);
                get(&mut case)[i] = x0;
                fd.push((up - down) / (2.0 * h));
            }
            assert_close(&format!("eps {eps}: {what}"), analytic, &fd, 1e-7);
        };
        check("dx", |c| &mut c.x, &dx);
        check("dv", |c| &mut c.v, &dv);
        check("dg", |c| &mut c.g, &dg);
        check("db", |c| &mut c.b, &db);
    }
}

#[test]
fn a_clamped_column_passes_the_plain_product_gradient() {
    // With ||v_j|| < eps the scale g_j / eps does not depend on v: dv_j = (g_j / eps) x^T dy_j.
    let mut rng = Rng(3);
    let mut case = Case::new(&mut rng, [6, 4], 2);
    for i in 0..4 {
        case.v[i * 2] *= 1e-3;
    }
    let eps = 0.5;
    let (_, _, dv, _, _) = run(&case, Path::Paper, eps, DType::F64);
    for i in 0..4 {
        let expected: f64 = (0..6)
            .map(|b| case.x[b * 4 + i] * case.r[b * 2] * case.g[0] / eps)
            .sum();
        let got = dv[i * 2];
        assert!(
            (got - expected).abs() <= 1e-14 * expected.abs().max(1.0),
            "dv[{i}, 0] = {got}, expected {expected}"
        );
    }
    let reparam = run(&case, Path::Reparam, eps, DType::F64);
    assert_close("dv against the reparameterization", &dv, &reparam.2, 1e-13);
}

#[test]
fn the_fused_cpu_kernels_on_threaded_sizes_agree_with_f64() {
    // v of 300 x 701 (210k values) takes the threaded schedules of the norms and of dv.
    let mut rng = Rng(17);
    let case = Case::new(&mut rng, [33, 300], 701);
    let exact = run(&case, Path::Reparam, 0.0, DType::F64);
    let f32s = run(&case, Path::Paper, 0.0, DType::F32);
    assert_close("f32 y", &f32s.0, &exact.0, 2e-6);
    assert_close("f32 dx", &f32s.1, &exact.1, 2e-6);
    assert_close("f32 dv", &f32s.2, &exact.2, 2e-6);
    assert_close("f32 dg", &f32s.3, &exact.3, 2e-6);
    let f64s = run(&case, Path::Paper, 0.0, DType::F64);
    assert_close("f64 dv", &f64s.2, &exact.2, 1e-13);
    assert_close("f64 dg", &f64s.3, &exact.3, 1e-13);
}

#[test]
fn without_autodiff_the_composed_body_gives_the_same_output() {
    let mut rng = Rng(23);
    let case = Case::new(&mut rng, [7, 9], 5);
    let device = device();
    let x = from_f64(case.x.clone(), case.x_shape, DType::F64, &device);
    let v = from_f64(case.v.clone(), [9, 5], DType::F64, &device);
    let g = from_f64(case.g.clone(), [5], DType::F64, &device);
    let b = from_f64(case.b.clone(), [5], DType::F64, &device);
    let plain = values(&weight_norm_linear(x, v, g, Some(b), 0.0).unwrap());
    let (tracked, ..) = run(&case, Path::Paper, 0.0, DType::F64);
    assert_eq!(plain, tracked, "the same operations in the same order");
}

#[test]
fn bad_operands_are_refused_with_what_is_wrong() {
    let device = device();
    let x = Tensor::<2>::zeros([2, 3], &device);
    let v = Tensor::<2>::ones([3, 4], &device);
    let g = Tensor::<1>::ones([4], &device);
    let err = |r: weightnorm::Result<Tensor<2>>| r.unwrap_err();
    let e = err(weight_norm_linear(
        Tensor::<2>::zeros([2, 5], &device),
        v.clone(),
        g.clone(),
        None,
        0.0,
    ));
    assert!(matches!(e, Error::LinearShapeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("last axis is not v's d_in"), "{e}");
    let e = err(weight_norm_linear(
        x.clone(),
        v.clone(),
        Tensor::<1>::ones([3], &device),
        None,
        0.0,
    ));
    assert!(e.to_string().contains("g does not hold one value"), "{e}");
    let e = err(weight_norm_linear(
        x.clone(),
        v.clone(),
        g.clone(),
        Some(Tensor::<1>::ones([2], &device)),
        0.0,
    ));
    assert!(e.to_string().contains("the bias does not hold"), "{e}");
    let e = err(weight_norm_linear(
        x.clone(),
        v.clone(),
        g.clone(),
        None,
        -1.0,
    ));
    assert!(matches!(e, Error::InvalidEpsilon { .. }), "{e}");
    let e = err(weight_norm_linear(x.cast(DType::F64), v, g, None, 0.0));
    assert!(matches!(e, Error::DTypeMismatch { .. }), "{e}");
}

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).init(device)
}

#[test]
fn the_module_preserves_a_linear_and_folds_back() {
    let device = device();
    let mut rng = Rng(29);
    let plain = linear(6, 4, &device);
    let x = from_f64(rng.vec(3 * 6), [3, 6], DType::F32, &device);
    let expected = values(&plain.forward(x.clone()));
    let wn = WnLinear::from_linear(plain.clone(), 0.0).unwrap();
    assert_close(
        "from_linear",
        &values(&wn.forward(x.clone())),
        &expected,
        1e-6,
    );
    assert_close(
        "weight",
        &values(&wn.weight()),
        &values(&plain.weight.val()),
        1e-6,
    );
    let folded = wn.into_linear();
    assert_close("into_linear", &values(&folded.forward(x)), &expected, 1e-6);
    assert_eq!(folded.bias.is_some(), plain.bias.is_some());

    // The config's layer starts function-preserving: g is the norm of each column of v.
    let layer = WnLinearConfig::new(5, 3).with_bias(false).init(&device);
    assert!(layer.bias.is_none());
    let v = values(&layer.v.val());
    let g = values(&layer.g.val());
    for (j, g) in g.iter().enumerate() {
        let n = (0..5).map(|i| v[i * 3 + j].powi(2)).sum::<f64>().sqrt();
        assert!(
            (g - n).abs() <= 1e-6 * n,
            "g[{j}] = {g}, ||v[:, {j}]|| = {n}"
        );
    }
    assert_eq!(layer.num_params(), 5 * 3 + 3);
}

#[test]
fn a_zero_column_is_refused_without_an_epsilon() {
    let device = device();
    let mut plain = linear(3, 2, &device);
    plain.weight = burn::module::Param::from_tensor(Tensor::<2>::from_data(
        [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
        &device,
    ));
    let e = WnLinear::from_linear(plain.clone(), 0.0).unwrap_err();
    assert!(matches!(e, Error::ZeroNorm { .. }), "{e}");
    let wn = WnLinear::from_linear(plain, 1e-6).unwrap();
    let y = values(&wn.forward(Tensor::<2>::ones([1, 3], &device)));
    assert!(y.iter().all(|y| y.is_finite()), "{y:?}");
}

#[test]
fn the_module_trains_its_v_g_and_bias() {
    let ad = ad_device();
    let layer = WnLinearConfig::new(4, 3).init(&ad);
    let x = Tensor::<2>::ones([2, 4], &ad);
    let grads = layer.forward(x).sum().backward();
    let v = layer.v.val().grad(&grads).expect("a gradient for v");
    let g = layer.g.val().grad(&grads).expect("a gradient for g");
    let b = layer.bias.as_ref().unwrap().val().grad(&grads);
    assert_eq!(v.dims(), [4, 3]);
    assert_eq!(g.dims(), [3]);
    assert_eq!(b.expect("a gradient for the bias").dims(), [3]);
    assert!(values(&g).iter().any(|g| *g != 0.0));
}
