//! The comparison's `report.md` and its terminal summary, built from run summaries: a
//! conclusion computed from the numbers, the setup with the command line and the version, the
//! scores with their spread over seeds, each run, the plots and the definitions.

use crate::metrics::{RunMetrics, RunSetup};
use crate::stats::Stat;
use crate::summary::{Group, Scores, groups};

/// The file names of the comparison's plots, in the order the report shows them.
pub const PLOTS: &[(&str, &str)] = &[
    (
        "loss.png",
        "Training loss against steps (log scale; moving average; band: least to greatest over seeds)",
    ),
    (
        "test.png",
        "Test loss (the objective), test NLL of the softmax and test accuracy after every epoch (mean over seeds; band: least to greatest)",
    ),
    (
        "loss_time.png",
        "Training loss against wall-clock seconds (evaluations included)",
    ),
    (
        "step_time.png",
        "Time per training step (median; whiskers: 10th to 90th percentile of all steps)",
    ),
];

/// The comparison's `report.md`. `command` is the command line it was started with.
///
/// # Panics
///
/// If `runs` is empty.
pub fn report(setup: &RunSetup, runs: &[RunMetrics], command: &str) -> String {
    let groups = groups(runs);
    let scored: Vec<(&Group, Scores)> = groups.iter().map(|g| (g, g.scores())).collect();
    let seeds = groups[0].seeds();
    let mut s = String::from("# weightnorm compare\n\n");
    s += &format!("**Conclusion.** {}\n\n", conclusion(setup, &scored));
    let warned = warnings(runs);
    if !warned.is_empty() {
        s += "**Warnings.**\n\n";
        for w in &warned {
            s += &format!("- {w}\n");
        }
        s += "\n";
    }
    s += &setup_section(setup, &seeds, command);
    s += &format!(
        "\n## Results\n\nAfter the last epoch: mean ± sample standard deviation over {} seed{}.\n\n\
         | parameterization | test accuracy | test loss | test NLL | ECE | step time (ms) | overhead vs plain | run time (s) |\n\
         |---|---|---|---|---|---|---|---|\n",
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" }
    );
    let plain = plain_step(&scored);
    for (g, sc) in &scored {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            g.param,
            sc.accuracy.show(4),
            sc.loss.show(4),
            sc.nll.show(4),
            sc.ece.show(4),
            sc.step_ms.show(2),
            overhead(&g.param, sc, plain),
            sc.seconds.mean
        );
    }
    s += "\n### Every run\n\n| parameterization | seed | test accuracy | test loss | ECE | step time (ms) |\n|---|---|---|---|---|---|\n";
    for r in runs {
        if let Some(e) = r.last() {
            s += &format!(
                "| {} | {} | {:.4} | {:.4} | {:.4} | {:.2} |\n",
                r.param,
                r.seed,
                e.test_accuracy,
                e.test_loss,
                e.ece,
                r.median_step_ms()
            );
        }
    }
    s += &pcr_section(&scored);
    s += "\n## Plots\n\n";
    for (file, what) in PLOTS {
        s += &format!("{what}:\n\n![{file}]({file})\n\n");
    }
    s += &format!("{GAIN_PLOT}:\n\n![gain.png](gain.png)\n\n");
    s += &definitions();
    s
}

/// What `gain.png` shows.
pub const GAIN_PLOT: &str = "The global gain over training (log scale; at every epoch's end, and \
     before every canonicalization of PCR runs)";

/// What `pcr_loss.png` shows.
pub const PCR_PLOT: &str = "Training loss around the canonicalizations, relative to the mean loss \
     of the 10 steps before each (mean over canonicalizations and seeds; offset 0 is the first \
     step after the rescaling)";

