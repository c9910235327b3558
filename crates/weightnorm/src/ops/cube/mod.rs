//! The CubeCL backend's weight norm (CUDA and wgpu, features `cuda` and `wgpu`): the launch
//! plan and the adapter from Burn's `CubeTensor`s to the kernels of [`kernels`].
//!
//! f32, f16 and bf16 run the fused kernels (sums in f32, each output rounded once); other
//! dtypes (f64) take the composed default. A tensor is viewed as `[outer, n, inner]` around the
//! kept axis, as on the CPU; strided inputs are made contiguous first.
//!
//! In Burn's dispatch the `Cube` backend is `Fusion<CubeBackend>`; the backend extension's
//! `Fusion` selector (see `backend.rs`) registers each operation as one lazy operation of the
//! fusion stream, which calls the implementation here when the stream runs.

mod kernels;

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use self::kernels::{
    APPLY, FUSED, PARTIAL, PARTIAL_STRIDE, RESCALE, RESCALE_STRIDE, columns_kernel, runs_kernel,
};
use super::backend::{WeightNormBackend, composed_backward, composed_forward};
use crate::NormAxis;

impl WeightNormBackend for CubeBackend {
    fn weight_norm_forward(
        v: CubeTensor,
        g: CubeTensor,
        keep: Option<usize>,
        eps: f64,
    ) -> CubeTensor {
        if !fused_dtype(v.dtype) {
            return composed_forward::<Self>(v, g, keep, eps);
        }
        run(v, g, None, keep, eps).0
    }

    fn weight_norm_backward(
        v: CubeTensor,
        g: CubeTensor,
        dw: CubeTensor,
        keep: Option<usize>,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        if !fused_dtype(v.dtype) {
            return composed_backward::<Self>(v, g, dw, keep, eps);
        }
        let (dv, dg) = run(v, g, Some(dw), keep, eps);
        (dv, dg.expect("the backward writes dg"))
    }
}

/// The dtypes the kernels read and write.
fn fused_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Runs of at least this many elements are read along the run ([`Layout::Runs`]); shorter
/// ones across the slices ([`Layout::Columns`]).
const RUN_MIN: usize = 32;
/// Units per cube, at most (fewer where the device allows fewer).
const UNITS: usize = 256;
/// Elements per unit below which a slice is not cut into more chunks.
const PER_UNIT: usize = 8;
/// Cubes per streaming multiprocessor that keep a device busy; where the device does not say
/// how many it has, [`FALLBACK_CUBES`] in all.
const CUBES_PER_SM: usize = 8;
/// The number of cubes to aim for on a device that does not report its multiprocessors.
const FALLBACK_CUBES: usize = 512;

/// How a launch covers a tensor viewed as `[outer, n, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// One cube per slice and chunk; `units` units stride over the slice's flat index.
    Runs {
        units: usize,
        chunk_len: usize,
        chunks: usize,
    },
    /// One cube per tile of `slices` whole slices (`lanes` columns of a row) and chunk of
    /// `chunk_rows` rows, in `groups` groups of rows.
    Columns {
        lanes: usize,
        groups: usize,
        slices: usize,
        chunk_rows: usize,
        chunks: usize,
    },
}

impl Layout {
    /// The plan for `[outer, n, inner]` (every factor non-zero) on a device that runs at most
    /// `max_units` units per cube and is kept busy by `target` cubes.
    fn plan([outer, n, inner]: [usize; 3], max_units: usize, target: usize) -> Self {
        // A power of two (the trees halve), at most what the device allows.
        let cap = prev_power_of_two(max_units.clamp(1, UNITS));
        if inner >= RUN_MIN {
            let len = outer * inner;
            let units = cap.min(len.next_power_of_two()).max(1);
            let chunks = if n >= target {
                1
            } else {
                target.div_ceil(n).min((len / (units * PER_UNIT)).max(1))
            };
            let chunk_len = len.div_ceil(chunks);
            Layout::Runs {
                units,
                chunk_len,
                chunks: len.div_ceil(chunk_len),
            }
        } else {
            // 32 lanes (128 bytes of f32) where whole slices fill them, else 64.
            let lanes = if 32 % inner == 0 { 32 } else { 64 }.min(cap);
            let groups = (cap / lanes).max(1);
            let slices = lanes / inner;
            let tiles = n.div_ceil(slices);
            let chunks = if tiles >= target {
                1
            } else {
                target
                    .div_ceil(tiles)
                    .min((outer / (groups * PER_UNIT)).max(1))
            };
            let chunk_rows = outer.div_ceil(chunks);
            Layout::Columns {
                lanes,
                groups,
                slices,
                chunk_rows,
                chunks: outer.div_ceil(chunk_rows),
            }
        }
    }

    fn chunks(&self) -> usize {
        match *self {
            Layout::Runs { chunks, .. } | Layout::Columns { chunks, .. } => chunks,
        }
    }
}

fn prev_power_of_two(x: usize) -> usize {
    if x.is_power_of_two() {
        x
    } else {
        x.next_power_of_two() / 2
    }
}

