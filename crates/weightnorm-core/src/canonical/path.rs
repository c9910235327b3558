//! Positions of layers in a network, and how a front-end names them ([`Namer`]). The calculus
//! knows a layer by its position; a front-end by its own name (an ONNX node, a checkpoint key
//! prefix, a Burn parameter path, a torch module path).

/// A layer's position in a network: indices into the top-level list and nested residual bodies
/// (`[3]` is layer 3, `[4, 0]` the first layer of residual block 4's body). Its display name is
/// `"3"` or `"4.body.0"` ([`path_name`]). In a [`Layer::Shortcut`](super::Layer::Shortcut) the
/// skip's layers follow the body's (`[4, n + k]` is layer `k` of the skip when the body has `n`
/// layers, named `"4.skip.k"` by [`Network::layer_name`](super::Network::layer_name)). The empty path is the network's
/// output.
pub type LayerPath = [usize];

/// The display name of a layer's position without its network: `"3"`, `"4.body.0"`, `"output"`
/// for the empty path. A position inside a shortcut's skip needs the network to be named as
/// `"4.skip.k"`: see [`Network::layer_name`](super::Network::layer_name) and [`Positions`](super::Positions).
pub fn path_name(path: &LayerPath) -> String {
    if path.is_empty() {
        return "output".to_string();
    }
    path.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(".body.")
}

/// The position of child `i` of the block at `path` (or of layer `i` at the top, for an empty
/// `path`).
pub fn child(path: &LayerPath, i: usize) -> Vec<usize> {
    let mut p = path.to_vec();
    p.push(i);
    p
}

/// How a front-end names a layer's position in what it shows a user.
pub trait Namer {
    /// The name of the layer at `path` (the empty path is the network's output).
    fn name(&self, path: &LayerPath) -> String;
}

impl<F: Fn(&LayerPath) -> String> Namer for F {
    fn name(&self, path: &LayerPath) -> String {
        self(path)
    }
}
