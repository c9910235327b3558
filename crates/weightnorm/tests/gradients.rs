//! The calculus: finite-difference checks in f64 of both paths on random shapes and every axis
//! (including the whole tensor), and the fused path against the composed one.

mod common;

use burn::tensor::{DType, Device, Tensor};
use burn_flex::Flex;
use common::*;
use weightnorm::NormAxis;
use weightnorm::ops::{
    composed_backward, composed_forward, norm_except_dim, weight_norm, weight_norm_composed,
};

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fused,
    Composed,
}

fn forward<const D: usize>(path: Path, v: Tensor<D>, g: Tensor<D>, axis: NormAxis) -> Tensor<D> {
    match path {
        Path::Fused => weight_norm(v, g, axis).unwrap(),
        Path::Composed => weight_norm_composed(v, g, axis, 0.0).unwrap(),
    }
}

/// Random shape of rank D with sizes 1..=5, and its g shape for `axis`.
fn random_shape<const D: usize>(rng: &mut Rng) -> [usize; D] {
    core::array::from_fn(|_| 1 + rng.below(5))
}

fn axes(rank: usize) -> Vec<NormAxis> {
    let mut a: Vec<_> = (0..rank).map(NormAxis::Keep).collect();
    a.push(NormAxis::Whole);
    a
}

/// L(v, g) = sum(w(v, g) * r), computed on the host in f64 from a plain forward.
fn loss<const D: usize>(
    path: Path,
    v: &[f64],
    g: &[f64],
    r: &[f64],
    shape: [usize; D],
    axis: NormAxis,
    device: &Device,
) -> f64 {
    let g_shape: [usize; D] = axis.g_shape(&shape).try_into().unwrap();
    let v = from_f64(v.to_vec(), shape, DType::F64, device);
    let g = from_f64(g.to_vec(), g_shape, DType::F64, device);
    let w = values(&forward(path, v, g, axis));
    w.iter().zip(r).map(|(a, b)| a * b).sum()
}

fn gradcheck<const D: usize>(rng: &mut Rng, path: Path) -> usize {
    let plain = device();
    let ad = ad_device();
    let shape = random_shape::<D>(rng);
    let mut checked = 0;
    for axis in axes(D) {
        let g_shape: [usize; D] = axis.g_shape(&shape).try_into().unwrap();
        let n: usize = shape.iter().product();
        let ng: usize = g_shape.iter().product();
        let v0 = rng.vec(n);
        let g0: Vec<f64> = rng.vec(ng).iter().map(|x| 0.5 + x.abs()).collect();
        let r = rng.vec(n);

        let v = from_f64(v0.clone(), shape, DType::F64, &ad).require_grad();
        let g = from_f64(g0.clone(), g_shape, DType::F64, &ad).require_grad();
        let rt = from_f64(r.clone(), shape, DType::F64, &ad);
        let grads = (forward(path, v.clone(), g.clone(), axis) * rt)
            .sum()
            .backward();
        let dv = values(&v.grad(&grads).unwrap());
        let dg = values(&g.grad(&grads).unwrap());

        let h = 1e-6;
        let mut fd_v = Vec::new();
        let mut an_v = Vec::new();
        for i in 0..n {
            let (mut up, mut down) = (v0.clone(), v0.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(path, &up, &g0, &r, shape, axis, &plain)
                - loss(path, &down, &g0, &r, shape, axis, &plain))
                / (2.0 * h);
            fd_v.push(fd);
            an_v.push(dv[i]);
        }
        let mut fd_g = Vec::new();
        for j in 0..ng {
            let (mut up, mut down) = (g0.clone(), g0.clone());
            up[j] += h;
            down[j] -= h;
            fd_g.push(
                (loss(path, &v0, &up, &r, shape, axis, &plain)
                    - loss(path, &v0, &down, &r, shape, axis, &plain))
                    / (2.0 * h),
            );
        }
        let label = format!("shape {shape:?} {axis}");
        let w = values(&forward(
            path,
            from_f64(v0.clone(), shape, DType::F64, &plain),
            from_f64(g0.clone(), g_shape, DType::F64, &plain),
            axis,
        ));
        let scale = dv_term_scale(&v0, &w, &r).max(max_abs(&fd_v));
        let err = error_at_scale(&an_v, &fd_v, scale);
        assert!(err <= 1e-6, "{label} dv: {err:e} from finite differences");
        assert_close(&format!("{label} dg"), &dg, &fd_g, 1e-6);
        checked += 1;
    }
    checked
}

