//! Element types, accumulation types and summations.
//!
//! Sums use eight independent accumulators (vectorizable and more accurate than one running sum)
//! combined pairwise, in the accumulation type: f32 for f16, bf16 and f32, f64 for f64.

use burn::tensor::{bf16, f16};

/// The accumulation type: f32 or f64.
pub(crate) trait Acc:
    Copy
    + Send
    + Sync
    + PartialOrd
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::ops::Div<Output = Self>
{
    const ZERO: Self;
    /// Below this, a sum of squares may have lost squares to underflow (and the norm bits).
    const TINY: Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;
    fn from_f64(x: f64) -> Self;
}

macro_rules! acc {
    ($($t:ty => $tiny:expr),*) => {$(
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const TINY: Self = $tiny;
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn from_f64(x: f64) -> Self {
                x as $t
            }
        }
    )*};
}
// Squares below the smallest normal number (1.2e-38 in f32, 2.2e-308 in f64) lose bits; in a
// sum above TINY they are below the type's precision.
acc!(f32 => 1e-30, f64 => 1e-280);

/// A storage element and the type it is computed in.
pub(crate) trait Real: Copy + Send + Sync + bytemuck::Pod + burn::tensor::Element {
    type A: Acc;
    fn up(self) -> Self::A;
    fn down(a: Self::A) -> Self;
}

/// f32 and f64 are computed in their own type.
macro_rules! real_in_itself {
    ($($t:ty),*) => {$(
        impl Real for $t {
            type A = $t;
            #[inline(always)]
            fn up(self) -> $t {
                self
            }
            #[inline(always)]
            fn down(a: $t) -> Self {
                a
            }
        }
    )*};
}
real_in_itself!(f32, f64);

