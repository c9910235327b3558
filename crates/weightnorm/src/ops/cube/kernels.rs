//! The CubeCL kernels of weight norm, on contiguous buffers viewed as `[outer, n, inner]`.
//!
//! Two layouts, each in one kernel with a compile-time phase (see [`super::plan`]):
//!
//! - [`runs_kernel`] (runs of `inner >= 32`, coalesced along a run): a cube owns one slice `j`
//!   (or one chunk of it); its units stride over the slice's flat index
//!   `k = o * inner + i`, and the cube's sums are combined by a tree in shared memory.
//! - [`columns_kernel`] (short runs, down to `inner == 1`): a cube owns a tile of `X` lanes
//!   (consecutive columns of a row, `J = X / inner` whole slices) and `Y` groups of rows; the
//!   groups' sums are combined by a tree over `Y`, then each slice's `inner` lanes in order.
//!
//! Phases: [`FUSED`] is the whole operation in one launch (sums, then one pass writing the
//! output, whose reads of `v` hit the cache the sums just filled). When a tensor has too few
//! slices to fill the device, each slice is cut into chunks and three launches share the work:
//! [`PARTIAL`] writes each chunk's sums, [`RESCALE`] the chunk's scaled sums where a slice
//! needs them (it returns at once otherwise), and [`APPLY`] gathers a slice's sums, in the same
//! order in every cube of the slice, and writes its chunk of the output.
//!
//! Sums accumulate in f32 whatever the storage type (f32, f16, bf16), and each output element
//! is rounded once. Every order of summation is fixed by the launch shape, so results are
//! deterministic.
//!
//! # Numerics, as the CPU kernels
//!
//! The norm is `sqrt(sum(v^2))` where that sum is a normal, finite number; where it overflows
//! or underflows (below `TINY`), the slice is summed again scaled by its largest magnitude `m`:
//! `m * sqrt(sum((v / m)^2))`. The backward also takes that second pass where `n^3` leaves the
//! f32 range, and then writes `dv = (g / n) (dw - (s' / n) v)` with `s' = sum(dw v) / n`
//! computed as `(m / n) sum(dw (v / m))`, which neither overflows nor underflows. A slice whose
//! `g / n` overflows (a tiny norm) is written as `g (v / n)`. A slice whose norm `n = m r`
//! (`r = sqrt(sum((v / m)^2))`) is itself not exact in f32 (beyond its range, or subnormal)
//! goes through its exact direction `u = (v / m) / r`: `w = g u`, `dv = g ((dw - <dw, u> u) /
//! m) / r`.

use cubecl::prelude::*;

/// The whole operation in one launch.
pub(super) const FUSED: u32 = 0;
/// Chunked, first launch: each chunk's sums `(sum v^2, sum dw v, max |v|)`.
pub(super) const PARTIAL: u32 = 1;
/// Chunked, second launch: each chunk's scaled sums `(sum (v/m)^2, sum dw (v/m))`, only for
/// the slices that need them.
pub(super) const RESCALE: u32 = 2;
/// Chunked, third launch: the slice's sums gathered, the output written.
pub(super) const APPLY: u32 = 3;

/// Values per chunk in the partial-sums buffer (`sum v^2`, `sum dw v`, `max |v|`).
pub(super) const PARTIAL_STRIDE: usize = 3;
/// Values per chunk in the scaled-sums buffer (`sum (v/m)^2`, `sum dw (v/m)`).
pub(super) const RESCALE_STRIDE: usize = 2;

/// Below this, a sum of squares may have lost squares to underflow (the CPU kernels' bound).
#[cube]
fn tiny() -> f32 {
    1e-30f32
}

/// The largest finite f32.
#[cube]
fn f32_max() -> f32 {
    3.402_823_5e38f32
}

/// Whether `x` is a finite f32 (false for NaN and the infinities).
#[cube]
fn finite(x: f32) -> bool {
    x >= -f32_max() && x <= f32_max()
}

/// Whether a slice with sum of squares `ss` and largest magnitude `mx` needs the scaled pass
/// for its norm: the plain sum is not a normal finite number, and `mx` is finite and non-zero.
#[cube]
fn needs_rescale(ss: f32, mx: f32) -> bool {
    let plain = ss >= tiny() && ss <= f32_max();
    !plain && mx > 0.0f32 && mx <= f32_max()
}

