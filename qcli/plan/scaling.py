"""`--gpus auto`: the fewest GPUs of one type that fit, per strategy. Pure Python."""

from __future__ import annotations

from collections.abc import Callable

from qcli.errors import UsageError
from qcli.plan.distributed import check_offload, parse_strategy
from qcli.plan.gpus import Device
from qcli.plan.recommend import STRATEGY_ORDER
from qcli.results.plan import GpusNeeded, Plan

# `--gpus auto` tries 1..this many GPUs per node.
MAX_GPUS_PER_NODE = 64


def copies(base: Device, n: int) -> list[Device]:
    """Return n identical GPUs named '<name> #i'."""
    return [base.model_copy(update={"name": f"{base.name} #{i}"}) for i in range(n)]


def how_many(
    plan_at: Callable[[int, str | None], Plan],
    train: str | None,
    strategy: str | None,
    nodes: int,
    offload: tuple[bool, bool],
) -> tuple[list[GpusNeeded], int | None, str | None]:
    """Return, per strategy, the fewest GPUs per node that fit; and the count and strategy to plan with
    (fewest GPUs, then least communication)."""
    if not train:
        candidates: list[str | None] = [None]
    elif strategy:
        candidates = [strategy]
    else:
        candidates = [s for s in STRATEGY_ORDER if s != "single"]
    needed: list[GpusNeeded] = []
    for st in candidates:
        try:
            check_offload(parse_strategy(st, 2), *offload) if st else None
        except UsageError:
            continue
        found = None
        for n in range(1, MAX_GPUS_PER_NODE + 1):
            p = plan_at(n, st)
            if p.fits:
                gpu = next(r for r in p.devices if r.kind == "gpu")
                found = GpusNeeded(
                    strategy=st or "device_map",
                    total_gpus=n * nodes,
                    required_bytes=gpu.required_bytes,
                )
                break
            if st == "ddp" and n > 1:
                break  # DDP replicates everything: more GPUs never lower the per-GPU need
        needed.append(found or GpusNeeded(strategy=st or "device_map", total_gpus=None, required_bytes=None))
    best = min((g for g in needed if g.total_gpus), key=lambda g: g.total_gpus or 0, default=None)
    if best is None:
        return needed, None, candidates[0]
    strategy = None if best.strategy.startswith("device_map") else best.strategy
    return needed, (best.total_gpus or 1) // nodes, strategy
