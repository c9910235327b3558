//! The ONNX front-end of the canonical form, from the core ([`weightnorm_core::formats::onnx`]):
//! an ONNX model in, a [`Network`](crate::canonical::Network) and the places of its parameters
//! in the graph out; the canonical (or reconstituted) weights back into the same graph, with one
//! `Mul` by `canonical.scale` before its output. See the core's documentation for what the
//! graph may hold.

pub use weightnorm_core::formats::onnx::*;
