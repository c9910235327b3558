//! The x86-64 code of the summations, apart from the portable code it must match bit for
//! bit: AVX chains of leaf sums and SSE streaming stores. Every `unsafe` block says why it is
//! sound; the tests of `sums` run each against the portable code.

/// AVX versions of the leaf sums: the same chains, each summed in the same order, so the bits
/// are those of the portable code. A leaf is read once, front to back (one stream per array,
/// which the hardware prefetchers follow), into [`Acc::CHAINS`](super::super::Acc::CHAINS) independent
/// chains of additions, enough to hide the adder's latency. Multiply and add stay separate
/// instructions (no FMA).
pub(super) mod avx {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// The four chains of eight f32 lanes of `a * b` over one run of `len` elements from `at`
    /// (its whole chunks of eight; chunk `c` into chain `c % 4`), merged into eight lanes as
    /// [`super::super::merge_chains`] merges them.
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
    pub(crate) unsafe fn strided_lanes_f32<const G: usize>(
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
    pub(crate) unsafe fn sq_dot_strided_lanes_f32<const G: usize>(
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
    pub(crate) unsafe fn stream_f32(out: &mut [MaybeUninit<f32>], src: &[f32]) {
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
    pub(crate) unsafe fn stream_f64(out: &mut [MaybeUninit<f64>], src: &[f64]) {
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
    pub(crate) unsafe fn lanes_f32(a: &[f32], b: &[f32]) -> [f32; 8] {
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
    pub(crate) unsafe fn lanes_f64(a: &[f64], b: &[f64]) -> [f64; 8] {
        debug_assert!(b.len() >= a.len());
        // SAFETY: the run is `a.len()` elements from 0, within both.
        unsafe { run_f64(a, b, 0, a.len()) }
    }

    /// # Safety
    ///
    /// The CPU must support AVX, and `a` and `b` must hold `(G - 1) * stride + len` elements.
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn strided_lanes_f64<const G: usize>(
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
    pub(crate) unsafe fn sq_dot_strided_lanes_f64<const G: usize>(
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
pub(super) mod sse {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// `out[i] = src[i]` with 16-byte streaming stores.
    ///
    /// # Safety
    ///
    /// `out` must start on a 16-byte boundary and hold a multiple of four elements, and `src`
    /// as many.
    pub(crate) unsafe fn stream_f32(out: &mut [MaybeUninit<f32>], src: &[f32]) {
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
    pub(crate) unsafe fn stream_f64(out: &mut [MaybeUninit<f64>], src: &[f64]) {
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
