//! Tests of the network-level transforms: each transform on its own, then thousands of random
//! networks (linear and convolutional, pooling, flatten, batch norms, residual blocks,
//! barriers), in f32 and f64.

use super::*;

/// The core's generator, with what the random networks draw.
struct Rng {
    r: crate::rng::SplitMix64,
}

/// A generator seeded with `seed` (named like a constructor).
#[allow(non_snake_case)]
fn Rng(seed: u64) -> Rng {
    Rng {
        r: crate::rng::SplitMix64(seed),
    }
}

impl Rng {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.r.uniform()
    }
    fn below(&mut self, n: usize) -> usize {
        self.r.below(n)
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn vals<T: Real>(&mut self, n: usize, scale: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64(self.next() * scale)).collect()
    }
}

fn dense<T: Real>(out: usize, inp: usize, data: Vec<T>, b: Option<Vec<T>>) -> Layer<T> {
    Layer::Weighted(Weighted {
        w: Rows::new(out, inp, data),
        b,
        conv: None,
    })
}

fn conv_layer<T: Real>(
    rng: &mut Rng,
    out: usize,
    inp: usize,
    g: ConvGeometry,
    bias: bool,
) -> Layer<T> {
    let per_group = inp / g.groups;
    let row_len = per_group * g.taps();
    let mut data = rng.vals(out * row_len, 2.0);
    if rng.chance(12) {
        let r = rng.below(out);
        data[r * row_len..(r + 1) * row_len].fill(T::from_f64(0.0));
    }
    Layer::Weighted(Weighted {
        w: Rows::new(out, row_len, data),
        b: bias.then(|| rng.vals(out, 1.0)),
        conv: Some(g),
    })
}

fn norm<T: Real>(rng: &mut Rng, channels: usize) -> Layer<T> {
    if rng.chance(5) {
        // A multiplication by a constant (ONNX `Mul`): never folded.
        return Layer::Norm(Norm {
            kind: NormKind::Scale,
            a: Some(rng.vals(channels, 2.0)),
            c: vec![T::from_f64(0.0); channels],
        });
    }
    if rng.chance(2) {
        Layer::Norm(Norm {
            kind: NormKind::Batch,
            // Any sign: a negative multiplier flips the unit.
            a: Some(rng.vals(channels, 2.0)),
            c: rng.vals(channels, 1.0),
        })
    } else {
        Layer::Norm(Norm {
            kind: NormKind::MeanOnly,
            a: None,
            c: rng.vals(channels, 1.0),
        })
    }
}

/// A random activation; the gate (which halves the channels) only where `channels` is given.
fn activation<T: Real>(rng: &mut Rng, channels: Option<usize>) -> Layer<T> {
    match rng.below(7) {
        0 | 1 => Layer::Act(Activation::Relu),
        2 => Layer::Act(Activation::LeakyRelu(rng.next() * 1.5)),
        3 => Layer::Act(Activation::Identity),
        4 => Layer::Barrier(Barrier::Tanh),
        5 => Layer::Barrier(Barrier::Sigmoid),
        _ if channels.is_some_and(|c| c.is_multiple_of(2)) && rng.chance(2) => {
            Layer::Barrier(Barrier::Gate)
        }
        _ => Layer::Barrier(Barrier::Gelu),
    }
}

