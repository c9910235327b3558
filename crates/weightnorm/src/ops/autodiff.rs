//! The autodiff node: one graph node for the whole weight-norm forward, whose backward is the
//! analytic formula of [`WeightNormBackend::weight_norm_backward`].

use burn::backend::AutodiffBackend;
use burn::backend::tensor::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::backend::WeightNormBackend;

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
}
