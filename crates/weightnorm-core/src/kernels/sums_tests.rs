//! Tests of `sums`.
use super::super::test_data::values;
use super::*;

fn naive_dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Lengths around the lane width (8), the leaf (256) and powers of two of leaves.
const LENGTHS: [usize; 14] = [
    0, 1, 2, 7, 8, 9, 31, 255, 256, 257, 1000, 4096, 4097, 70_001,
];

#[test]
fn dot_matches_a_naive_f64_sum() {
    for &n in &LENGTHS {
        let (a, b) = (values(n, 1), values(n, 2));
        let exact = naive_dot(&a, &b);
        let got = dot::<f64>(&a, &b);
        assert!((got - exact).abs() <= 1e-12 * (n as f64 + 1.0), "n={n}");
        let (a32, b32): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&x| x as f32).collect(),
            b.iter().map(|&x| x as f32).collect(),
        );
        let exact32 = naive_dot(
            &a32.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &b32.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        );
        let got = dot::<f32>(&a32, &b32) as f64;
        // Pairwise: the error grows with log(n), far below n * eps.
        let bound = 1e-6 * (1.0 + (n as f64).log2().max(0.0)) * (n as f64).sqrt().max(1.0);
        assert!((got - exact32).abs() <= bound, "n={n}: {got} vs {exact32}");
    }
}

#[test]
fn dot_is_exact_on_small_integers_and_symmetric() {
    for &n in &LENGTHS {
        let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
        assert_eq!(dot::<f32>(&a, &b) as f64, exact, "n={n}");
        assert_eq!(dot::<f32>(&a, &b).to_bits(), dot::<f32>(&b, &a).to_bits());
    }
    assert_eq!(dot::<f64>(&[], &[]), 0.0);
    assert_eq!(dot::<f64>(&[3.0], &[-2.0]), -6.0);
}

#[test]
fn half_types_accumulate_in_f32() {
    // 4096 ones: an f16 running sum would stop at 2048.
    let ones = vec![f16::from_f32(1.0); 4096];
    assert_eq!(dot::<f16>(&ones, &ones), 4096.0);
    let ones = vec![bf16::from_f32(1.0); 4096];
    assert_eq!(dot::<bf16>(&ones, &ones), 4096.0);
    assert_eq!(f16::down(f16::from_f32(0.5).up()), f16::from_f32(0.5));
    assert_eq!(bf16::down(3.0), bf16::from_f32(3.0));
    assert_eq!(<f64 as Real>::down(2.5f64.up()), 2.5);
}

#[test]
fn sq_dot_gathers_both_sums() {
    for &n in &[0, 1, 9, 300] {
        let (a, b) = (values(n, 3), values(n, 4));
        let s = <SqDot<f64> as Sums<f64>>::run(&a, &b);
        assert_eq!(s, SqDot(dot::<f64>(&a, &a), dot::<f64>(&b, &a)));
        let mut e = <SqDot<f64> as Sums<f64>>::ZERO;
        for (&x, &y) in a.iter().zip(&b) {
            e = <SqDot<f64> as Sums<f64>>::add(e, <SqDot<f64> as Sums<f64>>::elem(x, y));
        }
        assert!((e.0 - naive_dot(&a, &a)).abs() < 1e-12);
        assert!((e.1 - naive_dot(&b, &a)).abs() < 1e-12);
    }
}

#[test]
fn pairwise_sums() {
    type D = Dot<f64>;
    assert_eq!(pairwise::<f64, D>(&[]), Dot(0.0));
    assert_eq!(pairwise::<f64, D>(&[Dot(2.0)]), Dot(2.0));
    let xs: Vec<D> = (1..=100).map(|i| Dot(i as f64)).collect();
    assert_eq!(pairwise::<f64, D>(&xs), Dot(5050.0));
    // The order is fixed: ((a + b) + (c + (d + e))).
    let xs = [Dot(1e16), Dot(1.0), Dot(-1e16), Dot(1.0), Dot(1.0)];
    let expected = (1e16 + 1.0) + (-1e16 + (1.0 + 1.0));
    assert_eq!(pairwise::<f64, D>(&xs), Dot(expected));

    assert!(pairwise_vecs::<f64, D>(&mut []).is_empty());
    let mut parts: Vec<Vec<D>> = (0..5).map(|k| vec![Dot(k as f64), Dot(1.0)]).collect();
    assert_eq!(
        pairwise_vecs::<f64, D>(&mut parts),
        vec![Dot(10.0), Dot(5.0)]
    );
}

