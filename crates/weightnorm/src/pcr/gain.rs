//! The global gain of a live module as a differentiable tensor: the calculus's scale
//! propagation (transform III's row norms of `W * g_in`, transform II's pass-through, flatten's
//! repetition, barriers and residual blocks as [`crate::canonical::canonicalize`] treats them)
//! written in Burn's tensor operations, so that `lambda * G^2` can be added to a loss and
//! differentiated through every weight (weight-normalized ones too: the weight is read through
//! its reparameterization).

use burn::tensor::Tensor;

use crate::canonical::{Barrier, Layer};
use crate::live::{Canonicalizable, LiveError, Node, WeightedRef, plan};

/// Whether a residual body needs its input as it is (a barrier before any weighted layer):
/// the canonical form then hands scale 1 into the block.
fn needs_unit_input(nodes: &[Node<'_>]) -> bool {
    for node in nodes {
        match node {
            Node::Plain {
                layer: Layer::Barrier(_),
                ..
            } => return true,
            Node::Residual(body) if needs_unit_input(body) => return true,
            Node::Weighted { .. } => return false,
            _ => {}
        }
    }
    false
}

/// `sqrt(x)` with 1 where `x` is 0 (a zero row keeps scale 1, as in the calculus), whose
/// gradient is zero there rather than infinite.
fn norms_or_one(sumsq: Tensor<1>) -> Tensor<1> {
    let zero = sumsq.clone().equal_elem(0.0);
    sumsq.mask_fill(zero, 1.0).sqrt()
}

/// `g_out`: the norm of every row of `W * g_in` (one entry of `g_in` per input unit or
/// channel).
fn row_norms(layer: WeightedRef<'_>, out: usize, g_in: Tensor<1>) -> Tensor<1> {
    let g2 = g_in.square();
    // The squared scale of the input channel each row's elements read: `[out, per_group]`.
    let per_row = |groups: usize, per: usize| {
        g2.clone()
            .reshape([groups, 1, per])
            .repeat_dim(1, out / groups)
            .reshape([out, per])
    };
    let sumsq = match layer {
        WeightedRef::Linear(l) => {
            // Burn's layout `[in, out]`: sum_j W[j, i]^2 g_j^2.
            let w = l.weight.val();
            let [inputs, _] = w.dims();
            w.square()
                .transpose()
                .matmul(g2.reshape([inputs, 1]))
                .reshape([out])
        }
        WeightedRef::Conv1d(c) => {
            let w = c.weight.val();
            let [_, per, _] = w.dims();
            let taps = w.square().sum_dim(2).reshape([out, per]);
            (taps * per_row(c.groups, per)).sum_dim(1).reshape([out])
        }
        WeightedRef::Conv2d(c) => {
            let w = c.weight.val();
            let [_, per, _, _] = w.dims();
            let taps = w.square().sum_dim(3).sum_dim(2).reshape([out, per]);
            (taps * per_row(c.groups, per)).sum_dim(1).reshape([out])
        }
    };
    norms_or_one(sumsq)
}

fn propagate(nodes: &[Node<'_>], mut g: Tensor<1>) -> Tensor<1> {
    for node in nodes {
        g = match node {
            Node::Weighted { layer, out, .. } => row_norms(*layer, *out, g),
            Node::Plain {
                layer: Layer::Flatten,
                input,
            } => {
                let positions: usize = input[1..].iter().product();
                let [channels] = g.dims();
                g.reshape([channels, 1])
                    .repeat_dim(1, positions)
                    .reshape([channels * positions])
            }
            Node::Plain {
                layer: Layer::Barrier(b),
                input,
            } => {
                let channels = if *b == Barrier::Gate {
                    input[0] / 2
                } else {
                    input[0]
                };
                Tensor::ones([channels], &g.device())
            }
            Node::Plain { .. } => g,
            Node::Residual(body) => {
                if needs_unit_input(body) {
                    Tensor::ones(g.dims(), &g.device())
                } else {
                    // The body is brought to the skip path's scale: the scale passes.
                    g
                }
            }
        };
    }
    g
}

/// The output scale `g_final` of `module`'s canonical form, differentiable with respect to
/// every weight (one entry per output unit or channel).
///
/// It equals [`crate::canonical::Canonical::scale`] of the described module, computed in the
/// weights' precision.
///
/// # Errors
///
/// Those of [`crate::live::describe`]: a layer the front-end cannot describe.
pub fn output_scale<M: Canonicalizable>(module: &M) -> Result<Tensor<1>, LiveError> {
    let plan = plan(module)?;
    let device = first_device(&plan.nodes).ok_or_else(|| LiveError::Layer {
        at: Vec::new(),
        op: "network",
        fault: crate::live::LiveFault::NoWeights,
    })?;
    let g = Tensor::<1>::ones([plan.input[0]], &device);
    Ok(propagate(&plan.nodes, g))
}

fn first_device(nodes: &[Node<'_>]) -> Option<burn::tensor::Device> {
    nodes.iter().find_map(|n| match n {
        Node::Weighted { layer, .. } => Some(match layer {
            WeightedRef::Linear(l) => l.weight.lazy_device(),
            WeightedRef::Conv1d(c) => c.weight.lazy_device(),
            WeightedRef::Conv2d(c) => c.weight.lazy_device(),
        }),
        Node::Residual(body) => first_device(body),
        Node::Plain { .. } => None,
    })
}

/// `G^2 = ||g_final||^2`, the square of the global gain, as a one-element tensor
/// differentiable with respect to every weight.
///
/// # Errors
///
/// As [`output_scale`].
pub fn gain_squared<M: Canonicalizable>(module: &M) -> Result<Tensor<1>, LiveError> {
    Ok(output_scale(module)?.square().sum())
}

/// `G = ||g_final||`, the global gain, as a one-element tensor differentiable with respect to
/// every weight.
///
/// # Errors
///
/// As [`output_scale`].
pub fn global_gain<M: Canonicalizable>(module: &M) -> Result<Tensor<1>, LiveError> {
    Ok(gain_squared(module)?.sqrt())
}
