//! Tests of `passes`.
use half::{bf16, f16};

use super::super::test_data::{SPLITS, values};
use super::*;

/// `(w, dv, dg)` by definition, in f64.
fn naive(
    v: &[f64],
    g: &[f64],
    dw: &[f64],
    [outer, n, inner]: [usize; 3],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let at = |o: usize, j: usize, i: usize| (o * n + j) * inner + i;
    let (mut w, mut dv, mut dg) = (vec![0.0; v.len()], vec![0.0; v.len()], vec![0.0; n]);
    for j in 0..n {
        let (mut sq, mut s) = (0.0, 0.0);
        for o in 0..outer {
            for i in 0..inner {
                sq += v[at(o, j, i)] * v[at(o, j, i)];
                s += dw[at(o, j, i)] * v[at(o, j, i)];
            }
        }
        let raw = sq.sqrt();
        let norm = raw.max(eps);
        if outer * inner > 0 {
            dg[j] = s / norm;
        }
        for o in 0..outer {
            for i in 0..inner {
                let k = at(o, j, i);
                w[k] = g[j] * v[k] / norm;
                let b = if raw < eps {
                    0.0
                } else {
                    g[j] * s / norm.powi(3)
                };
                dv[k] = g[j] / norm * dw[k] - b * v[k];
            }
        }
    }
    (w, dv, dg)
}

fn max_err(got: &[f64], exact: &[f64]) -> f64 {
    assert_eq!(got.len(), exact.len());
    got.iter()
        .zip(exact)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0, f64::max)
}

fn check<T: Real>(to: impl Fn(f64) -> T, from: impl Fn(T) -> f64, tol: f64) {
    for split in SPLITS {
        let len: usize = split.iter().product();
        for eps in [0.0, 0.5] {
            let (v, dw) = (values(len, 11), values(len, 12));
            let g: Vec<f64> = values(split[1], 13).iter().map(|x| x + 1.5).collect();
            let c = |xs: &[f64]| xs.iter().map(|&x| to(x)).collect::<Vec<T>>();
            // Round the inputs first, so that only the kernels' own error is measured.
            let (vt, gt, dt) = (c(&v), c(&g), c(&dw));
            let f = |xs: &[T]| xs.iter().map(|&x| from(x)).collect::<Vec<f64>>();
            let (w, dv, dg) = naive(&f(&vt), &f(&gt), &f(&dt), split, eps);
            let got_w = forward::<T>(&vt, &gt, split, eps);
            let (got_dv, got_dg) = backward::<T>(&vt, &gt, &dt, split, eps);
            let what = format!("{} {split:?} eps={eps}", std::any::type_name::<T>());
            assert!(max_err(&f(&got_w), &w) <= tol, "w {what}");
            assert!(max_err(&f(&got_dv), &dv) <= tol, "dv {what}");
            assert!(max_err(&f(&got_dg), &dg) <= tol, "dg {what}");
        }
    }
}

#[test]
fn forward_and_backward_match_a_naive_f64_reference() {
    check::<f64>(|x| x, |x| x, 1e-12);
    check::<f32>(|x| x as f32, f64::from, 1e-5);
    check::<f16>(f16::from_f64, |x| x.to_f64(), 2e-3);
    check::<bf16>(bf16::from_f64, |x| x.to_f64(), 2e-2);
}

#[test]
fn identities() {
    // Unit-norm output rows scaled by g; dg = 0 and dv orthogonal to v for dw = w / g.
    let split = [1, 3, 5];
    let v = values(15, 21);
    let g = [2.0, -1.0, 0.5];
    let w = forward::<f64>(&v, &g, split, 0.0);
    for j in 0..3 {
        let row = &w[j * 5..(j + 1) * 5];
        let n: f64 = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((n - g[j].abs()).abs() < 1e-14);
    }
    // Scale invariance: v and 7v give the same w, and the gradient of v scales by 1/7.
    let v7: Vec<f64> = v.iter().map(|x| 7.0 * x).collect();
    let w7 = forward::<f64>(&v7, &g, split, 0.0);
    assert!(max_err(&w7, &w) < 1e-14);
    let dw = values(15, 22);
    let (dv, dg) = backward::<f64>(&v, &g, &dw, split, 0.0);
    let (dv7, dg7) = backward::<f64>(&v7, &g, &dw, split, 0.0);
    assert!(max_err(&dg7, &dg) < 1e-14);
    let dv_scaled: Vec<f64> = dv7.iter().map(|x| 7.0 * x).collect();
    assert!(max_err(&dv_scaled, &dv) < 1e-13);
    // dv is orthogonal to v in every slice (the norm does not move along v).
    for j in 0..3 {
        let r = j * 5..(j + 1) * 5;
        let ip: f64 = dv[r.clone()].iter().zip(&v[r]).map(|(a, b)| a * b).sum();
        assert!(ip.abs() < 1e-13);
    }
}

