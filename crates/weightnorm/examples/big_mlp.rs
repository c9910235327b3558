//! Writes a large plain MLP (f32, PyTorch `nn.Sequential` keys) and its architecture file, for
//! the `weightnorm canonicalize` benchmark:
//! `cargo run --release --example big_mlp -p weightnorm -- DIR [WIDTH] [HIDDEN_LAYERS]`
//! (default 4096 and 6: 6 x 4096 x 4096 + 4096 x 10 weights, 100.7M parameters). Writes
//! `DIR/model.safetensors` (tensors produced one at a time) and `DIR/arch.json`.

use safetensors::Dtype;
use weightnorm::torch::{TensorEntry, write_safetensors};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: big_mlp DIR [WIDTH] [LAYERS]"));
    let width: usize = args.next().map_or(4096, |s| s.parse().expect("width"));
    let hidden: usize = args.next().map_or(6, |s| s.parse().expect("layers"));
    std::fs::create_dir_all(&dir).expect("create DIR");
    let mut tensors = Vec::new();
    let mut layers = Vec::new();
    let mut params = 0usize;
    for l in 0..=hidden {
        let (out, inp) = (if l == hidden { 10 } else { width }, width);
        let key = (2 * l).to_string();
        let seed = l as u32 + 1;
        // A deterministic pattern of weights about +-1/sqrt(in): rows of different norms.
        let w = move || -> Vec<u8> {
            let s = 1.0 / (inp as f32).sqrt();
            (0..out * inp)
                .map(|i| {
                    let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                    ((x as f32 / (1u32 << 24) as f32) - 0.5)
                        * 3.0
                        * s
                        * (1.0 + (i / inp) as f32 / out as f32)
                })
                .flat_map(f32::to_le_bytes)
                .collect()
        };
        let b = move || -> Vec<u8> {
            (0..out)
                .flat_map(|i| (0.01 * (i % 7) as f32).to_le_bytes())
                .collect()
        };
        tensors.push(lazy(&format!("{key}.weight"), vec![out, inp], w));
        tensors.push(lazy(&format!("{key}.bias"), vec![out], b));
        params += out * inp + out;
        layers.push(serde_json::json!({"op": "linear", "param": key}));
        if l < hidden {
            layers.push(serde_json::json!({"op": "relu"}));
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    write_safetensors(&dir.join("model.safetensors"), &tensors, None).expect("write");
    let arch = serde_json::json!({"input": [width], "layers": layers});
    std::fs::write(dir.join("arch.json"), arch.to_string()).expect("write arch.json");
    println!(
        "wrote {}: {params} parameters ({} MB)",
        dir.display(),
        params * 4 / 1_000_000
    );
}

fn lazy(
    name: &str,
    shape: Vec<usize>,
    f: impl Fn() -> Vec<u8> + Send + Sync + 'static,
) -> TensorEntry {
    weightnorm::torch::lazy_entry(name, Dtype::F32, shape, f)
}