/// The section on Periodic Canonical Regularization, when a run used it: its setup, the
/// smoothness of training across canonicalizations per transport policy, and the PCR runs
/// against plain, plain-wd and wn.
fn pcr_section(scored: &[(&Group, Scores)]) -> String {
    let pcr: Vec<&(&Group, Scores)> = scored.iter().filter(|(g, _)| g.is_pcr()).collect();
    if pcr.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Periodic Canonical Regularization\n\n");
    let setups: Vec<String> = pcr
        .iter()
        .filter_map(|(g, _)| g.runs[0].pcr.clone().map(|p| format!("{}: {p}", g.param)))
        .collect();
    s += &format!("Setup: {}.\n\n", setups.join("; "));
    s += "| run | test accuracy | test loss | ECE | canonicalizations | largest change of a batch's loss across one | loss jump after | final global gain |\n|---|---|---|---|---|---|---|---|\n";
    for (g, sc) in &pcr {
        let events = g.runs.iter().map(|r| r.pcr_events.len()).sum::<usize>() / g.runs.len();
        let gain = Stat::of(
            &g.runs
                .iter()
                .filter_map(|r| r.global_gain.last().map(|x| x.1))
                .collect::<Vec<_>>(),
        );
        s += &format!(
            "| {} | {} | {} | {} | {events} | {:.2e} | {:+.2}% | {} |\n",
            g.param,
            sc.accuracy.show(4),
            sc.loss.show(4),
            sc.ece.show(4),
            g.max_event_change(),
            g.loss_jump() * 100.0,
            if gain.n > 0 { gain.show(3) } else { "-".into() }
        );
    }
    s += &smoothness(scored, &pcr);
    for base in ["plain-wd", "plain", "wn"] {
        let Some((_, b)) = scored.iter().find(|(g, _)| g.param == base) else {
            continue;
        };
        let lines: Vec<String> = pcr
            .iter()
            .map(|(g, sc)| {
                format!(
                    "{}: test loss {}, ECE {}, accuracy {}",
                    g.param,
                    delta(&sc.loss, &b.loss, 1.0, 4, ""),
                    delta(&sc.ece, &b.ece, 1.0, 4, ""),
                    delta(&sc.accuracy, &b.accuracy, 100.0, 2, " points"),
                )
            })
            .collect();
        s += &format!("\nAgainst {base}: {}.\n", lines.join("; "));
    }
    s += &format!("\n{PCR_PLOT}:\n\n![pcr_loss.png](pcr_loss.png)\n");
    s
}

/// How much each PCR policy disturbs training across its canonicalizations, measured against
/// plain at the same steps of the same seed (the loss's own change there taken out), and the
/// least disturbed policy.
fn smoothness(scored: &[(&Group, Scores)], pcr: &[&(&Group, Scores)]) -> String {
    let Some((plain, _)) = scored.iter().find(|(g, _)| g.param == "plain") else {
        return "\nNo plain run to measure the loss jumps against: they include the loss's own \
                change over the same steps, so no policy is called smoother than another.\n"
            .to_string();
    };
    let rows: Vec<(&str, Stat)> = pcr
        .iter()
        .filter_map(|(g, _)| {
            let x = g.excess_jumps(plain);
            (!x.is_empty()).then(|| (g.param.as_str(), Stat::of(&x)))
        })
        .collect();
    if rows.is_empty() {
        return format!(
            "\nNo canonicalization has the {b} steps before and after it in both its run and \
             plain's: the disturbance cannot be measured.\n",
            b = crate::summary::BEFORE
        );
    }
    let verdict = |st: &Stat| {
        if st.n < 2 {
            "one value, no spread"
        } else if st.nonzero() {
            "beyond noise"
        } else {
            "within noise"
        }
    };
    let mut s = format!(
        "\nAcross canonicalizations, against plain at the same steps (the loss change over the \
         {b} steps after each canonicalization minus plain's change over the same steps, same \
         seed; mean ± sd over canonicalizations and seeds): {}.",
        rows.iter()
            .map(|(p, st)| format!(
                "{p} {:+.2}% ± {:.2}% over {} ({})",
                st.mean * 100.0,
                st.sd * 100.0,
                st.n,
                verdict(st)
            ))
            .collect::<Vec<_>>()
            .join("; "),
        b = crate::summary::BEFORE
    );
    let any_detected = rows.iter().any(|(_, st)| st.nonzero());
    if rows.len() == 1 {
        if !any_detected {
            s += " No detectable disturbance.";
        }
    } else if let Some((p, _)) = rows
        .iter()
        .min_by(|a, b| a.1.mean.abs().total_cmp(&b.1.mean.abs()))
    {
        if any_detected {
            s += &format!(" The least disturbed relative to plain is **{p}**.");
        } else {
            s += &format!(
                " No policy disturbs training detectably (all within noise); the least \
                 disturbed on average is **{p}**."
            );
        }
    }
    s + "\n"
}

