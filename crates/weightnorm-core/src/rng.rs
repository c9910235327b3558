//! One small deterministic generator for everything this project draws without a framework's
//! generator: test data, data-set splits and orders, random verification inputs. SplitMix64
//! (G. L. Steele, D. Lea and C. H. Flood, *Fast splittable pseudorandom number generators*,
//! OOPSLA 2014): 64 bits of state, a stream fixed by its seed on every machine.
//!
//! ```
//! use weightnorm_core::rng::SplitMix64;
//!
//! let mut a = SplitMix64(7);
//! let mut b = SplitMix64(7);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let x = a.uniform();
//! assert!((-1.0..1.0).contains(&x));
//! let mut order: Vec<usize> = (0..10).collect();
//! SplitMix64(1).shuffle(&mut order);
//! order.sort_unstable();
//! assert_eq!(order, (0..10).collect::<Vec<_>>());
//! ```

/// The golden-ratio increment of SplitMix64, also used to spread seeds.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64: the state is the tuple's field; every call advances it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[-1, 1)` (53 bits).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Uniform in `[-1, 1)` as `f32` (24 bits).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in `[-1, 1)`.
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// A value in `0..n` (by the remainder: for the small `n` of tests and shuffles the bias is
    /// below `n / 2^64`).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Shuffles `xs` in place (Fisher-Yates, from the last element down).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_splitmix64s() {
        // The first outputs for seed 0, as the reference implementation gives them.
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ranges_hold() {
        let mut r = SplitMix64(42);
        for _ in 0..10_000 {
            assert!((0.0..1.0).contains(&r.next_f64()));
            assert!((-1.0..1.0).contains(&r.uniform()));
            assert!((-1.0..1.0).contains(&r.uniform_f32()));
            assert!(r.below(7) < 7);
        }
    }
}
