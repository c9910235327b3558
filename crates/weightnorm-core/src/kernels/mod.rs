//! The CPU kernels of weight norm on plain slices, with no framework: the fused path of Burn's
//! `Flex` backend (the `weightnorm` crate's thin adapter), of the checkpoint tools of
//! [`crate::surgery`] and of the Python package, which hold bytes rather than tensors. All of
//! them share these kernels, so their results are bit-identical.
//!
//! A tensor is viewed as `[outer, n, inner]` around the kept axis (see
//! [`NormAxis::split_shape`](crate::NormAxis::split_shape)): slice `j` is made of `outer`
//! contiguous runs of `inner` elements.
//!
//! - `sums`: the element and accumulation types, and the summations (pairwise dot products
//!   over leaves read front to back in independent chains of eight lanes, with AVX where the
//!   CPU has it; the per-slice sums a pass gathers, column-wise in register strips when the
//!   kept axis is the last), half types widened a block at a time, and streaming stores.
//! - `pool`: the parallel loops: the calling thread and helper threads claim indices, each
//!   from its own contiguous range first, then from the others', so the caller never waits for
//!   a thread to wake up (rayon's `current_num_threads` threads in all).
//! - `schedule`: how the work is cut into slices, runs, rows and fixed chunks and spread over
//!   the threads of `pool` (only from 64 Ki elements: smaller work runs on the calling
//!   thread), which outputs are streamed (none unless asked: [`set_stream_min_bytes`]), and
//!   the AVX2 dispatch.
//! - `passes`: the forward, the backward and the norms on slices, and how an output element
//!   is written (the definitions' expressions, whatever the store).
//!
//! Chunk boundaries never depend on the thread count, so results are bit-identical whatever the
//! size of the thread pool, and the AVX2 build of a kernel gives the same bits as the plain one:
//! the vector code adds the same lanes in the same order, with no fused multiply-add.
//!
//! Every `unsafe` block here (the buffer fill, the AVX and SSE intrinsics, the streaming stores)
//! says why it is sound, and a test runs it against the portable code or the definition.

mod passes;
mod pool;
mod schedule;
mod sums;

pub use passes::{
    backward, forward, norms, norms_f64, sub_scaled, sub_scaled_in_place, weight_norm,
};
pub use schedule::{set_stream_min_bytes, stream_min_bytes};
pub use sums::Real as Element;

/// Test data shared by the kernels' unit tests.
#[cfg(test)]
pub(super) mod test_data {
    /// Views `[outer, n, inner]` for every schedule: empty (each factor zero), one element,
    /// lengths that are not multiples of 8 or of the chunk, the last axis (`inner == 1`), the
    /// whole tensor (`[1, 1, numel]`), few large slices, many short runs.
    pub(crate) const SPLITS: [[usize; 3]; 17] = [
        [0, 3, 4],
        [3, 0, 4],
        [3, 4, 0],
        [1, 1, 1],
        [1, 1, 13],
        [1, 6, 9],
        [1, 1, 100_003],
        [1, 2, 70_001],
        [1, 9, 70_001],
        [9, 5, 1],
        [3000, 21, 1],
        [3, 5, 7],
        [40, 33, 17],
        [2, 3, 20_001],
        [700, 3, 9],
        [1, 4097, 3],
        [5, 1, 1],
    ];

    /// Deterministic values in `[-1, 1)`.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f64> {
        crate::rng::SplitMix64(seed).vec(n)
    }
}