/// What the numbers of a comparison cannot support, said before they are read: PCR without a
/// penalty (a rescaling, not a regularizer) and PCR runs with too few canonicalizations to
/// judge.
pub fn warnings(runs: &[RunMetrics]) -> Vec<String> {
    let mut out = Vec::new();
    for g in groups(runs).iter().filter(|g| g.is_pcr()) {
        if g.runs
            .iter()
            .any(|r| r.pcr.as_deref().is_some_and(|p| p.contains("penalty none")))
        {
            out.push(format!(
                "{} uses penalty `none`: each canonicalization only rescales (the function is \
                 unchanged), so it is not a regularizer and a comparison with plain-wd says \
                 nothing about PCR as one; give --pcr-penalty cap:G or soft:L",
                g.param
            ));
        }
        let n = g.events_per_run();
        if n < 5.0 {
            out.push(format!(
                "{} has {n} canonicalization{} per run, fewer than 5: too few to judge its \
                 transport or penalty; lower --pcr-every or train longer",
                g.param,
                if n == 1.0 { "" } else { "s" }
            ));
        }
    }
    out
}

/// The step times of `plain`, when it was trained.
fn plain_step(scored: &[(&Group, Scores)]) -> Option<Stat> {
    scored
        .iter()
        .find(|(g, _)| g.param == "plain")
        .map(|(_, s)| s.step_ms)
}

/// The step-time overhead of a group over plain's, as `+12.3%` with whether it is within the
/// seeds' noise (empty for plain itself).
fn overhead(param: &str, sc: &Scores, plain: Option<Stat>) -> String {
    match plain {
        Some(p) if param != "plain" => format!(
            "{:+.1}%{}",
            (sc.step_ms.mean / p.mean - 1.0) * 100.0,
            verdict(&sc.step_ms, &p)
        ),
        _ => String::new(),
    }
}

/// ` (beyond noise)`, ` (within noise)`, or nothing without two values on each side.
fn verdict(a: &Stat, b: &Stat) -> &'static str {
    if a.n < 2 || b.n < 2 {
        ""
    } else if a.differs(b) {
        " (beyond noise)"
    } else {
        " (within noise)"
    }
}

