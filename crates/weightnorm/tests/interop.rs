//! Checkpoint interop against PyTorch-made fixtures (`scripts/gen_interop_fixtures.py`):
//! fuse equals PyTorch's own removal, other tensors are copied bit for bit, both key schemes,
//! every dtype, `.pt` nested under a key, split then fuse gives back the input.

mod common;

use std::collections::BTreeMap;

use burn::tensor::{DType, TensorData};
use common::*;
use safetensors::Dtype;
use weightnorm::NormAxis;
use weightnorm::torch::{
    Checkpoint, FuseOptions, Scheme, SplitOptions, TensorEntry, convert, detect_pairs, fuse, split,
    write_safetensors,
};

fn dir() -> std::path::PathBuf {
    fixtures_dir("interop")
}

fn open(name: &str) -> Checkpoint {
    Checkpoint::open(&dir().join(name), None).unwrap()
}

fn to_burn_dtype(d: Dtype) -> DType {
    match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => panic!("{other:?}"),
    }
}

fn f64_of(t: &TensorEntry) -> Vec<f64> {
    let data = TensorData::from_bytes_vec(
        t.bytes().unwrap().into_owned(),
        vec![t.numel()],
        to_burn_dtype(t.dtype),
    );
    f64s(&data)
}

fn by_name(ts: &[TensorEntry]) -> BTreeMap<String, TensorEntry> {
    ts.iter().map(|t| (t.name.clone(), t.clone())).collect()
}

/// Checks our fused tensors against PyTorch's removal (and the exact values for half types).
fn check_fused(ours: &[TensorEntry], dtype: &str, scheme: &str, input: &Checkpoint) {
    let torch = open(&format!("{dtype}_{scheme}.fused.safetensors"));
    let ours = by_name(ours);
    let theirs = by_name(&torch.tensors);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{dtype} {scheme}: key sets differ"
    );
    let exact = matches!(dtype, "f16" | "bf16")
        .then(|| by_name(&open(&format!("{dtype}_exact.safetensors")).tensors));
    for (name, t) in &ours {
        assert_eq!(t.dtype, theirs[name].dtype, "{name}: dtype");
        assert_eq!(t.shape, theirs[name].shape, "{name}: shape");
        if !name.ends_with(".weight") {
            // Copied bit for bit from the input, and equal to PyTorch's.
            assert_eq!(
                t.bytes().unwrap(),
                input.get(name).unwrap().bytes().unwrap(),
                "{name}"
            );
            assert_eq!(t.bytes().unwrap(), theirs[name].bytes().unwrap(), "{name}");
            continue;
        }
        let a = f64_of(t);
        match dtype {
            "f32" => {
                let err = elementwise_rel_error(&a, &f64_of(&theirs[name]));
                assert!(err <= 1e-6, "{dtype} {scheme} {name}: {err:e} from PyTorch");
            }
            "f64" => {
                let err = elementwise_rel_error(&a, &f64_of(&theirs[name]));
                assert!(
                    err <= 1e-12,
                    "{dtype} {scheme} {name}: {err:e} from PyTorch"
                );
            }
            _ => {
                let exact = f64_of(&exact.as_ref().unwrap()[name]);
                let off = ulps_off(&a, &exact, to_burn_dtype(t.dtype));
                assert!(off <= 1.0, "{dtype} {scheme} {name}: {off} ulps from exact");
            }
        }
    }
}

#[test]
fn fuse_equals_pytorch_removal_for_every_dtype_and_scheme() {
    for dtype in ["f32", "f64", "f16", "bf16"] {
        for scheme in ["legacy", "parametrizations"] {
            let input = open(&format!("{dtype}_{scheme}.safetensors"));
            let (fused, pairs) = fuse(&input.tensors, &FuseOptions::default()).unwrap();
            assert_eq!(pairs.len(), 17, "{dtype} {scheme}");
            check_fused(&fused, dtype, scheme, &input);
        }
    }
}

#[test]
fn inferred_dims_are_the_ones_pytorch_used() {
    for scheme in ["legacy", "parametrizations"] {
        let input = open(&format!("f32_{scheme}.safetensors"));
        let pairs = detect_pairs(&input.shapes(), None).unwrap();
        for p in pairs {
            let tag = p
                .name
                .split("_d")
                .nth(1)
                .unwrap()
                .trim_end_matches(".weight");
            let expected = match tag {
                "none" | "m1" => NormAxis::Whole,
                d => NormAxis::Keep(d.parse().unwrap()),
            };
            assert_eq!(p.axis, expected, "{}", p.name);
            let want = if scheme == "legacy" {
                Scheme::Legacy
            } else {
                Scheme::Parametrizations
            };
            assert_eq!(p.scheme, want);
        }
    }
}

