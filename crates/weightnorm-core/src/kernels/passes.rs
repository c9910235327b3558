//! The forward, the backward and the norms on contiguous slices viewed as `[outer, n, inner]`.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::schedule::{
    Store, filled, for_each_row, for_each_row_in_place, for_each_run, for_each_run_in_place,
    map_slice_blocks, map_slices, simd, single_pass, slice_sums,
};
use super::sums::{
    Acc, BLOCK, Dot, LEAF, Real, SHORT, Scaled, SqDot, clamp_norm, dot, dot_short, exact_product,
    rescaled_norm, scaled_norm, slice_norm, sq_dot, sq_dot_short,
};
use crate::NormAxis;

/// Checks the lengths every kernel relies on (and [`filled`]'s callers with them).
///
/// # Panics
///
/// If `v` does not hold `outer * n * inner` values, `g` one value per slice, or `dw` as many
/// values as `v`.
fn check_lengths([outer, n, inner]: [usize; 3], v: usize, g: usize, dw: Option<usize>) {
    assert_eq!(
        v,
        outer * n * inner,
        "weight norm: v holds {v} values, not the {} of its shape",
        outer * n * inner
    );
    assert_eq!(
        g, n,
        "weight norm: g holds {g} values, but v has {n} slices along the kept axis"
    );
    if let Some(dw) = dw {
        assert_eq!(dw, v, "weight norm: dw holds {dw} values, but v holds {v}");
    }
}

/// An output element, initialized or not.
trait Slot<A> {
    fn put(&mut self, a: A);
}

impl<A> Slot<A> for MaybeUninit<A> {
    #[inline(always)]
    fn put(&mut self, a: A) {
        self.write(a);
    }
}

impl<A> Slot<A> for A {
    #[inline(always)]
    fn put(&mut self, a: A) {
        *self = a;
    }
}

/// What a kernel writes, element by element, from `x` (`v`) and `d` (`dw`), in the computation
/// type. The expressions are those of the definitions, in the same order, so every element has
/// the same bits however it is stored.
#[derive(Clone, Copy)]
enum Op<'a, A> {
    /// `x * f`: the forward of a slice.
    Scale(A),
    /// `x[j] * c[j]` along a row (the last-axis case).
    ScaleCols(&'a [A]),
    /// `a * d - b * x`: the backward of a slice.
    Axpby(A, A),
    /// `a[j] * d[j] - b[j] * x[j]` along a row (the last-axis case).
    AxpbyCols(&'a [A], &'a [A]),
}

impl<'a, A: Acc> Op<'a, A> {
    /// The operation on the elements `r` of a row (the coefficients of the columns in `r`).
    #[inline(always)]
    fn part(self, r: Range<usize>) -> Self {
        match self {
            Self::ScaleCols(c) => Self::ScaleCols(&c[r]),
            Self::AxpbyCols(a, b) => Self::AxpbyCols(&a[r.clone()], &b[r]),
            op => op,
        }
    }

    /// Whether the operation reads `d`.
    fn reads_d(self) -> bool {
        matches!(self, Self::Axpby(..) | Self::AxpbyCols(..))
    }

    /// Writes every element of `out` (as long as `x` and `d`, and as the coefficients).
    #[inline(always)]
    fn apply<O: Slot<A>>(self, out: &mut [O], x: &[A], d: &[A]) {
        match self {
            Self::Scale(f) => {
                for (o, &x) in out.iter_mut().zip(x) {
                    o.put(x * f);
                }
            }
            Self::ScaleCols(c) => {
                for ((o, &x), &c) in out.iter_mut().zip(x).zip(c) {
                    o.put(x * c);
                }
            }
            Self::Axpby(a, b) => {
                for ((o, &d), &x) in out.iter_mut().zip(d).zip(x) {
                    o.put(a * d - b * x);
                }
            }
            Self::AxpbyCols(a, b) => {
                let coef = a.iter().zip(b);
                for (((o, &d), &x), (&a, &b)) in out.iter_mut().zip(d).zip(x).zip(coef) {
                    o.put(a * d - b * x);
                }
            }
        }
    }
}