/// The short conclusion the report opens with, computed from the scores.
fn conclusion(setup: &RunSetup, scored: &[(&Group, Scores)]) -> String {
    let pick = |f: fn(&Scores) -> f64, low: bool| {
        scored
            .iter()
            .filter(|(_, s)| f(s).is_finite())
            .min_by(|a, b| {
                let (x, y) = (f(&a.1), f(&b.1));
                if low {
                    x.total_cmp(&y)
                } else {
                    y.total_cmp(&x)
                }
            })
            .map(|(g, s)| (g.param.as_str(), f(s)))
    };
    let n = scored.first().map_or(0, |(_, s)| s.loss.n);
    let mut s = format!(
        "On {} ({} model, {} epochs, {n} seed{}), ",
        setup.dataset,
        setup.model,
        setup.epochs,
        if n == 1 { "" } else { "s" }
    );
    let best: Vec<String> = [
        ("the lowest test loss", pick(|s| s.loss.mean, true), 4),
        (
            "the highest test accuracy",
            pick(|s| s.accuracy.mean, false),
            4,
        ),
        ("the lowest ECE", pick(|s| s.ece.mean, true), 4),
    ]
    .into_iter()
    .filter_map(|(what, best, d)| best.map(|(p, v)| format!("**{p}** has {what} ({v:.d$})")))
    .collect();
    s += &best.join(", ");
    s += ".";
    let Some((_, plain)) = scored.iter().find(|(g, _)| g.param == "plain") else {
        return s;
    };
    let others: Vec<String> = scored
        .iter()
        .filter(|(g, _)| g.param != "plain")
        .map(|(g, sc)| {
            format!(
                "{} changes the test loss by {}, the accuracy by {}, the ECE by {} and the step \
                 time by {}",
                g.param,
                delta(&sc.loss, &plain.loss, 1.0, 4, ""),
                delta(&sc.accuracy, &plain.accuracy, 100.0, 2, " points"),
                delta(&sc.ece, &plain.ece, 1.0, 4, ""),
                overhead(&g.param, sc, Some(plain.step_ms))
            )
        })
        .collect();
    if !others.is_empty() {
        s += " Against plain: ";
        s += &others.join("; ");
        s += ".";
        let detected = scored
            .iter()
            .filter(|(g, _)| g.param != "plain")
            .any(|(_, sc)| {
                sc.loss.differs(&plain.loss)
                    || sc.accuracy.differs(&plain.accuracy)
                    || sc.ece.differs(&plain.ece)
            });
        if n < 2 {
            s += " With one seed there is no spread to judge these differences by: use --seeds.";
        } else {
            if !detected {
                s += " No detectable effect on the test loss, accuracy or ECE (all differences \
                      within noise).";
            }
            s += " (\"within noise\": the difference is less than twice its standard error over \
                  the seeds.)";
        }
    }
    s
}

/// `a - b` scaled by `scale`, signed, with whether it is within the seeds' noise.
fn delta(a: &Stat, b: &Stat, scale: f64, digits: usize, unit: &str) -> String {
    let d = (a.mean - b.mean) * scale;
    format!("{d:+.digits$}{unit}{}", verdict(a, b))
}

/// The setup, the command line and the version.
fn setup_section(setup: &RunSetup, seeds: &[u64], command: &str) -> String {
    let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
    format!(
        "## Setup\n\n\
         - data set: {} (inputs standardized with the training pixels' mean {:.4} and standard deviation {:.4})\n\
         - training data: {}\n\
         - model: {}, initialisation {}\n\
         - training: {} epochs, batch {}, Adam with learning rate {}, objective {}\n\
         - seeds: {} (each seed sets the initialisation and the data order; every parameterization sees the same order)\n\
         - device: {}, {} CPU thread{}\n\
         - allocator (the step times were taken under it, as in `weightnorm bench`): {}\n\
         - command: `{}`\n\
         - version: weightnorm {}\n",
        setup.dataset,
        setup.input_norm.0,
        setup.input_norm.1,
        training_data(setup),
        setup.model,
        setup.init,
        setup.epochs,
        setup.batch_size,
        setup.lr,
        setup.loss,
        seeds.join(", "),
        setup.device,
        setup.threads,
        if setup.threads == 1 { "" } else { "s" },
        setup.allocator,
        command,
        env!("CARGO_PKG_VERSION"),
    )
}

/// The training images trained on, and how they were chosen and labelled.
fn training_data(setup: &RunSetup) -> String {
    let mut s = format!("{} images", setup.train_images);
    if setup.train_subset.is_some() {
        s += " (--train-subset: a fixed subset, the same for every run and seed)";
    }
    if setup.label_noise > 0.0 {
        s += &format!(
            ", {:.0}% of their labels replaced by a wrong class (--label-noise, fixed)",
            setup.label_noise * 100.0
        );
    }
    s
}

