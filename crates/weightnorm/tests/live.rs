//! The live-module front-end of the canonical form: a Burn module described as a network (it
//! computes what the module computes), canonicalized in place through the calculus (the same
//! function, the same parameter ids, unit rows), the factors it reports (the ratio of every new
//! element to the old), and the differentiable global gain (equal to the calculus's, and its
//! gradient to finite differences).

mod common;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Distribution, Tensor};
use common::models::{Mlp, Zoo1d, Zoo2d, cnn, rel_diff, values};
use common::{ad_device, device};
use weightnorm::canonical::{Agreement, Layer, Network, canonicalize};
use weightnorm::live::{Canonicalizable, LiveError, LiveLayer, canonicalize_module, describe};
use weightnorm::pcr::gain;
use weightnorm::{WeightNormConfig, apply_weight_norm};

/// Every float parameter: id and values.
#[derive(Default)]
struct Params(Vec<(ParamId, Vec<f64>)>);

impl ModuleVisitor for Params {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push((p.id, values(p.val())));
    }
}

fn params<M: Module>(m: &M) -> Vec<(ParamId, Vec<f64>)> {
    let mut p = Params::default();
    m.visit(&mut p);
    p.0
}

/// Rows of a batch as samples.
fn samples<const D: usize>(x: &Tensor<D>) -> Vec<Vec<f64>> {
    let per: usize = x.dims()[1..].iter().product();
    values(x.clone()).chunks(per).map(<[f64]>::to_vec).collect()
}

/// Checks one model: the description computes the module's outputs; canonicalization keeps
/// them and every parameter id, leaves the gain, and reports factors equal to new / old.
fn check<M: Canonicalizable, const D: usize>(
    name: &str,
    model: &M,
    x: Tensor<D>,
    forward: impl Fn(&M, Tensor<D>) -> Tensor<2>,
) {
    let y = values(forward(model, x.clone()));
    let live = describe(model).unwrap();
    let z: Vec<f64> = live
        .network
        .forward(&samples(&x))
        .into_iter()
        .flatten()
        .collect();
    assert!(
        rel_diff(&y, &z) < 1e-5,
        "{name}: description {}",
        rel_diff(&y, &z)
    );

    let (canonical, rescaling) = canonicalize_module(model, None).unwrap();
    let y2 = values(forward(&canonical, x.clone()));
    assert!(
        rel_diff(&y, &y2) < 1e-5,
        "{name}: function {}",
        rel_diff(&y, &y2)
    );
    assert_eq!(rescaling.gain_before, rescaling.gain_after);
    let host = canonicalize(live.network.clone()).unwrap();
    assert!((host.global_gain() - rescaling.gain_before).abs() <= 1e-12 * host.global_gain());

    // Same ids in the same order; every element multiplied by its reported factor.
    let (before, after) = (params(model), params(&canonical));
    assert_eq!(
        before.iter().map(|p| p.0).collect::<Vec<_>>(),
        after.iter().map(|p| p.0).collect::<Vec<_>>(),
        "{name}: ids"
    );
    let factors = rescaling.by_param();
    assert_eq!(
        factors.len(),
        before.len(),
        "{name}: every parameter rescaled"
    );
    let mut moved = false;
    for ((id, old), (_, new)) in before.iter().zip(&after) {
        let a = &factors[id];
        let expected: Vec<f64> = old.iter().zip(a).map(|(w, f)| w * f).collect();
        assert!(rel_diff(&expected, new) < 1e-6, "{name}: factors of {id:?}");
        moved |= a.iter().any(|f| (f - 1.0).abs() > 1e-3);
    }
    assert!(moved, "{name}: the rescaling changed something");

    // Canonical again: the gain is the same, and every layer that hands on its own scale now
    // has unit rows (all but the last, which holds the output scale, and those that carry a
    // scale before a barrier or at the end of a residual body).
    let again = describe(&canonical).unwrap();
    let c2 = canonicalize(again.network).unwrap();
    assert!((c2.global_gain() / rescaling.gain_before - 1.0).abs() < 1e-5);
    let (last, hidden) = c2.reports().split_last().unwrap();
    assert!(last.carries.is_none());
    for r in hidden.iter().filter(|r| r.carries.is_none()) {
        let (lo, hi) = r.row_norms_before;
        assert!(
            (lo - 1.0).abs() < 1e-5 && (hi - 1.0).abs() < 1e-5,
            "{name}: layer {:?} has rows of norm {lo}..{hi}",
            r.at
        );
    }
}

