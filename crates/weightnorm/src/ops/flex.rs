//! Fused CPU kernels for the `Flex` backend.
//!
//! The tensor is viewed as `[outer, n, inner]` around the kept axis (see
//! [`NormAxis::split_shape`](crate::NormAxis::split_shape)): slice `j` is made of `outer`
//! contiguous runs of `inner` elements.
//!
//! - When `outer == 1` every slice is one contiguous block. Many slices: one rayon task per group
//!   of slices, each slice's norm and output computed while the slice is in cache, so the input
//!   is read from memory once. Few large slices (the whole tensor): a chunked parallel reduction,
//!   then a parallel write.
//! - Otherwise, rows of `n * inner` elements are split into fixed chunks; each chunk accumulates
//!   its own per-slice sums, combined in chunk order, then a parallel pass writes the output.
//!
//! Chunk boundaries never depend on the thread count, so results are bit-identical whatever the
//! size of the thread pool. Sums use eight independent accumulators (vectorizable and more
//! accurate than one running sum) in the accumulation type: f32 for f16/bf16 and f32, f64 for f64.

use std::mem::MaybeUninit;

use burn::backend::Bytes;
use burn::tensor::{DType, bf16, f16};
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;

use super::backend::{WeightNormBackend, composed_backward, composed_forward};

