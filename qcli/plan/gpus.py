"""The GPU catalog (configs/gpus.yaml) and `--gpu NAME|SIZE` resolution. No torch here."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from qcli.errors import UsageError
from qcli.resources import config_file
from qcli.units import MIB, parse_capacity


class GPU(BaseModel):
    """One GPU model: the capacity the driver reports and what it can compute."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: see qcli.results.Model

    name: str
    memory_mib: int = Field(gt=0)
    compute_capability: str | None = None
    bf16: bool | None = None
    aliases: list[str] = Field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    def device(self) -> Device:
        return Device(
            name=self.name, capacity_bytes=self.memory_bytes, compute_capability=self.compute_capability, bf16=self.bf16
        )


class Device(BaseModel):
    """A device to plan for: its capacity in bytes and, when known, its compute features."""

    model_config = ConfigDict(defer_build=True)

    name: str
    capacity_bytes: int
    compute_capability: str | None = None
    bf16: bool | None = None


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


@lru_cache(maxsize=1)
def catalog() -> tuple[GPU, ...]:
    """Return the GPUs of configs/gpus.yaml, validated."""
    import yaml  # lazily: `qcli estimate --params` without --gpu reads no YAML

    from qcli.plan.safe_yaml import SAFE_LOADER

    raw = yaml.load(config_file("gpus.yaml").read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    return tuple(GPU.model_validate(item) for item in raw)


def resolve_gpu(text: str) -> Device:
    """Return the GPU a `--gpu` value names: a catalog name/alias, or a size such as 24GB / 80GiB."""
    wanted = _key(text)
    for gpu in catalog():
        if wanted in {_key(gpu.name), *(_key(a) for a in gpu.aliases)}:
            return gpu.device()
    if re.match(r"^\s*[0-9.]", text) and not _containing(wanted):
        size = parse_capacity(text, "--gpu")
        # A bare size: capacity only; the GPU's compute features are unknown.
        return Device(name=text.strip(), capacity_bytes=size)
    raise UsageError(f"--gpu {text!r} is neither a known GPU nor a size", _suggestion(text))


def _containing(wanted: str) -> list[str]:
    """Return the catalog names whose name or alias contains `wanted` (a model number such as 4090)."""
    return [g.name for g in catalog() if wanted and any(wanted in _key(n) for n in (g.name, *g.aliases))]


def _suggestion(text: str) -> str:
    """Return 'did you mean RTX 4090?' for the closest catalog names (difflib), else the whole list."""
    keys: dict[str, str] = {}
    for gpu in catalog():
        for name in (gpu.name, *gpu.aliases):
            keys.setdefault(_key(name), gpu.name)
    wanted = _key(text)
    # A bare model number ("4090") is part of its catalog key ("rtx4090"); difflib catches typos.
    close = _containing(wanted) + [keys[k] for k in difflib.get_close_matches(wanted, list(keys), n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    if close:
        return f"did you mean {' or '.join(close)}? A size such as 24GB works too"
    return f"use one of {', '.join(g.name for g in catalog())}, or a size such as 24GB"
