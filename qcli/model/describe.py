"""The one entry point from a config to a ModelSpec: analytic when qcli knows the architecture,
else the meta-device build through transformers (imported lazily by qcli.model.meta)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qcli.errors import UsageError
from qcli.model.architectures import BUILDERS, analytic_type, config_dtype, with_defaults
from qcli.model.config_fields import check_strict_fields
from qcli.model.config_schema import validate_config, whole_floats
from qcli.model.meta import from_meta
from qcli.model.spec import ModelSpec
from qcli.units import MAX_PARAMS


def from_config(
    cfg: dict[str, Any], *, allow_meta: bool = True, trust_remote_code: bool = False, code_dir: Path | None = None
) -> ModelSpec:
    """Return the ModelSpec of a config dict: analytic when the architecture is known, else meta (`code_dir`:
    the local model directory, whose own code runs under trust_remote_code)."""
    # The keys qcli reads, each checked and named before any builder runs; builders read the checked values.
    checked = validate_config(cfg)
    model_type = checked.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UsageError("config.json: missing 'model_type'", "is this a transformers model config?")
    analytic = analytic_type(checked)
    builder = BUILDERS[analytic] if analytic else None
    if builder is not None:
        check_strict_fields(checked)  # what the meta path's config class refuses, refused here too
        spec = builder(with_defaults(checked))
        spec.config_dtype = config_dtype(checked)
    elif not allow_meta:
        raise UsageError(f"config.json: model_type {model_type!r} has no analytic description")
    else:
        spec = from_meta(checked, trust_remote_code=trust_remote_code, code_dir=code_dir)
    if spec.params > MAX_PARAMS:
        # Each size is bounded on its own (config_schema); their products are bounded here, as --params is.
        raise UsageError(
            f"config.json describes {spec.params:.3g} parameters, more than qcli's limit of {MAX_PARAMS:.0e}",
            "check its sizes: hidden_size, intermediate_size, vocab_size, the layer and expert counts",
        )
    if floats := whole_floats(cfg, checked):
        keys = ", ".join(floats[:3]) + (", …" if len(floats) > 3 else "")
        spec.notes.append(
            f"config.json writes {keys} with whole-number floats (such as 64.0), read as integers; transformers "
            "5's config classes refuse a float for an integer key when loading: write integers"
        )
    return spec
