//! Element types, accumulation types and summations.
//!
//! Sums use eight independent lanes (vectorizable and more accurate than one running sum) over
//! leaves of 256 elements, the leaves combined pairwise, in the accumulation type: f32 for f16,
//! bf16 and f32, f64 for f64. A leaf is read once, front to back, into [`Acc::CHAINS`]
//! independent chains of eight lanes (so that the adder's latency is hidden), merged at its end:
//! the order of every addition is fixed by this structure, not by the vector width, and one
//! sequential stream per array is what the hardware prefetchers follow best (four leaves summed
//! at once, interleaved, with software prefetches, measured slower: see the README's
//! benchmarks). Half types are widened (exactly) a group of leaves at a time into buffers on
//! the stack and summed as f32.
//!
//! Size: about 900 lines because the summations (contiguous, strided, and the backward's paired
//! sums, each portable and with AVX) share one lane and leaf structure with the element types
//! they accumulate: they must change together, since the order of additions has to stay the
//! same in all of them.

use std::mem::MaybeUninit;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// The accumulation type: f32 or f64 (sealed; an implementation detail of [`Real`]).
#[doc(hidden)]
pub trait Acc:
    private::Sealed
    + Copy
    + Send
    + Sync
    + PartialOrd
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::ops::Div<Output = Self>
{
    const ZERO: Self;
    /// The independent chains of additions a leaf is summed in: chunk `c` of eight elements
    /// goes to chain `c % CHAINS` (see [`lanes`]). 4 for f32 (four AVX registers), 2 for f64
    /// (two pairs of registers).
    const CHAINS: usize;
    /// Below this, a sum of squares may have lost squares to underflow (and the norm bits).
    const TINY: Self;
    /// The smallest normal value.
    const MIN_NORMAL: Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;
    fn from_f64(x: f64) -> Self;
    /// `out[i] = src[i]` with non-temporal (streaming) stores where the CPU has them: the
    /// written lines bypass the caches and are not read from memory first. The stores become
    /// visible to other threads after [`fence`].
    fn stream(out: &mut [MaybeUninit<Self>], src: &[Self]);
    /// The eight lanes of each of `G` runs of `a * b` (`[run][lane]`): run `q` is the `len`
    /// elements (at most a leaf) from `q * stride`, summed over its whole chunks of eight as
    /// [`lanes`] sums them (chains, then merged): what [`leaf`] sums before combining its lanes
    /// (the remainder of fewer than eight is left to the caller). The runs are read one after
    /// the other.
    fn strided_lanes<const G: usize>(
        a: &[Self],
        b: &[Self],
        stride: usize,
        len: usize,
    ) -> [[Self; 8]; G];
    /// The lanes of `a * a` and of `b * a` over `G` runs, in one pass.
    fn sq_dot_strided_lanes<const G: usize>(
        a: &[Self],
        b: &[Self],
        stride: usize,
        len: usize,
    ) -> ([[Self; 8]; G], [[Self; 8]; G]);
    /// [`Acc::strided_lanes`] of `G` full leaves, one after the other.
    #[inline(always)]
    fn leaf_lanes<const G: usize>(a: &[Self], b: &[Self]) -> [[Self; 8]; G] {
        Self::strided_lanes::<G>(a, b, LEAF, LEAF)
    }
    /// The eight lanes of the whole chunks of eight of `a * b` (at most a leaf), as the
    /// portable [`lanes`] defines them; the remainder is left out.
    fn lanes(a: &[Self], b: &[Self]) -> [Self; 8];
    /// [`Acc::sq_dot_strided_lanes`] of `G` full leaves.
    #[inline(always)]
    fn sq_dot_leaf_lanes<const G: usize>(
        a: &[Self],
        b: &[Self],
    ) -> ([[Self; 8]; G], [[Self; 8]; G]) {
        Self::sq_dot_strided_lanes::<G>(a, b, LEAF, LEAF)
    }
}

