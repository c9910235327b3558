//! Whole PyTorch files and sharded checkpoints: the `.pt` writer round-trips every value a
//! checkpoint holds through the reader; a training checkpoint's state dict is rewritten in
//! place with every other entry carried over (the same nesting, the same order); a file that
//! is not a state dict is listed, not flattened; what a safetensors output cannot hold is
//! refused by name; sharded checkpoints read as one (a pair across two shards) and are written
//! back sharded the same way; inputs that are not regular files are refused without blocking.

use std::collections::BTreeMap;
use std::path::Path;

use weightnorm_core::formats::{
    Checkpoint, Dtype, OpenOptions, OutputFormat, PtDict, PtTensor, PtValue, SaveOptions,
    TensorEntry, TorchError, WriteOptions, read_pt, write_pt, write_safetensors,
};
use weightnorm_core::surgery::{FuseOptions, Scheme, convert, fuse};

fn no_fsync() -> WriteOptions {
    WriteOptions { fsync: false }
}

fn f32_tensor(name: &str, shape: Vec<usize>, values: &[f32]) -> TensorEntry {
    TensorEntry::from_bytes(
        name,
        Dtype::F32,
        shape,
        bytemuck::cast_slice(values).to_vec(),
    )
    .unwrap()
}

fn t(entry: TensorEntry) -> PtValue {
    PtValue::Tensor(PtTensor {
        entry,
        requires_grad: false,
        parameter: false,
    })
}

fn s(x: &str) -> PtValue {
    PtValue::Str(x.into())
}

fn dict(ordered: bool, entries: Vec<(PtValue, PtValue)>) -> PtValue {
    PtValue::Dict(PtDict {
        entries,
        ordered,
        state: None,
    })
}

/// Structural equality, tensors by dtype, shape, flags and bytes.
fn same(a: &PtValue, b: &PtValue, at: &str) {
    use PtValue as V;
    match (a, b) {
        (V::Tensor(x), V::Tensor(y)) => {
            assert_eq!(
                (x.entry.dtype, &x.entry.shape, x.requires_grad, x.parameter),
                (y.entry.dtype, &y.entry.shape, y.requires_grad, y.parameter),
                "{at}"
            );
            assert_eq!(x.entry.bytes().unwrap(), y.entry.bytes().unwrap(), "{at}");
        }
        (V::Dict(x), V::Dict(y)) => {
            assert_eq!(x.ordered, y.ordered, "{at}: dict kind");
            assert_eq!(x.entries.len(), y.entries.len(), "{at}: entries");
            for ((ka, va), (kb, vb)) in x.entries.iter().zip(&y.entries) {
                same(ka, kb, &format!("{at}.<key>"));
                same(va, vb, &format!("{at}.{ka:?}"));
            }
            match (&x.state, &y.state) {
                (Some(p), Some(q)) => same(p, q, &format!("{at}.<state>")),
                (None, None) => {}
                _ => panic!("{at}: state differs"),
            }
        }
        (V::List(x), V::List(y))
        | (V::Tuple(x), V::Tuple(y))
        | (V::Set(x), V::Set(y))
        | (V::FrozenSet(x), V::FrozenSet(y))
        | (V::Size(x), V::Size(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same(p, q, &format!("{at}[{i}]"));
            }
        }
        (V::Float(x), V::Float(y)) => assert_eq!(x.to_bits(), y.to_bits(), "{at}"),
        (V::Int(x), V::Int(y)) => assert_eq!(x, y, "{at}"),
        (V::BigInt(x), V::BigInt(y)) => assert_eq!(x, y, "{at}"),
        (V::Str(x), V::Str(y)) | (V::Global(x), V::Global(y)) | (V::Device(x), V::Device(y)) => {
            assert_eq!(x, y, "{at}")
        }
        (V::Bytes(x), V::Bytes(y)) => assert_eq!(x, y, "{at}"),
        (V::Bool(x), V::Bool(y)) => assert_eq!(x, y, "{at}"),
        (V::None, V::None) => {}
        _ => panic!("{at}: {} against {}", a.type_name(), b.type_name()),
    }
}