#[test]
fn huge_and_tiny_finite_slices_give_the_exact_finite_result() {
    // Squares that overflow f32 (1e20^2) or underflow it (1e-30^2), on both kernel paths
    // (one contiguous slice per row, and strided slices).
    for scale in [1e20f64, 1e30, 1e-25, 1e-30, 1e-40] {
        for split in [[1usize, 3, 4], [2, 3, 2], [4, 3, 1]] {
            let len = split.iter().product();
            let v64: Vec<f64> = values(len, 5).iter().map(|x| x * scale).collect();
            let g64 = vec![0.5, 2.0, -1.5];
            let dw64: Vec<f64> = values(len, 6);
            let v: Vec<f32> = v64.iter().map(|&x| x as f32).collect();
            let g: Vec<f32> = g64.iter().map(|&x| x as f32).collect();
            let dw: Vec<f32> = dw64.iter().map(|&x| x as f32).collect();
            let exact_v: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            let (w, dv, dg) = naive(&exact_v, &g64, &dw64, split, 0.0);
            let got = forward::<f32>(&v, &g, split, 0.0);
            let up = |x: &[f32]| x.iter().map(|&y| f64::from(y)).collect::<Vec<_>>();
            let what = format!("scale {scale:e}, split {split:?}");
            assert!(max_err(&up(&got), &w) < 1e-5, "forward, {what}");
            let (gdv, gdg) = backward::<f32>(&v, &g, &dw, split, 0.0);
            assert!(max_err(&up(&gdg), &dg) < 1e-5, "dg, {what}");
            if scale < 1e-38 {
                continue; // dv is of order g / n = 1e40: beyond f32, infinite by right
            }
            // dv scales as 1 / scale: compare relative to its largest term.
            let big = dv.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let err = up(&gdv)
                .iter()
                .zip(&dv)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-5 * big && big.is_finite(),
                "dv, {what}: {err} of {big}"
            );
            let n = norms::<f32>(&v, &split, NormAxis::Keep(1));
            assert!(
                n.iter().all(|x| x.is_finite() && *x > 0.0),
                "norms, {what}: {n:?}"
            );
        }
    }
}

#[test]
fn one_element_and_empty() {
    assert_eq!(forward::<f32>(&[-3.0], &[2.0], [1, 1, 1], 0.0), vec![-2.0]);
    let (dv, dg) = backward::<f32>(&[-3.0], &[2.0], &[1.0], [1, 1, 1], 0.0);
    assert_eq!((dv, dg), (vec![0.0], vec![-1.0]));
    assert!(forward::<f32>(&[], &[1.0; 3], [0, 3, 4], 0.0).is_empty());
    let (dv, dg) = backward::<f32>(&[], &[1.0; 3], &[], [3, 3, 0], 0.0);
    assert!(dv.is_empty());
    assert_eq!(dg, vec![0.0; 3]);
    // A zero slice: NaN without eps (as in PyTorch), g / eps * dw with it.
    assert!(forward::<f64>(&[0.0, 0.0], &[1.0], [1, 1, 2], 0.0)[0].is_nan());
    let (dv, _) = backward::<f64>(&[0.0, 0.0], &[1.0], &[1.0, 2.0], [1, 1, 2], 0.5);
    assert_eq!(dv, vec![2.0, 4.0]);
}

#[test]
fn slices_api_is_the_forward() {
    let shape = [4, 3, 5];
    let v: Vec<f32> = values(60, 31).iter().map(|&x| x as f32).collect();
    for axis in [
        NormAxis::Keep(0),
        NormAxis::Keep(1),
        NormAxis::Keep(2),
        NormAxis::Whole,
    ] {
        let split = axis.split_shape(&shape);
        let ones = vec![1.0f32; split[1]];
        let w = weight_norm(&v, &ones, &shape, axis, 0.0);
        assert_eq!(w, forward::<f32>(&v, &ones, split, 0.0));
        let norms = norms(&v, &shape, axis);
        let g: Vec<f32> = norms.clone();
        // g = ||v|| gives w = v back (to rounding).
        let back = weight_norm(&v, &g, &shape, axis, 0.0);
        assert!(back.iter().zip(&v).all(|(a, b)| (a - b).abs() < 1e-6));
        assert_eq!(norms.len(), split[1]);
    }
}

