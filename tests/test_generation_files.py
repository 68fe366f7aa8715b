"""The files beside the weights that the load, the prompt and generation read: config.json's pad_token_id,
generation_config.json, and a tokenizer that must fit the model's embeddings. Each broken one is bad input
(exit 2, one line naming the file), found before any load or worker, in load, verify and compare.

A tiny real Llama with the demo's BPE tokenizer (512 tokens); the broken copies link its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import save_tiny_llama

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from qcli.model.demo import DEMO_VOCAB
    from qcli.resources import data_text
    from qcli.run.demo import _tokenizer

    root = tmp_path_factory.mktemp("gen")
    tokenizer = _tokenizer(data_text("sample.txt"))
    good = root / "good"
    save_tiny_llama(good, vocab_size=DEMO_VOCAB)
    tokenizer.save_pretrained(good)
    out = {"good": str(good)}

    def linked(name: str, replaced: str, content: str | None = None, source: Path = good) -> Path:
        d = root / name
        d.mkdir()
        for f in source.iterdir():
            if f.name != replaced:
                os.symlink(f, d / f.name)
        if content is not None:
            (d / replaced).write_text(content)
        out[name] = str(d)
        return d

    config = json.loads((good / "config.json").read_text())
    linked("pad", "config.json", json.dumps(config | {"pad_token_id": 99999}))
    linked("eos", "config.json", json.dumps(config | {"eos_token_id": 99999}))
    linked("gen-negative", "generation_config.json", json.dumps({"max_new_tokens": -5}))
    linked("gen-list", "generation_config.json", "[1, 2]")
    linked("gen-garbage", "generation_config.json", "garbage{")
    (linked("gen-dir", "generation_config.json")).joinpath("generation_config.json").mkdir()
    small = root / "small-source"  # a model whose embeddings hold 128 rows, given the 512-token tokenizer
    save_tiny_llama(small, vocab_size=128)
    tokenizer.save_pretrained(small)
    out["small"] = str(small)
    return out


def _bad(r, *needles: str) -> str:
    assert r.code == 2, (r.code, r.out, r.err)
    [line] = r.err.strip().splitlines()
    assert line.startswith("Error: ")
    for needle in needles:
        assert needle in line, line
    assert "Traceback" not in r.err and "re-download" not in line
    return line


def test_pad_token_id_outside_the_vocabulary_is_bad_input(cli, dirs):
    """torch refuses a padding_idx past the embeddings with an AssertionError mid-load (was exit 1, 'is the
    checkpoint complete?', after transformers' warnings on stderr)."""
    for args in (("load", dirs["pad"], "--preset", "bf16"), ("compare", dirs["pad"], "--presets", "bf16")):
        _bad(cli(*args), "pad_token_id 99999", "vocab_size 512")


GENERATION = [
    ("gen-negative", ("generation_config.json is not valid", "max_new_tokens")),
    ("gen-list", ("generation_config.json must hold a JSON object",)),
    ("gen-garbage", ("generation_config.json is not valid JSON", "line 1 column 1")),
    ("gen-dir", ("generation_config.json is not a regular file",)),
]


@pytest.mark.parametrize(("name", "needles"), GENERATION)
def test_a_broken_generation_config_is_bad_input_naming_the_file(cli, dirs, name, needles):
    """transformers raised on some (exit 1 with no file named) and silently ignored the others."""
    _bad(cli("load", dirs[name], "--preset", "bf16"), *needles)


def test_a_broken_generation_config_stops_verify_and_compare_before_any_work(cli, dirs):
    _bad(cli("verify", dirs["gen-list"], "--preset", "bf16"), "generation_config.json")
    _bad(cli("compare", dirs["gen-negative"], "--presets", "bf16,nf4"), "generation_config.json")


@pytest.mark.parametrize("command", ["load", "verify", "compare"])
def test_a_tokenizer_larger_than_the_embeddings_is_bad_input(cli, dirs, command):
    """Its ids past the embeddings failed inside the forward pass (load: exit 1 blaming offloading; verify: a
    failed forward check; compare: every row failed)."""
    args = {"load": ("--preset", "bf16", "--prompt", "The capital of France is"), "verify": ("--preset", "bf16")}
    r = cli(command, dirs["small"], *args.get(command, ("--presets", "bf16")))
    _bad(r, "the tokenizer has 512 tokens", "only 128")


def test_a_smaller_tokenizer_and_the_good_files_still_load(cli, dirs):
    r = cli("load", dirs["good"], "--preset", "bf16", "--prompt", "The capital", "--max-new-tokens", "2", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["generation"]["new_tokens"] >= 1


def test_transformers_warnings_about_the_config_stay_off_stderr(dirs):
    """Reading the tokenizer before the load printed transformers' config warnings (an eos_token_id outside the
    vocabulary, which transformers only warns about) on stderr, outside the load's quiet zone."""
    args = ["load", dirs["eos"], "--preset", "bf16", "--prompt", "The capital", "--max-new-tokens", "2", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "QCLI_DEBUG"}
    p = subprocess.run([sys.executable, "-m", "qcli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    json.loads(p.stdout)
