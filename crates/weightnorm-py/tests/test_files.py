"""The file functions: the command line's semantics (formats by name, atomic, never over an
input, one-line errors) from Python."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
import weightnorm
from conftest import rel_err
from torch import nn
from torch.nn.utils import parametrizations

safetensors_torch = pytest.importorskip("safetensors.torch")


def legacy_sd(seed=0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        net = nn.Sequential(
            nn.utils.weight_norm(nn.Conv1d(2, 4, 3)),
            nn.ReLU(),
            nn.utils.weight_norm(nn.Conv1d(4, 3, 1)),
        )
    return net.state_dict()


def files(d):
    return sorted(os.listdir(d))


def test_fuse_file_safetensors_matches_in_memory_fuse(tmp_path):
    sd = legacy_sd()
    src = tmp_path / "in.safetensors"
    safetensors_torch.save_file(dict(sd), src)
    out = weightnorm.fuse_file(src, tmp_path / "out.safetensors")
    assert [p["name"] for p in out["pairs"]] == ["0.weight", "2.weight"]
    assert out["tensors"] == 4 and out["files"] == 1
    written = safetensors_torch.load_file(tmp_path / "out.safetensors")
    expected = weightnorm.fuse(sd)
    assert sorted(written) == sorted(expected)
    for k in written:
        assert torch.equal(written[k], expected[k]), k


def test_training_checkpoint_with_key_keeps_the_other_entries(tmp_path):
    sd = legacy_sd()
    src = tmp_path / "ckpt.pt"
    torch.save({"generator": sd, "steps": 12, "optim": {"lr": 0.1}}, src)
    with pytest.raises(weightnorm.NotAStateDictError, match=r"\(key='generator'\)") as e:
        weightnorm.fuse_file(src, tmp_path / "o.pt")
    assert e.value.suggestion == "generator"
    assert files(tmp_path) == ["ckpt.pt"]
    # A .safetensors output would lose `steps` and `optim`: refused, naming the option.
    with pytest.raises(weightnorm.InputError, match="state_dict_only=True"):
        weightnorm.fuse_file(src, tmp_path / "o.safetensors", key="generator")
    out = weightnorm.fuse_file(src, tmp_path / "o.pt", key="generator")
    assert out["carried"] == 2
    back = torch.load(tmp_path / "o.pt", weights_only=True)
    assert back["steps"] == 12 and back["optim"] == {"lr": 0.1}
    fused = weightnorm.fuse(sd)
    for k, v in fused.items():
        assert torch.equal(back["generator"][k], v)
    weightnorm.fuse_file(src, tmp_path / "sd.safetensors", key="generator", state_dict_only=True)
    pairs = weightnorm.inspect(src, key="generator")
    assert [p.name for p in pairs] == ["0.weight", "2.weight"]


def test_outputs_exist_inputs_and_force(tmp_path):
    sd = legacy_sd()
    src = tmp_path / "in.safetensors"
    safetensors_torch.save_file(dict(sd), src)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"theirs")
    with pytest.raises(weightnorm.OutputExistsError, match="exists: pass force=True") as e:
        weightnorm.fuse_file(src, dst)
    assert isinstance(e.value, FileExistsError) and e.value.filename == str(dst)
    assert dst.read_bytes() == b"theirs"
    weightnorm.fuse_file(src, dst, force=True)
    assert len(safetensors_torch.load_file(dst)) == 4
    with pytest.raises(weightnorm.InputError, match="is the input"):
        weightnorm.fuse_file(src, src, force=True)
    os.link(src, tmp_path / "hard.safetensors")
    with pytest.raises(weightnorm.InputError, match="is the input"):
        weightnorm.fuse_file(src, tmp_path / "hard.safetensors", force=True)
    assert files(tmp_path) == ["hard.safetensors", "in.safetensors", "out.safetensors"]
    with pytest.raises(weightnorm.ReadError, match="cannot read"):
        weightnorm.fuse_file(tmp_path / "missing.pt", tmp_path / "x.safetensors")


def test_a_bad_input_never_leaves_a_partial_file(tmp_path):
    sd = legacy_sd()
    sd["2.weight_v"] = torch.zeros_like(sd["2.weight_v"])  # a zero-norm slice, found late
    src = tmp_path / "in.safetensors"
    safetensors_torch.save_file(dict(sd), src)
    with pytest.raises(weightnorm.InputError, match="zero-norm slice"):
        weightnorm.fuse_file(src, tmp_path / "out.safetensors")
    assert files(tmp_path) == ["in.safetensors"]


def test_split_and_convert_files_round_trip(tmp_path):
    torch.manual_seed(1)
    plain = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 3, 1))
    src = tmp_path / "plain.safetensors"
    safetensors_torch.save_file(dict(plain.state_dict()), src)
    weightnorm.split_file(src, tmp_path / "wn.safetensors", scheme="parametrizations")
    target = nn.Sequential(
        parametrizations.weight_norm(nn.Conv1d(2, 4, 3)),
        nn.ReLU(),
        parametrizations.weight_norm(nn.Conv1d(4, 3, 1)),
    )
    target.load_state_dict(safetensors_torch.load_file(tmp_path / "wn.safetensors"), strict=True)
    x = torch.randn(1, 2, 7)
    assert rel_err(target(x).detach(), plain(x).detach()) <= 1e-6
    out = weightnorm.convert_file(tmp_path / "wn.safetensors", tmp_path / "old.pt", "legacy")
    assert {p["scheme"] for p in out["pairs"]} == {"parametrizations"}
    old = torch.load(tmp_path / "old.pt", weights_only=True)
    assert sorted(old) == [
        "0.bias",
        "0.weight_g",
        "0.weight_v",
        "2.bias",
        "2.weight_g",
        "2.weight_v",
    ]
    split = weightnorm.split_file(
        src, tmp_path / "whole.safetensors", dim=None, include=r"^2\.weight$"
    )
    assert [p["dim"] for p in split["pairs"]] == [None]


def test_sharded_checkpoint_fuses_shard_by_shard(tmp_path):
    sd = legacy_sd()
    names = sorted(sd)
    shards = {
        "model-00001-of-00002.safetensors": names[:3],
        "model-00002-of-00002.safetensors": names[3:],
    }
    weight_map = {}
    for f, keys in shards.items():
        safetensors_torch.save_file({k: sd[k] for k in keys}, tmp_path / f)
        weight_map.update({k: f for k in keys})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    assert [p.name for p in weightnorm.inspect(index)] == ["0.weight", "2.weight"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = weightnorm.fuse_file(index, out_dir / "model.safetensors.index.json")
    assert out["files"] == 3
    written = json.loads((out_dir / "model.safetensors.index.json").read_text())
    fused = weightnorm.fuse(sd)
    assert sorted(written["weight_map"]) == sorted(fused)
    for k, f in written["weight_map"].items():
        assert torch.equal(safetensors_torch.load_file(out_dir / f)[k], fused[k])


def test_onnx_weight_norm_is_folded(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 3)), nn.Tanh()).eval()
    src = tmp_path / "m.onnx"
    x = torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), src, dynamo=False, input_names=["x"])
    pairs = weightnorm.inspect(src)
    assert len(pairs) == 1 and pairs[0].scheme == "onnx"
    with pytest.raises(weightnorm.InputError, match="key applies to checkpoints"):
        weightnorm.fuse_file(src, tmp_path / "f.onnx", key="x")
    with pytest.raises(weightnorm.InputError, match=r"name the output \*\.onnx"):
        weightnorm.fuse_file(src, tmp_path / "f.safetensors")
    out = weightnorm.fuse_file(src, tmp_path / "f.onnx")
    assert len(out["pairs"]) == 1
    folded = onnx.load(tmp_path / "f.onnx")
    assert not any(n.op_type in ("ReduceL2", "Div") for n in folded.graph.node)
    y = ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"x": x.numpy()})[0]
    assert rel_err(torch.from_numpy(y), model(x).detach()) <= 1e-6
