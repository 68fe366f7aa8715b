"""The limits a plan leaves: the longest context and the largest batch the devices hold, found by
binary search over the real plan (KV cache with sliding windows, device map, training state). Pure Python."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from qcli.errors import UsageError
from qcli.model.spec import ModelSpec
from qcli.plan.placement import DEVICE_MAPS
from qcli.plan.planner import PlanRequest, WeightLayout, build_plan, cache_layers, plan_layout

# Search bounds: 16 Mi tokens and 65,536 sequences; beyond that memory is not what binds.
CONTEXT_SEARCH_LIMIT = 2**24
BATCH_SEARCH_LIMIT = 2**16


def largest_true(fits: Callable[[int], bool], limit: int) -> int | None:
    """Return the largest n in [1, limit] with fits(n) where fits(n + 1) is False (limit if fits(limit));
    None when fits(1) is False. Binary search: fits(lo) stays True and fits(hi) False."""
    if not fits(1):
        return None
    if fits(limit):
        return limit
    lo, hi = 1, limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _with(req: PlanRequest, context: int | None = None, batch: int | None = None) -> PlanRequest:
    trial = dataclasses.replace(req)
    if req.training is not None:
        trial.training = dataclasses.replace(
            req.training,
            sequence_length=context or req.training.sequence_length,
            batch=batch or req.training.batch,
        )
    else:
        trial.context = context or req.context
    trial.batch = batch or req.batch
    return trial


def max_context(spec: ModelSpec, req: PlanRequest, layout: WeightLayout | None = None) -> int | None:
    """Return the longest context (tokens) whose plan fits the devices: None when not even one token
    fits, CONTEXT_SEARCH_LIMIT when memory does not bind (e.g. every layer has a sliding window)."""
    if not req.devices or not cache_layers(spec):
        return None
    layout = layout or plan_layout(spec, req)
    return largest_true(lambda n: bool(build_plan(spec, _with(req, context=n), layout).fits), CONTEXT_SEARCH_LIMIT)


def max_batch(spec: ModelSpec, req: PlanRequest, layout: WeightLayout | None = None) -> int | None:
    """Return the largest batch that fits at the request's context (None without one, or when batch 1 fails)."""
    context = req.training.sequence_length if req.training is not None else req.context
    if not req.devices or not cache_layers(spec) or not context:
        return None
    layout = layout or plan_layout(spec, req)
    return largest_true(lambda n: bool(build_plan(spec, _with(req, batch=n), layout).fits), BATCH_SEARCH_LIMIT)


def check_request(req: PlanRequest) -> None:
    """Raise a UsageError for requests no plan can satisfy."""
    if req.batch < 1:
        raise UsageError("--batch must be at least 1")
    if req.context is not None and req.context < 1:
        raise UsageError("--context must be at least 1 token")
    if not 0 <= req.margin_fraction < 1:
        raise UsageError("--margin must be a fraction between 0 and 1, e.g. 0.05")
    if req.device_map is not None and req.device_map not in DEVICE_MAPS:
        raise UsageError(f"--device-map {req.device_map!r} is not known", f"use {', '.join(DEVICE_MAPS)}")
    if req.max_memory is not None and len(req.max_memory) != len(req.devices):
        raise UsageError("--max-memory needs one budget per GPU", "e.g. --max-memory 0=20GiB,1=22GiB")
