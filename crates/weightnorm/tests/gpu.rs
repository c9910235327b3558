//! The fused weight norm on the GPU (CubeCL): forward and both gradients against the exact
//! values (the CPU kernel in f64, itself checked against PyTorch's f64 fixtures), the CPU kernel
//! in the same dtype, and PyTorch's own results; every axis and the whole tensor, odd sizes,
//! every launch plan (one pass per slice; slices cut into chunks; long runs and columns), f16
//! and bf16, extreme magnitudes, the epsilon, strided input, and a weight-normalized module.
//!
//! Compiled only with a GPU feature. With `wgpu`
//! (`cargo test --release -p weightnorm --features wgpu --test gpu`) it runs on wgpu's default
//! adapter; on a machine without a GPU that is Mesa's software Vulkan driver (lavapipe, Debian
//! package `mesa-vulkan-drivers`), a CPU-type adapter that wgpu's selection takes where it is
//! the only one. With `cuda` (`--features cuda`) it runs on the first CUDA device.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use std::sync::OnceLock;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{DType, Device, Tensor, TensorData};
use common::*;
use weightnorm::ops::{weight_norm, weight_norm_composed, weight_norm_eps};
use weightnorm::{NormAxis, WeightNormConfig, apply_weight_norm};

/// The GPU: the first CUDA device with the `cuda` feature, else wgpu's default adapter (a GPU
/// where there is one, lavapipe otherwise).
fn gpu() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            #[cfg(feature = "cuda")]
            let device = Device::cuda(0);
            #[cfg(not(feature = "cuda"))]
            let device = Device::wgpu_options().init().expect(
                "no wgpu adapter: install a Vulkan driver (mesa-vulkan-drivers for the CPU one)",
            );
            println!("GPU: {:?}", device.identity());
            device
        })
        .clone()
}

/// The CPU (Flex) device, where the CPU kernel runs.
fn cpu() -> Device {
    Device::flex()
}

/// The forward and both gradients, as f64.
struct Outcome {
    w: Vec<f64>,
    dv: Vec<f64>,
    dg: Vec<f64>,
}

/// One weight-norm problem: `v`, `g`, the upstream gradient `dw`, all in one dtype.
#[derive(Clone)]
struct Case {
    name: String,
    shape: Vec<usize>,
    axis: NormAxis,
    eps: f64,
    v: TensorData,
    g: TensorData,
    dw: TensorData,
}

impl Case {
    /// Random `v` and `dw` in [-1, 1), `g` in [0.5, 1.5), stored as `dtype`.
    fn random(shape: &[usize], axis: NormAxis, dtype: DType, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let numel: usize = shape.iter().product();
        let g_shape = axis.g_shape(shape);
        let g_len: usize = g_shape.iter().product();
        let g: Vec<f64> = (0..g_len).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
        Self {
            name: format!("{shape:?} {} {dtype:?}", axis.describe()),
            shape: shape.to_vec(),
            axis,
            eps: 0.0,
            v: TensorData::new(rng.vec(numel), shape.to_vec()).convert_dtype(dtype),
            g: TensorData::new(g, g_shape).convert_dtype(dtype),
            dw: TensorData::new(rng.vec(numel), shape.to_vec()).convert_dtype(dtype),
        }
    }

    fn dtype(&self) -> DType {
        self.v.dtype()
    }

    /// The same values in f64, where the CPU kernel is exact to the last bits of f32 and the
    /// half types.
    fn to_f64(&self) -> Self {
        let up = |d: &TensorData| d.clone().convert_dtype(DType::F64);
        Self {
            v: up(&self.v),
            g: up(&self.g),
            dw: up(&self.dw),
            ..self.clone()
        }
    }

    /// The forward and both gradients on `device`, through the fused path or the reference
    /// composition.
    fn run(&self, device: &Device, composed: bool) -> Outcome {
        match self.shape.len() {
            1 => self.run_rank::<1>(device, composed),
            2 => self.run_rank::<2>(device, composed),
            3 => self.run_rank::<3>(device, composed),
            4 => self.run_rank::<4>(device, composed),
            5 => self.run_rank::<5>(device, composed),
            r => panic!("rank {r}"),
        }
    }

