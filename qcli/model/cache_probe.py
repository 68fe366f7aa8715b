"""What each layer of a model's own cache stores, measured by running its forward on the meta device.

torch is imported inside the functions. The meta device allocates nothing but keeps every tensor's
shape, dtype and storage size, so a prefill of a few tokens says what transformers' cache keeps for
any context.
"""

from __future__ import annotations

from typing import Any

from qcli.model.spec import CacheLayer

PROBE_TOKENS = (2, 4)  # two prefill lengths, shorter than any real window: the per-token slope and the fixed part
# Where a forward returns its cache: `cache` from transformers 5.24 on, `past_key_values` before it,
# `cache_params` for mamba-style models.
CACHE_OUTPUTS = ("cache", "past_key_values", "cache_params")


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


def _prefill(model: Any, tokens: int, mask: bool = False) -> Any:
    """Return the cache a prefill of `tokens` tokens (batch 1) leaves, or None when the model keeps none."""
    import torch

    device = next(model.parameters()).device
    ids = torch.ones(1, tokens, dtype=torch.long, device=device)
    kwargs = {"attention_mask": torch.ones(1, tokens, dtype=torch.long, device=device)} if mask else {}
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **kwargs)
    return next((out[k] for k in CACHE_OUTPUTS if out.get(k) is not None), None)


def probe_cache(model: Any, dtype: Any) -> list[CacheLayer]:
    """Return what each layer of the model's own cache stores, from two prefills on the meta device.

    A layer's storage after a prefill of n tokens is `slope · n + fixed` per dtype: the slope is the
    per-token K/V (or latent) part, the fixed part a recurrent state (conv, SSM). Tensors in the probe
    dtype follow the cache dtype; others (mamba's float32 SSM state) keep theirs. Sliding-window layers
    say their window (`sliding_window`, transformers' DynamicSlidingWindowLayer and hybrids).
    """
    import torch

    dtype_name = str(dtype).removeprefix("torch.")
    try:
        caches = [_prefill(model, n) for n in PROBE_TOKENS]
    except Exception:
        # sdpa's mask helpers call .item(), which the meta device cannot answer; so does the packed-sequence
        # check transformers runs when no attention mask is given
        model.set_attn_implementation("eager")
        try:
            caches = [_prefill(model, n) for n in PROBE_TOKENS]
        except Exception:
            caches = [_prefill(model, n, mask=True) for n in PROBE_TOKENS]
    if caches[-1] is None:
        return []
    cache = caches[-1]
    small, large = (_storages(c) for c in caches)
    if len(small) != len(large):
        raise ValueError("cache layers differ between probes")
    n1, n2 = PROBE_TOKENS
    layers: list[CacheLayer] = []
    for layer, a, b in zip([*cache.layers, None], small, large, strict=True):
        if layer is None and not a and not b:
            break  # nothing held outside the layers
        per_token, state = [], []
        for dt in sorted(set(a) | set(b)):
            s1, s2 = a.get(dt, 0), b.get(dt, 0)
            itemsize = torch.empty((), dtype=getattr(torch, dt)).element_size()
            slope, rem = divmod(s2 - s1, n2 - n1)
            fixed = s1 - slope * n1
            if rem or slope < 0 or fixed < 0:
                raise ValueError(f"{type(layer).__name__}: storage is not linear in tokens")
            if slope:
                per_token.append((slope // itemsize, None if dt == dtype_name else dt))
            if fixed:
                state.append((fixed // itemsize, None if dt == dtype_name else dt))
        window = getattr(layer, "sliding_window", None) if layer is not None else None
        window = int(window) if isinstance(window, int) and not isinstance(window, bool) else None
        kind = "sliding" if window else ("full" if per_token else ("state" if state else "none"))
        if per_token and state:
            kind += "+state"
        layers.append(CacheLayer(kind=kind, per_token=tuple(per_token), window=window, state=tuple(state)))
    return layers