#[test]
fn convert_renames_between_schemes_without_touching_data() {
    let legacy = open("f32_legacy.safetensors");
    let param = open("f32_parametrizations.safetensors");
    let (converted, pairs) = convert(&legacy.tensors, Scheme::Parametrizations).unwrap();
    assert_eq!(pairs.len(), 17);
    let names: Vec<_> = converted.iter().map(|t| t.name.clone()).collect();
    let expected: Vec<_> = param.tensors.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, expected);
    // Back again: the original file's tensors, bit for bit.
    let (back, _) = convert(&converted, Scheme::Legacy).unwrap();
    for (a, b) in back.iter().zip(&legacy.tensors) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.bytes().unwrap(), b.bytes().unwrap());
    }
}

#[test]
fn pt_checkpoints_nested_under_a_key() {
    let reference = open("f32_legacy.safetensors");
    let nested = Checkpoint::open(&dir().join("nested.pt"), Some("state_dict")).unwrap();
    let single = Checkpoint::open(&dir().join("single.pt"), None).unwrap();
    assert_eq!(single.key.as_deref(), Some("model"));
    for ckpt in [nested, single] {
        assert_eq!(ckpt.tensors.len(), reference.tensors.len());
        for (a, b) in ckpt.tensors.iter().zip(&reference.tensors) {
            assert_eq!((&a.name, a.dtype, &a.shape), (&b.name, b.dtype, &b.shape));
            assert_eq!(a.bytes().unwrap(), b.bytes().unwrap(), "{}", a.name);
        }
        let (fused, _) = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap();
        check_fused(&fused, "f32", "legacy", &reference);
    }
    let err = Checkpoint::open(&dir().join("nested.pt"), Some("nope"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("has no key `nope`"), "{err}");
}

#[test]
fn split_then_fuse_gives_back_the_input() {
    for dtype in ["f32", "f64"] {
        let plain = open(&format!("{dtype}_legacy.fused.safetensors"));
        for (scheme, dim) in [
            (Scheme::Legacy, Some(0)),
            (Scheme::Parametrizations, Some(1)),
            (Scheme::Legacy, None),
        ] {
            let options = SplitOptions {
                dim,
                scheme,
                ..Default::default()
            };
            let (split_ts, pairs) = split(&plain.tensors, &options).unwrap();
            assert_eq!(pairs.len(), 17);
            // v is w bit for bit.
            for p in &pairs {
                let v = split_ts.iter().find(|t| t.name == p.v_key).unwrap();
                assert_eq!(
                    v.bytes().unwrap(),
                    plain.get(&p.name).unwrap().bytes().unwrap()
                );
            }
            let (back, _) = fuse(&split_ts, &FuseOptions::default()).unwrap();
            let tol = if dtype == "f32" { 1e-6 } else { 1e-12 };
            for (a, b) in back.iter().zip(&plain.tensors) {
                assert_eq!(a.name, b.name);
                let err = elementwise_rel_error(&f64_of(a), &f64_of(b));
                assert!(err <= tol, "{dtype} {scheme:?} {dim:?} {}: {err:e}", a.name);
            }
        }
    }
}

#[test]
fn written_files_read_back_with_metadata() {
    let input = open("bf16_parametrizations.safetensors");
    let (fused, _) = fuse(&input.tensors, &FuseOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fused.safetensors");
    write_safetensors(&out, &fused, input.metadata.as_ref()).unwrap();
    let back = Checkpoint::open(&out, None).unwrap();
    assert_eq!(back.metadata, input.metadata);
    assert!(back.metadata.as_ref().unwrap().contains_key("made_by"));
    for (a, b) in back.tensors.iter().zip(&fused) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.bytes().unwrap(), b.bytes().unwrap());
    }
    // Nothing but the output is left in the directory (no temporary file).
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn bad_data_fails_without_leaving_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let nan = f32::NAN.to_le_bytes().to_vec();
    let ts = vec![
        TensorEntry::from_bytes("l.weight_g", Dtype::F32, vec![1, 1], nan).unwrap(),
        TensorEntry::from_bytes(
            "l.weight_v",
            Dtype::F32,
            vec![1, 1],
            1f32.to_le_bytes().to_vec(),
        )
        .unwrap(),
    ];
    let (fused, _) = fuse(&ts, &FuseOptions::default()).unwrap();
    let out = tmp.path().join("o.safetensors");
    let err = write_safetensors(&out, &fused, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`l.weight (g)` holds NaN or infinite values"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
