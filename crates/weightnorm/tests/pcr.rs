//! Periodic Canonical Regularization: the covariant transport of Adam's, AdamW's and SGD's
//! state is exactly the state of an optimizer that ran on the rescaled network with the
//! rescaled gradients; the other policies do what they say; with penalty `none` a
//! canonicalization keeps the batch loss and the global gain; `cap` and `soft` regularize the
//! gain; the schedule and the state survive a checkpoint.

mod common;

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::store::ModuleRecord;
use burn::tensor::{Int, Tensor, TensorData};
use common::models::{Cnn, Mlp, cnn, rel_diff, uniform, values};
use common::{ad_device, device};
use weightnorm::canonical::canonicalize;
use weightnorm::live::{Canonicalizable, LiveError, canonicalize_module, describe};
use weightnorm::pcr::{Pcr, PcrConfig, PcrError, PcrState, Penalty, Transport, gain, transport};
use weightnorm::{WeightNorm, WeightNormConfig, apply_weight_norm};

const LR: f64 = 1e-2;

/// Every float parameter's id and shape.
#[derive(Default)]
struct Shapes(Vec<(ParamId, Vec<usize>)>);

impl ModuleVisitor for Shapes {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push((p.id, p.dims().to_vec()));
    }
}

fn shapes<M: Module>(m: &M) -> Vec<(ParamId, Vec<usize>)> {
    let mut s = Shapes::default();
    m.visit(&mut s);
    s.0
}

/// Gradients on the host: id -> values.
type HostGrads = HashMap<ParamId, Vec<f64>>;

fn host_grads<M: Module>(g: &GradientsParams, m: &M) -> HostGrads {
    shapes(m)
        .into_iter()
        .map(|(id, shape)| {
            let v = match shape.len() {
                1 => values(g.get::<1>(id).unwrap()),
                2 => values(g.get::<2>(id).unwrap()),
                3 => values(g.get::<3>(id).unwrap()),
                4 => values(g.get::<4>(id).unwrap()),
                r => panic!("rank {r}"),
            };
            (id, v)
        })
        .collect()
}

/// Gradients from host values, each divided element by element by `a` (or as they are).
fn device_grads<M: Module>(
    g: &HostGrads,
    a: Option<&HashMap<ParamId, Vec<f64>>>,
    m: &M,
) -> GradientsParams {
    let d = device();
    let mut out = GradientsParams::new();
    for (id, shape) in shapes(m) {
        let v: Vec<f64> = match a {
            Some(a) => g[&id].iter().zip(&a[&id]).map(|(x, f)| x / f).collect(),
            None => g[&id].clone(),
        };
        let data = TensorData::new(v, shape.clone()).convert_dtype(burn::tensor::DType::F32);
        match shape.len() {
            1 => out.register(id, Tensor::<1>::from_data(data, &d)),
            2 => out.register(id, Tensor::<2>::from_data(data, &d)),
            3 => out.register(id, Tensor::<3>::from_data(data, &d)),
            4 => out.register(id, Tensor::<4>::from_data(data, &d)),
            r => panic!("rank {r}"),
        }
    }
    out
}

/// An optimizer's record: tensors by name (values as f64), scalars by name.
#[derive(Debug)]
struct Record {
    tensors: BTreeMap<String, Vec<f64>>,
    scalars: BTreeMap<String, String>,
}

fn record(optim: &ModuleOptimizer) -> Record {
    let reader = burn_pack::Reader::from_bytes(optim.to_record().into_bytes().unwrap()).unwrap();
    let scalars = reader
        .scalars()
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v:?}")))
        .collect();
    let tensors = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .map(|t| {
            let (name, dtype, shape, _, bytes) = t.into_parts().unwrap();
            let v = TensorData::from_bytes(bytes, shape, dtype)
                .try_into_vec_as::<f64>()
                .unwrap();
            (name, v)
        })
        .collect();
    Record { tensors, scalars }
}

