"""`qcli` as a process ends the way CPython's exit does, minus the interpreter's teardown (qcli.cli.app._end_process):
atexit functions run, every byte of stdout and stderr arrives, the exit code is the command's; and where the
teardown matters (a thread still running, a profiler watching) the normal exit is taken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA = str(ROOT / "tests" / "fixtures" / "configs" / "llama3-8b.json")


def _python(code: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp, timeout=120, check=False
    )


ENTRY = """
import atexit, gc, sys, threading
from pathlib import Path
atexit.register(lambda: Path("atexit-ran").write_text(f"gc enabled: {gc.isenabled()}"))
if sys.argv.pop(1) == "thread":
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=False)
    t.start()
    atexit.register(stop.set)  # runs after the main thread ends, once the interpreter waits for `t`: never
    threading.Timer(3, stop.set).start()  # alive past main() on a slow machine too
from qcli.cli import main
code = main()  # argv None: the process entry point, as the console script calls it
Path("returned").write_text(str(code))
sys.exit(code)
"""


def test_the_process_ends_with_atexit_run_and_all_output_written(tmp_path):
    args = ["estimate", LLAMA, "--preset", "qlora", "--gpu", "T4", "--context", "8192", "--json"]
    r = _python(ENTRY, "plain", *args, tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["command"] == "estimate"  # the whole JSON object, flushed
    assert (tmp_path / "atexit-ran").read_text() == "gc enabled: False"  # a planning process: nothing to collect
    assert not (tmp_path / "returned").exists()  # main() ended the process: no teardown after it
    bad = _python(ENTRY, "plain", "estimate", "--params", "8x", tmp=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ") and bad.stdout == ""


def test_a_loading_command_keeps_the_garbage_collector(tmp_path):
    r = _python(ENTRY, "plain", "verify", "demo", "--preset", "no-such-preset", tmp=tmp_path)
    assert r.returncode == 2 and "no-such-preset" in r.stderr
    assert (tmp_path / "atexit-ran").read_text() == "gc enabled: True"  # cycles there may hold tensors


def test_a_running_thread_gets_the_normal_exit(tmp_path):
    r = _python(ENTRY, "thread", "estimate", "--params", "8b", "--bits", "4", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "returned").read_text() == "0"  # main() returned; the interpreter waited for the thread
    assert "parameters" in r.stdout


def test_a_profiler_gets_the_normal_exit(tmp_path):
    code = (
        "import cProfile, sys; sys.argv[1:] = ['estimate', '--params', '8b'];"
        "cProfile.run('from qcli.cli import main; main()', sort='cumulative')"
    )
    r = _python(code, tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "function calls" in r.stdout  # cProfile's report, printed after main() returned


def test_in_process_calls_return(cli):
    assert cli("estimate", "--params", "8b", "--bits", "4").code == 0  # main(argv) never ends the process