/// The norm from the plain sums: `sqrt(ss)`, or `mx + mx` (infinity, NaN) where an element is
/// not finite, or 0 where every element is 0. Where [`needs_rescale`] holds, this is replaced.
#[cube]
fn plain_norm(ss: f32, mx: f32) -> f32 {
    let mut norm = ss.sqrt();
    if !(ss >= tiny() && ss <= f32_max()) {
        if !finite(mx) {
            norm = mx + mx;
        } else if mx == 0.0f32 {
            norm = 0.0f32;
        }
    }
    norm
}

/// The smallest normal f32.
#[cube]
fn min_normal() -> f32 {
    1.175_494_4e-38f32
}

/// Whether a slice's rescaled norm `norm = m r` must be bypassed by its direction: rescaled,
/// not exact in f32 (beyond the range, or subnormal) and not clamped to `eps`.
#[cube]
fn direction(rescale: bool, norm: f32, eps: f32) -> bool {
    rescale && !(norm >= min_normal() && norm <= f32_max()) && norm >= eps
}

/// `max(norm, eps)`, keeping NaN.
#[cube]
fn clamp_norm(norm: f32, eps: f32) -> f32 {
    let mut out = norm;
    if norm < eps {
        out = eps;
    }
    out
}

/// Whether the backward's `b = g s / n^3` is out of the f32 range for an unclamped slice, so
/// that the slice takes the scaled form of the backward.
#[cube]
fn extreme(norm: f32, eps: f32) -> bool {
    let n = clamp_norm(norm, eps);
    let cube = n * n * n;
    norm >= eps && !(cube >= tiny() && cube <= f32_max())
}

/// Whether a slice needs the scaled pass: for its norm, or (backward) for its gradient.
#[cube]
fn slow(ss: f32, mx: f32, eps: f32, #[comptime] backward: bool) -> bool {
    let mut out = needs_rescale(ss, mx);
    if comptime!(backward) {
        out = out || extreme(plain_norm(ss, mx), eps);
    }
    out
}

/// Sums `a` and `b` and takes the max of `c` over the cube's units (a power of two), in a tree
/// in shared memory; the results are in `[0]` of each array when this returns (after a
/// barrier).
#[cube]
fn tree_reduce(
    a: &mut Shared<[f32]>,
    b: &mut Shared<[f32]>,
    c: &mut Shared<[f32]>,
    #[comptime] with_b: bool,
    #[comptime] with_c: bool,
) {
    let t = UNIT_POS as usize;
    sync_cube();
    // Read at run time: a variable that starts from a comptime value cannot be assigned to.
    let mut stride = CUBE_DIM as usize / 2;
    while stride > 0 {
        if t < stride {
            let other = a[t + stride];
            a[t] += other;
            if comptime!(with_b) {
                let other = b[t + stride];
                b[t] += other;
            }
            if comptime!(with_c) {
                let mine = c[t];
                let other = c[t + stride];
                c[t] = mine.max(other);
            }
        }
        sync_cube();
        stride /= 2;
    }
}

/// Sums `a` and `b` and takes the max of `c` over the rows of a `[groups, lanes]` array in
/// shared memory (one row per group of units, `CUBE_DIM_Y` of them, a power of two), in a
/// tree; row 0 holds the results when this returns.
#[cube]
fn tree_reduce_groups(
    a: &mut Shared<[f32]>,
    b: &mut Shared<[f32]>,
    c: &mut Shared<[f32]>,
    #[comptime] lanes: usize,
    #[comptime] with_b: bool,
    #[comptime] with_c: bool,
) {
    let x = UNIT_POS_X as usize;
    let y = UNIT_POS_Y as usize;
    sync_cube();
    // At run time, as in `tree_reduce`.
    let mut stride = CUBE_DIM_Y as usize / 2;
    while stride > 0 {
        if y < stride {
            let here = y * lanes + x;
            let there = (y + stride) * lanes + x;
            let other = a[there];
            a[here] += other;
            if comptime!(with_b) {
                let other = b[there];
                b[here] += other;
            }
            if comptime!(with_c) {
                let mine = c[here];
                let other = c[there];
                c[here] = mine.max(other);
            }
        }
        sync_cube();
        stride /= 2;
    }
}

