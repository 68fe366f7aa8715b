"""qcli owns the terminal (issue 15): in a real pseudo-terminal, `qcli load demo` draws one progress line
of its own and no third-party progress bar (transformers' "Loading weights", "Writing model shards",
huggingface_hub's download bars, tqdm's `45%|####` lines); piped or with --json it draws nothing."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# What a tqdm bar looks like once the escape codes are gone: "Loading weights:  45%|####5     | 9/20".
TQDM_BAR = re.compile(r"\d+%\|")
THIRD_PARTY = ("Loading weights", "Writing model shards", "Fetching", "Downloading", "it/s]")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Return the exit code and everything written to the terminal (stdout and stderr) by `qcli args`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))  # 80 columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "qcli", *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "NO_COLOR", "QCLI_DEBUG"}}
    env |= {"QCLI_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    return env


def test_load_demo_in_a_terminal_shows_only_qcli_progress(tmp_path):
    code, raw = run_in_pty(["load", "demo", "--preset", "nf4"], _env(tmp_path / "cache"))
    text = ANSI.sub("", raw)
    assert code == 0, text[-3000:]
    assert "building the demo model (first run only)" in text  # a fresh cache: the first run builds it
    assert "memory_bytes" in text  # the report itself reached the terminal
    leaked = [m for m in THIRD_PARTY if m in text] + TQDM_BAR.findall(text)
    assert not leaked, leaked
    assert "Traceback" not in text and "Warning" not in text


def test_piped_and_json_draw_no_progress(tmp_path, qcli_cache):
    env = _env(qcli_cache)  # the session's cache: the demo is already built by other tests or built here
    proc = subprocess.run(
        [sys.executable, "-m", "qcli", "load", "demo", "--preset", "nf4", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("{") and proc.stdout.rstrip().endswith("}")
    assert "building the demo" not in proc.stderr and not TQDM_BAR.search(proc.stderr)
    assert not [m for m in THIRD_PARTY if m in proc.stderr], proc.stderr
