"""The console qcli prints to and the JSON printer; the views are by command: estimate_view (estimate),
run_views (load, verify, compare), info_views (env, presets). Nothing is computed in a view but unit
conversions and labels; every string a user or a model supplied (paths, preset names, prompts, generated
text) is escaped."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from typing import TYPE_CHECKING, TextIO

from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

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


# A number and its unit ("5.45 GiB", "8,192 tokens") are one word when a line wraps: rich breaks at any
# space, and "reserved 5.45" at the end of one line with "GiB" starting the next reads as a bare number.
_NUMBER_UNIT = re.compile(r"(?<=\d) (?=(?:[KMGT]i?B|[kMGT]?B|B|bytes|tokens|params|s|ms|%)\b)")
_GLUE = "\x00"  # textwrap breaks only at ASCII whitespace, so a NUL holds the pair together


def print_line(out: Console, markup: str) -> None:
    """Print one line of prose (rich markup), wrapped at the console's width between words but never
    between a number and its unit."""
    text = Text.from_markup(markup, emoji=False)  # as the console: "a:smile:b" is a name, not an emoji
    plain = text.plain
    if len(plain) <= out.width or "\n" in plain:
        out.print(text)
        return
    glued = _NUMBER_UNIT.sub(_GLUE, plain)
    wrapper = textwrap.TextWrapper(
        out.width, break_long_words=True, break_on_hyphens=False, expand_tabs=False, replace_whitespace=False
    )
    offsets, start = [], 0
    try:
        for piece in wrapper.wrap(glued):
            start = glued.index(piece, start)  # glued has plain's length: its offsets are plain's
            offsets.append(start)
            start += len(piece)
    except ValueError:  # not expected; rich's own wrapping is the fallback
        out.print(text)
        return
    for line in text.divide(offsets[1:]):
        line.rstrip()
        out.print(line, soft_wrap=True)


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