#[test]
#[should_panic(expected = "weight norm: g holds 2 values, but v has 3 slices")]
fn g_of_the_wrong_length_panics() {
    forward::<f32>(&[1.0; 6], &[1.0; 2], [1, 3, 2], 0.0);
}

#[test]
#[should_panic(expected = "weight norm: dw holds 5 values, but v holds 6")]
fn dw_of_the_wrong_length_panics() {
    backward::<f32>(&[1.0; 6], &[1.0; 3], &[1.0; 5], [1, 3, 2], 0.0);
}

#[test]
#[should_panic(expected = "weight norm: v holds 5 values, not the 6 of its shape")]
fn v_of_the_wrong_length_panics() {
    forward::<f32>(&[1.0; 5], &[1.0; 3], [1, 3, 2], 0.0);
}

/// `write` for each operation, store and type gives, element by element, the rounded
/// value of the definition, wherever the output starts (streaming needs aligned lines).
fn check_write<T: Real>(to: impl Fn(f64) -> T) {
    let n = 2 * BLOCK + 77;
    let x: Vec<T> = values(n, 61).into_iter().map(&to).collect();
    let d: Vec<T> = values(n, 62).into_iter().map(&to).collect();
    let up = |v: f64| to(v).up();
    let (ca, cb): (Vec<T::A>, Vec<T::A>) = (
        values(n, 63).into_iter().map(up).collect(),
        values(n, 64).into_iter().map(up).collect(),
    );
    let (fa, fb) = (up(0.75), up(-1.25));
    let ops = [
        Op::Scale(fa),
        Op::ScaleCols(&ca),
        Op::Axpby(fa, fb),
        Op::AxpbyCols(&ca, &cb),
    ];
    for (k, op) in ops.into_iter().enumerate() {
        for store in [Store::Cached, Store::Streaming] {
            for (start, len) in [(0, n), (1, n - 1), (3, 40), (5, BLOCK + 9), (7, 0)] {
                let r = start..start + len;
                let mut out = vec![MaybeUninit::new(to(-9.0)); n];
                let part = op.part(r.clone());
                write(
                    &mut out[r.clone()],
                    &x[r.clone()],
                    &d[r.clone()],
                    part,
                    store,
                );
                super::super::sums::fence();
                for i in r.clone() {
                    let (xv, dv, j) = (x[i].up(), d[i].up(), i - start);
                    let expected = T::down(match k {
                        0 => xv * fa,
                        1 => xv * ca[start + j],
                        2 => fa * dv - fb * xv,
                        _ => ca[start + j] * dv - cb[start + j] * xv,
                    });
                    // SAFETY: every element was initialized above.
                    let got = unsafe { out[i].assume_init() };
                    assert_eq!(
                        bytemuck::bytes_of(&got),
                        bytemuck::bytes_of(&expected),
                        "{} op {k} {store:?} at {i} of {start}..{}",
                        std::any::type_name::<T>(),
                        start + len
                    );
                }
            }
        }
    }
}

#[test]
fn every_store_writes_the_definitions_bits() {
    check_write::<f32>(|x| x as f32);
    check_write::<f64>(|x| x);
    check_write::<f16>(f16::from_f64);
    check_write::<bf16>(bf16::from_f64);
}

/// Outputs streamed (from 16 MiB here): every schedule still writes every element right
/// (against the f64 definition). (Other tests may run meanwhile with streaming on: what
/// they compute does not depend on the stores.)
#[test]
fn large_outputs_are_written_whole_and_right() {
    let min = super::super::schedule::STREAM_MIN_BYTES;
    super::super::schedule::set_stream_min_bytes(Some(min));
    let len = min / 4 + 2049;
    for split in [
        [1, 2051, len / 2051],
        [1, 1, len],
        [len / 2051, 2051, 1],
        [7, 3, len / 21],
    ] {
        let len: usize = split.iter().product();
        assert_eq!(Store::for_output::<f32>(len), Store::Streaming);
        let (v, dw) = (values(len, 65), values(len, 66));
        let g: Vec<f64> = values(split[1], 67).iter().map(|x| x + 1.5).collect();
        let (v32, dw32, g32): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            v.iter().map(|&x| x as f32).collect(),
            dw.iter().map(|&x| x as f32).collect(),
            g.iter().map(|&x| x as f32).collect(),
        );
        let f = |xs: &[f32]| xs.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let (w, dv, dg) = naive(&f(&v32), &f(&g32), &f(&dw32), split, 0.0);
        let got_w = forward::<f32>(&v32, &g32, split, 0.0);
        let (got_dv, got_dg) = backward::<f32>(&v32, &g32, &dw32, split, 0.0);
        assert!(max_err(&f(&got_w), &w) <= 1e-5, "w {split:?}");
        assert!(max_err(&f(&got_dv), &dv) <= 1e-5, "dv {split:?}");
        assert!(max_err(&f(&got_dg), &dg) <= 1e-5, "dg {split:?}");
    }
}

