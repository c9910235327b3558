//! Per-op lowering of the layers with parameters: `Gemm`, `MatMul` and the `Add` of its bias,
//! `Conv` (with its padding rules), pooling, `BatchNormalization`.

use super::Binding;
use super::fault::NodeFault;
use super::graph::{Graph, R, attr_f, attr_i, attr_ints, attr_s, input, is_default_domain, op};
use super::lower::{Role, Slot};
use crate::canonical::{ConvGeometry, Layer, Norm, Pool, Real, Rows, Weighted};
use crate::graph::Step;

impl Graph<'_> {
    /// `Gemm`, or `MatMul` and the `Add` of its bias.
    pub(super) fn linear<T: Real>(
        &self,
        i: usize,
        v: &str,
        shape: &[usize],
    ) -> R<Step<String, Binding, T>> {
        let g = self;
        let n = &g.nodes[i];
        if input(n, 0) != Some(v) {
            return Err(g.err(i, NodeFault::ActivationNotFirst));
        }
        if shape.len() != 1 {
            return Err(g.err(i, NodeFault::NotFlat(shape.to_vec())));
        }
        let gemm = op(n) == "Gemm";
        if gemm && attr_i(n, "transA", 0) != 0 {
            return Err(g.err(i, NodeFault::TransA));
        }
        let trans_b = gemm && attr_i(n, "transB", 0) != 0;
        let alpha = if gemm { attr_f(n, "alpha", 1.0) } else { 1.0 };
        let beta = if gemm { attr_f(n, "beta", 1.0) } else { 1.0 };
        if alpha == 0.0 || !alpha.is_finite() || !beta.is_finite() {
            return Err(g.err(i, NodeFault::GemmScalars { alpha, beta }));
        }
        let w = self.param::<T>(i, 1, "weight")?;
        if w.dims.len() != 2 || w.dims.contains(&0) {
            return Err(g.err(
                i,
                NodeFault::NotAMatrix {
                    name: w.name,
                    dims: w.dims,
                },
            ));
        }
        let (out_units, in_units) = if trans_b {
            (w.dims[0], w.dims[1])
        } else {
            (w.dims[1], w.dims[0])
        };
        if in_units != shape[0] {
            return Err(g.err(
                i,
                NodeFault::WeightInputs {
                    name: w.name,
                    dims: w.dims,
                    features: shape[0],
                },
            ));
        }
        let mut rows: Vec<T> = if trans_b {
            w.values
        } else {
            let mut t = vec![T::from_f64(0.0); w.values.len()];
            for r in 0..in_units {
                for c in 0..out_units {
                    t[c * in_units + r] = w.values[r * out_units + c];
                }
            }
            t
        };
        if alpha != 1.0 {
            for x in &mut rows {
                *x = T::from_f64(x.to_f64() * alpha);
            }
        }
        let mut slots = vec![Slot {
            node: i,
            input: 1,
            role: Role::Weight {
                transposed: !trans_b,
                alpha,
            },
            dtype: w.dtype,
            dims: w.dims.iter().map(|&d| d as i64).collect(),
        }];
        let mut value = n.output.first().cloned().unwrap_or_default();
        let mut bias = None;
        let mut name = op(n).to_string();
        // The bias: Gemm's C, or the Add after a MatMul.
        let bias_at = if gemm {
            input(n, 2).filter(|_| beta != 0.0).map(|_| (i, 2))
        } else {
            match g.consumers(&value) {
                [j] if op(&g.nodes[*j]) == "Add"
                    && value != g.output
                    && !g.is_merge(*j)
                    && is_default_domain(&g.nodes[*j]) =>
                {
                    let k = if g.nodes[*j].input.first() == Some(&value) {
                        1
                    } else {
                        0
                    };
                    Some((*j, k))
                }
                _ => None,
            }
        };
        if let Some((j, k)) = bias_at {
            let (p, vals, dims) = self.channel_vector::<T>(j, k, &[out_units], "bias")?;
            bias = Some(
                vals.iter()
                    .map(|x| T::from_f64(x.to_f64() * beta))
                    .collect(),
            );
            slots.push(Slot {
                node: j,
                input: k,
                role: Role::Bias { beta },
                dtype: p.dtype,
                dims,
            });
            if j != i {
                value = g.nodes[j].output.first().cloned().unwrap_or_default();
                name = "MatMul+Add".into();
            }
        }
        let layer = Layer::Weighted(Weighted {
            w: Rows::new(out_units, in_units, rows),
            b: bias,
            conv: None,
        });
        Ok(Step {
            node: i,
            layers: vec![(
                layer,
                Some(Binding {
                    path: Vec::new(),
                    node: g.name(i),
                    op: name,
                    param: Some(w.name),
                    slots,
                }),
            )],
            value,
        })
    }

    /// The pads of a convolution or pooling: symmetric, from `pads` or `auto_pad`.
    fn pads(
        &self,
        i: usize,
        shape: &[usize],
        kernel: &[usize],
        stride: &[usize],
        dilation: &[usize],
    ) -> R<Vec<usize>> {
        let g = self;
        let n = &g.nodes[i];
        let dims = kernel.len();
        match attr_s(n, "auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => {
                let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * dims]);
                if pads.len() != 2 * dims || pads.iter().any(|&p| p < 0) {
                    return Err(g.err(
                        i,
                        NodeFault::Pads {
                            pads,
                            spatial: dims,
                        },
                    ));
                }
                if pads[..dims] != pads[dims..] {
                    return Err(g.err(i, NodeFault::AsymmetricPads(pads)));
                }
                Ok(pads[..dims].iter().map(|&p| p as usize).collect())
            }
            Some("VALID") => Ok(vec![0; dims]),
            Some(mode @ ("SAME_UPPER" | "SAME_LOWER")) => (0..dims)
                .map(|a| {
                    let n_in = shape[1 + a];
                    let out = n_in.div_ceil(stride[a]);
                    let span = dilation[a] * (kernel[a] - 1) + 1;
                    let total = ((out - 1) * stride[a] + span).saturating_sub(n_in);
                    if total % 2 == 1 {
                        Err(g.err(i, NodeFault::SameUneven(mode.to_string())))
                    } else {
                        Ok(total / 2)
                    }
                })
                .collect(),
            Some(other) => Err(g.err(i, NodeFault::AutoPad(other.to_string()))),
        }
    }

    pub(super) fn conv<T: Real>(
        &self,
        i: usize,
        v: &str,
        shape: &[usize],
    ) -> R<Step<String, Binding, T>> {
        let g = self;
        let n = &g.nodes[i];
        if input(n, 0) != Some(v) {
            return Err(g.err(i, NodeFault::ActivationNotFirst));
        }
        let w = self.param::<T>(i, 1, "weight")?;
        let dims = w.dims.len().saturating_sub(2);
        if !(1..=2).contains(&dims) || w.dims.contains(&0) {
            return Err(g.err(
                i,
                NodeFault::ConvWeight {
                    name: w.name,
                    dims: w.dims,
                },
            ));
        }
        if shape.len() != dims + 1 {
            return Err(g.err(
                i,
                NodeFault::ConvInput {
                    spatial: dims,
                    shape: shape.to_vec(),
                },
            ));
        }
        let positive = |name: &'static str| -> R<Vec<usize>> {
            let v = attr_ints(n, name).unwrap_or_else(|| vec![1; dims]);
            if v.len() != dims || v.iter().any(|&x| x < 1) {
                return Err(g.err(i, NodeFault::Attribute { name, values: v }));
            }
            Ok(v.iter().map(|&x| x as usize).collect())
        };
        let stride = positive("strides")?;
        let dilation = positive("dilations")?;
        let kernel = w.dims[2..].to_vec();
        if let Some(k) = attr_ints(n, "kernel_shape")
            && k.iter().map(|&x| x as usize).ne(kernel.iter().copied())
        {
            return Err(g.err(
                i,
                NodeFault::KernelShape {
                    kernel: k,
                    dims: w.dims,
                },
            ));
        }
        let groups = attr_i(n, "group", 1);
        if groups < 1 || !w.dims[0].is_multiple_of(groups as usize) {
            return Err(g.err(
                i,
                NodeFault::Groups {
                    groups,
                    out: w.dims[0],
                },
            ));
        }
        let padding = self.pads(i, shape, &kernel, &stride, &dilation)?;
        let out = w.dims[0];
        let row_len = w.values.len() / out;
        let mut slots = vec![Slot {
            node: i,
            input: 1,
            role: Role::Weight {
                transposed: false,
                alpha: 1.0,
            },
            dtype: w.dtype,
            dims: w.dims.iter().map(|&d| d as i64).collect(),
        }];
        let bias = match input(n, 2) {
            Some(_) => {
                let b = self.param::<T>(i, 2, "bias")?;
                if b.values.len() != out {
                    return Err(g.err(i, NodeFault::BiasShape { dims: b.dims, out }));
                }
                slots.push(Slot {
                    node: i,
                    input: 2,
                    role: Role::Bias { beta: 1.0 },
                    dtype: b.dtype,
                    dims: b.dims.iter().map(|&d| d as i64).collect(),
                });
                Some(b.values)
            }
            None => None,
        };
        let layer = Layer::Weighted(Weighted {
            w: Rows::new(out, row_len, w.values),
            b: bias,
            conv: Some(ConvGeometry {
                kernel,
                stride,
                padding,
                dilation,
                groups: groups as usize,
            }),
        });
        Ok(Step {
            node: i,
            layers: vec![(
                layer,
                Some(Binding {
                    path: Vec::new(),
                    node: g.name(i),
                    op: "Conv".into(),
                    param: Some(w.name),
                    slots,
                }),
            )],
            value: n.output.first().cloned().unwrap_or_default(),
        })
    }

    pub(super) fn pool(&self, i: usize, shape: &[usize]) -> R<Pool> {
        let g = self;
        let n = &g.nodes[i];
        if shape.len() != 3 {
            return Err(g.err(i, NodeFault::Pool2d(shape.to_vec())));
        }
        let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
            .filter(|k| k.len() == 2 && k.iter().all(|&x| x >= 1))
            .ok_or_else(|| g.err(i, NodeFault::PoolKernel))?
            .iter()
            .map(|&x| x as usize)
            .collect();
        let stride: Vec<usize> = match attr_ints(n, "strides") {
            None => vec![1, 1],
            Some(s) if s.len() == 2 && s.iter().all(|&x| x >= 1) => {
                s.iter().map(|&x| x as usize).collect()
            }
            Some(s) => {
                return Err(g.err(
                    i,
                    NodeFault::Attribute {
                        name: "strides",
                        values: s,
                    },
                ));
            }
        };
        if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(g.err(i, NodeFault::DilatedPool));
        }
        if attr_i(n, "ceil_mode", 0) != 0 {
            return Err(g.err(i, NodeFault::CeilMode));
        }
        let padding = self.pads(i, shape, &kernel, &stride, &[1, 1])?;
        let max = op(n) == "MaxPool";
        if !max && padding.iter().any(|&p| p > 0) && attr_i(n, "count_include_pad", 0) == 0 {
            return Err(g.err(i, NodeFault::CountIncludePad));
        }
        Ok(Pool {
            max,
            kernel: [kernel[0], kernel[1]],
            stride: [stride[0], stride[1]],
            padding: [padding[0], padding[1]],
        })
    }

    pub(super) fn batch_norm<T: Real>(
        &self,
        i: usize,
        shape: &[usize],
    ) -> R<Step<String, Binding, T>> {
        let g = self;
        let n = &g.nodes[i];
        g.only_first_output(i)?;
        if attr_i(n, "training_mode", 0) != 0 || (g.opset < 9 && attr_i(n, "spatial", 1) != 1) {
            return Err(g.err(i, NodeFault::NormTraining));
        }
        let eps = attr_f(n, "epsilon", 1e-5);
        let c = shape[0];
        let mut params = Vec::new();
        for (k, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let p = self.param::<T>(i, k, what)?;
            if p.values.len() != c {
                return Err(g.err(
                    i,
                    NodeFault::NormLength {
                        what,
                        name: p.name,
                        got: p.values.len(),
                        channels: c,
                    },
                ));
            }
            params.push(p);
        }
        let norm = Norm::batch(
            Some(&params[0].values),
            Some(&params[1].values),
            &params[2].values,
            &params[3].values,
            eps,
        )
        .map_err(|e| g.err(i, NodeFault::Norm(e)))?;
        let roles = [
            Role::BnScale { eps },
            Role::BnBias,
            Role::BnMean,
            Role::BnVar { eps },
        ];
        let slots = params
            .iter()
            .zip(roles)
            .enumerate()
            .map(|(k, (p, role))| Slot {
                node: i,
                input: k + 1,
                role,
                dtype: p.dtype,
                dims: p.dims.iter().map(|&d| d as i64).collect(),
            })
            .collect();
        Ok(Step {
            node: i,
            layers: vec![(
                Layer::Norm(norm),
                Some(Binding {
                    path: Vec::new(),
                    node: g.name(i),
                    op: "BatchNormalization".into(),
                    param: Some(params[0].name.clone()),
                    slots,
                }),
            )],
            value: n.output.first().cloned().unwrap_or_default(),
        })
    }
}
