"""Bounds on the numbers a user passes: each flag's range, checked before any work starts.

The ranges are wide (far past any real model or machine) but finite, so a typo or a hostile value
(`--gpus 10000000`, `--context 10**400`, `--timeout nan`) is exit 2 with the flag named, instead of
minutes of arithmetic, a float overflow, or a run that never ends.
"""

from __future__ import annotations

import math

from qcli.errors import UsageError

MAX_GPUS = 1024  # one plan over more devices than a rack holds is a typo
MAX_CONTEXT = 2**31 - 1  # tokens: past every released model's context (the largest are ~10M)
MAX_BATCH = 2**20
MAX_LORA_RANK = 2**16
MAX_NEW_TOKENS = 2**20
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_MARGIN = 10.0


def check_int(flag: str, value: int | None, lo: int, hi: int) -> int | None:
    """Return `value` when it lies in [lo, hi] (None passes); raise a UsageError naming the flag."""
    if value is None:
        return None
    if isinstance(value, bool) or not lo <= value <= hi:
        shown = str(value) if abs(value) < 10**12 else f"{str(value)[:12]}… ({len(str(abs(value)))} digits)"
        raise UsageError(f"{flag} {shown} is out of range", f"give an integer from {lo:,} to {hi:,}")
    return value


def check_float(flag: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    """Return a finite `value` in [lo, hi] ((lo, hi] with lo_open); None passes; else a UsageError."""
    if value is None:
        return None
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        low = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
        raise UsageError(f"{flag} {value!r} is out of range", f"give a number {low} and at most {hi:g}")
    return value