/// The record's names with the parameter ids replaced by their positions in `ids`, so that two
/// optimizers over differently numbered parameters can be compared.
fn by_position(r: Record, ids: &[ParamId]) -> Record {
    let pos = |name: &str| {
        let (id, rest) = name.split_once('.').unwrap();
        let id: u64 = id.parse().unwrap();
        let p = ids.iter().position(|i| i.val() == id).unwrap();
        format!("{p}.{rest}")
    };
    Record {
        tensors: r.tensors.into_iter().map(|(k, v)| (pos(&k), v)).collect(),
        scalars: r.scalars.into_iter().map(|(k, v)| (pos(&k), v)).collect(),
    }
}

fn mlp_loss(m: &Mlp, x: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let ce = CrossEntropyLossConfig::new().init(&x.device());
    ce.forward(m.forward(x), y)
}

fn cnn_loss(m: &Cnn, x: Tensor<4>, y: Tensor<1, Int>) -> Tensor<1> {
    let ce = CrossEntropyLossConfig::new().init(&x.device());
    ce.forward(m.forward(x), y)
}

fn batch2(n: usize, f: usize, classes: usize, seed: u64) -> (Tensor<2>, Tensor<1, Int>) {
    let d = ad_device();
    let x = Tensor::<2>::from_data(TensorData::new(uniform(n * f, seed), [n, f]), &d);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..n as i64).map(|i| i % classes as i64).collect(), [n]),
        &d,
    );
    (x, y)
}

fn batch4(n: usize, classes: usize, seed: u64) -> (Tensor<4>, Tensor<1, Int>) {
    let d = ad_device();
    let x = Tensor::<4>::from_data(TensorData::new(uniform(n * 64, seed), [n, 1, 8, 8]), &d);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..n as i64).map(|i| i % classes as i64).collect(), [n]),
        &d,
    );
    (x, y)
}

/// Must show 1: K steps of `make()`'s optimizer on `model`, a canonicalization, the covariant
/// transport; then a fresh optimizer runs the same K steps on the rescaled network with the
/// gradients divided by the factors. The transported state equals the fresh one's to 1e-6
/// relative (largest difference over the largest value, per state tensor). Returns the error.
fn covariant_error<M: Canonicalizable>(
    model: M,
    make: impl Fn() -> ModuleOptimizer,
    loss: impl Fn(&M, u64) -> Tensor<1>,
) -> f64 {
    const K: u64 = 5;
    let mut a = make();
    let mut m = model;
    let mut seen = Vec::new();
    for k in 0..K {
        let grads = GradientsParams::from_grads(loss(&m, k).backward(), &m);
        seen.push(host_grads(&grads, &m));
        m = a.step(LR, m, grads);
    }
    let (rescaled, r) = canonicalize_module(&m, None).unwrap();
    let factors = r.by_param();
    assert!(
        factors.values().flatten().any(|f| (f - 1.0).abs() > 1e-2),
        "the rescaling moves something"
    );
    transport(&mut a, &factors, Transport::Covariant).unwrap();

    let mut b = make();
    let mut mb = rescaled;
    for g in &seen {
        mb = b.step(LR, mb, device_grads(g, Some(&factors), &m));
    }
    let ids: Vec<ParamId> = shapes(&m).into_iter().map(|(id, _)| id).collect();
    let (ra, rb) = (by_position(record(&a), &ids), by_position(record(&b), &ids));
    assert_eq!(ra.scalars, rb.scalars, "step counts and ranks");
    assert_eq!(
        ra.tensors.keys().collect::<Vec<_>>(),
        rb.tensors.keys().collect::<Vec<_>>()
    );
    assert!(!ra.tensors.is_empty());
    ra.tensors
        .iter()
        .map(|(k, v)| rel_diff(&rb.tensors[k], v))
        .fold(0.0, f64::max)
}

type MakeOptimizer = fn() -> ModuleOptimizer;

fn sgd_momentum() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .init()
}

