//! Runs grouped by parameterization and summarized over their seeds: means, spreads, bands of
//! curves. What the report, the terminal table and the plots of `compare` are computed from.

use crate::metrics::{EpochMetrics, RunMetrics};
use crate::stats::{Stat, moving_average};

/// One parameterization over its seeds.
#[derive(Clone, Debug)]
pub struct Group<'a> {
    /// The parameterization's name.
    pub param: String,
    /// Its runs, one per seed, in the order they were given.
    pub runs: Vec<&'a RunMetrics>,
}

/// The final scores and costs of a group.
#[derive(Clone, Copy, Debug)]
pub struct Scores {
    /// Test accuracy after the last epoch.
    pub accuracy: Stat,
    /// Test loss (the objective) after the last epoch.
    pub loss: Stat,
    /// Test NLL of the softmax after the last epoch.
    pub nll: Stat,
    /// Expected calibration error after the last epoch.
    pub ece: Stat,
    /// Median step time of each run, in milliseconds (the median, so that the first steps of
    /// a process, which pay for warming up, do not weigh on the first run trained).
    pub step_ms: Stat,
    /// Wall time of the run, in seconds.
    pub seconds: Stat,
}

/// The runs grouped by parameterization, in the order each first appears.
pub fn groups(runs: &[RunMetrics]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|g| g.param == r.param) {
            Some(g) => g.runs.push(r),
            None => out.push(Group {
                param: r.param.clone(),
                runs: vec![r],
            }),
        }
    }
    out
}

impl Group<'_> {
    /// One final quantity of every run.
    fn finals(&self, f: impl Fn(&EpochMetrics) -> f64) -> Stat {
        let xs: Vec<f64> = self
            .runs
            .iter()
            .map(|r| r.last().map_or(f64::NAN, &f))
            .collect();
        Stat::of(&xs)
    }

    /// The group's final scores and costs.
    pub fn scores(&self) -> Scores {
        let of = |f: fn(&RunMetrics) -> f64| {
            Stat::of(&self.runs.iter().map(|r| f(r)).collect::<Vec<_>>())
        };
        Scores {
            accuracy: self.finals(|e| e.test_accuracy),
            loss: self.finals(|e| e.test_loss),
            nll: self.finals(|e| e.test_nll),
            ece: self.finals(|e| e.ece),
            step_ms: of(RunMetrics::median_step_ms),
            seconds: of(|r| r.seconds),
        }
    }

    /// The seeds of the runs.
    pub fn seeds(&self) -> Vec<u64> {
        self.runs.iter().map(|r| r.seed).collect()
    }

    /// A per-epoch quantity across seeds: for every epoch all runs finished, its mean, least
    /// and greatest value.
    pub fn epoch_band(&self, f: impl Fn(&EpochMetrics) -> f64) -> Band {
        let curves: Vec<Vec<f64>> = self.runs.iter().map(|r| r.per_epoch(&f)).collect();
        Band::of(&curves)
    }

    /// The step losses smoothed by a moving average over `w` steps, across seeds.
    pub fn loss_band(&self, w: usize) -> Band {
        let curves: Vec<Vec<f64>> = self
            .runs
            .iter()
            .map(|r| moving_average(&r.step_losses, w))
            .collect();
        Band::of(&curves)
    }

    /// The mean over seeds of the wall-clock seconds at the end of every step.
    pub fn mean_seconds(&self) -> Vec<f64> {
        let curves: Vec<Vec<f64>> = self.runs.iter().map(|r| r.step_seconds.clone()).collect();
        Band::of(&curves).mean
    }

    /// Every step time of every run, sorted, in milliseconds.
    pub fn step_times(&self) -> Vec<f64> {
        let mut all: Vec<f64> = self
            .runs
            .iter()
            .flat_map(|r| r.step_ms.iter().copied())
            .filter(|t| t.is_finite())
            .collect();
        all.sort_by(f64::total_cmp);
        all
    }
}

/// The relative change of `losses` at step `k`: the mean of the [`BEFORE`] values from `k` over
/// that of the [`BEFORE`] values before it, minus 1; `None` without both windows or with a
/// non-positive base.
pub fn jump_at(losses: &[f64], k: usize) -> Option<f64> {
    if k < BEFORE || k + BEFORE > losses.len() {
        return None;
    }
    let before = losses[k - BEFORE..k].iter().sum::<f64>() / BEFORE as f64;
    let after = losses[k..k + BEFORE].iter().sum::<f64>() / BEFORE as f64;
    (before > 0.0 && before.is_finite() && after.is_finite()).then(|| after / before - 1.0)
}

/// The steps before and after a canonicalization that [`Group::around_events`] looks at.
pub const BEFORE: usize = 10;