    fn run_rank<const D: usize>(&self, device: &Device, composed: bool) -> Outcome {
        let ad = device.clone().autodiff();
        let g_shape = self.axis.g_shape(&self.shape);
        let v: Tensor<D> = tensor(&self.v, &self.shape, &ad).require_grad();
        let g: Tensor<D> = tensor(&self.g, &g_shape, &ad).require_grad();
        let dw: Tensor<D> = tensor(&self.dw, &self.shape, &ad);
        let w = if composed {
            weight_norm_composed(v.clone(), g.clone(), self.axis, self.eps).unwrap()
        } else {
            weight_norm_eps(v.clone(), g.clone(), self.axis, self.eps).unwrap()
        };
        assert_eq!(&w.device(), device, "{}: ran on another device", self.name);
        assert_eq!(w.dtype(), self.dtype(), "{}: dtype changed", self.name);
        let grads = (w.clone() * dw).sum().backward();
        Outcome {
            w: values(&w),
            dv: values(&v.grad(&grads).expect("v has a gradient")),
            dg: values(&g.grad(&grads).expect("g has a gradient")),
        }
    }
}

/// The errors of `out` against `reference`: `w` element by element (it has no cancellation;
/// below f32's smallest normal number, where a result has fewer bits, against that number, and
/// a zero there, a GPU's flush of subnormals, as exact), `dv` against the magnitude of its
/// terms, `dg` against its largest value.
fn errors(case: &Case, out: &Outcome, reference: &Outcome) -> [f64; 3] {
    let v = f64s(&case.v);
    let dw = f64s(&case.dw);
    let scale_dv = dv_term_scale(&v, &reference.w, &dw).max(max_abs(&reference.dv));
    let w = out
        .w
        .iter()
        .zip(&reference.w)
        .map(|(&a, &e)| {
            // NVIDIA's Vulkan driver flushes f32 subnormal results to zero (seen on an H100;
            // lavapipe keeps them): such a zero is the subnormal up to that flush.
            if a == 0.0 && e.abs() < f32::MIN_POSITIVE as f64 {
                0.0
            } else {
                (a - e).abs() / e.abs().max(f32::MIN_POSITIVE as f64)
            }
        })
        .fold(0.0, f64::max);
    [
        w,
        error_at_scale(&out.dv, &reference.dv, scale_dv),
        rel_error(&out.dg, &reference.dg),
    ]
}

/// How far (in ulps of the half type) each of `out`'s tensors is from `exact`. The gradient
/// `dv = (g/n) dw - (g s/n^3) v` cancels where a slice is one element or `dw` is parallel to
/// `v`; there an f32 result's error, relative to the terms (`scale_dv`), is not a bug but
/// shows in the half result, so up to 2^-20 of the terms is forgiven before counting ulps.
fn ulps(out: &Outcome, exact: &Outcome, dtype: DType, scale_dv: f64) -> [f64; 3] {
    let slack = scale_dv * 2f64.powi(-20);
    let dv_off: Vec<f64> = out
        .dv
        .iter()
        .zip(&exact.dv)
        .map(|(a, e)| {
            let err = ((a - e).abs() - slack).max(0.0);
            e + err.copysign(a - e)
        })
        .collect();
    [
        ulps_off(&out.w, &exact.w, dtype),
        ulps_off(&dv_off, &exact.dv, dtype),
        ulps_off(&out.dg, &exact.dg, dtype),
    ]
}

/// Three errors, printed.
fn sci(errors: &[f64; 3]) -> String {
    format!("[{:.1e}, {:.1e}, {:.1e}]", errors[0], errors[1], errors[2])
}

/// The scale of the terms of `dv` for `case` (see [`dv_term_scale`]).
fn dv_scale(case: &Case, exact: &Outcome) -> f64 {
    dv_term_scale(&f64s(&case.v), &exact.w, &f64s(&case.dw)).max(max_abs(&exact.dv))
}

