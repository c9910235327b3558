//! The comparison's `report.md`: markdown built from run summaries.

use crate::metrics::{RunMetrics, RunSetup};

/// The comparison's `report.md`: the setup, one table row per run (final scores, step time and
/// its overhead over the `plain` run, when there is one), and links to the plots.
///
/// # Panics
///
/// If a run has no finished epoch (every run trains at least one).
pub fn report(setup: &RunSetup, runs: &[RunMetrics]) -> String {
    let mut s = header(setup);
    let plain = runs
        .iter()
        .find(|r| r.param == "plain")
        .map(|r| r.mean_step_ms);
    for r in runs {
        s += &row(r, plain);
    }
    s += "\nTraining loss against steps: ![loss](loss.png)\n\nTest accuracy against epochs: ![accuracy](accuracy.png)\n\n\
          Each run's metrics, model (`model.safetensors`, PyTorch `nn.Sequential` keys) and \
          architecture (`arch.json`) are in the directory named after it.\n";
    s
}

/// The title, the setup and the table's head.
fn header(setup: &RunSetup) -> String {
    format!(
        "# weightnorm compare\n\n{}, {} model, {} epochs, batch {}, Adam lr {}, seed {}, init {}.\n\n\
         | parameterization | test accuracy | test loss | ECE | step time (ms) | overhead vs plain |\n\
         |---|---|---|---|---|---|\n",
        setup.dataset,
        setup.model,
        setup.epochs,
        setup.batch_size,
        setup.lr,
        setup.seed,
        setup.init
    )
}

/// One run's table row; `plain` is the plain run's mean step time, if there is one.
fn row(r: &RunMetrics, plain: Option<f64>) -> String {
    let e = r.last().expect("an epoch");
    let overhead = match plain {
        Some(p) if r.param != "plain" => format!("{:+.1}%", (r.mean_step_ms / p - 1.0) * 100.0),
        _ => "".into(),
    };
    format!(
        "| {} | {:.4} | {:.4} | {:.4} | {:.2} | {overhead} |\n",
        r.param, e.test_accuracy, e.test_loss, e.ece, r.mean_step_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn the_report_has_the_setup_and_a_row_per_run_with_its_overhead() {
        let (setup, wn) = sample();
        let mut plain = wn.clone();
        plain.param = "plain".into();
        plain.mean_step_ms = 2.0;
        let r = report(&setup, &[plain, wn]);
        assert!(
            r.contains("digits, mlp model, 2 epochs, batch 32, Adam lr 0.01, seed 7, init ddi."),
            "{r}"
        );
        assert!(
            r.contains("| plain | 0.7500 | 0.5000 | 0.0625 | 2.00 |  |\n"),
            "{r}"
        );
        assert!(
            r.contains("| wn | 0.7500 | 0.5000 | 0.0625 | 4.00 | +100.0% |\n"),
            "{r}"
        );
        assert!(r.contains("![loss](loss.png)"));
    }

    #[test]
    fn without_a_plain_run_there_is_no_overhead() {
        let (setup, wn) = sample();
        let r = report(&setup, &[wn]);
        assert!(r.ends_with("are in the directory named after it.\n"));
        assert!(!r.contains('%'), "{r}");
    }
}