/// Run `q` of `x`: `len` elements from `q * stride`.
#[inline(always)]
fn run_of<A>(x: &[A], q: usize, stride: usize, len: usize) -> &[A] {
    &x[q * stride..][..len]
}

/// [`Acc::strided_lanes`] in portable code: one run after the other.
#[inline(always)]
fn strided_lanes_portable<A: Acc, const G: usize>(
    a: &[A],
    b: &[A],
    stride: usize,
    len: usize,
) -> [[A; 8]; G] {
    core::array::from_fn(|q| lanes(run_of(a, q, stride, len), run_of(b, q, stride, len)))
}

/// [`Acc::sq_dot_strided_lanes`] in portable code.
#[inline(always)]
fn sq_dot_strided_lanes_portable<A: Acc, const G: usize>(
    a: &[A],
    b: &[A],
    stride: usize,
    len: usize,
) -> ([[A; 8]; G], [[A; 8]; G]) {
    let (ra, rb) = (|q| run_of(a, q, stride, len), |q| run_of(b, q, stride, len));
    (
        core::array::from_fn(|q| lanes(ra(q), ra(q))),
        core::array::from_fn(|q| lanes(rb(q), ra(q))),
    )
}

#[cfg(target_arch = "x86_64")]
#[path = "sums_x86.rs"]
mod x86;
#[cfg(target_arch = "x86_64")]
use x86::{avx, sse};

/// Whether the AVX group sums can run (detected once, at run time).
#[inline(always)]
fn has_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