/// Runs `f` compiled for AVX2 when the CPU has it (detected once, at run time), else as built.
/// The kernels' summation order is fixed by their code, not by the vector width, and no fused
/// multiply-add is enabled, so both versions give bit-identical results.
macro_rules! simd {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { avx2(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

/// Elements per task in reductions and writes: big enough to amortize scheduling, small enough
/// to stay in L2 and to spread 4096x4096 over many threads.
const CHUNK: usize = 1 << 14;

impl WeightNormBackend for Flex {
    fn weight_norm_forward(
        v: FlexTensor,
        g: FlexTensor,
        keep: Option<usize>,
        eps: f64,
    ) -> FlexTensor {
        match v.dtype() {
            DType::F32 => forward::<f32>(&v, &g, keep, eps),
            DType::F64 => forward::<f64>(&v, &g, keep, eps),
            DType::F16 => forward::<f16>(&v, &g, keep, eps),
            DType::BF16 => forward::<bf16>(&v, &g, keep, eps),
            _ => composed_forward::<Flex>(v, g, keep, eps),
        }
    }

    fn weight_norm_backward(
        v: FlexTensor,
        g: FlexTensor,
        dw: FlexTensor,
        keep: Option<usize>,
        eps: f64,
    ) -> (FlexTensor, FlexTensor) {
        match v.dtype() {
            DType::F32 => backward::<f32>(&v, &g, &dw, keep, eps),
            DType::F64 => backward::<f64>(&v, &g, &dw, keep, eps),
            DType::F16 => backward::<f16>(&v, &g, &dw, keep, eps),
            DType::BF16 => backward::<bf16>(&v, &g, &dw, keep, eps),
            _ => composed_backward::<Flex>(v, g, dw, keep, eps),
        }
    }
}

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
    fn sqrt(self) -> Self;
    fn from_f64(x: f64) -> Self;
}

impl Acc for f32 {
    const ZERO: Self = 0.0;
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Acc for f64 {
    const ZERO: Self = 0.0;
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// A storage element and the type it is computed in.
pub(crate) trait Real: Copy + Send + Sync + bytemuck::Pod + burn::tensor::Element {
    type A: Acc;
    fn up(self) -> Self::A;
    fn down(a: Self::A) -> Self;
}

impl Real for f32 {
    type A = f32;
    #[inline(always)]
    fn up(self) -> f32 {
        self
    }
    #[inline(always)]
    fn down(a: f32) -> Self {
        a
    }
}

impl Real for f64 {
    type A = f64;
    #[inline(always)]
    fn up(self) -> f64 {
        self
    }
    #[inline(always)]
    fn down(a: f64) -> Self {
        a
    }
}

impl Real for f16 {
    type A = f32;
    #[inline(always)]
    fn up(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn down(a: f32) -> Self {
        f16::from_f32(a)
    }
}

impl Real for bf16 {
    type A = f32;
    #[inline(always)]
    fn up(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn down(a: f32) -> Self {
        bf16::from_f32(a)
    }
}

/// Leaves of the pairwise summation: eight lanes of 32 elements.
const LEAF: usize = 256;

/// `sum(a[i] * b[i])` by pairwise summation over leaves of eight independent lanes: vectorizable,
/// and its rounding error grows with the logarithm of the length, not the length. Leaves are
/// combined with a binary counter (no recursion), so the whole function inlines into the SIMD
/// clones below.
#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T::A {
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

/// What a reduction accumulates per slice: one sum (`sum(a * b)`), or the pair
/// `(sum(a * a), sum(b * a))` that the backward needs, gathered in one pass over memory.
trait Sums<T: Real>: Copy + Send + Sync {
    const ZERO: Self;
    fn add(self, other: Self) -> Self;
    /// The sums over two contiguous runs.
    fn run(a: &[T], b: &[T]) -> Self;
    /// The sums' terms for one element of each.
    fn elem(a: T, b: T) -> Self;
}

/// `sum(a * b)`.
#[derive(Clone, Copy)]
struct Dot<A>(A);

/// `(sum(a * a), sum(b * a))`.
#[derive(Clone, Copy)]
struct SqDot<A>(A, A);

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
fn pairwise<T: Real, S: Sums<T>>(xs: &[S]) -> S {
    match xs.len() {
        0 => S::ZERO,
        1 => xs[0],
        len => pairwise::<T, S>(&xs[..len / 2]).add(pairwise::<T, S>(&xs[len / 2..])),
    }
}

/// Pairwise elementwise sum of partial vectors (all of one length).
fn pairwise_vecs<T: Real, S: Sums<T>>(parts: &mut [Vec<S>]) -> Vec<S> {
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

/// Contiguous typed data of a Flex tensor (copied only when the tensor is a strided view).
fn contiguous<T: Real>(t: &FlexTensor) -> std::borrow::Cow<'_, [T]> {
    match t.as_slice::<T>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<T>().unwrap().to_vec()),
    }
}

fn tensor_from<T: Real>(data: Vec<T>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        T::dtype(),
    )
}

/// Fills a vector of `len` elements through `fill`, which must write every element.
fn filled<T: Send>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: `fill` writes all `len` elements (each kernel below covers its output exactly).
    unsafe { out.set_len(len) };
    out
}

/// Per-slice sums over the `[outer, n, inner]` view: for each slice `j`, the [`Sums`] of `a`
/// and `b` over the slice.
fn slice_sums<T: Real, S: Sums<T>>(a: &[T], b: &[T], [outer, n, inner]: [usize; 3]) -> Vec<S> {
    if n == 0 || inner == 0 || outer == 0 {
        return vec![S::ZERO; n];
    }
    if outer == 1 {
        if large_slices(n, inner) {
            // Few large slices: reduce each in fixed chunks, in parallel.
            return (0..n)
                .map(|j| {
                    let sa = &a[j * inner..(j + 1) * inner];
                    let sb = &b[j * inner..(j + 1) * inner];
                    let parts: Vec<S> = sa
                        .par_chunks(CHUNK)
                        .zip(sb.par_chunks(CHUNK))
                        .map(|(x, y)| simd!(S::run(x, y)))
                        .collect();
                    pairwise::<T, S>(&parts)
                })
                .collect();
        }
        let min_len = (CHUNK / inner).max(1);
        return a
            .par_chunks(inner)
            .zip(b.par_chunks(inner))
            .with_min_len(min_len)
            .map(|(x, y)| simd!(S::run(x, y)))
            .collect();
    }
    // Rows of n * inner elements. Each task takes a fixed group of rows and accumulates blocks
    // of 32 rows, adding each block to its total; the tasks' totals are combined pairwise.
    const BLOCK_ROWS: usize = 32;
    let row = n * inner;
    let rows_per_task = (CHUNK / row).clamp(BLOCK_ROWS / 2, 8 * BLOCK_ROWS);
    let mut partials: Vec<Vec<S>> = a
        .par_chunks(row * rows_per_task)
        .zip(b.par_chunks(row * rows_per_task))
        .map(|(xa, xb)| {
            let mut total = vec![S::ZERO; n];
            let mut block = vec![S::ZERO; n];
            for (ba, bb) in xa.chunks(row * BLOCK_ROWS).zip(xb.chunks(row * BLOCK_ROWS)) {
                block.fill(S::ZERO);
                for (ra, rb) in ba.chunks_exact(row).zip(bb.chunks_exact(row)) {
                    simd!(accumulate_row::<T, S>(&mut block, ra, rb, inner));
                }
                for (t, s) in total.iter_mut().zip(&block) {
                    *t = t.add(*s);
                }
            }
            total
        })
        .collect();
    pairwise_vecs::<T, S>(&mut partials)
}

/// Adds one row's terms to the per-slice sums.
#[inline(always)]
fn accumulate_row<T: Real, S: Sums<T>>(acc: &mut [S], ra: &[T], rb: &[T], inner: usize) {
    if inner == 1 {
        for ((s, &x), &y) in acc.iter_mut().zip(ra).zip(rb) {
            *s = s.add(S::elem(x, y));
        }
    } else {
        for (j, s) in acc.iter_mut().enumerate() {
            let r = j * inner..(j + 1) * inner;
            *s = s.add(S::run(&ra[r.clone()], &rb[r]));
        }
    }
}

/// Whether the slices are few and large enough to be reduced in parallel chunks each, rather
/// than one task per slice.
fn large_slices(n: usize, inner: usize) -> bool {
    inner >= CHUNK * 4 && n < 8
}

/// `max(sqrt(sumsq), eps)`.
#[inline]
fn norm_of<A: Acc>(sumsq: A, eps: A) -> A {
    let n = sumsq.sqrt();
    if n < eps { eps } else { n }
}

/// Calls `f(j, out_run, x_run, y_run)` for every contiguous run of the `[outer, n, inner]` view
/// (a run lies in one slice `j`), over fixed chunks of the flat arrays, in parallel. `f` must
/// write all of `out_run`. For `inner == 1` use [`rows_last_axis`].
fn for_each_run<T: Real>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    [_, n, inner]: [usize; 3],
    f: impl Fn(usize, &mut [MaybeUninit<T>], &[T], &[T]) + Sync,
) {
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(y.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, ((o, xs), ys))| {
            let start = c * CHUNK;
            let mut p = 0;
            while p < o.len() {
                let run = (start + p) / inner;
                let end = ((run + 1) * inner - start).min(o.len());
                f(run % n, &mut o[p..end], &xs[p..end], &ys[p..end]);
                p = end;
            }
        });
}