impl Group<'_> {
    /// Whether the group's runs used Periodic Canonical Regularization.
    pub fn is_pcr(&self) -> bool {
        self.runs.iter().any(|r| r.pcr.is_some())
    }

    /// The training loss around the canonicalizations, relative to the mean loss of the
    /// [`BEFORE`] steps before each: for offsets `-before..after` from the step that follows a
    /// canonicalization, the mean over every canonicalization (of every seed) that has the whole
    /// window. `None` when no canonicalization has it.
    pub fn around_events(&self, before: usize, after: usize) -> Option<Vec<(i64, f64)>> {
        let mut sums = vec![0.0; before + after];
        let mut count = 0usize;
        for r in &self.runs {
            let l = &r.step_losses;
            for e in &r.pcr_events {
                let k = e.step;
                if k < before.max(BEFORE) || k + after > l.len() {
                    continue;
                }
                let base = l[k - BEFORE..k].iter().sum::<f64>() / BEFORE as f64;
                if !(base > 0.0 && base.is_finite()) {
                    continue;
                }
                for (i, s) in sums.iter_mut().enumerate() {
                    *s += l[k - before + i] / base;
                }
                count += 1;
            }
        }
        (count > 0).then(|| {
            sums.iter()
                .enumerate()
                .map(|(i, s)| (i as i64 - before as i64, s / count as f64))
                .collect()
        })
    }

    /// The mean relative jump of the training loss at a canonicalization: the mean loss of the
    /// [`BEFORE`] steps after it over that of the [`BEFORE`] steps before, minus 1, averaged
    /// over the canonicalizations of every seed (NaN without any).
    pub fn loss_jump(&self) -> f64 {
        self.around_events(BEFORE, BEFORE).map_or(f64::NAN, |c| {
            c[BEFORE..].iter().map(|p| p.1).sum::<f64>() / BEFORE as f64 - 1.0
        })
    }

    /// The loss jump at each canonicalization minus the jump of `baseline`'s run of the same
    /// seed over the same steps: what the canonicalization did beyond the loss's own change at
    /// that point of training. One value per canonicalization (of every seed `baseline` ran
    /// and whose windows both runs have).
    pub fn excess_jumps(&self, baseline: &Group) -> Vec<f64> {
        let mut out = Vec::new();
        for r in &self.runs {
            let Some(b) = baseline.runs.iter().find(|b| b.seed == r.seed) else {
                continue;
            };
            for e in &r.pcr_events {
                if let (Some(x), Some(y)) = (
                    jump_at(&r.step_losses, e.step),
                    jump_at(&b.step_losses, e.step),
                ) {
                    out.push(x - y);
                }
            }
        }
        out
    }

    /// The mean number of canonicalizations per run.
    pub fn events_per_run(&self) -> f64 {
        self.runs.iter().map(|r| r.pcr_events.len()).sum::<usize>() as f64
            / self.runs.len().max(1) as f64
    }

    /// The largest relative change of a batch's loss across a canonicalization (`loss_after`
    /// against `loss_before`, the same batch), over every event of every seed (NaN without).
    pub fn max_event_change(&self) -> f64 {
        self.runs
            .iter()
            .flat_map(|r| r.pcr_events.iter())
            .map(|e| ((e.loss_after - e.loss_before) / e.loss_before).abs())
            .fold(f64::NAN, f64::max)
    }

    /// The global gain over training across seeds: the steps of the first run and the band.
    pub fn gain_band(&self) -> (Vec<f64>, Band) {
        let steps = self.runs.first().map_or(Vec::new(), |r| {
            r.global_gain.iter().map(|g| g.0 as f64).collect()
        });
        let curves: Vec<Vec<f64>> = self
            .runs
            .iter()
            .map(|r| r.global_gain.iter().map(|g| g.1).collect())
            .collect();
        (steps, Band::of(&curves))
    }
}

/// Curves across seeds, point by point, over the length all of them reach.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Band {
    /// The mean at every point.
    pub mean: Vec<f64>,
    /// The least value at every point.
    pub lo: Vec<f64>,
    /// The greatest value at every point.
    pub hi: Vec<f64>,
}

impl Band {
    /// The band of `curves` (over the shortest one's length).
    pub fn of(curves: &[Vec<f64>]) -> Self {
        let len = curves.iter().map(Vec::len).min().unwrap_or(0);
        let mut b = Band::default();
        for i in 0..len {
            let xs = curves.iter().map(|c| c[i]);
            b.mean.push(xs.clone().sum::<f64>() / curves.len() as f64);
            b.lo.push(xs.clone().fold(f64::INFINITY, f64::min));
            b.hi.push(xs.fold(f64::NEG_INFINITY, f64::max));
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_by_parameterization_in_order_and_bands_span_the_seeds() {
        let mut runs = Vec::new();
        for seed in 0..3u64 {
            for p in ["plain", "wn"] {
                let mut m = RunMetrics::new(p, seed);
                m.step_losses = vec![seed as f64; 4 + seed as usize];
                m.step_seconds = (1..=4).map(|i| (i as f64) * (seed + 1) as f64).collect();
                runs.push(m);
            }
        }
        let g = groups(&runs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].param, "wn");
        assert_eq!(g[1].seeds(), vec![0, 1, 2]);
        let b = g[0].loss_band(2);
        assert_eq!(b.mean, vec![1.0; 4]); // the shortest run's length
        assert_eq!(b.lo, vec![0.0; 4]);
        assert_eq!(b.hi, vec![2.0; 4]);
        assert_eq!(g[0].mean_seconds(), vec![2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn the_loss_around_canonicalizations_is_relative_to_the_steps_before() {
        let mut r = RunMetrics::new("pcr-covariant", 0);
        r.pcr = Some("every 20".into());
        // Loss 1 until step 20, 1.5 for the 10 steps after, then 1 again.
        r.step_losses = (0..60)
            .map(|i| if (20..30).contains(&i) { 1.5 } else { 1.0 })
            .collect();
        for step in [20, 40, 60] {
            r.pcr_events.push(crate::metrics::PcrEvent {
                step,
                gain_before: 2.0,
                gain_after: 2.0,
                loss_before: 1.0,
                loss_after: if step == 20 { 1.25 } else { 1.0 },
            });
        }
        let runs = [r];
        let g = &groups(&runs)[0];
        assert!(g.is_pcr());
        // Step 60 has no steps after it: only 20 and 40 count.
        let c = g.around_events(2, 3).unwrap();
        assert_eq!(
            c,
            vec![(-2, 1.0), (-1, 1.0), (0, 1.25), (1, 1.25), (2, 1.25)]
        );
        assert!((g.loss_jump() - 0.25).abs() < 1e-12);
        assert_eq!(g.max_event_change(), 0.25);
    }
}
