//! Writes a large weight-normalized checkpoint (legacy scheme, f32) for the `weightnorm fuse`
//! benchmark: `cargo run --release --example big_checkpoint -p weightnorm -- OUT [MEGABYTES]`
//! (default 1024). Layers of 4096 x 1024 weights, each as `weight_g` [4096, 1] and `weight_v`,
//! plus a bias; tensors are produced one at a time, so memory stays small.

use safetensors::Dtype;
use weightnorm::torch::{TensorEntry, write_safetensors};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: big_checkpoint OUT [MEGABYTES]");
    let mb: usize = args.next().map_or(1024, |s| s.parse().expect("megabytes"));
    let (rows, cols) = (4096usize, 1024usize);
    let layers = (mb << 20).div_ceil(rows * cols * 4);
    let mut tensors = Vec::new();
    for l in 0..layers {
        let seed = l as u32;
        // v: a deterministic pattern, never a zero row.
        let v = move || -> Vec<u8> {
            (0..rows * cols)
                .map(|i| {
                    let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                    (x as f32 / (1u32 << 24) as f32) - 0.5 + 1e-3
                })
                .flat_map(f32::to_le_bytes)
                .collect()
        };
        let g = move || -> Vec<u8> {
            (0..rows)
                .flat_map(|r| (1.0 + r as f32 / rows as f32).to_le_bytes())
                .collect()
        };
        let b = move || -> Vec<u8> { (0..rows).flat_map(|_| 0.1f32.to_le_bytes()).collect() };
        let name = format!("layers.{l}");
        tensors.push(lazy(&format!("{name}.weight_v"), vec![rows, cols], v));
        tensors.push(lazy(&format!("{name}.weight_g"), vec![rows, 1], g));
        tensors.push(lazy(&format!("{name}.bias"), vec![rows], b));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    write_safetensors(std::path::Path::new(&out), &tensors, None).expect("write");
    println!("wrote {out}: {layers} layers of {rows}x{cols} f32");
}

fn lazy(
    name: &str,
    shape: Vec<usize>,
    f: impl Fn() -> Vec<u8> + Send + Sync + 'static,
) -> TensorEntry {
    weightnorm::torch::lazy_entry(name, Dtype::F32, shape, f)
}
