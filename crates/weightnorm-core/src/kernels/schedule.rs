//! How the work is cut and spread over threads.
//!
//! - When `outer == 1` every slice is one contiguous block. Many slices: one rayon task per group
//!   of slices, each slice's norm and output computed while the slice is in cache, so the input
//!   is read from memory once ([`map_slices`]). Few large slices (the whole tensor): a chunked
//!   parallel reduction, then a parallel write that walks the chunks in reverse, so that it
//!   starts on what the reduction read last (still in the last-level cache).
//! - Otherwise, rows of `n * inner` elements are split into fixed chunks; each chunk accumulates
//!   its own per-slice sums, combined in chunk order ([`slice_sums`]; vectorized over the
//!   columns when the kept axis is the last one), then a parallel pass writes the output
//!   ([`for_each_run`], or [`for_each_row`] when the kept axis is the last one), in reverse.
//!
//! Threads only where they pay: an operation on fewer than [`PARALLEL_MIN`] elements runs on the
//! calling thread, over the same chunks; larger ones are shared between the calling thread and
//! the helpers of [`super::pool`] (no task is handed to rayon, whose workers the caller would
//! wait for). Outputs are written with plain stores unless [`set_stream_min_bytes`] asks for
//! streaming stores ([`Store`]) from some size on: a streaming store does not read the line before writing it, which saves
//! a third of the traffic of a forward where memory is the limit, but where it was measured plain
//! stores were faster at every alignment of the output (the README's benchmark section).
//!
//! Chunk boundaries never depend on the thread count, so results are bit-identical whatever the
//! size of the thread pool, whether the work ran on one thread, and however it was stored.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::pool::{Parts, for_each_chunk_mut, map_indices};
use super::sums::{Acc, Real, Sums, fence, pairwise, pairwise_vecs};

/// Elements per task in reductions and writes: big enough to amortize scheduling, small enough
/// to stay in L2 and to spread 4096x4096 over many threads.
pub(super) const CHUNK: usize = 1 << 14;

/// Elements per task of the single pass ([`map_slices`]): whole slices, at least one. Small
/// enough that two threads share a tensor of a few hundred thousand elements evenly.
const GROUP: usize = 1 << 14;

/// Operations on fewer elements run on the calling thread: 64 Ki elements (256 KiB of f32), a
/// few microseconds of work. From there the caller shares the work with the helpers of
/// [`super::pool`], which cost it no wake-up wait (it never waits for a helper to start).
pub(super) const PARALLEL_MIN: usize = 1 << 16;

/// The threshold of streaming stores in the tests that exercise them, and the value to try on
/// a machine where they pay (half of a large last-level cache).
#[cfg(test)]
pub(super) const STREAM_MIN_BYTES: usize = 16 << 20;

/// No output is streamed.
const NEVER: usize = usize::MAX;

/// Outputs of at least this many bytes are written with streaming stores; [`NEVER`] (the
/// default): none.
static STREAM_MIN: AtomicUsize = AtomicUsize::new(NEVER);

/// The size from which outputs are written with streaming stores, if any (as
/// [`set_stream_min_bytes`] set it; by default none).
pub fn stream_min_bytes() -> Option<usize> {
    let min = STREAM_MIN.load(Ordering::Relaxed);
    (min != NEVER).then_some(min)
}

/// Sets the size (bytes) from which outputs are written with streaming stores, or none.
pub fn set_stream_min_bytes(min: Option<usize>) {
    STREAM_MIN.store(min.unwrap_or(NEVER), Ordering::Relaxed);
}

/// How a kernel writes its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Store {
    /// Plain stores: the output stays in the cache for what reads it next.
    Cached,
    /// Streaming (non-temporal) stores, for f32 and f64: no read of the line before the write.
    Streaming,
}

impl Store {
    /// The stores for an output of `len` elements of `T`, as [`stream_min_bytes`] says.
    pub(super) fn for_output<T: Real>(len: usize) -> Self {
        Self::for_output_from::<T>(len, stream_min_bytes())
    }

