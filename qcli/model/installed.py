"""What the installed libraries are, read without importing them (the estimate path imports no torch)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def transformers_version() -> str | None:
    """Return the installed transformers version without importing it, or None.

    Read from the name of its dist-info folder next to the package: the warm spec-cache path runs on
    every estimate, and importlib.metadata alone costs more than the rest of it.
    """
    found = importlib.util.find_spec("transformers")
    if found is None or not found.origin:
        return None
    with os.scandir(Path(found.origin).parent.parent) as entries:
        for entry in entries:
            if entry.name.startswith("transformers-") and entry.name.endswith(".dist-info"):
                return entry.name.removeprefix("transformers-").removesuffix(".dist-info")
    from importlib import metadata  # an unusual install: ask the slower way

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def transformers_at_least(major: int, minor: int) -> bool:
    """Return whether the installed transformers is at least major.minor (False when it is not installed)."""
    version = transformers_version()
    if version is None:
        return False
    try:
        have = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:  # a dev build such as 5.25.0.dev0 still parses; anything stranger counts as new
        return True
    return have >= (major, minor)