/// A tensor of each dtype PyTorch files hold.
fn every_dtype() -> Vec<(PtValue, PtValue)> {
    let dtypes = [
        (Dtype::F32, 4),
        (Dtype::F64, 8),
        (Dtype::F16, 2),
        (Dtype::BF16, 2),
        (Dtype::I64, 8),
        (Dtype::I32, 4),
        (Dtype::I16, 2),
        (Dtype::I8, 1),
        (Dtype::U8, 1),
        (Dtype::BOOL, 1),
    ];
    dtypes
        .iter()
        .enumerate()
        .map(|(i, &(d, size))| {
            let bytes: Vec<u8> = (0..6 * size)
                .map(|j| {
                    if d == Dtype::BOOL {
                        (j % 2) as u8
                    } else {
                        (i * 31 + j * 7) as u8
                    }
                })
                .collect();
            (
                s(&format!("{d:?}")),
                t(TensorEntry::from_bytes(format!("{d:?}"), d, vec![2, 3], bytes).unwrap()),
            )
        })
        .collect()
}

#[test]
fn every_value_a_checkpoint_holds_round_trips_through_the_pt_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.pt");
    let param = PtValue::Tensor(PtTensor {
        entry: f32_tensor("p", vec![2], &[1.5, -2.0]),
        requires_grad: true,
        parameter: true,
    });
    let graded = PtValue::Tensor(PtTensor {
        entry: f32_tensor("q", vec![], &[3.0]),
        requires_grad: true,
        parameter: false,
    });
    let mut metadata = PtDict {
        ordered: true,
        ..PtDict::default()
    };
    metadata
        .entries
        .push((s(""), dict(false, vec![(s("version"), PtValue::Int(1))])));
    let sd = PtValue::Dict(PtDict {
        entries: vec![
            (
                s("w"),
                t(f32_tensor("w", vec![2, 2], &[1.0, 2.0, 3.0, 4.0])),
            ),
            (s("empty"), t(f32_tensor("empty", vec![0, 3], &[]))),
        ],
        ordered: true,
        state: Some(Box::new(dict(
            false,
            vec![(s("_metadata"), PtValue::Dict(metadata))],
        ))),
    });
    let numbers = PtValue::List(vec![
        PtValue::Int(0),
        PtValue::Int(255),
        PtValue::Int(256),
        PtValue::Int(65535),
        PtValue::Int(65536),
        PtValue::Int(-1),
        PtValue::Int(-129),
        PtValue::Int(i64::from(i32::MAX) + 1),
        PtValue::Int(i64::MIN),
        PtValue::Int(i64::MAX),
        PtValue::BigInt(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0x40]),
        PtValue::Float(0.1),
        PtValue::Float(-0.0),
        PtValue::Float(f64::INFINITY),
        PtValue::Float(1e-310),
    ]);
    let many: Vec<PtValue> = (0..2500).map(PtValue::Int).collect();
    let root = dict(
        false,
        vec![
            (s("model"), sd),
            (s("dtypes"), dict(true, every_dtype())),
            (s("numbers"), numbers),
            (s("many"), PtValue::List(many.clone())),
            (
                s("big dict"),
                dict(
                    false,
                    (0..1500)
                        .map(|i| (PtValue::Int(i), PtValue::None))
                        .collect(),
                ),
            ),
            (s("tuple0"), PtValue::Tuple(vec![])),
            (
                s("tuple2"),
                PtValue::Tuple(vec![PtValue::Float(0.8), PtValue::Float(0.99)]),
            ),
            (
                s("tuple5"),
                PtValue::Tuple((0..5).map(PtValue::Int).collect()),
            ),
            (s("text"), s("ünï\u{1F600}code")),
            (s("bytes"), PtValue::Bytes((0..=255).collect())),
            (
                s("set"),
                PtValue::Set(vec![PtValue::Int(1), PtValue::Int(2)]),
            ),
            (
                s("size"),
                PtValue::Size(vec![PtValue::Int(3), PtValue::Int(4)]),
            ),
            (s("device"), PtValue::Device("cuda:1".into())),
            (s("dtype"), PtValue::Global("torch.bfloat16".into())),
            (
                s("flags"),
                PtValue::List(vec![
                    PtValue::Bool(true),
                    PtValue::Bool(false),
                    PtValue::None,
                ]),
            ),
            (s("param"), param),
            (s("graded"), graded),
            (PtValue::Int(7), s("an int key")),
        ],
    );
    write_pt(&path, &root, &no_fsync()).unwrap();
    let back = read_pt(&path).unwrap();
    same(&root, &back, "root");
    // Written again from what was read (tensors now views of the file's storages): the same.
    let again = dir.path().join("again.pt");
    write_pt(&again, &back, &no_fsync()).unwrap();
    same(&root, &read_pt(&again).unwrap(), "again");
}

