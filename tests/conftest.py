from __future__ import annotations

import json
from pathlib import Path

import pytest

from qcli.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def save_tiny_llama(out: Path, vocab_size: int = 128) -> Path:
    """Save a tiny random Llama (2 layers, hidden 32, GQA 4/2) into `out` with transformers; return `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def one_error_line(r, *needles: str) -> str:
    """Assert a run ended as bad input with one plain error line holding every needle; return the line."""
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err and "internal error" not in r.err, r.err
    assert "is the checkpoint complete" not in r.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def qcli_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session: the demo model is built once."""
    return tmp_path_factory.mktemp("qcli-cache")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, qcli_cache: Path) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("QCLI_CACHE", str(qcli_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("QCLI_DEBUG", raising=False)


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the real CLI entry point in-process; return exit code, stdout and stderr."""

    def run(*args: str) -> Run:
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def plan(data: dict) -> dict:
    """Return the one plan of an `estimate --json` object that asked for one precision."""
    assert len(data["plans"]) == 1, [p["format"] for p in data["plans"]]
    return data["plans"][0]


def fixture_config(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())
