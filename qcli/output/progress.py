"""One progress display: qcli owns the terminal while it loads models.

The libraries qcli drives each have their own progress bars and warnings: transformers' tqdm bars
("Loading weights", "Writing model shards"), huggingface_hub's download bars, bitsandbytes' and
accelerate's log warnings. Inside `progress_line()`:

- transformers' bars are routed into one rich line on stderr through `set_tqdm_hook`, transformers'
  public hook for replacing its tqdm (transformers.utils.logging);
- huggingface_hub's bars are switched off (`disable_progress_bars`); the rich line says what is loading;
- the libraries' loggers drop to ERROR and Python warnings are silenced (`--debug` keeps them);
- anything a library prints to stdout goes to stderr, so stdout carries only qcli's output (`--json`).

With `enabled=False` (`--json`, `--quiet`, stderr not a terminal, or HF_HUB_DISABLE_PROGRESS_BARS=1)
nothing at all is drawn. NO_COLOR is honoured by rich's Console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from qcli.errors import debug_enabled

# The loggers of the libraries a load goes through; their warnings are not the user's business here.
LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "bitsandbytes", "torch", "filelock", "urllib3")
DEMO_BUILD = "building the demo model (first run only)…"


def progress_wanted(json_output: bool, quiet: bool) -> bool:
    """Return whether to draw progress: a terminal on stderr, no --json/--quiet, bars not disabled."""
    disabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return sys.stderr.isatty() and not json_output and not quiet and not disabled


class ProgressLine:
    """The one rich progress line on stderr (a no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False, emoji=False),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=None)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(
        self,
        description: str | None = None,
        completed: float | None = None,
        total: float | None = None,
        raw: bool = False,
    ) -> None:
        """Show `description` (escaped unless `raw`) and, when given, how far a counted step is."""
        if self._progress is None:
            return
        kw: dict[str, Any] = {}
        if description is not None:
            kw["description"] = description if raw else escape(description)
            kw["total"], kw["completed"] = total, completed or 0
        else:
            if total is not None:
                kw["total"] = total
            if completed is not None:
                kw["completed"] = completed
        self._progress.update(self._task, **kw)

    def step(self, description: str) -> None:
        """Show a new step with no count (a spinner)."""
        self.update(description, None, None)

    def demo_step(self, done: int, total: int) -> None:
        """Report the demo build's training steps (qcli.run.demo's progress callback)."""
        self.update(DEMO_BUILD if done <= 1 else None, done, total)

    def tqdm(self, factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Bar:
        """transformers' tqdm hook: a bar that reports into this line instead of drawing its own."""
        return _Bar(self, *args, **kwargs)


class _Bar:
    """Enough of tqdm's interface for transformers' loops: iterate, update, close, describe."""

    def __init__(
        self, line: ProgressLine, iterable: Any = None, desc: str | None = None, total: Any = None, **_: Any
    ) -> None:
        self.line, self.iterable, self.n = line, iterable, 0
        if total is None and iterable is not None:
            with contextlib.suppress(TypeError):
                total = len(iterable)
        self.total = total
        if desc:
            line.update(desc[:1].lower() + desc[1:].rstrip(": "), 0, total)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        self.line.update(completed=self.n)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        if desc:
            self.line.update(desc, self.n, self.total)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:  # close, refresh, set_postfix, …: nothing to draw
        return lambda *a, **k: None


@contextlib.contextmanager
def progress_line(enabled: bool) -> Iterator[ProgressLine]:
    """Yield the progress line with the libraries' own bars, warnings and stdout routed away.

    With --debug (QCLI_DEBUG=1) the libraries' warnings and log lines stay visible.
    """
    debug = debug_enabled()
    line = ProgressLine(enabled)
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # stdout is qcli's alone
        if not debug:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
        restore = _route_library_bars(line if enabled else None)
        line.start()
        try:
            yield line
        finally:
            line.stop()
            restore()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _route_library_bars(line: ProgressLine | None) -> Any:
    """Switch off huggingface_hub's bars and hook transformers' into `line` (or off); return an undo."""
    undo: list[Any] = []
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hub warns when HF_HUB_DISABLE_PROGRESS_BARS=0 has priority
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)
    if "transformers" in sys.modules or _installed("transformers"):
        with contextlib.suppress(ImportError):
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            if line is not None:
                hf_logging.set_tqdm_hook(line.tqdm)
                undo.append(lambda: hf_logging.set_tqdm_hook(None))
            elif hf_logging.is_progress_bar_enabled():
                hf_logging.disable_progress_bar()
                undo.append(hf_logging.enable_progress_bar)

    def restore() -> None:
        for fn in reversed(undo):
            with contextlib.suppress(Exception):
                fn()

    return restore


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
