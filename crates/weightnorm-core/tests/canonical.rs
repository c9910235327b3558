//! The canonical form on PyTorch-made networks (`scripts/gen_canonical_fixtures.py`): every op
//! of the architecture format, weight-norm pairs in both key schemes, batch norms with running
//! statistics. The reference forward pass must reproduce PyTorch's outputs; the canonical form,
//! its checkpoint read back, and the reconstituted network must reproduce them too.

use std::path::PathBuf;
use std::sync::Arc;

use weightnorm_core::canonical::{Agreement, Network, Real, canonicalize, reconstitute};
use weightnorm_core::formats::{
    CANONICAL_SCALE_KEY, Checkpoint, Dtype, TensorEntry, from_arch, to_tensors, vector_entry,
    write_safetensors,
};
use weightnorm_core::surgery::{FuseOptions, fuse};

const NAMES: [&str; 3] = ["zoo2d", "zoo1d", "mlp_residual"];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/canonical")
}

struct Fixture {
    tensors: Vec<TensorEntry>,
    arch: serde_json::Value,
    x: Vec<Vec<f64>>,
    expected: Vec<Vec<f64>>,
}

fn batch(t: &TensorEntry) -> Vec<Vec<f64>> {
    let per: usize = t.shape[1..].iter().product();
    t.values_f64()
        .unwrap()
        .chunks(per)
        .map(<[f64]>::to_vec)
        .collect()
}

fn fixture(name: &str) -> Fixture {
    let ck = Checkpoint::open(&dir().join(format!("{name}.safetensors")), None).unwrap();
    let (tensors, pairs) = fuse(&ck.tensors, &FuseOptions::default()).unwrap();
    assert_eq!(pairs.len(), 1, "{name}: one weight-norm pair");
    let arch = serde_json::from_str(
        &std::fs::read_to_string(dir().join(format!("{name}.arch.json"))).unwrap(),
    )
    .unwrap();
    let io = Checkpoint::open(&dir().join(format!("{name}.io.safetensors")), None).unwrap();
    Fixture {
        tensors,
        arch,
        x: batch(io.get("x").unwrap()),
        expected: batch(io.get("expected").unwrap()),
    }
}

fn check<T: Real>(name: &str, canonical_tol: f64) {
    let f = fixture(name);
    let read = from_arch::<T>(&f.arch, &f.tensors).unwrap();
    let net: Network<T> = read.network.clone();
    // The reference forward pass is PyTorch's (the fused pair is rounded to the storage type).
    let ours = Agreement::between(&f.expected, &net.forward(&f.x));
    assert!(ours.max_rel_error < 1e-6, "{name}: forward {ours:?}");

    let original = net.forward(&f.x);
    let c = canonicalize(net.clone()).unwrap();
    let a = Agreement::between(&original, &c.forward(&f.x));
    assert!(a.max_rel_error < canonical_tol, "{name}: canonical {a:?}");
    assert_eq!(a.argmax_agreement, Some(1.0));
    for r in c.reports().iter().filter(|r| r.carries.is_none()) {
        let unit = if std::mem::size_of::<T>() == 4 {
            1e-6
        } else {
            1e-12
        };
        assert!(
            (r.row_norms_after.0 - 1.0).abs() < unit && (r.row_norms_after.1 - 1.0).abs() < unit,
            "{name}: {r:?}"
        );
    }
    assert!(c.reports().iter().any(|r| r.carries.is_some()), "{name}");

    // The canonical checkpoint, written and read back like a user would.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("canonical.safetensors");
    let dtype = if std::mem::size_of::<T>() == 4 {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let entries = to_tensors(
        Arc::new(c.network().clone()),
        &read.bindings,
        &f.tensors,
        vec![vector_entry(CANONICAL_SCALE_KEY, c.scale(), dtype).unwrap()],
    )
    .unwrap();
    write_safetensors(&out, &entries, None).unwrap();
    let back = Checkpoint::open(&out, None).unwrap();
    let scale = back.get(CANONICAL_SCALE_KEY).unwrap().values_f64().unwrap();
    let reread: Network<T> = from_arch(&f.arch, &back.tensors).unwrap().network;
    let mut z = reread.forward(&f.x);
    let per = reread.output_shape()[1..].iter().product::<usize>().max(1);
    for y in &mut z {
        for (i, v) in y.iter_mut().enumerate() {
            *v *= scale[i / per];
        }
    }
    let b = Agreement::between(&f.expected, &z);
    assert!(b.max_rel_error < 1e-5, "{name}: reread {b:?}");

    let (canonical, scale) = c.into_parts();
    let (plain, _) = reconstitute(canonical, &scale).unwrap();
    let r = Agreement::between(&original, &plain.forward(&f.x));
    assert!(
        r.max_rel_error < canonical_tol,
        "{name}: reconstituted {r:?}"
    );
}

#[test]
fn pytorch_networks_in_f32() {
    for name in NAMES {
        check::<f32>(name, 1e-5);
    }
}

#[test]
fn pytorch_networks_in_f64() {
    for name in NAMES {
        check::<f64>(name, 1e-12);
    }
}