/// An f32 case on the GPU: within `tol` of the exact values, and of the CPU kernel's f32.
fn check_f32(case: &Case, tol: f64) {
    let exact = case.to_f64().run(&cpu(), false);
    let on_gpu = case.run(&gpu(), false);
    let on_cpu = case.run(&cpu(), false);
    let vs_exact = errors(case, &on_gpu, &exact);
    let vs_cpu = errors(case, &on_gpu, &on_cpu);
    println!(
        "{}: from exact (w, dv, dg) {}, from the CPU kernel {}",
        case.name,
        sci(&vs_exact),
        sci(&vs_cpu)
    );
    for (key, (e, c)) in ["w", "dv", "dg"]
        .into_iter()
        .zip(vs_exact.iter().zip(vs_cpu))
    {
        assert!(*e <= tol, "{} {key}: {e:e} from the exact value", case.name);
        assert!(
            c <= 2.0 * tol,
            "{} {key}: {c:e} from the CPU kernel",
            case.name
        );
    }
}

/// A half case on the GPU: within one ulp of the exact values (one rounding of an f32 result),
/// and within one ulp of the CPU kernel.
fn check_half(case: &Case) {
    let exact = case.to_f64().run(&cpu(), false);
    let on_gpu = case.run(&gpu(), false);
    let on_cpu = case.run(&cpu(), false);
    let scale = dv_scale(case, &exact);
    let off = ulps(&on_gpu, &exact, case.dtype(), scale);
    let apart = ulps(&on_gpu, &on_cpu, case.dtype(), scale);
    println!(
        "{}: ulps from exact (w, dv, dg) {off:.2?}, from the CPU kernel {apart:.2?}",
        case.name
    );
    for (key, (o, a)) in ["w", "dv", "dg"].into_iter().zip(off.iter().zip(apart)) {
        assert!(
            *o <= 1.0,
            "{} {key}: {o} ulps from the exact value",
            case.name
        );
        assert!(
            a <= 1.0,
            "{} {key}: {a} ulps from the CPU kernel",
            case.name
        );
    }
}

/// Every kept axis of `shape` and the whole tensor.
fn every_axis(shape: &[usize]) -> Vec<NormAxis> {
    (0..shape.len())
        .map(NormAxis::Keep)
        .chain([NormAxis::Whole])
        .collect()
}

/// The tolerance for f32 against the exact values: sums of up to 10^5 f32 terms, each unit's
/// in order and the units' in a tree, then two roundings.
const F32_TOL: f64 = 2e-6;

#[test]
fn the_gpu_is_not_the_cpu_and_the_cpu_stays_the_default() {
    let device = gpu();
    assert_ne!(device, cpu());
    let identity = device.identity().expect("a CubeCL device says what it is");
    println!("{identity:?}");
    // The project's own tests and the CLI run on the CPU with the feature on, as without it.
    assert_eq!(common::device(), cpu());
    assert_eq!(common::ad_device(), cpu());
}

#[test]
fn every_pytorch_fixture_on_the_gpu() {
    let mut seen = [0usize; 4];
    for fx in load_fixtures("ops") {
        let dtype = fx.get("g").dtype();
        if !gpu().supports_dtype(dtype) {
            // wgpu has no f64 and (WGSL) no bf16; CUDA has both.
            println!("{}: {dtype:?} is not supported by this device", fx.name);
            continue;
        }
        let rank = fx.shape().len();
        let case = fixture_case(&fx, rank);
        match dtype {
            DType::F64 => {
                // The composed path (the kernels are f32-accumulating), against the CPU's f64.
                seen[3] += 1;
                let err = errors(&case, &case.run(&gpu(), false), &case.run(&cpu(), false));
                println!("{}: from the CPU kernel {}", fx.name, sci(&err));
                assert!(err.iter().all(|&e| e <= 1e-12), "{}: {err:?}", fx.name);
            }
            DType::F32 => {
                seen[0] += 1;
                check_f32(&case, F32_TOL);
                // And PyTorch's own f32 results: as close as the tolerance, or closer to the
                // exact values than PyTorch is (PyTorch's f32 reductions are 1.5e-5 off in
                // some of these fixtures).
                let torch = Outcome {
                    w: f64s(fx.get("w")),
                    dv: f64s(fx.get("dv")),
                    dg: f64s(fx.get("dg")),
                };
                let exact = case.to_f64().run(&cpu(), false);
                let on_gpu = case.run(&gpu(), false);
                let diff = errors(&case, &on_gpu, &torch);
                let ours = errors(&case, &on_gpu, &exact);
                let theirs = errors(&case, &torch, &exact);
                println!(
                    "{}: from PyTorch {}; from exact: ours {}, PyTorch {}",
                    fx.name,
                    sci(&diff),
                    sci(&ours),
                    sci(&theirs)
                );
                for i in 0..3 {
                    assert!(
                        diff[i] <= F32_TOL || ours[i] <= theirs[i],
                        "{} ({i}): {:e} from PyTorch, and further from exact ({:e} vs {:e})",
                        fx.name,
                        diff[i],
                        ours[i],
                        theirs[i]
                    );
                }
            }
            half => {
                seen[if half == DType::F16 { 1 } else { 2 }] += 1;
                // The exact values PyTorch's script stored.
                let exact = Outcome {
                    w: f64s(fx.get("w64")),
                    dv: f64s(fx.get("dv64")),
                    dg: f64s(fx.get("dg64")),
                };
                let off = ulps(
                    &case.run(&gpu(), false),
                    &exact,
                    half,
                    dv_scale(&case, &exact),
                );
                println!("{}: ulps from exact {off:.2?}", fx.name);
                assert!(off.iter().all(|&o| o <= 1.0), "{}: {off:?} ulps", fx.name);
            }
        }
    }
    println!("fixtures checked (f32, f16, bf16, f64): {seen:?}");
    assert!(seen[0] >= 15, "only {} f32 fixtures", seen[0]);
    assert!(seen[1] >= 5, "only {} f16 fixtures", seen[1]);
}