#[test]
fn norm_is_clamped_to_eps() {
    assert_eq!(clamp_norm(5.0f64, 0.0), 5.0);
    assert_eq!(clamp_norm(5.0f64, 6.0), 6.0);
    assert_eq!(clamp_norm(0.0f32, 0.0), 0.0);
    assert_eq!(clamp_norm(0.0f32, 1e-3), 1e-3);
}

#[test]
fn slice_norms_are_exact_for_every_finite_slice() {
    // Plain where exact (PyTorch's bits), rescaled where the squares overflow or underflow.
    let plain = [3.0f32, 4.0];
    assert_eq!(slice_norm(25.0f32, || plain.iter().copied()), 5.0);
    for scale in [1e20f32, 1e30, 6e37, 1e-20, 1e-30, 1e-44] {
        let x = [3.0 * scale, 4.0 * scale];
        let sumsq = x[0] * x[0] + x[1] * x[1];
        let n = slice_norm(sumsq, || x.iter().copied());
        let exact = 5.0 * f64::from(scale);
        assert!(n.is_finite() && n > 0.0, "{scale}: {n}");
        assert!(
            (f64::from(n) / exact - 1.0).abs() < 1e-6,
            "{scale}: {n} vs {exact}"
        );
    }
    let x = [3e200f64, 4e200];
    let n = slice_norm(f64::INFINITY, || x.iter().copied());
    assert!((n / 5e200 - 1.0).abs() < 1e-15, "{n}");
    // Zero stays zero; NaN and infinity give a norm that is not finite.
    assert_eq!(slice_norm(0.0f32, || [0.0f32; 3].iter().copied()), 0.0);
    assert!(!slice_norm(f32::NAN, || [f32::NAN].iter().copied()).is_finite());
    assert!(!slice_norm(f32::INFINITY, || [f32::INFINITY].iter().copied()).is_finite());
}

/// The summation written plainly, element by element: leaf after leaf; in a leaf, element
/// `i` of the whole chunks of eight added to lane `i % 8` of chain `(i / 8) % CHAINS`; the
/// chains merged, the eight lanes combined, the remainder added in order; the leaves
/// combined by the binary counter.
fn reference_dot<A: Acc>(a: &[A], b: &[A]) -> A {
    fn one_leaf<A: Acc>(a: &[A], b: &[A]) -> A {
        let whole = a.len() / 8 * 8;
        let mut chain = vec![[A::ZERO; 8]; A::CHAINS];
        for i in 0..whole {
            let c = &mut chain[(i / 8) % A::CHAINS][i % 8];
            *c = *c + a[i] * b[i];
        }
        let lanes: Vec<A> = (0..8)
            .map(|l| match A::CHAINS {
                4 => (chain[0][l] + chain[2][l]) + (chain[1][l] + chain[3][l]),
                2 => chain[0][l] + chain[1][l],
                n => panic!("{n} chains"),
            })
            .collect();
        let (ca, cb) = (&a[whole..], &b[whole..]);
        let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        for (x, y) in ca.iter().zip(cb) {
            s = s + *x * *y;
        }
        s
    }
    if a.len() <= LEAF {
        return one_leaf(a, b);
    }
    let mut stack = vec![];
    for (ca, cb) in a.chunks(LEAF).zip(b.chunks(LEAF)) {
        let (mut s, mut level) = (one_leaf(ca, cb), 0u32);
        while let Some(&(t, l)) = stack.last() {
            if l != level {
                break;
            }
            s = t + s;
            stack.pop();
            level += 1;
        }
        stack.push((s, level));
    }
    let mut s = stack.pop().expect("at least one leaf").0;
    while let Some((t, _)) = stack.pop() {
        s = t + s;
    }
    s
}

