//! Hostile files, faulty disks and real checkpoints: the hostile corpus
//! (`scripts/gen_hostile.py`) is refused with one-line typed errors; archives PyTorch reads are
//! read (a 21-character root folder, the legacy non-zip format, state dicts two levels down);
//! a PyTorch-made HiFi-GAN generator (`scripts/gen_hifigan_fixture.py`) fuses to what
//! PyTorch's `remove_weight_norm` gives; writing refuses duplicate names; options are
//! arguments; a square weight normalized on its input axis is saved along that axis.

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, TensorData};
use common::*;
use safetensors::Dtype;
use weightnorm::torch::{
    Checkpoint, FuseOptions, OpenOptions, Scheme, TensorEntry, TorchError, WriteOptions, fuse,
    load_into_module, save_module, write_safetensors, write_safetensors_with,
};
use weightnorm::{AxisChoice, WeightNormConfig, apply_weight_norm};

fn f64_of(t: &TensorEntry) -> Vec<f64> {
    let dtype = match t.dtype {
        Dtype::F64 => DType::F64,
        _ => DType::F32,
    };
    f64s(&TensorData::from_bytes_vec(
        t.bytes().unwrap().into_owned(),
        vec![t.numel()],
        dtype,
    ))
}

fn by_name(ts: &[TensorEntry]) -> BTreeMap<String, TensorEntry> {
    ts.iter().map(|t| (t.name.clone(), t.clone())).collect()
}

/// `ours` equals `reference`: the same names, dtypes and shapes, values within `tol`.
fn assert_same(ours: &[TensorEntry], reference: &[TensorEntry], tol: f64) {
    let (a, b) = (by_name(ours), by_name(reference));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "key sets differ"
    );
    for (name, t) in &a {
        assert_eq!(
            (t.dtype, &t.shape),
            (b[name].dtype, &b[name].shape),
            "{name}"
        );
        let err = elementwise_rel_error(&f64_of(t), &f64_of(&b[name]));
        assert!(err <= tol, "{name}: {err:e}");
    }
}

#[test]
fn the_hostile_corpus_is_refused_with_one_line_typed_errors() {
    let dir = fixtures_dir("hostile");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut n = 0;
    for line in table.lines() {
        let [file, key, stage, expect] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("bad line {line:?}");
        };
        let key = (key != "-").then_some(key);
        let opened = Checkpoint::open(&dir.join(file), key);
        let err = match stage {
            "open" => opened.err().unwrap_or_else(|| panic!("{file} opened")),
            "fuse" => fuse(&opened.unwrap().tensors, &FuseOptions::default())
                .err()
                .unwrap_or_else(|| panic!("{file} fused")),
            "read" => {
                let ckpt = opened.unwrap();
                ckpt.tensors
                    .iter()
                    .find_map(|t| t.bytes().err())
                    .unwrap_or_else(|| panic!("{file} read"))
            }
            other => panic!("stage {other}"),
        };
        let msg = err.to_string();
        assert!(msg.contains(expect), "{file}: {msg}");
        assert!(!msg.contains('\n'), "{file}: more than one line: {msg}");
        assert!(!msg.contains("--"), "{file}: speaks of CLI flags: {msg}");
        n += 1;
    }
    assert!(n >= 9);
}

#[test]
fn both_key_schemes_for_one_layer_are_refused() {
    let ckpt = Checkpoint::open(
        &fixtures_dir("hostile").join("both_schemes.safetensors"),
        None,
    )
    .unwrap();
    let err = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap_err();
    assert!(
        matches!(&err, TorchError::BothSchemes { name, .. } if name == "x.weight"),
        "{err}"
    );
}

#[test]
fn flattened_name_collisions_are_refused() {
    let dir = fixtures_dir("hostile");
    let err = Checkpoint::open(&dir.join("flatten_collision.pt"), None)
        .err()
        .unwrap();
    assert!(
        matches!(&err, TorchError::DuplicateName { name, .. } if name == "a.b"),
        "{err}"
    );
    let err = Checkpoint::open(&dir.join("flatten_collision_legacy.pt"), Some("model"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, TorchError::DuplicateName { name, .. } if name == "l.weight"),
        "{err}"
    );
}

