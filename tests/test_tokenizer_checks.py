"""The tokenizer is checked before any load or worker when the run needs one (compare always, verify always,
load with --prompt): a missing one and a damaged one are bad input, each named for what it is.
A tiny real Llama with the demo's BPE tokenizer; the broken copies link its files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import save_tiny_llama

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from qcli.model.demo import DEMO_VOCAB
    from qcli.resources import data_text
    from qcli.run.demo import _tokenizer

    root = tmp_path_factory.mktemp("tok")
    good = root / "good"
    save_tiny_llama(good, vocab_size=DEMO_VOCAB)
    _tokenizer(data_text("sample.txt")).save_pretrained(good)
    out = {"good": str(good)}

    def linked(name: str, skip: tuple[str, ...] = ()) -> Path:
        d = root / name
        d.mkdir()
        for f in good.iterdir():
            if f.name not in skip:
                os.symlink(f, d / f.name)
        out[name] = str(d)
        return d

    linked("notok", skip=("tokenizer.json", "tokenizer_config.json"))
    (linked("garbage", skip=("tokenizer.json",)) / "tokenizer.json").write_text("garbage{")
    os.mkfifo(linked("fifo", skip=("tokenizer.json",)) / "tokenizer.json")
    # as many tokens as the embeddings, one of them moved to id 5000: len(tokenizer) fits, its ids do not
    data = json.loads((good / "tokenizer.json").read_text())
    token = next(t for t, i in data["model"]["vocab"].items() if i == 300)
    data["model"]["vocab"][token] = 5000
    (linked("bigid", skip=("tokenizer.json",)) / "tokenizer.json").write_text(json.dumps(data))
    return out


def _bad(r, *needles: str) -> str:
    assert r.code == 2, (r.code, r.out, r.err)
    [line] = r.err.strip().splitlines()
    for needle in needles:
        assert needle in line, line
    assert "NoneType" not in line and "worker" not in line and "--prompt" not in line
    return line


CASES = [
    ("notok", ("no tokenizer in the directory", "tokenizer.json")),
    ("garbage", ("tokenizer.json is not valid JSON", "line 1 column 1")),
    ("fifo", ("tokenizer.json is not a regular file",)),
    ("bigid", ("id 5,000, past the model's embeddings", "vocab_size 512")),
]


@pytest.mark.parametrize(("name", "needles"), CASES)
def test_compare_checks_the_tokenizer_before_any_worker(cli, dirs, name, needles):
    _bad(cli("compare", dirs[name], "--presets", "bf16,nf4"), *needles)


@pytest.mark.parametrize(("name", "needles"), CASES)
def test_verify_checks_the_tokenizer_without_being_given_a_prompt(cli, dirs, name, needles):
    _bad(cli("verify", dirs[name], "--preset", "nf4"), *needles)


@pytest.mark.parametrize(("name", "needles"), CASES)
def test_load_with_a_prompt_checks_the_tokenizer(cli, dirs, name, needles):
    _bad(cli("load", dirs[name], "--preset", "bf16", "--prompt", "hi"), *needles)


def test_load_without_a_prompt_needs_no_tokenizer(cli, dirs):
    assert cli("load", dirs["notok"], "--preset", "bf16").code == 0


def test_a_good_tokenizer_is_loaded_once_and_used(cli, dirs):
    r = cli("load", dirs["good"], "--preset", "bf16", "--prompt", "The capital", "--max-new-tokens", "2", "--json")
    assert r.code == 0, r.err
    assert r.json()["generation"]["new_tokens"] == 2