macro_rules! acc {
    ($($t:ty => $tiny:expr, $chains:expr, $stream_avx:ident, $stream_sse:ident, $group:ident, $sq_dot:ident, $one:ident),*) => {$(
        // `merge_chains` and the AVX code know two and four chains only.
        const _: () = assert!($chains == 2 || $chains == 4);
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const CHAINS: usize = $chains;
            const TINY: Self = $tiny;
            const MIN_NORMAL: Self = <$t>::MIN_POSITIVE;
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
            #[inline(always)]
            fn stream(out: &mut [MaybeUninit<Self>], src: &[Self]) {
                assert_eq!(out.len(), src.len());
                #[cfg(target_arch = "x86_64")]
                {
                    // Up to the first 32-byte boundary (all of it if there is none), plainly;
                    // then whole 32-byte lines of the output streamed; the rest plainly.
                    let head = out.as_ptr().align_offset(32).min(out.len());
                    let per_line = 32 / size_of::<Self>();
                    let body = head + (out.len() - head) / per_line * per_line;
                    for (o, &s) in out[..head].iter_mut().zip(&src[..head]) {
                        o.write(s);
                    }
                    let (o, s) = (&mut out[head..body], &src[head..body]);
                    if has_avx() {
                        // SAFETY: the CPU supports AVX (checked just above); `o` starts on a
                        // 32-byte boundary and holds whole lines of 32 bytes; `s` is as long.
                        unsafe { avx::$stream_avx(o, s) };
                    } else {
                        // SAFETY: as above, without AVX: SSE2 is part of the x86_64 baseline.
                        unsafe { sse::$stream_sse(o, s) };
                    }
                    for (o, &s) in out[body..].iter_mut().zip(&src[body..]) {
                        o.write(s);
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                for (o, &s) in out.iter_mut().zip(src) {
                    o.write(s);
                }
            }
            #[inline(always)]
            fn strided_lanes<const G: usize>(
                a: &[Self],
                b: &[Self],
                stride: usize,
                len: usize,
            ) -> [[Self; 8]; G] {
                assert!(G > 0 && a.len().min(b.len()) >= (G - 1) * stride + len);
                #[cfg(target_arch = "x86_64")]
                if has_avx() {
                    // SAFETY: the CPU supports AVX, checked just above, and the lengths were.
                    return unsafe { avx::$group::<G>(a, b, stride, len) };
                }
                strided_lanes_portable(a, b, stride, len)
            }
            #[inline(always)]
            fn lanes(a: &[Self], b: &[Self]) -> [Self; 8] {
                assert!(a.len() <= LEAF && b.len() == a.len());
                #[cfg(target_arch = "x86_64")]
                if has_avx() {
                    // SAFETY: the CPU supports AVX, checked just above, and the lengths were.
                    return unsafe { avx::$one(a, b) };
                }
                lanes(a, b)
            }
            #[inline(always)]
            fn sq_dot_strided_lanes<const G: usize>(
                a: &[Self],
                b: &[Self],
                stride: usize,
                len: usize,
            ) -> ([[Self; 8]; G], [[Self; 8]; G]) {
                assert!(G > 0 && a.len().min(b.len()) >= (G - 1) * stride + len);
                #[cfg(target_arch = "x86_64")]
                if has_avx() {
                    // SAFETY: the CPU supports AVX, checked just above, and the lengths were.
                    return unsafe { avx::$sq_dot::<G>(a, b, stride, len) };
                }
                sq_dot_strided_lanes_portable(a, b, stride, len)
            }
        }
    )*};
}
// Squares below the smallest normal number (1.2e-38 in f32, 2.2e-308 in f64) lose bits; in a
// sum above TINY they are below the type's precision.
acc!(
    f32 => 1e-30, 4, stream_f32, stream_f32, strided_lanes_f32, sq_dot_strided_lanes_f32, lanes_f32,
    f64 => 1e-280, 2, stream_f64, stream_f64, strided_lanes_f64, sq_dot_strided_lanes_f64, lanes_f64
);

/// Makes the streaming stores of [`Acc::stream`] made so far by this thread visible to others
/// (before the results are handed over); cheap when there are none.
#[inline(always)]
pub(super) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` only orders this thread's stores; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

/// A storage element the kernels handle (f32, f64, f16, bf16; sealed) and the type it is
/// computed in (f32 for the half types, its own type otherwise).
pub trait Real: Copy + Send + Sync + bytemuck::Pod + private::Sealed {
    /// The type sums are accumulated in.
    #[doc(hidden)]
    type A: Acc;
    /// The value in the computation type (exact).
    #[doc(hidden)]
    fn up(self) -> Self::A;
    /// A computed value rounded to this type.
    #[doc(hidden)]
    fn down(a: Self::A) -> Self;
    /// The value as `f64` (exact).
    fn to_f64(self) -> f64;
    /// The elements as their computation type, when they are of it (f32, f64): no conversion.
    #[doc(hidden)]
    fn as_acc(xs: &[Self]) -> Option<&[Self::A]>;
    /// The same for an output.
    #[doc(hidden)]
    fn as_acc_out(out: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<Self::A>]>;
    /// The same for elements updated in place.
    #[doc(hidden)]
    fn as_acc_mut(xs: &mut [Self]) -> Option<&mut [Self::A]>;
    /// `out[i] = up(xs[i])` (exact), over equal lengths.
    #[doc(hidden)]
    fn up_slice(xs: &[Self], out: &mut [Self::A]);
    /// `out[i] = down(xs[i])`, over equal lengths.
    #[doc(hidden)]
    fn down_slice(xs: &[Self::A], out: &mut [MaybeUninit<Self>]);
}

/// Only this crate implements [`Real`] and [`Acc`].
mod private {
    /// The seal.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
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
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn as_acc(xs: &[Self]) -> Option<&[$t]> {
                Some(xs)
            }
            #[inline(always)]
            fn as_acc_out(out: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<$t>]> {
                Some(out)
            }
            #[inline(always)]
            fn as_acc_mut(xs: &mut [Self]) -> Option<&mut [$t]> {
                Some(xs)
            }
            #[inline(always)]
            fn up_slice(xs: &[Self], out: &mut [$t]) {
                out.copy_from_slice(xs);
            }
            #[inline(always)]
            fn down_slice(xs: &[$t], out: &mut [MaybeUninit<Self>]) {
                assert_eq!(xs.len(), out.len());
                for (o, &x) in out.iter_mut().zip(xs) {
                    o.write(x);
                }
            }
        }
    )*};
}
real_in_itself!(f32, f64);

/// The half types are computed in f32 and rounded once; slices are converted with the CPU's
/// conversion instructions where it has them (`half`'s slice conversions, which give the same
/// bits as the conversion of one element).
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
            #[inline(always)]
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            fn as_acc(_: &[Self]) -> Option<&[f32]> {
                None
            }
            fn as_acc_out(_: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
                None
            }
            fn as_acc_mut(_: &mut [Self]) -> Option<&mut [f32]> {
                None
            }
            #[inline(always)]
            fn up_slice(xs: &[Self], out: &mut [f32]) {
                xs.convert_to_f32_slice(out);
            }
            #[inline(always)]
            fn down_slice(xs: &[f32], out: &mut [MaybeUninit<Self>]) {
                assert_eq!(xs.len(), out.len());
                let mut buf = [<$t>::ZERO; BLOCK];
                for (x, o) in xs.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
                    let b = &mut buf[..x.len()];
                    b.convert_from_f32_slice(x);
                    for (o, &h) in o.iter_mut().zip(b.iter()) {
                        o.write(h);
                    }
                }
            }
        }
    )*};
}
real_in_f32!(f16, bf16);

/// Leaves of the pairwise summation: eight lanes of 32 elements.
pub(super) const LEAF: usize = 256;

/// Leaves summed by one call of the leaf sums (one after the other).
const GROUP: usize = 4;

/// Elements converted or computed at once through a buffer on the stack: a group of leaves.
pub(super) const BLOCK: usize = GROUP * LEAF;

/// The binary counter that combines leaf sums pairwise, in order: `stack[k]` holds the sum of
/// `2^level[k]` leaves, and equal levels merge, as in binary addition.
struct Pairwise<A> {
    stack: [(A, u32); 48],
    top: usize,
}

impl<A: Acc> Pairwise<A> {
    #[inline(always)]
    fn new() -> Self {
        Self {
            stack: [(A::ZERO, 0); 48],
            top: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, mut s: A) {
        let mut level = 0;
        while self.top > 0 && self.stack[self.top - 1].1 == level {
            s = self.stack[self.top - 1].0 + s;
            self.top -= 1;
            level += 1;
        }
        self.stack[self.top] = (s, level);
        self.top += 1;
    }

    /// The total (of at least one leaf).
    #[inline(always)]
    fn finish(self) -> A {
        let mut s = self.stack[self.top - 1].0;
        for k in (0..self.top - 1).rev() {
            s = self.stack[k].0 + s;
        }
        s
    }
}

/// `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`: a leaf's eight lanes combined.
#[inline(always)]
fn combine<A: Acc>(l: [A; 8]) -> A {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// The eight lanes of a leaf's whole chunks of eight. Chunk `c` (elements `8c..8c + 8`) is
/// added to chain `c % A::CHAINS`, lane by lane, in order of `c`; the chains are then merged
/// lane by lane as [`merge_chains`] does. One pass over the leaf, front to back, with
/// independent chains of additions: what the AVX code does, register for chain.
#[inline(always)]
fn lanes<A: Acc>(a: &[A], b: &[A]) -> [A; 8] {
    let mut chains = [[A::ZERO; 8]; 4];
    for (c, (x, y)) in a.chunks_exact(8).zip(b.chunks_exact(8)).enumerate() {
        let chain = &mut chains[c % A::CHAINS];
        for l in 0..8 {
            chain[l] = chain[l] + x[l] * y[l];
        }
    }
    merge_chains::<A>(&chains)
}

/// The chains of [`lanes`] merged lane by lane: `(c0 + c2) + (c1 + c3)` with four chains,
/// `c0 + c1` with two.
#[inline(always)]
fn merge_chains<A: Acc>(c: &[[A; 8]; 4]) -> [A; 8] {
    core::array::from_fn(|l| {
        if A::CHAINS == 4 {
            (c[0][l] + c[2][l]) + (c[1][l] + c[3][l])
        } else {
            c[0][l] + c[1][l]
        }
    })
}

/// One leaf (at most [`LEAF`] elements): `sum(a[i] * b[i])` over eight lanes, then the
/// remainder of fewer than eight elements in order.
#[inline(always)]
fn leaf<A: Acc>(a: &[A], b: &[A]) -> A {
    let mut s = combine(A::lanes(a, b));
    let whole = a.len() / 8 * 8;
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        s = s + *x * *y;
    }
    s
}

/// Pushes the leaf sums of `a * b` to `p`: groups of [`GROUP`] full leaves at once, then the
/// remaining full leaves at once, then the last, partial leaf.
#[inline(always)]
fn push_dot<A: Acc>(p: &mut Pairwise<A>, a: &[A], b: &[A]) {
    let full = a.len() / BLOCK * BLOCK;
    for (ga, gb) in a[..full]
        .chunks_exact(BLOCK)
        .zip(b[..full].chunks_exact(BLOCK))
    {
        for l in A::leaf_lanes::<GROUP>(ga, gb) {
            p.push(combine(l));
        }
    }
    let (a, b) = (&a[full..], &b[full..]);
    let whole = a.len() / LEAF * LEAF;
    let (wa, wb) = (&a[..whole], &b[..whole]);
    match whole / LEAF {
        0 => {}
        1 => A::leaf_lanes::<1>(wa, wb)
            .into_iter()
            .for_each(|l| p.push(combine(l))),
        2 => A::leaf_lanes::<2>(wa, wb)
            .into_iter()
            .for_each(|l| p.push(combine(l))),
        _ => A::leaf_lanes::<3>(wa, wb)
            .into_iter()
            .for_each(|l| p.push(combine(l))),
    }
    if whole < a.len() {
        p.push(leaf(&a[whole..], &b[whole..]));
    }
}

/// Pushes the leaf sums of `a * a` and `b * a` to `sq` and `dt`, as [`push_dot`] cuts them.
#[inline(always)]
fn push_sq_dot<A: Acc>(sq: &mut Pairwise<A>, dt: &mut Pairwise<A>, a: &[A], b: &[A]) {
    let mut push = |(s, d): (&[[A; 8]], &[[A; 8]])| {
        for (s, d) in s.iter().zip(d) {
            sq.push(combine(*s));
            dt.push(combine(*d));
        }
    };
    let full = a.len() / BLOCK * BLOCK;
    for (ga, gb) in a[..full]
        .chunks_exact(BLOCK)
        .zip(b[..full].chunks_exact(BLOCK))
    {
        let (s, d) = A::sq_dot_leaf_lanes::<GROUP>(ga, gb);
        push((&s, &d));
    }
    let (a, b) = (&a[full..], &b[full..]);
    let whole = a.len() / LEAF * LEAF;
    let (wa, wb) = (&a[..whole], &b[..whole]);
    match whole / LEAF {
        0 => {}
        1 => {
            let (s, d) = A::sq_dot_leaf_lanes::<1>(wa, wb);
            push((&s, &d));
        }
        2 => {
            let (s, d) = A::sq_dot_leaf_lanes::<2>(wa, wb);
            push((&s, &d));
        }
        _ => {
            let (s, d) = A::sq_dot_leaf_lanes::<3>(wa, wb);
            push((&s, &d));
        }
    }
    if whole < a.len() {
        let (ra, rb) = (&a[whole..], &b[whole..]);
        sq.push(leaf(ra, ra));
        dt.push(leaf(rb, ra));
    }
}

/// `sum(a[i] * b[i])` by pairwise summation over leaves of eight independent lanes: vectorizable,
/// and its rounding error grows with the logarithm of the length, not the length. Leaves are
/// combined with a binary counter (no recursion), so the whole function inlines into the AVX2
/// clones of the kernels.
#[inline(always)]
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> T::A {
    assert_eq!(a.len(), b.len());
    if let (Some(a), Some(b)) = (T::as_acc(a), T::as_acc(b)) {
        if a.len() <= LEAF {
            return leaf(a, b);
        }
        let mut p = Pairwise::new();
        push_dot(&mut p, a, b);
        return p.finish();
    }
    // Half types: a group of leaves at a time, widened exactly, then as f32.
    let (mut ba, mut bb) = ([T::A::ZERO; BLOCK], [T::A::ZERO; BLOCK]);
    let mut p = Pairwise::new();
    for (ca, cb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let (wa, wb) = (&mut ba[..ca.len()], &mut bb[..ca.len()]);
        T::up_slice(ca, wa);
        T::up_slice(cb, wb);
        if a.len() <= LEAF {
            return leaf(wa, wb);
        }
        push_dot(&mut p, wa, wb);
    }
    if a.is_empty() { T::A::ZERO } else { p.finish() }
}

/// `(dot(a, a), dot(b, a))` in one pass over both, to the same bits.
#[inline(always)]
pub(super) fn sq_dot<T: Real>(a: &[T], b: &[T]) -> (T::A, T::A) {
    assert_eq!(a.len(), b.len());
    if a.len() <= LEAF {
        return (dot(a, a), dot(b, a));
    }
    let (mut sq, mut dt) = (Pairwise::new(), Pairwise::new());
    if let (Some(a), Some(b)) = (T::as_acc(a), T::as_acc(b)) {
        push_sq_dot(&mut sq, &mut dt, a, b);
    } else {
        let (mut ba, mut bb) = ([T::A::ZERO; BLOCK], [T::A::ZERO; BLOCK]);
        for (ca, cb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
            let (wa, wb) = (&mut ba[..ca.len()], &mut bb[..ca.len()]);
            T::up_slice(ca, wa);
            T::up_slice(cb, wb);
            push_sq_dot(&mut sq, &mut dt, wa, wb);
        }
    }
    (sq.finish(), dt.finish())
}

/// Slices of at most a leaf summed [`SHORT`] at a time, one after the other, each slice's sum
/// the bits of [`dot`] on it.
pub(super) const SHORT: usize = 4;

/// [`dot`] of each of the [`SHORT`] consecutive slices of `len` elements (at most [`LEAF`]) in
/// `a` and `b`, summed at once.
#[inline(always)]
pub(super) fn dot_short<T: Real>(a: &[T], b: &[T], len: usize) -> [T::A; SHORT] {
    assert!(len <= LEAF && a.len() == SHORT * len && b.len() == a.len());
    let sums = |a: &[T::A], b: &[T::A]| {
        let lanes = T::A::strided_lanes::<SHORT>(a, b, len, len);
        let whole = len / 8 * 8;
        core::array::from_fn(|q| {
            let mut s = combine(lanes[q]);
            for i in q * len + whole..(q + 1) * len {
                s = s + a[i] * b[i];
            }
            s
        })
    };
    if let (Some(a), Some(b)) = (T::as_acc(a), T::as_acc(b)) {
        return sums(a, b);
    }
    let (mut ba, mut bb) = ([T::A::ZERO; BLOCK], [T::A::ZERO; BLOCK]);
    let (wa, wb) = (&mut ba[..a.len()], &mut bb[..a.len()]);
    T::up_slice(a, wa);
    T::up_slice(b, wb);
    sums(wa, wb)
}

/// [`sq_dot`] of each of the [`SHORT`] consecutive slices of `len` elements (at most [`LEAF`])
/// in `a` and `b`, summed at once.
#[inline(always)]
pub(super) fn sq_dot_short<T: Real>(
    a: &[T],
    b: &[T],
    len: usize,
) -> ([T::A; SHORT], [T::A; SHORT]) {
    assert!(len <= LEAF && a.len() == SHORT * len && b.len() == a.len());
    let sums = |a: &[T::A], b: &[T::A]| {
        let (sq, dt) = T::A::sq_dot_strided_lanes::<SHORT>(a, b, len, len);
        let whole = len / 8 * 8;
        let mut out = ([T::A::ZERO; SHORT], [T::A::ZERO; SHORT]);
        for q in 0..SHORT {
            let (mut s, mut d) = (combine(sq[q]), combine(dt[q]));
            for i in q * len + whole..(q + 1) * len {
                s = s + a[i] * a[i];
                d = d + b[i] * a[i];
            }
            (out.0[q], out.1[q]) = (s, d);
        }
        out
    };
    if let (Some(a), Some(b)) = (T::as_acc(a), T::as_acc(b)) {
        return sums(a, b);
    }
    let (mut ba, mut bb) = ([T::A::ZERO; BLOCK], [T::A::ZERO; BLOCK]);
    let (wa, wb) = (&mut ba[..a.len()], &mut bb[..a.len()]);
    T::up_slice(a, wa);
    T::up_slice(b, wb);
    sums(wa, wb)
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
    match scaled_norm(elems) {
        Scaled::Finite { m, r } => m * r,
        Scaled::Zero => T::A::ZERO,
        Scaled::NotFinite(a) => a,
    }
}

/// A slice's norm as `m * r`, `m = max |x|` and `r = sqrt(sum((x / m)^2))` (`1 <= r <=
/// sqrt(len)`): both factors representable whatever the slice, so the direction `x / (m r)` is
/// exact even where the product `m r` is not representable (beyond the type's range) or loses
/// bits (subnormal).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scaled<A> {
    /// A slice with a non-zero finite element.
    Finite {
        /// The largest magnitude.
        m: A,
        /// The norm over `m`.
        r: A,
    },
    /// Every element zero.
    Zero,
    /// NaN or an infinity among the elements: the norm (infinity or NaN).
    NotFinite(A),
}