#[test]
fn the_clis_mlp_and_cnn_keep_their_function_and_ids() {
    let d = device();
    d.seed(7);
    let mlp = Mlp::new(&[64, 24, 12, 10], &d);
    let x = Tensor::<2>::random([5, 64], Distribution::Normal(0.0, 1.0), &d);
    check("mlp", &mlp, x, |m, x| m.forward(x));
    let cnn = cnn(&d);
    let x = Tensor::<4>::random([3, 1, 8, 8], Distribution::Normal(0.0, 1.0), &d);
    check("cnn", &cnn, x, |m, x| m.forward(x));
}

#[test]
fn residual_blocks_barriers_groups_and_1d_convolutions() {
    let d = device();
    d.seed(11);
    let zoo = Zoo1d::new(&d);
    let x = Tensor::<3>::random([3, 4, 10], Distribution::Normal(0.0, 1.0), &d);
    check("zoo1d", &zoo, x, |m, x| m.forward(x));
    let zoo = Zoo2d::new(&d);
    let x = Tensor::<4>::random([3, 2, 6, 6], Distribution::Normal(0.0, 1.0), &d);
    check("zoo2d", &zoo, x, |m, x| m.forward(x));
}

#[test]
fn a_cap_scales_the_outputs_by_max_gain_over_the_gain() {
    let d = device();
    d.seed(3);
    let mlp = Mlp::new(&[16, 8, 4], &d);
    let x = Tensor::<2>::random([4, 16], Distribution::Normal(0.0, 1.0), &d);
    let y = values(mlp.forward(x.clone()));
    let g = canonicalize(describe(&mlp).unwrap().network)
        .unwrap()
        .global_gain();
    let cap = g / 4.0;
    let (capped, r) = canonicalize_module(&mlp, Some(cap)).unwrap();
    assert!((r.gain_before - g).abs() < 1e-12 * g);
    assert!((r.gain_after - cap).abs() < 1e-12 * cap);
    let quarter: Vec<f64> = y.iter().map(|v| v / 4.0).collect();
    assert!(rel_diff(&quarter, &values(capped.forward(x.clone()))) < 1e-5);
    let g2 = canonicalize(describe(&capped).unwrap().network)
        .unwrap()
        .global_gain();
    assert!((g2 / cap - 1.0).abs() < 1e-5, "{g2} vs {cap}");
    // Under the cap already: nothing changes but the canonical rows.
    let (same, r) = canonicalize_module(&mlp, Some(2.0 * g)).unwrap();
    assert_eq!(r.gain_after, r.gain_before);
    assert!(rel_diff(&y, &values(same.forward(x))) < 1e-5);
    assert_eq!(
        canonicalize_module(&mlp, Some(0.0)).unwrap_err(),
        LiveError::MaxGain(0.0)
    );
}