/// The kept axis is the last one (`inner == 1`, e.g. Burn's `[d_in, d_out]` Linear weight per
/// output unit): every row holds one element of each slice. Writes
/// `out[o, j] = x[o, j] * c0[j]` or, with `c1`, `c0[j] * y[o, j] - c1[j] * x[o, j]`, row by row
/// (vectorized over `j`).
fn rows_last_axis<T: Real>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    n: usize,
    c0: &[T::A],
    c1: Option<&[T::A]>,
) {
    if out.is_empty() {
        return;
    }
    let rows_per_task = (CHUNK / n).max(1);
    out.par_chunks_mut(n * rows_per_task)
        .zip(x.par_chunks(n * rows_per_task))
        .zip(y.par_chunks(n * rows_per_task))
        .for_each(|((o, xs), ys)| {
            for ((o, xs), ys) in o.chunks_mut(n).zip(xs.chunks(n)).zip(ys.chunks(n)) {
                match c1 {
                    None => simd!(scale_cols(o, xs, c0)),
                    Some(c1) => simd!(axpby_cols(o, ys, xs, c0, c1)),
                }
            }
        });
}

#[inline(always)]
fn scale_cols<T: Real>(out: &mut [MaybeUninit<T>], x: &[T], c: &[T::A]) {
    for ((o, &xv), &cv) in out.iter_mut().zip(x).zip(c) {
        o.write(T::down(xv.up() * cv));
    }
}

