"""Checkpoints saved already quantized: their config.json carries a `quantization_config`.

transformers loads a bitsandbytes checkpoint as stored: the packed weights and their quant_state are
read as they are, and a `quantization_config` passed to `from_pretrained` does not re-quantize them (the
checkpoint's own config wins; transformers `AutoHfQuantizer.merge_quantization_configs`). So such a
checkpoint is planned in its stored format, and a preset that asks for another quantization is refused.
Other methods (GPTQ, AWQ, FP8, compressed-tensors, …) need their own kernels: qcli reports their stored
bytes and says it cannot load them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from qcli.errors import UsageError
from qcli.model.config_schema import shown
from qcli.plan.formats import Format
from qcli.plan.presets import Quantization
from qcli.results.plan import Prequantized

LOADABLE_METHODS = ("bitsandbytes",)


@dataclass(frozen=True)
class Prequant:
    """What a checkpoint's quantization_config says."""

    method: str
    quantization: Quantization | None  # bitsandbytes only: the fields as a preset would give them

    @property
    def format(self) -> Format | None:
        return self.quantization.format() if self.quantization is not None else None

    @property
    def skip_modules(self) -> list[str] | None:
        return self.quantization.llm_int8_skip_modules if self.quantization is not None else None

    def info(self) -> Prequantized:
        fmt = self.format
        return Prequantized(
            quant_method=self.method, format=fmt.key if fmt else None, loadable=self.quantization is not None
        )

    def describe(self) -> str:
        """Return a note on what the checkpoint holds and how it is planned."""
        if self.quantization is None:
            return (
                f"pre-quantized checkpoint ({self.method}): loading it is not supported by qcli (it loads "
                f"{', '.join(LOADABLE_METHODS)} checkpoints); the stored bytes are what the checkpoint holds, "
                "the plans size the model as if it were not quantized"
            )
        fmt = self.format
        assert fmt is not None
        return (
            f"pre-quantized checkpoint (bitsandbytes {fmt.label}): transformers loads the stored packed weights "
            "and quantization state as they are, so it is planned in that format"
        )


def prequant_of(quantization_config: dict[str, Any] | None, name: str) -> Prequant | None:
    """Return what a checkpoint's quantization_config says; None for an unquantized checkpoint."""
    if not quantization_config:
        return None
    method = str(quantization_config.get("quant_method", "unknown"))
    if method not in LOADABLE_METHODS:
        # echoed in a note and in --json: a method name is a word, not 100 kB
        return Prequant(method if len(method) <= 40 else method[:39] + "…", None)
    given = {k: v for k, v in quantization_config.items() if k in Quantization.model_fields and v is not None}
    try:
        return Prequant(method, Quantization.model_validate(given))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(map(str, first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        if loc:  # a field's own error: which value it was (bounded); a check of the whole block words its own
            msg = f"{msg}, got {shown(first.get('input'))}"
        where = "quantization_config" + (f".{loc}" if loc else "")
        raise UsageError(f"{name}: config.json {where}: {msg}") from None


def checked_format(pre: Prequant, asked: Format | None, asked_by: str) -> tuple[Format, list[str]]:
    """Return the format to plan a bitsandbytes checkpoint in, and notes; refuse another quantization.

    `asked` is the format a preset or --bits names (None: nothing asked). The double-quant flag may
    differ (the stored state is loaded as it is, with a note); the quantization itself may not.
    """
    stored = pre.format
    assert stored is not None
    if asked is None:
        return stored, []
    if asked.kind != stored.kind or asked.name != stored.name:
        raise UsageError(
            f"the checkpoint is already quantized ({stored.label}) and {asked_by} asks for {asked.label}",
            f"transformers loads the stored {stored.name} weights as they are: use a {stored.name} preset, "
            "or the unquantized checkpoint",
        )
    if asked != stored:
        return stored, [f"{asked_by} asks for {asked.label}; the checkpoint stores {stored.label}, which is what loads"]
    return stored, []