#[test]
fn zip64_records_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.pt");
    let root = dict(
        true,
        vec![(s("w"), t(f32_tensor("w", vec![3], &[1.0, 2.0, 3.0])))],
    );
    // SAFETY (of the environment): this test alone sets the variable, and the writer reads
    // it once per file; other tests' files are small enough that the records are the same
    // either way.
    unsafe { std::env::set_var("WEIGHTNORM_ZIP64", "always") };
    let r = write_pt(&path, &root, &no_fsync());
    unsafe { std::env::remove_var("WEIGHTNORM_ZIP64") };
    r.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.windows(4).any(|w| w == b"PK\x06\x06"),
        "no ZIP64 end record"
    );
    same(&root, &read_pt(&path).unwrap(), "zip64");
}

/// A HiFi-GAN-style training checkpoint: generator (legacy pairs, nested one level for one
/// layer), discriminator (parametrizations pairs), an optimizer state, counters.
fn training_checkpoint(path: &Path) -> PtValue {
    let g = f32_tensor("g", vec![2, 1], &[2.0, 3.0]);
    let v = f32_tensor("v", vec![2, 2], &[3.0, 4.0, 0.0, 5.0]);
    let mut generator = PtDict {
        entries: vec![
            (s("pre.bias"), t(f32_tensor("b", vec![2], &[0.5, -0.5]))),
            (s("pre.weight_g"), t(g.clone())),
            (s("pre.weight_v"), t(v.clone())),
            (
                s("up"),
                dict(
                    false,
                    vec![(
                        s("0"),
                        dict(
                            false,
                            vec![
                                (s("weight_g"), t(g.clone())),
                                (s("weight_v"), t(v.clone())),
                                (s("bias"), t(f32_tensor("b", vec![2], &[1.0, 2.0]))),
                            ],
                        ),
                    )],
                ),
            ),
        ],
        ordered: true,
        state: Some(Box::new(dict(
            false,
            vec![(
                s("_metadata"),
                dict(
                    true,
                    vec![(s(""), dict(false, vec![(s("version"), PtValue::Int(1))]))],
                ),
            )],
        ))),
    };
    generator.entries.push((
        s("post.weight"),
        t(f32_tensor("w", vec![1, 2], &[1.0, 1.0])),
    ));
    let discriminator = dict(
        true,
        vec![(
            s("conv"),
            dict(
                false,
                vec![
                    (
                        s("parametrizations"),
                        dict(
                            false,
                            vec![(
                                s("weight"),
                                dict(
                                    false,
                                    vec![
                                        (s("original0"), t(g.clone())),
                                        (s("original1"), t(v.clone())),
                                    ],
                                ),
                            )],
                        ),
                    ),
                    (s("bias"), t(f32_tensor("b", vec![2], &[0.0, 0.0]))),
                ],
            ),
        )],
    );
    let optim = dict(
        false,
        vec![
            (
                s("state"),
                dict(
                    false,
                    vec![(
                        PtValue::Int(0),
                        dict(
                            false,
                            vec![
                                (s("step"), t(f32_tensor("step", vec![], &[10.0]))),
                                (s("exp_avg"), t(f32_tensor("m", vec![2], &[0.1, 0.2]))),
                            ],
                        ),
                    )],
                ),
            ),
            (
                s("param_groups"),
                PtValue::List(vec![dict(
                    false,
                    vec![
                        (s("lr"), PtValue::Float(2e-4)),
                        (
                            s("betas"),
                            PtValue::Tuple(vec![PtValue::Float(0.8), PtValue::Float(0.99)]),
                        ),
                        (s("foreach"), PtValue::None),
                        (s("amsgrad"), PtValue::Bool(false)),
                        (s("params"), PtValue::List(vec![PtValue::Int(0)])),
                    ],
                )]),
            ),
        ],
    );
    let root = dict(
        false,
        vec![
            (s("generator"), PtValue::Dict(generator)),
            (s("discriminator"), discriminator),
            (s("optim_g"), optim),
            (s("steps"), PtValue::Int(1000)),
        ],
    );
    write_pt(path, &root, &no_fsync()).unwrap();
    root
}

