"""The recommendation of `qcli estimate --gpu`: DESIGN.md 2c's decision table, made precise by
planning every precision × strategy on the devices. Pure Python.

The pick follows 2c (quality first: 16-bit, then int8, then 4-bit; for training full, then LoRA, then
QLoRA), and among strategies the one that shards least (less communication) that fits. The options list
ranks everything that fits by per-GPU memory, cheapest first, then the others, cheapest first, each with
why it does not fit.
"""

from __future__ import annotations

from collections.abc import Callable

from qcli.results.plan import Option, Plan, Recommendation
from qcli.units import human_bytes

SMALL_MODEL_PARAMS = 1_000_000_000
# Least communication first: replicate, then shard optimizer, grads, weights, then offload.
STRATEGY_ORDER = ("single", "ddp", "zero1", "zero2", "fsdp_shard_grad_op", "fsdp", "zero3")

PlanFn = Callable[[str, str | None, str | None], Plan]


def why_not(plan: Plan) -> str | None:
    """Return one line saying why a plan does not fit (None when it fits)."""
    if plan.fits:
        return None
    for row in plan.devices:
        if row.role == "offload":
            return f"{human_bytes(row.assigned_bytes)} would be offloaded to CPU"
        if row.fits is False and row.capacity_bytes is not None:
            # the required bytes are the option's own figure: this says what they exceed, short enough
            # for the options table's last column at 80 columns
            return f"over {row.name}'s {human_bytes(row.capacity_bytes)}"
    return "does not fit"


def _option(preset: str, train: str | None, strategy: str | None, plan: Plan) -> Option:
    gpu = next((r for r in plan.devices if r.kind == "gpu"), None)
    return Option(
        preset=preset,
        train=train,
        strategy=strategy,
        required_bytes=gpu.required_bytes if gpu else plan.required_bytes,
        fits=bool(plan.fits),
        why_not=why_not(plan),
    )


def recommend(
    params: int, training: str | None, bf16_ok: bool | None, plan_of: PlanFn, strategies: list[str]
) -> Recommendation:
    """Return the preset (and strategy) to use. `plan_of(preset, train_mode, strategy)` plans one option."""
    sixteen = "bf16" if bf16_ok is not False else "fp16"
    four = "qlora" if bf16_ok is not False else "nf4-fp16"
    notes = []
    if bf16_ok is False:
        notes.append("this GPU has no bf16 (compute capability < 8.0): fp16 weights and fp16 compute")
    if params < SMALL_MODEL_PARAMS:
        notes.append("models under 1 B parameters lose more quality to 4-bit than large ones; prefer 8 or 16 bits")
    if training:
        ladder = [(sixteen, "full"), (sixteen, "lora"), (four, "qlora")]
        if training != "full":
            ladder = ladder[1:]
        why = {
            "full": f"full fine-tune in {sixteen} fits: no quantization needed",
            "lora": f"LoRA on {sixteen} weights fits (no quantization needed)",
            "qlora": "only NF4 + double quant (QLoRA) leaves room for training",
        }
        order = [s for s in STRATEGY_ORDER if s in strategies]
        tried = [(p, m, s) for p, m in ladder for s in order]
        none_reason = "does not fit even as QLoRA: add GPUs, shard (--strategy zero3/fsdp), or shorten the sequence"
    else:
        ladder = [(sixteen, None), ("int8", None), (four, None)]
        why = {
            sixteen: f"fits in {sixteen}: no quality lost",
            "int8": "fits in 8-bit: LLM.int8 is closest to 16-bit quality",
            four: "fits only in 4-bit: NF4 with double quantization",
        }
        tried = [(p, m, None) for p, m in ladder]
        none_reason = "does not fit even in 4-bit: add GPUs or a shorter context"
    options = [_option(p, m, s, plan_of(p, m, s)) for p, m, s in tried]
    pick = next((o for o in options if o.fits), None)
    ranked = sorted((o for o in options if o.fits), key=lambda o: o.required_bytes)
    ranked += sorted((o for o in options if not o.fits), key=lambda o: o.required_bytes)
    if pick is None:
        return Recommendation(preset=None, reason=none_reason, notes=notes, options=ranked)
    reason = why[pick.train or pick.preset] if training else why[pick.preset]
    if pick.strategy and pick.strategy != "single":
        reason += f", with --strategy {pick.strategy}"
    return Recommendation(preset=pick.preset, strategy=pick.strategy, reason=reason, notes=notes, options=ranked)
