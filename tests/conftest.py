from __future__ import annotations

import json
from pathlib import Path

import pytest

from qcli.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "configs"


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