/// The slice's norm in scaled form (see [`Scaled`]).
#[cold]
pub(super) fn scaled_norm<T: Real, I: Iterator<Item = T> + Clone>(elems: I) -> Scaled<T::A> {
    let mut m = T::A::ZERO;
    for x in elems.clone() {
        let a = x.up().abs();
        if !a.is_finite() {
            return Scaled::NotFinite(a + a);
        }
        if a > m {
            m = a;
        }
    }
    if m == T::A::ZERO {
        return Scaled::Zero;
    }
    let mut s = T::A::ZERO;
    for x in elems {
        let y = x.up() / m;
        s = s + y * y;
    }
    Scaled::Finite { m, r: s.sqrt() }
}

/// Whether the norm `m * r` of a slice is exact as a value of the computation type: finite, and
/// not subnormal (where it would carry fewer bits than the direction needs).
#[inline]
pub(super) fn exact_product<A: Acc>(m: A, r: A) -> bool {
    let n = m * r;
    n.is_finite() && n >= A::MIN_NORMAL
}

/// What a reduction accumulates per slice: one sum (`sum(a * b)`), or the pair
/// `(sum(a * a), sum(b * a))` that the backward needs, gathered in one pass over memory.
pub(super) trait Sums<T: Real>: Copy + Send + Sync {
    const ZERO: Self;
    /// How many sums: the arrays [`Sums::add_row`] accumulates into.
    const COUNT: usize;
    fn add(self, other: Self) -> Self;
    /// The sums over two contiguous runs.
    fn run(a: &[T], b: &[T]) -> Self;
    /// The sums' terms for one element of each.
    fn elem(a: T, b: T) -> Self;
    /// Adds a block of `rows` rows of `n` elements (the last-axis case: column `j` is slice
    /// `j`) to the column sums in `total`, kept as [`Sums::COUNT`] arrays of `n` one after the
    /// other: for each column, the rows' terms `elem(a, b)` summed in row order from zero, then
    /// that block sum added to the total, exactly as `s.add(elem(..))` row by row into a zeroed
    /// block would. Strips of columns are summed in registers, vectorized over the columns.
    fn add_block(total: &mut [T::A], a: &[T::A], b: &[T::A], n: usize, rows: usize);
    /// Column `j` of `cols` laid out as in [`Sums::add_block`].
    fn column(cols: &[T::A], n: usize, j: usize) -> Self;
}

