//! The progress bar of a run and its per-epoch lines.

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::metrics::EpochMetrics;

/// A progress bar over `steps` steps prefixed with the run's name: the epoch and the running
/// mean of its training loss, elapsed time, steps per second and time left; drawn only on a
/// terminal, and hidden when `quiet`.
pub fn bar(name: &str, steps: usize, quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} steps  {msg}  {elapsed_precise} elapsed, {rate}, eta {eta}",
        )
        .expect("template")
        .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1} steps/s", state.per_sec());
        })
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar
}

/// Prints an epoch's scores on stderr, above the bar where one is drawn (`epoch` counts from
/// 1): always, on a terminal or not, with or without `--quiet`.
pub fn epoch_line(bar: &ProgressBar, name: &str, epoch: usize, e: &EpochMetrics) {
    let line = format!(
        "{name:>8} epoch {epoch}: train loss {:.4}, test loss {:.4}, test accuracy {:.4}, ECE {:.4}",
        e.train_loss, e.test_loss, e.test_accuracy, e.ece
    );
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
