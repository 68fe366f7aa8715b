"""Paths a user typed: `~` expanded, and the ways that can fail said as bad input."""

from __future__ import annotations

from pathlib import Path

from qcli.errors import UsageError


def user_path(text: str, what: str) -> Path:
    """Return `text` as a Path with `~` and `~user` expanded; a UsageError naming `what` for an unknown user."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # `~nouser/…`: Python cannot find that user's home directory
        user = text.split("/", 1)[0]
        raise UsageError(
            f"{what} {text[:80]!r}: there is no user {user[1:]!r} to expand {user}", "give the full path"
        ) from None
