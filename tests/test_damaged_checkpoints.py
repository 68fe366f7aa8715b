"""Damaged or unusable model directories are bad input: exit 2, one line naming the file or the cause with a
hint that fits it (never torch's advice to retry with weights_only=False), not a library message with
"is the checkpoint complete?". Real tiny files (a tiny Llama's weights, torch.save), nothing mocked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import one_error_line, save_tiny_llama
from tests.hubserver import point_hub_at

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "good"
    save_tiny_llama(out)
    return out


def _copy(good: Path, to: Path, config: dict | None = None, weights: bool = True) -> Path:
    to.mkdir()
    (to / "config.json").write_text(json.dumps(config or json.loads((good / "config.json").read_text())))
    if weights:
        os.symlink(good / "model.safetensors", to / "model.safetensors")
    return to


@pytest.mark.parametrize("content", ["garbage", "empty", "truncated zip"])
def test_an_unreadable_pytorch_bin_names_the_file_and_never_suggests_weights_only(cli, good, tmp_path, content):
    import torch

    d = _copy(good, tmp_path / "bin", weights=False)
    target = d / "pytorch_model.bin"
    if content == "garbage":
        target.write_bytes(b"garbage" * 10)
    elif content == "empty":
        target.write_bytes(b"")
    else:
        torch.save({"w": torch.zeros(64)}, target)
        target.write_bytes(target.read_bytes()[:100])
    r = cli("load", str(d), "--preset", "bf16")
    line = one_error_line(r, "pytorch_model.bin", "not a readable PyTorch checkpoint")
    assert "weights_only" not in line


@pytest.mark.parametrize("command", ["load", "verify", "compare"])
def test_a_config_without_model_type_is_bad_input(cli, good, tmp_path, command):
    config = json.loads((good / "config.json").read_text())
    config.pop("model_type")
    config.pop("architectures", None)
    d = _copy(good, tmp_path / "nomodeltype", config)
    one_error_line(cli(command, str(d)), "config.json has no model_type")


@pytest.mark.parametrize("command", ["load", "verify", "compare"])
@pytest.mark.parametrize("model_type", ["t5", "distilbert"])
def test_a_model_that_is_not_a_causal_lm_is_bad_input(cli, good, tmp_path, command, model_type):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, d_model=32, vocab_size=128).to_dict()
    d = _copy(good, tmp_path / model_type, config)
    one_error_line(cli(command, str(d)), f"model_type {model_type!r} is not a causal language model", "estimate")


def test_offline_with_only_the_config_cached_says_the_weights_are_not_cached(cli, good, tmp_path, monkeypatch):
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf", offline=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--cfgonly"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text((good / "config.json").read_text())
    for command in ("load", "compare"):
        one_error_line(cli(command, "org/cfgonly"), "org/cfgonly", "not in the local cache", "HF_HUB_OFFLINE")
    os.symlink(good / "model.safetensors", repo / "snapshots" / commit / "model.safetensors")
    r = cli("load", "org/cfgonly", "--preset", "bf16", "--json")  # with the weights cached, it loads
    assert r.code == 0, r.err