/// Columns summed at once in [`Sums::add_block`]: 32 (four AVX registers of f32 per sum).
const STRIP: usize = 32;

/// Calls `f(j0, width)` for the strips of at most [`STRIP`] columns of `0..n`, in order: the
/// full strips with the constant width (so that `f`, inlined, has loops of a known length).
#[inline(always)]
fn for_strips(n: usize, mut f: impl FnMut(usize, usize)) {
    let full = n / STRIP * STRIP;
    for j0 in (0..full).step_by(STRIP) {
        f(j0, STRIP);
    }
    if full < n {
        f(full, n - full);
    }
}

/// `sum(a * b)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Dot<A>(pub(super) A);

/// `(sum(a * a), sum(b * a))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SqDot<A>(pub(super) A, pub(super) A);

impl<T: Real> Sums<T> for Dot<T::A> {
    const ZERO: Self = Dot(T::A::ZERO);
    const COUNT: usize = 1;
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
    #[inline(always)]
    fn add_block(total: &mut [T::A], a: &[T::A], b: &[T::A], n: usize, rows: usize) {
        for_strips(
            n,
            #[inline(always)]
            |j0, w| {
                let mut acc = [T::A::ZERO; STRIP];
                let acc = &mut acc[..w];
                for r in 0..rows {
                    let (x, y) = (&a[r * n + j0..][..w], &b[r * n + j0..][..w]);
                    for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
                        *s = *s + x * y;
                    }
                }
                for (t, &s) in total[j0..j0 + w].iter_mut().zip(acc.iter()) {
                    *t = *t + s;
                }
            },
        );
    }
    fn column(cols: &[T::A], _: usize, j: usize) -> Self {
        Dot(cols[j])
    }
}

