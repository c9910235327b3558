//! The autodiff nodes: one graph node for the whole weight-norm forward, whose backward is the
//! analytic formula of [`WeightNormBackend::weight_norm_backward`], and one for the paper-form
//! linear layer [`WeightNormBackend::weight_norm_linear`].

use burn::backend::AutodiffBackend;
use burn::backend::tensor::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::backend::{LINEAR_KEEP, WeightNormBackend, clamp_norm, v_coefficient};

#[derive(Debug)]
struct WeightNormNode;

/// What the backward needs: `v` and `g` themselves (parameters, so no extra memory), the axis
/// and the epsilon. The norms are recomputed in the backward's fused pass.
#[derive(Clone, Debug)]
struct WeightNormState<B: WeightNormBackend> {
    v: FloatTensor<B>,
    g: FloatTensor<B>,
    keep: Option<usize>,
    eps: f64,
}

impl<B: WeightNormBackend> Backward<B, 2> for WeightNormNode {
    type State = WeightNormState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_v, node_g] = ops.parents;
        let dw = grads.consume::<B>(&ops.node);
        let WeightNormState { v, g, keep, eps } = ops.state;
        let (dv, dg) = B::weight_norm_backward(v, g, dw, keep, eps);
        if let Some(node) = node_v {
            grads.register::<B>(node.id, dv);
        }
        if let Some(node) = node_g {
            grads.register::<B>(node.id, dg);
        }
    }
}

#[derive(Debug)]
struct WnLinearNode;

/// What the linear layer's backward needs: the input and `v` (which a plain layer's matmul
/// keeps too), `g`, the unclamped column norms and `u = x v` (both of the output's size or
/// smaller).
#[derive(Clone, Debug)]
struct WnLinearState<B: WeightNormBackend> {
    x: FloatTensor<B>,
    v: FloatTensor<B>,
    g: FloatTensor<B>,
    norm: FloatTensor<B>,
    u: FloatTensor<B>,
    eps: f64,
}

impl<B: WeightNormBackend> Backward<B, 3> for WnLinearNode {
    type State = WnLinearState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_v, node_g] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let WnLinearState {
            x,
            v,
            g,
            norm,
            u,
            eps,
        } = ops.state;
        let n = clamp_norm::<B>(norm.clone(), eps);
        // y = u s with s = g / n: du = dy s, and the gradient of s is sum_rows(dy u).
        let s = B::float_div(g.clone(), n.clone());
        let du = B::float_mul(dy.clone(), s);
        if let Some(node) = node_x {
            let dx = B::float_matmul(du.clone(), B::float_transpose(v.clone()));
            grads.register::<B>(node.id, dx);
        }
        let ds = B::float_sum_dim(B::float_mul(dy, u), 0);
        if let Some(node) = node_g {
            grads.register::<B>(node.id, B::float_div(ds.clone(), n.clone()));
        }
        if let Some(node) = node_v {
            let gp = B::float_matmul(B::float_transpose(x), du);
            // c = g ds / n^3, zero where the norm is clamped (s does not depend on v there).
            let c = v_coefficient::<B>(g, ds, n, norm, eps);
            grads.register::<B>(node.id, B::weight_norm_sub_scaled(gp, v, c, LINEAR_KEEP));
        }
    }
}

impl<B: WeightNormBackend, C: CheckpointStrategy> WeightNormBackend for Autodiff<B, C> {
    fn weight_norm_forward(
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        keep: Option<usize>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let prep = WeightNormNode
            .prepare::<C>([v.node(), g.node()])
            .compute_bound()
            .stateful();
        let v = v.into_primitive();
        let g = g.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => {
                let w = B::weight_norm_forward(v.clone(), g.clone(), keep, eps);
                prep.finish(WeightNormState { v, g, keep, eps }, w)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::weight_norm_forward(v, g, keep, eps)),
        }
    }

    /// First-order only: the gradients come back untracked.
    fn weight_norm_backward(
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        dw: FloatTensor<Self>,
        keep: Option<usize>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dv, dg) = B::weight_norm_backward(
            <Self as AutodiffBackend>::inner(v),
            <Self as AutodiffBackend>::inner(g),
            <Self as AutodiffBackend>::inner(dw),
            keep,
            eps,
        );
        (
            <Self as AutodiffBackend>::from_inner(dv),
            <Self as AutodiffBackend>::from_inner(dg),
        )
    }

    fn weight_norm_linear(
        x: FloatTensor<Self>,
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let prep = WnLinearNode
            .prepare::<C>([x.node(), v.node(), g.node()])
            .compute_bound()
            .stateful();
        let (x, v, g) = (x.into_primitive(), v.into_primitive(), g.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let norm = B::weight_norm_norms(v.clone(), LINEAR_KEEP);
                let s = B::float_div(g.clone(), clamp_norm::<B>(norm.clone(), eps));
                let u = B::float_matmul(x.clone(), v.clone());
                let y = B::float_mul(u.clone(), s);
                let state = WnLinearState {
                    x,
                    v,
                    g,
                    norm,
                    u,
                    eps,
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::weight_norm_linear(x, v, g, eps)),
        }
    }
}
