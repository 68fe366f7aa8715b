"""The one entry point from a config to a ModelSpec: analytic when qcli knows the architecture,
else the meta-device build through transformers (imported lazily by qcli.model.meta)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qcli.errors import UsageError
from qcli.model.architectures import BUILDERS, config_dtype
from qcli.model.config_schema import validate_config
from qcli.model.meta import from_meta
from qcli.model.spec import ModelSpec


def from_config(
    cfg: dict[str, Any], *, allow_meta: bool = True, trust_remote_code: bool = False, code_dir: Path | None = None
) -> ModelSpec:
    """Return the ModelSpec of a config dict: analytic when the architecture is known, else meta (`code_dir`:
    the local model directory, whose own code runs under trust_remote_code)."""
    validate_config(cfg)  # the keys qcli reads, each checked and named before any builder runs
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UsageError("config.json: missing 'model_type'", "is this a transformers model config?")
    builder = BUILDERS.get(model_type)
    if builder is not None:
        spec = builder(cfg)
        spec.config_dtype = config_dtype(cfg)
        return spec
    if not allow_meta:
        raise UsageError(f"config.json: model_type {model_type!r} has no analytic description")
    return from_meta(cfg, trust_remote_code=trust_remote_code, code_dir=code_dir)