/// A weighted layer taking `shape`: linear on a flat input, a convolution (random geometry
/// that fits) on `[C, L]` or `[C, H, W]`; if `same`, the output shape equals the input's.
fn weighted<T: Real>(rng: &mut Rng, shape: &[usize], same: bool) -> Layer<T> {
    let c = shape[0];
    let out = if same { c } else { 1 + rng.below(6) };
    let bias = rng.chance(2);
    if shape.len() == 1 {
        let mut data = rng.vals(out * c, 2.0);
        if rng.chance(12) {
            let r = rng.below(out);
            data[r * c..(r + 1) * c].fill(T::from_f64(0.0));
        }
        return dense(out, c, data, bias.then(|| rng.vals(out, 1.0)));
    }
    let dims = shape.len() - 1;
    for _ in 0..20 {
        let g = if same {
            let k = [1, 3][rng.below(2)];
            let d = 1 + rng.below(2);
            ConvGeometry {
                kernel: vec![k; dims],
                stride: vec![1; dims],
                padding: vec![d * (k - 1) / 2; dims],
                dilation: vec![d; dims],
                groups: if c.is_multiple_of(2) && rng.chance(3) {
                    2
                } else {
                    1
                },
            }
        } else {
            ConvGeometry {
                kernel: (0..dims).map(|_| 1 + rng.below(3)).collect(),
                stride: (0..dims).map(|_| 1 + rng.below(2)).collect(),
                padding: (0..dims).map(|_| rng.below(2)).collect(),
                dilation: (0..dims).map(|_| 1 + rng.below(2)).collect(),
                groups: if c.is_multiple_of(2) && out.is_multiple_of(2) && rng.chance(3) {
                    2
                } else {
                    1
                },
            }
        };
        let out = if g.groups == 2 && out % 2 == 1 {
            out + 1
        } else {
            out
        };
        let l = conv_layer(rng, out, c, g, bias);
        if l.out_shape(shape, &[]).is_ok_and(|s| !same || s == shape) {
            return l;
        }
    }
    conv_layer(
        rng,
        out,
        c,
        ConvGeometry {
            kernel: vec![1; dims],
            stride: vec![1; dims],
            padding: vec![0; dims],
            dilation: vec![1; dims],
            groups: 1,
        },
        bias,
    )
}

/// A residual body keeping `shape`: optionally starting with an activation or a barrier, a
/// weighted layer (with a norm), an activation, maybe a nested block, a weighted layer back to
/// the input's channels; sometimes no weighted layer at all.
fn body<T: Real>(rng: &mut Rng, shape: &[usize], nest: usize) -> Vec<Layer<T>> {
    if rng.chance(10) {
        return vec![activation(rng, None)];
    }
    let mut layers = Vec::new();
    if rng.chance(4) {
        layers.push(activation(rng, None));
    }
    let first = weighted(rng, shape, true);
    layers.push(first);
    if rng.chance(3) {
        layers.push(norm(rng, shape[0]));
    }
    layers.push(activation(rng, None));
    if nest < 2 && rng.chance(3) {
        layers.push(Layer::Residual(body(rng, shape, nest + 1)));
    }
    layers.push(weighted(rng, shape, true));
    if rng.chance(4) {
        layers.push(Layer::Act(Activation::Relu));
    }
    layers
}

/// A residual block with a projection shortcut taking `shape`: the body starts with a layer
/// that changes the channels (and, for convolutions, maybe the stride), the skip with a layer
/// of the same geometry; either may have a norm or an activation (or a barrier) around it.
fn shortcut<T: Real>(rng: &mut Rng, shape: &[usize]) -> Layer<T> {
    let (c, dims) = (shape[0], shape.len() - 1);
    let out = 1 + rng.below(5);
    let stride = if dims > 0 && shape[1..].iter().all(|&n| n >= 2) && rng.chance(2) {
        2
    } else {
        1
    };
    let project = |rng: &mut Rng, k: usize, pad: usize| -> Layer<T> {
        if dims == 0 {
            let data = rng.vals(out * c, 2.0);
            let b = rng.chance(2).then(|| rng.vals(out, 1.0));
            dense(out, c, data, b)
        } else {
            let g = ConvGeometry {
                kernel: vec![k; dims],
                stride: vec![stride; dims],
                padding: vec![pad; dims],
                dilation: vec![1; dims],
                groups: 1,
            };
            let bias = rng.chance(2);
            conv_layer(rng, out, c, g, bias)
        }
    };
    let mut body = vec![project(rng, 3, 1)];
    let inner = body[0].out_shape(shape, &[]).unwrap();
    if rng.chance(3) {
        body.push(norm(rng, out));
    }
    body.push(activation(rng, None));
    if rng.chance(2) {
        body.push(weighted(rng, &inner, true));
    }
    let skip = match rng.below(4) {
        0 => vec![project(rng, 1, 0)],
        1 => vec![project(rng, 1, 0), norm(rng, out)],
        2 => vec![activation(rng, None), project(rng, 1, 0)],
        // The body holds the only weighted layers: the skip is brought to it.
        _ if out == c && stride == 1 => vec![Layer::Act(Activation::Relu)],
        _ => vec![project(rng, 1, 0), Layer::Act(Activation::LeakyRelu(0.3))],
    };
    Layer::Shortcut { body, skip }
}