/// The half types are computed in f32 and rounded once.
macro_rules! real_in_f32 {
    ($($t:ty),*) => {$(
        impl Real for $t {
            type A = f32;
            #[inline(always)]
            fn up(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn down(a: f32) -> Self {
                <$t>::from_f32(a)
            }
        }
    )*};
}
real_in_f32!(f16, bf16);

/// Leaves of the pairwise summation: eight lanes of 32 elements.
pub(super) const LEAF: usize = 256;

/// `sum(a[i] * b[i])` by pairwise summation over leaves of eight independent lanes: vectorizable,
/// and its rounding error grows with the logarithm of the length, not the length. Leaves are
/// combined with a binary counter (no recursion), so the whole function inlines into the AVX2
/// clones of the kernels.
#[inline(always)]
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> T::A {
    if a.len() <= LEAF {
        return dot_leaf(a, b);
    }
    // stack[k] holds the sum of 2^level[k] leaves; equal levels merge, as in binary addition.
    let mut stack = [(T::A::ZERO, 0u32); 48];
    let mut top = 0;
    for (ca, cb) in a.chunks(LEAF).zip(b.chunks(LEAF)) {
        let mut s = dot_leaf(ca, cb);
        let mut level = 0;
        while top > 0 && stack[top - 1].1 == level {
            s = stack[top - 1].0 + s;
            top -= 1;
            level += 1;
        }
        stack[top] = (s, level);
        top += 1;
    }
    let mut s = stack[top - 1].0;
    for k in (0..top - 1).rev() {
        s = stack[k].0 + s;
    }
    s
}

#[inline(always)]
fn dot_leaf<T: Real>(a: &[T], b: &[T]) -> T::A {
    let mut lanes = [T::A::ZERO; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            lanes[l] = lanes[l] + x[l].up() * y[l].up();
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s = s + x.up() * y.up();
    }
    s
}

/// `max(n, eps)`.
#[inline(always)]
pub(super) fn clamp_norm<A: Acc>(n: A, eps: A) -> A {
    if n < eps { eps } else { n }
}

/// The L2 norm of a slice from its plain sum of squares `sumsq`: `sqrt(sumsq)` where that is
/// exact, else the slice (its elements from `elems`) summed again scaled by its largest
/// magnitude, so that every finite slice has its finite norm. The plain path is the one
/// PyTorch takes (the same bits); the scaled one is taken only where PyTorch overflows to
/// infinity or underflows (to zero).
#[inline(always)]
pub(super) fn slice_norm<T: Real, I: Iterator<Item = T> + Clone>(
    sumsq: T::A,
    elems: impl FnOnce() -> I,
) -> T::A {
    if sumsq.is_finite() && sumsq >= T::A::TINY {
        return sumsq.sqrt();
    }
    rescaled_norm(elems())
}

/// `m * sqrt(sum((x / m)^2))` with `m = max |x|` (the norm, without overflow or underflow).
#[cold]
pub(super) fn rescaled_norm<T: Real, I: Iterator<Item = T> + Clone>(elems: I) -> T::A {
    let mut m = T::A::ZERO;
    for x in elems.clone() {
        let a = x.up().abs();
        if !a.is_finite() {
            return a + a; // NaN or infinity: the norm is not finite
        }
        if a > m {
            m = a;
        }
    }
    if m == T::A::ZERO {
        return m;
    }
    let mut s = T::A::ZERO;
    for x in elems {
        let y = x.up() / m;
        s = s + y * y;
    }
    m * s.sqrt()
}

/// What a reduction accumulates per slice: one sum (`sum(a * b)`), or the pair
/// `(sum(a * a), sum(b * a))` that the backward needs, gathered in one pass over memory.
pub(super) trait Sums<T: Real>: Copy + Send + Sync {
    const ZERO: Self;
    fn add(self, other: Self) -> Self;
    /// The sums over two contiguous runs.
    fn run(a: &[T], b: &[T]) -> Self;
    /// The sums' terms for one element of each.
    fn elem(a: T, b: T) -> Self;
}

/// `sum(a * b)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Dot<A>(pub(super) A);

/// `(sum(a * a), sum(b * a))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SqDot<A>(pub(super) A, pub(super) A);

impl<T: Real> Sums<T> for Dot<T::A> {
    const ZERO: Self = Dot(T::A::ZERO);
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Dot(self.0 + o.0)
    }
    #[inline(always)]
    fn run(a: &[T], b: &[T]) -> Self {
        Dot(dot(a, b))
    }
    #[inline(always)]
    fn elem(a: T, b: T) -> Self {
        Dot(a.up() * b.up())
    }
}

impl<T: Real> Sums<T> for SqDot<T::A> {
    const ZERO: Self = SqDot(T::A::ZERO, T::A::ZERO);
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        SqDot(self.0 + o.0, self.1 + o.1)
    }
    #[inline(always)]
    fn run(a: &[T], b: &[T]) -> Self {
        // The run is in cache after the first pass.
        SqDot(dot(a, a), dot(b, a))
    }
    #[inline(always)]
    fn elem(a: T, b: T) -> Self {
        let x = a.up();
        SqDot(x * x, b.up() * x)
    }
}

/// Pairwise sum of partial results.
pub(super) fn pairwise<T: Real, S: Sums<T>>(xs: &[S]) -> S {
    match xs.len() {
        0 => S::ZERO,
        1 => xs[0],
        len => pairwise::<T, S>(&xs[..len / 2]).add(pairwise::<T, S>(&xs[len / 2..])),
    }
}

/// Pairwise elementwise sum of partial vectors (all of one length).
pub(super) fn pairwise_vecs<T: Real, S: Sums<T>>(parts: &mut [Vec<S>]) -> Vec<S> {
    match parts.len() {
        0 => Vec::new(),
        1 => std::mem::take(&mut parts[0]),
        len => {
            let (lo, hi) = parts.split_at_mut(len / 2);
            let mut a = pairwise_vecs::<T, S>(lo);
            let b = pairwise_vecs::<T, S>(hi);
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.add(y);
            }
            a
        }
    }
}

#[cfg(test)]
mod tests {
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
}
