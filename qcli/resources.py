"""Where the packaged data files live (configs/ ships inside the wheel as qcli.configs)."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def config_file(name: str) -> Traversable:
    """Return the packaged file `name` from configs/ (presets, GPU catalog)."""
    return files("qcli.configs").joinpath(name)


def config_files(suffix: str = ".yaml") -> list[Traversable]:
    """Return the packaged configs/ files ending in `suffix`, sorted by name."""
    return sorted((f for f in files("qcli.configs").iterdir() if f.name.endswith(suffix)), key=lambda f: f.name)


def data_text(name: str) -> str:
    """Return a packaged text file from qcli/data."""
    return files("qcli.data").joinpath(name).read_text(encoding="utf-8")