    /// The stores for an output of `len` elements of `T` when outputs of `min` bytes and more
    /// are streamed.
    pub(super) fn for_output_from<T: Real>(len: usize, min: Option<usize>) -> Self {
        match min {
            Some(min) if len.saturating_mul(size_of::<T>()) >= min => Self::Streaming,
            _ => Self::Cached,
        }
    }
}

/// Whether work on `elements` elements is shared between threads (from [`PARALLEL_MIN`]).
fn parallel(elements: usize) -> bool {
    elements >= PARALLEL_MIN
}

/// Runs `f` compiled for AVX2 when the CPU has it (detected once, at run time), else as built.
/// The kernels' summation order is fixed by their code, not by the vector width, and no fused
/// multiply-add is enabled, so both versions give bit-identical results.
///
/// `f` must be a closure marked `#[inline(always)]`: otherwise the compiler may keep it a
/// function of its own, compiled without AVX2, which `avx2` merely calls.
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `avx2` only requires the CPU to support AVX2, which was checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `f`, inlined into a function compiled with AVX2 enabled.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The range of chunk `c` of `chunk` elements in `len`.
fn chunk_of(c: usize, chunk: usize, len: usize) -> std::ops::Range<usize> {
    c * chunk..((c + 1) * chunk).min(len)
}