/// What the report's terms mean.
fn definitions() -> String {
    "## Definitions\n\n\
     - **ECE** (expected calibration error): the test examples are put in 15 equal-width bins by \
     their confidence (the largest predicted class probability); ECE is the sum over bins of the \
     bin's share of the examples times |accuracy in the bin - mean confidence in the bin|. 0 is \
     perfectly calibrated.\n\
     - **test loss**: the training objective (`--loss`) on the test split; **test NLL**: the \
     mean negative log-likelihood of the softmax of the logits (the same as the test loss under \
     `--loss ce`), the score both objectives are compared by; accuracy and ECE read the softmax \
     too. **Spread**: the sample standard \
     deviation over seeds (n - 1). **Within noise**: a difference of means smaller than twice its \
     standard error, sqrt(sd_a^2/n_a + sd_b^2/n_b).\n\
     - **step time**: the median wall time of one optimizer step (forward, backward, Adam \
     update; batches are built from memory, evaluation is not included); the overhead is \
     relative to plain's.\n\
     - **global gain**: the norm of the canonical form's output scale: every weighted layer \
     rescaled to unit-norm rows, the scales pushed through ReLUs and pooling into the next layer, \
     until one scale per output remains. **Loss jump** (PCR): the mean training loss of the 10 \
     steps after a canonicalization over that of the 10 steps before, minus 1; **against \
     plain**, the same quantity of the plain run of the same seed over the same steps is \
     subtracted, which takes out the loss's own fall at that point of training.\n\
     - **smoothing**: training losses are per batch, averaged over a moving window of \
     steps (its length is in the plot's title).\n\n\
     Each run's metrics (`metrics.json`, `steps.jsonl`), model (`model.safetensors`, PyTorch \
     `nn.Sequential` keys) and architecture (`arch.json`) are in `<parameterization>/seed-<k>/`.\n"
        .to_string()
}