#[test]
fn a_stride_zero_view_declaring_gigabytes_is_refused_not_allocated() {
    for file in ["stride0_gigabytes.pt", "stride0_gigabytes_legacy.pt"] {
        let path = fixtures_dir("hostile").join(file);
        assert!(std::fs::metadata(&path).unwrap().len() < 4096);
        let err = Checkpoint::open(&path, None).err().unwrap();
        assert!(
            matches!(&err, TorchError::TooLarge { name, shape, .. } if name == "w" && shape == &[1 << 30]),
            "{file}: {err}"
        );
        // A caller may raise the limit on purpose; the tensor is then a lazy view.
        let ckpt = Checkpoint::open_with(
            &path,
            &OpenOptions::default().with_max_tensor_bytes(4 << 30),
        )
        .unwrap();
        assert_eq!(ckpt.tensors[0].shape, vec![1 << 30]);
    }
    // The limit applies to every file.
    let err = Checkpoint::open_with(
        &fixtures_dir("interop").join("nested.pt"),
        &OpenOptions::default()
            .with_key("state_dict")
            .with_max_tensor_bytes(16),
    )
    .err()
    .unwrap();
    assert!(matches!(err, TorchError::TooLarge { .. }), "{err}");
}

#[test]
fn a_damaged_storage_fails_its_crc_check_when_read() {
    let ckpt = Checkpoint::open(&fixtures_dir("hostile").join("damaged_storage.pt"), None).unwrap();
    let v = ckpt.get("l.weight_v").unwrap();
    let err = v.bytes().unwrap_err();
    assert!(err.to_string().contains("CRC-32"), "{err}");
    // The undamaged storage reads.
    assert!(ckpt.get("l.weight_g").unwrap().bytes().is_ok());
}

#[test]
fn a_zip_archive_with_a_21_character_root_folder_opens() {
    let reference = Checkpoint::open(
        &fixtures_dir("interop").join("f32_legacy.safetensors"),
        None,
    )
    .unwrap();
    let ckpt = Checkpoint::open(
        &fixtures_dir("interop").join("root_of_21_characters.pt"),
        None,
    )
    .unwrap();
    assert_same(&ckpt.tensors, &reference.tensors, 0.0);
}

#[test]
fn the_legacy_format_is_read_with_a_dotted_key() {
    let reference = Checkpoint::open(
        &fixtures_dir("interop").join("f32_legacy.safetensors"),
        None,
    )
    .unwrap();
    let ckpt = Checkpoint::open(
        &fixtures_dir("interop").join("legacy.pt"),
        Some("model.net"),
    )
    .unwrap();
    assert_eq!(ckpt.key.as_deref(), Some("model.net"));
    assert_same(&ckpt.tensors, &reference.tensors, 0.0);
    for (a, b) in ckpt.tensors.iter().zip(&reference.tensors) {
        assert_eq!(a.bytes().unwrap(), b.bytes().unwrap(), "{}", a.name);
    }
}

#[test]
fn dotted_keys_reach_a_state_dict_two_levels_down() {
    let path = fixtures_dir("hifigan").join("generator_nested.pt");
    let ckpt = Checkpoint::open(&path, Some("model.generator")).unwrap();
    assert_eq!(ckpt.key.as_deref(), Some("model.generator"));
    assert!(ckpt.get("conv_pre.weight_g").is_some());
    let err = Checkpoint::open(&path, Some("model.nope")).err().unwrap();
    assert!(matches!(err, TorchError::Key { .. }), "{err}");
    let err = Checkpoint::open(&path, Some("steps")).err().unwrap();
    assert!(
        matches!(&err, TorchError::NotADict { found, .. } if found == "int"),
        "{err}"
    );
    let err = Checkpoint::open(
        &fixtures_dir("interop").join("f32_legacy.safetensors"),
        Some("model"),
    )
    .err()
    .unwrap();
    assert!(matches!(err, TorchError::KeyInSafetensors { .. }), "{err}");
    assert!(!err.to_string().contains("--"), "{err}");
}