#[inline(always)]
fn axpby_cols<T: Real>(out: &mut [MaybeUninit<T>], d: &[T], x: &[T], a: &[T::A], b: &[T::A]) {
    for ((o, (&dv, &xv)), (&av, &bv)) in out.iter_mut().zip(d.iter().zip(x)).zip(a.iter().zip(b)) {
        o.write(T::down(av * dv.up() - bv * xv.up()));
    }
}

/// `out[i] = x[i] * factor`.
#[inline(always)]
fn scale_into<T: Real>(out: &mut [MaybeUninit<T>], x: &[T], factor: T::A) {
    for (o, &xv) in out.iter_mut().zip(x) {
        o.write(T::down(xv.up() * factor));
    }
}

/// `out[i] = a * d[i] - b * x[i]`.
#[inline(always)]
fn axpby_into<T: Real>(out: &mut [MaybeUninit<T>], d: &[T], x: &[T], a: T::A, b: T::A) {
    for ((o, &dv), &xv) in out.iter_mut().zip(d).zip(x) {
        o.write(T::down(a * dv.up() - b * xv.up()));
    }
}

/// One slice of the single-pass forward: its norm, then its output.
#[inline(always)]
fn forward_slice<T: Real>(o: &mut [MaybeUninit<T>], x: &[T], gj: T, eps: T::A) {
    scale_into(o, x, gj.up() / norm_of(dot(x, x), eps));
}

fn forward<T: Real>(v: &FlexTensor, g: &FlexTensor, keep: Option<usize>, eps: f64) -> FlexTensor {
    let shape = v.layout().shape().clone();
    let split = crate::NormAxis::from(keep).split_shape(&shape);
    let out = forward_slices::<T>(&contiguous::<T>(v), &contiguous::<T>(g), split, eps);
    tensor_from(out, shape)
}

/// The fused forward on contiguous data viewed as `[outer, n, inner]`.
fn forward_slices<T: Real>(vs: &[T], gs: &[T], split: [usize; 3], eps: f64) -> Vec<T> {
    let eps = T::A::from_f64(eps);
    let [outer, n, inner] = split;

    // One contiguous block per slice, many slices: norm and output in one visit of each slice.
    if outer == 1 && !large_slices(n, inner) && inner > 0 {
        let min_len = (CHUNK / inner).max(1);
        let out = filled::<T>(vs.len(), |out| {
            out.par_chunks_mut(inner)
                .zip(vs.par_chunks(inner))
                .zip(gs.par_iter())
                .with_min_len(min_len)
                .for_each(|((o, x), &gj)| simd!(forward_slice(o, x, gj, eps)));
        });
        return out;
    }

    let sumsq = slice_sums::<T, Dot<T::A>>(vs, vs, split);
    let factors: Vec<T::A> = sumsq
        .iter()
        .zip(gs.iter())
        .map(|(s, &gj)| gj.up() / norm_of(s.0, eps))
        .collect();
    filled::<T>(vs.len(), |out| {
        if inner == 1 {
            rows_last_axis::<T>(out, vs, vs, n, &factors, None);
        } else {
            for_each_run::<T>(out, vs, vs, split, |j, o, x, _| {
                simd!(scale_into(o, x, factors[j]))
            });
        }
    })
}