/// The index of element `k` of the slice that starts at `base`: `k`'s run `k / inner` is one
/// row (`row` elements) further than the last; `one_run` (a comptime `outer == 1`) spares the
/// division.
#[cube]
fn run_index(k: usize, inner: usize, row: usize, base: usize, #[comptime] one_run: bool) -> usize {
    let mut at = base + k;
    if comptime!(!one_run) {
        let o = k / inner;
        at = o * row + base + (k - o * inner);
    }
    at
}

/// The index of the cube's slice (runs) or tile (columns): cubes are laid out over x and y
/// because one grid dimension holds at most 65535 cubes on some devices.
#[cube]
fn cube_index() -> usize {
    (CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X) as usize
}

/// The fused weight norm for long runs: one cube per slice `j` (and chunk `q`), `threads`
/// units; `one_run` where each slice is one run (`outer == 1`). `v`, `dw` (backward) and `out` hold `outer * n * inner` values, `g` and `dg`
/// (backward) `n`; `partial` and `scaled` hold the chunked launches' sums (unused by
/// [`FUSED`]).
#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub(super) fn runs_kernel<F: Float>(
    v: &[F],
    dw: &[F],
    g: &[F],
    out: &mut [F],
    dg: &mut [F],
    partial: &mut [f32],
    scaled: &mut [f32],
    n: usize,
    inner: usize,
    slice_len: usize,
    chunk_len: usize,
    chunks: usize,
    eps: f32,
    #[comptime] threads: usize,
    #[comptime] one_run: bool,
    #[comptime] backward: bool,
    #[comptime] phase: u32,
    #[define(F)] _dtype: ElemType,
) {
    let j = cube_index();
    if j >= n {
        terminate!();
    }
    let q = CUBE_POS_Z as usize;
    let t = UNIT_POS as usize;
    let row = n * inner;
    let base = j * inner;
    let start = q * chunk_len;
    let mut end = start + chunk_len;
    if end > slice_len {
        end = slice_len;
    }

    let mut sh_a = Shared::<[f32]>::new_slice(threads);
    let mut sh_b = Shared::<[f32]>::new_slice(threads);
    let mut sh_c = Shared::<[f32]>::new_slice(threads);

    // The slice's plain sums: from the elements, or from the chunks' partial sums.
    let mut ss = 0.0f32;
    let mut sd = 0.0f32;
    let mut mx = 0.0f32;
    if comptime!(phase == FUSED || phase == PARTIAL) {
        let mut k = start + t;
        // Four loads in flight per unit, then the rest one by one.
        while k + 3 * threads < end {
            let a0 = run_index(k, inner, row, base, one_run);
            let a1 = run_index(k + threads, inner, row, base, one_run);
            let a2 = run_index(k + 2 * threads, inner, row, base, one_run);
            let a3 = run_index(k + 3 * threads, inner, row, base, one_run);
            let x0 = f32::cast_from(v[a0]);
            let x1 = f32::cast_from(v[a1]);
            let x2 = f32::cast_from(v[a2]);
            let x3 = f32::cast_from(v[a3]);
            ss += (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3);
            mx = mx.max(x0.abs().max(x1.abs()).max(x2.abs().max(x3.abs())));
            if comptime!(backward) {
                let d0 = f32::cast_from(dw[a0]);
                let d1 = f32::cast_from(dw[a1]);
                let d2 = f32::cast_from(dw[a2]);
                let d3 = f32::cast_from(dw[a3]);
                sd += (d0 * x0 + d1 * x1) + (d2 * x2 + d3 * x3);
            }
            k += 4 * threads;
        }
        while k < end {
            let at = run_index(k, inner, row, base, one_run);
            let x = f32::cast_from(v[at]);
            ss += x * x;
            mx = mx.max(x.abs());
            if comptime!(backward) {
                sd += f32::cast_from(dw[at]) * x;
            }
            k += threads;
        }
    } else {
        let mut p = t;
        while p < chunks {
            let at = (j * chunks + p) * PARTIAL_STRIDE;
            ss += partial[at];
            sd += partial[at + 1];
            mx = mx.max(partial[at + 2]);
            p += threads;
        }
    }
    sh_a[t] = ss;
    sh_b[t] = sd;
    sh_c[t] = mx;
    tree_reduce(&mut sh_a, &mut sh_b, &mut sh_c, backward, true);
    ss = sh_a[0];
    sd = sh_b[0];
    mx = sh_c[0];
    sync_cube();

    if comptime!(phase == PARTIAL) {
        if t == 0 {
            let at = (j * chunks + q) * PARTIAL_STRIDE;
            partial[at] = ss;
            partial[at + 1] = sd;
            partial[at + 2] = mx;
        }
        terminate!();
    }

    // The scaled sums, only where the slice needs them (the branch is the same for the whole
    // cube, and for every cube of the slice).
    let rescale = needs_rescale(ss, mx);
    let mut norm = plain_norm(ss, mx);
    let mut root = 1.0f32;
    let mut t2 = 0.0f32;
    if slow(ss, mx, eps, backward) {
        let mut s2 = 0.0f32;
        if comptime!(phase == FUSED || phase == RESCALE) {
            let mut k = start + t;
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                let y = f32::cast_from(v[at]) / mx;
                s2 += y * y;
                if comptime!(backward) {
                    t2 += f32::cast_from(dw[at]) * y;
                }
                k += threads;
            }
        } else {
            let mut p = t;
            while p < chunks {
                let at = (j * chunks + p) * RESCALE_STRIDE;
                s2 += scaled[at];
                t2 += scaled[at + 1];
                p += threads;
            }
        }
        sh_a[t] = s2;
        sh_b[t] = t2;
        tree_reduce(&mut sh_a, &mut sh_b, &mut sh_c, backward, false);
        s2 = sh_a[0];
        t2 = sh_b[0];
        if comptime!(phase == RESCALE) {
            if t == 0 {
                let at = (j * chunks + q) * RESCALE_STRIDE;
                scaled[at] = s2;
                scaled[at + 1] = t2;
            }
            terminate!();
        }
        if rescale {
            root = s2.sqrt();
            norm = mx * root;
        }
    }
    if comptime!(phase == RESCALE) {
        // Nothing to rescale in this cube.
        terminate!();
    }

    // One pass writing the output.
    let gj = f32::cast_from(g[j]);
    let nrm = clamp_norm(norm, eps);
    let through_direction = direction(rescale, norm, eps);
    if comptime!(backward) {
        if t == 0 && q == 0 {
            if through_direction {
                // dg = <dw, u>, where sum(dw v) and n may both leave the range.
                dg[j] = F::cast_from(t2 / root);
            } else {
                dg[j] = F::cast_from(sd / nrm);
            }
        }
        let a = gj / nrm;
        if through_direction {
            let c = t2 / root;
            let mut k = start + t;
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                let u = (f32::cast_from(v[at]) / mx) / root;
                out[at] = F::cast_from(gj * (((f32::cast_from(dw[at]) - c * u) / mx) / root));
                k += threads;
            }
        } else if extreme(norm, eps) {
            let kc = ((mx / norm) * t2) / norm;
            let mut k = start + t;
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                let x = f32::cast_from(v[at]);
                out[at] = F::cast_from(a * (f32::cast_from(dw[at]) - kc * x));
                k += threads;
            }
        } else {
            let clamped = norm < eps;
            let mut b = 0.0f32;
            if !clamped {
                b = gj * sd / (nrm * nrm * nrm);
            }
            let mut k = start + t;
            while k + 3 * threads < end {
                let a0 = run_index(k, inner, row, base, one_run);
                let a1 = run_index(k + threads, inner, row, base, one_run);
                let a2 = run_index(k + 2 * threads, inner, row, base, one_run);
                let a3 = run_index(k + 3 * threads, inner, row, base, one_run);
                let x0 = f32::cast_from(v[a0]);
                let x1 = f32::cast_from(v[a1]);
                let x2 = f32::cast_from(v[a2]);
                let x3 = f32::cast_from(v[a3]);
                let d0 = f32::cast_from(dw[a0]);
                let d1 = f32::cast_from(dw[a1]);
                let d2 = f32::cast_from(dw[a2]);
                let d3 = f32::cast_from(dw[a3]);
                out[a0] = F::cast_from(a * d0 - b * x0);
                out[a1] = F::cast_from(a * d1 - b * x1);
                out[a2] = F::cast_from(a * d2 - b * x2);
                out[a3] = F::cast_from(a * d3 - b * x3);
                k += 4 * threads;
            }
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                let x = f32::cast_from(v[at]);
                out[at] = F::cast_from(a * f32::cast_from(dw[at]) - b * x);
                k += threads;
            }
        }
    } else {
        let factor = gj / nrm;
        if through_direction {
            let mut k = start + t;
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                out[at] = F::cast_from(gj * ((f32::cast_from(v[at]) / mx) / root));
                k += threads;
            }
        } else if !finite(factor) && finite(nrm) {
            let mut k = start + t;
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                out[at] = F::cast_from(gj * (f32::cast_from(v[at]) / nrm));
                k += threads;
            }
        } else {
            let mut k = start + t;
            while k + 3 * threads < end {
                let a0 = run_index(k, inner, row, base, one_run);
                let a1 = run_index(k + threads, inner, row, base, one_run);
                let a2 = run_index(k + 2 * threads, inner, row, base, one_run);
                let a3 = run_index(k + 3 * threads, inner, row, base, one_run);
                let x0 = f32::cast_from(v[a0]);
                let x1 = f32::cast_from(v[a1]);
                let x2 = f32::cast_from(v[a2]);
                let x3 = f32::cast_from(v[a3]);
                out[a0] = F::cast_from(x0 * factor);
                out[a1] = F::cast_from(x1 * factor);
                out[a2] = F::cast_from(x2 * factor);
                out[a3] = F::cast_from(x3 * factor);
                k += 4 * threads;
            }
            while k < end {
                let at = run_index(k, inner, row, base, one_run);
                out[at] = F::cast_from(f32::cast_from(v[at]) * factor);
                k += threads;
            }
        }
    }
}

