//! The `learner` example's logic in burn-train's `Learner`: a weight-normalized model (and, with
//! `--pcr`, PCR) trained with burn-train's checkpointing, interrupted and resumed from its
//! checkpoint, ends with exactly the weights of a run that never stopped.

#[allow(dead_code)]
#[path = "../examples/learner.rs"]
mod learner;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use weightnorm::reparam::weight_normed_params;

/// Every float parameter (weight norm's `v` and `g` included), in order.
#[derive(Default)]
struct Values(Vec<Vec<f32>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0
            .push(p.base().into_data().try_into_vec_as::<f32>().unwrap());
    }
}

fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
    let mut v = Values::default();
    m.visit(&mut v);
    v.0
}

fn interrupted_equals_uninterrupted(pcr: bool) {
    let straight = tempfile::tempdir().unwrap();
    let whole = learner::train(straight.path(), 3, pcr);
    assert_eq!(whole.resumed_from, None);

    let stopped = tempfile::tempdir().unwrap();
    let first = learner::train(stopped.path(), 2, pcr);
    assert_eq!(first.resumed_from, None);
    assert_eq!(learner::latest_checkpoint(stopped.path()), Some(2));
    let resumed = learner::train(stopped.path(), 3, pcr);
    assert_eq!(
        resumed.resumed_from,
        Some(2),
        "the second invocation resumes"
    );
    assert_eq!(learner::latest_checkpoint(stopped.path()), Some(3));
    // The resumed run logged epoch 3 only: burn-train started at the checkpoint's next epoch.
    assert!(stopped.path().join("train/epoch-3").is_dir());

    let (a, b) = (values(&whole.model), values(&resumed.model));
    assert!(!a.is_empty());
    assert_eq!(
        a, b,
        "the resumed run's weights are the uninterrupted run's"
    );
    // And the run trained: the weights moved from the first invocation's.
    assert_ne!(values(&first.model), b);

    if pcr {
        // 30 steps per epoch, PCR every 20: events at steps 20, 40, 60, 80 over 3 epochs; the
        // resumed process (from step 60) ran the one at 80, continuing the schedule.
        let steps = |o: &learner::Outcome| o.events.iter().map(|e| e.step).collect::<Vec<_>>();
        assert_eq!(steps(&whole), vec![20, 40, 60, 80]);
        assert_eq!(steps(&first), vec![20, 40, 60]);
        assert_eq!(steps(&resumed), vec![80]);
        assert_eq!(whole.events[3], resumed.events[0]);
        for e in &whole.events {
            assert_eq!(
                e.gain_before, e.gain_after,
                "the soft penalty keeps the function"
            );
        }
        assert!(weight_normed_params(&whole.model).is_empty());
    } else {
        assert_eq!(
            weight_normed_params(&whole.model),
            ["hidden.weight", "out.weight"]
        );
    }
}

#[test]
fn a_weight_normalized_learner_resumes_from_its_checkpoint() {
    interrupted_equals_uninterrupted(false);
}

#[test]
fn pcr_in_the_learner_resumes_with_its_schedule() {
    interrupted_equals_uninterrupted(true);
}
