//! An optimizer's state carried across a rescaling, element by element, on plain slices.
//!
//! A rescaling that keeps the function (the canonical form's, [`crate::canonical::rescale`])
//! multiplies each element of a weight or bias by a factor `a > 0`. In the new coordinates the
//! loss is the old loss composed with the inverse rescaling, so the element's gradient is
//! divided by `a`. What that means for the state an optimizer keeps per element:
//!
//! | policy | a first moment or velocity `m` (order 1) | a second moment `v` (order 2) |
//! |---|---|---|
//! | [`Transport::Covariant`] | `m / a` | `v / a^2` |
//! | [`Transport::WeightScaled`] | `a m` | `a^2 v` |
//! | [`Transport::Reset`] | the state starts afresh | the state starts afresh |
//! | [`Transport::Keep`] | `m` | `v` |
//!
//! `covariant` is the state the optimizer would hold had it seen the rescaled gradients all
//! along: exact for Adam, AdamW (AMSGrad's maximum too) and SGD with momentum, whose state is a
//! function of the gradients only. It is a statement about the state, not the trajectory:
//! Adam's update `lr m^ / (sqrt(v^) + eps)` is nearly invariant to a gradient's scale, so after
//! the rescaling an element moves by about what it moved before, not `a` times it.
//!
//! Which fields of which optimizer have which [`Order`] is the front-end's table (Burn's
//! `momentum.moment_1`, PyTorch's `exp_avg`, ...); this module only does the arithmetic, in
//! `f64` with one rounding per element.
//!
//! ```
//! use weightnorm_core::transport::{Order, Transport, transport_f32};
//!
//! let mut m = [1.0f32, -4.0];
//! let mut v = [1.0f32, 16.0];
//! let a = [2.0, 0.5];
//! transport_f32(&mut m, &a, Order::First, Transport::Covariant);
//! transport_f32(&mut v, &a, Order::Second, Transport::Covariant);
//! assert_eq!((m, v), ([0.5, -8.0], [0.25, 64.0]));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How an optimizer's state crosses a rescaling that multiplied a parameter element by `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// `m / a`, `v / a^2`: the state the optimizer would hold had it run in the new
    /// coordinates all along.
    Covariant,
    /// `a m`, `a^2 v`.
    WeightScaled,
    /// The rescaled parameters' state starts afresh (zero moments, step count 0).
    Reset,
    /// The state is left as it is.
    Keep,
}

impl Transport {
    /// Every policy, in the order of the documentation.
    pub const ALL: [Transport; 4] = [
        Transport::Covariant,
        Transport::WeightScaled,
        Transport::Reset,
        Transport::Keep,
    ];

    /// `covariant`, `weight-scaled`, `reset` or `keep`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Covariant => "covariant",
            Self::WeightScaled => "weight-scaled",
            Self::Reset => "reset",
            Self::Keep => "keep",
        }
    }

    /// What a value of `order` is multiplied by when its element was multiplied by `a`: `a^-k`
    /// (covariant) or `a^k` (weight-scaled), `k` the order; 1 for `keep`, and 0 for `reset`
    /// (a fresh state is zero).
    pub fn multiplier(self, a: f64, order: Order) -> f64 {
        let b = match self {
            Self::Covariant => 1.0 / a,
            Self::WeightScaled => a,
            Self::Keep => return 1.0,
            Self::Reset => return 0.0,
        };
        match order {
            Order::First => b,
            Order::Second => b * b,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the four policies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid transport `{0}`: expected `covariant`, `weight-scaled`, `reset` or `keep`")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| UnknownTransport(s.to_string()))
    }
}

/// The order of a state field in the gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// A first moment or a velocity: Adam's `m`, SGD's momentum buffer.
    First,
    /// A second moment: Adam's `v` and AMSGrad's running maximum of it.
    Second,
}

/// `values[i] *= multiplier(factors[i])` in `f64`, rounded once to `f32`.
///
/// # Panics
///
/// If the two slices differ in length.
pub fn transport_f32(values: &mut [f32], factors: &[f64], order: Order, policy: Transport) {
    assert_eq!(values.len(), factors.len(), "one factor per value");
    if policy == Transport::Keep {
        return;
    }
    for (x, &a) in values.iter_mut().zip(factors) {
        *x = (f64::from(*x) * policy.multiplier(a, order)) as f32;
    }
}

/// `values[i] *= multiplier(factors[i])` in `f64`.
///
/// # Panics
///
/// If the two slices differ in length.
pub fn transport_f64(values: &mut [f64], factors: &[f64], order: Order, policy: Transport) {
    assert_eq!(values.len(), factors.len(), "one factor per value");
    if policy == Transport::Keep {
        return;
    }
    for (x, &a) in values.iter_mut().zip(factors) {
        *x *= policy.multiplier(a, order);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_follow_the_table() {
        let a = 4.0;
        assert_eq!(Transport::Covariant.multiplier(a, Order::First), 0.25);
        assert_eq!(Transport::Covariant.multiplier(a, Order::Second), 0.0625);
        assert_eq!(Transport::WeightScaled.multiplier(a, Order::First), 4.0);
        assert_eq!(Transport::WeightScaled.multiplier(a, Order::Second), 16.0);
        assert_eq!(Transport::Keep.multiplier(a, Order::Second), 1.0);
        assert_eq!(Transport::Reset.multiplier(a, Order::First), 0.0);
    }

    #[test]
    fn covariant_state_is_that_of_rescaled_gradients() {
        // m = sum of gradients g_t, v = sum of g_t^2: with every gradient divided by a, the
        // state a run in the new coordinates holds is exactly the transported one.
        let grads = [[0.5f64, -1.5], [2.0, 0.25], [-0.75, 3.0]];
        let a = [3.0, 0.125];
        let (mut m, mut v) = ([0.0; 2], [0.0; 2]);
        let (mut m_new, mut v_new) = ([0.0; 2], [0.0; 2]);
        for g in grads {
            for i in 0..2 {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let h = g[i] / a[i];
                m_new[i] = 0.9 * m_new[i] + 0.1 * h;
                v_new[i] = 0.999 * v_new[i] + 0.001 * h * h;
            }
        }
        transport_f64(&mut m, &a, Order::First, Transport::Covariant);
        transport_f64(&mut v, &a, Order::Second, Transport::Covariant);
        for i in 0..2 {
            assert!((m[i] - m_new[i]).abs() <= 1e-15 * m_new[i].abs());
            assert!((v[i] - v_new[i]).abs() <= 1e-15 * v_new[i].abs());
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>(), Ok(t));
        }
        let e = "sideways".parse::<Transport>().unwrap_err();
        assert!(e.to_string().contains("`sideways`"), "{e}");
    }

    #[test]
    fn f32_is_rounded_once_from_f64() {
        let mut x = [1.0f32 / 3.0];
        transport_f32(&mut x, &[3.0], Order::First, Transport::WeightScaled);
        assert_eq!(x[0], (f64::from(1.0f32 / 3.0) * 3.0) as f32);
    }
}