/// Lengths around every boundary of the summation: lanes, leaves, groups of leaves, and
/// groups followed by one, two or three full leaves and a partial one.
const EDGES: [usize; 22] = [
    0,
    1,
    7,
    8,
    9,
    255,
    256,
    257,
    511,
    512,
    513,
    767,
    768,
    1023,
    1024,
    1025,
    1280,
    1536 + 17,
    1792,
    2048,
    3 * 1024 + 3 * 256 + 13,
    70_001,
];

#[test]
fn vectorized_sums_give_the_bits_of_one_leaf_at_a_time() {
    for &n in &EDGES {
        let (a, b) = (values(n, 41), values(n, 42));
        assert_eq!(
            dot::<f64>(&a, &b).to_bits(),
            reference_dot(&a, &b).to_bits(),
            "{n}"
        );
        let (sq, dt) = sq_dot::<f64>(&a, &b);
        assert_eq!(sq.to_bits(), reference_dot(&a, &a).to_bits(), "{n}");
        assert_eq!(dt.to_bits(), reference_dot(&b, &a).to_bits(), "{n}");
        let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&x| (x * 3.0) as f32).collect();
        let r = reference_dot(&a32, &b32);
        assert_eq!(dot::<f32>(&a32, &b32).to_bits(), r.to_bits(), "{n}");
        // Inside the AVX2 clone too.
        let wide = super::super::schedule::simd(
            #[inline(always)]
            || dot::<f32>(&a32, &b32),
        );
        assert_eq!(wide.to_bits(), r.to_bits(), "{n}");
        let (sq, dt) = sq_dot::<f32>(&a32, &b32);
        assert_eq!(sq.to_bits(), reference_dot(&a32, &a32).to_bits(), "{n}");
        assert_eq!(dt.to_bits(), reference_dot(&b32, &a32).to_bits(), "{n}");
    }
}

#[test]
fn avx_and_portable_leaves_agree_to_the_bit() {
    let (a, b) = (values(BLOCK, 43), values(BLOCK, 44));
    let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
    let bits32 = |l: &[[f32; 8]]| l.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    let bits64 = |l: &[[f64; 8]]| l.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    let p32 = strided_lanes_portable::<f32, GROUP>(&a32, &b32, LEAF, LEAF);
    let p64 = strided_lanes_portable::<f64, GROUP>(&a, &b, LEAF, LEAF);
    assert_eq!(bits32(&f32::leaf_lanes::<GROUP>(&a32, &b32)), bits32(&p32));
    assert_eq!(bits64(&f64::leaf_lanes::<GROUP>(&a, &b)), bits64(&p64));
    let (s, d) = sq_dot_strided_lanes_portable::<f32, GROUP>(&a32, &b32, LEAF, LEAF);
    let (vs, vd) = f32::sq_dot_leaf_lanes::<GROUP>(&a32, &b32);
    assert_eq!((bits32(&vs), bits32(&vd)), (bits32(&s), bits32(&d)));
    let (s, d) = sq_dot_strided_lanes_portable::<f64, GROUP>(&a, &b, LEAF, LEAF);
    let (vs, vd) = f64::sq_dot_leaf_lanes::<GROUP>(&a, &b);
    assert_eq!((bits64(&vs), bits64(&vd)), (bits64(&s), bits64(&d)));
    for len in [0, 5, 8, 13, 64, 255, 256] {
        assert_eq!(
            f32::lanes(&a32[..len], &b32[..len]).map(f32::to_bits),
            lanes(&a32[..len], &b32[..len]).map(f32::to_bits),
            "{len}"
        );
        assert_eq!(
            f64::lanes(&a[..len], &b[..len]).map(f64::to_bits),
            lanes(&a[..len], &b[..len]).map(f64::to_bits),
            "{len}"
        );
    }
}

