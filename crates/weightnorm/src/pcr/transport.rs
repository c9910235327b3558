//! The optimizer's state carried across a rescaling, element by element: the core's arithmetic
//! ([`crate::transport`]) on Burn's optimizer record.
//!
//! Burn keeps an optimizer's state per parameter, keyed by [`ParamId`], and exposes it only as
//! an [`OptimizerRecord`] (burnpack: tensors named `"{param_id}.{field path}"` with the id
//! attached, scalars such as Adam's step count `"{param_id}.momentum.time"`). A rescaling
//! multiplies each element of a weight or bias by a factor `a`; the state is rewritten through
//! the record, field by field:
//!
//! | field (Burn 0.22) | optimizer | order | covariant | weight-scaled |
//! |---|---|---|---|---|
//! | `momentum.moment_1` | Adam, AdamW | 1 | `m / a` | `a m` |
//! | `momentum.moment_2`, `momentum.max_moment_2` | Adam, AdamW (AMSGrad) | 2 | `v / a^2` | `a^2 v` |
//! | `momentum.velocity` | SGD with momentum | 1 | `b / a` | `a b` |
//!
//! Scalars (the step count) are kept. `reset` removes the rescaled parameters' state, so the
//! optimizer starts them afresh (zero moments, step count 0: Burn's state before a first
//! step); `keep` leaves the record untouched. A tensor field this table does not know is
//! refused ([`PcrError::UnknownState`]) rather than carried wrong.

use std::collections::HashMap;

use burn::module::ParamId;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{DType, TensorData};
use weightnorm_core::transport::{Order, transport_f32, transport_f64};

use super::{PcrError, Transport};

/// The order of a state field in the gradient, from its path below the parameter id.
fn order(field: &str) -> Option<Order> {
    match field.rsplit('.').next()? {
        "moment_1" | "velocity" => Some(Order::First),
        "moment_2" | "max_moment_2" => Some(Order::Second),
        _ => None,
    }
}

fn record_error(e: impl std::fmt::Display) -> PcrError {
    PcrError::Record(e.to_string())
}

/// Rewrites `record` for parameters rescaled element by element by `factors` (by id, in each
/// parameter's layout), under `policy`. Parameters without factors are left as they are.
///
/// # Errors
///
/// [`PcrError::Record`] if the record cannot be decoded; [`PcrError::UnknownState`] for a
/// state tensor of a rescaled parameter whose transport is unknown (under `covariant` and
/// `weight-scaled`); [`PcrError::StateShape`] if a state tensor does not have its parameter's
/// number of elements.
pub fn transport_record(
    record: OptimizerRecord,
    factors: &HashMap<ParamId, Vec<f64>>,
    policy: Transport,
) -> Result<OptimizerRecord, PcrError> {
    if policy == Transport::Keep || factors.is_empty() {
        return Ok(record);
    }
    let reader = burn_pack::Reader::from_bytes(record.into_bytes().map_err(record_error)?)
        .map_err(record_error)?;
    let ids: HashMap<u64, &Vec<f64>> = factors.iter().map(|(k, v)| (k.val(), v)).collect();
    let prefix_of = |name: &str| -> Option<u64> { name.split('.').next()?.parse().ok() };
    let rescaled = |name: &str| prefix_of(name).is_some_and(|id| ids.contains_key(&id));
    let mut scalars = reader.scalars().clone();
    let mut metadata = reader.metadata().clone();
    if policy == Transport::Reset {
        scalars.retain(|k, _| !rescaled(k));
        metadata.retain(|k, _| !k.parse().is_ok_and(|id: u64| ids.contains_key(&id)));
    }
    let mut tensors = Vec::new();
    for t in reader.into_tensors().map_err(record_error)? {
        let (name, dtype, shape, param_id, bytes) = t.into_parts().map_err(record_error)?;
        let Some(a) = param_id.and_then(|id| ids.get(&id)) else {
            tensors.push(burn_pack::Tensor::new(name, dtype, shape, param_id, bytes));
            continue;
        };
        if policy == Transport::Reset {
            continue;
        }
        let field = name.split_once('.').map_or("", |(_, f)| f).to_string();
        let Some(k) = order(&field) else {
            return Err(PcrError::UnknownState { field });
        };
        let data = TensorData::from_bytes(bytes, shape.clone(), dtype);
        if data.num_elements() != a.len() {
            return Err(PcrError::StateShape {
                field,
                got: data.num_elements(),
                expected: a.len(),
            });
        }
        let moved = if dtype == DType::F32 {
            // The common case without a round trip through f64 vectors: each value times its
            // factor in f64, rounded once. Read in place where the bytes are aligned for f32,
            // copied where they are not.
            let mut values: Vec<f32> = match bytemuck::try_cast_slice(data.as_bytes()) {
                Ok(v) => v.to_vec(),
                Err(_) => bytemuck::pod_collect_to_vec(data.as_bytes()),
            };
            transport_f32(&mut values, a, k, policy);
            TensorData::new(values, shape.clone())
        } else {
            let mut values = data.try_into_vec_as::<f64>().map_err(record_error)?;
            transport_f64(&mut values, a, k, policy);
            TensorData::new(values, shape.clone()).convert_dtype(dtype)
        };
        let (bytes, _, _) = moved.into_parts();
        tensors.push(burn_pack::Tensor::new(name, dtype, shape, param_id, bytes));
    }
    let mut writer = burn_pack::Writer::new(tensors);
    for (k, v) in &scalars {
        writer = writer.with_scalar(k, *v);
    }
    for (k, v) in &metadata {
        writer = writer.with_metadata(k, v);
    }
    OptimizerRecord::from_bytes(writer.into_bytes().map_err(record_error)?).map_err(record_error)
}

/// Transports the state of `optim` (its record, rewritten and loaded back) for parameters
/// rescaled by `factors`, under `policy`.
///
/// # Errors
///
/// As [`transport_record`]; the optimizer is unchanged when one is returned.
pub fn transport(
    optim: &mut ModuleOptimizer,
    factors: &HashMap<ParamId, Vec<f64>>,
    policy: Transport,
) -> Result<(), PcrError> {
    if policy == Transport::Keep {
        return Ok(());
    }
    let record = transport_record(optim.to_record(), factors, policy)?;
    *optim = optim.clone().load_record(record);
    Ok(())
}