#[test]
fn a_file_that_is_not_a_state_dict_is_listed_and_refused_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.pt");
    training_checkpoint(&path);
    let err = Checkpoint::open(&path, None).err().expect("refused");
    let TorchError::NotAStateDict {
        entries,
        suggestion,
        at,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(at, &None);
    assert_eq!(suggestion.as_deref(), Some("generator"));
    let listed: Vec<(&str, usize, usize)> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.tensors, e.pairs))
        .collect();
    assert_eq!(
        listed,
        [
            ("generator", 7, 2),
            ("discriminator", 3, 1),
            ("optim_g", 2, 0),
            ("steps", 0, 0)
        ]
    );
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.contains("`generator` (OrderedDict: 7 tensors, 2 weight-norm pairs)")
            && msg.contains("`steps` (int)")
            && msg.ends_with("choose the state dict by its key, e.g. `generator`"),
        "{msg}"
    );
}

#[test]
fn a_training_checkpoint_is_fused_whole_with_every_other_entry_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.pt");
    let input = training_checkpoint(&path);
    let ckpt = Checkpoint::open(&path, Some("generator")).unwrap();
    assert_eq!(ckpt.key.as_deref(), Some("generator"));
    let others: Vec<String> = ckpt.others().iter().map(|e| e.name.clone()).collect();
    assert_eq!(others, ["discriminator", "optim_g", "steps"]);
    let (fused, pairs) = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap();
    assert_eq!(pairs.len(), 2);

    // A safetensors output cannot hold the rest: refused by name, unless asked.
    let st = dir.path().join("g.safetensors");
    let err = ckpt
        .plan(fused.clone(), &st, &SaveOptions::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, TorchError::WouldDrop { .. })
            && msg.contains("`optim_g` (dict: 2 tensors)")
            && msg.contains("`steps` (int)"),
        "{msg}"
    );
    let only = SaveOptions {
        state_dict_only: true,
        ..SaveOptions::default()
    };
    for p in ckpt.plan(fused.clone(), &st, &only).unwrap() {
        p.write_to(&st, &no_fsync()).unwrap();
    }
    let back = Checkpoint::open(&st, None).unwrap();
    assert_eq!(back.tensors.len(), 5);

    // A .pt output: the whole file, the generator rewritten in its own nesting.
    let out = dir.path().join("fused.pt");
    let planned = ckpt.plan(fused, &out, &SaveOptions::default()).unwrap();
    assert_eq!(planned.len(), 1);
    planned[0].write_to(&out, &no_fsync()).unwrap();
    let got = read_pt(&out).unwrap();
    let (PtValue::Dict(a), PtValue::Dict(b)) = (&input, &got) else {
        panic!()
    };
    let keys =
        |d: &PtDict| -> Vec<String> { d.entries.iter().map(|(k, _)| format!("{k:?}")).collect() };
    assert_eq!(keys(a), keys(b), "top-level order");
    for name in ["discriminator", "optim_g", "steps"] {
        let p = [name.to_string()];
        same(input.get(&p).unwrap(), got.get(&p).unwrap(), name);
    }
    let PtValue::Dict(generator) = got.get(&["generator".to_string()]).unwrap() else {
        panic!()
    };
    assert!(
        generator.ordered && generator.state.is_some(),
        "the state dict's kind and _metadata"
    );
    assert_eq!(
        keys(generator),
        [
            "Str(\"pre.bias\")",
            "Str(\"pre.weight\")",
            "Str(\"up\")",
            "Str(\"post.weight\")"
        ],
        "the fused weight where its pair was"
    );
    let up0 = got
        .get(&["generator".into(), "up".into(), "0".into()])
        .unwrap();
    let PtValue::Dict(up0) = up0 else { panic!() };
    assert_eq!(keys(up0), ["Str(\"weight\")", "Str(\"bias\")"]);
    // w = g v / ||v|| row by row: rows [3,4]/5*2, [0,5]/5*3.
    let PtValue::Tensor(w) = &up0.entries[0].1 else {
        panic!()
    };
    let w: Vec<f64> = w.entry.values_f64().unwrap();
    assert_eq!(w, [1.2f32 as f64, 1.6f32 as f64, 0.0, 3.0]);
}

