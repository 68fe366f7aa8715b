"""The worker runner: isolated from the current directory, typed, bounded in time, reporting how a
worker failed, and stopped (temp dirs removed) when qcli gets SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcli.errors import RunError
from qcli.run.worker import WorkerSpec, run_worker

ROOT = Path(__file__).resolve().parents[1]
PLANTED = "open({marker!r}, 'w').write('imported from the cwd')\nraise SystemExit('planted {name} ran')\n"


def _spec(tmp_path: Path, **kw) -> WorkerSpec:
    return WorkerSpec(model="demo", preset="bf16", text="hello world", prompt="hi", work_dir=str(tmp_path / "w"), **kw)


def test_a_crashing_worker_reports_exit_code_and_stderr(tmp_path):
    result = run_worker(_spec(tmp_path, fail_for_test="crash"), timeout_seconds=120)
    assert not result.ok and result.exit_code == 3
    assert "exited with code 3" in result.row.error and "crash injected" in result.row.error
    assert result.row.traceback is None  # only with --debug


def test_debug_keeps_the_worker_traceback(tmp_path):
    result = run_worker(_spec(tmp_path, fail_for_test="raise"), timeout_seconds=120, debug=True)
    assert "failure injected" in result.row.error and "(worker exit code 1)" in result.row.error
    assert "Traceback" in result.row.traceback and "RuntimeError" in result.row.traceback


def test_a_hanging_worker_is_stopped_at_the_timeout(tmp_path):
    start = time.perf_counter()
    result = run_worker(_spec(tmp_path, fail_for_test="hang"), timeout_seconds=3)
    assert "timed out after 3 s" in result.row.error and time.perf_counter() - start < 30


@pytest.mark.slow
def test_workers_never_import_from_the_current_directory(tmp_path, monkeypatch):
    """A json.py / torch.py in the directory qcli runs from (or on PYTHONPATH) is never imported."""
    plant = tmp_path / "plant"
    plant.mkdir()
    marker = tmp_path / "marker"
    for name in ("json", "torch", "pydantic"):
        (plant / f"{name}.py").write_text(PLANTED.format(marker=str(marker), name=name))
    monkeypatch.chdir(plant)
    monkeypatch.setenv("PYTHONPATH", f"{plant}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = run_worker(_spec(tmp_path, max_new_tokens=2), timeout_seconds=600)
    assert result.ok, result.row.error
    assert not marker.exists() and result.row.perplexity and result.row.memory_bytes


def test_kl_is_measured_and_a_negative_kl_is_an_error():
    import torch

    from qcli.run.quality import agreement_and_kl

    torch.manual_seed(0)
    ref = torch.log_softmax(torch.randn(20, 50), dim=-1)
    assert agreement_and_kl(ref, ref) == (1.0, 0.0)
    other = torch.log_softmax(torch.randn(20, 50), dim=-1)
    agree, kl = agreement_and_kl(ref, other)
    assert 0 <= agree < 1 and kl > 0
    with pytest.raises(RunError, match="negative or NaN KL"):
        agreement_and_kl(ref, ref + 1.0)  # not normalised: KL = -1, never clamped to 0


SCRIPT = """
import signal, sys
from qcli.cli.app import _on_sigterm
from qcli.errors import Terminated
from qcli.run.compare import CompareOptions, run_compare
signal.signal(signal.SIGTERM, _on_sigterm)
try:
    run_compare(CompareOptions(model="demo", presets=["bf16"], speed=False, inject_failure={"bf16": "hang"}))
except Terminated:
    sys.exit(143)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_every_worker_and_remove_temp_dirs(tmp_path, sig, code):
    import psutil

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    # SIGINT back to its default in the child: a runner started with it ignored (nohup, a background job)
    # would pass SIG_IGN on, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    children: list = []
    while time.monotonic() < deadline and not children:
        time.sleep(0.2)
        children = [c for c in parent.children(recursive=True) if "qcli.run.worker" in " ".join(c.cmdline())]
    assert children, "no worker started"
    assert list(tmp.iterdir())  # the compare's temp dir exists while the worker runs
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert list(tmp.iterdir()) == []


def test_relative_model_and_preset_paths_reach_the_worker_absolute(tmp_path, monkeypatch):
    """The worker runs in its own directory: paths the user gave relative to theirs are anchored first."""
    from qcli.run.worker import WorkerSpec, anchored

    (tmp_path / "m").mkdir()
    (tmp_path / "p.yaml").write_text("name: p\ndtype: float32\n")
    monkeypatch.chdir(tmp_path)
    spec = WorkerSpec(model="m", preset="p.yaml", text="t", prompt="p", work_dir=str(tmp_path / "w"))
    out = anchored(spec)
    assert (out.model, out.preset) == (str(tmp_path / "m"), str(tmp_path / "p.yaml"))
    demo = anchored(spec.model_copy(update={"model": "demo", "preset": "bf16"}))
    assert (demo.model, demo.preset) == ("demo", "bf16")
