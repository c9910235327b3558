//! The statistics every report and plot is computed with: a quantity over seeds ([`Stat`]: mean,
//! sample standard deviation, the test of a difference), moving averages and quantiles.

/// A quantity over the seeds of one parameterization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (n - 1 in the denominator); 0 for a single seed.
    pub sd: f64,
    /// The number of values.
    pub n: usize,
}

impl Stat {
    /// The statistics of `xs` (not empty).
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Self { mean, sd, n }
    }

    /// The standard error of the mean.
    pub fn se(&self) -> f64 {
        self.sd / (self.n as f64).sqrt()
    }

    /// `mean ± sd` with `digits` decimals (the spread left out for one seed).
    pub fn show(&self, digits: usize) -> String {
        if self.n > 1 {
            format!("{:.digits$} ± {:.digits$}", self.mean, self.sd)
        } else {
            format!("{:.digits$}", self.mean)
        }
    }

    /// Whether the mean differs from zero by more than twice its standard error (at least two
    /// values needed).
    pub fn nonzero(&self) -> bool {
        self.n >= 2 && self.mean.abs() > 2.0 * self.se()
    }

    /// Whether `self` and `other` differ by more than twice the standard error of their
    /// difference (both need at least two values).
    pub fn differs(&self, other: &Stat) -> bool {
        if self.n < 2 || other.n < 2 {
            return false;
        }
        let se = (self.se().powi(2) + other.se().powi(2)).sqrt();
        (self.mean - other.mean).abs() > 2.0 * se
    }
}

/// The mean of the last `w` values (fewer at the start) at every point of `xs`.
pub fn moving_average(xs: &[f64], w: usize) -> Vec<f64> {
    let w = w.max(1);
    let mut out = Vec::with_capacity(xs.len());
    let mut sum = 0.0;
    for (i, x) in xs.iter().enumerate() {
        sum += x;
        if i >= w {
            sum -= xs[i - w];
        }
        out.push(sum / (i + 1).min(w) as f64);
    }
    out
}

/// The `q`-quantile (0..=1) of sorted `xs` (nearest rank); NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_sample_standard_deviation() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        // sum of squared deviations 5, over n - 1 = 3
        assert!((s.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(s.show(2), "2.50 ± 1.29");
        assert_eq!(Stat::of(&[0.5]).show(3), "0.500");
        assert_eq!(Stat::of(&[0.5]).sd, 0.0);
    }

    #[test]
    fn differences_count_only_beyond_twice_their_standard_error() {
        let a = Stat::of(&[1.0, 1.1, 0.9]);
        let b = Stat::of(&[1.05, 1.15, 0.95]);
        let c = Stat::of(&[2.0, 2.1, 1.9]);
        assert!(!a.differs(&b));
        assert!(a.differs(&c) && c.differs(&a));
        assert!(!Stat::of(&[1.0]).differs(&Stat::of(&[5.0])));
    }

    #[test]
    fn moving_averages_and_quantiles() {
        assert_eq!(
            moving_average(&[1.0, 3.0, 5.0, 7.0], 2),
            vec![1.0, 2.0, 4.0, 6.0]
        );
        assert_eq!(moving_average(&[1.0, 3.0], 0), vec![1.0, 3.0]);
        let xs: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 5.0);
        assert_eq!(quantile(&xs, 0.9), 9.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