/// Writes `op` of `x` and `d` into all of `out` (all three of one length): directly for f32
/// and f64 with plain stores, through a buffer in the cache for streaming stores, and a block at
/// a time widened and rounded for the half types.
#[inline(always)]
fn write<T: Real>(out: &mut [MaybeUninit<T>], x: &[T], d: &[T], op: Op<'_, T::A>, store: Store) {
    assert!(x.len() == out.len() && d.len() == out.len());
    if let (Some(xa), Some(da)) = (T::as_acc(x), T::as_acc(d))
        && let Some(o) = T::as_acc_out(out)
    {
        match store {
            Store::Cached => op.apply(o, xa, da),
            Store::Streaming => {
                let mut buf = [T::A::ZERO; BLOCK];
                let blocks = o
                    .chunks_mut(BLOCK)
                    .zip(xa.chunks(BLOCK))
                    .zip(da.chunks(BLOCK));
                for (k, ((o, x), d)) in blocks.enumerate() {
                    let b = &mut buf[..o.len()];
                    op.part(k * BLOCK..k * BLOCK + o.len()).apply(b, x, d);
                    T::A::stream(o, b);
                }
            }
        }
        return;
    }
    let (mut bx, mut bd, mut buf) = (
        [T::A::ZERO; BLOCK],
        [T::A::ZERO; BLOCK],
        [T::A::ZERO; BLOCK],
    );
    let blocks = out
        .chunks_mut(BLOCK)
        .zip(x.chunks(BLOCK))
        .zip(d.chunks(BLOCK));
    for (k, ((o, x), d)) in blocks.enumerate() {
        let len = o.len();
        T::up_slice(x, &mut bx[..len]);
        if op.reads_d() {
            T::up_slice(d, &mut bd[..len]);
        }
        op.part(k * BLOCK..k * BLOCK + len)
            .apply(&mut buf[..len], &bx[..len], &bd[..len]);
        T::down_slice(&buf[..len], o);
    }
}

/// A slice's `(dg, a, b)` in the backward `dv = a dw - b v`.
type Coefficients<A> = (A, A, A);

/// The backward's per-slice coefficients `(dg, a = g / n, b = g s / n^3)` from the slice's
/// norm `raw = ||v||` and `s = sum(dw * v)`, with `n = max(raw, eps)` and `b = 0` where the
/// norm is clamped to `eps`; and whether `n^3` leaves the type's range, so that `b` is not
/// representable though `b * v` is (the slice is then redone by [`redo_extreme_slice`]).
#[inline(always)]
fn coefficients<A: Acc>(raw: A, s: A, g: A, eps: A) -> (Coefficients<A>, bool) {
    let norm = clamp_norm(raw, eps);
    let cube = norm * norm * norm;
    let extreme = raw >= eps && !(cube.is_finite() && cube >= A::TINY);
    let b = if raw < eps { A::ZERO } else { g * s / cube };
    ((s / norm, g / norm, b), extreme)
}

/// `dv = (g / n) (dw - ((s / n) / n) v)` for slice `j`, the form of the backward that neither
/// overflows nor underflows where `n^3` would (huge or tiny but finite slices). Where the norm
/// `n = m r` itself is not exact (beyond the range, or subnormal), through the direction
/// `u = (v / m) / r` instead: `dv = g ((dw - <dw, u> u) / m) / r`, and `dg = <dw, u>` is
/// returned (the plain `sum(dw v) / n` may then overflow or lose bits).
#[cold]
fn redo_extreme_slice<T: Real>(
    dv: &mut [T],
    vs: &[T],
    ds: &[T],
    [outer, n, inner]: [usize; 3],
    j: usize,
    g: T::A,
) -> Option<T::A> {
    let at = |o: usize, i: usize| (o * n + j) * inner + i;
    let idx = || (0..outer).flat_map(move |o| (0..inner).map(move |i| at(o, i)));
    let (m, r) = match scaled_norm(idx().map(|k| vs[k])) {
        Scaled::Finite { m, r } if !exact_product(m, r) => (m, r),
        _ => {
            let norm = rescaled_norm(idx().map(|k| vs[k]));
            let mut s = T::A::ZERO;
            for k in idx() {
                // (dw / n) * v: each factor of order 1 or below, so the sum cannot overflow.
                s = s + ds[k].up() / norm * vs[k].up();
            }
            let k_coef = s / norm;
            let a = g / norm;
            for k in idx() {
                dv[k] = T::down(a * (ds[k].up() - k_coef * vs[k].up()));
            }
            return None;
        }
    };
    let u = |k: usize| vs[k].up() / m / r;
    let mut c = T::A::ZERO;
    for k in idx() {
        c = c + ds[k].up() * u(k);
    }
    for k in idx() {
        // g ((t / m) / r): a zero t (dw along v) gives zero, not infinity times zero.
        dv[k] = T::down(g * ((ds[k].up() - c * u(k)) / m / r));
    }
    Some(c)
}

