"""One preset in its own process (clean allocator state, memory freed when it exits): load, measure
memory, quality and speed, write a typed result and the log-probs. The same runner serves compare and
verify --reference.

The child is started as `python -I` (no current directory, no PYTHONPATH, no user site on its import
path) in a private working directory, so a `json.py` or `torch.py` lying in the directory the user ran
qcli from is never imported. The location of this qcli package is passed explicitly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qcli.errors import ExitCode, QcliError, RunError, UsageError
from qcli.model.demo import DEMO_NAME
from qcli.results.run import CompareRow
from qcli.run.kernels import failure_text
from qcli.run.loader import LoadOptions, generate, load_report
from qcli.run.quality import perplexity_and_logprobs, speed, token_ids

STDERR_TAIL_CHARS = 1500  # how much of a failed worker's stderr the error keeps
KILL_GRACE_SECONDS = 3.0  # SIGTERM first; SIGKILL after this
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from qcli.run.worker import main; sys.exit(main())"


class WorkerSpec(BaseModel):
    """What one worker does: the load (every load flag), the evaluation, and where to write."""

    model_config = ConfigDict(extra="forbid")

    model: str
    preset: str
    sets: list[str] = []
    device: str = "auto"
    device_map: str | None = None
    max_memory: str | None = None
    dtype: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    text: str
    prompt: str
    max_new_tokens: int = 0  # 0: no continuation
    speed: bool = False
    work_dir: str  # private: the worker's cwd, offload folder, result and log-probs
    fail_for_test: Literal["raise", "crash", "hang"] | None = None

    @property
    def result_path(self) -> Path:
        return Path(self.work_dir) / "result.json"

    @property
    def logits_path(self) -> Path:
        return Path(self.work_dir) / "logprobs.pt"


class WorkerResult(BaseModel):
    """What a worker reports: the row of figures, or an error (with the traceback kept for --debug)."""

    row: CompareRow
    scored_tokens: int | None = None
    speed_method: str | None = None
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.row.error is None

    @property
    def bad_input(self) -> bool:
        """Whether the worker stopped on bad input (exit 2): the model or preset cannot be used as given."""
        return self.exit_code == ExitCode.BAD_INPUT


def run(spec: WorkerSpec) -> WorkerResult:
    """Return the measured row for one preset; writes the fp32 log-probs next to the result."""
    import torch

    opts = LoadOptions(
        model=spec.model,
        preset=spec.preset,
        sets=list(spec.sets),
        device=spec.device,
        device_map=spec.device_map,
        max_memory=spec.max_memory,
        dtype=spec.dtype,
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        offload_dir=str(Path(spec.work_dir) / "offload"),
    )
    report, loaded = load_report(opts)
    if loaded.tokenizer is None:  # the parent checked it up front; the files may have changed since
        raise UsageError(loaded.tokenizer_problem or f"{spec.model}: no tokenizer")
    ids = token_ids(loaded.tokenizer, spec.text)
    try:
        ppl, logp = perplexity_and_logprobs(loaded.model, ids, loaded.device)
    except (QcliError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the first forward pass: name a known kernel limit as its cause
        raise RunError(f"forward pass failed: {failure_text(exc, loaded.model)}") from exc
    torch.save(logp.to(torch.float16 if logp.numel() > 50_000_000 else torch.float32), spec.logits_path)
    cuda = report.cuda[0] if report.cuda else None
    row = CompareRow(
        preset=spec.preset,
        memory_bytes=report.memory_bytes,
        estimate_bytes=report.estimate_bytes,
        estimate_error_percent=report.estimate_error_percent,
        load_seconds=report.load_seconds,
        allocated_bytes=cuda.allocated_bytes if cuda else None,
        reserved_bytes=cuda.reserved_bytes if cuda else None,
        peak_allocated_bytes=cuda.peak_allocated_bytes if cuda else None,
        perplexity=ppl,
        device=loaded.device,
    )
    method = None
    if spec.speed:
        figures = speed(loaded.model, loaded.tokenizer, spec.prompt, loaded.device, spec.max_new_tokens)
        method = figures.pop("speed_method")
        row = row.model_copy(update=figures)
    if spec.max_new_tokens > 0:
        row.continuation = generate(loaded, spec.prompt, spec.max_new_tokens).text
    return WorkerResult(row=row, scored_tokens=int(ids.numel() - 1), speed_method=method)


def main() -> int:
    """Run the spec named on the command line; always leave a result file unless killed."""
    spec = WorkerSpec.model_validate_json(Path(sys.argv[1]).read_text(encoding="utf-8"))
    try:
        if spec.fail_for_test == "crash":
            sys.stderr.write("qcli worker: crash injected by the test suite\n")
            sys.stderr.flush()
            os._exit(3)
        if spec.fail_for_test == "hang":
            import time

            time.sleep(3600)
        if spec.fail_for_test == "raise":
            raise RuntimeError("failure injected by the test suite")
        result = run(spec)
    except BaseException as exc:  # every failure is recorded for the parent, which keeps going
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {line}"
        row = CompareRow(preset=spec.preset, error=message[:500], traceback=traceback.format_exc()[-4000:])
        spec.result_path.write_text(WorkerResult(row=row).model_dump_json(), encoding="utf-8")
        # Bad input (a checkpoint that does not match its config, ...) keeps its exit code: the parent stops on it.
        return int(ExitCode.BAD_INPUT) if isinstance(exc, UsageError) else int(ExitCode.FAILED)
    spec.result_path.write_text(result.model_dump_json(), encoding="utf-8")
    return 0


def _package_root() -> str:
    """Return the directory holding this qcli package (what the isolated child puts on its path)."""
    return str(Path(__file__).resolve().parents[2])


def _stop(proc: subprocess.Popen) -> None:
    """Stop the worker and everything it started (its own session): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return text[-STDERR_TAIL_CHARS:]