/// A fixture as a case: its stored inputs, or the inputs its formula makes.
fn fixture_case(fx: &Fixture, rank: usize) -> Case {
    let shape = fx.shape();
    let axis = NormAxis::from_torch(fx.torch_dim(), rank).unwrap();
    let dtype = fx.get("g").dtype();
    let (v, dw) = fx.inputs();
    let (v, dw) = (v.convert_dtype(dtype), dw.convert_dtype(dtype));
    Case {
        name: fx.name.clone(),
        shape: shape.clone(),
        axis,
        eps: 0.0,
        v,
        g: fx.get("g").clone(),
        dw,
    }
}

#[test]
fn every_axis_and_the_whole_tensor_at_odd_sizes_in_f32() {
    let shapes: &[&[usize]] = &[
        &[1],
        &[7],
        &[3, 5],
        &[33, 17],
        &[5, 1, 9],
        &[2, 3, 4, 5],
        &[3, 2, 1, 4, 5],
        &[31, 3, 3],
        &[65, 40, 3],
        &[300, 784],
        &[3, 33, 65],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        for axis in every_axis(shape) {
            check_f32(&Case::random(shape, axis, DType::F32, i as u64), F32_TOL);
        }
    }
}

/// Shapes that take each launch plan: one pass per slice over long runs and over columns
/// (tiles of whole slices), each long enough for the four-loads-at-a-time loops; and slices
/// cut into chunks (a few long slices, the whole tensor, a few columns of many rows).
#[test]
fn every_launch_plan_in_f32() {
    let cases: &[(&[usize], NormAxis)] = &[
        // Many slices of long runs: one cube per slice, one launch.
        (&[20_000, 40], NormAxis::Keep(0)),
        (&[33, 3001], NormAxis::Keep(0)),
        // Runs that continue on the next row (outer > 1).
        (&[7, 5, 300], NormAxis::Keep(1)),
        // Many short columns: tiles of whole slices, one launch.
        (&[8, 20_000], NormAxis::Keep(1)),
        (&[4, 20_000, 3], NormAxis::Keep(1)),
        (&[300, 784], NormAxis::Keep(1)),
        // Few long slices: chunks, three launches.
        (&[3, 100_003], NormAxis::Keep(0)),
        (&[300_007], NormAxis::Whole),
        (&[2, 50_000, 3], NormAxis::Whole),
        // Few columns of many rows: chunks of rows.
        (&[50_001, 3], NormAxis::Keep(1)),
        (&[20_001, 2, 5], NormAxis::Keep(1)),
    ];
    for (i, (shape, axis)) in cases.iter().enumerate() {
        check_f32(
            &Case::random(shape, *axis, DType::F32, 100 + i as u64),
            F32_TOL,
        );
    }
}

