"""Why a loaded model's forward pass failed, where the cause is a known kernel limit rather than the model.

bitsandbytes' CPU path for 4-bit layers (taken when the CPU has AVX512-BF16, in eval mode without grad)
repacks each layer's weight on its first forward pass (`bitsandbytes.functional._convert_weight_packed_for_cpu`):
the weight is cut into tiles of 32 output rows and its absmax reshaped to (out_features, in_features //
blocksize). A layer whose out_features is not a multiple of 32, or whose in_features is not a multiple of
the blocksize (64), fails there with a bare `RuntimeError: shape '[32, 0]' is invalid ...`; on CUDA, and on
CPUs without AVX512-BF16, the same layer runs.
"""

from __future__ import annotations

from typing import Any

CPU_TILE_ROWS = 32  # block_n of _convert_weight_packed_for_cpu


def cpu_4bit_misfits(model: Any) -> list[str]:
    """Return the 4-bit layers bitsandbytes' CPU kernel cannot repack, as 'name (in → out)'."""
    out = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is None or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        if weight.device.type != "cpu" or getattr(state, "packing_format_for_cpu", False):
            continue  # on a GPU, or repacked already (it ran)
        n_out, n_in = int(module.out_features), int(module.in_features)
        if n_out % CPU_TILE_ROWS or n_in % int(state.blocksize):
            out.append(f"{name} ({n_in} → {n_out})")
    return out


def failure_text(exc: BaseException | None, model: Any) -> str:
    """Return `Type: first line` of a failed forward pass, or its cause when it is bitsandbytes' CPU kernel
    (exc None: the cause alone, for a forward pass not yet run)."""
    misfits = cpu_4bit_misfits(model) if model is not None else []
    if not misfits:
        if exc is None:
            return ""
        first = (str(exc).strip().splitlines() or [""])[0]
        return (f"{type(exc).__name__}: {first}" if first else type(exc).__name__)[:200]
    more = f" and {len(misfits) - 1} more" if len(misfits) > 1 else ""
    return (
        f"bitsandbytes' CPU 4-bit kernel cannot run {misfits[0]}{more}: it needs in_features % 64 == 0 and"
        f" out_features % {CPU_TILE_ROWS} == 0 (CUDA has no such limit)"
    )