/// The grid for `tiles` tiles (over x and y, at most 65535 along x) and `chunks` chunks (z).
fn grid(tiles: usize, chunks: usize) -> CubeCount {
    let x = tiles.clamp(1, 65_535);
    let y = tiles.div_ceil(x);
    CubeCount::Static(x as u32, y as u32, chunks as u32)
}

/// The forward (`dw` = `None`) or the backward: `(w, None)` or `(dv, Some(dg))`.
fn run(
    v: CubeTensor,
    g: CubeTensor,
    dw: Option<CubeTensor>,
    keep: Option<usize>,
    eps: f64,
) -> (CubeTensor, Option<CubeTensor>) {
    let shape = v.shape();
    let g_shape = g.shape();
    let dtype = v.dtype;
    if let Some(k) = keep {
        assert!(
            k < shape.len(),
            "weight norm: axis {k} of a rank-{} v",
            shape.len()
        );
    }
    let [outer, n, inner] = NormAxis::from(keep).split_shape(&shape);
    // The kernels index without bounds checks: what they rely on, checked here.
    assert_eq!(
        g_shape.num_elements(),
        n,
        "weight norm: g holds {} values, but v has {n} slices along the kept axis",
        g_shape.num_elements()
    );
    if let Some(dw) = &dw {
        assert_eq!(
            dw.shape(),
            shape,
            "weight norm: dw has shape {:?}, v {shape:?}",
            dw.shape()
        );
    }
    let backward = dw.is_some();
    let (client, device) = (v.client.clone(), v.device.clone());

    let out = empty_device_contiguous_dtype(client.clone(), device.clone(), shape.clone(), dtype);
    if outer * n * inner == 0 {
        // Nothing to normalize; the gradient of g over empty slices is zero.
        let dg = backward.then(|| zeros_client(client, device, g_shape, dtype));
        return (out, dg);
    }

    let v = into_contiguous(v);
    let g = into_contiguous(g);
    let dw = dw.map(into_contiguous);
    let dg = if backward {
        empty_device_contiguous_dtype(client.clone(), device.clone(), g_shape, dtype)
    } else {
        // Not written by the forward; the kernels take one buffer of each kind.
        empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::from([1]), dtype)
    };

    let props = client.properties();
    let max_units = props.hardware.max_units_per_cube as usize;
    let target = props
        .hardware
        .num_streaming_multiprocessors
        .map_or(FALLBACK_CUBES, |sm| sm as usize * CUBES_PER_SM);
    let layout = Layout::plan([outer, n, inner], max_units, target);
    let chunks = layout.chunks();
    let scratch = |stride: usize| {
        let len = if chunks > 1 { n * chunks * stride } else { 1 };
        empty_device_contiguous_dtype(
            client.clone(),
            device.clone(),
            Shape::from([len]),
            DType::F32,
        )
    };
    let partial = scratch(PARTIAL_STRIDE);
    let scaled = scratch(RESCALE_STRIDE);
    let phases: &[u32] = if chunks > 1 {
        &[PARTIAL, RESCALE, APPLY]
    } else {
        &[FUSED]
    };

    let address = v.required_address_type();
    let elem = dtype_to_storage_type(dtype);
    let eps = eps as f32;
    for &phase in phases {
        let dw_arg = dw.as_ref().unwrap_or(&v).clone().into_buffer_arg();
        match layout {
            Layout::Runs {
                units,
                chunk_len,
                chunks,
            } => {
                // SAFETY: every index the kernel reads or writes is below the length of its
                // buffer: elements of `[outer, n, inner]` for v, dw and out, slices for g and
                // dg (the forward writes none), chunks of slices for the scratch buffers.
                unsafe {
                    runs_kernel::launch_unchecked(
                        &client,
                        grid(n, chunks),
                        CubeDim::new_1d(units as u32),
                        address,
                        v.clone().into_buffer_arg(),
                        dw_arg,
                        g.clone().into_buffer_arg(),
                        out.clone().into_buffer_arg(),
                        dg.clone().into_buffer_arg(),
                        partial.clone().into_buffer_arg(),
                        scaled.clone().into_buffer_arg(),
                        n,
                        inner,
                        outer * inner,
                        chunk_len,
                        chunks,
                        eps,
                        units,
                        outer == 1,
                        backward,
                        phase,
                        elem,
                    )
                };
            }
            Layout::Columns {
                lanes,
                groups,
                slices,
                chunk_rows,
                chunks,
            } => {
                // SAFETY: as above; lanes past the tile's slices or the last slice read and
                // write nothing.
                unsafe {
                    columns_kernel::launch_unchecked(
                        &client,
                        grid(n.div_ceil(slices), chunks),
                        CubeDim::new_2d(lanes as u32, groups as u32),
                        address,
                        v.clone().into_buffer_arg(),
                        dw_arg,
                        g.clone().into_buffer_arg(),
                        out.clone().into_buffer_arg(),
                        dg.clone().into_buffer_arg(),
                        partial.clone().into_buffer_arg(),
                        scaled.clone().into_buffer_arg(),
                        outer,
                        n,
                        inner,
                        slices,
                        chunk_rows,
                        chunks,
                        eps,
                        lanes,
                        groups,
                        backward,
                        phase,
                        elem,
                    )
                };
            }
        }
    }
    (out, backward.then_some(dg))
}