#[test]
fn a_pytorch_hifigan_generator_in_the_legacy_format_fuses_as_remove_weight_norm() {
    let dir = fixtures_dir("hifigan");
    let reference = Checkpoint::open(&dir.join("generator.fused.safetensors"), None).unwrap();
    for (file, key) in [
        ("generator_legacy.pt", Some("generator")),
        ("generator_nested.pt", Some("model.generator")),
    ] {
        let ckpt = Checkpoint::open(&dir.join(file), key).unwrap();
        let (fused, pairs) = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap();
        assert_eq!(pairs.len(), 16, "{file}");
        assert_same(&fused, &reference.tensors, 1e-6);
        // Written and read back, the file holds the same.
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("fused.safetensors");
        write_safetensors(&out, &fused, None).unwrap();
        let back = Checkpoint::open(&out, None).unwrap();
        assert_same(&back.tensors, &reference.tensors, 1e-6);
    }
}

#[test]
fn writing_two_tensors_of_one_name_is_refused() {
    let t = TensorEntry::from_bytes("w", Dtype::F32, vec![1], 1f32.to_le_bytes().to_vec()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.safetensors");
    let err = write_safetensors(&out, &[t.clone(), t.renamed("w")], None).unwrap_err();
    assert!(
        matches!(&err, TorchError::DuplicateTensor { name } if name == "w"),
        "{err}"
    );
    let err = write_safetensors(&out, &[t.renamed("__metadata__")], None).unwrap_err();
    assert!(matches!(err, TorchError::ReservedName { .. }), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // Without fsync (a scratch output), through the options argument.
    write_safetensors_with(&out, &[t], None, &WriteOptions { fsync: false }).unwrap();
    assert_eq!(Checkpoint::open(&out, None).unwrap().tensors.len(), 1);
}

#[derive(Module, Debug)]
struct Square {
    fc: Linear,
}

#[test]
fn a_square_weight_normalized_on_its_input_axis_saves_and_loads_back() {
    let device = device();
    let plain = Square {
        fc: LinearConfig::new(4, 4).init(&device),
    };
    let want = plain.fc.weight.val().to_data();
    // Burn's Linear weight is [in, out]: axis 0 is the input axis.
    let wn = apply_weight_norm(
        plain,
        &WeightNormConfig::new().with_axis(AxisChoice::Keep(0)),
    )
    .unwrap();
    let saved = save_module(&wn, Scheme::Legacy).unwrap();
    // PyTorch's layout is [out, in]: the input axis is dim 1, so g is [1, 4].
    let g = saved.iter().find(|t| t.name == "fc.weight_g").unwrap();
    assert_eq!(g.shape, vec![1, 4]);
    // Loaded into a plain module (fused on load), the weights are the original ones.
    let fresh = Square {
        fc: LinearConfig::new(4, 4).init(&device),
    };
    let back = load_into_module(fresh, &saved).unwrap();
    let got = back.fc.weight.val().to_data();
    let err = elementwise_rel_error(&f64s(&got), &f64s(&want));
    assert!(err <= 1e-6, "{err:e}");
    // Loaded into a module normalizing the other (output) axis, it is refused.
    let other = apply_weight_norm(
        Square {
            fc: LinearConfig::new(4, 4).init(&device),
        },
        &WeightNormConfig::new(),
    )
    .unwrap();
    let err = load_into_module(other, &saved).unwrap_err();
    assert!(matches!(err, TorchError::AxisDiffers { .. }), "{err}");
    // Into one normalizing the same axis, it loads.
    let same = apply_weight_norm(
        Square {
            fc: LinearConfig::new(4, 4).init(&device),
        },
        &WeightNormConfig::new().with_axis(AxisChoice::Keep(0)),
    )
    .unwrap();
    let same = load_into_module(same, &saved).unwrap();
    let err = elementwise_rel_error(&f64s(&same.fc.weight.val().to_data()), &f64s(&want));
    assert!(err <= 1e-6, "{err:e}");
}