#[test]
fn a_nested_parametrizations_state_dict_is_converted_and_fused_in_its_nesting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.pt");
    training_checkpoint(&path);
    let ckpt = Checkpoint::open(&path, Some("discriminator")).unwrap();
    // Fused: `conv.parametrizations.weight.original0/1` -> `conv.weight`, the emptied
    // `parametrizations` dicts gone.
    let (fused, _) = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap();
    let out = dir.path().join("d.pt");
    ckpt.plan(fused, &out, &SaveOptions::default()).unwrap()[0]
        .write_to(&out, &no_fsync())
        .unwrap();
    let got = read_pt(&out).unwrap();
    let PtValue::Dict(conv) = got.get(&["discriminator".into(), "conv".into()]).unwrap() else {
        panic!()
    };
    let names: Vec<String> = conv.entries.iter().map(|(k, _)| format!("{k:?}")).collect();
    assert_eq!(names, ["Str(\"weight\")", "Str(\"bias\")"]);
    // Converted to the legacy scheme: the new names beside where the old ones were.
    let (renamed, _) = convert(&ckpt.tensors, Scheme::Legacy).unwrap();
    let out = dir.path().join("c.pt");
    ckpt.plan(renamed, &out, &SaveOptions::default()).unwrap()[0]
        .write_to(&out, &no_fsync())
        .unwrap();
    let back = Checkpoint::open(&out, Some("discriminator")).unwrap();
    let names: Vec<&str> = back.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["conv.bias", "conv.weight_g", "conv.weight_v"]);
}

#[test]
fn a_safetensors_input_writes_a_pt_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("m.safetensors");
    write_safetensors(
        &st,
        &[
            f32_tensor("l.weight_g", vec![2, 1], &[1.0, 1.0]),
            f32_tensor("l.weight_v", vec![2, 2], &[3.0, 4.0, 6.0, 8.0]),
        ],
        None,
    )
    .unwrap();
    let ckpt = Checkpoint::open(&st, None).unwrap();
    assert!(ckpt.others().is_empty());
    let (fused, _) = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap();
    let out = dir.path().join("m.pth");
    assert_eq!(OutputFormat::of(&out), OutputFormat::PyTorch);
    ckpt.plan(fused, &out, &SaveOptions::default()).unwrap()[0]
        .write_to(&out, &no_fsync())
        .unwrap();
    let back = Checkpoint::open(&out, None).unwrap();
    assert_eq!(back.format, weightnorm_core::formats::Format::PyTorch);
    assert_eq!(
        back.get("l.weight").unwrap().values_f64().unwrap(),
        [0.6f32 as f64, 0.8f32 as f64, 0.6f32 as f64, 0.8f32 as f64]
    );
}

/// Two safetensors shards and their index, the pair `a.weight` split across them.
fn sharded(dir: &Path) -> std::path::PathBuf {
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        &[
            f32_tensor("a.weight_g", vec![2, 1], &[2.0, 1.0]),
            f32_tensor("b.bias", vec![1], &[7.0]),
        ],
        Some(&meta),
    )
    .unwrap();
    write_safetensors(
        &dir.join("model-00002-of-00002.safetensors"),
        &[f32_tensor("a.weight_v", vec![2, 2], &[0.0, 2.0, 5.0, 0.0])],
        Some(&meta),
    )
    .unwrap();
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"metadata": {"total_size": 28, "note": "kept"}, "weight_map": {
            "a.weight_g": "model-00001-of-00002.safetensors",
            "b.bias": "model-00001-of-00002.safetensors",
            "a.weight_v": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    index
}