/// The fused weight norm for short runs: a cube owns `slices` whole slices (`lanes` columns
/// of a row, `slices * inner <= lanes`) and rows `q * chunk_rows ..` in `groups` groups.
/// Buffers as in [`runs_kernel`].
#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub(super) fn columns_kernel<F: Float>(
    v: &[F],
    dw: &[F],
    g: &[F],
    out: &mut [F],
    dg: &mut [F],
    partial: &mut [f32],
    scaled: &mut [f32],
    outer: usize,
    n: usize,
    inner: usize,
    slices: usize,
    chunk_rows: usize,
    chunks: usize,
    eps: f32,
    #[comptime] lanes: usize,
    #[comptime] groups: usize,
    #[comptime] backward: bool,
    #[comptime] phase: u32,
    #[define(F)] _dtype: ElemType,
) {
    let tile = cube_index();
    if tile * slices >= n {
        terminate!();
    }
    let q = CUBE_POS_Z as usize;
    let x = UNIT_POS_X as usize;
    let y = UNIT_POS_Y as usize;
    let row = n * inner;
    let first = tile * slices;
    // This lane's slice within the tile, and whether the lane holds a column at all.
    let local = x / inner;
    let j = first + local;
    let valid = local < slices && j < n;
    let col = first * inner + x;
    let start = q * chunk_rows;
    let mut end = start + chunk_rows;
    if end > outer {
        end = outer;
    }

    let size = comptime!(lanes * groups);
    let mut sh_a = Shared::<[f32]>::new_slice(size);
    let mut sh_b = Shared::<[f32]>::new_slice(size);
    let mut sh_c = Shared::<[f32]>::new_slice(size);
    let mut tot_a = Shared::<[f32]>::new_slice(lanes);
    let mut tot_b = Shared::<[f32]>::new_slice(lanes);
    let mut tot_c = Shared::<[f32]>::new_slice(lanes);
    let me = y * lanes + x;

    // Plain sums per lane over the rows, then per slice over its lanes; or the chunks' sums.
    let mut ss = 0.0f32;
    let mut sd = 0.0f32;
    let mut mx = 0.0f32;
    if comptime!(phase == FUSED || phase == PARTIAL) {
        if valid {
            let mut o = start + y;
            // Four loads in flight per unit, then the rest one by one.
            while o + 3 * groups < end {
                let a0 = o * row + col;
                let a1 = (o + groups) * row + col;
                let a2 = (o + 2 * groups) * row + col;
                let a3 = (o + 3 * groups) * row + col;
                let e0 = f32::cast_from(v[a0]);
                let e1 = f32::cast_from(v[a1]);
                let e2 = f32::cast_from(v[a2]);
                let e3 = f32::cast_from(v[a3]);
                ss += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3);
                mx = mx.max(e0.abs().max(e1.abs()).max(e2.abs().max(e3.abs())));
                if comptime!(backward) {
                    let d0 = f32::cast_from(dw[a0]);
                    let d1 = f32::cast_from(dw[a1]);
                    let d2 = f32::cast_from(dw[a2]);
                    let d3 = f32::cast_from(dw[a3]);
                    sd += (d0 * e0 + d1 * e1) + (d2 * e2 + d3 * e3);
                }
                o += 4 * groups;
            }
            while o < end {
                let at = o * row + col;
                let e = f32::cast_from(v[at]);
                ss += e * e;
                mx = mx.max(e.abs());
                if comptime!(backward) {
                    sd += f32::cast_from(dw[at]) * e;
                }
                o += groups;
            }
        }
    } else {
        // Lane x gathers slice x's chunks.
        if x < slices && first + x < n {
            let mut p = y;
            while p < chunks {
                let at = ((first + x) * chunks + p) * PARTIAL_STRIDE;
                ss += partial[at];
                sd += partial[at + 1];
                mx = mx.max(partial[at + 2]);
                p += groups;
            }
        }
    }
    sh_a[me] = ss;
    sh_b[me] = sd;
    sh_c[me] = mx;
    tree_reduce_groups(&mut sh_a, &mut sh_b, &mut sh_c, lanes, backward, true);
    if y == 0 && x < slices {
        if comptime!(phase == FUSED || phase == PARTIAL) {
            let mut a = 0.0f32;
            let mut b = 0.0f32;
            let mut c = 0.0f32;
            let mut i = 0usize;
            while i < inner {
                a += sh_a[x * inner + i];
                b += sh_b[x * inner + i];
                c = c.max(sh_c[x * inner + i]);
                i += 1;
            }
            tot_a[x] = a;
            tot_b[x] = b;
            tot_c[x] = c;
        } else {
            tot_a[x] = sh_a[x];
            tot_b[x] = sh_b[x];
            tot_c[x] = sh_c[x];
        }
    }
    sync_cube();

    if comptime!(phase == PARTIAL) {
        if y == 0 && x < slices && first + x < n {
            let at = ((first + x) * chunks + q) * PARTIAL_STRIDE;
            partial[at] = tot_a[x];
            partial[at + 1] = tot_b[x];
            partial[at + 2] = tot_c[x];
        }
        terminate!();
    }

    // This lane's slice's sums (lanes past the tile's slices read slice 0's and write nothing).
    let mut mine = local;
    if !valid {
        mine = 0;
    }
    ss = tot_a[mine];
    sd = tot_b[mine];
    mx = tot_c[mine];

    // Whether any slice of the tile needs the scaled pass: the same answer in every unit.
    let mut any = false;
    let mut s = 0usize;
    while s < slices {
        if first + s < n && slow(tot_a[s], tot_c[s], eps, backward) {
            any = true;
        }
        s += 1;
    }

    let rescale = needs_rescale(ss, mx);
    let mut norm = plain_norm(ss, mx);
    let mut root = 1.0f32;
    let mut t2 = 0.0f32;
    if any {
        // The scaled sums of every slice of the tile (kept only where a slice needs them).
        let mut a = 0.0f32;
        let mut b = 0.0f32;
        if comptime!(phase == FUSED || phase == RESCALE) {
            if valid {
                let mut o = start + y;
                while o < end {
                    let at = o * row + col;
                    let e = f32::cast_from(v[at]) / mx;
                    a += e * e;
                    if comptime!(backward) {
                        b += f32::cast_from(dw[at]) * e;
                    }
                    o += groups;
                }
            }
        } else {
            if x < slices && first + x < n {
                let mut p = y;
                while p < chunks {
                    let at = ((first + x) * chunks + p) * RESCALE_STRIDE;
                    a += scaled[at];
                    b += scaled[at + 1];
                    p += groups;
                }
            }
        }
        sync_cube();
        sh_a[me] = a;
        sh_b[me] = b;
        tree_reduce_groups(&mut sh_a, &mut sh_b, &mut sh_c, lanes, backward, false);
        if y == 0 && x < slices {
            if comptime!(phase == FUSED || phase == RESCALE) {
                let mut ta = 0.0f32;
                let mut tb = 0.0f32;
                let mut i = 0usize;
                while i < inner {
                    ta += sh_a[x * inner + i];
                    tb += sh_b[x * inner + i];
                    i += 1;
                }
                tot_a[x] = ta;
                tot_b[x] = tb;
            } else {
                tot_a[x] = sh_a[x];
                tot_b[x] = sh_b[x];
            }
        }
        sync_cube();
        if comptime!(phase == RESCALE) {
            if y == 0 && x < slices && first + x < n {
                let at = ((first + x) * chunks + q) * RESCALE_STRIDE;
                scaled[at] = tot_a[x];
                scaled[at + 1] = tot_b[x];
            }
            terminate!();
        }
        t2 = tot_b[mine];
        if rescale {
            root = tot_a[mine].sqrt();
            norm = mx * root;
        }
    }
    if comptime!(phase == RESCALE) {
        // Nothing to rescale in this cube.
        terminate!();
    }

    if !valid {
        terminate!();
    }

    // One pass writing this lane's column of the output.
    let gj = f32::cast_from(g[j]);
    let nrm = clamp_norm(norm, eps);
    let through_direction = direction(rescale, norm, eps);
    if comptime!(backward) {
        if y == 0 && q == 0 && x == local * inner {
            if through_direction {
                // dg = <dw, u>, where sum(dw v) and n may both leave the range.
                dg[j] = F::cast_from(t2 / root);
            } else {
                dg[j] = F::cast_from(sd / nrm);
            }
        }
        let a = gj / nrm;
        let ext = extreme(norm, eps);
        let kc = ((mx / norm) * t2) / norm;
        let c = t2 / root;
        let clamped = norm < eps;
        let mut b = 0.0f32;
        if !clamped {
            b = gj * sd / (nrm * nrm * nrm);
        }
        let mut o = start + y;
        while o < end {
            let at = o * row + col;
            let e = f32::cast_from(v[at]);
            let d = f32::cast_from(dw[at]);
            if through_direction {
                let u = (e / mx) / root;
                out[at] = F::cast_from(gj * (((d - c * u) / mx) / root));
            } else if ext {
                out[at] = F::cast_from(a * (d - kc * e));
            } else {
                out[at] = F::cast_from(a * d - b * e);
            }
            o += groups;
        }
    } else {
        let factor = gj / nrm;
        let mut o = start + y;
        if through_direction {
            while o < end {
                let at = o * row + col;
                out[at] = F::cast_from(gj * ((f32::cast_from(v[at]) / mx) / root));
                o += groups;
            }
        } else if !finite(factor) && finite(nrm) {
            while o < end {
                let at = o * row + col;
                out[at] = F::cast_from(gj * (f32::cast_from(v[at]) / nrm));
                o += groups;
            }
        } else {
            while o + 3 * groups < end {
                let a0 = o * row + col;
                let a1 = (o + groups) * row + col;
                let a2 = (o + 2 * groups) * row + col;
                let a3 = (o + 3 * groups) * row + col;
                let e0 = f32::cast_from(v[a0]);
                let e1 = f32::cast_from(v[a1]);
                let e2 = f32::cast_from(v[a2]);
                let e3 = f32::cast_from(v[a3]);
                out[a0] = F::cast_from(e0 * factor);
                out[a1] = F::cast_from(e1 * factor);
                out[a2] = F::cast_from(e2 * factor);
                out[a3] = F::cast_from(e3 * factor);
                o += 4 * groups;
            }
            while o < end {
                let at = o * row + col;
                out[at] = F::cast_from(f32::cast_from(v[at]) * factor);
                o += groups;
            }
        }
    }
}