/// A random network with 1 to 6 weighted layers (not counting residual bodies).
fn random_network<T: Real>(rng: &mut Rng) -> Network<T> {
    let input = match rng.below(3) {
        0 => vec![1 + rng.below(8)],
        1 => vec![1 + rng.below(4), 3 + rng.below(6)],
        _ => vec![1 + rng.below(4), 3 + rng.below(5), 3 + rng.below(5)],
    };
    let depth = 1 + rng.below(6);
    let mut shape = input.clone();
    let mut layers: Vec<Layer<T>> = Vec::new();
    let mut count = 0;
    while count < depth {
        let layer = match rng.below(10) {
            0..=3 => {
                count += 1;
                weighted(rng, &shape, false)
            }
            4 | 5 => activation(rng, Some(shape[0])),
            6 if shape.len() == 3 && shape[1] >= 2 && shape[2] >= 2 => {
                let k = [1 + rng.below(2), 1 + rng.below(2)];
                Layer::Pool(Pool {
                    max: rng.chance(2),
                    kernel: k,
                    stride: [1 + rng.below(2), 1 + rng.below(2)],
                    padding: [rng.below(k[0] / 2 + 1), rng.below(k[1] / 2 + 1)],
                })
            }
            6 | 9 if shape.len() > 1 => Layer::Flatten,
            7 if rng.chance(2) => Layer::Residual(body(rng, &shape, 0)),
            7 => shortcut(rng, &shape),
            8 if rng.chance(4) => Layer::PRelu((0..shape[0]).map(|_| rng.next() * 1.5).collect()),
            8 if shape.len() == 1 && rng.chance(3) => Layer::Barrier(Barrier::Softmax),
            8 => norm(rng, shape[0]),
            _ => {
                count += 1;
                weighted(rng, &shape, false)
            }
        };
        if matches!(layer, Layer::Weighted(_)) && rng.chance(4) {
            shape = layer.out_shape(&shape, &[]).unwrap();
            layers.push(layer);
            layers.push(norm(rng, shape[0]));
            continue;
        }
        shape = layer.out_shape(&shape, &[]).unwrap();
        layers.push(layer);
    }
    Network::new(input, layers).unwrap()
}

fn inputs(rng: &mut Rng, shape: &[usize], n: usize) -> Vec<Vec<f64>> {
    let len = shape.iter().product();
    (0..n).map(|_| rng.vals(len, 2.0)).collect()
}

/// Every row of a layer that hands on its own scale is a unit vector (zero rows excepted).
fn check_unit_rows(reports: &[LayerReport], tol: f64, case: usize) {
    for r in reports {
        if r.carries.is_some() {
            continue;
        }
        let (lo, hi) = r.row_norms_after;
        // Only zero rows may differ from 1 (and they stay 0).
        assert!(
            (hi - 1.0).abs() < tol || (hi == 0.0 && !r.zero_rows.is_empty()),
            "case {case}: {r:?}"
        );
        if r.zero_rows.is_empty() {
            assert!((lo - 1.0).abs() < tol, "case {case}: {r:?}");
        }
    }
}