#[test]
fn a_sharded_checkpoint_reads_as_one_and_is_written_sharded_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path());
    let ckpt = Checkpoint::open(&index, None).unwrap();
    let sharding = ckpt.sharding().unwrap();
    assert_eq!(sharding.shards.len(), 2);
    assert_eq!(ckpt.tensors.len(), 3);
    let (fused, pairs) = fuse(&ckpt.tensors, &FuseOptions::default()).unwrap();
    assert_eq!(pairs.len(), 1, "the pair across two shards");

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.safetensors.index.json");
    let planned = ckpt
        .plan(fused.clone(), &out, &SaveOptions::default())
        .unwrap();
    let paths: Vec<String> = planned
        .iter()
        .map(|p| p.path().file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    for p in &planned {
        p.write_to(p.path(), &no_fsync()).unwrap();
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["metadata"]["note"], "kept");
    assert_eq!(doc["metadata"]["total_size"], 20);
    assert_eq!(
        doc["weight_map"]["a.weight"], "model-00002-of-00002.safetensors",
        "the fused weight in its v's shard"
    );
    assert_eq!(
        doc["weight_map"]["b.bias"],
        "model-00001-of-00002.safetensors"
    );
    let back = Checkpoint::open(&out, None).unwrap();
    assert_eq!(
        back.get("a.weight").unwrap().values_f64().unwrap(),
        [0.0, 2.0, 1.0, 0.0]
    );
    assert_eq!(
        back.metadata
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );

    // As PyTorch shards, and as one file.
    let bin = out_dir.join("pytorch_model.bin.index.json");
    let planned = ckpt
        .plan(fused.clone(), &bin, &SaveOptions::default())
        .unwrap();
    assert_eq!(
        planned[0].path().file_name().unwrap(),
        "pytorch_model-00001-of-00002.bin"
    );
    for p in &planned {
        p.write_to(p.path(), &no_fsync()).unwrap();
    }
    let back = Checkpoint::open(&bin, None).unwrap();
    assert_eq!(back.format, weightnorm_core::formats::Format::PyTorch);
    assert_eq!(back.tensors.len(), 2);
    let one = out_dir.join("one.safetensors");
    let planned = ckpt.plan(fused, &one, &SaveOptions::default()).unwrap();
    assert_eq!(planned.len(), 1);
    planned[0].write_to(&one, &no_fsync()).unwrap();
    assert_eq!(Checkpoint::open(&one, None).unwrap().tensors.len(), 2);
}

#[test]
fn a_bad_index_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path());
    let cases = [
        (
            r#"{"weight_map": {"x": "../etc/passwd"}}"#,
            "not a plain file name beside the index",
        ),
        (
            r#"{"weight_map": {"x": "a.index.json"}}"#,
            "not a plain file name",
        ),
        (r#"{"weight_map": {}}"#, "names no shard"),
        (r#"{"metadata": {}}"#, "has no `weight_map` object"),
        ("not json", "not valid JSON"),
        (
            r#"{"weight_map": {"a.weight_g": "model-00001-of-00002.safetensors",
                "a.weight_v": "model-00002-of-00002.safetensors"}}"#,
            "holds `b.bias`, which the index puts elsewhere or nowhere",
        ),
        (
            r#"{"weight_map": {"a.weight_g": "model-00001-of-00002.safetensors",
                "b.bias": "model-00001-of-00002.safetensors",
                "c": "model-00001-of-00002.safetensors",
                "a.weight_v": "model-00002-of-00002.safetensors"}}"#,
            "puts `c` in model-00001-of-00002.safetensors, which does not hold it",
        ),
    ];
    for (text, expect) in cases {
        std::fs::write(&index, text).unwrap();
        let err = Checkpoint::open(&index, None).err().unwrap().to_string();
        assert!(err.contains(expect) && !err.contains('\n'), "{text}: {err}");
    }
    // A missing shard.
    std::fs::write(&index, r#"{"weight_map": {"x": "missing.safetensors"}}"#).unwrap();
    let err = Checkpoint::open(&index, None).err().unwrap();
    assert!(matches!(err, TorchError::Read { .. }), "{err}");
    // An index output of a single file.
    let st = dir.path().join("model-00002-of-00002.safetensors");
    let ckpt = Checkpoint::open(&st, None).unwrap();
    let err = ckpt
        .plan(
            ckpt.tensors.clone(),
            &dir.path().join("x.safetensors.index.json"),
            &SaveOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("is one file"), "{err}");
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pt");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
        let err = Checkpoint::open_with(path, &OpenOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("not a regular file"),
            "{}: {err}",
            path.display()
        );
        let err = read_pt(path).unwrap_err().to_string();
        assert!(
            err.contains("not a regular file"),
            "{}: {err}",
            path.display()
        );
    }
    let index = dir.path().join("model.safetensors.index.json");
    let status = std::process::Command::new("mkfifo")
        .arg(&index)
        .status()
        .unwrap();
    assert!(status.success());
    let err = Checkpoint::open(&index, None).err().unwrap().to_string();
    assert!(err.contains("it is a FIFO, not a regular file"), "{err}");
}
