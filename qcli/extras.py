"""The optional loading stack: `pip install 'qcli[load]'` brings torch, transformers, accelerate and
bitsandbytes (transformers' own convention: `pip install 'transformers[torch]'`). `estimate`, `presets`
and `env` work without it; `load`, `verify`, `compare` and estimate's meta-device path need it.

Presence is checked with importlib.util.find_spec, which imports nothing, so the check costs
microseconds even where torch is installed.
"""

from __future__ import annotations

import importlib.util

from qcli.errors import UsageError

LOAD_INSTALL_HINT = "pip install 'qcli[load]'"
# The distributions of the `load` extra (pyproject.toml), by import name.
LOAD_PACKAGES: tuple[str, ...] = ("torch", "transformers", "accelerate", "bitsandbytes")


def missing(packages: tuple[str, ...] = LOAD_PACKAGES) -> list[str]:
    """Return the import names among `packages` that are not installed."""
    return [p for p in packages if importlib.util.find_spec(p) is None]


def require_load_extra(what: str, packages: tuple[str, ...] = LOAD_PACKAGES) -> None:
    """Raise a UsageError (exit 2) naming the install command when the loading stack is missing."""
    absent = missing(packages)
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        raise UsageError(f"{what} needs {', '.join(absent)}, which {verb} not installed", LOAD_INSTALL_HINT)