#[test]
fn half_types_are_computed_in_f32_and_rounded_once() {
    let shapes: &[&[usize]] = &[&[7], &[33, 17], &[5, 1, 9], &[65, 40, 3], &[3, 20_001]];
    for dtype in [DType::F16, DType::BF16] {
        if !gpu().supports_dtype(dtype) {
            println!("{dtype:?} is not supported by this device");
            continue;
        }
        for (i, shape) in shapes.iter().enumerate() {
            for axis in every_axis(shape) {
                check_half(&Case::random(shape, axis, dtype, 200 + i as u64));
            }
        }
    }
    // f16 is what every adapter that trains in half precision has.
    assert!(gpu().supports_dtype(DType::F16), "the adapter has no f16");
}

/// Slices whose sum of squares overflows f32 (1e20) or underflows it (1e-25) have their exact
/// norm, as on the CPU; the reference composition on the same device overflows, which shows
/// that the fused kernel, not the composition, ran.
#[test]
fn extreme_magnitudes_have_their_exact_norms() {
    let shape = [4usize, 300];
    let mut rng = Rng(7);
    let scales = [1e20, 1e-25, 1.0, 3e18];
    let v: Vec<f64> = (0..4)
        .flat_map(|r| {
            let s = scales[r];
            rng.vec(300).into_iter().map(move |x| x * s)
        })
        .collect();
    let dw = rng.vec(1200);
    for axis in [NormAxis::Keep(0), NormAxis::Keep(1), NormAxis::Whole] {
        let g_shape = axis.g_shape(&shape);
        let g = vec![1.5; g_shape.iter().product()];
        let case = Case {
            name: format!("extreme {}", axis.describe()),
            shape: shape.to_vec(),
            axis,
            eps: 0.0,
            v: TensorData::new(v.clone(), shape).convert_dtype(DType::F32),
            g: TensorData::new(g, g_shape).convert_dtype(DType::F32),
            dw: TensorData::new(dw.clone(), shape).convert_dtype(DType::F32),
        };
        check_f32(&case, F32_TOL);
        if axis == NormAxis::Keep(0) {
            let composed = case.run(&gpu(), true);
            assert!(
                composed.w[..300]
                    .iter()
                    .all(|&w| w == 0.0 || !w.is_finite()),
                "the composition did not overflow: the test no longer tells the paths apart"
            );
        }
    }
}

/// Slices whose norm itself is beyond f32's range (elements up to 3e38) go through their exact
/// direction on the GPU as on the CPU: `w = g u`, and the gradients finite, against the exact
/// values computed in f64.
#[test]
fn norms_beyond_the_f32_range_give_the_exact_direction() {
    let shape = [4usize, 300];
    let mut rng = Rng(9);
    let scales = [3e38, 1.0, 1e30, 0.5];
    let v: Vec<f64> = (0..4)
        .flat_map(|r| {
            let s = scales[r];
            rng.vec(300).into_iter().map(move |x| x * s)
        })
        .collect();
    let dw = rng.vec(1200);
    // Per row: a slice mixing 3e38 with 1.0 would have dv of order 1e-39 at the small elements,
    // subnormal in f32 and so short of bits whatever the kernel.
    let axis = NormAxis::Keep(0);
    let g_shape = axis.g_shape(&shape);
    let g = vec![1.5; g_shape.iter().product()];
    let case = Case {
        name: format!("beyond the range {}", axis.describe()),
        shape: shape.to_vec(),
        axis,
        eps: 0.0,
        v: TensorData::new(v, shape).convert_dtype(DType::F32),
        g: TensorData::new(g, g_shape).convert_dtype(DType::F32),
        dw: TensorData::new(dw, shape).convert_dtype(DType::F32),
    };
    check_f32(&case, F32_TOL);
}

