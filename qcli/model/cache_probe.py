"""What each layer of a model's own cache stores, measured by running its forward on the meta device.

torch is imported inside the functions. The meta device allocates nothing but keeps every tensor's
shape, dtype and storage size, so a prefill of a few tokens says what transformers' cache keeps for
any context: a per-token part, a fixed state, and for compressing layers (DeepSeek-V4's CSA/HCA)
entries, a buffer and carried state, each fitted to the rule CacheLayer.counts states.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from qcli.model.spec import CacheLayer

PROBE_TOKENS = (2, 4)  # two prefill lengths, shorter than any real window: the per-token slope and the fixed part
# Where a forward returns its cache: `cache` from transformers 5.24 on, `past_key_values` before it,
# `cache_params` for mamba-style models.
CACHE_OUTPUTS = ("cache", "past_key_values", "cache_params")
# CacheLayer fields a compressing layer's storage is fitted to, in CacheCounts order, then the fixed state.
COMPRESSED_PARTS = ("per_token", "per_entry", "pending", "carried", "state")


def _walk(obj: Any, found: dict[int, Any], depth: int = 0) -> None:
    """Collect the tensors reachable from a cache object, by their base (a view keeps its base alive)."""
    import torch

    if depth > 6 or obj is None:
        return
    if isinstance(obj, torch.Tensor):
        base = obj._base if obj._base is not None else obj
        found.setdefault(id(base), base)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _walk(item, found, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _walk(item, found, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.nn.Module)):
        for item in vars(obj).values():
            _walk(item, found, depth + 1)


def _storages(cache: Any) -> list[dict[str, int]]:
    """Return the state bytes per dtype of each cache layer, then of whatever the cache holds outside them.

    Only tensors of 2 or more dimensions count: 0-d and 1-d ones are bookkeeping (a window's length).
    """
    seen: set[int] = set()
    groups: list[dict[str, int]] = []
    for part in [*cache.layers, cache]:
        found: dict[int, Any] = {}
        _walk(part, found)
        sizes: dict[str, int] = {}
        for key, t in found.items():
            if key in seen or t.dim() < 2:
                continue
            seen.add(key)
            dtype = str(t.dtype).removeprefix("torch.")
            sizes[dtype] = sizes.get(dtype, 0) + t.untyped_storage().nbytes()
        groups.append(sizes)
    return groups


def _returned(out: Any) -> Any:
    return next((out[k] for k in CACHE_OUTPUTS if out.get(k) is not None), None)


def _prefill(model: Any, tokens: int, mask: bool = False) -> Any:
    """Return the cache a prefill of `tokens` tokens (batch 1) leaves, or None when the model keeps none."""
    import torch

    device = next(model.parameters()).device
    ids = torch.ones(1, tokens, dtype=torch.long, device=device)
    kwargs = {"attention_mask": torch.ones(1, tokens, dtype=torch.long, device=device)} if mask else {}
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **kwargs)
    return _returned(out)


def _decode(model: Any, cache: Any, tokens: int, mask: bool = False) -> Any:
    """Return the cache after one decode step on `cache`, which holds `tokens` tokens (batch 1)."""
    import inspect

    import torch

    device = next(model.parameters()).device
    # the forward takes the cache back as `cache` from transformers 5.24 on, `past_key_values` before it
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kwargs: dict[str, Any] = {name: cache}
    if mask:
        kwargs["attention_mask"] = torch.ones(1, tokens + 1, dtype=torch.long, device=device)
    with torch.no_grad():
        out = model(input_ids=torch.ones(1, 1, dtype=torch.long, device=device), use_cache=True, **kwargs)
    return _returned(out)


def _prefills(model: Any, lengths: tuple[int, ...]) -> tuple[list[Any], bool]:
    """Return the caches prefills of `lengths` tokens leave, and whether they needed an attention mask."""
    try:
        return [_prefill(model, n) for n in lengths], False
    except Exception:
        # sdpa's mask helpers call .item(), which the meta device cannot answer; so does the packed-sequence
        # check transformers runs when no attention mask is given
        model.set_attn_implementation("eager")
        try:
            return [_prefill(model, n) for n in lengths], False
        except Exception:
            return [_prefill(model, n, mask=True) for n in lengths], True


def _itemsize(dtype_name: str) -> int:
    import torch

    return torch.empty((), dtype=getattr(torch, dtype_name)).element_size()


def _window(layer: Any) -> int | None:
    window = getattr(layer, "sliding_window", None) if layer is not None else None
    return int(window) if isinstance(window, int) and not isinstance(window, bool) else None


def compress_rate(layer: Any) -> int | None:
    """Return a cache layer's compress rate (tokens per compressed entry), None for a plain layer."""
    rate = getattr(layer, "compress_rate", None)
    return rate if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0 else None


def _fixed(dtype_name: str, probe_dtype: str) -> str | None:
    """Return the dtype a cache tensor keeps whatever the cache dtype: None when it follows the probe's."""
    return None if dtype_name == probe_dtype else dtype_name


def _elems(nbytes: Fraction, dtype_name: str, probe_dtype: str) -> tuple[int, str | None]:
    """Return (elements, fixed dtype or None) for a fitted byte count; raise when it is not whole elements."""
    elems, rem = divmod(nbytes, _itemsize(dtype_name))
    if rem or elems < 0:
        raise ValueError(f"{nbytes} bytes of {dtype_name} are not whole elements")
    return int(elems), _fixed(dtype_name, probe_dtype)


def _linear_layer(layer: Any, small: dict[str, int], large: dict[str, int], probe_dtype: str) -> CacheLayer:
    """Return a plain layer's rule from its storage after the two PROBE_TOKENS prefills (slope, fixed part)."""
    n1, n2 = PROBE_TOKENS
    per_token, state = [], []
    for dt in sorted(set(small) | set(large)):
        s1, s2 = small.get(dt, 0), large.get(dt, 0)
        slope, rem = divmod(s2 - s1, n2 - n1)
        fixed = s1 - slope * n1
        if rem or slope < 0 or fixed < 0:
            raise ValueError(f"{type(layer).__name__}: storage is not linear in tokens")
        itemsize = _itemsize(dt)
        if slope:
            per_token.append((slope // itemsize, _fixed(dt, probe_dtype)))
        if fixed:
            state.append((fixed // itemsize, _fixed(dt, probe_dtype)))
    window = _window(layer)
    kind = "sliding" if window else ("full" if per_token else ("state" if state else "none"))
    if per_token and state:
        kind += "+state"
    return CacheLayer(kind=kind, per_token=tuple(per_token), window=window, state=tuple(state))


def solve(rows: list[tuple[int, ...]], values: list[int]) -> list[Fraction]:
    """Return the one x with rows · x = values (exact); raise ValueError when the rows leave x open
    or no x fits every row."""
    width = len(rows[0])
    aug = [[Fraction(v) for v in row] + [Fraction(value)] for row, value in zip(rows, values, strict=True)]
    for col in range(width):
        pivot = next((r for r in range(col, len(aug)) if aug[r][col]), None)
        if pivot is None:
            raise ValueError("the probes do not determine the cache rule")
        aug[col], aug[pivot] = aug[pivot], aug[col]
        lead = [v / aug[col][col] for v in aug[col]]
        aug[col] = lead
        for r in range(len(aug)):
            if r != col and aug[r][col]:
                factor = aug[r][col]
                aug[r] = [a - factor * b for a, b in zip(aug[r], lead, strict=True)]
    if any(row[-1] for row in aug[width:]):
        raise ValueError("the cache does not follow the compressing-layer rule")
    return [aug[i][-1] for i in range(width)]


Point = tuple[int, list[dict[str, int]], list[dict[str, int]]]  # prefill length, storages after it, after a decode


@contextlib.contextmanager
def _only_layers(model: Any, count: int, keep: list[int]) -> Iterator[None]:
    """Run the model's forward through the decoder layers `keep` alone: the others leave the layer list.

    The list is the model's ModuleList of `count` modules (one per cache layer). Each layer keeps its own
    `layer_idx`, so it fills its own cache layer; layer 0 must stay (the cache's length is read from it).
    """
    from torch import nn

    found = next((n for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count), None)
    if found is None or 0 not in keep:
        raise ValueError("no decoder-layer list to probe layers from")
    parent_name, _, attr = found.rpartition(".")
    parent = model.get_submodule(parent_name)
    full = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([full[i] for i in keep]))
    try:
        yield
    finally:
        setattr(parent, attr, full)


def _points(model: Any, rates: set[int], count: int, keep: list[int], mask: bool) -> list[Point]:
    """Return the storages after prefills of 1, m and 2m tokens for each compress rate m, and after one
    decode step on each (windows closing at a prefill, at a decode step, and none at all), from forwards
    through the layers `keep` alone: on the meta device a DeepSeek-V4 layer's forward takes about 0.3 s."""
    points: list[Point] = []
    with _only_layers(model, count, keep):
        for n in sorted({n for m in rates for n in (1, m, 2 * m)}):
            cache = _prefill(model, n, mask)
            prefill = _storages(cache)
            decode = _storages(_decode(model, cache, n, mask))
            if len(prefill) != count + 1 or len(decode) != count + 1:  # the cache has a layer for every layer
                raise ValueError("cache layers differ between probes")
            points.append((n, prefill, decode))
    return points


def _compressing_layer(
    layer: Any, index: int, points: list[Point], plain: list[list[dict[str, int]]], probe_dtype: str
) -> CacheLayer:
    """Return a compressing layer's rule: each dtype's bytes at every probe point solved for the parts
    CacheLayer.counts multiplies (per token, per entry, per buffered token, carried once, fixed).

    `plain` holds the whole model's storages after the PROBE_TOKENS prefills: the rule must fit them
    too, which checks that a layer probed alone stores what it stores inside the model.
    """
    window, rate = _window(layer), compress_rate(layer)
    rule = CacheLayer("compressed", window=window, compress_rate=rate)
    rows, measured = [], []
    for n, prefill, decode in points:
        for tokens, storages, is_prefill in ((n, prefill, True), (n + 1, decode, False)):
            rows.append((*rule.counts(tokens, prefill=is_prefill), 1))
            measured.append(storages[index])
    for n, storages in zip(PROBE_TOKENS, plain, strict=True):
        rows.append((*rule.counts(n, prefill=True), 1))
        measured.append(storages[index])
    parts: dict[str, list[tuple[int, str | None]]] = {name: [] for name in COMPRESSED_PARTS}
    for dt in sorted({dt for m in measured for dt in m}):
        try:
            coefficients = solve(rows, [m.get(dt, 0) for m in measured])
        except ValueError as exc:
            raise ValueError(f"{type(layer).__name__}: {exc}") from exc
        for name, nbytes in zip(COMPRESSED_PARTS, coefficients, strict=True):
            if nbytes:
                parts[name].append(_elems(nbytes, dt, probe_dtype))
    kind = ("sliding" if window else "full") + ("+state" if parts["state"] else "") + "+compressed"
    return CacheLayer(
        kind=kind, window=window, compress_rate=rate, **{name: tuple(elems) for name, elems in parts.items()}
    )


def _representatives(cache: Any, small: list[dict[str, int]], large: list[dict[str, int]]) -> dict[int, int]:
    """Return, for each compressing layer, the first layer stored alike: same class, rate, window and
    storage after both PROBE_TOKENS prefills (one of each kind is probed, the rest follow it)."""
    first: dict[str, int] = {}
    rep: dict[int, int] = {}
    for i, layer in enumerate(cache.layers):
        if compress_rate(layer):
            stored = (sorted(small[i].items()), sorted(large[i].items()))
            rep[i] = first.setdefault(repr((type(layer), compress_rate(layer), _window(layer), stored)), i)
    return rep


def probe_cache(model: Any, dtype: Any) -> list[CacheLayer]:
    """Return what each layer of the model's own cache stores, from prefills on the meta device.

    A plain layer's storage after a prefill of n tokens is `slope · n + fixed` per dtype: the slope is
    the per-token K/V (or latent) part, the fixed part a recurrent state (conv, SSM). Tensors in the probe
    dtype follow the cache dtype; others (mamba's float32 SSM state) keep theirs. Sliding-window layers
    say their window (`sliding_window`, transformers' DynamicSlidingWindowLayer and hybrids). Layers with
    a `compress_rate` are probed again around their windows, with a decode step after each prefill.
    """
    dtype_name = str(dtype).removeprefix("torch.")
    caches, mask = _prefills(model, PROBE_TOKENS)
    if caches[-1] is None:
        return []
    cache = caches[-1]
    small, large = (_storages(c) for c in caches)
    if len(small) != len(large):
        raise ValueError("cache layers differ between probes")
    rep = _representatives(cache, small, large)
    points: list[Point] = []
    if rep:
        keep = sorted({0, *rep.values()})
        rates = {rate for i in keep if (rate := compress_rate(cache.layers[i]))}
        points = _points(model, rates, len(cache.layers), keep, mask)
    rules: dict[int, CacheLayer] = {}
    layers: list[CacheLayer] = []
    for index, (layer, a, b) in enumerate(zip([*cache.layers, None], small, large, strict=True)):
        if layer is None and not a and not b:
            break  # nothing held outside the layers
        if index in rep:
            if rep[index] not in rules:
                rules[rep[index]] = _compressing_layer(layer, index, points, [small, large], dtype_name)
            layers.append(rules[rep[index]])
        else:
            layers.append(_linear_layer(layer, a, b, dtype_name))
    return layers
