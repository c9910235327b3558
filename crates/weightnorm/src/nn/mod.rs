//! Building blocks, one layer a file: mean-only batch normalization (`mean_only.rs`), WaveNet's
//! residual block with weight norm on every convolution (`wavenet.rs`), and the
//! weight-normalized linear layer in the paper's form (`wn_linear.rs`).

mod mean_only;
mod wavenet;
mod wn_linear;

pub use mean_only::{MeanOnlyBatchNorm, MeanOnlyBatchNormConfig};
pub use wavenet::{WaveNetBlock, WaveNetBlockConfig};
pub use wn_linear::{WnLinear, WnLinearConfig};