#[test]
fn the_covariant_transport_is_exact_for_adam_adamw_and_sgd_with_momentum() {
    let d = ad_device();
    let optimizers: [(&str, MakeOptimizer); 4] = [
        ("adam", || AdamConfig::new().init()),
        ("adam-amsgrad", || {
            AdamConfig::new().with_amsgrad(true).init()
        }),
        ("adamw", || AdamWConfig::new().init()),
        ("sgd-momentum", sgd_momentum),
    ];
    for (name, make) in optimizers {
        d.seed(21);
        let mlp = Mlp::new(&[12, 10, 8, 4], &d);
        let e = covariant_error(mlp, make, |m, k| {
            let (x, y) = batch2(16, 12, 4, 100 + k);
            mlp_loss(m, x, y)
        });
        println!("covariant transport, {name}, mlp: max relative error {e:.3e}");
        assert!(e < 1e-6, "{name} mlp: {e}");
        d.seed(22);
        let e = covariant_error(cnn(&d), make, |m, k| {
            let (x, y) = batch4(6, 5, 200 + k);
            cnn_loss(m, x, y)
        });
        println!("covariant transport, {name}, cnn: max relative error {e:.3e}");
        assert!(e < 1e-6, "{name} cnn: {e}");
    }
}

#[test]
fn weight_scaled_reset_and_keep() {
    let d = ad_device();
    d.seed(4);
    let mut m = Mlp::new(&[6, 5, 3], &d);
    let mut optim = AdamConfig::new().init();
    for k in 0..3 {
        let (x, y) = batch2(8, 6, 3, k);
        let grads = GradientsParams::from_grads(mlp_loss(&m, x, y).backward(), &m);
        m = optim.step(LR, m, grads);
    }
    let (rescaled, r) = canonicalize_module(&m, None).unwrap();
    let factors = r.by_param();
    let before = record(&optim);
    let name = |id: ParamId, field: &str| format!("{}.momentum.{field}", id.val());

    // weight-scaled: a m, a^2 v.
    let mut ws = optim.clone();
    transport(&mut ws, &factors, Transport::WeightScaled).unwrap();
    let after = record(&ws);
    for (id, a) in &factors {
        for (field, k) in [("moment_1", 1), ("moment_2", 2)] {
            let expected: Vec<f64> = before.tensors[&name(*id, field)]
                .iter()
                .zip(a)
                .map(|(x, f)| x * f.powi(k))
                .collect();
            assert!(rel_diff(&expected, &after.tensors[&name(*id, field)]) < 1e-6);
        }
    }
    assert_eq!(before.scalars, after.scalars);

    // keep: the record is untouched.
    let mut kept = optim.clone();
    transport(&mut kept, &factors, Transport::Keep).unwrap();
    assert_eq!(record(&kept).tensors, before.tensors);

    // reset: the next step is a fresh optimizer's.
    let mut reset = optim.clone();
    transport(&mut reset, &factors, Transport::Reset).unwrap();
    assert!(record(&reset).tensors.is_empty());
    let (x, y) = batch2(8, 6, 3, 9);
    let g = GradientsParams::from_grads(
        mlp_loss(&rescaled, x.clone(), y.clone()).backward(),
        &rescaled,
    );
    let g2 = GradientsParams::from_grads(mlp_loss(&rescaled, x, y).backward(), &rescaled);
    let stepped = reset.step(LR, rescaled.clone(), g);
    let fresh = AdamConfig::new().init().step(LR, rescaled, g2);
    for (l, f) in stepped.linears.iter().zip(&fresh.linears) {
        assert_eq!(values(l.weight.val()), values(f.weight.val()));
    }
}

#[test]
fn an_optimizer_state_without_a_known_transport_is_refused() {
    let d = ad_device();
    d.seed(6);
    let mut m = Mlp::new(&[4, 3, 2], &d);
    let mut optim = burn::optim::RmsPropConfig::new().init();
    let (x, y) = batch2(4, 4, 2, 1);
    let grads = GradientsParams::from_grads(mlp_loss(&m, x, y).backward(), &m);
    m = optim.step(LR, m, grads);
    let (_, r) = canonicalize_module(&m, None).unwrap();
    let e = transport(&mut optim, &r.by_param(), Transport::Covariant).unwrap_err();
    assert!(matches!(e, PcrError::UnknownState { .. }), "{e}");
    transport(&mut optim, &r.by_param(), Transport::Reset).unwrap();
}