fn random_networks_keep_their_function<T: Real>(cases: usize, rel: f64, unit: f64, seed: u64) {
    let mut rng = Rng(seed);
    let (mut barriers, mut residuals, mut convs, mut carried) = (0, 0, 0, 0);
    let (mut shortcuts, mut prelus, mut scales) = (0, 0, 0);
    let mut worst = (0.0f64, 0.0f64);
    for case in 0..cases {
        let net = random_network::<T>(&mut rng);
        let dbg = format!("{net:?}");
        barriers += dbg.matches("Barrier(").count();
        residuals += dbg.matches("Residual(").count();
        convs += dbg.matches("conv: Some").count();
        shortcuts += dbg.matches("Shortcut {").count();
        prelus += dbg.matches("PRelu(").count();
        scales += dbg.matches("kind: Scale").count();
        let xs = inputs(&mut rng, &net.input, 16);
        let c = canonicalize(net.clone()).unwrap_or_else(|e| panic!("case {case}: {e}\n{net:?}"));
        carried += c.reports.iter().filter(|r| r.carries.is_some()).count();
        check_unit_rows(&c.reports, unit, case);
        let a = verify(&net, &c, &xs);
        assert!(
            a.max_rel_error < rel,
            "case {case}: canonical differs by {:e}\n{net:?}",
            a.max_rel_error
        );
        let (back, _) = reconstitute(c.network.clone(), &c.scale).unwrap();
        let b = Agreement::between(&net.forward(&xs), &back.forward(&xs));
        worst.0 = worst.0.max(a.max_rel_error);
        worst.1 = worst.1.max(b.max_rel_error);
        assert!(
            b.max_rel_error < rel,
            "case {case}: reconstituted differs by {:e}",
            b.max_rel_error
        );
    }
    eprintln!(
        "{cases} networks ({convs} convolutions, {residuals} residual blocks, {barriers} \
         barriers, {carried} layers carrying a scale); worst relative error: canonical {:e}, \
         reconstituted {:e}",
        worst.0, worst.1
    );
    // The generator exercised what it is meant to.
    assert!(barriers > cases / 2 && residuals > cases / 4 && convs > cases / 2);
    assert!(
        shortcuts > cases / 8 && prelus > cases / 20 && scales > cases / 20,
        "{shortcuts} shortcuts, {prelus} PReLUs, {scales} scales"
    );
    assert!(carried > cases / 4, "{carried} carrying layers");
}

#[test]
fn random_networks_f64() {
    random_networks_keep_their_function::<f64>(3000, 1e-9, 1e-12, 0x1234_5678_9abc_def1);
}

#[test]
fn random_networks_f32() {
    random_networks_keep_their_function::<f32>(3000, 1e-5, 1e-6, 0x0bad_cafe_f00d_beef);
}

