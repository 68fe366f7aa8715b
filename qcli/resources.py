"""Where qcli's files live: the packaged data, and the user's cache.

configs/ (presets, GPU catalog) sits at the top of the repository, where users browse and copy
presets; the wheel build (setup.py) copies it into the package as qcli/configs. So an installed qcli
reads its own copy through importlib.resources, and a source checkout (editable install or
PYTHONPATH) reads the checkout's configs/ — never another checkout's.
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path


def configs_dir() -> Traversable:
    """Return the configs folder: the packaged copy, or the source checkout's configs/."""
    packaged = files("qcli").joinpath("configs")
    if packaged.is_dir():
        return packaged
    # A source checkout: qcli/ sits next to configs/ and pyproject.toml.
    root = Path(__file__).resolve().parent.parent
    if (root / "configs").is_dir() and (root / "pyproject.toml").is_file():
        return root / "configs"
    raise FileNotFoundError("qcli's configs/ (presets, GPU catalog) is missing: reinstall qcli")


def config_file(name: str) -> Traversable:
    """Return the packaged file `name` from configs/ (presets, GPU catalog)."""
    return configs_dir().joinpath(name)


def config_files(suffix: str = ".yaml") -> list[Traversable]:
    """Return the configs/ files ending in `suffix`, sorted by name."""
    return sorted((f for f in configs_dir().iterdir() if f.name.endswith(suffix)), key=lambda f: f.name)


def data_text(name: str) -> str:
    """Return a packaged text file from qcli/data."""
    return files("qcli.data").joinpath(name).read_text(encoding="utf-8")


def cache_root() -> Path:
    """Return qcli's cache dir: $QCLI_CACHE, else $XDG_CACHE_HOME/qcli, else ~/.cache/qcli."""
    if os.environ.get("QCLI_CACHE"):
        from qcli.paths import user_path

        root = user_path(os.environ["QCLI_CACHE"], "QCLI_CACHE")
        if root.exists() and not root.is_dir():
            from qcli.errors import UsageError

            raise UsageError(f"QCLI_CACHE={root} is not a directory", "point QCLI_CACHE at a directory, or unset it")
        return root
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qcli"