/// `out[i] = g * ((x[i] / m) / r)`: the forward of a slice whose norm `m r` is not exact in the
/// computation type (beyond its range, or subnormal), through the exact direction.
#[cold]
fn write_direction<T: Real>(out: &mut [MaybeUninit<T>], x: &[T], m: T::A, r: T::A, g: T::A) {
    for (o, &xv) in out.iter_mut().zip(x) {
        o.write(T::down(g * (xv.up() / m / r)));
    }
}

/// The scaled norm `(m, r)` of a slice whose plain sum of squares `sumsq` is not exact, where
/// its forward must go through the direction: the norm `m r` inexact and not clamped to `eps`.
#[inline(always)]
fn needs_direction<T: Real, I: Iterator<Item = T> + Clone>(
    sumsq: T::A,
    eps: T::A,
    elems: impl FnOnce() -> I,
) -> Option<(T::A, T::A)> {
    if sumsq.is_finite() && sumsq >= T::A::TINY {
        return None;
    }
    match scaled_norm(elems()) {
        // m r is never NaN here: m is finite and positive, r finite and at least 1.
        Scaled::Finite { m, r } if !exact_product(m, r) && m * r >= eps => Some((m, r)),
        _ => None,
    }
}

/// The elements of slice `j` of `vs` viewed as `[outer, n, inner]`.
fn slice_elems<T: Real>(
    vs: &[T],
    [outer, n, inner]: [usize; 3],
    j: usize,
) -> impl Iterator<Item = T> + Clone + '_ {
    (0..outer).flat_map(move |o| vs[(o * n + j) * inner..][..inner].iter().copied())
}

/// The forward of one contiguous slice `x` of magnitude `g` and sum of squares `sumsq`, into
/// all of `o`.
#[inline(always)]
fn forward_slice<T: Real>(
    o: &mut [MaybeUninit<T>],
    x: &[T],
    g: T,
    sumsq: T::A,
    eps: T::A,
    store: Store,
) {
    if let Some((m, r)) = needs_direction(sumsq, eps, || x.iter().copied()) {
        write_direction(o, x, m, r, g.up());
        return;
    }
    let norm = clamp_norm(slice_norm(sumsq, || x.iter().copied()), eps);
    let factor = g.up() / norm;
    if factor.is_finite() {
        write(o, x, x, Op::Scale(factor), store);
    } else {
        divide_then_scale(o, x, norm, g.up());
    }
}

/// The backward of one contiguous slice `x` of magnitude `g` for the gradient `d`, from its
/// sums `(sum(x * x), sum(d * x))`: `dv` into all of `o`, and `(dg, whether the slice must be
/// redone by redo_extreme_slice)`.
#[inline(always)]
fn backward_slice<T: Real>(
    o: &mut [MaybeUninit<T>],
    x: &[T],
    d: &[T],
    g: T,
    (sumsq, s): (T::A, T::A),
    eps: T::A,
    store: Store,
) -> (T, bool) {
    let norm = slice_norm(sumsq, || x.iter().copied());
    let ((dgj, a, b), extreme) = coefficients(norm, s, g.up(), eps);
    write(o, x, d, Op::Axpby(a, b), store);
    (T::down(dgj), extreme)
}