#[test]
fn the_write_ups_linear_relu_linear() {
    let net = Network::new(
        vec![2],
        vec![
            dense(2, 2, vec![3.0, 4.0, 1.0, 0.0], Some(vec![0.5, -1.0])),
            Layer::Act(Activation::Relu),
            dense(1, 2, vec![2.0, -1.0], None),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    assert_eq!(c.scale.len(), 1);
    // g2 = || [2 * 5, -1 * 1] || = sqrt(101)
    assert!((c.global_gain() - 101f64.sqrt()).abs() < 1e-12);
    assert_eq!(c.gain_direction(), vec![1.0]);
    let Layer::Weighted(first) = &c.network.layers[0] else {
        panic!()
    };
    assert_eq!(first.w.data, vec![0.6, 0.8, 1.0, 0.0]);
    assert_eq!(first.b, Some(vec![0.1, -1.0]));
    assert!(verify(&net, &c, &[vec![1.0, 2.0], vec![-3.0, 0.5]]).max_abs_error < 1e-12);
}

#[test]
fn pooling_and_zero_padding_commute_with_a_positive_scale() {
    let mut rng = Rng(7);
    let shape = [2, 5, 4];
    let x: Vec<f64> = rng.vals(40, 3.0);
    let g = [0.5, 4.0];
    let scaled: Vec<f64> = x.iter().enumerate().map(|(i, v)| v * g[i / 20]).collect();
    for max in [true, false] {
        let p: Layer = Layer::Pool(Pool {
            max,
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 1],
        });
        let out = p.out_shape(&shape, &[0]).unwrap();
        let per = out[1] * out[2];
        let (a, b) = (p.forward(&scaled, &shape), p.forward(&x, &shape));
        for (i, (u, v)) in a.iter().zip(&b).enumerate() {
            assert!((u - g[i / per] * v).abs() < 1e-14, "max {max}");
        }
    }
    // A zero-padded convolution's input scale is absorbed per channel: padding contributes 0
    // before and after scaling.
    let conv: Layer = conv_layer(
        &mut rng,
        3,
        2,
        ConvGeometry {
            kernel: vec![3, 3],
            stride: vec![1, 1],
            padding: vec![2, 1],
            dilation: vec![1, 2],
            groups: 1,
        },
        true,
    );
    let Layer::Weighted(w) = &conv else { panic!() };
    let d = absorb(&g, &w.w, w.b.as_deref(), &[0]).unwrap();
    let mut absorbed = w.clone();
    absorbed.w = d.v;
    absorbed.b = d.bias;
    let (a, b) = (
        conv.forward(&scaled, &shape),
        Layer::Weighted(absorbed).forward(&x, &shape),
    );
    let per = a.len() / 3;
    for (i, (u, v)) in a.iter().zip(&b).enumerate() {
        assert!((u - d.g[i / per] * v).abs() < 1e-12);
    }
}

/// A 2x2 convolution of 2 to 3 channels with a bias, and a batch norm of multipliers `a` after
/// it.
fn conv_and_batch_norm(a: Vec<f64>) -> (Layer, Layer) {
    let conv: Layer = conv_layer(
        &mut Rng(11),
        3,
        2,
        ConvGeometry {
            kernel: vec![2, 2],
            stride: vec![1, 1],
            padding: vec![0, 0],
            dilation: vec![1, 1],
            groups: 1,
        },
        true,
    );
    let bn = Layer::Norm(Norm {
        kind: NormKind::Batch,
        a: Some(a),
        c: vec![0.1, 0.2, -0.3],
    });
    (conv, bn)
}

#[test]
fn batch_norm_folds_into_the_layer_before_it() {
    let (conv, bn) = conv_and_batch_norm(vec![2.0, -0.5, 1.5]);
    let net = Network::new(vec![2, 4, 4], vec![conv, bn, Layer::Act(Activation::Relu)]).unwrap();
    let c = canonicalize(net.clone()).unwrap();
    assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
    let Layer::Norm(n) = &c.network.layers[1] else {
        panic!()
    };
    assert!(n.a.is_none(), "the multiplier went into the rows");
    let Layer::Weighted(w) = &c.network.layers[0] else {
        panic!()
    };
    assert!(
        w.b.as_ref().unwrap().iter().all(|&b| b == 0.0),
        "the bias moved into the norm's shift"
    );
    let xs = inputs(&mut Rng(12), &[2, 4, 4], 4);
    assert!(verify(&net, &c, &xs).max_rel_error < 1e-12);
    // A batch norm with nothing before it to fold into is a per-channel layer: its multiplier
    // becomes the sign, the magnitude joins the scale.
    let net = Network::new(
        vec![3],
        vec![
            Layer::Norm(Norm {
                kind: NormKind::Batch,
                a: Some(vec![2.0, -0.5, 0.0]),
                c: vec![0.1, 0.2, -0.3],
            }),
            Layer::Act(Activation::Relu),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    let Layer::Norm(n) = &c.network.layers[0] else {
        panic!()
    };
    assert_eq!(n.a, Some(vec![1.0, -1.0, 0.0]));
    assert_eq!(c.scale, vec![2.0, 0.5, 1.0]);
    assert_eq!(c.reports[0].zero_rows, vec![2]);
    assert!(verify(&net, &c, &inputs(&mut Rng(13), &[3], 5)).max_abs_error < 1e-15);
}

#[test]
fn a_residual_body_is_brought_to_the_skip_scale() {
    let net = Network::new(
        vec![2],
        vec![
            dense(2, 2, vec![3.0, 0.0, 0.0, 0.5], None),
            Layer::Residual(vec![
                dense(2, 2, vec![1.0, 1.0, 1.0, -1.0], Some(vec![0.1, 0.2])),
                Layer::Act(Activation::Relu),
                dense(2, 2, vec![2.0, 0.0, 0.0, 2.0], None),
            ]),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    // The skip path's scale is the first layer's: [3, 0.5].
    assert_eq!(c.scale, vec![3.0, 0.5]);
    let last = c.reports.last().unwrap();
    assert_eq!(last.at, vec![1, 2]);
    assert_eq!(c.network.layer_name(&last.at).as_deref(), Some("1.body.2"));
    assert_eq!(last.carries, Some(Carry::ResidualRatio { block: vec![1] }));
    assert!(c.reports[1].carries.is_none());
    let mut rng = Rng(5);
    assert!(verify(&net, &c, &inputs(&mut rng, &[2], 6)).max_rel_error < 1e-12);
}

#[test]
fn a_barrier_takes_the_scale_back_and_propagation_restarts() {
    let net = Network::new(
        vec![2],
        vec![
            dense(2, 2, vec![3.0, 4.0, 0.0, 2.0], None),
            Layer::Act(Activation::Relu),
            Layer::Barrier(Barrier::Tanh),
            dense(1, 2, vec![6.0, 8.0], None),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    // The first layer carries its scale (it is the original layer); the last is unit.
    assert_eq!(
        c.reports[0].carries,
        Some(Carry::Barrier {
            barrier: Barrier::Tanh,
            at: vec![2]
        })
    );
    assert_eq!(c.reports[0].row_norms_after, (2.0, 5.0));
    assert_eq!(c.scale, vec![10.0]);
    let mut rng = Rng(3);
    assert!(verify(&net, &c, &inputs(&mut rng, &[2], 6)).max_rel_error < 1e-12);
}

#[test]
fn reconstitution_with_a_changed_scale() {
    let mut rng = Rng(99);
    let net: Network = Network::new(
        vec![3],
        vec![
            dense(4, 3, rng.vals(12, 2.0), Some(rng.vals(4, 1.0))),
            Layer::Act(Activation::Relu),
            dense(2, 4, rng.vals(8, 2.0), Some(rng.vals(2, 1.0))),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    let halved: Vec<f64> = c.scale.iter().map(|s| s / 2.0).collect();
    let (back, _) = reconstitute(c.network.clone(), &halved).unwrap();
    let xs = inputs(&mut rng, &[3], 4);
    for (a, b) in net.forward(&xs).iter().zip(back.forward(&xs)) {
        for (p, q) in a.iter().zip(&b) {
            assert!((p / 2.0 - q).abs() < 1e-12);
        }
    }
    assert!(reconstitute(c.network.clone(), &[1.0, -1.0]).is_err());
    assert!(reconstitute(c.network, &[1.0]).is_err());
}

/// A two-layer ReLU network whose weights are `a` times a fixed pattern.
fn scaled_pair<T: Real>(a: f64) -> Network<T> {
    let w = |vals: &[f64]| vals.iter().map(|&x| T::from_f64(x * a)).collect::<Vec<T>>();
    Network::new(
        vec![2],
        vec![
            dense(2, 2, w(&[3.0, 4.0, 1.0, 0.0]), None),
            Layer::Act(Activation::Relu),
            dense(1, 2, w(&[2.0, -1.0]), None),
        ],
    )
    .unwrap()
}

#[test]
fn huge_finite_weights_give_the_exact_finite_form() {
    // Rows of norm 5e30 in f32: the squares overflow f32, and W_temp (5e30 * 2e30) would too.
    let net = scaled_pair::<f32>(1e30);
    let c = canonicalize(net.clone()).unwrap();
    let expected = 101f64.sqrt() * 1e60;
    assert!(
        (c.global_gain() / expected - 1.0).abs() < 1e-6,
        "{}",
        c.global_gain()
    );
    for r in c.reports() {
        assert!((r.row_norms_after.1 - 1.0).abs() < 1e-6, "{r:?}");
    }
    let xs = [vec![1.0, 2.0], vec![-3.0, 0.5]];
    assert!(verify(&net, &c, &xs).max_rel_error < 1e-6);
}

#[test]
fn tiny_nonzero_weights_are_not_zero_rows() {
    // 1e-30 squared underflows f32 and nearly f64's normal range: still unit rows, not zeros.
    for a in [1e-30, 1e-150] {
        let c = canonicalize(scaled_pair::<f64>(a)).unwrap();
        assert!(c.reports().iter().all(|r| r.zero_rows.is_empty()), "{a}");
        let expected = 101f64.sqrt() * a * a;
        assert!((c.global_gain() / expected - 1.0).abs() < 1e-12, "{a}");
    }
    let c = canonicalize(scaled_pair::<f32>(1e-30)).unwrap();
    assert!(c.reports().iter().all(|r| r.zero_rows.is_empty()));
}

#[test]
fn a_scale_beyond_f64_is_an_error() {
    let e = canonicalize(scaled_pair::<f64>(1e200)).unwrap_err();
    assert!(
        matches!(&e, CanonicalError::Overflow { at, .. } if at == &[2]),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "layer 2: the norm of row 0 times its input scale exceeds the range of f64"
    );
}

#[test]
fn a_projection_shortcut_brings_the_body_to_the_skip_scale() {
    // y = P x + W2 relu(W1 x): the skip hands on its own scale, the body's last layer carries
    // it.
    let net = Network::new(
        vec![2],
        vec![
            Layer::Shortcut {
                body: vec![
                    dense(
                        3,
                        2,
                        vec![1.0, 2.0, -1.0, 0.5, 3.0, 1.0],
                        Some(vec![0.1, 0.2, 0.3]),
                    ),
                    Layer::Act(Activation::Relu),
                    dense(2, 3, vec![2.0, 0.0, 1.0, -1.0, 1.0, 0.5], None),
                ],
                skip: vec![dense(2, 2, vec![3.0, 4.0, 0.0, 2.0], Some(vec![1.0, -1.0]))],
            },
            Layer::Act(Activation::Relu),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    assert_eq!(c.scale, vec![5.0, 2.0]);
    let names: Vec<String> = c
        .reports
        .iter()
        .map(|r| Positions(&c.network).name(&r.at))
        .collect();
    assert_eq!(names, ["0.skip.0", "0.body.0", "0.body.2"]);
    assert_eq!(
        c.reports[2].carries,
        Some(Carry::ResidualRatio { block: vec![0] })
    );
    assert_eq!(
        c.reports[2]
            .carries
            .as_ref()
            .unwrap()
            .render(&Positions(&c.network)),
        "the ratio of the residual body's scale to the skip path's (block 0)"
    );
    assert_eq!(c.network.layer_name(&[0, 3]).as_deref(), Some("0.skip.0"));
    assert_eq!(c.network.layer_name(&[0, 1]).as_deref(), Some("0.body.1"));
    assert_eq!(c.network.layer_name(&[0, 4]), None);
    assert_eq!(
        net.parameter_layers(),
        vec![vec![0, 0], vec![0, 2], vec![0, 3]]
    );
    let Some(Layer::Weighted(skip)) = c.network.layer(&[0, 3]) else {
        panic!()
    };
    assert_eq!(skip.w.data, vec![0.6, 0.8, 0.0, 1.0]);
    let mut rng = Rng(9);
    let xs = inputs(&mut rng, &[2], 8);
    assert!(verify(&net, &c, &xs).max_rel_error < 1e-12);
    // Reconstituted with another scale: both branches carry it.
    let (back, reports) = reconstitute(c.network.clone(), &[1.0, 4.0]).unwrap();
    assert!(
        reports
            .iter()
            .any(|r| r.at == [0, 3] && r.carries == Some(Carry::Gain))
    );
    let want: Vec<Vec<f64>> = c
        .network
        .forward(&xs)
        .iter()
        .map(|y| vec![y[0], 4.0 * y[1]])
        .collect();
    assert!(Agreement::between(&want, &back.forward(&xs)).max_rel_error < 1e-12);
}

#[test]
fn prelu_and_a_multiplier_pass_or_absorb_a_positive_scale() {
    let net = Network::new(
        vec![2, 3],
        vec![
            conv_layer(
                &mut Rng(3),
                2,
                2,
                ConvGeometry {
                    kernel: vec![1],
                    stride: vec![1],
                    padding: vec![0],
                    dilation: vec![1],
                    groups: 1,
                },
                true,
            ),
            Layer::PRelu(vec![0.25, -2.0]),
            Layer::Norm(Norm {
                kind: NormKind::Scale,
                a: Some(vec![3.0, -0.5]),
                c: vec![0.0, 0.0],
            }),
        ],
    )
    .unwrap();
    let c = canonicalize(net.clone()).unwrap();
    // The multiplier is not folded: it absorbs the scale and keeps unit "rows" (its sign).
    assert!(c.notes.is_empty());
    let Some(Layer::Norm(n)) = c.network.layer(&[2]) else {
        panic!()
    };
    assert_eq!(n.a, Some(vec![1.0, -1.0]));
    assert_eq!(n.c, vec![0.0, 0.0]);
    let mut rng = Rng(4);
    assert!(verify(&net, &c, &inputs(&mut rng, &[2, 3], 8)).max_rel_error < 1e-12);
    // A PReLU takes one slope per channel.
    let e = Network::<f64>::new(vec![3], vec![Layer::PRelu(vec![0.1, 0.2])]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layer 0 (prelu): has 2 slopes for 3 channels"
    );
}

#[test]
fn a_softmax_is_a_barrier_on_flat_activations() {
    let net = Network::new(
        vec![2],
        vec![
            dense(3, 2, vec![1.0, 2.0, -1.0, 0.5, 3.0, 1.0], None),
            Layer::Barrier(Barrier::Softmax),
            dense(2, 3, vec![2.0, 0.0, 1.0, -1.0, 1.0, 0.5], None),
        ],
    )
    .unwrap();
    let y = net.forward(&[vec![0.0, 0.0]]);
    // softmax(0, 0, 0) = 1/3 each.
    assert!((y[0][0] - 1.0).abs() < 1e-15 && (y[0][1] - 0.5 / 3.0).abs() < 1e-15);
    let c = canonicalize(net.clone()).unwrap();
    assert!(matches!(
        c.reports[0].carries,
        Some(Carry::Barrier {
            barrier: Barrier::Softmax,
            ..
        })
    ));
    let mut rng = Rng(6);
    assert!(verify(&net, &c, &inputs(&mut rng, &[2], 8)).max_rel_error < 1e-12);
    let e = Network::<f64>::new(vec![2, 2], vec![Layer::Barrier(Barrier::Softmax)]).unwrap_err();
    assert!(e.to_string().contains("takes a flat input"), "{e}");
}

#[test]
fn notes_reports_and_errors_are_named_by_each_front_end() {
    // conv -> batch norm -> relu -> tanh -> linear: a folded norm (a note), a layer carrying
    // the scale before a barrier (a report), and an error at a position.
    let (conv, bn) = conv_and_batch_norm(vec![2.0, 0.5, 1.5]);
    let net = Network::new(
        vec![2, 3, 3],
        vec![
            conv,
            bn,
            Layer::Act(Activation::Relu),
            Layer::Barrier(Barrier::Tanh),
            Layer::Flatten,
            dense(2, 12, vec![0.25; 24], None),
        ],
    )
    .unwrap();
    let c = canonicalize(net).unwrap();
    // The calculus's own names, and an ONNX-like front-end's.
    let positions = Positions(&c.network);
    let onnx = |p: &LayerPath| match p {
        [0] => "/features/conv/Conv".to_string(),
        [1] => "/features/bn/BatchNormalization".to_string(),
        [3] => "/act/Tanh".to_string(),
        p => format!("#{p:?}"),
    };
    let [note] = c.notes() else {
        panic!("{:?}", c.notes())
    };
    assert_eq!(
        note.render(&positions),
        "layer 1 (batch_norm) folded into layer 0 (conv2d): its multiplier is in the rows, the \
         layer's bias is carried as its shift"
    );
    assert_eq!(note.to_string(), note.render(&positions));
    assert_eq!(
        note.render(&onnx),
        "layer /features/bn/BatchNormalization (batch_norm) folded into layer \
         /features/conv/Conv (conv2d): its multiplier is in the rows, the layer's bias is carried \
         as its shift"
    );
    let carried = c.reports()[0].carries.as_ref().unwrap();
    assert_eq!(
        carried.render(&positions),
        "the scale, multiplied back before tanh (layer 3)"
    );
    assert_eq!(
        carried.render(&onnx),
        "the scale, multiplied back before tanh (layer /act/Tanh)"
    );
    // An error names its layer either way; its Display is the calculus's.
    let e = reconstitute(c.network.clone(), &[1.0]).unwrap_err();
    assert_eq!(e.at(), Some(&[][..]));
    assert_eq!(
        e.to_string(),
        "layer output (scale): 1 scale entries for 2 output channels"
    );
    let e = CanonicalError::Overflow {
        at: vec![0],
        what: Overflow::RowNorm { row: 2 },
    };
    assert_eq!(
        e.render(&positions),
        "layer 0: the norm of row 2 times its input scale exceeds the range of f64"
    );
    assert_eq!(
        e.render(&onnx),
        "layer /features/conv/Conv: the norm of row 2 times its input scale exceeds the range of \
         f64"
    );
}