/// The summary table printed on the terminal: aligned columns, no markdown.
pub fn table(runs: &[RunMetrics]) -> String {
    let groups = groups(runs);
    let scored: Vec<(&Group, Scores)> = groups.iter().map(|g| (g, g.scores())).collect();
    let plain = plain_step(&scored);
    let head = [
        "parameterization",
        "test accuracy",
        "test loss",
        "ECE",
        "step ms",
        "vs plain",
    ];
    let rows: Vec<[String; 6]> = scored
        .iter()
        .map(|(g, sc)| {
            [
                g.param.clone(),
                sc.accuracy.show(4),
                sc.loss.show(4),
                sc.ece.show(4),
                sc.step_ms.show(2),
                overhead(&g.param, sc, plain),
            ]
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&head.map(String::from)) + "\n";
    out += &(widths
        .iter()
        .map(|&w| "-".repeat(w))
        .collect::<Vec<_>>()
        .join("  ")
        + "\n");
    for r in &rows {
        out += &(line(r) + "\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    /// Runs of `plain` and `wn` over three seeds; wn's test loss lower by 0.1 (beyond noise),
    /// its accuracy within noise, its steps twice as long.
    fn runs() -> (RunSetup, Vec<RunMetrics>) {
        let (setup, base) = sample();
        let mut runs = Vec::new();
        for seed in 0..3u64 {
            for (p, loss, ms) in [("plain", 0.6, 2.0), ("wn", 0.5, 4.0)] {
                let mut r = base.clone();
                r.param = p.into();
                r.seed = seed;
                r.mean_step_ms = ms;
                let e = r.epochs.last_mut().unwrap();
                e.test_loss = loss + 0.01 * seed as f64;
                e.test_accuracy =
                    0.75 + 0.01 * [0.0, 1.0, -1.0][seed as usize] * (p == "wn") as u8 as f64;
                runs.push(r);
            }
        }
        (setup, runs)
    }

    #[test]
    fn the_report_opens_with_a_conclusion_computed_from_the_numbers() {
        let (setup, runs) = runs();
        let r = report(&setup, &runs, "weightnorm compare --seeds 0,1,2");
        let first = r.lines().nth(2).unwrap();
        assert!(
            first.starts_with("**Conclusion.** On digits (mlp model, 2 epochs, 3 seeds)"),
            "{first}"
        );
        assert!(
            first.contains("**wn** has the lowest test loss (0.5100)"),
            "{first}"
        );
        assert!(
            first.contains("wn changes the test loss by -0.1000 (beyond noise)"),
            "{first}"
        );
        assert!(
            first.contains("the accuracy by +0.00 points (within noise)"),
            "{first}"
        );
        assert!(
            first.contains("the step time by +100.0% (beyond noise)"),
            "{first}"
        );
        assert!(
            r.contains("| wn | 0.7500 ± 0.0100 | 0.5100 ± 0.0100 |"),
            "{r}"
        );
        assert!(r.contains("| plain | 2 | 0.7500 | 0.6200 |"), "{r}");
        assert!(r.contains("- command: `weightnorm compare --seeds 0,1,2`"));
        assert!(r.contains(&format!(
            "version: weightnorm {}",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(r.contains("**ECE** (expected calibration error)"));
        for (file, _) in PLOTS {
            assert!(r.contains(&format!("![{file}]({file})")), "{file}");
        }
    }

    #[test]
    fn one_seed_says_there_is_no_spread_and_no_plain_gives_no_comparison() {
        let (setup, runs) = runs();
        let r = report(&setup, &runs[..2], "c");
        assert!(r.contains("With one seed there is no spread"), "{r}");
        assert!(!r.contains("within noise)"), "{r}");
        let wn_only: Vec<RunMetrics> = runs.into_iter().filter(|r| r.param == "wn").collect();
        let r = report(&setup, &wn_only, "c");
        assert!(!r.contains("Against plain"), "{r}");
    }

    #[test]
    fn pcr_runs_get_their_section_with_warnings_and_the_baselines() {
        let (setup, mut runs) = runs();
        assert!(!report(&setup, &runs, "c").contains("## Periodic Canonical Regularization"));
        for (i, r) in runs.iter_mut().enumerate() {
            r.param = if i % 2 == 0 {
                "plain-wd"
            } else {
                "pcr-covariant"
            }
            .into();
            r.step_losses = vec![1.0; 40];
            if r.param == "pcr-covariant" {
                r.pcr = Some("every 20 steps, penalty none, transport covariant".into());
                r.pcr_events.push(crate::metrics::PcrEvent {
                    step: 20,
                    gain_before: 3.0,
                    gain_after: 3.0,
                    loss_before: 1.0,
                    loss_after: 1.0 + 1e-7,
                });
                r.global_gain = vec![(20, 3.0), (40, 4.0)];
            }
        }
        let r = report(&setup, &runs, "c");
        assert!(r.contains("## Periodic Canonical Regularization"), "{r}");
        assert!(r.contains("Setup: pcr-covariant: every 20 steps"), "{r}");
        assert!(
            r.contains("| pcr-covariant | 0.7500 ± 0.0100 | 0.5100 ± 0.0100 |"),
            "{r}"
        );
        assert!(
            r.contains("| 1 | 1.00e-7 | +0.00% | 4.000 ± 0.000 |"),
            "{r}"
        );
        assert!(
            r.contains("No plain run to measure the loss jumps against"),
            "{r}"
        );
        assert!(
            r.contains("- pcr-covariant uses penalty `none`: each canonicalization only rescales"),
            "{r}"
        );
        assert!(
            r.contains("- pcr-covariant has 1 canonicalization per run, fewer than 5"),
            "{r}"
        );
        assert!(
            r.contains("Against plain-wd: pcr-covariant: test loss -0.1000 (beyond noise)"),
            "{r}"
        );
        assert!(r.contains("![pcr_loss.png](pcr_loss.png)"));
    }

    #[test]
    fn the_terminal_table_is_aligned_text() {
        let (_, runs) = runs();
        let t = table(&runs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(!t.contains('|'), "{t}");
        let col = lines[0].find("test loss").unwrap();
        let plain_loss: String = lines[2].chars().skip(col).collect();
        assert!(plain_loss.starts_with("0.6100 ± 0.0100"), "{t}");
        assert!(lines[3].starts_with("wn "), "{t}");
        assert!(lines[3].ends_with("+100.0% (beyond noise)"), "{t}");
    }

    /// A policy's training loss at a step of a seed.
    type LossOf = fn(usize, u64) -> f64;

    /// Plain and one PCR policy per entry of `policies`, three seeds, 40 steps with a
    /// canonicalization at step 20: plain's loss falls 1% a step; each policy's loss is given
    /// by its function of the step and seed.
    fn pcr_runs(policies: &[(&str, LossOf)]) -> (RunSetup, Vec<RunMetrics>) {
        let (setup, base) = sample();
        let mut runs = Vec::new();
        for seed in 0..3u64 {
            let mut p = base.clone();
            p.param = "plain".into();
            p.seed = seed;
            p.step_losses = (0..40).map(|k| 1.0 - 0.01 * k as f64).collect();
            runs.push(p);
            for (name, loss) in policies {
                let mut r = base.clone();
                r.param = (*name).into();
                r.seed = seed;
                r.step_losses = (0..40).map(|k| loss(k, seed)).collect();
                r.pcr = Some("every 4 steps, penalty cap:3, transport covariant".into());
                for step in [4, 8, 12, 16, 20] {
                    r.pcr_events.push(crate::metrics::PcrEvent {
                        step,
                        gain_before: 3.0,
                        gain_after: 3.0,
                        loss_before: 1.0,
                        loss_after: 1.0,
                    });
                }
                runs.push(r);
            }
        }
        (setup, runs)
    }

    #[test]
    fn the_smoothness_verdict_is_relative_to_plain_at_the_same_steps() {
        // pcr-covariant falls as plain does (no excess); pcr-weight-scaled stays flat, the
        // smallest absolute jump, yet 13% above plain's fall at the same steps.
        let (setup, runs) = pcr_runs(&[
            ("pcr-covariant", |k, s| {
                1.0 - 0.01 * k as f64 + 1e-4 * [0.0, 1.0, -1.0][s as usize]
            }),
            ("pcr-weight-scaled", |_, s| 1.0 + 1e-4 * s as f64),
        ]);
        let r = report(&setup, &runs, "c");
        assert!(
            r.contains("The least disturbed relative to plain is **pcr-covariant**."),
            "{r}"
        );
        assert!(r.contains("0.00% ± 0.00% over 9 (within noise)"), "{r}");
        assert!(
            r.contains("pcr-weight-scaled +11.19% ± 0.43% over 9 (beyond noise)"),
            "{r}"
        );
        assert!(warnings(&runs).is_empty(), "{:?}", warnings(&runs));
        // With one policy: its figure and verdict, no empty list of others.
        let (setup, runs) = pcr_runs(&[("pcr-covariant", |k, _| 1.0 - 0.01 * k as f64)]);
        let r = report(&setup, &runs, "c");
        assert!(!r.contains("other policies"), "{r}");
        assert!(r.contains("0.00% ± 0.00% over 9 (within noise)"), "{r}");
        assert!(r.contains("No detectable disturbance."), "{r}");
    }

    #[test]
    fn a_comparison_where_pcr_has_no_effect_says_so() {
        let (setup, mut runs) = runs();
        // wn's scores become plain's, seed for seed shifted: equal means, the same spread.
        for r in runs.iter_mut().filter(|r| r.param == "wn") {
            r.param = "pcr".into();
            r.mean_step_ms = 2.0 + 0.1 * r.seed as f64;
            let e = r.epochs.last_mut().unwrap();
            e.test_loss = 0.6 + 0.01 * ((r.seed + 1) % 3) as f64;
            e.test_accuracy = 0.75;
        }
        let r = report(&setup, &runs, "c");
        let first = r.lines().nth(2).unwrap();
        assert!(
            first.contains(
                "No detectable effect on the test loss, accuracy or ECE (all differences within \
                 noise)."
            ),
            "{first}"
        );
        assert!(
            first.contains("pcr changes the test loss by +0.0000 (within noise)"),
            "{first}"
        );
        assert!(
            first.contains("the step time by +5.0% (within noise)"),
            "{first}"
        );
        // Where one difference is beyond noise, the sentence is absent.
        let (setup, runs) = super::tests::runs();
        assert!(!report(&setup, &runs, "c").contains("No detectable effect"));
    }
}
