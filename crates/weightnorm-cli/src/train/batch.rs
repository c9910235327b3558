//! Batches: examples gathered into tensors, and the data order of each epoch.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Dataset;
use crate::model::Model;

/// A batch as tensors: images flattened for the MLP, `[b, c, h, w]` for the CNN.
pub enum Batch {
    /// `[batch, features]`.
    Flat(Tensor<2>),
    /// `[batch, channels, height, width]`.
    Image(Tensor<4>),
}

/// The examples `idx` of `x` (the training or test pixels of `ds`) as a batch, as images when
/// `image` is set.
pub fn batch(ds: &Dataset, x: &[f32], idx: &[usize], image: bool, device: &Device) -> Batch {
    let f = ds.features();
    let mut data = Vec::with_capacity(idx.len() * f);
    for &i in idx {
        data.extend_from_slice(&x[i * f..(i + 1) * f]);
    }
    if image {
        let [c, h, w] = ds.shape;
        Batch::Image(Tensor::from_data(
            TensorData::new(data, [idx.len(), c, h, w]),
            device,
        ))
    } else {
        Batch::Flat(Tensor::from_data(
            TensorData::new(data, [idx.len(), f]),
            device,
        ))
    }
}

/// The training labels of the examples `idx`, `[batch]`.
pub fn labels(ds: &Dataset, idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = idx.iter().map(|&i| ds.train_y[i] as i64).collect();
    Tensor::<1, Int>::from_data(labels.as_slice(), device)
}

/// The model's logits `[batch, classes]` for a batch.
///
/// # Panics
///
/// If a CNN is given flat inputs (batches for a CNN are built as images).
pub fn forward(model: &Model, b: Batch) -> Tensor<2> {
    match (model, b) {
        (Model::Mlp(m), Batch::Flat(x)) => m.forward(x),
        (Model::Cnn(m), Batch::Image(x)) => m.forward(x),
        (Model::Mlp(m), Batch::Image(x)) => m.forward(x.flatten(1, 3)),
        (Model::Cnn(_), Batch::Flat(_)) => unreachable!("CNN batches are images"),
    }
}

/// A deterministic permutation of `0..n` for the seed (Fisher-Yates with SplitMix64).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    weightnorm::weightnorm_core::rng::SplitMix64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D))
        .shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_permutations_that_depend_on_the_seed() {
        let a = shuffled(100, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled(100, 1));
        assert_ne!(a, shuffled(100, 2));
    }
}
