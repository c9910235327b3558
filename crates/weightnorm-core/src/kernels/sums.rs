//! Element types, accumulation types and summations.
//!
//! Sums use eight independent lanes (vectorizable and more accurate than one running sum) over
//! leaves of 256 elements, the leaves combined pairwise, in the accumulation type: f32 for f16,
//! bf16 and f32, f64 for f64. A leaf is read once, front to back, into [`Acc::CHAINS`]
//! independent chains of eight lanes (so that the adder's latency is hidden), merged at its end:
//! the order of every addition is fixed by this structure, not by the vector width, and one
//! sequential stream per array is what the hardware prefetchers follow best. (Four leaves summed
//! at once, interleaved, with software prefetches, read 30% slower on a 4096x4096 backward and
//! twice as slow on 512x512x7 from the last-level cache.) Half types are widened (exactly) a
//! group of leaves at a time into buffers on the stack and summed as f32.

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

/// AVX versions of the leaf sums: the same chains, each summed in the same order, so the bits
/// are those of the portable code. A leaf is read once, front to back (one stream per array,
/// which the hardware prefetchers follow), into [`Acc::CHAINS`](super::Acc::CHAINS) independent
/// chains of additions, enough to hide the adder's latency. Multiply and add stay separate
/// instructions (no FMA).
#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// The four chains of eight f32 lanes of `a * b` over one run of `len` elements from `at`
    /// (its whole chunks of eight; chunk `c` into chain `c % 4`), merged into eight lanes as
    /// [`super::merge_chains`] merges them.
    ///
    /// # Safety
    ///
    /// `a` and `b` must hold `at + len` elements.
    #[target_feature(enable = "avx")]
    #[inline]
    unsafe fn run_f32(a: &[f32], b: &[f32], at: usize, len: usize) -> __m256 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let chunks = len / 8;
        // Chunk `c` into `acc[c % 4]`, unrolled by four so that the chains stay in registers.
        let step = |acc: &mut __m256, c: usize| {
            let i = at + c * 8;
            // SAFETY: `i + 8 <= at + len`, within both slices (the caller's contract); the
            // CPU supports AVX (this function's contract).
            unsafe {
                let (x, y) = (
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                );
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
        };
        let full = chunks / 4 * 4;
        for c in (0..full).step_by(4) {
            let [a0, a1, a2, a3] = &mut acc;
            step(a0, c);
            step(a1, c + 1);
            step(a2, c + 2);
            step(a3, c + 3);
        }
        for (h, c) in (full..chunks).enumerate() {
            step(&mut acc[h], c);
        }
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]))
    }

    /// The eight f32 of a register.
    #[target_feature(enable = "avx")]
    #[inline]
    fn store_f32(v: __m256) -> [f32; 8] {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds the eight f32 stored.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `a` and `b` must hold `(G - 1) * stride + len` elements.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn strided_lanes_f32<const G: usize>(
        a: &[f32],
        b: &[f32],
        stride: usize,
        len: usize,
    ) -> [[f32; 8]; G] {
        debug_assert!(G > 0 && a.len().min(b.len()) >= (G - 1) * stride + len);
        let mut out = [[0f32; 8]; G];
        for (q, out) in out.iter_mut().enumerate() {
            // SAFETY: run `q` ends at `q * stride + len <= (G - 1) * stride + len`.
            *out = store_f32(unsafe { run_f32(a, b, q * stride, len) });
        }
        out
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `a` and `b` must hold `(G - 1) * stride + len` elements.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn sq_dot_strided_lanes_f32<const G: usize>(
        a: &[f32],
        b: &[f32],
        stride: usize,
        len: usize,
    ) -> ([[f32; 8]; G], [[f32; 8]; G]) {
        debug_assert!(G > 0 && a.len().min(b.len()) >= (G - 1) * stride + len);
        let (mut sq, mut dt) = ([[0f32; 8]; G], [[0f32; 8]; G]);
        for q in 0..G {
            let (mut s, mut d) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
            let at = q * stride;
            // Chunk `c` into chain `c % 4` of each sum, unrolled as in `run_f32`.
            let step = |s: &mut __m256, d: &mut __m256, c: usize| {
                let i = at + c * 8;
                // SAFETY: `i + 8 <= (G - 1) * stride + len`, within both slices; the CPU
                // supports AVX (this function's contract).
                unsafe {
                    let (x, y) = (
                        _mm256_loadu_ps(a.as_ptr().add(i)),
                        _mm256_loadu_ps(b.as_ptr().add(i)),
                    );
                    *s = _mm256_add_ps(*s, _mm256_mul_ps(x, x));
                    *d = _mm256_add_ps(*d, _mm256_mul_ps(y, x));
                }
            };
            let chunks = len / 8;
            let full = chunks / 4 * 4;
            for c in (0..full).step_by(4) {
                let ([s0, s1, s2, s3], [d0, d1, d2, d3]) = (&mut s, &mut d);
                step(s0, d0, c);
                step(s1, d1, c + 1);
                step(s2, d2, c + 2);
                step(s3, d3, c + 3);
            }
            for (h, c) in (full..chunks).enumerate() {
                step(&mut s[h], &mut d[h], c);
            }
            sq[q] = store_f32(_mm256_add_ps(
                _mm256_add_ps(s[0], s[2]),
                _mm256_add_ps(s[1], s[3]),
            ));
            dt[q] = store_f32(_mm256_add_ps(
                _mm256_add_ps(d[0], d[2]),
                _mm256_add_ps(d[1], d[3]),
            ));
        }
        (sq, dt)
    }

    /// `out[i] = src[i]` with 32-byte streaming stores.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX; `out` must start on a 32-byte boundary and hold a multiple of
    /// eight elements, and `src` as many.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn stream_f32(out: &mut [MaybeUninit<f32>], src: &[f32]) {
        debug_assert!(out.len() == src.len() && out.len().is_multiple_of(8));
        for i in (0..out.len()).step_by(8) {
            // SAFETY: `i + 8 <= len` for both; `out + i` is 32-byte aligned (the start is, and
            // steps are 32 bytes); `MaybeUninit<f32>` has the layout of `f32`.
            unsafe {
                _mm256_stream_ps(
                    out.as_mut_ptr().add(i).cast(),
                    _mm256_loadu_ps(src.as_ptr().add(i)),
                );
            }
        }
    }

    /// `out[i] = src[i]` with 32-byte streaming stores.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX; `out` must start on a 32-byte boundary and hold a multiple of
    /// four elements, and `src` as many.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn stream_f64(out: &mut [MaybeUninit<f64>], src: &[f64]) {
        debug_assert!(out.len() == src.len() && out.len().is_multiple_of(4));
        for i in (0..out.len()).step_by(4) {
            // SAFETY: as in `stream_f32`, with four f64 per 32 bytes.
            unsafe {
                _mm256_stream_pd(
                    out.as_mut_ptr().add(i).cast(),
                    _mm256_loadu_pd(src.as_ptr().add(i)),
                );
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `b` must be at least as long as `a`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn lanes_f32(a: &[f32], b: &[f32]) -> [f32; 8] {
        debug_assert!(b.len() >= a.len());
        // SAFETY: the run is `a.len()` elements from 0, within both.
        store_f32(unsafe { run_f32(a, b, 0, a.len()) })
    }

    /// The two chains of eight f64 lanes (two registers each) of `a * b` over one run of `len`
    /// elements from `at` (chunk `c` of eight into chain `c % 2`), merged.
    ///
    /// # Safety
    ///
    /// `a` and `b` must hold `at + len` elements.
    #[target_feature(enable = "avx")]
    #[inline]
    unsafe fn run_f64(a: &[f64], b: &[f64], at: usize, len: usize) -> [f64; 8] {
        let mut acc = [[_mm256_setzero_pd(); 2]; 2];
        // Chunk `c` (two registers) into chain `c % 2`, unrolled so that the chains stay in
        // registers.
        let step = |acc: &mut [__m256d; 2], c: usize| {
            for (h, acc) in acc.iter_mut().enumerate() {
                let i = at + c * 8 + 4 * h;
                // SAFETY: `i + 4 <= at + len`, within both slices (the caller's contract); the
                // CPU supports AVX (this function's contract).
                unsafe {
                    let (x, y) = (
                        _mm256_loadu_pd(a.as_ptr().add(i)),
                        _mm256_loadu_pd(b.as_ptr().add(i)),
                    );
                    *acc = _mm256_add_pd(*acc, _mm256_mul_pd(x, y));
                }
            }
        };
        let chunks = len / 8;
        for c in (0..chunks / 2 * 2).step_by(2) {
            let [a0, a1] = &mut acc;
            step(a0, c);
            step(a1, c + 1);
        }
        if chunks % 2 == 1 {
            step(&mut acc[0], chunks - 1);
        }
        store_f64([
            _mm256_add_pd(acc[0][0], acc[1][0]),
            _mm256_add_pd(acc[0][1], acc[1][1]),
        ])
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `b` must be at least as long as `a`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn lanes_f64(a: &[f64], b: &[f64]) -> [f64; 8] {
        debug_assert!(b.len() >= a.len());
        // SAFETY: the run is `a.len()` elements from 0, within both.
        unsafe { run_f64(a, b, 0, a.len()) }
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `a` and `b` must hold `(G - 1) * stride + len` elements.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn strided_lanes_f64<const G: usize>(
        a: &[f64],
        b: &[f64],
        stride: usize,
        len: usize,
    ) -> [[f64; 8]; G] {
        debug_assert!(G > 0 && a.len().min(b.len()) >= (G - 1) * stride + len);
        let mut out = [[0f64; 8]; G];
        for (q, out) in out.iter_mut().enumerate() {
            // SAFETY: run `q` ends at `q * stride + len <= (G - 1) * stride + len`.
            *out = unsafe { run_f64(a, b, q * stride, len) };
        }
        out
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `a` and `b` must hold `(G - 1) * stride + len` elements.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn sq_dot_strided_lanes_f64<const G: usize>(
        a: &[f64],
        b: &[f64],
        stride: usize,
        len: usize,
    ) -> ([[f64; 8]; G], [[f64; 8]; G]) {
        debug_assert!(G > 0 && a.len().min(b.len()) >= (G - 1) * stride + len);
        let (mut sq, mut dt) = ([[0f64; 8]; G], [[0f64; 8]; G]);
        for q in 0..G {
            // Chains `[c % 2][half]` of each sum: eight registers.
            let (mut s, mut d) = ([[_mm256_setzero_pd(); 2]; 2], [[_mm256_setzero_pd(); 2]; 2]);
            let at = q * stride;
            // Chunk `c` into chain `c % 2` of each sum, unrolled as in `run_f64`.
            let step = |s: &mut [__m256d; 2], d: &mut [__m256d; 2], c: usize| {
                for h in 0..2 {
                    let i = at + c * 8 + 4 * h;
                    // SAFETY: `i + 4 <= (G - 1) * stride + len`, within both slices; the CPU
                    // supports AVX (this function's contract).
                    unsafe {
                        let (x, y) = (
                            _mm256_loadu_pd(a.as_ptr().add(i)),
                            _mm256_loadu_pd(b.as_ptr().add(i)),
                        );
                        s[h] = _mm256_add_pd(s[h], _mm256_mul_pd(x, x));
                        d[h] = _mm256_add_pd(d[h], _mm256_mul_pd(y, x));
                    }
                }
            };
            let chunks = len / 8;
            for c in (0..chunks / 2 * 2).step_by(2) {
                let ([s0, s1], [d0, d1]) = (&mut s, &mut d);
                step(s0, d0, c);
                step(s1, d1, c + 1);
            }
            if chunks % 2 == 1 {
                step(&mut s[0], &mut d[0], chunks - 1);
            }
            sq[q] = store_f64([
                _mm256_add_pd(s[0][0], s[1][0]),
                _mm256_add_pd(s[0][1], s[1][1]),
            ]);
            dt[q] = store_f64([
                _mm256_add_pd(d[0][0], d[1][0]),
                _mm256_add_pd(d[0][1], d[1][1]),
            ]);
        }
        (sq, dt)
    }
    /// The eight lanes of two registers.
    #[target_feature(enable = "avx")]
    fn store_f64([lo, hi]: [__m256d; 2]) -> [f64; 8] {
        let mut lanes = [0f64; 8];
        // SAFETY: `lanes` holds the eight f64 stored, four by each store.
        unsafe {
            _mm256_storeu_pd(lanes.as_mut_ptr(), lo);
            _mm256_storeu_pd(lanes.as_mut_ptr().add(4), hi);
        }
        lanes
    }
}

/// Streaming stores without AVX: SSE2, part of the x86_64 baseline.
#[cfg(target_arch = "x86_64")]
mod sse {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// `out[i] = src[i]` with 16-byte streaming stores.
    ///
    /// # Safety
    ///
    /// `out` must start on a 16-byte boundary and hold a multiple of four elements, and `src`
    /// as many.
    pub(super) unsafe fn stream_f32(out: &mut [MaybeUninit<f32>], src: &[f32]) {
        debug_assert!(out.len() == src.len() && out.len().is_multiple_of(4));
        for i in (0..out.len()).step_by(4) {
            // SAFETY: `i + 4 <= len` for both; `out + i` is 16-byte aligned; `MaybeUninit<f32>`
            // has the layout of `f32`.
            unsafe {
                _mm_stream_ps(
                    out.as_mut_ptr().add(i).cast(),
                    _mm_loadu_ps(src.as_ptr().add(i)),
                )
            };
        }
    }

    /// `out[i] = src[i]` with 16-byte streaming stores.
    ///
    /// # Safety
    ///
    /// `out` must start on a 16-byte boundary and hold a multiple of two elements, and `src`
    /// as many.
    pub(super) unsafe fn stream_f64(out: &mut [MaybeUninit<f64>], src: &[f64]) {
        debug_assert!(out.len() == src.len() && out.len().is_multiple_of(2));
        for i in (0..out.len()).step_by(2) {
            // SAFETY: as in `stream_f32`, with two f64 per 16 bytes.
            unsafe {
                _mm_stream_pd(
                    out.as_mut_ptr().add(i).cast(),
                    _mm_loadu_pd(src.as_ptr().add(i)),
                )
            };
        }
    }
}

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
}