/// Above the size where threads are used, one thread and several give the same bits, and
/// the same as below it (the chunks do not depend on the threads).
#[test]
fn one_thread_and_several_give_the_same_bits() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, four) = (pool(1), pool(4));
    let big = super::super::schedule::PARALLEL_MIN + 1000;
    for split in [
        [1, 600, big / 600],
        [1, 1, big],
        [1, 3, big / 3],
        [big / 700, 700, 1],
        [big / 1200, 40, 30],
    ] {
        let len: usize = split.iter().product();
        let v: Vec<f32> = values(len, 71).iter().map(|&x| x as f32).collect();
        let dw: Vec<f32> = values(len, 72).iter().map(|&x| x as f32).collect();
        let g: Vec<f32> = values(split[1], 73)
            .iter()
            .map(|&x| x as f32 + 2.0)
            .collect();
        let run = || {
            let w = forward::<f32>(&v, &g, split, 0.0);
            let (dv, dg) = backward::<f32>(&v, &g, &dw, split, 0.0);
            let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
            (bits(&w), bits(&dv), bits(&dg))
        };
        assert!(one.install(run) == four.install(run), "{split:?}");
    }
}

/// `sub_scaled` gives `d - x c` to the bit (it computes `1 * d - c * x`, and `1 * d` is
/// `d`) on every schedule, including large outputs that are streamed, for f32 and f64, and
/// within one rounding for the half types; in place, the same bits for f32 and f64.
#[test]
fn sub_scaled_is_d_minus_x_times_c() {
    let min = super::super::schedule::STREAM_MIN_BYTES;
    super::super::schedule::set_stream_min_bytes(Some(min));
    let big = min / 4 + 2049;
    let mut splits = SPLITS.to_vec();
    splits.extend([[big / 2051, 2051, 1], [3, 5, big / 15]]);
    for split in splits {
        let len: usize = split.iter().product();
        let (d, x) = (values(len, 81), values(len, 82));
        let c = values(split[1], 83);
        let [_, n, inner] = split;
        let expected = |i: usize| d[i] - x[i] * c[(i / inner.max(1)) % n.max(1)];
        let got = sub_scaled::<f64>(&d, &x, &c, split);
        let mut in_place = d.clone();
        assert!(sub_scaled_in_place::<f64>(&mut in_place, &x, &c, split));
        assert_eq!(got.len(), len);
        for (i, (g, p)) in got.iter().zip(&in_place).enumerate() {
            assert_eq!(g.to_bits(), expected(i).to_bits(), "f64 {split:?} at {i}");
            assert_eq!(
                p.to_bits(),
                expected(i).to_bits(),
                "f64 in place {split:?} at {i}"
            );
        }
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let (d32, x32, c32) = (f(&d), f(&x), f(&c));
        let got = sub_scaled::<f32>(&d32, &x32, &c32, split);
        let mut in_place = d32.clone();
        assert!(sub_scaled_in_place::<f32>(&mut in_place, &x32, &c32, split));
        for (i, (g, p)) in got.iter().zip(&in_place).enumerate() {
            let e = d32[i] - x32[i] * c32[(i / inner.max(1)) % n.max(1)];
            assert_eq!(g.to_bits(), e.to_bits(), "f32 {split:?} at {i}");
            assert_eq!(p.to_bits(), e.to_bits(), "f32 in place {split:?} at {i}");
        }
        // The half types are not updated in place: nothing is written.
        let mut halves = vec![f16::ONE; len];
        let (xh, ch) = (vec![f16::ONE; len], vec![f16::ONE; split[1]]);
        assert!(!sub_scaled_in_place::<f16>(&mut halves, &xh, &ch, split));
        assert!(halves.iter().all(|&h| h == f16::ONE));
        if len < 1 << 20 {
            let h = |v: &[f64]| v.iter().map(|&x| f16::from_f64(x)).collect::<Vec<_>>();
            let got = sub_scaled::<f16>(&h(&d), &h(&x), &h(&c), split);
            for (i, g) in got.iter().enumerate() {
                let (dh, xh) = (h(&d[i..=i])[0], h(&x[i..=i])[0]);
                let ch = f16::from_f64(c[(i / inner.max(1)) % n.max(1)]);
                let e = dh.to_f32() - xh.to_f32() * ch.to_f32();
                assert_eq!(
                    g.to_bits(),
                    f16::from_f32(e).to_bits(),
                    "f16 {split:?} at {i}"
                );
            }
        }
    }
}

