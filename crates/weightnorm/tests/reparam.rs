//! Weight norm on every layer kind: outputs unchanged, gradients to g and v, folding, records,
//! clone, and the errors.

mod common;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::conv::{
    Conv1dConfig, Conv2dConfig, Conv3dConfig, ConvTranspose1dConfig, ConvTranspose2dConfig,
};
use burn::nn::{EmbeddingConfig, GruConfig, LinearConfig, LstmConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use common::*;
use weightnorm::reparam::{survey, weight_normed_params};
use weightnorm::{
    AxisChoice, Init, NormAxis, ReparamError, WeightNorm, WeightNormConfig, apply_weight_norm,
    remove_weight_norm,
};

/// Collects, for every float parameter (those inside reparameterizations too), its path and
/// whether the gradients hold a non-zero gradient for it.
struct GradProbe<'a> {
    grads: &'a burn::tensor::Gradients,
    stack: Vec<String>,
    found: Vec<(String, bool)>,
}

impl ModuleVisitor for GradProbe<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let nonzero = param
            .val()
            .grad(self.grads)
            .map(|g| max_abs(&values(&g)) > 0.0)
            .unwrap_or(false);
        self.found.push((self.stack.join("."), nonzero));
    }
}

/// Multiplies every `g` of weight norm by a factor.
struct ScaleG {
    stack: Vec<String>,
    factor: f64,
}

impl ModuleMapper for ScaleG {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.stack.last().map(String::as_str) == Some("g") {
            let f = self.factor;
            param.map(|t| t.mul_scalar(f))
        } else {
            param
        }
    }
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    error_at_scale(a, b, max_abs(b).max(1e-30))
}

fn check_layer<M, X, const K: usize>(
    name: &str,
    make: impl Fn(&Device) -> M,
    input: impl Fn(&Device) -> X,
    forward: impl Fn(&M, X) -> Tensor<K>,
    expected: &[&str],
) where
    M: Module,
    X: Clone,
{
    let device = ad_device();
    device.seed(7);
    let plain = make(&device);
    let x = input(&device);
    let y_plain = forward(&plain, x.clone());

    let config = WeightNormConfig::new();
    let wn = apply_weight_norm(plain.clone(), &config).unwrap();
    let mut normed = weight_normed_params(&wn);
    normed.sort();
    assert_eq!(normed, expected, "{name}: which parameters");

    // 1. The output does not change (function-preserving init).
    let y_wn = forward(&wn, x.clone());
    let err = rel(&values(&y_wn), &values(&y_plain));
    assert!(err <= 1e-6, "{name}: output moved by {err:e}");

    // 2. Gradients reach v (the stored weight) and g, and nothing else is left without one.
    let r = Tensor::<K>::random(y_wn.shape(), Distribution::Normal(0.0, 1.0), &device);
    let grads = (y_wn.clone() * r).sum().backward();
    let mut probe = GradProbe {
        grads: &grads,
        stack: Vec::new(),
        found: Vec::new(),
    };
    wn.visit(&mut probe);
    for path in expected {
        let v = probe.found.iter().find(|(p, _)| p == path);
        assert_eq!(
            v.map(|x| x.1),
            Some(true),
            "{name}: no gradient for v at {path}"
        );
        let g_path = format!("{path}.weight_norm.g");
        let g = probe.found.iter().find(|(p, _)| *p == g_path);
        assert_eq!(
            g.map(|x| x.1),
            Some(true),
            "{name}: no gradient for {g_path}"
        );
    }

    // The weight is computed from the current g on every forward (never a stale copy).
    let doubled = wn.clone().map(&mut ScaleG {
        stack: Vec::new(),
        factor: 2.0,
    });
    let y_doubled = forward(&doubled, x.clone());
    assert!(
        rel(&values(&y_doubled), &values(&y_wn)) > 1e-3,
        "{name}: doubling g did not change the output"
    );

    // 3. Folding gives the same outputs, bit for bit.
    let folded = remove_weight_norm(wn.clone()).unwrap();
    assert!(weight_normed_params(&folded).is_empty());
    assert_eq!(
        forward(&folded, x.clone()).into_data(),
        y_wn.to_data(),
        "{name}: folding changed the output"
    );

    // 4. Record round trip into a freshly weight-normed layer: identical outputs.
    device.seed(99);
    let fresh = apply_weight_norm(make(&device), &config).unwrap();
    let loaded = fresh.load_record(wn.clone().into_record());
    assert_eq!(
        forward(&loaded, x.clone()).into_data(),
        y_wn.to_data(),
        "{name}: record round trip"
    );

    // 5. clone() works and is independent of the original's later changes.
    let cloned = wn.clone();
    assert_eq!(
        forward(&cloned, x).into_data(),
        y_wn.to_data(),
        "{name}: clone"
    );
}

fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

#[test]
fn linear() {
    check_layer(
        "Linear",
        |d| LinearConfig::new(6, 4).init(d),
        |d| randn([5, 6], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn conv1d() {
    check_layer(
        "Conv1d",
        |d| Conv1dConfig::new(3, 5, 3).init(d),
        |d| randn([2, 3, 9], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn conv2d() {
    check_layer(
        "Conv2d",
        |d| Conv2dConfig::new([3, 4], [3, 3]).init(d),
        |d| randn([2, 3, 7, 7], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn conv3d() {
    check_layer(
        "Conv3d",
        |d| Conv3dConfig::new([2, 3], [2, 2, 2]).init(d),
        |d| randn([2, 2, 4, 4, 4], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn conv_transpose1d() {
    check_layer(
        "ConvTranspose1d",
        |d| ConvTranspose1dConfig::new([3, 4], 3).init(d),
        |d| randn([2, 3, 6], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn conv_transpose2d() {
    check_layer(
        "ConvTranspose2d",
        |d| ConvTranspose2dConfig::new([3, 4], [2, 2]).init(d),
        |d| randn([2, 3, 5, 5], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn embedding() {
    check_layer(
        "Embedding",
        |d| EmbeddingConfig::new(10, 4).init(d),
        |d| Tensor::<2, Int>::from_data([[1, 3, 9], [0, 3, 2]], d),
        |m, x| m.forward(x),
        &["weight"],
    );
}

#[test]
fn lstm_gates() {
    let mut gates = Vec::new();
    for gate in ["cell_gate", "forget_gate", "input_gate", "output_gate"] {
        for t in ["hidden_transform", "input_transform"] {
            gates.push(format!("{gate}.{t}.weight"));
        }
    }
    let gates: Vec<&str> = gates.iter().map(String::as_str).collect();
    check_layer(
        "Lstm",
        |d| LstmConfig::new(3, 5, true).init(d),
        |d| randn([2, 4, 3], d),
        |m, x| m.forward(x, None).0,
        &gates,
    );
}

#[test]
fn gru_gates() {
    let mut gates = Vec::new();
    for gate in ["new_gate", "reset_gate", "update_gate"] {
        for t in ["hidden_transform", "input_transform"] {
            gates.push(format!("{gate}.{t}.weight"));
        }
    }
    let gates: Vec<&str> = gates.iter().map(String::as_str).collect();
    check_layer(
        "Gru",
        |d| GruConfig::new(3, 5, true).init(d),
        |d| randn([2, 4, 3], d),
        |m, x| m.forward(x, None),
        &gates,
    );
}

#[test]
fn default_axis_is_per_output_unit_through_the_layout_table() {
    let device = device();
    let linear = apply_weight_norm(
        LinearConfig::new(6, 4).init(&device),
        &WeightNormConfig::new(),
    )
    .unwrap();
    let wn = linear.weight.reparameterization::<WeightNorm>().unwrap();
    assert_eq!(wn.axis(), NormAxis::Keep(1)); // Burn's Linear is [d_in, d_out]
    assert_eq!(wn.g.dims(), [4]);
    let conv = apply_weight_norm(
        ConvTranspose1dConfig::new([3, 4], 3).init(&device),
        &WeightNormConfig::new(),
    )
    .unwrap();
    let wn = conv.weight.reparameterization::<WeightNorm>().unwrap();
    assert_eq!(wn.axis(), NormAxis::Keep(1)); // [in, out, k]: output channels are axis 1
    // PyTorch's dim = 0 on the same weight normalizes per input channel.
    let torch = apply_weight_norm(
        ConvTranspose1dConfig::new([3, 4], 3).init(&device),
        &WeightNormConfig::new().with_axis(AxisChoice::Torch(Some(0))),
    )
    .unwrap();
    let wn = torch.weight.reparameterization::<WeightNorm>().unwrap();
    assert_eq!(wn.axis(), NormAxis::Keep(0));
    assert_eq!(wn.g.dims(), [3]);
    let whole = apply_weight_norm(
        LinearConfig::new(6, 4).init(&device),
        &WeightNormConfig::new().with_axis(AxisChoice::Whole),
    )
    .unwrap();
    assert_eq!(
        whole
            .weight
            .reparameterization::<WeightNorm>()
            .unwrap()
            .g
            .dims(),
        [1]
    );
}

#[test]
fn a_bias_free_layer_scales_with_g() {
    let device = device();
    let linear = LinearConfig::new(6, 4).with_bias(false).init(&device);
    let x = randn([3, 6], &device);
    let wn = apply_weight_norm(linear, &WeightNormConfig::new()).unwrap();
    let y = values(&wn.forward(x.clone()));
    let doubled = wn.map(&mut ScaleG {
        stack: Vec::new(),
        factor: 2.0,
    });
    let y2 = values(&doubled.forward(x));
    for (a, b) in y.iter().zip(&y2) {
        assert!((2.0 * a - b).abs() <= 1e-6 * a.abs().max(1.0));
    }
}

#[test]
fn paper_init_draws_v_and_sets_g_to_its_norm() {
    let device = device();
    device.seed(3);
    let linear = LinearConfig::new(200, 50).init(&device);
    let wn = apply_weight_norm(
        linear,
        &WeightNormConfig::new().with_init(Init::Paper { std: 0.05 }),
    )
    .unwrap();
    let v = values(&wn.weight.base());
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert!((std - 0.05).abs() < 0.002, "std of v = {std}");
    // g = ||v|| per output unit, so w = v.
    let w = values(&wn.weight.val());
    assert!(error_at_scale(&w, &v, max_abs(&v)) <= 1e-6);
}

#[test]
fn selection_by_path_and_its_errors() {
    let device = device();
    let lstm = LstmConfig::new(3, 5, true).init(&device);
    let one = apply_weight_norm(
        lstm.clone(),
        &WeightNormConfig::new().with_paths(["input_gate.input_transform.weight"]),
    )
    .unwrap();
    assert_eq!(
        weight_normed_params(&one),
        vec!["input_gate.input_transform.weight"]
    );

    let err = apply_weight_norm(
        lstm.clone(),
        &WeightNormConfig::new().with_paths(["input_gate.nope.weight"]),
    )
    .unwrap_err();
    assert!(matches!(err, ReparamError::MissingParam { .. }));
    assert!(
        err.to_string().starts_with(
            "no float parameter `input_gate.nope.weight` in the module; its parameters are: "
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("input_gate.input_transform.weight")
    );

    // A bias has no layer-kind axis: the default axis choice refuses it by name.
    let err = apply_weight_norm(
        LinearConfig::new(3, 2).init(&device),
        &WeightNormConfig::new().with_paths(["bias"]),
    )
    .unwrap_err();
    assert!(matches!(err, ReparamError::UnknownLayout { .. }), "{err}");
}

#[test]
fn applying_twice_is_an_error() {
    let device = device();
    let wn = apply_weight_norm(
        LinearConfig::new(3, 2).init(&device),
        &WeightNormConfig::new(),
    )
    .unwrap();
    let err = apply_weight_norm(wn, &WeightNormConfig::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`weight` already has a `weight_norm` reparameterization: remove it before applying \
         weight norm again"
    );
}

#[test]
fn removing_what_is_absent_is_an_error() {
    let device = device();
    let err = remove_weight_norm(LinearConfig::new(3, 2).init(&device)).unwrap_err();
    assert_eq!(err, ReparamError::NothingToRemove);
    assert_eq!(err.to_string(), "the module has no weight norm to remove");
}

#[test]
fn a_zero_norm_weight_is_refused_at_apply_time() {
    let device = device();
    let mut linear = LinearConfig::new(3, 2).init(&device);
    // Output unit 1 (column 1 of the [d_in, d_out] weight) is all zeros.
    linear.weight = Param::from_tensor(Tensor::from_data(
        [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
        &device,
    ));
    let err = apply_weight_norm(linear.clone(), &WeightNormConfig::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`weight`: v has a zero-norm slice (index 1 of axis 1): its direction is undefined, so \
         w = g * v / ||v|| would be NaN; give that slice a non-zero value or opt into an epsilon"
    );
    // With an epsilon it is accepted.
    assert!(apply_weight_norm(linear, &WeightNormConfig::new().with_eps(1e-12)).is_ok());
}

#[test]
fn survey_reports_containers_and_reparameterizations() {
    let device = device();
    let wn = apply_weight_norm(
        LinearConfig::new(3, 2).init(&device),
        &WeightNormConfig::new(),
    )
    .unwrap();
    let params = survey(&wn);
    assert_eq!(params.len(), 2);
    assert_eq!(params[0].path, "weight");
    assert_eq!(params[0].module, "Linear");
    assert_eq!(params[0].reparameterization.as_deref(), Some("weight_norm"));
    assert_eq!(params[1].path, "bias");
    assert_eq!(params[1].reparameterization, None);
}