/// A vector of `len` elements written by `fill`.
///
/// # Safety
///
/// `fill` must write every element of the slice it is given (the schedules below hand out a
/// partition of it; the kernels write all of each part).
pub(super) unsafe fn filled<T: Send>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len`, and the caller guarantees that `fill` initialized
    // all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// Whether the slices are few and large enough to be reduced in parallel chunks each, rather
/// than one task per slice.
pub(super) fn large_slices(n: usize, inner: usize) -> bool {
    inner >= CHUNK * 4 && n < 8
}

/// Whether the single-pass schedule applies: every slice one non-empty contiguous block, and
/// not so few and so large that one task per slice would leave threads idle.
pub(super) fn single_pass([outer, n, inner]: [usize; 3]) -> bool {
    outer == 1 && !large_slices(n, inner) && inner > 0
}

/// The single pass: calls `f(j, out_j, x_j, y_j)` for every slice `j` of contiguous blocks of
/// `inner` elements (`outer == 1`), groups of slices in parallel, and returns what each call
/// returns, in slice order. The calls get a partition of `out`; what they store is visible when
/// this returns (streaming stores included).
pub(super) fn map_slices<T: Sync + Send, R: Send>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    inner: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>], &[T], &[T]) -> R + Sync + Send,
) -> Vec<R> {
    map_slice_blocks(out, x, y, inner, 1, |j, o, x, y, r| {
        r[0] = Some(f(j, o, x, y))
    })
}

/// [`map_slices`] handing out blocks of `per_call` consecutive slices (fewer in the last
/// block): `f(j0, out, x, y, results)` gets the slices from `j0` (`results.len()` of them, as
/// many blocks of `inner` elements in `out`, `x` and `y`) and puts each slice's result in
/// `results`.
///
/// # Panics
///
/// If `f` leaves a result out.
pub(super) fn map_slice_blocks<T: Sync + Send, R: Send>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    inner: usize,
    per_call: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>], &[T], &[T], &mut [Option<R>]) + Sync + Send,
) -> Vec<R> {
    assert!(x.len() == out.len() && y.len() == out.len() && inner > 0 && per_call > 0);
    let n = out.len() / inner;
    let per_group = (GROUP / inner).max(1).next_multiple_of(per_call);
    let group = per_group * inner;
    let mut results: Vec<Option<R>> = (0..n).map(|_| None).collect();
    let len = out.len();
    let outs = Parts::new(out);
    for_each_chunk_mut(parallel(len), &mut results, per_group, false, |g, r| {
        let span = g * group..((g + 1) * group).min(len);
        // SAFETY: group `g`'s elements, disjoint from every other group's, and each group is
        // handed out once.
        let o = unsafe { outs.part(span.clone()) };
        let (x, y) = (&x[span.clone()], &y[span]);
        let call = per_call * inner;
        let blocks = o.chunks_mut(call).zip(x.chunks(call)).zip(y.chunks(call));
        for (k, (((o, x), y), r)) in blocks.zip(r.chunks_mut(per_call)).enumerate() {
            f(g * per_group + k * per_call, o, x, y, r);
        }
        fence();
    });
    results
        .into_iter()
        .map(|r| r.expect("every slice was visited"))
        .collect()
}

/// Per-slice sums over the `[outer, n, inner]` view: for each slice `j`, the [`Sums`] of `a`
/// and `b` over the slice.
pub(super) fn slice_sums<T: Real, S: Sums<T>>(
    a: &[T],
    b: &[T],
    [outer, n, inner]: [usize; 3],
) -> Vec<S> {
    assert!(a.len() == outer * n * inner && b.len() == a.len());
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
                    let chunks = inner.div_ceil(CHUNK);
                    let parts: Vec<S> = map_indices(parallel(a.len()), chunks, |c| {
                        let r = c * CHUNK..((c + 1) * CHUNK).min(inner);
                        let (x, y) = (&sa[r.clone()], &sb[r]);
                        simd(
                            #[inline(always)]
                            || S::run(x, y),
                        )
                    });
                    pairwise::<T, S>(&parts)
                })
                .collect();
        }
        let per_task = (CHUNK / inner).max(1);
        let mut sums = vec![S::ZERO; n];
        for_each_chunk_mut(parallel(a.len()), &mut sums, per_task, false, |t, s| {
            for (k, s) in s.iter_mut().enumerate() {
                let j = t * per_task + k;
                let r = j * inner..(j + 1) * inner;
                let (x, y) = (&a[r.clone()], &b[r]);
                *s = simd(
                    #[inline(always)]
                    || S::run(x, y),
                );
            }
        });
        return sums;
    }
    // Rows of n * inner elements. Each task takes a fixed group of rows and accumulates blocks
    // of 32 rows, adding each block to its total; the tasks' totals are combined pairwise.
    const BLOCK_ROWS: usize = 32;
    let row = n * inner;
    let rows_per_task = (CHUNK / row).clamp(BLOCK_ROWS / 2, 8 * BLOCK_ROWS);
    let tasks = outer.div_ceil(rows_per_task);
    let task = |t: usize| {
        let r = chunk_of(t, row * rows_per_task, a.len());
        (&a[r.clone()], &b[r])
    };
    let par = parallel(a.len());
    if inner == 1 {
        // The kept axis is the last: column sums, kept column-wise until the end.
        let mut partials: Vec<Vec<T::A>> = map_indices(par, tasks, |t| {
            let (xa, xb) = task(t);
            column_sums::<T, S>(xa, xb, n, BLOCK_ROWS)
        });
        let total = pairwise_columns(&mut partials);
        return (0..n).map(|j| S::column(&total, n, j)).collect();
    }
    let mut partials: Vec<Vec<S>> = map_indices(par, tasks, |t| {
        let (xa, xb) = task(t);
        let mut total = vec![S::ZERO; n];
        let mut block = vec![S::ZERO; n];
        for (ba, bb) in xa.chunks(row * BLOCK_ROWS).zip(xb.chunks(row * BLOCK_ROWS)) {
            block.fill(S::ZERO);
            for (ra, rb) in ba.chunks_exact(row).zip(bb.chunks_exact(row)) {
                simd(
                    #[inline(always)]
                    || accumulate_row::<T, S>(&mut block, ra, rb, inner),
                );
            }
            for (t, s) in total.iter_mut().zip(&block) {
                *t = t.add(*s);
            }
        }
        total
    });
    pairwise_vecs::<T, S>(&mut partials)
}

/// The last-axis case of [`slice_sums`] for one task: rows of `n` elements, each row one element
/// of every slice, in blocks of `block_rows` rows; the same additions as [`accumulate_row`]
/// (each block summed from zero row by row, then added to the total, which starts at zero), with
/// the sums kept column-wise ([`Sums::add_block`]) so that they vectorize over the columns. Half
/// types are widened a block at a time.
fn column_sums<T: Real, S: Sums<T>>(a: &[T], b: &[T], n: usize, block_rows: usize) -> Vec<T::A> {
    let mut total = vec![T::A::ZERO; S::COUNT * n];
    let (mut wa, mut wb) = (Vec::new(), Vec::new());
    for (ba, bb) in a.chunks(n * block_rows).zip(b.chunks(n * block_rows)) {
        let rows = ba.len() / n;
        simd(
            #[inline(always)]
            || match (T::as_acc(ba), T::as_acc(bb)) {
                (Some(ba), Some(bb)) => S::add_block(&mut total, ba, bb, n, rows),
                _ => {
                    wa.resize(ba.len(), T::A::ZERO);
                    wb.resize(ba.len(), T::A::ZERO);
                    T::up_slice(ba, &mut wa);
                    T::up_slice(bb, &mut wb);
                    S::add_block(&mut total, &wa, &wb, n, rows);
                }
            },
        );
    }
    total
}

/// Pairwise elementwise sum of column-wise partial sums (all of one length), split as
/// [`pairwise_vecs`] splits: the same additions, on the arrays.
fn pairwise_columns<A: Acc>(parts: &mut [Vec<A>]) -> Vec<A> {
    match parts.len() {
        0 => Vec::new(),
        1 => std::mem::take(&mut parts[0]),
        len => {
            let (lo, hi) = parts.split_at_mut(len / 2);
            let mut a = pairwise_columns(lo);
            let b = pairwise_columns(hi);
            simd(
                #[inline(always)]
                || {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x = *x + y;
                    }
                },
            );
            a
        }
    }
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

/// Calls `f(j, out_run, x_run, y_run)` for every contiguous run of the `[outer, n, inner]` view
/// (a run lies in one slice `j`), over fixed chunks of the flat arrays, in parallel, last chunk
/// first. The calls get a partition of `out`, cut at run and chunk boundaries; what they store
/// is visible when this returns. For `inner == 1` use [`for_each_row`].
pub(super) fn for_each_run<T: Sync + Send>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    [_, n, inner]: [usize; 3],
    f: impl Fn(usize, &mut [MaybeUninit<T>], &[T], &[T]) + Sync + Send,
) {
    assert!(x.len() == out.len() && y.len() == out.len());
    if out.is_empty() {
        return;
    }
    let len = out.len();
    for_each_chunk_mut(parallel(len), out, CHUNK, true, |c, o| {
        let r = chunk_of(c, CHUNK, len);
        let (xs, ys) = (&x[r.clone()], &y[r]);
        let start = c * CHUNK;
        let mut p = 0;
        while p < o.len() {
            let run = (start + p) / inner;
            let end = ((run + 1) * inner - start).min(o.len());
            f(run % n, &mut o[p..end], &xs[p..end], &ys[p..end]);
            p = end;
        }
        fence();
    });
}

/// The kept axis is the last one (`inner == 1`, e.g. Burn's `[d_in, d_out]` Linear weight per
/// output unit): every row of `n` elements holds one element of each slice. Calls
/// `f(out_row, x_row, y_row)` for every row, groups of rows in parallel, the last group first;
/// the calls get a partition of `out`, and what they store is visible when this returns.
pub(super) fn for_each_row<T: Sync + Send>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    n: usize,
    f: impl Fn(&mut [MaybeUninit<T>], &[T], &[T]) + Sync + Send,
) {
    assert!(x.len() == out.len() && y.len() == out.len());
    if out.is_empty() {
        return;
    }
    let rows_per_task = (CHUNK / n).max(1);
    let (len, task) = (out.len(), n * rows_per_task);
    for_each_chunk_mut(parallel(len), out, task, true, |c, o| {
        let r = chunk_of(c, task, len);
        let (xs, ys) = (&x[r.clone()], &y[r]);
        for ((o, xs), ys) in o.chunks_mut(n).zip(xs.chunks(n)).zip(ys.chunks(n)) {
            f(o, xs, ys);
        }
        fence();
    });
}

/// [`for_each_row`] updating `d` in place: `f(d_row, x_row)` for every row of `n` elements
/// (the kept axis is the last), the rows handed out as [`for_each_row`] hands them out.
pub(super) fn for_each_row_in_place<A: Sync + Send>(
    d: &mut [A],
    x: &[A],
    n: usize,
    f: impl Fn(&mut [A], &[A]) + Sync + Send,
) {
    assert_eq!(x.len(), d.len());
    if d.is_empty() {
        return;
    }
    let rows_per_task = (CHUNK / n).max(1);
    let (len, task) = (d.len(), n * rows_per_task);
    for_each_chunk_mut(parallel(len), d, task, true, |c, part| {
        let xs = &x[chunk_of(c, task, len)];
        for (d, x) in part.chunks_mut(n).zip(xs.chunks(n)) {
            f(d, x);
        }
    });
}

/// [`for_each_run`] updating `d` in place: `f(j, d_run, x_run)` for every run of (at most)
/// `inner` contiguous elements of slice `j`.
pub(super) fn for_each_run_in_place<A: Sync + Send>(
    d: &mut [A],
    x: &[A],
    [_, n, inner]: [usize; 3],
    f: impl Fn(usize, &mut [A], &[A]) + Sync + Send,
) {
    assert_eq!(x.len(), d.len());
    if d.is_empty() {
        return;
    }
    let len = d.len();
    for_each_chunk_mut(parallel(len), d, CHUNK, true, |c, part| {
        let xs = &x[chunk_of(c, CHUNK, len)];
        let start = c * CHUNK;
        let mut p = 0;
        while p < part.len() {
            let run = (start + p) / inner;
            let end = ((run + 1) * inner - start).min(part.len());
            f(run % n, &mut part[p..end], &xs[p..end]);
            p = end;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::sums::{Dot, SqDot, dot};
    use super::super::test_data::{SPLITS, values};
    use super::*;

    /// The sums of slice `j`, in f64, by definition.
    fn naive_sums(a: &[f64], b: &[f64], [outer, n, inner]: [usize; 3]) -> Vec<(f64, f64)> {
        let mut s = vec![(0.0, 0.0); n];
        for o in 0..outer {
            for (j, sj) in s.iter_mut().enumerate() {
                for i in 0..inner {
                    let k = (o * n + j) * inner + i;
                    sj.0 += a[k] * a[k];
                    sj.1 += b[k] * a[k];
                }
            }
        }
        s
    }

    #[test]
    fn slice_sums_match_naive_sums() {
        for split in SPLITS {
            let len = split.iter().product();
            let (a, b) = (values(len, 5), values(len, 6));
            let exact = naive_sums(&a, &b, split);
            let dots = slice_sums::<f64, Dot<f64>>(&a, &a, split);
            let sq = slice_sums::<f64, SqDot<f64>>(&a, &b, split);
            assert_eq!(dots.len(), split[1]);
            assert_eq!(sq.len(), split[1]);
            for ((d, s), e) in dots.iter().zip(&sq).zip(&exact) {
                let tol = 1e-12 * (len as f64 + 1.0);
                assert!((d.0 - e.0).abs() <= tol, "{split:?}");
                assert!(
                    (s.0 - e.0).abs() <= tol && (s.1 - e.1).abs() <= tol,
                    "{split:?}"
                );
            }
            // Same in f32 (including the last-axis element path), to the f32 scale.
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&x| x as f32).collect(),
                b.iter().map(|&x| x as f32).collect(),
            );
            let sq32 = slice_sums::<f32, SqDot<f32>>(&a32, &b32, split);
            for (s, e) in sq32.iter().zip(&exact) {
                let tol = 1e-4 * (1.0 + e.0.abs());
                assert!(
                    (s.0 as f64 - e.0).abs() <= tol,
                    "{split:?}: {} vs {}",
                    s.0,
                    e.0
                );
            }
        }
    }

    #[test]
    fn whole_tensor_sum_is_one_dot() {
        // One slice of one run: the chunked parallel reduction only regroups the dot's leaves
        // when the length is a multiple of the chunk, and is close to it otherwise.
        let a = values(4 * CHUNK * 2, 7);
        let s = slice_sums::<f64, Dot<f64>>(&a, &a, [1, 1, a.len()]);
        let e: f64 = a.iter().map(|x| x * x).sum();
        assert!((s[0].0 - e).abs() < 1e-9);
        let small = values(1000, 8);
        let s = slice_sums::<f64, Dot<f64>>(&small, &small, [1, 1, 1000]);
        assert_eq!(s[0].0.to_bits(), dot::<f64>(&small, &small).to_bits());
    }

    /// Runs a write schedule on a buffer pre-filled with a sentinel and checks that every
    /// element was handed to exactly one call, with the right slice index: what makes
    /// [`filled`]'s callers sound.
    fn check_partition(
        len: usize,
        slice_of: impl Fn(usize) -> usize,
        run: impl FnOnce(&mut [MaybeUninit<f64>], &[f64], &AtomicUsize),
    ) {
        let x: Vec<f64> = (0..len).map(|i| i as f64).collect();
        let mut out = vec![MaybeUninit::new(-1.0); len];
        let calls = AtomicUsize::new(0);
        run(&mut out, &x, &calls);
        // SAFETY: every element was initialized with the sentinel above.
        let out: Vec<f64> = out.iter().map(|o| unsafe { o.assume_init() }).collect();
        for (i, &o) in out.iter().enumerate() {
            assert_eq!(o, (slice_of(i) * len + i) as f64, "element {i} of {len}");
        }
    }

    #[test]
    fn write_schedules_cover_every_element_once() {
        for split in SPLITS {
            let [outer, n, inner] = split;
            let len = outer * n * inner;
            let slice_of = |i: usize| (i / inner.max(1)) % n.max(1);
            // Each call writes `j * len + x`, and counts; a second write of an element would be
            // visible in the count, a missing one as the sentinel.
            let write = |j: usize, o: &mut [MaybeUninit<f64>], x: &[f64], calls: &AtomicUsize| {
                calls.fetch_add(o.len(), Ordering::Relaxed);
                for (o, &x) in o.iter_mut().zip(x) {
                    o.write((j * len) as f64 + x);
                }
            };
            check_partition(len, slice_of, |out, x, calls| {
                for_each_run(out, x, x, split, |j, o, x, _| write(j, o, x, calls));
                assert_eq!(calls.load(Ordering::Relaxed), len);
            });
            if inner == 1 && len > 0 {
                check_partition(len, slice_of, |out, x, calls| {
                    for_each_row(out, x, x, n, |o, x, _| {
                        calls.fetch_add(o.len(), Ordering::Relaxed);
                        for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                            o.write((j * len) as f64 + x);
                        }
                    });
                    assert_eq!(calls.load(Ordering::Relaxed), len);
                });
            }
            if single_pass(split) {
                check_partition(len, slice_of, |out, x, calls| {
                    let js = map_slices(out, x, x, inner, |j, o, x, _| {
                        write(j, o, x, calls);
                        j
                    });
                    assert_eq!(js, (0..n).collect::<Vec<_>>());
                    assert_eq!(calls.load(Ordering::Relaxed), len);
                });
            }
        }
    }

    #[test]
    fn filled_returns_what_fill_wrote() {
        for len in [0, 1, 9, CHUNK + 3] {
            // SAFETY: the closure writes every element.
            let v = unsafe {
                filled::<u32>(len, |out| {
                    for (i, o) in out.iter_mut().enumerate() {
                        o.write(i as u32 * 3);
                    }
                })
            };
            assert_eq!(v, (0..len as u32).map(|i| i * 3).collect::<Vec<_>>());
        }
    }

    #[test]
    fn avx2_and_plain_builds_agree_to_the_bit() {
        for &len in &[0usize, 1, 7, 8, 9, 255, 257, 5000] {
            let a = values(len, 9);
            let b = values(len, 10);
            let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
            let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            let plain = (dot::<f32>(&a32, &b32), dot::<f64>(&a, &b));
            let dispatched = simd(|| (dot::<f32>(&a32, &b32), dot::<f64>(&a, &b)));
            assert_eq!(plain.0.to_bits(), dispatched.0.to_bits());
            assert_eq!(plain.1.to_bits(), dispatched.1.to_bits());
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                let wide = unsafe { avx2(|| (dot::<f32>(&a32, &b32), dot::<f64>(&a, &b))) };
                assert_eq!(plain.0.to_bits(), wide.0.to_bits());
                assert_eq!(plain.1.to_bits(), wide.1.to_bits());
                let mut acc_plain = vec![SqDot(0.0f32, 0.0); 1];
                let mut acc_wide = acc_plain.clone();
                accumulate_row::<f32, SqDot<f32>>(&mut acc_plain, &a32, &b32, len.max(1));
                // SAFETY: as above.
                unsafe {
                    avx2(|| {
                        accumulate_row::<f32, SqDot<f32>>(&mut acc_wide, &a32, &b32, len.max(1))
                    })
                };
                assert_eq!(acc_plain[0].0.to_bits(), acc_wide[0].0.to_bits());
                assert_eq!(acc_plain[0].1.to_bits(), acc_wide[0].1.to_bits());
            }
        }
    }

    /// The last-axis sums as [`accumulate_row`] gives them row by row (the schedule as it was
    /// written before the sums were kept column-wise).
    fn reference_rows<T: Real, S: Sums<T>>(a: &[T], b: &[T], n: usize) -> Vec<S> {
        const BLOCK_ROWS: usize = 32;
        let rows_per_task = (CHUNK / n).clamp(BLOCK_ROWS / 2, 8 * BLOCK_ROWS);
        let mut partials: Vec<Vec<S>> = a
            .chunks(n * rows_per_task)
            .zip(b.chunks(n * rows_per_task))
            .map(|(xa, xb)| {
                let (mut total, mut block) = (vec![S::ZERO; n], vec![S::ZERO; n]);
                for (ba, bb) in xa.chunks(n * BLOCK_ROWS).zip(xb.chunks(n * BLOCK_ROWS)) {
                    block.fill(S::ZERO);
                    for (ra, rb) in ba.chunks_exact(n).zip(bb.chunks_exact(n)) {
                        accumulate_row::<T, S>(&mut block, ra, rb, 1);
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

    #[test]
    fn column_sums_give_the_bits_of_row_accumulation() {
        for [outer, n] in [
            [3000, 21],
            [9, 5],
            [700, 40],
            [100, 33],
            [40, 64],
            [17, 1000],
        ] {
            let len = outer * n;
            let (a, b) = (values(len, 81), values(len, 82));
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&x| x as f32).collect(),
                b.iter().map(|&x| x as f32).collect(),
            );
            let split = [outer, n, 1];
            assert_eq!(
                slice_sums::<f32, SqDot<f32>>(&a32, &b32, split),
                reference_rows::<f32, SqDot<f32>>(&a32, &b32, n),
                "{split:?}"
            );
            assert_eq!(
                slice_sums::<f32, Dot<f32>>(&a32, &a32, split),
                reference_rows::<f32, Dot<f32>>(&a32, &a32, n),
                "{split:?}"
            );
            assert_eq!(
                slice_sums::<f64, SqDot<f64>>(&a, &b, split),
                reference_rows::<f64, SqDot<f64>>(&a, &b, n),
                "{split:?}"
            );
            // Half types: summed as their f32 values.
            let h: Vec<half::f16> = a.iter().map(|&x| half::f16::from_f64(x)).collect();
            let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
            assert_eq!(
                slice_sums::<half::f16, Dot<f32>>(&h, &h, split),
                reference_rows::<f32, Dot<f32>>(&w, &w, n),
                "{split:?}"
            );
        }
    }

    #[test]
    fn small_work_stays_on_the_calling_thread() {
        let here = std::thread::current().id();
        let x = vec![1.0f64; 65_100]; // just below PARALLEL_MIN, 100 and 3 dividing it
        assert!(x.len() < PARALLEL_MIN);
        let mut out = vec![MaybeUninit::new(0.0); x.len()];
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        map_slices(&mut out, &x, &x, 100, |_, _, _, _| {
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        for_each_run(&mut out, &x, &x, [3, 1, x.len() / 3], |_, o, _, _| {
            o.fill(MaybeUninit::new(1.0));
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        assert_eq!(
            threads
                .into_inner()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![here]
        );
        let min = Some(STREAM_MIN_BYTES);
        assert_eq!(
            Store::for_output_from::<f32>(STREAM_MIN_BYTES / 4 - 1, min),
            Store::Cached
        );
        assert_eq!(
            Store::for_output_from::<f64>(STREAM_MIN_BYTES / 8, min),
            Store::Streaming
        );
        assert_eq!(
            Store::for_output_from::<f64>(usize::MAX, None),
            Store::Cached
        );
    }
}