/// Must show 2 (the library's half): with penalty `none`, a canonicalization leaves the batch
/// loss and the global gain unchanged to 1e-5 relative, on the MLP and the CNN, and the event
/// records both.
#[test]
fn penalty_none_keeps_the_batch_loss_and_the_gain() {
    let d = ad_device();
    d.seed(8);
    let mut mlp = Mlp::new(&[64, 24, 12, 10], &d);
    let mut optim = AdamConfig::new().init();
    let mut pcr = Pcr::new(PcrConfig::new(3)).unwrap();
    pcr.check(&mlp).unwrap();
    for k in 0..9 {
        let (x, y) = batch2(16, 64, 10, 300 + k);
        let grads =
            GradientsParams::from_grads(mlp_loss(&mlp, x.clone(), y.clone()).backward(), &mlp);
        let measure = |m: &Mlp| values(mlp_loss(m, x.clone(), y.clone()))[0];
        let due = pcr.is_due();
        let (next, event) = pcr
            .step_measured(&mut optim, LR, mlp, grads, Some(measure))
            .unwrap();
        assert_eq!(due, event.is_some());
        if let Some(e) = event {
            let (lb, la) = (e.loss_before.unwrap(), e.loss_after.unwrap());
            println!(
                "mlp step {}: loss {lb} -> {la}, gain {} -> {}",
                e.step, e.gain_before, e.gain_after
            );
            assert!((la / lb - 1.0).abs() < 1e-5, "loss {lb} -> {la}");
            let g = canonicalize(describe(&next).unwrap().network)
                .unwrap()
                .global_gain();
            assert!(
                (g / e.gain_before - 1.0).abs() < 1e-5,
                "gain {} -> {g}",
                e.gain_before
            );
            assert_eq!(e.gain_after, e.gain_before);
        }
        mlp = next;
    }
    assert_eq!(
        pcr.state()
            .events
            .iter()
            .map(|e| e.step)
            .collect::<Vec<_>>(),
        vec![3, 6, 9]
    );

    d.seed(9);
    let mut net = cnn(&d);
    let mut optim = AdamConfig::new().init();
    let mut pcr = Pcr::new(PcrConfig::new(2)).unwrap();
    for k in 0..4 {
        let (x, y) = batch4(8, 5, 400 + k);
        let grads =
            GradientsParams::from_grads(cnn_loss(&net, x.clone(), y.clone()).backward(), &net);
        let measure = |m: &Cnn| values(cnn_loss(m, x.clone(), y.clone()))[0];
        let (next, event) = pcr
            .step_measured(&mut optim, LR, net, grads, Some(measure))
            .unwrap();
        if let Some(e) = event {
            let (lb, la) = (e.loss_before.unwrap(), e.loss_after.unwrap());
            println!(
                "cnn step {}: loss {lb} -> {la}, gain {} -> {}",
                e.step, e.gain_before, e.gain_after
            );
            assert!((la / lb - 1.0).abs() < 1e-5, "loss {lb} -> {la}");
            let g = canonicalize(describe(&next).unwrap().network)
                .unwrap()
                .global_gain();
            assert!((g / e.gain_before - 1.0).abs() < 1e-5);
        }
        net = next;
    }
    assert_eq!(pcr.state().events.len(), 2);
}