fn backward<T: Real>(
    v: &FlexTensor,
    g: &FlexTensor,
    dw: &FlexTensor,
    keep: Option<usize>,
    eps: f64,
) -> (FlexTensor, FlexTensor) {
    let shape = v.layout().shape().clone();
    let g_shape = g.layout().shape().clone();
    let split = crate::NormAxis::from(keep).split_shape(&shape);
    let [outer, n, inner] = split;
    let vs = contiguous::<T>(v);
    let gs = contiguous::<T>(g);
    let ds = contiguous::<T>(dw);
    let eps = T::A::from_f64(eps);
    let empty_slices = outer == 0 || inner == 0;

    // Per slice: (dg, a = g / n, b = g s / n^3) with b = 0 where the norm is clamped to eps.
    let coefficients = |sumsq: T::A, s: T::A, gj: T::A| -> (T::A, T::A, T::A) {
        if empty_slices {
            return (T::A::ZERO, T::A::ZERO, T::A::ZERO);
        }
        let raw = sumsq.sqrt();
        let norm = if raw < eps { eps } else { raw };
        let b = if raw < eps {
            T::A::ZERO
        } else {
            gj * s / (norm * norm * norm)
        };
        (s / norm, gj / norm, b)
    };

    if outer == 1 && !large_slices(n, inner) && inner > 0 {
        let min_len = (CHUNK / inner).max(1);
        let mut dg = vec![T::down(T::A::ZERO); n];
        let dv = filled::<T>(vs.len(), |out| {
            out.par_chunks_mut(inner)
                .zip(vs.par_chunks(inner))
                .zip(ds.par_chunks(inner))
                .zip(gs.par_iter())
                .zip(dg.par_iter_mut())
                .with_min_len(min_len)
                .for_each(|((((o, x), d), &gj), dgj)| {
                    simd!({
                        let (dgv, a, b) = coefficients(dot(x, x), dot(d, x), gj.up());
                        *dgj = T::down(dgv);
                        axpby_into(o, d, x, a, b);
                    })
                });
        });
        return (tensor_from(dv, shape), tensor_from(dg, g_shape));
    }

    let sums = slice_sums::<T, SqDot<T::A>>(&vs, &ds, split);
    let coef: Vec<(T::A, T::A, T::A)> = sums
        .iter()
        .zip(gs.iter())
        .map(|(s, gj)| coefficients(s.0, s.1, gj.up()))
        .collect();
    let dg: Vec<T> = coef.iter().map(|c| T::down(c.0)).collect();
    let dv = filled::<T>(vs.len(), |out| {
        if inner == 1 {
            let a: Vec<T::A> = coef.iter().map(|c| c.1).collect();
            let b: Vec<T::A> = coef.iter().map(|c| c.2).collect();
            rows_last_axis::<T>(out, &vs, &ds, n, &a, Some(&b));
        } else {
            for_each_run::<T>(out, &vs, &ds, split, |j, o, x, d| {
                let (_, a, b) = coef[j];
                simd!(axpby_into(o, d, x, a, b))
            });
        }
    });
    (tensor_from(dv, shape), tensor_from(dg, g_shape))
}

/// Weight norm on plain CPU data, for code that holds bytes rather than Burn tensors (the
/// checkpoint tools of [`crate::torch`]): the same kernels, so the results are bit-identical to
/// [`crate::ops::weight_norm`] on the CPU backend.
pub(crate) mod slices {
    use super::*;

    /// An element type the kernels handle.
    pub(crate) trait Element: Real {}
    impl Element for f32 {}
    impl Element for f64 {}
    impl Element for f16 {}
    impl Element for bf16 {}

    /// `w = g * v / max(||v||, eps)` on contiguous `v` of `shape`, `g` holding one value per
    /// slice along `axis`.
    pub(crate) fn weight_norm<T: Element>(
        v: &[T],
        g: &[T],
        shape: &[usize],
        axis: crate::NormAxis,
        eps: f64,
    ) -> Vec<T> {
        forward_slices::<T>(v, g, axis.split_shape(shape), eps)
    }

    /// The L2 norm of every slice of `v` along `axis`, in `v`'s type (accumulated in f32 for
    /// the half types).
    pub(crate) fn norms<T: Element>(v: &[T], shape: &[usize], axis: crate::NormAxis) -> Vec<T> {
        slice_sums::<T, Dot<T::A>>(v, v, axis.split_shape(shape))
            .into_iter()
            .map(|s| T::down(s.0.sqrt()))
            .collect()
    }
}