#[test]
fn the_differentiable_gain_is_the_calculus_gain() {
    let d = device();
    d.seed(5);
    let mlp = Mlp::new(&[20, 9, 7, 4], &d);
    let cnn = cnn(&d);
    let zoo1 = Zoo1d::new(&d);
    let zoo2 = Zoo2d::new(&d);
    fn both<M: Canonicalizable>(m: &M) -> (f64, f64, Vec<f64>, Vec<f64>) {
        let host = canonicalize(describe(m).unwrap().network).unwrap();
        let g = values(gain::global_gain(m).unwrap())[0];
        (
            host.global_gain(),
            g,
            host.scale().to_vec(),
            values(gain::output_scale(m).unwrap()),
        )
    }
    for (name, (host, tensor, hs, ts)) in [
        ("mlp", both(&mlp)),
        ("cnn", both(&cnn)),
        ("zoo1d", both(&zoo1)),
        ("zoo2d", both(&zoo2)),
    ] {
        assert!(
            (tensor / host - 1.0).abs() < 1e-5,
            "{name}: {tensor} vs {host}"
        );
        assert!(rel_diff(&hs, &ts) < 1e-5, "{name}: scale");
    }
}

#[test]
fn the_gains_gradient_matches_finite_differences() {
    let d = ad_device();
    d.seed(9);
    let mlp = Mlp::new(&[6, 5, 4, 3], &d);
    let g2 = gain::gain_squared(&mlp).unwrap();
    let grads = g2.backward();
    // Central differences in f64 on the host network, through the calculus.
    let live = describe(&mlp).unwrap();
    let gain2 = |net: &Network| canonicalize(net.clone()).unwrap().global_gain().powi(2);
    for (l, linear) in mlp.linears.iter().enumerate() {
        let analytic = values(linear.weight.grad(&grads).unwrap());
        let [inputs, outputs] = linear.weight.dims();
        for (j, i) in [(0, 0), (inputs - 1, outputs - 1), (inputs / 2, outputs / 2)] {
            let h = 1e-5;
            let at = |delta: f64| {
                let (input, mut layers) = live.network.clone().into_parts();
                let Layer::Weighted(w) = &mut layers[2 * l] else {
                    panic!("layer {l} is linear")
                };
                w.w.data[i * inputs + j] += delta;
                gain2(&Network::new(input, layers).unwrap())
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let a = analytic[j * outputs + i];
            assert!(
                (a - numeric).abs() <= 1e-3 * numeric.abs().max(1e-2),
                "layer {l} element ({j}, {i}): {a} vs {numeric}"
            );
        }
    }
}

#[test]
fn weight_norm_is_described_but_not_rewritten() {
    let d = device();
    d.seed(2);
    let plain = Mlp::new(&[6, 5, 3], &d);
    let wn = apply_weight_norm(plain.clone(), &WeightNormConfig::new()).unwrap();
    let a = describe(&plain).unwrap().network;
    let b = describe(&wn).unwrap().network;
    let xs = vec![vec![0.5; 6], vec![-1.0; 6]];
    assert!(Agreement::between(&a.forward(&xs), &b.forward(&xs)).max_rel_error < 1e-5);
    let e = canonicalize_module(&wn, None).unwrap_err();
    assert!(
        matches!(&e, LiveError::Reparameterized { at, param: "weight", reparameterization }
            if at == &[0] && reparameterization == "weight_norm"),
        "{e}"
    );
    assert!(e.to_string().contains("remove_weight_norm"), "{e}");
}

/// A module whose description names a layer the calculus cannot pass.
#[derive(Module, Debug)]
struct WithNorm {
    mlp: Mlp,
}

impl Canonicalizable for WithNorm {
    fn input_shape(&self) -> Vec<usize> {
        vec![6]
    }
    fn layers(&self) -> Vec<LiveLayer<'_>> {
        vec![
            LiveLayer::Linear(&self.mlp.linears[0]),
            LiveLayer::Residual(vec![LiveLayer::Unsupported("batch_norm")]),
            LiveLayer::Linear(&self.mlp.linears[1]),
        ]
    }
}

#[test]
fn layers_the_calculus_cannot_pass_are_named() {
    let d = device();
    let m = WithNorm {
        mlp: Mlp::new(&[6, 5, 3], &d),
    };
    let e = describe(&m).unwrap_err().to_string();
    assert!(
        e.starts_with("layer 1.body.0 (batch_norm): not a layer"),
        "{e}"
    );
}
