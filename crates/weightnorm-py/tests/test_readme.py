"""The README's Python example runs as written, on files made here."""

from __future__ import annotations

import json
import re
import warnings

import torch
from conftest import ROOT
from torch import nn
from torch.nn.utils import parametrizations


def legacy_net():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.Sequential(nn.utils.weight_norm(nn.Conv1d(2, 3, 3)), nn.ReLU())


def new_net():
    return nn.Sequential(parametrizations.weight_norm(nn.Conv1d(2, 3, 3)), nn.ReLU())


def test_readme_python_example_runs(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Python\n.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    sd = legacy_net().state_dict()
    torch.save({"generator": sd, "steps": 3}, "hifigan.pt")
    torch.save({"generator": sd, "steps": 3}, "generator.pt")
    torch.save(sd, "old.pt")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    save_file(dict(sd), "in/model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in sd}}
    (tmp_path / "in/model.safetensors.index.json").write_text(json.dumps(index))
    env = {"model": new_net(), "model_with_wn": legacy_net(), "new_model": new_net()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exec(compile(block, "README.md", "exec"), env)
    assert (tmp_path / "generator.safetensors").exists()
    assert (tmp_path / "new.pt").exists()
    assert (tmp_path / "out/model.safetensors.index.json").exists()