/// With an epsilon, a zero slice trains (`dv = (g / eps) dw`) as on the CPU.
#[test]
fn an_epsilon_clamps_zero_and_small_slices() {
    for axis in [NormAxis::Keep(0), NormAxis::Keep(1)] {
        let mut case = Case::random(&[6, 40], axis, DType::F32, 11);
        let mut v = f64s(&case.v);
        // Row 0 zero, row 1 tiny (below eps), the rest as drawn.
        for x in &mut v[..40] {
            *x = 0.0;
        }
        for x in &mut v[40..80] {
            *x *= 1e-6;
        }
        case.v = TensorData::new(v, [6, 40]).convert_dtype(DType::F32);
        case.eps = 1e-3;
        case.name = format!("eps {}", axis.describe());
        let on_gpu = case.run(&gpu(), false);
        assert!(on_gpu.w.iter().chain(&on_gpu.dv).all(|x| x.is_finite()));
        check_f32(&case, F32_TOL);
    }
}

/// A strided view (a transpose) is read as its values, not its buffer.
#[test]
fn strided_input_is_read_by_its_values() {
    let data = Rng(5).vec(37 * 45);
    let on = |device: &Device| {
        let v = Tensor::<2>::from_data(TensorData::new(data.clone(), [37, 45]), device).transpose();
        assert_eq!(v.dims(), [45, 37]);
        let g = Tensor::<2>::ones([45, 1], device);
        values(&weight_norm(v, g, NormAxis::Keep(0)).unwrap())
    };
    let err = elementwise_rel_error(&on(&gpu()), &on(&cpu()));
    assert!(err <= F32_TOL, "{err:e}");
}

/// The output and the parameters' gradients of `forward(layer, x)` for a fixed input
/// `[5, 70]`, with `layer` moved to `device`: what the layer tests compare between devices.
fn output_and_grads<M: Module + Clone>(
    layer: &M,
    forward: impl Fn(&M, Tensor<2>) -> Tensor<2>,
    seed: u64,
    device: &Device,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let layer = layer.clone().fork(device);
    let x = Tensor::<2>::from_data(TensorData::new(Rng(seed).vec(5 * 70), [5, 70]), device);
    let y = forward(&layer, x);
    let grads = (y.clone() * y.clone()).sum().backward();
    let mut grad_values = Vec::new();
    layer.visit(&mut Collect {
        grads: &grads,
        out: &mut grad_values,
    });
    (values(&y), grad_values)
}

/// The GPU's output and three gradients against the CPU's.
fn assert_gpu_matches_cpu<M: Module + Clone>(
    layer: &M,
    forward: impl Fn(&M, Tensor<2>) -> Tensor<2> + Copy,
    seed: u64,
) {
    let (y_cpu, g_cpu) = output_and_grads(layer, forward, seed, &cpu().autodiff());
    let (y_gpu, g_gpu) = output_and_grads(layer, forward, seed, &gpu().autodiff());
    assert!(rel_error(&y_gpu, &y_cpu) <= F32_TOL);
    assert_eq!(g_cpu.len(), 3, "gradients of v, g and the bias on the CPU");
    assert_eq!(g_gpu.len(), 3, "gradients of v, g and the bias on the GPU");
    for (a, b) in g_gpu.iter().zip(&g_cpu) {
        let err = rel_error(a, b);
        assert!(err <= 4.0 * F32_TOL, "gradient {err:e} from the CPU's");
    }
}

/// A weight-normalized Linear layer trains on the GPU: its output and gradients as on the CPU.
#[test]
fn a_weight_normalized_layer_on_the_gpu() {
    let layer = LinearConfig::new(70, 33).init(&cpu().autodiff());
    let layer = apply_weight_norm(layer, &WeightNormConfig::new()).unwrap();
    assert_gpu_matches_cpu(&layer, |l, x| l.forward(x), 3);
}

/// The paper-form layer (`nn::WnLinear`: the composed default bodies of the extension on the
/// GPU, lazily through Burn's fusion) trains on the GPU: its output and gradients as on the
/// CPU, where the fused kernels run.
#[test]
fn the_paper_form_linear_on_the_gpu() {
    let layer = weightnorm::nn::WnLinearConfig::new(70, 33).init(&cpu().autodiff());
    assert_gpu_matches_cpu(&layer, |l, x| l.forward(x), 4);
}

/// Collects the gradient of every float parameter.
struct Collect<'a> {
    grads: &'a burn::tensor::Gradients,
    out: &'a mut Vec<Vec<f64>>,
}

impl burn::module::ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.push(values(&g));
        }
    }
}