fn gradcheck_all(path: Path, seed: u64) {
    let mut rng = Rng(seed);
    let mut cases = 0;
    for _ in 0..4 {
        cases += gradcheck::<1>(&mut rng, path);
        cases += gradcheck::<2>(&mut rng, path);
        cases += gradcheck::<3>(&mut rng, path);
        cases += gradcheck::<4>(&mut rng, path);
    }
    cases += gradcheck::<5>(&mut rng, path);
    assert!(cases >= 60, "{cases} cases");
}

#[test]
fn fused_gradients_match_finite_differences() {
    gradcheck_all(Path::Fused, 1);
}

#[test]
fn composed_gradients_match_finite_differences() {
    gradcheck_all(Path::Composed, 2);
}

/// Fused and composed agree to 1e-6 (f32) in the forward and both gradients, on shapes that
/// exercise every kernel branch: small, middle axes, last axis, large contiguous slices and
/// one large whole-tensor reduction.
#[test]
fn fused_equals_composed() {
    let ad = ad_device();
    let mut rng = Rng(3);
    let shapes: Vec<Vec<usize>> = vec![
        vec![7],
        vec![5, 4],
        vec![64, 300],
        vec![300, 64],
        vec![6, 3, 5],
        vec![32, 16, 3, 3],
        vec![4, 6, 2, 3, 2],
        vec![3, 70000],
        vec![2, 2, 40000],
    ];
    for shape in shapes {
        match shape.len() {
            1 => fused_vs_composed::<1>(&mut rng, &shape, &ad),
            2 => fused_vs_composed::<2>(&mut rng, &shape, &ad),
            3 => fused_vs_composed::<3>(&mut rng, &shape, &ad),
            4 => fused_vs_composed::<4>(&mut rng, &shape, &ad),
            5 => fused_vs_composed::<5>(&mut rng, &shape, &ad),
            _ => unreachable!(),
        }
    }
}

/// The magnitude of the terms of `dg = sum(dw * v) / n` per slice: `sum(|dw * v|) / n`.
fn dg_term_scale<const D: usize>(v: &[f64], r: &[f64], shape: [usize; D], axis: NormAxis) -> f64 {
    let device = device();
    let vt = from_f64(v.to_vec(), shape, DType::F64, &device);
    let rt = from_f64(r.to_vec(), shape, DType::F64, &device);
    let l1 = norm_except_dim(vt.clone() * rt, 1.0, axis).unwrap();
    let l2 = norm_except_dim(vt, 2.0, axis).unwrap();
    max_abs(&values(&(l1 / l2)))
}

fn fused_vs_composed<const D: usize>(rng: &mut Rng, shape: &[usize], ad: &Device) {
    let shape: [usize; D] = shape.try_into().unwrap();
    let n: usize = shape.iter().product();
    for axis in axes(D) {
        let g_shape: [usize; D] = axis.g_shape(&shape).try_into().unwrap();
        let v0 = rng.vec(n);
        let g0 = rng.vec(g_shape.iter().product());
        let r0 = rng.vec(n);
        let r = from_f64(r0.clone(), shape, DType::F32, ad);
        let mut outs = Vec::new();
        for path in [Path::Fused, Path::Composed] {
            let v = from_f64(v0.clone(), shape, DType::F32, ad).require_grad();
            let g = from_f64(g0.clone(), g_shape, DType::F32, ad).require_grad();
            let w = forward(path, v.clone(), g.clone(), axis);
            let grads = (w.clone() * r.clone()).sum().backward();
            outs.push((
                values(&w),
                values(&v.grad(&grads).unwrap()),
                values(&g.grad(&grads).unwrap()),
            ));
        }
        let label = format!("{shape:?} {axis}");
        assert_close(&format!("{label} w"), &outs[0].0, &outs[1].0, 1e-6);
        let scale = dv_term_scale(&v0, &outs[1].0, &r0).max(max_abs(&outs[1].1));
        let err = error_at_scale(&outs[0].1, &outs[1].1, scale);
        assert!(
            err <= 1e-6,
            "{label} dv: fused and composed differ by {err:e}"
        );
        let scale = dg_term_scale(&v0, &r0, shape, axis).max(max_abs(&outs[1].2));
        let err = error_at_scale(&outs[0].2, &outs[1].2, scale);
        assert!(
            err <= 1e-6,
            "{label} dg: fused and composed differ by {err:e}"
        );
    }
}