/// `g * v / ||v||` of one slice through its exact direction: `g ((v / m) / r)` in f64 with
/// `m = max |v|`, `r = sqrt(sum (v / m)^2)`: the reference for slices whose norm leaves the
/// storage type's range or is subnormal.
fn direction_reference(v: &[f64], g: f64) -> Vec<f64> {
    let m = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    let r = v.iter().map(|x| (x / m) * (x / m)).sum::<f64>().sqrt();
    v.iter().map(|x| g * (x / m / r)).collect()
}

/// Rows whose norm is beyond their type's range (f32 at 3e38, f64 at 1.7e308, bf16 at 3.38e38)
/// or subnormal, fused by every path of the kernels (one slice, short slices, strided), within
/// 1e-6 relative of the exact direction; the backward's dv finite and of the right direction.
#[test]
fn rows_beyond_the_range_or_subnormal_are_fused_exactly() {
    fn case<T: Real>(row: &[f64], g: f64, to: impl Fn(f64) -> T, from: impl Fn(T) -> f64) {
        let exact_row: Vec<f64> = row.iter().map(|&x| from(to(x))).collect();
        let want = direction_reference(&exact_row, from(to(g)));
        // The row alone, the row repeated as short slices, and strided (kept axis last).
        let k = row.len();
        for split in [[1usize, 1, k], [1, 3, k], [k, 3, 1]] {
            let [outer, n, inner] = split;
            let mut v = vec![to(0.0); outer * n * inner];
            for j in 0..n {
                for (e, &x) in row.iter().enumerate() {
                    let (o, i) = if inner == 1 { (e, 0) } else { (0, e) };
                    v[(o * n + j) * inner + i] = to(x);
                }
            }
            let gs = vec![to(g); n];
            let w = forward::<T>(&v, &gs, split, 0.0);
            for j in 0..n {
                for (e, &want_e) in want.iter().enumerate() {
                    let (o, i) = if inner == 1 { (e, 0) } else { (0, e) };
                    let got = from(w[(o * n + j) * inner + i]);
                    // The exact value rounded to the storage type.
                    let want_e = from(to(want_e));
                    let err = (got - want_e).abs();
                    assert!(
                        err <= 1e-6 * want_e.abs().max(1e-300) || (want_e == 0.0 && got == 0.0),
                        "row {row:?}, g {g}, split {split:?}: {got} for {want_e}"
                    );
                }
            }
            // dv = (g / n) (dw - <dw, u> u): for a norm beyond the range, g / n is tiny and dv
            // finite and small. (For a subnormal norm g / n is beyond the range: dv is as
            // ill-conditioned as the definition, and infinite by right.)
            if want.iter().zip(row).any(|(w, x)| w.abs() > x.abs()) {
                continue;
            }
            let u: Vec<T> = v
                .iter()
                .map(|&x| to(from(x) / exact_row.iter().fold(0.0f64, |a, y| a.max(y.abs()))))
                .collect();
            let (dv, _) = backward::<T>(&v, &gs, &u, split, 0.0);
            assert!(
                dv.iter()
                    .all(|&x| from(x).is_finite() && from(x).abs() <= 1e-6 * g.abs().max(1.0)),
                "row {row:?}: dv {:?}",
                dv.iter().map(|&x| from(x)).collect::<Vec<_>>()
            );
        }
    }
    let f32_ = |x: f64| x as f32;
    let bf = |x: f64| bf16::from_f64(x);
    case::<f32>(&[3e38, 3e38, -3e38], 1.0, f32_, f64::from);
    case::<f32>(&[3e38, 1e38, 0.0, -2e38], 0.25, f32_, f64::from);
    case::<f32>(&[1e-45, 1e-45, 0.0], 3.0, f32_, f64::from);
    case::<f32>(&[4e-44, -1e-45, 2e-45], 2.0, f32_, f64::from);
    case::<f64>(&[1.7e308, 1.7e308, -1.7e308], 1.0, |x| x, |x| x);
    case::<f64>(&[5e-324, 5e-324, 0.0], 3.0, |x| x, |x| x);
    case::<f64>(&[1e-320, -3e-321, 5e-324, 0.0], 1e300, |x| x, |x| x);
    case::<bf16>(&[3.38e38, 3.38e38, -3.38e38], 1.0, bf, bf16::to_f64);
    case::<f16>(&[6e-8, 6e-8, 0.0], 3.0, f16::from_f64, f16::to_f64);
}
