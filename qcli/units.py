"""Parse parameter counts and byte sizes; format byte counts with explicit units.

GiB is 2**30 bytes and GB is 10**9 bytes; qcli never prints "GB" for 2**30.
"""

from __future__ import annotations

import re
from decimal import Decimal, Inexact, localcontext

from qcli.errors import UsageError

GIB = 2**30
MIB = 2**20
GB = 10**9

# A model with more than a quadrillion parameters is a typo, not a plan.
MAX_PARAMS = 10**15
MAX_BYTES = 2**60

_PARAM_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_BYTE_UNIT = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_NUMBER = r"(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"
_PARAMS_RE = re.compile(rf"^{_NUMBER}\s*(?P<suffix>[kmbgt]?)$", re.IGNORECASE)
_BYTES_RE = re.compile(rf"^{_NUMBER}\s*(?P<unit>[kmgt]?i?b)$", re.IGNORECASE)


# Beyond 10**30 (a nonillion) no count or size is meant; checking the exponent first keeps `1e1000000`
# from overflowing Decimal's context (decimal.Overflow) or building a million-digit integer.
_MAX_MAGNITUDE = 30


def _shown(text: str) -> str:
    """Return the user's text for an error line, cut short (a hostile value may be megabytes)."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _scaled(number: str, factor: int) -> int | None:
    """Return number × factor rounded to an integer, or None when it is past 10**30 or not finite."""
    value = Decimal(number)  # the regexes admit only plain decimal numbers: no nan, inf or hex
    if not value.is_finite() or (value != 0 and value.adjusted() > _MAX_MAGNITUDE):
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[Inexact] = False
        return int((value * factor).to_integral_value())


def _refuse_commas(text: str, flag: str, hint: str) -> None:
    # `1,5b` is 1.5 billion in much of Europe and 15 billion with the comma read as a separator:
    # a count that can be read two ways is refused, never guessed.
    if "," in text:
        raise UsageError(
            f"{flag} {_shown(text)} has a comma, which reads as a decimal point or a thousands separator", hint
        )


def parse_params(text: str) -> int:
    """Return the parameter count written as 8b, 7.24B, 125m, 1.5t, 8030261248 or 8e9."""
    _refuse_commas(text, "--params", "write 1.5b, 1500000000 or 1_500_000_000")
    raw = text.strip().replace("_", "")
    match = _PARAMS_RE.match(raw)
    if not match:
        raise UsageError(
            f"--params {_shown(text)} is not a parameter count",
            "write it like 8b, 7.24B, 125m, 1.5t, 8030261248 or 8e9",
        )
    count = _scaled(match["num"], _PARAM_SUFFIX[match["suffix"].lower()])
    if count is not None and count < 1:
        raise UsageError(f"--params {_shown(text)} is not a positive parameter count", "e.g. --params 8b")
    if count is None or count > MAX_PARAMS:
        raise UsageError(f"--params {_shown(text)} is larger than {MAX_PARAMS:.0e} parameters", "check the suffix")
    return count


def parse_bytes(text: str, flag: str = "size") -> int:
    """Return the byte count written as 24GB, 80GiB, 512MiB or 1.5TB (a unit is required)."""
    _refuse_commas(text, flag, "write 1.5GB, 1500MB or 1536MiB; one size per value")
    raw = text.strip().replace("_", "")
    match = _BYTES_RE.match(raw)
    if not match:
        raise UsageError(
            f"{flag} {_shown(text)} is not a size",
            "give a number and a unit: GB is 10^9 bytes, GiB is 2^30 (e.g. 24GB, 80GiB, 512MiB)",
        )
    count = _scaled(match["num"], _BYTE_UNIT[match["unit"].lower()])
    if count is None or count < 1 or count > MAX_BYTES:
        raise UsageError(f"{flag} {_shown(text)} is out of range", "give a positive size such as 24GB")
    return count


def parse_capacity(text: str, flag: str) -> int:
    """Return a device's memory written as a size (parse_bytes), refusing one under 1 MiB: no GPU or host
    is that small, and `--gpu 1b` or `--cpu-memory 24b` is a unit slip (b is bytes), not a plan to make."""
    size = parse_bytes(text, flag)
    if size < MIB:
        raise UsageError(
            f"{flag} {_shown(text)} is {size:,} byte{'' if size == 1 else 's'}, too small for a device's memory",
            "give GB or GiB, e.g. 24GB or 80GiB; B alone means bytes",
        )
    return size


def gib(n_bytes: float) -> str:
    """Return bytes as GiB with two decimals and the unit, e.g. '4.19 GiB'."""
    return f"{n_bytes / GIB:,.2f} GiB"


def gb(n_bytes: float) -> str:
    """Return bytes as GB (10^9) with two decimals and the unit, e.g. '4.50 GB'."""
    return f"{n_bytes / GB:,.2f} GB"


def _with_unit(n_bytes: float, base: int, units: tuple[str, ...]) -> str:
    value = float(n_bytes)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1000:
        return f"{sign}{value:,.0f} B"
    for unit in units:
        value /= base
        # Move to the next unit from 1000 on, so a figure never needs more than three integer digits
        # ('0.98 GiB', not '1,002.00 MiB').
        if value < 1000 or unit == units[-1]:
            return f"{sign}{value:,.2f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_bytes(n_bytes: float) -> str:
    """Return bytes in the binary unit that suits its size: '64 B', '1.07 KiB', '476.84 MiB', '7.13 GiB'."""
    return _with_unit(n_bytes, 1024, ("KiB", "MiB", "GiB", "TiB", "PiB"))


def decimal_bytes(n_bytes: float) -> str:
    """Return bytes in the decimal (SI) unit that suits its size: '64 B', '1.09 kB', '500.00 MB', '7.65 GB'."""
    return _with_unit(n_bytes, 1000, ("kB", "MB", "GB", "TB", "PB"))


def human_params(n_params: float) -> str:
    """Return a parameter count as 8.03 B, 125.00 M, 1.05 K."""
    for div, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n_params) >= div:
            return f"{n_params / div:,.2f} {unit}"
    return f"{n_params:,.0f}"


def signed_percent(value: float | None, decimals: int = 2) -> str:
    """Return '+0.12%' (or '—' for None): the sign always shown, so 0 reads as exact."""
    return "—" if value is None else f"{value:+.{decimals}f}%"