/// The extension's default bodies (the path GPU backends take) against the fused kernels,
/// called on the same Flex primitives, with and without an epsilon.
#[test]
fn composed_default_bodies_equal_fused_kernels() {
    use weightnorm::ops::WeightNormBackend;
    let device = device();
    let mut rng = Rng(4);
    let shape = [6, 5, 4];
    for axis in axes(3) {
        for eps in [0.0, 0.3] {
            let g_shape: [usize; 3] = axis.g_shape(&shape).try_into().unwrap();
            let mut v0 = rng.vec(120);
            // Make slice 0 of every axis small so the epsilon clamps it.
            for x in v0.iter_mut().take(4) {
                *x *= 1e-3;
            }
            let prim = |vals: Vec<f64>, s: [usize; 3]| {
                from_f64(vals, s, DType::F64, &device)
                    .try_into_primitive::<Flex>()
                    .unwrap()
            };
            let v = prim(v0.clone(), shape);
            let g = prim(rng.vec(g_shape.iter().product()), g_shape);
            let dw = prim(rng.vec(120), shape);
            let back = |t| values(&Tensor::<3>::from_primitive::<Flex>(t));
            let keep = axis.kept();
            let w_c = back(composed_forward::<Flex>(v.clone(), g.clone(), keep, eps));
            let w_f = back(Flex::weight_norm_forward(v.clone(), g.clone(), keep, eps));
            let (dv_c, dg_c) =
                composed_backward::<Flex>(v.clone(), g.clone(), dw.clone(), keep, eps);
            let (dv_f, dg_f) = Flex::weight_norm_backward(v, g, dw, keep, eps);
            let label = format!("{axis} eps={eps}");
            assert_close(&format!("{label} w"), &w_f, &w_c, 1e-12);
            assert_close(&format!("{label} dv"), &back(dv_f), &back(dv_c), 1e-12);
            assert_close(&format!("{label} dg"), &back(dg_f), &back(dg_c), 1e-12);
        }
    }
}

/// The epsilon's gradient through Burn's own autodiff (composed path, clamp_min) agrees with the
/// analytic backward's rule, including on a slice below epsilon.
#[test]
fn epsilon_gradients_agree_between_paths() {
    let ad = ad_device();
    let v0 = vec![1e-4, -2e-4, 3.0, 4.0];
    let g0 = vec![2.0, 0.5];
    let r0 = vec![0.3, -0.7, 1.1, 0.2];
    let mut outs = Vec::new();
    for fused in [true, false] {
        let v = from_f64(v0.clone(), [2, 2], DType::F64, &ad).require_grad();
        let g = from_f64(g0.clone(), [2, 1], DType::F64, &ad).require_grad();
        let r = from_f64(r0.clone(), [2, 2], DType::F64, &ad);
        let w = if fused {
            weightnorm::ops::weight_norm_eps(v.clone(), g.clone(), NormAxis::Keep(0), 0.01)
        } else {
            weight_norm_composed(v.clone(), g.clone(), NormAxis::Keep(0), 0.01)
        }
        .unwrap();
        let grads = (w.clone() * r).sum().backward();
        outs.push((
            values(&w),
            values(&v.grad(&grads).unwrap()),
            values(&g.grad(&grads).unwrap()),
        ));
    }
    assert_eq!(outs[0].0.len(), 4);
    // Slice 0 (norm 2.2e-4 < 0.01) is divided by eps: w = g v / eps, dv = g r / eps.
    assert!((outs[0].0[0] - 2.0 * 1e-4 / 0.01).abs() < 1e-12);
    assert!((outs[0].1[0] - 2.0 * 0.3 / 0.01).abs() < 1e-9);
    assert_close("w", &outs[0].0, &outs[1].0, 1e-12);
    assert_close("dv", &outs[0].1, &outs[1].1, 1e-12);
    assert_close("dg", &outs[0].2, &outs[1].2, 1e-12);
}

/// The result does not depend on the number of threads: the kernels' chunking is fixed.
#[test]
fn fused_results_do_not_depend_on_the_thread_pool() {
    let device = device();
    let mut rng = Rng(5);
    let shape = [64, 3000];
    let v0 = rng.vec(64 * 3000);
    for axis in [NormAxis::Keep(0), NormAxis::Keep(1), NormAxis::Whole] {
        let g_shape: [usize; 2] = axis.g_shape(&shape).try_into().unwrap();
        let g0 = rng.vec(g_shape.iter().product());
        let run = || {
            let v = from_f64(v0.clone(), shape, DType::F32, &device);
            let g = from_f64(g0.clone(), g_shape, DType::F32, &device);
            values(&weight_norm(v, g, axis).unwrap())
        };
        let many = run();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        assert_eq!(many, one, "{axis}");
    }
}
