"""The limits a plan leaves: the longest context and the largest batch the devices hold, found by
a search over the real plan (KV cache with sliding windows, device map, training state). Pure Python."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from qcli.errors import UsageError
from qcli.model.spec import ModelSpec
from qcli.plan.placement import DEVICE_MAPS
from qcli.plan.planner import PlanRequest, WeightLayout, build_plan, cache_layers, plan_layout

# Search bounds: 16 Mi tokens and 65,536 sequences; beyond that memory is not what binds.
CONTEXT_SEARCH_LIMIT = 2**24
BATCH_SEARCH_LIMIT = 2**16


Probe = Callable[[int], tuple[bool, int | None]]  # n -> (fits, slack)


def largest_true(fits: Callable[[int], bool], limit: int) -> int | None:
    """Return the largest n in [1, limit] with fits(n) where fits(n + 1) is False (limit if fits(limit));
    None when fits(1) is False. Bisection."""
    return largest_fitting(lambda n: (fits(n), None), limit)


def largest_fitting(probe: Probe, limit: int) -> int | None:
    """largest_true for a `probe` answering n -> (fits, slack). The bracket keeps fits(lo) True and
    fits(hi) False.

    Slack is a number that falls as n grows and crosses zero near the boundary (a plan's headroom in
    bytes), or None. With slack, the next n is guessed where the slack's secant between lo and hi
    crosses zero (regula falsi, Illinois variant: when one end moves twice running, the other end's
    slack is halved, so a convex slack, such as training activations that grow with the square of the
    context, does not creep in from one side). A guess that does not halve the bracket's width in bits,
    log2(hi / lo), is followed by one bisection step (of the logarithm while hi > 2·lo), so the search
    takes at most about twice bisection's steps, and usually a handful: memory grows about
    linearly with context and batch. Only the answers of `fits` move the bracket: for a `fits` that
    stays False once False, the answer is the bisection's.
    """
    ok, s_lo = probe(1)
    if not ok:
        return None
    ok, s_hi = probe(limit)
    if ok:
        return limit
    lo, hi, secant, moved = 1, limit, True, ""
    while hi - lo > 1:
        width = math.log2(hi / lo)
        interpolate = secant and s_lo is not None and s_hi is not None and s_lo > s_hi
        if interpolate:
            guess = lo + (hi - lo) * s_lo // (s_lo - s_hi)
        elif hi > 2 * lo:
            guess = math.isqrt(lo * hi)  # bisect the logarithm: first the order of magnitude
        else:
            guess = (lo + hi) // 2
        mid = min(max(guess, lo + 1), hi - 1)
        ok, slack = probe(mid)
        if ok:
            if moved == "lo" and s_hi is not None:
                s_hi //= 2  # the same end moved twice: weigh the other less (Illinois), for convex slack
            lo, s_lo, moved = mid, slack, "lo"
        else:
            if moved == "hi" and s_lo is not None:
                s_lo //= 2
            hi, s_hi, moved = mid, slack, "hi"
        # After a guess that did not halve the bracket (in bits), one bisection step; then guess again.
        secant = not interpolate or 2 * math.log2(hi / lo) <= width
    return lo


def _plan_probe(spec: ModelSpec, layout: WeightLayout, make: Callable[[int], PlanRequest]) -> Probe:
    """n -> (the plan fits, the least headroom in bytes over the GPUs that know their capacity)."""

    def probe(n: int) -> tuple[bool, int | None]:
        plan = build_plan(spec, make(n), layout)
        rooms = [d.headroom_bytes for d in plan.devices if d.kind == "gpu" and d.headroom_bytes is not None]
        return bool(plan.fits), min(rooms) if rooms else None

    return probe


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
    return largest_fitting(_plan_probe(spec, layout, lambda n: _with(req, context=n)), CONTEXT_SEARCH_LIMIT)


def max_batch(spec: ModelSpec, req: PlanRequest, layout: WeightLayout | None = None) -> int | None:
    """Return the largest batch that fits at the request's context (None without one, or when batch 1 fails)."""
    context = req.training.sequence_length if req.training is not None else req.context
    if not req.devices or not cache_layers(spec) or not context:
        return None
    layout = layout or plan_layout(spec, req)
    return largest_fitting(_plan_probe(spec, layout, lambda n: _with(req, batch=n)), BATCH_SEARCH_LIMIT)


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