/// The fused forward `w = g * v / max(||v||, eps)` on contiguous `vs` viewed as
/// `[outer, n, inner]`, `gs` holding one value per slice.
///
/// # Panics
///
/// If the lengths do not fit `split` (see `check_lengths`).
pub fn forward<T: Real>(vs: &[T], gs: &[T], split: [usize; 3], eps: f64) -> Vec<T> {
    check_lengths(split, vs.len(), gs.len(), None);
    let eps = T::A::from_f64(eps);
    let [_, n, inner] = split;
    let store = Store::for_output::<T>(vs.len());

    // One contiguous block per slice, many slices: norm and output in one visit of each slice.
    if single_pass(split) && inner <= LEAF {
        // Short slices: their sums of squares [`SHORT`] at a time.
        // SAFETY: `map_slice_blocks` hands out a partition of the buffer, in blocks as long as
        // the blocks of `vs` they come with; every slice of a block is written whole by `one`
        // (`write` and `divide_then_scale` write all of their output).
        return unsafe {
            filled::<T>(vs.len(), |out| {
                map_slice_blocks(out, vs, vs, inner, SHORT, |j0, o, x, _, r| {
                    simd(
                        #[inline(always)]
                        || {
                            let sums = if r.len() == SHORT {
                                dot_short(x, x, inner)
                            } else {
                                core::array::from_fn(|i| {
                                    let x = x.get(i * inner..(i + 1) * inner).unwrap_or(&[]);
                                    dot(x, x)
                                })
                            };
                            let slices = o.chunks_mut(inner).zip(x.chunks(inner));
                            for (i, ((o, x), r)) in slices.zip(r.iter_mut()).enumerate() {
                                forward_slice(o, x, gs[j0 + i], sums[i], eps, store);
                                *r = Some(());
                            }
                        },
                    )
                });
            })
        };
    }
    if single_pass(split) {
        // SAFETY: `map_slices` hands out a partition of the buffer, in blocks as long as the
        // blocks of `vs` they come with, and `one` writes all of a slice.
        return unsafe {
            filled::<T>(vs.len(), |out| {
                map_slices(out, vs, vs, inner, |j, o, x, _| {
                    simd(
                        #[inline(always)]
                        || forward_slice(o, x, gs[j], dot(x, x), eps, store),
                    )
                });
            })
        };
    }

    let sumsq = slice_sums::<T, Dot<T::A>>(vs, vs, split);
    let norms: Vec<T::A> = sumsq
        .iter()
        .enumerate()
        .map(|(j, s)| clamp_norm(slice_norm(s.0, || slice_elems(vs, split, j)), eps))
        .collect();
    let factors: Vec<T::A> = norms
        .iter()
        .zip(gs.iter())
        .map(|(&norm, &gj)| gj.up() / norm)
        .collect();
    // SAFETY: `for_each_row` and `for_each_run` hand out a partition of the buffer, in parts as
    // long as the parts of `vs` they come with; `write` writes all of its output (a row with
    // the `n` factors of its columns, or a run).
    let mut w = unsafe {
        filled::<T>(vs.len(), |out| {
            if inner == 1 {
                for_each_row(out, vs, vs, n, |o, x, _| {
                    simd(
                        #[inline(always)]
                        || write(o, x, x, Op::ScaleCols(&factors), store),
                    )
                });
            } else {
                for_each_run(out, vs, vs, split, |j, o, x, _| {
                    simd(
                        #[inline(always)]
                        || write(o, x, x, Op::Scale(factors[j]), store),
                    )
                });
            }
        })
    };
    // A slice whose norm is not exact in the computation type: through its direction. A tiny
    // slice whose `g / n` overflows: `g * (v / n)` instead.
    for (j, f) in factors.iter().enumerate() {
        if let Some((m, r)) = needs_direction(sumsq[j].0, eps, || slice_elems(vs, split, j)) {
            let [outer, n, inner] = split;
            let g = gs[j].up();
            for o in 0..outer {
                for i in 0..inner {
                    let k = (o * n + j) * inner + i;
                    w[k] = T::down(g * (vs[k].up() / m / r));
                }
            }
        } else if !f.is_finite() && norms[j].is_finite() {
            let [outer, n, inner] = split;
            for o in 0..outer {
                for i in 0..inner {
                    let k = (o * n + j) * inner + i;
                    w[k] = T::down(gs[j].up() * (vs[k].up() / norms[j]));
                }
            }
        }
    }
    w
}

/// `out[i] = g * (x[i] / norm)`: the forward of a slice whose `g / norm` overflows.
#[cold]
fn divide_then_scale<T: Real>(out: &mut [MaybeUninit<T>], x: &[T], norm: T::A, g: T::A) {
    for (o, &xv) in out.iter_mut().zip(x) {
        o.write(T::down(g * (xv.up() / norm)));
    }
}

