"""The recommendation of `qcli estimate --gpu`: DESIGN.md 2c's decision table, made precise by
checking which plan fits the devices. Pure Python."""

from __future__ import annotations

from collections.abc import Callable

from qcli.results import Plan, Recommendation

SMALL_MODEL_PARAMS = 1_000_000_000


def recommend(
    params: int, training: str | None, bf16_ok: bool | None, fits: Callable[[str, str | None], Plan]
) -> Recommendation:
    """Return the preset to use. `fits(preset, train_mode)` plans that preset on the devices."""
    sixteen = "bf16" if bf16_ok is not False else "fp16"
    four = "qlora" if bf16_ok is not False else "nf4-fp16"
    notes = []
    if bf16_ok is False:
        notes.append("this GPU has no bf16 (compute capability < 8.0): fp16 weights and fp16 compute")
    if params < SMALL_MODEL_PARAMS:
        notes.append("models under 1 B parameters lose more quality to 4-bit than large ones; prefer 8 or 16 bits")
    if training:
        if training == "full" and fits(sixteen, "full").fits:
            return Recommendation(
                preset=sixteen, reason=f"full fine-tune in {sixteen} fits: no quantization needed", notes=notes
            )
        if fits(sixteen, "lora").fits:
            return Recommendation(
                preset=sixteen, reason=f"LoRA on {sixteen} weights fits (no quantization needed)", notes=notes
            )
        if fits(four, "qlora").fits:
            return Recommendation(
                preset=four, reason="only NF4 + double quant (QLoRA) leaves room for training", notes=notes
            )
        return Recommendation(
            preset=None,
            reason="does not fit even as QLoRA: add GPUs, shorten the sequence, or use --grad-checkpointing",
            notes=notes,
        )
    if fits(sixteen, None).fits:
        return Recommendation(preset=sixteen, reason=f"fits in {sixteen}: no quality lost", notes=notes)
    if fits("int8", None).fits:
        return Recommendation(preset="int8", reason="fits in 8-bit: LLM.int8 is closest to 16-bit quality", notes=notes)
    if fits(four, None).fits:
        return Recommendation(preset=four, reason="fits only in 4-bit: NF4 with double quantization", notes=notes)
    return Recommendation(preset=None, reason="does not fit even in 4-bit: add GPUs or a shorter context", notes=notes)