def anchored(spec: WorkerSpec) -> WorkerSpec:
    """Return the spec with a local model and a preset file as absolute paths: the worker runs in its own
    directory, so paths relative to the user's current directory would not be found there."""
    update = {}
    model = Path(spec.model).expanduser()
    if spec.model != DEMO_NAME and model.exists():
        update["model"] = str(model.resolve())
    preset = Path(spec.preset).expanduser()
    if preset.is_file():
        update["preset"] = str(preset.resolve())
    return spec.model_copy(update=update)


def run_worker(
    spec: WorkerSpec, timeout_seconds: float, debug: bool = False, extra_env: dict[str, str] | None = None
) -> WorkerResult:
    """Return the worker's result; a timeout, a crash or an error is a row with `error` set.

    The worker runs isolated (`python -I`, cwd = spec.work_dir). On KeyboardInterrupt or Terminated
    (SIGTERM) in this process the worker is stopped before the exception goes on, so the caller's
    temporary directories can be removed.
    """
    work = Path(spec.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / "spec.json"
    spec_path.write_text(anchored(spec).model_dump_json(), encoding="utf-8")
    stderr_path = work / "stderr.txt"
    cmd = [sys.executable, "-I", "-c", BOOT, _package_root(), str(spec_path)]
    env = dict(os.environ) | (extra_env or {})  # secrets (HF_TOKEN) travel here, never in the spec file
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,  # our own signals decide when it stops; a terminal's Ctrl-C goes to us
        )  # fmt: skip
        try:
            code = proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            _stop(proc)
            row = CompareRow(preset=spec.preset, error=f"timed out after {timeout_seconds:g} s (worker stopped)")
            return WorkerResult(row=row, exit_code=proc.returncode)
        except BaseException:
            _stop(proc)
            raise
    tail = _tail(stderr_path)
    try:
        result = WorkerResult.model_validate_json(spec.result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        last = tail.splitlines()[-1] if tail else "no stderr"
        error = f"the worker exited with code {code} and no result: {last}"
        row = CompareRow(preset=spec.preset, error=error[:500], traceback=tail if debug else None)
        return WorkerResult(row=row, exit_code=code)
    result.exit_code = code
    result.row.preset = spec.preset  # as the user named it, not the absolute path the worker was given
    if result.row.error and code not in (0, ExitCode.BAD_INPUT):  # bad input's message is written for the user
        result.row.error = f"{result.row.error} (worker exit code {code})"
    if not debug:
        result.row.traceback = None
    elif result.row.error and tail:
        result.row.traceback = (result.row.traceback or "") + "\n--- worker stderr (end) ---\n" + tail
    return result


if __name__ == "__main__":
    sys.exit(main())