/// The analytic backward of [`forward`] for the upstream gradient `ds`: `(dv, dg)`, `dg` with
/// one value per slice.
///
/// # Panics
///
/// If the lengths do not fit `split` (see `check_lengths`).
pub fn backward<T: Real>(
    vs: &[T],
    gs: &[T],
    ds: &[T],
    split: [usize; 3],
    eps: f64,
) -> (Vec<T>, Vec<T>) {
    check_lengths(split, vs.len(), gs.len(), Some(ds.len()));
    let [outer, _, inner] = split;
    let eps = T::A::from_f64(eps);
    let store = Store::for_output::<T>(vs.len());

    if single_pass(split) {
        let mut per_slice = Vec::new();
        // SAFETY: as in `forward`: the schedules hand out a partition of the buffer, and `one`
        // writes all of a slice.
        let mut dv = unsafe {
            filled::<T>(vs.len(), |out| {
                per_slice = if inner <= LEAF {
                    // Short slices: their sums [`SHORT`] at a time.
                    map_slice_blocks(out, vs, ds, inner, SHORT, |j0, o, x, d, r| {
                        simd(
                            #[inline(always)]
                            || {
                                let (sq, dt) = if r.len() == SHORT {
                                    sq_dot_short(x, d, inner)
                                } else {
                                    let mut sums = ([T::A::ZERO; SHORT], [T::A::ZERO; SHORT]);
                                    let slices = x.chunks(inner).zip(d.chunks(inner));
                                    for (i, (x, d)) in slices.enumerate() {
                                        (sums.0[i], sums.1[i]) = sq_dot(x, d);
                                    }
                                    sums
                                };
                                let slices = o.chunks_mut(inner).zip(x.chunks(inner));
                                let slices = slices.zip(d.chunks(inner)).zip(r.iter_mut());
                                for (i, (((o, x), d), r)) in slices.enumerate() {
                                    *r = Some(backward_slice(
                                        o,
                                        x,
                                        d,
                                        gs[j0 + i],
                                        (sq[i], dt[i]),
                                        eps,
                                        store,
                                    ));
                                }
                            },
                        )
                    })
                } else {
                    // ||v||^2 and sum(dw * v) in one pass over both.
                    map_slices(out, vs, ds, inner, |j, o, x, d| {
                        simd(
                            #[inline(always)]
                            || {
                                let (sumsq, s) = sq_dot(x, d);
                                backward_slice(o, x, d, gs[j], (sumsq, s), eps, store)
                            },
                        )
                    })
                };
            })
        };
        let mut dg: Vec<T> = per_slice.iter().map(|&(dg, _)| dg).collect();
        for (j, &(_, extreme)) in per_slice.iter().enumerate() {
            if extreme && let Some(c) = redo_extreme_slice(&mut dv, vs, ds, split, j, gs[j].up()) {
                dg[j] = T::down(c);
            }
        }
        return (dv, dg);
    }

    let empty_slices = outer == 0 || inner == 0;
    let sums = slice_sums::<T, SqDot<T::A>>(vs, ds, split);
    let (coef, extreme): (Vec<Coefficients<T::A>>, Vec<bool>) = sums
        .iter()
        .zip(gs.iter())
        .enumerate()
        .map(|(j, (s, gj))| {
            if empty_slices {
                ((T::A::ZERO, T::A::ZERO, T::A::ZERO), false)
            } else {
                let norm = slice_norm(s.0, || slice_elems(vs, split, j));
                coefficients(norm, s.1, gj.up(), eps)
            }
        })
        .unzip();
    let mut dg: Vec<T> = coef.iter().map(|c| T::down(c.0)).collect();
    let a: Vec<T::A> = coef.iter().map(|c| c.1).collect();
    let b: Vec<T::A> = coef.iter().map(|c| c.2).collect();
    let mut dv = axpby_slices(vs, ds, split, &a, &b, store);
    for (j, &e) in extreme.iter().enumerate() {
        if e && let Some(c) = redo_extreme_slice(&mut dv, vs, ds, split, j, gs[j].up()) {
            dg[j] = T::down(c);
        }
    }
    (dv, dg)
}

/// `d - x * c` on contiguous `d` and `x` viewed as `[outer, n, inner]`, `c` holding one value
/// per slice: the `dv = G - v c` of the paper-form linear layer's backward, one pass that reads
/// `d` and `x` and writes the result (computed as `1 * d - c * x`, the backward's own
/// expression, which has the same bits).
///
/// # Panics
///
/// If the lengths do not fit `split` (see `check_lengths`).
pub fn sub_scaled<T: Real>(ds: &[T], xs: &[T], cs: &[T], split: [usize; 3]) -> Vec<T> {
    check_lengths(split, xs.len(), cs.len(), Some(ds.len()));
    let store = Store::for_output::<T>(xs.len());
    let c: Vec<T::A> = cs.iter().map(|c| c.up()).collect();
    let ones = vec![T::A::from_f64(1.0); split[1]];
    axpby_slices(xs, ds, split, &ones, &c, store)
}

