"""The console qcli prints to and the JSON printer; the views are by command: estimate_view (estimate),
run_views (load, verify, compare), info_views (env, presets). Nothing is computed in a view but unit
conversions and labels; every string a user or a model supplied (paths, preset names, prompts, generated
text) is escaped."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

from pydantic import BaseModel
from rich.console import Console

from qcli.errors import StdoutClosed

if TYPE_CHECKING:
    pass


PIPE_WIDTH = 120
MIN_WIDTH = 40  # narrower, a table's numbers would have to wrap


def console(stderr: bool = False) -> Console:
    """Return the console the views print to (120 columns when not a terminal)."""
    stream = sys.stderr if stderr else _stdout()
    # A pipe or a file gets 120 columns (logs read better unwrapped) unless COLUMNS says otherwise; a
    # COLUMNS that is not a width (0, -5, "abc") is ignored, and no layout goes below MIN_WIDTH.
    columns = os.environ.get("COLUMNS", "").strip()
    given = int(columns) if columns.isascii() and columns.isdigit() and int(columns) > 0 else None
    width = given or (None if stream.isatty() else PIPE_WIDTH)
    out = Console(stderr=stderr, highlight=False, soft_wrap=False, width=width, emoji=False)  # "a:smile:b" is a name
    if out.width < MIN_WIDTH:
        out.width = MIN_WIDTH
    return out


def _stdout() -> TextIO:
    """Return sys.stdout, or raise when it is closed (`qcli … >&-` leaves Python's sys.stdout None)."""
    if sys.stdout is None:
        raise StdoutClosed()
    return sys.stdout


def print_json(obj: BaseModel) -> None:
    """Print a pydantic result as one JSON object on stdout, nothing else."""
    out = _stdout()
    out.write(obj.model_dump_json(indent=2) + "\n")
    out.flush()