#[test]
fn cap_holds_the_gain_and_soft_adds_lambda_g_squared() {
    let d = ad_device();
    d.seed(10);
    let mut m = Mlp::new(&[12, 8, 4], &d);
    let g0 = canonicalize(describe(&m).unwrap().network)
        .unwrap()
        .global_gain();
    let max_gain = g0 / 3.0;
    let mut optim = AdamConfig::new().init();
    let mut pcr = Pcr::new(PcrConfig::new(1).with_penalty(Penalty::Cap { max_gain })).unwrap();
    for k in 0..3 {
        let (x, y) = batch2(8, 12, 4, 500 + k);
        let grads = GradientsParams::from_grads(mlp_loss(&m, x, y).backward(), &m);
        m = pcr.step(&mut optim, LR, m, grads).unwrap().0;
        let g = canonicalize(describe(&m).unwrap().network)
            .unwrap()
            .global_gain();
        assert!(g <= max_gain * (1.0 + 1e-5), "step {k}: {g} > {max_gain}");
    }
    let first = &pcr.state().events[0];
    assert!(first.gain_before > max_gain);
    assert!((first.gain_after - max_gain).abs() < 1e-12 * max_gain);
    assert!(pcr.penalty(&m).unwrap().is_none());

    let lambda = 0.3;
    let soft = Pcr::new(PcrConfig::new(5).with_penalty(Penalty::Soft { lambda })).unwrap();
    let p = values(soft.penalty(&m).unwrap().unwrap())[0];
    let g = canonicalize(describe(&m).unwrap().network)
        .unwrap()
        .global_gain();
    assert!(
        (p / (lambda * g * g) - 1.0).abs() < 1e-5,
        "{p} vs {}",
        lambda * g * g
    );
    // The penalty's gradient is lambda times that of G^2.
    let gp = soft.penalty(&m).unwrap().unwrap().backward();
    let g2 = gain::gain_squared(&m).unwrap().backward();
    for l in &m.linears {
        let a = values(l.weight.grad(&gp).unwrap());
        let b: Vec<f64> = values(l.weight.grad(&g2).unwrap())
            .iter()
            .map(|v| v * lambda)
            .collect();
        assert!(rel_diff(&b, &a) < 1e-6);
    }
    // Training with the soft penalty lowers the gain against training without it (from the
    // same initial weights: a clone, since Burn's generator is shared by tests in parallel).
    d.seed(12);
    let start = Mlp::new(&[12, 8, 4], &d);
    let train = |penalty: Penalty| {
        let mut m = start.clone();
        let mut optim = AdamConfig::new().init();
        let mut pcr = Pcr::new(PcrConfig::new(10).with_penalty(penalty)).unwrap();
        for k in 0..20 {
            let (x, y) = batch2(8, 12, 4, 600 + k);
            let mut loss = mlp_loss(&m, x, y);
            if let Some(p) = pcr.penalty(&m).unwrap() {
                loss = loss + p;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            m = pcr.step(&mut optim, LR, m, grads).unwrap().0;
        }
        let events = pcr.into_state().events;
        assert!(events.iter().all(|e| e.gain_after == e.gain_before));
        canonicalize(describe(&m).unwrap().network)
            .unwrap()
            .global_gain()
    };
    let (plain, regularized) = (train(Penalty::None), train(Penalty::Soft { lambda: 1.0 }));
    assert!(regularized < plain, "{regularized} vs {plain}");
}

#[test]
fn penalties_and_transports_parse_and_print() {
    for s in ["none", "cap:2.5", "soft:0.001"] {
        let p: Penalty = s.parse().unwrap();
        assert_eq!(p.to_string(), s);
    }
    assert_eq!(
        "cap:3".parse::<Penalty>().unwrap(),
        Penalty::Cap { max_gain: 3.0 }
    );
    for bad in [
        "cap:0",
        "cap:-1",
        "soft:-0.1",
        "soft",
        "cap:x",
        "hard:1",
        "soft:inf",
    ] {
        let e = bad.parse::<Penalty>().unwrap_err();
        assert_eq!(e, PcrError::Penalty(bad.into()), "{bad}");
    }
    for t in Transport::ALL {
        assert_eq!(t.name().parse::<Transport>().unwrap(), t);
    }
    assert!("covariant ".parse::<Transport>().is_ok());
    assert!("scaled".parse::<Transport>().is_err());
    assert_eq!(Pcr::new(PcrConfig::new(0)).unwrap_err(), PcrError::Every);
    let json = serde_json::to_string(
        &PcrConfig::new(7)
            .with_penalty(Penalty::Soft { lambda: 0.5 })
            .with_transport(Transport::WeightScaled),
    )
    .unwrap();
    assert_eq!(
        json,
        r#"{"every":7,"penalty":{"kind":"soft","lambda":0.5},"transport":"weight-scaled"}"#
    );
}

/// A run interrupted after 5 steps and resumed from its checkpoint (the model's record, the
/// optimizer's record, PCR's state as JSON) takes the same steps as one that never stopped.
#[test]
fn a_run_resumed_from_its_checkpoint_takes_the_same_steps() {
    let d = ad_device();
    let config = PcrConfig::new(2)
        .with_penalty(Penalty::Cap { max_gain: 1.5 })
        .with_transport(Transport::Covariant);
    // The initial weights are built once: Burn's generator is shared by tests in parallel.
    d.seed(1);
    let initial = Mlp::new(&[12, 8, 4], &d);
    let other = Mlp::new(&[12, 8, 4], &d);
    let run = |m: Mlp, optim: &mut ModuleOptimizer, pcr: &mut Pcr, steps: std::ops::Range<u64>| {
        let mut m = m;
        let mut losses = Vec::new();
        for k in steps {
            let (x, y) = batch2(8, 12, 4, 700 + k);
            let mut loss = mlp_loss(&m, x, y);
            losses.push(values(loss.clone())[0]);
            if let Some(p) = pcr.penalty(&m).unwrap() {
                loss = loss + p;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            m = pcr.step(optim, LR, m, grads).unwrap().0;
        }
        (m, losses)
    };
    let mut optim = AdamConfig::new().init();
    let mut pcr = Pcr::new(config.clone()).unwrap();
    let (straight, all) = run(initial.clone(), &mut optim, &mut pcr, 0..9);

    let mut optim = AdamConfig::new().init();
    let mut first = Pcr::new(config.clone()).unwrap();
    let (m, mut losses) = run(initial, &mut optim, &mut first, 0..5);
    // The checkpoint: bytes and JSON only.
    let model_bytes = m.into_record().into_bytes().unwrap();
    let optim_bytes = optim.to_record().into_bytes().unwrap();
    let state = serde_json::to_string(first.state()).unwrap();
    drop(optim);

    let m = other.load_record(ModuleRecord::from_bytes(model_bytes).unwrap());
    let mut optim = AdamConfig::new().init().from_bytes(optim_bytes).unwrap();
    let state: PcrState = serde_json::from_str(&state).unwrap();
    let mut pcr2 = Pcr::resume(config, state).unwrap();
    let (resumed, rest) = run(m, &mut optim, &mut pcr2, 5..9);
    losses.extend(rest);
    assert_eq!(losses, all, "step losses");
    assert_eq!(pcr2.state(), pcr.state(), "PCR state (steps and events)");
    for (a, b) in straight.linears.iter().zip(&resumed.linears) {
        assert_eq!(values(a.weight.val()), values(b.weight.val()));
    }
}

/// A weight-normalized model under PCR: refused with a typed error before training (and at a
/// canonicalization); the soft penalty's gain works on it, through `g` and `v`.
#[test]
fn pcr_refuses_weight_norm_and_its_gain_reaches_g_and_v() {
    let d = ad_device();
    d.seed(13);
    let wn = apply_weight_norm(Mlp::new(&[6, 5, 3], &d), &WeightNormConfig::new()).unwrap();
    let mut pcr = Pcr::new(PcrConfig::new(1)).unwrap();
    let e = pcr.check(&wn).unwrap_err();
    assert!(
        matches!(&e, PcrError::Live(LiveError::Reparameterized { reparameterization, .. })
            if reparameterization == "weight_norm"),
        "{e}"
    );
    let mut optim = AdamConfig::new().init();
    let (x, y) = batch2(4, 6, 3, 1);
    let grads = GradientsParams::from_grads(mlp_loss(&wn, x, y).backward(), &wn);
    assert_eq!(pcr.step(&mut optim, LR, wn.clone(), grads).unwrap_err(), e);
    assert!(pcr.state().events.is_empty());

    let soft = Pcr::new(PcrConfig::new(1).with_penalty(Penalty::Soft { lambda: 1.0 })).unwrap();
    let grads = soft.penalty(&wn).unwrap().unwrap().backward();
    let layer = &wn.linears[0].weight;
    let g = &layer.reparameterization::<WeightNorm>().unwrap().g;
    assert!(
        values(g.grad(&grads).unwrap())
            .iter()
            .any(|v| v.abs() > 0.0)
    );
    assert!(
        values(layer.base().grad(&grads).unwrap())
            .iter()
            .any(|v| v.abs() > 0.0)
    );
}