/// `a[j] * d - b[j] * x` for every element of slice `j` of contiguous `x` and `d` viewed as
/// `[outer, n, inner]` (the lengths checked by the caller): the write of the backward and of
/// [`sub_scaled`], by rows when the kept axis is the last, else by runs.
fn axpby_slices<T: Real>(
    xs: &[T],
    ds: &[T],
    [outer, n, inner]: [usize; 3],
    a: &[T::A],
    b: &[T::A],
    store: Store,
) -> Vec<T> {
    assert!(a.len() == n && b.len() == n);
    // SAFETY: as in `forward`; `write` writes all of a row (`a` and `b` are `n` long) and all
    // of a run.
    unsafe {
        filled::<T>(xs.len(), |out| {
            if inner == 1 {
                for_each_row(out, xs, ds, n, |o, x, d| {
                    simd(
                        #[inline(always)]
                        || write(o, x, d, Op::AxpbyCols(a, b), store),
                    )
                });
            } else {
                for_each_run(out, xs, ds, [outer, n, inner], |j, o, x, d| {
                    simd(
                        #[inline(always)]
                        || write(o, x, d, Op::Axpby(a[j], b[j]), store),
                    )
                });
            }
        })
    }
}

/// [`sub_scaled`] into `ds` itself: `d = d - x c` with the same expression per element, so the
/// same bits, but no output buffer the size of `d` (a fresh buffer's lines are read from memory
/// before they are written: a quarter of the traffic of the out-of-place pass). For f32 and
/// f64; the half types (computed through f32) return `false` with `ds` untouched.
///
/// # Panics
///
/// If the lengths do not fit `split` (see `check_lengths`).
pub fn sub_scaled_in_place<T: Real>(ds: &mut [T], xs: &[T], cs: &[T], split: [usize; 3]) -> bool {
    check_lengths(split, xs.len(), cs.len(), Some(ds.len()));
    let (Some(d), Some(x)) = (T::as_acc_mut(ds), T::as_acc(xs)) else {
        return false;
    };
    let [_, n, inner] = split;
    let c: Vec<T::A> = cs.iter().map(|c| c.up()).collect();
    let one = T::A::from_f64(1.0);
    if inner == 1 {
        for_each_row_in_place(d, x, n, |d, x| {
            simd(
                #[inline(always)]
                || {
                    for ((d, &x), &c) in d.iter_mut().zip(x).zip(&c) {
                        *d = one * *d - c * x;
                    }
                },
            )
        });
    } else {
        for_each_run_in_place(d, x, split, |j, d, x| {
            let c = c[j];
            simd(
                #[inline(always)]
                || {
                    for (d, &x) in d.iter_mut().zip(x) {
                        *d = one * *d - c * x;
                    }
                },
            )
        });
    }
    true
}

/// `w = g * v / max(||v||, eps)` on contiguous `v` of `shape`, `g` holding one value per slice
/// along `axis`.
pub fn weight_norm<T: Real>(v: &[T], g: &[T], shape: &[usize], axis: NormAxis, eps: f64) -> Vec<T> {
    forward::<T>(v, g, axis.split_shape(shape), eps)
}

/// The L2 norm of every slice of `v` along `axis`, in `v`'s type (accumulated in f32 for the
/// half types).
pub fn norms<T: Real>(v: &[T], shape: &[usize], axis: NormAxis) -> Vec<T> {
    let split = axis.split_shape(shape);
    slice_sums::<T, Dot<T::A>>(v, v, split)
        .into_iter()
        .enumerate()
        .map(|(j, s)| T::down(slice_norm(s.0, || slice_elems(v, split, j))))
        .collect()
}

/// The L2 norm of every slice of `v` along `axis` as `f64`: [`norms`] where its value is exact
/// in `T`, and computed again in `f64` with scaling where it is not (beyond `T`'s range, or
/// subnormal), so that a slice of `f32`, `f16` or `bf16` values has its true norm whatever its
/// magnitude. (A slice of `f64` whose norm is beyond `f64`'s range gives infinity.)
pub fn norms_f64<T: Real>(v: &[T], shape: &[usize], axis: NormAxis) -> Vec<f64> {
    let split = axis.split_shape(shape);
    norms::<T>(v, shape, axis)
        .into_iter()
        .enumerate()
        .map(|(j, n)| {
            let n = n.to_f64();
            if n.is_finite() && (n == 0.0 || n >= f64::from(f32::MIN_POSITIVE)) {
                return n;
            }
            let xs = || slice_elems(v, split, j).map(|x| x.to_f64());
            let m = xs().fold(0.0f64, |a, x| a.max(x.abs()));
            if m == 0.0 || !m.is_finite() {
                return n;
            }
            m * xs().map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
        })
        .collect()
}

#[cfg(test)]
#[path = "passes_tests.rs"]
mod tests;