impl<T: Real> Sums<T> for SqDot<T::A> {
    const ZERO: Self = SqDot(T::A::ZERO, T::A::ZERO);
    const COUNT: usize = 2;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        SqDot(self.0 + o.0, self.1 + o.1)
    }
    #[inline(always)]
    fn run(a: &[T], b: &[T]) -> Self {
        let (s, d) = sq_dot(a, b);
        SqDot(s, d)
    }
    #[inline(always)]
    fn elem(a: T, b: T) -> Self {
        let x = a.up();
        SqDot(x * x, b.up() * x)
    }
    #[inline(always)]
    fn add_block(total: &mut [T::A], a: &[T::A], b: &[T::A], n: usize, rows: usize) {
        for_strips(
            n,
            #[inline(always)]
            |j0, w| {
                let (mut sq, mut dt) = ([T::A::ZERO; STRIP], [T::A::ZERO; STRIP]);
                let (sq, dt) = (&mut sq[..w], &mut dt[..w]);
                for r in 0..rows {
                    let (x, y) = (&a[r * n + j0..][..w], &b[r * n + j0..][..w]);
                    for ((s, d), (&x, &y)) in sq.iter_mut().zip(dt.iter_mut()).zip(x.iter().zip(y))
                    {
                        *s = *s + x * x;
                        *d = *d + y * x;
                    }
                }
                for (t, &s) in total[j0..j0 + w].iter_mut().zip(sq.iter()) {
                    *t = *t + s;
                }
                for (t, &d) in total[n + j0..n + j0 + w].iter_mut().zip(dt.iter()) {
                    *t = *t + d;
                }
            },
        );
    }
    fn column(cols: &[T::A], n: usize, j: usize) -> Self {
        SqDot(cols[j], cols[n + j])
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
#[path = "sums_tests.rs"]
mod tests;