#[test]
fn half_types_are_summed_as_their_f32_values() {
    for &n in &EDGES {
        let (a, b) = (values(n, 45), values(n, 46));
        let (a16, b16): (Vec<f16>, Vec<f16>) = (
            a.iter().map(|&x| f16::from_f64(x)).collect(),
            b.iter().map(|&x| f16::from_f64(x)).collect(),
        );
        let up = |x: &[f16]| x.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
        let (wa, wb) = (up(&a16), up(&b16));
        assert_eq!(
            dot::<f16>(&a16, &b16).to_bits(),
            reference_dot(&wa, &wb).to_bits()
        );
        let (sq, dt) = sq_dot::<f16>(&a16, &b16);
        assert_eq!(sq.to_bits(), reference_dot(&wa, &wa).to_bits(), "{n}");
        assert_eq!(dt.to_bits(), reference_dot(&wb, &wa).to_bits(), "{n}");
        let abf: Vec<bf16> = a.iter().map(|&x| bf16::from_f64(x)).collect();
        let wbf: Vec<f32> = abf.iter().map(|h| h.to_f32()).collect();
        assert_eq!(
            dot::<bf16>(&abf, &abf).to_bits(),
            reference_dot(&wbf, &wbf).to_bits()
        );
    }
}

#[test]
fn slice_conversions_are_the_element_conversions() {
    let mut xs: Vec<f32> = values(3000, 47).iter().map(|&x| (x * 7e4) as f32).collect();
    xs.extend([
        0.0,
        -0.0,
        1e-7,
        -3e-8,
        6.1e-5,
        65504.0,
        7e4,
        f32::INFINITY,
        f32::MIN,
    ]);
    let mut h16 = vec![MaybeUninit::new(f16::ZERO); xs.len()];
    f16::down_slice(&xs, &mut h16);
    let mut hbf = vec![MaybeUninit::new(bf16::ZERO); xs.len()];
    bf16::down_slice(&xs, &mut hbf);
    for (i, &x) in xs.iter().enumerate() {
        // SAFETY: every element was initialized above.
        let (a, b) = unsafe { (h16[i].assume_init(), hbf[i].assume_init()) };
        assert_eq!(a.to_bits(), f16::from_f32(x).to_bits(), "{x}");
        assert_eq!(b.to_bits(), bf16::from_f32(x).to_bits(), "{x}");
    }
    // SAFETY: as above.
    let h16: Vec<f16> = h16.iter().map(|h| unsafe { h.assume_init() }).collect();
    let mut back = vec![0f32; xs.len()];
    f16::up_slice(&h16, &mut back);
    for (h, b) in h16.iter().zip(&back) {
        assert_eq!(h.to_f32().to_bits(), b.to_bits());
    }
}

#[test]
fn streaming_stores_write_every_element_wherever_the_slice_starts() {
    let src64 = values(300, 48);
    let src32: Vec<f32> = src64.iter().map(|&x| x as f32).collect();
    for start in 0..9 {
        for len in [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 64, 100, 291] {
            let mut out = vec![MaybeUninit::new(-9.0f32); 300];
            f32::stream(&mut out[start..start + len], &src32[..len]);
            let mut out64 = vec![MaybeUninit::new(-9.0f64); 300];
            f64::stream(&mut out64[start..start + len], &src64[..len]);
            fence();
            for i in 0..300 {
                let inside = (start..start + len).contains(&i);
                // SAFETY: every element was initialized above.
                let (o, o64) = unsafe { (out[i].assume_init(), out64[i].assume_init()) };
                let (e, e64) = if inside {
                    (src32[i - start], src64[i - start])
                } else {
                    (-9.0, -9.0)
                };
                assert_eq!((o, o64), (e, e64), "start {start}, len {len}, element {i}");
            }
        }
    }
}
